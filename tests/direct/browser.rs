//! The demo page in a real browser: headless Chromium (Debian's `chromium`, installed by
//! `.ci/run`) driven over the DevTools protocol by a minimal client on tokio-tungstenite.
//! It loads `cfimg serve --emulator --demo`, picks a file, uploads it straight to the
//! one-time URL and sees the delivered image; then the emulator must hold the file's bytes
//! and the ledger must mark the draft complete. Without Chromium the test fails, unless
//! `CFIMG_SKIP_BROWSER=1` says to skip it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio_tungstenite::tungstenite::Message;

use super::draft_row;
use crate::common::{png, sha256_bytes};

/// The Chromium binary: `CFIMG_CHROMIUM`, else the first of the usual names on PATH.
pub(crate) fn chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("CFIMG_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH")?;
    for dir in std::env::split_paths(&path) {
        for name in [
            "chromium",
            "chromium-browser",
            "google-chrome",
            "google-chrome-stable",
        ] {
            let p = dir.join(name);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// A DevTools connection to one page.
pub(crate) struct Cdp {
    pub(crate) ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
    pub(crate) next: u64,
}

impl Cdp {
    /// Sends one command and waits for its answer (events in between are dropped).
    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next += 1;
        let id = self.next;
        let msg = json!({ "id": id, "method": method, "params": params }).to_string();
        self.ws
            .send(Message::text(msg))
            .await
            .expect("DevTools send");
        loop {
            let frame = tokio::time::timeout(Duration::from_secs(20), self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no DevTools answer to {method}"))
                .expect("DevTools connection open")
                .expect("DevTools frame");
            let Message::Text(text) = frame else { continue };
            let v: Value = serde_json::from_str(&text).expect("DevTools JSON");
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates `expr` in the page and returns its value.
    pub(crate) async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({ "expression": expr, "returnByValue": true, "awaitPromise": true }),
            )
            .await;
        r["result"]["value"].clone()
    }
}

/// Waits for `file` to exist and hold two lines (Chromium's `DevToolsActivePort`).
pub(crate) async fn devtools_port(file: &Path, log: &Path) -> u16 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            && text.lines().count() >= 2
        {
            return port;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Chromium did not open its DevTools port: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn the_demo_page_uploads_a_file_from_a_real_browser() {
    let Some(browser) = chromium() else {
        if std::env::var("CFIMG_SKIP_BROWSER").as_deref() == Ok("1") {
            eprintln!("skipped: no Chromium and CFIMG_SKIP_BROWSER=1");
            return;
        }
        panic!(
            "Chromium is not installed: `apt-get install -y --no-install-recommends chromium` \
             (as .ci/run does), point CFIMG_CHROMIUM at a Chrome binary, or set \
             CFIMG_SKIP_BROWSER=1 to skip this test explicitly"
        );
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ledger = dir.path().join("demo.sqlite");
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_cfimg"))
        .args([
            "--ledger",
            ledger.to_str().expect("utf-8"),
            "serve",
            "--emulator",
            "--demo",
            "--listen",
            "127.0.0.1:0",
        ])
        .env_remove("CFIMG_CONFIG")
        .env_remove("CLOUDFLARE_API_TOKEN")
        .env_remove("CLOUDFLARE_ACCOUNT_ID")
        .env("RUST_LOG", "cfimg=debug")
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(dir.path().join("serve.log")).expect("log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .expect("cfimg serve starts");
    let mut lines = BufReader::new(serve.stdout.take().expect("stdout")).lines();
    let (mut emulator, mut page) = (String::new(), String::new());
    while page.is_empty() {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("cfimg serve prints its addresses")
            .expect("stdout")
            .expect("cfimg serve is running");
        if let Some(e) = line.strip_prefix("emulator at ") {
            emulator = e.to_string();
        }
        if let Some(p) = line.strip_prefix("demo page at ") {
            page = p.to_string();
        }
    }
    let bytes = png(42, 500);
    let file = dir.path().join("holiday.png");
    std::fs::write(&file, &bytes).expect("file");

    let profile = dir.path().join("chromium-profile");
    let chromium_log = dir.path().join("chromium.log");
    let mut chrome = tokio::process::Command::new(&browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--remote-debugging-port=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("about:blank")
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(&chromium_log).expect("log"),
        ))
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{} does not start: {e}", browser.display()));
    let port = devtools_port(&profile.join("DevToolsActivePort"), &chromium_log).await;
    let targets: Vec<Value> = reqwest::get(format!("http://127.0.0.1:{port}/json/list"))
        .await
        .expect("DevTools HTTP")
        .json()
        .await
        .expect("targets");
    let ws_url = targets
        .iter()
        .find(|t| t["type"] == "page")
        .and_then(|t| t["webSocketDebuggerUrl"].as_str())
        .expect("a page target")
        .to_string();
    let (ws, _) = tokio_tungstenite::connect_async(ws_url)
        .await
        .expect("DevTools socket");
    let mut cdp = Cdp { ws, next: 0 };

    cdp.call("Page.navigate", json!({ "url": page })).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while cdp
        .eval("document.readyState === 'complete' && !!document.getElementById('file')")
        .await
        != json!(true)
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo page did not load"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let root = cdp.call("DOM.getDocument", json!({})).await;
    let input = cdp
        .call(
            "DOM.querySelector",
            json!({ "nodeId": root["root"]["nodeId"], "selector": "#file" }),
        )
        .await;
    cdp.call(
        "DOM.setFileInputFiles",
        json!({ "nodeId": input["nodeId"], "files": [file.to_str().expect("utf-8")] }),
    )
    .await;
    cdp.eval("document.getElementById('go').click(); true")
        .await;
    let probe = "JSON.stringify({ state: document.body.dataset.state, text: document.getElementById('status').textContent, width: document.getElementById('result').naturalWidth })";
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let v: Value = serde_json::from_str(cdp.eval(probe).await.as_str().unwrap_or("{}"))
            .unwrap_or_default();
        if v["state"] == "done" || v["state"] == "error" {
            break v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the upload did not finish: {v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(seen["state"], "done", "the page says: {seen}");
    assert!(
        seen["width"].as_u64().is_some_and(|w| w > 0),
        "the delivered image is shown: {seen}"
    );
    let _ = chrome.kill().await;

    let state: Value = reqwest::get(format!("{emulator}/__emulator/state"))
        .await
        .expect("emulator state")
        .json()
        .await
        .expect("JSON");
    let stored = state["images"]
        .as_array()
        .expect("images")
        .iter()
        .find(|i| i["sha256"] == sha256_bytes(&bytes))
        .unwrap_or_else(|| panic!("the emulator holds the file's bytes: {state}"));
    assert_eq!(stored["filename"], "holiday.png");
    let id = stored["id"].as_str().expect("id");
    let row = draft_row(&ledger, id).expect("the draft is in the ledger");
    assert_eq!(row.state, "completed");
    assert!(row.url.is_some_and(|u| u.contains(id)));
    let _ = serve.kill().await;
}
