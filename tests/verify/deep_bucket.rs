//! `cfimg verify --deep` on a bucket's items: each object is read again from the bucket the
//! ledger recorded (its endpoint included), and a deleted object is a gone source. Against
//! moto's S3 server (tests/s3/setup.sh); without it the test skips, unless `CI` is set.

use std::path::PathBuf;
use std::time::Duration;

use object_store::ObjectStore;
use serde_json::Value;

use crate::common::{TestEnv, png, text};

const BUCKET: &str = "shelf";
const KEY_ID: &str = "AKIDCFIMGDEEP";
const SECRET: &str = "cfimg-deep-secret-77";
const REGION: &str = "eu-west-3";

fn moto_bin() -> Option<PathBuf> {
    let venv = std::env::var_os("MOTO_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/moto-venv"));
    let bin = venv.join("bin/moto_server");
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: CI must run tests/s3/setup.sh before cargo test",
        bin.display()
    );
    eprintln!(
        "skipped: {} is missing; run tests/s3/setup.sh",
        bin.display()
    );
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_object_is_read_again_and_a_deleted_one_is_a_gone_source() {
    let Some(bin) = moto_bin() else { return };
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let _moto = tokio::process::Command::new(bin)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("moto_server starts");
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while http
        .get(format!("{endpoint}/moto-api/data.json"))
        .send()
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "moto did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = http
        .put(format!("{endpoint}/{BUCKET}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "create bucket: {}", r.status());
    let store = object_store::aws::AmazonS3Builder::new()
        .with_bucket_name(BUCKET)
        .with_region(REGION)
        .with_access_key_id(KEY_ID)
        .with_secret_access_key(SECRET)
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    for (i, key) in ["p/a.png", "p/b.png"].iter().enumerate() {
        store
            .put(
                &object_store::path::Path::parse(key).unwrap(),
                png(i as u32, 300).into(),
            )
            .await
            .unwrap();
    }

    let env = TestEnv::new().await;
    let run = |args: Vec<&str>| {
        let mut cmd = env.cmd(&args);
        cmd.env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", REGION)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_DEFAULT_REGION");
        async move { cmd.output().await.expect("cfimg runs") }
    };
    let url = format!("s3://{BUCKET}/p/");
    let out = run(vec!["migrate", &url, "--endpoint-url", &endpoint]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    store
        .delete(&object_store::path::Path::parse("p/b.png").unwrap())
        .await
        .unwrap();

    // No --endpoint-url: the ledger names the bucket's endpoint.
    let out = run(vec!["verify", "--deep", "--json"]).await;
    let said = text(&out);
    assert_eq!(out.status.code(), Some(0), "{said}");
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{said}");
    assert_eq!(lines[0]["verdict"], "source_gone", "{said}");
    assert_eq!(lines[0]["key"], "b.png", "{said}");
    let counts = &lines[1]["summary"]["counts"];
    assert_eq!(counts["ok"], 1, "{said}");
    assert_eq!(counts["source_gone"], 1, "{said}");
}
