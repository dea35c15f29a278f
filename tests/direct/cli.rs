//! `cfimg direct-upload create|status` from the command line.

use serde_json::Value;

use super::{age_draft, mints_seen, upload};
use crate::common::{TestEnv, png, text};

#[tokio::test]
async fn create_prints_a_url_and_status_tells_completed_expired_and_pending_apart() {
    let env = TestEnv::new().await;
    let mut ids = Vec::new();
    let mut urls = Vec::new();
    for extra in [
        &["--creator", "cli-user", "--metadata", r#"{"k":"v"}"#][..],
        &["--id", "cli/later.png", "--expires-in", "1h"],
        &[
            "--expiry",
            &(chrono::Utc::now() + chrono::Duration::minutes(10)).to_rfc3339(),
        ],
    ] {
        let mut args = vec!["direct-upload", "create", "--json"];
        args.extend_from_slice(extra);
        let out = env.run(&args).await;
        assert_eq!(out.status.code(), Some(0), "{}", text(&out));
        let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
        ids.push(v["id"].as_str().unwrap().to_string());
        urls.push(v["uploadURL"].as_str().unwrap().to_string());
        assert!(v["expiry"].is_string());
    }
    assert_eq!(ids[1], "cli/later.png");
    let human = env.run(&["direct-upload", "create"]).await;
    let human_text = String::from_utf8_lossy(&human.stdout);
    assert!(human_text.contains("upload URL: http"), "{}", text(&human));

    assert_eq!(upload(&urls[0], png(1, 200), "one.png").await.0, 200);
    age_draft(&env, &ids[2]);
    let out = env.run(&["direct-upload", "status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let drafts: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let state = |id: &str| {
        drafts
            .iter()
            .find(|d| d["id"] == id)
            .map(|d| d["state"].as_str().unwrap().to_string())
    };
    assert_eq!(state(&ids[0]).as_deref(), Some("completed"));
    assert_eq!(state(&ids[1]).as_deref(), Some("pending"));
    assert_eq!(state(&ids[2]).as_deref(), Some("expired"));
    let table = env.run(&["direct-upload", "status"]).await;
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains("1 completed, 2 pending, 1 expired unused, 0 failed"),
        "{table}"
    );
    let one = env
        .run(&["direct-upload", "status", &ids[0], "--json"])
        .await;
    let one: Vec<Value> = serde_json::from_slice(&one.stdout).unwrap();
    assert!(one[0]["url"].as_str().is_some_and(|u| u.contains(&ids[0])));
    let missing = env.run(&["direct-upload", "status", "nope"]).await;
    assert_eq!(missing.status.code(), Some(2), "{}", text(&missing));
}

#[tokio::test]
async fn create_refuses_what_cloudflare_would_before_any_request() {
    let env = TestEnv::new().await;
    let past = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339();
    for (args, says) in [
        (vec!["--expires-in", "90s"], "--expires-in"),
        (vec!["--expires-in", "7h"], "--expires-in"),
        (vec!["--expires-in", "soon"], "--expires-in"),
        (vec!["--expiry", past.as_str()], "--expiry"),
        (
            vec!["--id", "x.png", "--require-signed-urls"],
            "--require-signed-urls",
        ),
        (vec!["--id", "/lead.png"], "--id"),
        (vec!["--metadata", "[1]"], "metadata"),
    ] {
        let mut all = vec!["direct-upload", "create"];
        all.extend_from_slice(&args);
        let out = env.run(&all).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(says),
            "{args:?}: {}",
            text(&out)
        );
    }
    assert_eq!(mints_seen(&env), 0);
    assert_eq!(env.total_requests(), 0);
}
