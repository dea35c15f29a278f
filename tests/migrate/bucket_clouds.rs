//! `cfimg migrate gs://BUCKET/PREFIX` and `az://CONTAINER/PREFIX` against the real emulators
//! on loopback: gcp-storage-emulator (tests/gcs/setup.sh) and Azurite (tests/azure/setup.sh),
//! each seen through a small proxy in the test that counts requests, records their
//! credentials, makes listing pages small and refuses chosen keys. The cases are the S3
//! tests' (tests/migrate/bucket.rs). Without an emulator the tests skip with a message,
//! unless `CI` is set.
//!
//! What the emulators cannot do, and how the tests say so:
//! - gcp-storage-emulator answers a listing in one page whatever `maxResults` asks: the proxy
//!   cuts its answer into pages with GCS's own `nextPageToken`/`pageToken` protocol.
//! - gcp-storage-emulator checks no credentials and no URL signature: the GCS tests assert
//!   what cfimg sent (the bearer token, the V4 signature's parameters), not that it was
//!   accepted. Azurite checks both (Shared Key and SAS), so the Azure tests prove them.
//! - Azurite checks the Shared Key signature of every request, so the proxy signs again the
//!   listing requests whose page size it changed (with Azurite's well-known account key).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method};
use axum::response::Response;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::common::{TestEnv, jpeg, png, text};

const BUCKET: &str = "photos";
/// Keys per listing page, forced by the proxy (GCS allows up to 1000, Azure 5000).
const PAGE: usize = 4;
/// Azurite's well-known development account and key (public, in Microsoft's documentation).
const AZ_ACCOUNT: &str = "devstoreaccount1";
const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Every character but the unreserved ones is percent-encoded (a whole GCS object name is
/// one path segment).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// Characters left as they are in a key's URL path.
const KEY_PATH: &AsciiSet = &SEGMENT.remove(b'/');

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Gcs,
    Azure,
}

impl Kind {
    fn scheme(self) -> &'static str {
        match self {
            Kind::Gcs => "gs",
            Kind::Azure => "az",
        }
    }
}

/// The emulator's executable, or `None` (skip) outside CI.
fn emulator_bin(kind: Kind) -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let (bin, setup) = match kind {
        Kind::Gcs => (
            std::env::var_os("GCS_EMULATOR_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/gcs-venv"))
                .join("bin/gcp-storage-emulator"),
            "tests/gcs/setup.sh",
        ),
        Kind::Azure => (
            std::env::var_os("AZURITE_PREFIX")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target/azurite"))
                .join("node_modules/.bin/azurite-blob"),
            "tests/azure/setup.sh",
        ),
    };
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{} is missing: CI must run {setup} before cargo test",
        bin.display()
    );
    eprintln!(
        "skipped: {} is missing; run {setup} to run these bucket tests",
        bin.display()
    );
    None
}

/// What the proxy saw and what it refuses.
#[derive(Default)]
struct Seen {
    /// Object keys of every object read, in order.
    gets: Mutex<Vec<String>>,
    /// Listing requests.
    lists: AtomicU64,
    /// Credentials of every request: the Authorization header, or a signed URL's credential.
    auths: Mutex<BTreeSet<String>>,
    /// Keys whose read is refused (403).
    denied: Mutex<BTreeSet<String>>,
    /// Refuse every request (401/403, as a bad credential is).
    deny_all: AtomicBool,
}

struct Proxy {
    kind: Kind,
    upstream: String,
    http: reqwest::Client,
    seen: Arc<Seen>,
}

