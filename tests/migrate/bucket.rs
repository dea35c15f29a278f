//! `cfimg migrate s3://BUCKET/PREFIX` against a real S3 server on loopback: moto's server
//! mode (installed by tests/s3/setup.sh), seen through a small proxy in the test that
//! counts requests, records their signatures, shrinks listing pages and refuses chosen keys.
//! Without the venv the tests skip with a message, unless `CI` is set.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{TestEnv, jpeg, png, text};

const BUCKET: &str = "photos";
const KEY_ID: &str = "AKIDCFIMGTEST";
const SECRET: &str = "cfimg-test-secret-4b1d";
const REGION: &str = "eu-west-3";
/// Keys per listing page, forced by the proxy (S3 allows up to 1000).
const PAGE: u32 = 4;

/// Characters left as they are in a key's URL path.
const KEY_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// moto_server from tests/s3/setup.sh's venv, or `None` (skip) outside CI.
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
        "skipped: {} is missing; run tests/s3/setup.sh to run the bucket tests",
        bin.display()
    );
    None
}

/// What the proxy saw and what it refuses.
#[derive(Default)]
struct Seen {
    /// Object keys of every GetObject, in order.
    gets: Mutex<Vec<String>>,
    /// ListObjects requests.
    lists: AtomicU64,
    /// Authorization headers (or presigned credentials) of every request.
    auths: Mutex<BTreeSet<String>>,
    /// Keys whose GetObject is answered 403 AccessDenied.
    denied: Mutex<BTreeSet<String>>,
    /// Answer every request 403 InvalidAccessKeyId.
    deny_all: std::sync::atomic::AtomicBool,
}

struct Proxy {
    upstream: String,
    http: reqwest::Client,
    seen: Arc<Seen>,
}

/// moto on a free loopback port, with the counting proxy in front of it.
struct S3 {
    _moto: tokio::process::Child,
    /// moto itself (fixtures are written here, unseen by the proxy).
    direct: String,
    /// The proxy: what cfimg is given as --endpoint-url.
    endpoint: String,
    seen: Arc<Seen>,
    http: reqwest::Client,
}

