//! Variants, signing keys, config and persistence across a restart.

use reqwest::Method;
use serde_json::json;

use cfimg::emulator::{EmulatorConfig, start};

use super::{Emu, code, png, status_json};

#[tokio::test]
async fn variants_crud() {
    let emu = Emu::start().await;
    let (_, body) = status_json(emu.get("/v1/variants").send().await.unwrap()).await;
    assert!(body["result"]["variants"]["public"].is_object());
    let thumb = json!({"id":"thumb","options":{"fit":"cover","metadata":"none","width":100,"height":100},"neverRequireSignedURLs":true});
    let (status, body) = emu.send_json(Method::POST, "/v1/variants", &thumb).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["variant"], thumb);
    let (status, body) = emu.send_json(Method::POST, "/v1/variants", &thumb).await;
    assert_eq!((status, code(&body)), (409, 5409));
    let bad = json!({"id":"bad","options":{"fit":"stretch","metadata":"none"}});
    let (status, _) = emu.send_json(Method::POST, "/v1/variants", &bad).await;
    assert_eq!(status, 400);
    let patch = json!({"options":{"fit":"pad","metadata":"keep","width":50}});
    let (status, body) = emu
        .send_json(Method::PATCH, "/v1/variants/thumb", &patch)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["variant"]["options"]["fit"], "pad");
    let (_, body) = status_json(emu.get("/v1/variants/thumb").send().await.unwrap()).await;
    assert_eq!(body["result"]["variant"]["options"]["width"], 50);
    // New images list a URL for the new variant too.
    let img = emu.upload_png(1, Some("v.png")).await;
    assert_eq!(img["variants"].as_array().unwrap().len(), 2);
    let (status, _) = status_json(
        emu.req(Method::DELETE, "/v1/variants/thumb")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    let (status, body) = status_json(emu.get("/v1/variants/thumb").send().await.unwrap()).await;
    assert_eq!((status, code(&body)), (404, 5404));
}

#[tokio::test]
async fn keys_and_config() {
    let emu = Emu::start().await;
    let (_, body) = status_json(emu.get("/v1/keys").send().await.unwrap()).await;
    assert_eq!(body["result"]["keys"][0]["name"], "default");
    let (status, body) =
        status_json(emu.req(Method::PUT, "/v1/keys/extra").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["keys"].as_array().unwrap().len(), 2);
    let (status, body) = status_json(
        emu.req(Method::DELETE, "/v1/keys/extra")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, body["result"]["keys"].as_array().unwrap().len()),
        (200, 1)
    );
    let (status, _) = status_json(
        emu.req(Method::DELETE, "/v1/keys/default")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 400);
    let (status, body) = status_json(
        emu.req(Method::PATCH, "/v1/config")
            .json(&json!({"flexible_variants": true}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, &body["result"]["flexible_variants"]),
        (200, &json!(true))
    );
    // Flexible variants are then served.
    let img = emu.upload_png(3, Some("flex.png")).await;
    let url = img["variants"][0]
        .as_str()
        .unwrap()
        .rsplit_once('/')
        .unwrap()
        .0
        .to_owned();
    let resp = emu
        .http
        .get(format!("{url}/w=10,h=10"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn data_dir_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = || EmulatorConfig {
        data_dir: Some(dir.path().to_path_buf()),
        api_rate_limit: None,
        ..EmulatorConfig::default()
    };
    let emu = Emu::start_with(|c| *c = config()).await;
    emu.upload_png(1, Some("keep/me.png")).await;
    emu.upload_png(2, Some("gone.png")).await;
    emu.req(Method::DELETE, "/v1/gone.png")
        .send()
        .await
        .unwrap();
    emu.req(Method::PATCH, "/v1/keep/me.png")
        .json(&json!({"metadata":{"v":"2"}}))
        .send()
        .await
        .unwrap();
    let (_, keys_before) = status_json(emu.get("/v1/keys").send().await.unwrap()).await;
    let before = emu.handle.inspect().images;
    emu.handle.shutdown().await;

    let handle = start("127.0.0.1:0".parse().unwrap(), config())
        .await
        .unwrap();
    let emu = Emu {
        handle,
        http: emu.http,
    };
    let after = emu.handle.inspect().images;
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].id, "keep/me.png");
    assert_eq!(after[0].sha256, before[0].sha256);
    assert_eq!(after[0].meta["v"], "2");
    let blob = emu.blob("keep/me.png").await;
    assert_eq!(blob.as_ref(), png(1).as_slice());
    let (_, keys_after) = status_json(emu.get("/v1/keys").send().await.unwrap()).await;
    assert_eq!(keys_before, keys_after);
    // New uploads after a restart sort after the old ones.
    emu.upload_png(3, Some("new.png")).await;
    let (_, list) = status_json(emu.get("/v2").send().await.unwrap()).await;
    assert_eq!(list["result"]["images"][0]["id"], "new.png");
}
