//! Uploads, reads, updates, deletes, lists and delivery of images.

use reqwest::Method;
use reqwest::multipart::Form;
use serde_json::json;

use super::{Emu, code, file_part, png, status_json};

#[tokio::test]
async fn upload_get_deliver_delete_round_trip() {
    let emu = Emu::start().await;
    let form = Form::new()
        .part("file", file_part(png(1), "cat.png"))
        .text("id", "photos/2024/cat.png")
        .text("metadata", r#"{"k":"v","n":5}"#)
        .text("creator", "me");
    let (status, body) = emu.upload(form).await;
    assert_eq!(status, 200, "{body}");
    let img = &body["result"];
    assert_eq!(img["id"], "photos/2024/cat.png");
    assert_eq!(img["filename"], "cat.png");
    assert_eq!(img["meta"], json!({"k":"v","n":5}));
    assert_eq!(img["creator"], "me");
    assert_eq!(img["requireSignedURLs"], false);
    assert!(img["uploaded"].as_str().unwrap().ends_with('Z'));

    // Encoded and raw slashes both reach the image.
    for path in ["/v1/photos%2F2024%2Fcat.png", "/v1/photos/2024/cat.png"] {
        let (status, body) = status_json(emu.get(path).send().await.unwrap()).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["result"]["id"], "photos/2024/cat.png");
    }
    for path in [
        "/v1/photos%2F2024%2Fcat.png/blob",
        "/v1/photos/2024/cat.png/blob",
    ] {
        let resp = emu.get(path).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "image/png");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), png(1).as_slice());
    }
    // Delivery: every variant URL serves the same bytes, without auth.
    let variants = img["variants"].as_array().unwrap();
    assert!(!variants.is_empty());
    for v in variants {
        let resp = emu.http.get(v.as_str().unwrap()).send().await.unwrap();
        assert_eq!(resp.status(), 200, "{v}");
        assert_eq!(resp.bytes().await.unwrap().as_ref(), png(1).as_slice());
    }
    let state = emu.handle.inspect();
    assert_eq!(state.images.len(), 1);
    assert_eq!(state.images[0].size, png(1).len() as u64);
    assert_eq!(state.images[0].sha256.len(), 64);

    let resp = emu
        .req(Method::DELETE, "/v1/photos%2F2024%2Fcat.png")
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!((status, &body["result"]), (200, &json!({})));
    let (status, body) =
        status_json(emu.get("/v1/photos/2024/cat.png").send().await.unwrap()).await;
    assert_eq!((status, code(&body)), (404, 5404));
    let resp = emu
        .http
        .get(variants[0].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}