impl S3 {
    async fn start() -> Option<S3> {
        let bin = moto_bin()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let moto = tokio::process::Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("moto_server starts");
        let direct = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while http
            .get(format!("{direct}/moto-api/data.json"))
            .send()
            .await
            .is_err()
        {
            assert!(tokio::time::Instant::now() < deadline, "moto did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = Arc::new(Seen::default());
        let proxy = Arc::new(Proxy {
            upstream: direct.clone(),
            http: http.clone(),
            seen: seen.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let s3 = S3 {
            _moto: moto,
            direct,
            endpoint,
            seen,
            http,
        };
        let r = s3
            .http
            .put(format!("{}/{BUCKET}", s3.direct))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
        Some(s3)
    }

    /// A signed client of moto itself, for fixtures.
    fn store(&self) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_bucket_name(BUCKET)
            .with_region(REGION)
            .with_access_key_id(KEY_ID)
            .with_secret_access_key(SECRET)
            .with_endpoint(&self.direct)
            .with_allow_http(true)
            .build()
            .unwrap()
    }

    /// Writes an object straight to moto, signed (moto refuses to let an anonymous
    /// request overwrite an object).
    async fn put(&self, key: &str, bytes: &[u8]) {
        if key.ends_with('/') {
            return self.put_raw(key, bytes).await;
        }
        use object_store::ObjectStore;
        self.store()
            .put(
                &object_store::path::Path::parse(key).unwrap(),
                bytes.to_vec().into(),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// Writes a new object unsigned (a key ending in `/`, which object_store cannot write).
    async fn put_raw(&self, key: &str, bytes: &[u8]) {
        let url = format!(
            "{}/{BUCKET}/{}",
            self.direct,
            utf8_percent_encode(key, KEY_PATH)
        );
        let r = self
            .http
            .put(url)
            .body(bytes.to_vec())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }

    async fn delete(&self, key: &str) {
        use object_store::ObjectStore;
        self.store()
            .delete(&object_store::path::Path::parse(key).unwrap())
            .await
            .unwrap_or_else(|e| panic!("delete {key}: {e}"));
    }

    fn gets(&self) -> Vec<String> {
        self.seen.gets.lock().unwrap().clone()
    }

    /// Runs `cfimg migrate s3://photos/<prefix> --json` with AWS credentials in the
    /// environment and the proxy as the endpoint.
    async fn migrate(&self, env: &TestEnv, prefix: &str, extra: &[&str]) -> (i32, Value, String) {
        let url = format!("s3://{BUCKET}/{prefix}");
        let mut args = vec!["migrate", url.as_str()];
        args.extend_from_slice(extra);
        self.cfimg(env, &args).await
    }

    /// Runs `cfimg <args> --json --endpoint-url <proxy>` with AWS credentials in the
    /// environment.
    async fn cfimg(&self, env: &TestEnv, args: &[&str]) -> (i32, Value, String) {
        let mut args = args.to_vec();
        args.extend_from_slice(&["--json", "--endpoint-url", self.endpoint.as_str()]);
        let out = env
            .cmd(&args)
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("AWS_REGION", REGION)
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("AWS_ENDPOINT_URL")
            .env_remove("AWS_DEFAULT_REGION")
            .output()
            .await
            .expect("cfimg runs");
        let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), summary, text(&out))
    }
}

/// Forwards one request to moto: counts it, records its credential scope, shrinks listing
/// pages to `PAGE` keys (moto does not check signatures, so the changed query is accepted),
/// and refuses what the test asked to refuse.
async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let seen = &p.seen;
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            req.uri()
                .query()
                .and_then(|q| q.split('&').find(|kv| kv.starts_with("X-Amz-Credential=")))
                .map(|kv| percent_decode_str(kv).decode_utf8_lossy().into_owned())
        })
        .unwrap_or_else(|| "<unsigned>".into());
    seen.auths.lock().unwrap().insert(auth);
    let refuse = |code: &str, status: u16| {
        Response::builder()
            .status(status)
            .header("content-type", "application/xml")
            .body(Body::from(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>refused by the test</Message></Error>"
            )))
            .unwrap()
    };
    if seen.deny_all.load(Ordering::SeqCst) {
        return refuse("InvalidAccessKeyId", 403);
    }
    let path = req.uri().path().to_string();
    let mut query = req.uri().query().unwrap_or_default().to_string();
    let object_key = path
        .strip_prefix(&format!("/{BUCKET}/"))
        .filter(|k| !k.is_empty())
        .map(|k| percent_decode_str(k).decode_utf8_lossy().into_owned());
    if query.contains("list-type=") {
        seen.lists.fetch_add(1, Ordering::SeqCst);
        query = query
            .split('&')
            .filter(|kv| !kv.starts_with("max-keys="))
            .chain(std::iter::once(format!("max-keys={PAGE}").as_str()))
            .collect::<Vec<_>>()
            .join("&");
    } else if let (true, Some(key)) = (req.method() == axum::http::Method::GET, &object_key) {
        seen.gets.lock().unwrap().push(key.clone());
        if seen.denied.lock().unwrap().contains(key) {
            return refuse("AccessDenied", 403);
        }
    }
    let url = format!("{}{path}?{query}", p.upstream);
    let mut out = p.http.request(req.method().clone(), url);
    for (name, value) in req.headers() {
        if name != "host" && name != "content-length" {
            out = out.header(name, value);
        }
    }
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer = out.body(body).send().await.unwrap();
    let mut reply = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if name != "transfer-encoding" && name != "connection" && name != "content-length" {
            reply = reply.header(name, value);
        }
    }
    reply
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

/// Valid images under `media/2019/`, by key relative to the prefix.
fn good_objects() -> BTreeMap<String, Vec<u8>> {
    let mut keys: Vec<String> = [
        "a.png",
        "nested/deep/er/b.jpg",
        "ünïcødé/ファイル.png",
        "with space/x y.png",
        "plus+sign.jpg",
        "per%25cent.png",
        "100%.png",
    ]
    .iter()
    .map(|k| k.to_string())
    .collect();
    keys.extend((0..6).map(|i| format!("many/img{i}.png")));
    keys.into_iter()
        .enumerate()
        .map(|(i, k)| {
            let bytes = if k.ends_with(".jpg") {
                jpeg(i as u32, 2000 + i * 10)
            } else {
                png(i as u32, 2000 + i * 10)
            };
            (k, bytes)
        })
        .collect()
}

