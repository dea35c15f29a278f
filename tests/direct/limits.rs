//! The service's fences: CORS for configured origins only, request size, per-key rates,
//! the account's budget (429 with Retry-After rather than a penalty), and secrets that
//! never reach the log or the ledger.

use serde_json::json;

use super::{
    ALLOWED_ORIGIN, APP_KEY, OTHER_KEY, WEBHOOK_SECRET, mints_seen, serve, serve_with, upload,
};
use crate::common::{TOKEN, TestEnv, png};

async fn preflight(origin: &str, srv: &super::Serve) -> reqwest::Response {
    srv.http
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v1/direct-uploads", srv.origin),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_preflights_pass_for_configured_origins_only() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", false).await;
    let ok = preflight(ALLOWED_ORIGIN, &srv).await;
    assert!(ok.status().is_success(), "{}", ok.status());
    let h = ok.headers();
    assert_eq!(h["access-control-allow-origin"], ALLOWED_ORIGIN);
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        allowed.contains("authorization") && allowed.contains("content-type"),
        "{allowed}"
    );
    assert!(
        h["access-control-allow-methods"]
            .to_str()
            .unwrap()
            .contains("POST")
    );

    let refused = preflight("http://evil.example.test", &srv).await;
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "a browser on another origin must not be let in: {:?}",
        refused.headers()
    );
    // The actual call from the allowed origin carries the header too.
    let resp = srv
        .http
        .post(format!("{}/v1/direct-uploads", srv.origin))
        .header("Origin", ALLOWED_ORIGIN)
        .bearer_auth(APP_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["access-control-allow-origin"],
        ALLOWED_ORIGIN
    );

    // The emulator's upload URL answers a browser's preflight from anywhere.
    let body: serde_json::Value = resp.json().await.unwrap();
    let url = body["uploadURL"].as_str().unwrap();
    let pre = srv
        .http
        .request(reqwest::Method::OPTIONS, url)
        .header("Origin", ALLOWED_ORIGIN)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap();
    assert!(pre.status().is_success());
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    // The OpenAPI description is served.
    let doc: serde_json::Value = reqwest::get(format!("{}/openapi.json", srv.origin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/direct-uploads"]["post"].is_object());
    srv.stop().await;
}

#[tokio::test]
async fn near_the_accounts_budget_mints_are_answered_429_with_retry_after() {
    // One request per 5 s for the whole account, and mints wait at most 1 s for it.
    let env = TestEnv::with(
        cfimg::emulator::EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            ..cfimg::emulator::EmulatorConfig::default()
        },
        // Burst 2: one token for the start-up check, one for the first mint.
        "rate = 0.2\nburst = 2",
    )
    .await;
    let srv = serve(&env, "max_wait_secs = 1\n", false).await;
    srv.mint_ok(json!({})).await;
    let (status, body, headers) = srv.mint(APP_KEY, json!({})).await;
    assert_eq!(status, 429, "{body}");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((2..=6).contains(&retry), "Retry-After {retry}");
    assert_eq!(body["error"]["field"], "request");
    assert_eq!(
        mints_seen(&env),
        1,
        "the refused mint never reached Cloudflare"
    );
    srv.stop().await;
}

#[tokio::test]
async fn each_app_key_has_its_own_rate_and_bodies_are_bounded() {
    let env = TestEnv::new().await;
    let srv = serve(
        &env,
        "key_rate = 0.01\nkey_burst = 2\nmax_body_bytes = 2048\n",
        false,
    )
    .await;
    srv.mint_ok(json!({})).await;
    srv.mint_ok(json!({})).await;
    let (status, body, headers) = srv.mint(APP_KEY, json!({})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (429, Some("authorization")),
        "{body}"
    );
    assert!(headers.contains_key("retry-after"));
    // Another app is not held back by the first one's use.
    let (status, body, _) = srv.mint(OTHER_KEY, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let big = json!({ "creator": "x".repeat(4000) });
    let (status, body, _) = srv.mint(OTHER_KEY, big).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (413, Some("body")),
        "{body}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn app_keys_webhook_secrets_and_the_token_never_reach_logs_or_the_ledger() {
    let env = TestEnv::new().await;
    let srv = serve_with(&env, "", true, "trace").await;
    let (id, url) = srv.mint_ok(json!({})).await;
    assert_eq!(upload(&url, png(9, 200), "s.png").await.0, 200);
    srv.wait_state(&id, "completed", std::time::Duration::from_secs(10))
        .await;
    srv.mint("wrong-key-wrong-key", json!({})).await;
    srv.notify(Some("whsec-wrong-wrong"), &json!({})).await;
    let log = srv.stop().await;
    assert!(log.contains("draft minted"), "trace log written: {log}");
    let ledger = std::fs::read(&env.ledger).unwrap();
    let ledger = String::from_utf8_lossy(&ledger);
    for secret in [
        APP_KEY,
        OTHER_KEY,
        WEBHOOK_SECRET,
        TOKEN,
        "wrong-key-wrong-key",
        "whsec-wrong-wrong",
    ] {
        assert!(!log.contains(secret), "{secret} in the log");
        assert!(!ledger.contains(secret), "{secret} in the ledger");
    }
}
