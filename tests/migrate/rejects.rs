//! Bad input never stops a run: each rejected item gets its reason in the ledger.
//! Configuration errors stop before any request, naming the key. Tokens never leak.

use crate::common::{TOKEN, TestEnv, png, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rejected_input_gets_its_reason_and_the_rest_goes_on() {
    let env = TestEnv::new().await;
    env.write("good.png", &png(1, 800));
    env.write("empty.png", b"");
    env.write("notes.md", b"# not an image\n");
    env.write(
        "disguised.jpg",
        b"MZ\x90\x00 an executable with an image name",
    );
    env.write("image-named.txt", &png(2, 800));
    env.write("2cdc28f0-017a-49c4-9ed7-87056c83901b", &png(3, 800));
    let big = std::fs::File::create(env.src.join("huge.png")).unwrap();
    big.set_len(10 * 1024 * 1024 + 1).unwrap();
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::ffi::OsStrExt;
        let name = std::ffi::OsStr::from_bytes(b"bad-\xff-name.png");
        std::fs::write(env.src.join(name), png(4, 800)).unwrap();
    }

    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
    let out = env.run(&["failures", "--json"]).await;
    let failures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let reason = |key: &str| -> String {
        failures
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["key"] == key)
            .map(|f| f["reason"].as_str().unwrap().to_string())
            .unwrap_or_else(|| panic!("{key} not in {failures}"))
    };
    assert!(reason("empty.png").contains("empty"));
    assert!(reason("notes.md").contains("not an accepted image type"));
    assert!(reason("disguised.jpg").contains("not an accepted image type"));
    assert!(reason("image-named.txt").contains("non-image file extension"));
    assert!(reason("2cdc28f0-017a-49c4-9ed7-87056c83901b").contains("UUID"));
    assert!(reason("huge.png").contains("10 MB"));
    #[cfg(target_os = "linux")]
    assert!(reason("bad-\u{fffd}-name.png").contains("UTF-8"));
    assert_eq!(
        env.upload_posts(),
        1,
        "nothing rejected locally cost a request"
    );
    // Same run under hash ids: the id rules no longer bite, content rules still do.
    let (_, summary, _) = env.migrate(&["--id-mode", "hash"]).await;
    assert!(
        summary["rejected_earlier"].as_u64().unwrap() >= 5,
        "{summary}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_exit_2_before_any_request_and_name_the_key() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 500));
    let out = env
        .run(&[
            "migrate",
            env.src.to_str().unwrap(),
            "--require-signed-urls",
        ])
        .await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--id-mode auto"),
        "{}",
        text(&out)
    );

    std::fs::write(&env.config, "[upload]\nconcurency = 3\nrate = -1\n").unwrap();
    let out = env.run(&["migrate", env.src.to_str().unwrap()]).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("concurency"),
        "{}",
        text(&out)
    );

    let out = env
        .run(&["migrate", env.src.to_str().unwrap(), "--metadata", "[1,2]"])
        .await;
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--metadata"),
        "{}",
        text(&out)
    );
    assert_eq!(env.total_requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_never_reaches_logs_output_or_the_ledger() {
    let env = TestEnv::new().await;
    env.write("a.png", &png(1, 500));
    env.write("b.txt", b"x");
    let out = env
        .cmd(&["-vv", "migrate", env.src.to_str().unwrap()])
        .env("RUST_LOG", "trace")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        !text(&out).contains(TOKEN),
        "the token leaked into the output"
    );
    for entry in std::fs::read_dir(env.dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() && p.extension().is_none_or(|e| e != "toml") {
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !bytes.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
                "token found in {}",
                p.display()
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_run_on_the_same_ledger_is_refused_while_the_first_runs() {
    use cfimg::emulator::Faults;
    let faults = Faults {
        p_latency: 1.0,
        latency_ms: 50,
        ..Faults::default()
    };
    let env = TestEnv::with_faults(faults, "concurrency = 1").await;
    for i in 0..20 {
        env.write(&format!("{i}.png"), &png(i, 500));
    }
    let mut first = env
        .cmd(&["migrate", env.src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for(std::time::Duration::from_secs(30), |e| {
        e.upload_posts() >= 1
    })
    .await;
    let out = env.run(&["migrate", env.src.to_str().unwrap()]).await;
    // 75: try again later (the other run will finish).
    assert_eq!(out.status.code(), Some(75), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("another cfimg run is using the ledger"),
        "{}",
        text(&out)
    );
    assert_eq!(first.wait().await.unwrap().code(), Some(0));
    env.assert_exactly_once(&(0..20).map(|i| format!("{i}.png")).collect::<Vec<_>>())
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_checks_the_credentials_and_write_permission_with_two_requests() {
    let env = TestEnv::new().await;
    let out = env.run(&["validate"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("ok: account"),
        "{}",
        text(&out)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("may write"));
    assert_eq!(
        env.total_requests(),
        2,
        "stats, then a PATCH of an id that cannot exist"
    );
    assert!(env.inspect().images.is_empty(), "validate writes nothing");

    let out = env
        .cmd(&["validate"])
        .env("CLOUDFLARE_API_TOKEN", "nope")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let out = env
        .cmd(&["validate"])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLOUDFLARE_API_TOKEN"));
    assert_eq!(
        env.total_requests(),
        3,
        "a bad token stops after the stats request; a missing one before any request"
    );
}
