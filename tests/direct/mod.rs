//! Direct creator uploads (issue 10): `cfimg direct-upload`, `cfimg serve` and its webhook,
//! reconciler and CORS, against the in-process emulator; and the demo page in a real
//! browser. Helpers live here: a `cfimg serve` child process on 127.0.0.1:0 and the draft
//! rows of its ledger.

pub(crate) mod browser;
mod cli;
mod draft_url;
mod errors;
mod flow;
mod hardening;
mod limits;
mod read_only_ledger;
mod unbound_ledger;
mod webhook2026;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use cfimg::emulator::WebhookDestination;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::TestEnv;

/// The web app's key.
pub const APP_KEY: &str = "web-app-key-5c1e9a7b3d2f";
/// Another app's key.
pub const OTHER_KEY: &str = "ios-app-key-8f2d6b4a1c0e";
/// The webhook secret shared by the emulator and the service.
pub const WEBHOOK_SECRET: &str = "whsec-test-4e8a2c6f0b1d";
/// The browser origin allowed by CORS.
pub const ALLOWED_ORIGIN: &str = "http://app.example.test";

/// A running `cfimg serve`.
pub struct Serve {
    /// `http://127.0.0.1:PORT`.
    pub origin: String,
    /// Its stderr (the log).
    pub log: PathBuf,
    /// A client.
    pub http: reqwest::Client,
    child: tokio::process::Child,
}

/// Starts `cfimg serve` on the env's emulator with these extra `[serve]` lines (defaults:
/// the two app keys, the webhook secret, the allowed origin, a reconciler that never runs
/// during a test), and points the emulator's webhook at it when `webhook`.
pub async fn serve(env: &TestEnv, serve_toml: &str, webhook: bool) -> Serve {
    serve_with(env, serve_toml, webhook, "cfimg=debug").await
}