/// An emulator on a free loopback port, with the counting proxy in front of it.
struct Cloud {
    kind: Kind,
    _emulator: tokio::process::Child,
    _dir: tempfile::TempDir,
    /// The emulator itself (fixtures are written here, unseen by the proxy).
    direct: String,
    /// The proxy.
    proxy: String,
    seen: Arc<Seen>,
    http: reqwest::Client,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cloud {
    async fn start(kind: Kind) -> Option<Cloud> {
        let bin = emulator_bin(kind)?;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port().to_string();
        let mut cmd = tokio::process::Command::new(bin);
        match kind {
            Kind::Gcs => cmd.args([
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                &port,
                "--in-memory",
                "--default-bucket",
                BUCKET,
                "--quiet",
            ]),
            Kind::Azure => cmd.args([
                "--blobHost",
                "127.0.0.1",
                "--blobPort",
                &port,
                "--inMemoryPersistence",
                "--skipApiVersionCheck",
                "--disableTelemetry",
                "--silent",
            ]),
        };
        let emulator = cmd
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the emulator starts");
        let direct = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        // Node and Python start slowly on a loaded machine.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while http.get(format!("{direct}/")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the {kind:?} emulator did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let seen = Arc::new(Seen::default());
        let state = Arc::new(Proxy {
            kind,
            upstream: direct.clone(),
            http: http.clone(),
            seen: seen.clone(),
        });
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        let cloud = Cloud {
            kind,
            _emulator: emulator,
            _dir: dir,
            direct,
            proxy,
            seen,
            http,
        };
        if kind == Kind::Azure {
            let r = cloud
                .az_request(Method::PUT, &format!("{BUCKET}?restype=container"), vec![])
                .await;
            assert!(r.status().is_success(), "create container: {}", r.status());
        }
        Some(cloud)
    }

    /// A request to Azurite itself, signed with Shared Key.
    async fn az_request(&self, method: Method, path: &str, body: Vec<u8>) -> reqwest::Response {
        let url = reqwest::Url::parse(&format!("{}/{AZ_ACCOUNT}/{path}", self.direct)).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-ms-date",
            httpdate::fmt_http_date(std::time::SystemTime::now())
                .parse()
                .unwrap(),
        );
        headers.insert("x-ms-version", "2021-08-06".parse().unwrap());
        if method == Method::PUT && !path.contains("restype=container") {
            headers.insert("x-ms-blob-type", "BlockBlob".parse().unwrap());
        }
        headers.insert("content-length", body.len().to_string().parse().unwrap());
        let auth = az_shared_key(&method, &url, &headers);
        headers.insert("authorization", auth.parse().unwrap());
        self.http
            .request(method, url)
            .headers(headers)
            .body(body)
            .send()
            .await
            .unwrap()
    }

    /// Writes an object straight to the emulator.
    async fn put(&self, key: &str, bytes: &[u8]) {
        let r = match self.kind {
            Kind::Gcs => {
                // A multipart upload, as Google's client libraries send: the emulator's
                // simple upload cannot take an empty body.
                let mut body = format!(
                    "--BOUNDARY\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{}\r\n\
                     --BOUNDARY\r\nContent-Type: application/octet-stream\r\n\r\n",
                    serde_json::json!({ "name": key })
                )
                .into_bytes();
                body.extend_from_slice(bytes);
                body.extend_from_slice(b"\r\n--BOUNDARY--\r\n");
                self.http
                    .post(format!(
                        "{}/upload/storage/v1/b/{BUCKET}/o?uploadType=multipart",
                        self.direct
                    ))
                    .header("content-type", "multipart/related; boundary=BOUNDARY")
                    .body(body)
                    .send()
                    .await
                    .unwrap()
            }
            Kind::Azure => {
                self.az_request(
                    Method::PUT,
                    &format!("{BUCKET}/{}", utf8_percent_encode(key, KEY_PATH)),
                    bytes.to_vec(),
                )
                .await
            }
        };
        assert!(r.status().is_success(), "put {key}: {}", r.status());
    }

    async fn delete(&self, key: &str) {
        let r = match self.kind {
            Kind::Gcs => self
                .http
                .delete(format!(
                    "{}/storage/v1/b/{BUCKET}/o/{}",
                    self.direct,
                    utf8_percent_encode(key, SEGMENT)
                ))
                .send()
                .await
                .unwrap(),
            Kind::Azure => {
                self.az_request(
                    Method::DELETE,
                    &format!("{BUCKET}/{}", utf8_percent_encode(key, KEY_PATH)),
                    vec![],
                )
                .await
            }
        };
        assert!(r.status().is_success(), "delete {key}: {}", r.status());
    }

    fn gets(&self) -> Vec<String> {
        self.seen.gets.lock().unwrap().clone()
    }

    fn url(&self, bucket: &str, prefix: &str) -> String {
        format!("{}://{bucket}/{prefix}", self.kind.scheme())
    }

    /// The `--endpoint-url` cfimg is given: the proxy (Azure: the account's blob endpoint).
    fn endpoint(&self) -> String {
        match self.kind {
            Kind::Gcs => self.proxy.clone(),
            Kind::Azure => format!("{}/{AZ_ACCOUNT}", self.proxy),
        }
    }

