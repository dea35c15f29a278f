//! Direct creator uploads: drafts, the one-time URL and expiry bounds.

use reqwest::multipart::Form;

use super::{Emu, code, file_part, png, status_json};

async fn create(emu: &Emu, form: Form) -> (u16, serde_json::Value) {
    let resp = emu
        .req(reqwest::Method::POST, "/v2/direct_upload")
        .multipart(form)
        .send()
        .await
        .unwrap();
    status_json(resp).await
}

#[tokio::test]
async fn one_time_url_turns_the_draft_into_an_image() {
    let emu = Emu::start().await;
    let (status, body) = create(
        &emu,
        Form::new()
            .text("id", "du/x.png")
            .text("metadata", r#"{"a":"b"}"#),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let upload_url = body["result"]["uploadURL"].as_str().unwrap().to_owned();
    assert_eq!(body["result"]["id"], "du/x.png");
    let (_, img) = status_json(emu.get("/v1/du/x.png").send().await.unwrap()).await;
    assert_eq!(img["result"]["draft"], true);
    let (_, list) = status_json(emu.get("/v2").send().await.unwrap()).await;
    assert!(
        list["result"]["images"].as_array().unwrap().is_empty(),
        "drafts are not listed"
    );

    let post = || {
        emu.http
            .post(&upload_url)
            .multipart(Form::new().part("file", file_part(png(5), "up.png")))
            .send()
    };
    let (status, body) = status_json(post().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let (_, img) = status_json(emu.get("/v1/du/x.png").send().await.unwrap()).await;
    assert!(img["result"].get("draft").is_none());
    assert_eq!(img["result"]["meta"]["a"], "b");
    let blob = emu.blob("du/x.png").await;
    assert_eq!(blob.as_ref(), png(5).as_slice());
    let (status, body) = status_json(post().await.unwrap()).await;
    assert_eq!(
        (status, code(&body)),
        (409, 5409),
        "second POST fails: {body}"
    );
}

#[tokio::test]
async fn expiry_must_be_within_2_minutes_and_6_hours() {
    let emu = Emu::start().await;
    let now = chrono::Utc::now();
    for (minutes, ok) in [(1, false), (3, true), (359, true), (361, false)] {
        let expiry = (now + chrono::Duration::minutes(minutes)).to_rfc3339();
        let (status, body) = create(&emu, Form::new().text("expiry", expiry)).await;
        assert_eq!(status == 200, ok, "{minutes} min: {body}");
        if !ok {
            assert_eq!(code(&body), 5400);
        }
    }
    let (status, body) = create(&emu, Form::new().text("expiry", "tomorrow")).await;
    assert_eq!((status, code(&body)), (400, 5400));
    let (status, body) = create(
        &emu,
        Form::new()
            .text("id", "x.png")
            .text("requireSignedURLs", "true"),
    )
    .await;
    assert_eq!((status, code(&body)), (400, 5410));
    // The batch host serves direct_upload with a batch token.
    let token = emu.handle.issue_batch_token(chrono::Duration::hours(1));
    let resp = emu
        .http
        .post(format!(
            "{}/images/v2/direct_upload",
            emu.handle.batch_base()
        ))
        .bearer_auth(token)
        .multipart(Form::new().text("creator", "c"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