/// [`serve`] with this `RUST_LOG`.
pub async fn serve_with(env: &TestEnv, serve_toml: &str, webhook: bool, log_level: &str) -> Serve {
    let mut section = String::from("\n[serve]\n");
    for (key, default) in [
        (
            "app_keys",
            format!("{{ web = \"{APP_KEY}\", ios = \"{OTHER_KEY}\" }}"),
        ),
        ("webhook_secret", format!("\"{WEBHOOK_SECRET}\"")),
        ("cors_origins", format!("[\"{ALLOWED_ORIGIN}\"]")),
        ("reconcile_secs", "3600".into()),
    ] {
        if !serve_toml.contains(key) {
            section.push_str(&format!("{key} = {default}\n"));
        }
    }
    section.push_str(serve_toml);
    let mut config = std::fs::read_to_string(&env.config).expect("config");
    if !config.contains("[serve]") {
        config.push_str(&section);
        std::fs::write(&env.config, config).expect("config");
    }
    let log = env
        .dir
        .path()
        .join(format!("serve-{}.log", fastrand::u32(..)));
    let mut cmd = env.cmd(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.env("RUST_LOG", log_level)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")));
    let mut child = cmd.spawn().expect("cfimg serve starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .unwrap_or_else(|_| panic!("cfimg serve did not start: {}", read(&log)))
        .expect("stdout")
        .unwrap_or_else(|| panic!("cfimg serve exited: {}", read(&log)));
    let origin = first
        .strip_prefix("serving on ")
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    if webhook {
        env.emu.set_webhook(Some(WebhookDestination {
            url: format!("{origin}/v1/webhook"),
            secret: Some(WEBHOOK_SECRET.into()),
        }));
    }
    Serve {
        origin,
        log,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .expect("client"),
        child,
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

impl Serve {
    /// `POST /v1/direct-uploads` with `key` and a JSON body: (status, body, headers).
    pub async fn mint(&self, key: &str, body: Value) -> (u16, Value, reqwest::header::HeaderMap) {
        let resp = self
            .http
            .post(format!("{}/v1/direct-uploads", self.origin))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("mint answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        (status, resp.json().await.unwrap_or(Value::Null), headers)
    }

    /// Mints with the web app's key and asserts success: (id, upload URL).
    pub async fn mint_ok(&self, body: Value) -> (String, String) {
        let (status, b, _) = self.mint(APP_KEY, body).await;
        assert_eq!(status, 200, "{b}");
        (
            b["id"].as_str().expect("id").to_string(),
            b["uploadURL"].as_str().expect("uploadURL").to_string(),
        )
    }

    /// `GET /v1/direct-uploads/{id}` with the web app's key: (status, body).
    pub async fn status(&self, id: &str) -> (u16, Value) {
        let resp = self
            .http
            .get(format!("{}/v1/direct-uploads/{id}", self.origin))
            .bearer_auth(APP_KEY)
            .send()
            .await
            .expect("status answers");
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// Polls the draft until its state is `state`, or panics after `limit`.
    pub async fn wait_state(&self, id: &str, state: &str, limit: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let (_, body) = self.status(id).await;
            if body["state"] == state {
                return body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "draft {id} not {state} within {limit:?}: {body}\nlog:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// POSTs a notification to the webhook with `secret`: (status, body).
    pub async fn notify(&self, secret: Option<&str>, body: &Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/webhook", self.origin))
            .json(body);
        if let Some(s) = secret {
            req = req.header("cf-webhook-auth", s);
        }
        let resp = req.send().await.expect("webhook answers");
        (
            resp.status().as_u16(),
            resp.json().await.unwrap_or(Value::Null),
        )
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// Stops the process (its log stays readable).
    pub async fn stop(mut self) -> String {
        let _ = self.child.kill().await;
        self.log_text()
    }
}

/// POSTs `bytes` to a one-time upload URL as a browser would: (status, body).
pub async fn upload(url: &str, bytes: Vec<u8>, name: &str) -> (u16, Value) {
    let part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
    let resp = reqwest::Client::new()
        .post(url)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .expect("upload URL answers");
    (
        resp.status().as_u16(),
        resp.json().await.unwrap_or(Value::Null),
    )
}

/// A draft's row in a ledger: state, url, notices, completed_at.
#[derive(Debug, Clone, PartialEq)]
pub struct DraftRow {
    pub state: String,
    pub url: Option<String>,
    pub notices: i64,
    pub completed_at: Option<String>,
}

/// The draft `id` of the ledger at `path`.
pub fn draft_row(path: &Path, id: &str) -> Option<DraftRow> {
    let c = rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("ledger opens");
    c.query_row(
        "SELECT state, url, notices, completed_at FROM drafts WHERE image_id = ?1",
        [id],
        |r| {
            Ok(DraftRow {
                state: r.get(0)?,
                url: r.get(1)?,
                notices: r.get(2)?,
                completed_at: r.get(3)?,
            })
        },
    )
    .ok()
}

/// Makes a draft's URL expired, as if its time had passed: in the emulator and in the
/// ledger's record of it.
pub fn age_draft(env: &TestEnv, id: &str) {
    let past = chrono::Utc::now() - chrono::Duration::minutes(1);
    assert!(env.emu.set_draft_expiry(id, past), "{id} is a draft");
    let c = rusqlite::Connection::open(&env.ledger).expect("ledger opens");
    c.busy_timeout(Duration::from_secs(10))
        .expect("busy timeout");
    let n = c
        .execute(
            "UPDATE drafts SET expires_at = ?2 WHERE image_id = ?1",
            rusqlite::params![id, cfimg::ledger::timestamp(past)],
        )
        .expect("update");
    assert_eq!(n, 1, "{id} is in the ledger");
}

/// Direct-upload API requests the emulator received (any status).
pub fn mints_seen(env: &TestEnv) -> u64 {
    env.api_requests("POST", "v2/direct_upload")
}