    /// A cfimg command with this store's credentials in the environment, as its users set
    /// them, and nothing else of the kind.
    fn command(&self, env: &TestEnv, args: &[&str]) -> tokio::process::Command {
        let mut cmd = env.cmd(args);
        for var in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "GOOGLE_SERVICE_ACCOUNT",
            "GOOGLE_SERVICE_ACCOUNT_PATH",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
            "STORAGE_EMULATOR_HOST",
            "AZURE_STORAGE_ACCOUNT",
            "AZURE_STORAGE_ACCOUNT_NAME",
            "AZURE_STORAGE_KEY",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_CLIENT_ID",
            "AZURE_CLIENT_SECRET",
            "AZURE_TENANT_ID",
        ] {
            cmd.env_remove(var);
        }
        match self.kind {
            Kind::Gcs => cmd.env("STORAGE_EMULATOR_HOST", &self.proxy),
            Kind::Azure => cmd
                .env("AZURE_STORAGE_ACCOUNT_NAME", AZ_ACCOUNT)
                .env("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY),
        };
        cmd
    }

    /// Runs `cfimg <args> --json --endpoint-url <proxy>` with the credentials.
    async fn cfimg(&self, env: &TestEnv, args: &[&str]) -> (i32, Value, String) {
        let endpoint = self.endpoint();
        let mut args = args.to_vec();
        args.extend_from_slice(&["--json", "--endpoint-url", endpoint.as_str()]);
        let out = self.command(env, &args).output().await.expect("cfimg runs");
        let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        (out.status.code().unwrap_or(-1), summary, text(&out))
    }

    /// Runs `cfimg migrate <scheme>://photos/<prefix> --json`.
    async fn migrate(&self, env: &TestEnv, prefix: &str, extra: &[&str]) -> (i32, Value, String) {
        let url = self.url(BUCKET, prefix);
        let mut args = vec!["migrate", url.as_str()];
        args.extend_from_slice(extra);
        self.cfimg(env, &args).await
    }
}

/// Azure's Shared Key authorization of a request (the Blob service's string to sign).
fn az_shared_key(method: &Method, url: &reqwest::Url, headers: &HeaderMap) -> String {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let length = h("content-length");
    let length = if length == "0" { String::new() } else { length };
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(n, _)| n.as_str().starts_with("x-ms-"))
        .map(|(n, v)| {
            (
                n.as_str().to_string(),
                v.to_str().unwrap().trim().to_string(),
            )
        })
        .collect();
    ms.sort();
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in url.query_pairs() {
        query
            .entry(k.to_lowercase())
            .or_default()
            .push(v.into_owned());
    }
    let mut resource = format!("/{AZ_ACCOUNT}{}", url.path());
    for (k, v) in &query {
        resource.push_str(&format!("\n{k}:{}", v.join(",")));
    }
    let mut to_sign: Vec<String> = vec![
        method.as_str().to_string(),
        h("content-encoding"),
        h("content-language"),
        length,
        h("content-md5"),
        h("content-type"),
        // object_store sends Date; the fixtures send x-ms-date (signed below) instead.
        h("date"),
        h("if-modified-since"),
        h("if-match"),
        h("if-none-match"),
        h("if-unmodified-since"),
        h("range"),
    ];
    to_sign.extend(ms.iter().map(|(n, v)| format!("{n}:{v}")));
    to_sign.push(resource);
    let to_sign = to_sign.join("\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZ_KEY)
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("SharedKey {AZ_ACCOUNT}:{sig}")
}

fn query_value(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| percent_decode_str(v).decode_utf8_lossy().into_owned())
    })
}

fn refuse(kind: Kind, status: u16) -> Response {
    let (ctype, body) = match kind {
        Kind::Gcs => (
            "application/json",
            format!("{{\"error\":{{\"code\":{status},\"message\":\"refused by the test\"}}}}"),
        ),
        Kind::Azure => (
            "application/xml",
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthorizationPermissionMismatch</Code><Message>refused by the test</Message></Error>".to_string(),
        ),
    };
    Response::builder()
        .status(status)
        .header("content-type", ctype)
        .body(Body::from(body))
        .unwrap()
}