async fn write_tree(s3: &S3) -> BTreeMap<String, Vec<u8>> {
    let good = good_objects();
    for (key, bytes) in &good {
        s3.put(&format!("media/2019/{key}"), bytes).await;
    }
    // Look-alike neighbours that are not under the prefix.
    for (i, key) in [
        "media/2019-old/n.png",
        "Media/2019/n.png",
        "media/2019.png",
        "media/20190/n.png",
    ]
    .iter()
    .enumerate()
    {
        s3.put(key, &png(100 + i as u32, 1500)).await;
    }
    // Bad objects under it.
    s3.put("media/2019/empty.png", b"").await;
    s3.put("media/2019/dir/", b"").await;
    s3.put("media/2019/notes.jpg", b"this is text, not a JPEG\n")
        .await;
    good
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_prefix_is_migrated_page_by_page_and_an_unchanged_rerun_reads_nothing() {
    let Some(s3) = S3::start().await else { return };
    let env = TestEnv::new().await;
    let good = write_tree(&s3).await;

    let (code, summary, out) = s3
        .migrate(&env, "media/2019", &["--id-prefix", "legacy/"])
        .await;
    // The text file named .jpg and the empty object are rejected, so the run is
    // incomplete; only the folder placeholder is passed over (issue 17.7).
    assert_eq!(code, 1, "{out}");
    assert_eq!(summary["uploaded"], good.len(), "{summary}");
    assert_eq!(summary["rejected"], 2, "{summary}");
    assert_eq!(summary["ignored"], 1, "{summary}");
    let f = env.run(&["failures", "--all", "--json"]).await;
    let f: serde_json::Value = serde_json::from_slice(&f.stdout).unwrap();
    let row = |key: &str| {
        f.as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} not in {f:#}"))
    };
    assert_eq!(row("empty.png")["state"], "rejected", "{f:#}");
    assert!(
        row("empty.png")["reason"]
            .as_str()
            .unwrap()
            .contains("empty (0 bytes)"),
        "{f:#}"
    );
    assert_eq!(row("dir/")["state"], "ignored", "{f:#}");

    // Every image holds its object's bytes under a path id relative to the prefix.
    let images = env.inspect().images;
    let stored: BTreeMap<String, String> = images
        .iter()
        .map(|i| (i.id.clone(), i.sha256.clone()))
        .collect();
    let want: BTreeMap<String, String> = good
        .iter()
        .map(|(k, b)| (format!("legacy/{k}"), sha256(b)))
        .collect();
    assert_eq!(stored, want);

    // Only keys under the prefix were read, each once; the empty object (rejected) and the
    // placeholder (passed over) cost no GET; the listing came in small pages.
    let gets = s3.gets();
    let mut read: Vec<String> = gets.clone();
    read.sort();
    let mut expected: Vec<String> = good
        .keys()
        .chain(std::iter::once(&"notes.jpg".to_string()))
        .map(|k| format!("media/2019/{k}"))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
    let listed = good.len() as u64 + 3;
    let lists = s3.seen.lists.load(Ordering::SeqCst);
    assert!(lists >= listed / u64::from(PAGE), "{lists} listing pages");

    // Every request was signed with the given key id for the given region.
    for auth in s3.seen.auths.lock().unwrap().iter() {
        assert!(
            auth.contains(&format!("{KEY_ID}/"))
                && auth.contains(&format!("/{REGION}/s3/aws4_request")),
            "{auth}"
        );
        assert!(!auth.contains(SECRET));
    }
    assert!(!out.contains(SECRET), "{out}");

    let rows = env.ledger_rows();
    assert_eq!(rows["notes.jpg"].state, cfimg::ledger::State::Rejected);
    assert!(
        rows["a.png"]
            .etag
            .as_deref()
            .is_some_and(|e| e.starts_with('"'))
    );

    // Unchanged rerun: no GetObject, no upload.
    let posts = env.upload_posts();
    let (code, summary, out) = s3
        .migrate(&env, "media/2019/", &["--id-prefix", "legacy/"])
        .await;
    // Its only problems are the rejects of the first run: this run exits 0 and reminds them.
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["rejected_earlier"], 2, "{summary}");
    assert_eq!(summary["skipped"], good.len(), "{summary}");
    assert_eq!(summary["uploaded"], 0, "{summary}");
    assert_eq!(s3.gets().len(), gets.len(), "{:?}", s3.gets());
    assert_eq!(env.upload_posts(), posts);

    // A new object and a replaced one are the only ones read and sent.
    s3.put("media/2019/new/one.png", &png(900, 3000)).await;
    s3.put("media/2019/a.png", &png(901, 3100)).await;
    s3.delete("media/2019/notes.jpg").await;
    s3.delete("media/2019/empty.png").await;
    let (code, summary, out) = s3
        .migrate(&env, "media/2019", &["--id-prefix", "legacy/"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["uploaded"], 2, "{summary}");
    assert_eq!(summary["replaced"], 1, "{summary}");
    let fresh: Vec<String> = s3.gets()[gets.len()..].to_vec();
    let fresh: BTreeSet<String> = fresh.into_iter().collect();
    assert_eq!(
        fresh,
        BTreeSet::from([
            "media/2019/new/one.png".to_string(),
            "media/2019/a.png".to_string()
        ])
    );
    assert_eq!(env.upload_posts(), posts + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_object_refused_on_one_key_fails_that_item_only_and_is_retried_next_run() {
    let Some(s3) = S3::start().await else { return };
    let env = TestEnv::new().await;
    for i in 0..4 {
        s3.put(&format!("p/img{i}.png"), &png(i, 2500)).await;
    }
    s3.seen
        .denied
        .lock()
        .unwrap()
        .insert("p/img2.png".to_string());
    let (code, summary, out) = s3.migrate(&env, "p", &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(summary["uploaded"], 3, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    let rows = env.ledger_rows();
    let row = &rows["img2.png"];
    assert_eq!(row.state, cfimg::ledger::State::Failed, "{row:?}");
    let why = row.last_error.as_deref().unwrap_or_default();
    assert!(why.contains("img2.png"), "{why}");

    // Once readable, the next run picks it up, and only it.
    s3.seen.denied.lock().unwrap().clear();
    let before = s3.gets().len();
    let (code, summary, out) = s3.migrate(&env, "p", &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(s3.gets()[before..], ["p/img2.png".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_presign_mode_lets_cloudflare_fetch_each_object() {
    let Some(s3) = S3::start().await else { return };
    let env = TestEnv::new().await;
    let objects: Vec<(String, Vec<u8>)> = ["a.png", "sub dir/ü+1.png"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), png(i as u32, 3000)))
        .collect();
    for (k, b) in &objects {
        s3.put(&format!("pre/{k}"), b).await;
    }
    let (code, summary, out) = s3.migrate(&env, "pre", &["--s3-mode", "presign"]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["uploaded"], 2, "{summary}");
    let stored: BTreeMap<String, String> = env
        .inspect()
        .images
        .iter()
        .map(|i| (i.id.clone(), i.sha256.clone()))
        .collect();
    let want: BTreeMap<String, String> = objects
        .iter()
        .map(|(k, b)| (k.clone(), sha256(b)))
        .collect();
    assert_eq!(stored, want);
    // The emulator fetched each presigned URL once, signed for the configured identity.
    assert_eq!(s3.gets().len(), 2);
    let auths = s3.seen.auths.lock().unwrap().clone();
    assert!(
        auths
            .iter()
            .any(|a| a.starts_with(&format!("X-Amz-Credential={KEY_ID}/"))),
        "{auths:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bucket_that_cannot_be_listed_stops_the_run_with_exit_3() {
    let Some(s3) = S3::start().await else { return };
    let env = TestEnv::new().await;
    s3.put("x/a.png", &png(1, 2000)).await;

    // No such bucket.
    let out = env
        .cmd(&[
            "migrate",
            "s3://no-such-bucket/x",
            "--endpoint-url",
            &s3.endpoint,
        ])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("cannot list s3://no-such-bucket/x/"), "{all}");

    // Credentials refused.
    s3.seen.deny_all.store(true, Ordering::SeqCst);
    let (code, _, all) = s3.migrate(&env, "x", &[]).await;
    assert_eq!(code, 3, "{all}");
    assert!(all.contains("cannot list s3://photos/x/"), "{all}");
    assert!(all.contains("AWS_ACCESS_KEY_ID"), "{all}");
    assert!(!all.contains(SECRET), "{all}");

    // Nothing listening at the endpoint.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let out = env
        .cmd(&[
            "migrate",
            "s3://photos/x",
            "--endpoint-url",
            &format!("http://127.0.0.1:{port}"),
        ])
        .env("AWS_ACCESS_KEY_ID", KEY_ID)
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains("cannot list s3://photos/x/"), "{all}");

    // No credentials at all: a configuration error, before any request.
    let out = env
        .cmd(&["migrate", "s3://photos/x", "--endpoint-url", &s3.endpoint])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("AWS_ACCESS_KEY_ID"), "{all}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_bucket_ledger_is_rebuilt_and_the_next_run_uploads_only_the_changed_object() {
    let Some(s3) = S3::start().await else { return };
    let env = TestEnv::new().await;
    for i in 0..4 {
        s3.put(&format!("p/img{i}.png"), &png(i, 2500)).await;
    }
    let (code, summary, out) = s3.migrate(&env, "p", &[]).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(4)), "{out}");
    let before = env.ledger_rows();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.ledger.display()));
    }
    // One object changed while the ledger was lost.
    s3.put("p/img1.png", &png(90, 2600)).await;

    let url = format!("s3://{BUCKET}/p");
    let (code, report, out) = s3
        .cfimg(&env, &["ledger", "rebuild", "--source", url.as_str()])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (report["matched"].as_u64(), report["recorded"].as_u64()),
        (Some(4), Some(4)),
        "{report}"
    );
    assert_eq!(report["to_check"], 4, "{report}");
    assert!(
        report["source"].as_str().unwrap().starts_with("bucket:"),
        "{report}"
    );
    let after = env.ledger_rows();
    for key in before.keys() {
        assert_eq!(after[key].image_id, before[key].image_id, "{key}");
    }

    // Each object is read once and compared with its stamp: only the changed one is sent.
    let posts = env.upload_posts();
    let gets = s3.gets().len();
    let (code, summary, out) = s3.migrate(&env, "p", &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(3)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts + 1);
    assert_eq!(s3.gets().len(), gets + 4);
    // Then the ledger knows every ETag: nothing is read or sent.
    let gets = s3.gets().len();
    let (code, summary, out) = s3.migrate(&env, "p", &[]).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(0)), "{out}");
    assert_eq!(s3.gets().len(), gets);
    assert_eq!(env.inspect().images.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_ledger_stops_an_auto_id_bucket_run_with_the_rebuild_command_for_that_bucket() {
    let Some(s3) = S3::start().await else { return };
    let env = TestEnv::new().await;
    for i in 0..3 {
        s3.put(&format!("p/img{i}.png"), &png(i, 2500)).await;
    }
    let auto = ["--id-mode", "auto"];
    let (code, summary, out) = s3.migrate(&env, "p", &auto).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(3)), "{out}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.ledger.display()));
    }
    let posts = env.upload_posts();
    let (code, _, out) = s3.migrate(&env, "p", &auto).await;
    assert_eq!(code, 2, "{out}");
    assert_eq!(env.upload_posts(), posts, "nothing uploaded: {out}");
    assert!(out.contains("3 images"), "{out}");
    let named = format!(
        "ledger rebuild --source s3://{BUCKET}/p/ --endpoint-url {}",
        s3.endpoint
    );
    assert!(out.contains(&named), "{out}");

    let url = format!("s3://{BUCKET}/p");
    let (code, _, out) = s3
        .cfimg(&env, &["ledger", "rebuild", "--source", url.as_str()])
        .await;
    assert_eq!(code, 0, "{out}");
    let (code, summary, out) = s3.migrate(&env, "p", &auto).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(0)), "{out}");
    assert_eq!(env.upload_posts(), posts);
    assert_eq!(env.inspect().images.len(), 3);
}
