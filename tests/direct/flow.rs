//! The paths that work: mint, upload, webhook or reconciler, status; repeats and test POSTs.

use std::time::Duration;

use serde_json::json;

use super::{WEBHOOK_SECRET, draft_row, mints_seen, serve, upload};
use crate::common::{TestEnv, png, sha256_bytes};

#[tokio::test]
async fn a_minted_url_takes_the_upload_and_the_webhook_completes_the_draft() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", true).await;
    let (id, url) = srv
        .mint_ok(
            json!({ "creator": "user-7", "metadata": { "album": "cats" }, "expiresIn": "10m" }),
        )
        .await;
    let pending = srv.wait_state(&id, "pending", Duration::from_secs(5)).await;
    assert_eq!(pending["app"], "web");
    assert_eq!(mints_seen(&env), 1);

    let bytes = png(1, 300);
    let (status, body) = upload(&url, bytes.clone(), "cat.png").await;
    assert_eq!(status, 200, "{body}");
    let done = srv
        .wait_state(&id, "completed", Duration::from_secs(10))
        .await;
    let delivery = done["url"].as_str().expect("a delivery URL");
    assert_eq!(done["filename"], "cat.png");
    // The delivered image is the uploaded file.
    let delivered = reqwest::get(delivery).await.unwrap().bytes().await.unwrap();
    assert_eq!(delivered.as_ref(), bytes.as_slice());
    let stored = env
        .inspect()
        .images
        .into_iter()
        .find(|i| i.id == id)
        .expect("stored");
    assert_eq!(stored.sha256, sha256_bytes(&bytes));
    assert_eq!(stored.creator.as_deref(), Some("user-7"));
    assert_eq!(stored.meta["album"], "cats");
    let row = draft_row(&env.ledger, &id).expect("in the ledger");
    assert_eq!((row.state.as_str(), row.notices), ("completed", 1));
    srv.stop().await;
}

#[tokio::test]
async fn a_repeated_webhook_changes_nothing_and_the_test_post_is_accepted() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "", true).await;
    let (id, url) = srv.mint_ok(json!({})).await;
    assert_eq!(upload(&url, png(2, 200), "a.png").await.0, 200);
    srv.wait_state(&id, "completed", Duration::from_secs(10))
        .await;
    let first = draft_row(&env.ledger, &id).unwrap();

    // Cloudflare may deliver a notification more than once.
    let again = json!({
        "name": "Cloudflare Images", "text": "again", "ts": 1, "account_id": env.emu.account_id(),
        "alert_type": "image_notification", "data": { "image_id": id, "status": "uploaded" }
    });
    for _ in 0..2 {
        let (status, body) = srv.notify(Some(WEBHOOK_SECRET), &again).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["drafts"][0]["changed"], false, "{body}");
    }
    let after = draft_row(&env.ledger, &id).unwrap();
    assert_eq!(after.state, "completed");
    assert_eq!(
        after.completed_at, first.completed_at,
        "completion time kept"
    );
    assert_eq!(after.url, first.url);
    assert_eq!(after.notices, 3);

    // The dashboard's test POST, sent by the emulator on demand.
    assert_eq!(env.emu.send_test_webhook().await, Ok(200));
    let resp = reqwest::Client::new()
        .post(format!("{}/__emulator/webhook/test", env.emu.batch_base()))
        .send()
        .await
        .unwrap();
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["receiver_status"], 200);
    srv.stop().await;
}

#[tokio::test]
async fn an_unclear_notification_is_confirmed_with_a_lookup() {
    let env = TestEnv::new().await;
    // No webhook from the emulator: the test sends its own, oddly shaped one.
    let srv = serve(&env, "", false).await;
    let (id, url) = srv.mint_ok(json!({})).await;
    let note = json!({ "text": "something happened", "data": { "images": [{ "ref": id }] } });
    let (status, body) = srv.notify(Some(WEBHOOK_SECRET), &note).await;
    assert_eq!(status, 200, "{body}");
    let lookups = env.api_requests("GET", "v1/{image_id}");
    assert_eq!(lookups, 1, "the draft was looked up");
    assert_eq!(
        srv.status(&id).await.1["state"],
        "pending",
        "still a draft at Cloudflare"
    );
    assert_eq!(upload(&url, png(3, 200), "b.png").await.0, 200);
    srv.notify(Some(WEBHOOK_SECRET), &note).await;
    let done = srv
        .wait_state(&id, "completed", Duration::from_secs(5))
        .await;
    assert!(done["url"].is_string(), "{done}");
    srv.stop().await;
}

#[tokio::test]
async fn without_webhooks_the_reconciler_completes_and_expires_drafts() {
    let env = TestEnv::new().await;
    let srv = serve(&env, "reconcile_secs = 0.1\n", false).await;
    let (done_id, url) = srv.mint_ok(json!({})).await;
    let (unused_id, _) = srv.mint_ok(json!({ "id": "avatars/never.png" })).await;
    assert_eq!(upload(&url, png(4, 200), "c.png").await.0, 200);
    let done = srv
        .wait_state(&done_id, "completed", Duration::from_secs(10))
        .await;
    assert!(done["url"].is_string(), "{done}");
    assert_eq!(done["notices"], 0, "no webhook was involved");
    assert_eq!(srv.status(&unused_id).await.1["state"], "pending");
    super::age_draft(&env, &unused_id);
    srv.wait_state(&unused_id, "expired", Duration::from_secs(10))
        .await;
    srv.stop().await;
}