/// Forwards one request to the emulator: counts it, records its credential, makes listing
/// pages small, and refuses what the test asked to refuse.
async fn forward(State(p): State<Arc<Proxy>>, req: Request) -> Response {
    let seen = &p.seen;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(|a| match a.split_once(':') {
            // The Shared Key's account, not its signature (which changes per request).
            Some((scheme, _)) if scheme.starts_with("SharedKey") => scheme.to_string(),
            _ => a.to_string(),
        })
        .or_else(|| {
            query_value(&query, "X-Goog-Credential").map(|c| format!("X-Goog-Credential={c}"))
        })
        .or_else(|| {
            query_value(&query, "sig")
                .map(|_| format!("SAS sp={}", query_value(&query, "sp").unwrap_or_default()))
        })
        .unwrap_or_else(|| "<unsigned>".into());
    seen.auths.lock().unwrap().insert(auth);
    if seen.deny_all.load(Ordering::SeqCst) {
        return refuse(p.kind, 403);
    }
    let (is_list, object_key) = match p.kind {
        Kind::Gcs => {
            let list = path == format!("/storage/v1/b/{BUCKET}/o");
            let key = path
                .strip_prefix(&format!("/download/storage/v1/b/{BUCKET}/o/"))
                .or_else(|| path.strip_prefix(&format!("/{BUCKET}/")))
                .map(|k| percent_decode_str(k).decode_utf8_lossy().into_owned());
            (list, key)
        }
        Kind::Azure => {
            let list = query.contains("comp=list");
            let key = path
                .strip_prefix(&format!("/{AZ_ACCOUNT}/{BUCKET}/"))
                .filter(|k| !k.is_empty() && !query.contains("comp="))
                .map(|k| percent_decode_str(k).decode_utf8_lossy().into_owned());
            (list, key)
        }
    };
    if is_list {
        seen.lists.fetch_add(1, Ordering::SeqCst);
        if p.kind == Kind::Gcs {
            return gcs_page(&p, &path, &query, req.headers()).await;
        }
    } else if let (true, Some(key)) = (req.method() == Method::GET, &object_key) {
        seen.gets.lock().unwrap().push(key.clone());
        if seen.denied.lock().unwrap().contains(key) {
            return refuse(p.kind, 403);
        }
    }
    let mut headers = req.headers().clone();
    headers.remove("host");
    let mut url = reqwest::Url::parse(&format!("{}{path}", p.upstream)).unwrap();
    url.set_query((!query.is_empty()).then_some(query.as_str()));
    if is_list && p.kind == Kind::Azure {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "maxresults")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .chain(std::iter::once((
                "maxresults".to_string(),
                PAGE.to_string(),
            )))
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
        // The page size is part of what Shared Key signs: sign again, as cfimg would.
        if headers.contains_key("authorization") {
            headers.remove("content-length");
            let auth = az_shared_key(&Method::GET, &url, &headers);
            headers.insert("authorization", auth.parse().unwrap());
        }
    }
    let method = req.method().clone();
    let body = axum::body::to_bytes(req.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer = p
        .http
        .request(method, url)
        .headers(headers)
        .body(body)
        .send()
        .await
        .unwrap();
    relay(answer).await
}

