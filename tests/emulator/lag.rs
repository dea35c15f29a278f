//! Eventual consistency: lists lag behind uploads by `list_lag`; GET by id does not.
//! Time is paused, and the client has no timers of its own, so the emulator's clock moves
//! only when the test advances it (auto-advance while idle could only jump to a timer far
//! shorter than the lag).

use std::time::Duration;

use reqwest::multipart::Form;
use serde_json::Value;

use super::{Emu, file_part, png, status_json};

const LAG: Duration = Duration::from_secs(3600);

async fn lagging() -> Emu {
    let mut emu = Emu::start_with(|c| c.list_lag = LAG).await;
    emu.http = reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .unwrap();
    emu
}

/// The ids a list answer shows, in order.
async fn listed(emu: &Emu, path: &str) -> Vec<String> {
    let (status, body) = status_json(emu.get(path).send().await.unwrap()).await;
    assert_eq!(status, 200, "{path}: {body}");
    body["result"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn upload(emu: &Emu, n: u32, id: &str) {
    let form = Form::new()
        .part("file", file_part(png(n), "a.png"))
        .text("id", id.to_owned())
        .text("metadata", r#"{"k":"v"}"#);
    let (status, body) = emu.upload(form).await;
    assert_eq!(status, 200, "{body}");
}

const LISTS: [&str; 3] = [
    "/v1",
    "/v2?sort_order=asc",
    "/v2?sort_order=asc&meta.k[eq]=v",
];

#[tokio::test(start_paused = true)]
async fn lists_lag_behind_uploads_while_get_finds_them_at_once() {
    let emu = lagging().await;
    upload(&emu, 1, "a.png").await;
    for path in LISTS {
        assert!(listed(&emu, path).await.is_empty(), "{path}");
    }
    let (status, body) = status_json(emu.get("/v1/a.png").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(emu.blob("a.png").await.as_ref(), png(1).as_slice());

    tokio::time::advance(LAG / 2).await;
    upload(&emu, 2, "b.png").await;
    tokio::time::advance(LAG / 2).await;
    // a.png is an hour old now; b.png only half an hour.
    for path in LISTS {
        assert_eq!(listed(&emu, path).await, ["a.png"], "{path}");
    }
    tokio::time::advance(LAG / 2).await;
    for path in LISTS {
        assert_eq!(listed(&emu, path).await, ["a.png", "b.png"], "{path}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_direct_upload_lags_from_when_its_file_arrives() {
    let emu = lagging().await;
    let resp = emu
        .req(reqwest::Method::POST, "/v2/direct_upload")
        .multipart(Form::new().text("id", "du.png"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    let url = body["result"]["uploadURL"].as_str().unwrap().to_owned();
    // The draft's age does not count: only the file's arrival does.
    tokio::time::advance(LAG).await;
    let resp = emu
        .http
        .post(&url)
        .multipart(Form::new().part("file", file_part(png(3), "a.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(listed(&emu, "/v2").await.is_empty());
    let (_, img) = status_json(emu.get("/v1/du.png").send().await.unwrap()).await;
    assert_eq!(img["result"]["id"], "du.png");
    assert_eq!(img["result"].get("draft"), None::<&Value>);
    tokio::time::advance(LAG).await;
    assert_eq!(listed(&emu, "/v2").await, ["du.png"]);
}
