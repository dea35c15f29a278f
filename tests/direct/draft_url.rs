//! A completed draft records the same delivery URL `migrate` records for an image: the
//! `public` variant, whichever variant the account lists first.

use serde_json::Value;

use super::upload;
use crate::common::{TestEnv, png, text};

#[tokio::test]
async fn a_completed_draft_is_shown_with_the_public_variant_like_migrate() {
    let env = TestEnv::new().await;
    // `priv` sorts before `public`, so the account lists it first.
    let out = env
        .run(&[
            "variants", "create", "priv", "--width", "50", "--height", "50",
        ])
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out = env.run(&["direct-upload", "create", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let id = v["id"].as_str().expect("id").to_string();
    let url = v["uploadURL"].as_str().expect("uploadURL").to_string();
    assert_eq!(upload(&url, png(1, 64), "one.png").await.0, 200);

    let out = env.run(&["direct-upload", "status", &id, "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let drafts: Vec<Value> = serde_json::from_slice(&out.stdout).expect("JSON");
    let recorded = drafts[0]["url"].as_str().unwrap_or_default();
    assert!(
        recorded.ends_with(&format!("{id}/public")),
        "the draft's URL is the public variant: {recorded}"
    );
}
