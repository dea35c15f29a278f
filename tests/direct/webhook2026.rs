//! Webhooks as Cloudflare documents them by 2026 (issue 21): the emulator sends the
//! notification envelope and the bare test POST; the receiver reads `data` leniently,
//! confirms every outcome with a lookup, and keeps what it could not attribute (bounded).

use std::time::Duration;

use axum::body::Bytes;
use cfimg::emulator::WebhookDestination;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::{WEBHOOK_SECRET, serve, upload};
use crate::common::{TestEnv, png};

/// A receiver on 127.0.0.1:0 that hands every POSTed body to the test.
async fn capture() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: Bytes| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(serde_json::from_slice(&body).unwrap_or(Value::Null));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, rx)
}

#[tokio::test]
async fn the_emulator_sends_cloudflares_envelope_and_the_bare_test_post() {
    let env = TestEnv::new().await;
    let (url, mut rx) = capture().await;
    env.emu
        .set_webhook(Some(WebhookDestination { url, secret: None }));
    assert_eq!(env.emu.send_test_webhook().await, Ok(200));
    let test = rx.recv().await.expect("the test POST");
    let keys: Vec<&String> = test
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(keys, ["text"], "{test}");
    assert!(
        test["text"]
            .as_str()
            .unwrap_or_default()
            .starts_with("Hello World!")
    );

    let srv_free = reqwest::Client::new();
    let resp = srv_free
        .post(format!(
            "{}/accounts/{}/images/v2/direct_upload",
            env.emu.api_base(),
            env.emu.account_id()
        ))
        .bearer_auth(env.emu.token())
        .multipart(reqwest::multipart::Form::new().text("metadata", "{}"))
        .send()
        .await
        .unwrap();
    let created: Value = resp.json().await.unwrap();
    let upload_url = created["result"]["uploadURL"].as_str().unwrap().to_owned();
    assert_eq!(upload(&upload_url, png(1, 200), "a.png").await.0, 200);
    let note = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a notification within 10 s")
        .expect("a notification");
    for field in [
        "name",
        "text",
        "data",
        "ts",
        "account_id",
        "policy_id",
        "policy_name",
        "alert_type",
        "alert_correlation_id",
        "alert_event",
    ] {
        assert!(note.get(field).is_some(), "{field} missing: {note}");
    }
    assert_eq!(note["alert_type"], "image_notification");
    assert_eq!(note["data"]["image_id"], created["result"]["id"]);
}

#[tokio::test]
async fn a_failed_notice_is_confirmed_with_a_lookup_before_it_is_recorded() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", false).await;
    let (id, url) = srv.mint_ok(json!({})).await;
    assert_eq!(upload(&url, png(2, 200), "b.png").await.0, 200);
    // The notice says failed; the service has the image: the lookup wins.
    let note = json!({ "text": "x", "data": { "image_id": id, "status": "failed" } });
    let (status, body) = srv.notify(Some(WEBHOOK_SECRET), &note).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(env.api_requests("GET", "v1/{image_id}"), 1, "looked up");
    assert_eq!(srv.status(&id).await.1["state"], "completed");
    srv.stop().await;
}

#[tokio::test]
async fn data_as_json_text_is_read_and_unattributed_notices_are_kept_bounded() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", false).await;
    let (id, url) = srv.mint_ok(json!({})).await;
    assert_eq!(upload(&url, png(3, 200), "c.png").await.0, 200);
    // `data` as JSON text inside a string.
    let note = json!({
        "text": "an image notification",
        "data": json!({ "image_id": id, "status": "uploaded" }).to_string(),
    });
    let (status, body) = srv.notify(Some(WEBHOOK_SECRET), &note).await;
    assert_eq!(
        (status, body["drafts"][0]["id"].as_str()),
        (200, Some(id.as_str())),
        "{body}"
    );
    assert_eq!(srv.status(&id).await.1["state"], "completed");

    // Notices that name nothing known: kept raw, at most 32, each cut to 8 KiB.
    for i in 0..40 {
        let note = json!({ "data": { "a": format!("mystery {i}"), "x": "y".repeat(10_000) } });
        let (status, _) = srv.notify(Some(WEBHOOK_SECRET), &note).await;
        assert_eq!(status, 200);
    }
    // The dashboard's test POST is not kept.
    srv.notify(
        Some(WEBHOOK_SECRET),
        &json!({"text": "Hello World! This is a test message"}),
    )
    .await;
    let resp = srv
        .http
        .get(format!("{}/v1/webhook/unmatched", srv.origin))
        .header("cf-webhook-auth", WEBHOOK_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let kept: Value = resp.json().await.unwrap();
    let notices = kept["notices"].as_array().cloned().unwrap_or_default();
    assert_eq!(notices.len(), 32, "bounded");
    assert!(
        notices[31]["body"]
            .as_str()
            .unwrap()
            .contains("\"mystery 39\"")
    );
    assert!(
        notices[0]["body"]
            .as_str()
            .unwrap()
            .contains("\"mystery 8\"")
    );
    assert_eq!(notices[0]["truncated"], true);
    assert!(notices[0]["body"].as_str().unwrap().len() <= 8 * 1024 + 64);
    let refused = srv
        .http
        .get(format!("{}/v1/webhook/unmatched", srv.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401, "the secret is the credential");
    srv.stop().await;
}
