//! The emulator decodes uploads like the service: 9422 for truncated or corrupt images,
//! 5400 for dimensions over the limits, on every way an image arrives.

use reqwest::multipart::Form;
use serde_json::Value;

use super::{Emu, code, file_part, status_json};
use crate::common::{corrupt_png, gif, jpeg, png, truncated_png, webp, wide_png};

fn assert_refused(what: &str, (status, body): (u16, Value), want: u64) {
    assert_eq!((status, code(&body)), (400, want), "{what}: {body}");
    assert_eq!(body["success"], false, "{what}");
}

/// The bad payloads, with the code each must get.
fn bad_payloads() -> Vec<(&'static str, Vec<u8>, u64)> {
    vec![
        ("truncated", truncated_png(1), 9422),
        ("corrupt", corrupt_png(2), 9422),
        ("wide", wide_png(12_500), 5400),
    ]
}

#[tokio::test]
async fn api_host_uploads_refuse_undecodable_and_oversize_images() {
    let emu = Emu::start().await;
    for (what, bytes, want) in bad_payloads() {
        let got = emu
            .upload(Form::new().part("file", file_part(bytes, "a.png")))
            .await;
        if want == 5400 {
            let message = got.1["errors"][0]["message"].as_str().unwrap_or_default();
            assert!(message.contains("12500x1"), "{message}");
        }
        assert_refused(what, got, want);
    }
    // The limit itself is fine, and so are the other formats.
    for (what, bytes) in [
        ("12000 px", wide_png(12_000)),
        ("png", png(3, 500)),
        ("jpeg", jpeg(4, 500)),
        ("gif", gif(5)),
        ("webp", webp()),
    ] {
        let (status, body) = emu
            .upload(Form::new().part("file", file_part(bytes, "a.bin")))
            .await;
        assert_eq!(status, 200, "{what}: {body}");
    }
    assert_eq!(emu.handle.inspect().images.len(), 5);
}

#[tokio::test]
async fn unknown_types_and_size_are_checked_before_decoding() {
    let emu = Emu::start().await;
    let got = emu
        .upload(Form::new().part("file", file_part(b"hello".to_vec(), "a.png")))
        .await;
    assert_eq!((got.0, code(&got.1)), (415, 5455), "{}", got.1);
    let mut big = truncated_png(1);
    big.resize(10_000_001, 0);
    let got = emu
        .upload(Form::new().part("file", file_part(big, "a.png")))
        .await;
    assert_eq!((got.0, code(&got.1)), (413, 5413), "{}", got.1);
}

#[tokio::test]
async fn batch_host_uploads_decode_too() {
    let emu = Emu::start().await;
    let token = emu.handle.issue_batch_token(chrono::Duration::hours(1));
    for (what, bytes, want) in bad_payloads() {
        let resp = emu
            .http
            .post(format!("{}/images/v1", emu.handle.batch_base()))
            .bearer_auth(&token)
            .multipart(Form::new().part("file", file_part(bytes, "a.png")))
            .send()
            .await
            .unwrap();
        assert_refused(what, status_json(resp).await, want);
    }
    assert!(emu.handle.inspect().images.is_empty());
}

#[tokio::test]
async fn url_uploads_decode_what_they_fetch() {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/truncated.png", get(|| async { truncated_png(1) }))
        .route("/corrupt.png", get(|| async { corrupt_png(2) }))
        .route("/wide.png", get(|| async { wide_png(12_500) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let emu = Emu::start().await;
    for (what, want) in [("truncated", 9422), ("corrupt", 9422), ("wide", 5400)] {
        let got = emu
            .upload(Form::new().text("url", format!("{base}/{what}.png")))
            .await;
        assert_refused(what, got, want);
    }
    assert!(emu.handle.inspect().images.is_empty());
}

#[tokio::test]
async fn direct_uploads_decode_and_leave_the_draft_usable() {
    let emu = Emu::start().await;
    let resp = emu
        .req(reqwest::Method::POST, "/v2/direct_upload")
        .multipart(Form::new().text("id", "du/decode.png"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    let url = body["result"]["uploadURL"].as_str().unwrap().to_owned();
    let post = |bytes: Vec<u8>| {
        emu.http
            .post(&url)
            .multipart(Form::new().part("file", file_part(bytes, "a.png")))
            .send()
    };
    for (what, bytes, want) in bad_payloads() {
        assert_refused(what, status_json(post(bytes).await.unwrap()).await, want);
    }
    // A refused file does not use up the one-time URL.
    let (status, body) = status_json(post(png(7, 300)).await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
}
