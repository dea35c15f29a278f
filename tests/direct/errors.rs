//! What goes wrong, and what the app or the user is told: 4xx naming the field, refused
//! before any request reaches Cloudflare; expired and reused URLs; failed uploads; wrong
//! keys and secrets.

use std::time::Duration;

use serde_json::json;

use super::{APP_KEY, WEBHOOK_SECRET, age_draft, draft_row, mints_seen, serve, upload};
use crate::common::{TestEnv, png};

#[tokio::test]
async fn bad_requests_get_a_4xx_naming_the_field_and_spend_nothing() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", false).await;
    let in_1_min = (chrono::Utc::now() + chrono::Duration::minutes(1)).to_rfc3339();
    let in_7_h = (chrono::Utc::now() + chrono::Duration::hours(7)).to_rfc3339();
    for (body, status, field) in [
        (json!({ "expiry": in_1_min }), 400, "expiry"),
        (json!({ "expiry": in_7_h }), 400, "expiry"),
        (json!({ "expiry": "tomorrow" }), 400, "expiry"),
        (json!({ "expiresIn": "1m" }), 400, "expiresIn"),
        (json!({ "expiresIn": 25000 }), 400, "expiresIn"),
        (
            json!({ "id": "a.png", "requireSignedURLs": true }),
            400,
            "requireSignedURLs",
        ),
        (json!({ "id": "notes.txt" }), 400, "id"),
        (
            json!({ "id": "00000000-0000-0000-0000-000000000000" }),
            400,
            "id",
        ),
        (json!({ "id": 5 }), 400, "id"),
        (json!({ "metadata": "x" }), 400, "metadata"),
        (
            json!({ "metadata": { "k": "v".repeat(1100) } }),
            400,
            "metadata",
        ),
        (json!({ "colour": "red" }), 400, "body"),
        (json!([1]), 400, "body"),
    ] {
        let (got, b, _) = srv.mint(APP_KEY, body.clone()).await;
        assert_eq!(
            (got, b["error"]["field"].as_str()),
            (status, Some(field)),
            "{body}: {b}"
        );
        assert!(
            b["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    let (got, b, _) = srv.mint("not-a-key-of-any-app", json!({})).await;
    assert_eq!(
        (got, b["error"]["field"].as_str()),
        (401, Some("authorization")),
        "{b}"
    );
    let anonymous = srv
        .http
        .post(format!("{}/v1/direct-uploads", srv.origin))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    let (got, b) = srv.status("no-such-draft").await;
    assert_eq!((got, b["error"]["field"].as_str()), (404, Some("id")));
    assert_eq!(mints_seen(&env), 0, "nothing reached Cloudflare");
    // A custom id taken at Cloudflare is a conflict on `id`.
    srv.mint_ok(json!({ "id": "taken.png" })).await;
    let (got, b, _) = srv.mint(APP_KEY, json!({ "id": "taken.png" })).await;
    assert_eq!(
        (got, b["error"]["field"].as_str()),
        (409, Some("id")),
        "{b}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn expired_and_reused_urls_fail_and_a_refused_file_fails_the_draft() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", true).await;
    let (id, url) = srv.mint_ok(json!({})).await;
    assert_eq!(upload(&url, png(5, 200), "a.png").await.0, 200);
    let (status, body) = upload(&url, png(6, 200), "b.png").await;
    assert_eq!(
        (status, body["errors"][0]["code"].as_u64()),
        (409, Some(5409)),
        "reused: {body}"
    );
    srv.wait_state(&id, "completed", Duration::from_secs(10))
        .await;

    let (late, late_url) = srv.mint_ok(json!({})).await;
    age_draft(&env, &late);
    let (status, body) = upload(&late_url, png(7, 200), "c.png").await;
    assert_eq!(status, 400, "expired: {body}");
    assert_eq!(srv.status(&late).await.1["state"], "pending", "not used");

    // Not an image: Cloudflare refuses it and notifies a failure.
    let (bad, bad_url) = srv.mint_ok(json!({})).await;
    let (status, _) = upload(&bad_url, b"plain text, not an image".to_vec(), "x.png").await;
    assert_eq!(status, 415);
    let failed = srv
        .wait_state(&bad, "failed", Duration::from_secs(10))
        .await;
    assert!(failed["last_error"].is_string(), "{failed}");
    srv.stop().await;
}

#[tokio::test]
async fn a_webhook_with_a_wrong_secret_is_refused_and_changes_nothing() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", false).await;
    let (id, _) = srv.mint_ok(json!({})).await;
    let note = json!({ "alert_type": "image_notification", "data": { "image_id": id, "status": "uploaded" } });
    for secret in [
        None,
        Some("whsec-wrong"),
        Some(&WEBHOOK_SECRET[..WEBHOOK_SECRET.len() - 1]),
    ] {
        let (status, body) = srv.notify(secret, &note).await;
        assert_eq!(
            (status, body["error"]["field"].as_str()),
            (401, Some("cf-webhook-auth")),
            "{secret:?}"
        );
    }
    let row = draft_row(&env.ledger, &id).unwrap();
    assert_eq!((row.state.as_str(), row.notices), ("pending", 0));
    let (status, _) = srv
        .notify(Some(WEBHOOK_SECRET), &json!("not an object"))
        .await;
    assert_eq!(status, 400);
    srv.stop().await;
}

#[tokio::test]
async fn serve_with_a_wrong_token_stops_at_start_with_exit_3() {
    let env = TestEnv::new().await;
    // With an app key: without one, serve stops earlier, at the configuration (exit 2).
    let mut config = std::fs::read_to_string(&env.config).expect("config");
    config.push_str(&format!(
        "\n[serve]\napp_keys = {{ web = \"{}\" }}\n",
        super::APP_KEY
    ));
    std::fs::write(&env.config, config).expect("config");
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        env.cmd(&["serve", "--listen", "127.0.0.1:0"])
            .env("CLOUDFLARE_API_TOKEN", "not-the-token")
            .output(),
    )
    .await
    .expect("cfimg serve exits")
    .expect("cfimg runs");
    assert_eq!(out.status.code(), Some(3), "{}", crate::common::text(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("CLOUDFLARE_API_TOKEN"));
}