async fn relay(answer: reqwest::Response) -> Response {
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

/// A GCS listing page: the emulator answers with every object at once, so the proxy asks
/// it for the whole listing and hands out `PAGE` of them with GCS's `nextPageToken`.
async fn gcs_page(p: &Proxy, path: &str, query: &str, headers: &HeaderMap) -> Response {
    let start: usize = query_value(query, "pageToken")
        .map(|t| t.parse().expect("a token this proxy handed out"))
        .unwrap_or(0);
    let upstream: String = query
        .split('&')
        .filter(|kv| !kv.starts_with("pageToken=") && !kv.starts_with("maxResults="))
        .collect::<Vec<_>>()
        .join("&");
    let mut out = p.http.get(format!("{}{path}?{upstream}", p.upstream));
    if let Some(a) = headers.get("authorization") {
        out = out.header("authorization", a);
    }
    let answer = out.send().await.unwrap();
    if !answer.status().is_success() {
        return relay(answer).await;
    }
    let mut all: Value = answer.json().await.unwrap();
    let items = all["items"].as_array().cloned().unwrap_or_default();
    let page: Vec<Value> = items.iter().skip(start).take(PAGE).cloned().collect();
    all["items"] = Value::Array(page);
    if start + PAGE < items.len() {
        all["nextPageToken"] = Value::String((start + PAGE).to_string());
    }
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::from(all.to_string()))
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

async fn write_tree(c: &Cloud) -> BTreeMap<String, Vec<u8>> {
    let good = good_objects();
    for (key, bytes) in &good {
        c.put(&format!("media/2019/{key}"), bytes).await;
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
        c.put(key, &png(100 + i as u32, 1500)).await;
    }
    // Bad objects under it.
    c.put("media/2019/empty.png", b"").await;
    c.put("media/2019/dir/", b"").await;
    c.put("media/2019/notes.jpg", b"this is text, not a JPEG\n")
        .await;
    good
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What each store's requests carried: GCS's emulator takes no token (STORAGE_EMULATOR_HOST),
/// Azure's are Shared Key signed for the account.
fn assert_credentials(c: &Cloud, out: &str) {
    for auth in c.seen.auths.lock().unwrap().iter() {
        match c.kind {
            Kind::Gcs => assert_eq!(auth, "<unsigned>", "the emulator gets no token"),
            Kind::Azure => assert_eq!(auth, &format!("SharedKey {AZ_ACCOUNT}")),
        }
    }
    assert!(!out.contains(AZ_KEY), "{out}");
}

async fn prefix_is_migrated_page_by_page_and_an_unchanged_rerun_reads_nothing(kind: Kind) {
    let Some(c) = Cloud::start(kind).await else {
        return;
    };
    let env = TestEnv::new().await;
    let good = write_tree(&c).await;

    let (code, summary, out) = c
        .migrate(&env, "media/2019", &["--id-prefix", "legacy/"])
        .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(summary["uploaded"], good.len(), "{summary}");
    assert_eq!(summary["rejected"], 2, "{summary}");
    assert_eq!(summary["ignored"], 1, "{summary}");
    let f = env.run(&["failures", "--all", "--json"]).await;
    let f: Value = serde_json::from_slice(&f.stdout).unwrap();
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
    let stored: BTreeMap<String, String> = env
        .inspect()
        .images
        .iter()
        .map(|i| (i.id.clone(), i.sha256.clone()))
        .collect();
    let want: BTreeMap<String, String> = good
        .iter()
        .map(|(k, b)| (format!("legacy/{k}"), sha256(b)))
        .collect();
    assert_eq!(stored, want);

    // Only keys under the prefix were read, each once; the empty object and the
    // placeholder cost no read; the listing came in small pages.
    let gets = c.gets();
    let mut read = gets.clone();
    read.sort();
    let mut expected: Vec<String> = good
        .keys()
        .chain(std::iter::once(&"notes.jpg".to_string()))
        .map(|k| format!("media/2019/{k}"))
        .collect();
    expected.sort();
    assert_eq!(read, expected);
    let listed = good.len() + 3;
    let lists = c.seen.lists.load(Ordering::SeqCst) as usize;
    assert!(lists >= listed / PAGE, "{lists} listing pages");
    assert_credentials(&c, &out);
    let rows = env.ledger_rows();
    assert_eq!(rows["notes.jpg"].state, cfimg::ledger::State::Rejected);
    assert!(rows["a.png"].etag.is_some(), "{:?}", rows["a.png"]);

    // Unchanged rerun: no object read, no upload.
    let posts = env.upload_posts();
    let (code, summary, out) = c
        .migrate(&env, "media/2019/", &["--id-prefix", "legacy/"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["rejected_earlier"], 2, "{summary}");
    assert_eq!(summary["skipped"], good.len(), "{summary}");
    assert_eq!(summary["uploaded"], 0, "{summary}");
    assert_eq!(c.gets().len(), gets.len(), "{:?}", c.gets());
    assert_eq!(env.upload_posts(), posts);

    // A new object and a replaced one are the only ones read and sent.
    c.put("media/2019/new/one.png", &png(900, 3000)).await;
    c.put("media/2019/a.png", &png(901, 3100)).await;
    c.delete("media/2019/notes.jpg").await;
    c.delete("media/2019/empty.png").await;
    let (code, summary, out) = c
        .migrate(&env, "media/2019", &["--id-prefix", "legacy/"])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["uploaded"], 2, "{summary}");
    assert_eq!(summary["replaced"], 1, "{summary}");
    let fresh: BTreeSet<String> = c.gets()[gets.len()..].iter().cloned().collect();
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
async fn gcs_prefix_is_migrated_page_by_page_and_an_unchanged_rerun_reads_nothing() {
    prefix_is_migrated_page_by_page_and_an_unchanged_rerun_reads_nothing(Kind::Gcs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_prefix_is_migrated_page_by_page_and_an_unchanged_rerun_reads_nothing() {
    prefix_is_migrated_page_by_page_and_an_unchanged_rerun_reads_nothing(Kind::Azure).await;
}

async fn object_refused_on_one_key_fails_that_item_only_and_is_retried_next_run(kind: Kind) {
    let Some(c) = Cloud::start(kind).await else {
        return;
    };
    let env = TestEnv::new().await;
    for i in 0..4 {
        c.put(&format!("p/img{i}.png"), &png(i, 2500)).await;
    }
    c.seen.denied.lock().unwrap().insert("p/img2.png".into());
    let (code, summary, out) = c.migrate(&env, "p", &[]).await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(summary["uploaded"], 3, "{summary}");
    assert_eq!(summary["failed"], 1, "{summary}");
    let rows = env.ledger_rows();
    let row = &rows["img2.png"];
    assert_eq!(row.state, cfimg::ledger::State::Failed, "{row:?}");
    let why = row.last_error.as_deref().unwrap_or_default();
    assert!(why.contains("img2.png"), "{why}");

    c.seen.denied.lock().unwrap().clear();
    let before = c.gets().len();
    let (code, summary, out) = c.migrate(&env, "p", &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(summary["uploaded"], 1, "{summary}");
    assert_eq!(c.gets()[before..], ["p/img2.png".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_object_refused_on_one_key_fails_that_item_only_and_is_retried_next_run() {
    object_refused_on_one_key_fails_that_item_only_and_is_retried_next_run(Kind::Gcs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_object_refused_on_one_key_fails_that_item_only_and_is_retried_next_run() {
    object_refused_on_one_key_fails_that_item_only_and_is_retried_next_run(Kind::Azure).await;
}

async fn bucket_that_cannot_be_listed_stops_the_run_with_exit_3(kind: Kind) {
    let Some(c) = Cloud::start(kind).await else {
        return;
    };
    let env = TestEnv::new().await;
    c.put("x/a.png", &png(1, 2000)).await;
    let endpoint = c.endpoint();

    // No such bucket.
    let missing = c.url("no-such-bucket", "x");
    let out = c
        .command(&env, &["migrate", &missing, "--endpoint-url", &endpoint])
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains(&format!("cannot list {missing}/")), "{all}");

    // Credentials refused: the hint names this store's variables.
    c.seen.deny_all.store(true, Ordering::SeqCst);
    let (code, _, all) = c.migrate(&env, "x", &[]).await;
    assert_eq!(code, 3, "{all}");
    assert!(
        all.contains(&format!("cannot list {}", c.url(BUCKET, "x/"))),
        "{all}"
    );
    let hint = match kind {
        Kind::Gcs => "GOOGLE_APPLICATION_CREDENTIALS",
        Kind::Azure => "AZURE_STORAGE_ACCOUNT_KEY",
    };
    assert!(all.contains(hint), "{all}");
    assert!(!all.contains("AWS_"), "{all}");
    assert!(!all.contains(AZ_KEY), "{all}");
    c.seen.deny_all.store(false, Ordering::SeqCst);

    // Nothing listening at the endpoint.
    let closed = format!("http://127.0.0.1:{}", free_port());
    let url = c.url(BUCKET, "x");
    let mut cmd = c.command(&env, &["migrate", &url, "--endpoint-url", &closed]);
    if kind == Kind::Gcs {
        cmd.env("STORAGE_EMULATOR_HOST", &closed);
    }
    let out = cmd.output().await.unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "{all}");
    assert!(all.contains(&format!("cannot list {url}/")), "{all}");

    // No credentials at all: a configuration error naming the variables, before any request.
    let lists = c.seen.lists.load(Ordering::SeqCst);
    let mut cmd = c.command(&env, &["migrate", &url, "--endpoint-url", &endpoint]);
    let want = match kind {
        Kind::Gcs => {
            cmd.env_remove("STORAGE_EMULATOR_HOST");
            "GOOGLE_APPLICATION_CREDENTIALS"
        }
        Kind::Azure => {
            cmd.env_remove("AZURE_STORAGE_ACCOUNT_KEY");
            "AZURE_STORAGE_ACCOUNT_KEY"
        }
    };
    let out = cmd.output().await.unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains(want), "{all}");
    assert_eq!(c.seen.lists.load(Ordering::SeqCst), lists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_bucket_that_cannot_be_listed_stops_the_run_with_exit_3() {
    bucket_that_cannot_be_listed_stops_the_run_with_exit_3(Kind::Gcs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_container_that_cannot_be_listed_stops_the_run_with_exit_3() {
    bucket_that_cannot_be_listed_stops_the_run_with_exit_3(Kind::Azure).await;
}

async fn lost_ledger_is_rebuilt_and_the_next_run_uploads_only_the_changed_object(kind: Kind) {
    let Some(c) = Cloud::start(kind).await else {
        return;
    };
    let env = TestEnv::new().await;
    for i in 0..4 {
        c.put(&format!("p/img{i}.png"), &png(i, 2500)).await;
    }
    let (code, summary, out) = c.migrate(&env, "p", &[]).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(4)), "{out}");
    let before = env.ledger_rows();
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.ledger.display()));
    }
    c.put("p/img1.png", &png(90, 2600)).await;

    let url = c.url(BUCKET, "p");
    let (code, report, out) = c
        .cfimg(&env, &["ledger", "rebuild", "--source", url.as_str()])
        .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (report["matched"].as_u64(), report["recorded"].as_u64()),
        (Some(4), Some(4)),
        "{report}"
    );
    assert!(
        report["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("bucket:{}://{BUCKET}/p/@", kind.scheme())),
        "{report}"
    );
    let after = env.ledger_rows();
    for key in before.keys() {
        assert_eq!(after[key].image_id, before[key].image_id, "{key}");
    }

    // Each object is read once and compared with its stamp: only the changed one is sent.
    let posts = env.upload_posts();
    let gets = c.gets().len();
    let (code, summary, out) = c.migrate(&env, "p", &[]).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
        (Some(1), Some(3)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts + 1);
    assert_eq!(c.gets().len(), gets + 4);
    let gets = c.gets().len();
    let (code, summary, out) = c.migrate(&env, "p", &[]).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(0)), "{out}");
    assert_eq!(c.gets().len(), gets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_lost_ledger_is_rebuilt_and_the_next_run_uploads_only_the_changed_object() {
    lost_ledger_is_rebuilt_and_the_next_run_uploads_only_the_changed_object(Kind::Gcs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_lost_ledger_is_rebuilt_and_the_next_run_uploads_only_the_changed_object() {
    lost_ledger_is_rebuilt_and_the_next_run_uploads_only_the_changed_object(Kind::Azure).await;
}

/// Azure's presign mode: Cloudflare (the emulator) fetches a SAS URL that Azurite checks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_presign_mode_lets_cloudflare_fetch_each_blob_through_a_sas_url() {
    let Some(c) = Cloud::start(Kind::Azure).await else {
        return;
    };
    let env = TestEnv::new().await;
    let objects: Vec<(String, Vec<u8>)> = ["a.png", "sub dir/ü+1.png"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), png(i as u32, 3000)))
        .collect();
    for (k, b) in &objects {
        c.put(&format!("pre/{k}"), b).await;
    }
    let (code, summary, out) = c.migrate(&env, "pre", &["--s3-mode", "presign"]).await;
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
    // Each SAS URL was fetched once (by the emulator, not by cfimg), read-only.
    assert_eq!(c.gets().len(), 2);
    let auths = c.seen.auths.lock().unwrap().clone();
    assert!(auths.contains("SAS sp=r"), "{auths:?}");
    assert!(!out.contains(AZ_KEY), "{out}");
}

/// GCS's presign mode: V4 URLs signed with a service-account key. The emulator checks no
/// signature, so this proves the URL's shape and that the emulator fetched it, not that
/// GCS would accept the signature (object_store's signer is tested against GCS upstream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_presign_mode_lets_cloudflare_fetch_each_object_through_a_signed_url() {
    let Some(c) = Cloud::start(Kind::Gcs).await else {
        return;
    };
    let env = TestEnv::new().await;
    let key = std::process::Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:2048",
        ])
        .output()
        .expect("openssl makes a test key");
    assert!(key.status.success());
    let account = serde_json::json!({
        "type": "service_account",
        "private_key": String::from_utf8(key.stdout).unwrap(),
        "private_key_id": "test-key-1",
        "client_email": "cfimg-test@example.iam.gserviceaccount.com",
    });
    let key_file = env.dir.path().join("service-account.json");
    std::fs::write(&key_file, account.to_string()).unwrap();
    let objects: Vec<(String, Vec<u8>)> = ["a.png", "sub dir/ü+1.png"]
        .iter()
        .enumerate()
        .map(|(i, k)| (k.to_string(), png(i as u32, 3000)))
        .collect();
    for (k, b) in &objects {
        c.put(&format!("pre/{k}"), b).await;
    }
    // Without a key to sign with, presign mode is refused at the start.
    let (code, _, out) = c.migrate(&env, "pre", &["--s3-mode", "presign"]).await;
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("GOOGLE_SERVICE_ACCOUNT"), "{out}");

    let endpoint = c.endpoint();
    let url = c.url(BUCKET, "pre");
    let out = c
        .command(
            &env,
            &[
                "migrate",
                &url,
                "--s3-mode",
                "presign",
                "--json",
                "--endpoint-url",
                &endpoint,
            ],
        )
        .env("GOOGLE_SERVICE_ACCOUNT", &key_file)
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
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
    assert_eq!(c.gets().len(), 2);
    let auths = c.seen.auths.lock().unwrap().clone();
    assert!(
        auths
            .iter()
            .any(|a| a.starts_with("X-Goog-Credential=cfimg-test@example.iam.gserviceaccount.com/")),
        "{auths:?}"
    );
    assert!(!all.contains("PRIVATE KEY"), "{all}");
}

async fn lost_ledger_stops_an_auto_id_run_with_the_rebuild_command_for_that_bucket(kind: Kind) {
    let Some(c) = Cloud::start(kind).await else {
        return;
    };
    let env = TestEnv::new().await;
    for i in 0..3 {
        c.put(&format!("p/img{i}.png"), &png(i, 2500)).await;
    }
    let auto = ["--id-mode", "auto"];
    let (code, summary, out) = c.migrate(&env, "p", &auto).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(3)), "{out}");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", env.ledger.display()));
    }
    let posts = env.upload_posts();
    let (code, _, out) = c.migrate(&env, "p", &auto).await;
    assert_eq!(code, 2, "{out}");
    assert_eq!(env.upload_posts(), posts, "nothing uploaded: {out}");
    assert!(out.contains("3 images"), "{out}");
    // The command names this bucket as the flags spell it, its endpoint included.
    let named = format!(
        "ledger rebuild --source {} --endpoint-url {}",
        c.url(BUCKET, "p/"),
        c.endpoint()
    );
    assert!(out.contains(&named), "{out}");

    let url = c.url(BUCKET, "p");
    let (code, _, out) = c
        .cfimg(&env, &["ledger", "rebuild", "--source", url.as_str()])
        .await;
    assert_eq!(code, 0, "{out}");
    let (code, summary, out) = c.migrate(&env, "p", &auto).await;
    assert_eq!((code, summary["uploaded"].as_u64()), (0, Some(0)), "{out}");
    assert_eq!(env.upload_posts(), posts);
    assert_eq!(env.inspect().images.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcs_lost_ledger_stops_an_auto_id_run_with_the_rebuild_command_for_that_bucket() {
    lost_ledger_stops_an_auto_id_run_with_the_rebuild_command_for_that_bucket(Kind::Gcs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_lost_ledger_stops_an_auto_id_run_with_the_rebuild_command_for_that_container() {
    lost_ledger_stops_an_auto_id_run_with_the_rebuild_command_for_that_bucket(Kind::Azure).await;
}

/// A read-and-list service SAS for the whole container, as the portal or `az storage
/// container generate-sas` makes (sv 2023-11-03), signed with Azurite's account key.
fn az_container_sas() -> String {
    let now = chrono::Utc::now();
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (st, se) = (
        fmt(now - chrono::Duration::minutes(5)),
        fmt(now + chrono::Duration::hours(1)),
    );
    let resource = format!("/blob/{AZ_ACCOUNT}/{BUCKET}");
    let to_sign = [
        "rl",
        &st,
        &se,
        &resource,
        "",
        "",
        "https,http",
        "2023-11-03",
        "c",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZ_KEY)
        .unwrap();
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
    mac.update(to_sign.as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut q = reqwest::Url::parse("http://x/").unwrap();
    q.query_pairs_mut()
        .append_pair("sv", "2023-11-03")
        .append_pair("spr", "https,http")
        .append_pair("st", &st)
        .append_pair("se", &se)
        .append_pair("sr", "c")
        .append_pair("sp", "rl")
        .append_pair("sig", &sig);
    q.query().unwrap().to_string()
}

/// AZURE_STORAGE_SAS_TOKEN alone (no account key) lists and reads the container; Azurite
/// checks the SAS on every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_sas_token_alone_lists_and_reads_the_container() {
    let Some(c) = Cloud::start(Kind::Azure).await else {
        return;
    };
    let env = TestEnv::new().await;
    for i in 0..5 {
        c.put(&format!("s/ü {i}.png"), &png(i, 2500)).await;
    }
    let endpoint = c.endpoint();
    let url = c.url(BUCKET, "s");
    let out = c
        .command(
            &env,
            &["migrate", &url, "--json", "--endpoint-url", &endpoint],
        )
        .env_remove("AZURE_STORAGE_ACCOUNT_KEY")
        .env("AZURE_STORAGE_SAS_TOKEN", az_container_sas())
        .output()
        .await
        .unwrap();
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["uploaded"], 5, "{summary}");
    assert!(c.seen.lists.load(Ordering::SeqCst) >= 2, "small pages");
    let auths = c.seen.auths.lock().unwrap().clone();
    assert!(auths.contains("SAS sp=rl"), "{auths:?}");
    assert!(!all.contains("sig="), "the SAS is a secret: {all}");
}
