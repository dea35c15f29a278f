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

fn big_meta() -> String {
    format!(r#"{{"a":"{}"}}"#, "x".repeat(1100))
}

#[tokio::test]
async fn upload_validation_rules_and_codes() {
    let emu = Emu::start().await;
    emu.upload_png(0, Some("taken.png")).await;
    let file = || file_part(png(1), "a.png");
    let cases: Vec<(&str, Form, u16, u64)> = vec![
        (
            "bad id",
            Form::new().part("file", file()).text("id", "notes.txt"),
            400,
            5411,
        ),
        (
            "uuid id",
            Form::new()
                .part("file", file())
                .text("id", "2cdc28f0-017a-49c4-9ed7-87056c83901b"),
            400,
            5411,
        ),
        (
            "slash id",
            Form::new().part("file", file()).text("id", "/lead.png"),
            400,
            5411,
        ),
        (
            "private custom id",
            Form::new()
                .part("file", file())
                .text("id", "ok.png")
                .text("requireSignedURLs", "true"),
            400,
            5410,
        ),
        (
            "duplicate",
            Form::new().part("file", file()).text("id", "taken.png"),
            409,
            5409,
        ),
        (
            "bad metadata",
            Form::new().part("file", file()).text("metadata", "{"),
            400,
            5400,
        ),
        (
            "metadata not object",
            Form::new().part("file", file()).text("metadata", "[1]"),
            400,
            5400,
        ),
        (
            "metadata too big",
            Form::new()
                .part("file", file())
                .text("metadata", big_meta()),
            400,
            5400,
        ),
        (
            "dotted metadata too big",
            Form::new()
                .part("file", file())
                .text("metadata.a", "x".repeat(1100)),
            400,
            5400,
        ),
        (
            "not an image",
            Form::new().part("file", file_part(b"hello world".to_vec(), "a.png")),
            415,
            5455,
        ),
        (
            "empty",
            Form::new().part("file", file_part(Vec::new(), "a.png")),
            400,
            9422,
        ),
        ("neither", Form::new().text("id", "x.png"), 400, 5400),
        (
            "both",
            Form::new()
                .part("file", file())
                .text("url", "http://127.0.0.1:1/a.png"),
            400,
            5400,
        ),
        (
            "bad bool",
            Form::new()
                .part("file", file())
                .text("requireSignedURLs", "yes"),
            400,
            5400,
        ),
        (
            "creator too long",
            Form::new()
                .part("file", file())
                .text("creator", "c".repeat(1025)),
            400,
            5400,
        ),
    ];
    for (name, form, status, want) in cases {
        let (got, body) = emu.upload(form).await;
        assert_eq!((got, code(&body)), (status, want), "{name}: {body}");
        assert_eq!(body["success"], false, "{name}");
    }
    // Too large: one byte over 10 MB.
    let big = crate::common::png(2, 10_000_001);
    assert_eq!(big.len(), 10_000_001);
    let (status, body) = emu
        .upload(Form::new().part("file", file_part(big, "big.png")))
        .await;
    assert_eq!((status, code(&body)), (413, 5413), "{body}");
    let exact = crate::common::png(3, 10_000_000);
    assert_eq!(exact.len(), 10_000_000);
    let (status, body) = emu
        .upload(Form::new().part("file", file_part(exact, "ok.png")))
        .await;
    assert_eq!(status, 200, "{body}");
    // Not multipart.
    let resp = emu
        .req(Method::POST, "/v1")
        .header("content-type", "image/png")
        .body(png(4))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!((status, code(&body)), (415, 5415), "{body}");
    // Only the taken.png and the 10 MB image were stored.
    assert_eq!(emu.handle.inspect().images.len(), 2);
}

#[tokio::test]
async fn every_accepted_format_is_sniffed_and_served_with_its_type() {
    let emu = Emu::start().await;
    let payloads: Vec<(Vec<u8>, &str)> = vec![
        (crate::common::jpeg(1, 300), "image/jpeg"),
        (crate::common::gif(1), "image/gif"),
        (crate::common::webp(), "image/webp"),
        (
            b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
            "image/svg+xml",
        ),
    ];
    for (bytes, mime) in payloads {
        // The file name lies; the content decides.
        let (status, body) = emu
            .upload(Form::new().part("file", file_part(bytes.clone(), "x.bin")))
            .await;
        assert_eq!(status, 200, "{mime}: {body}");
        let id = body["result"]["id"].as_str().unwrap();
        assert!(cfimg::rules::is_uuid(id));
        let resp = emu.get(&format!("/v1/{id}/blob")).send().await.unwrap();
        assert_eq!(resp.headers()["content-type"], mime);
        assert_eq!(resp.bytes().await.unwrap().as_ref(), bytes.as_slice());
    }
}

#[tokio::test]
async fn sdk_metadata_forms_merge_over_json_text() {
    let emu = Emu::start().await;
    let form = Form::new()
        .part("file", file_part(png(1), "a.png"))
        .text("metadata", r#"{"a":"1","b":"2"}"#)
        .text("metadata.b", "dotted")
        .text("metadata[c]", "bracket");
    let (status, body) = emu.upload(form).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["meta"],
        json!({"a":"1","b":"dotted","c":"bracket"})
    );
}

#[tokio::test]
async fn patch_replaces_fields_and_refuses_private_custom_ids() {
    let emu = Emu::start().await;
    emu.upload_png(1, Some("p.png")).await;
    let resp = emu
        .req(Method::PATCH, "/v1/p.png")
        .json(&json!({"metadata": {"x": "y"}, "creator": "c2"}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["meta"], json!({"x":"y"}));
    assert_eq!(body["result"]["creator"], "c2");
    let resp = emu
        .req(Method::PATCH, "/v1/p.png")
        .json(&json!({"requireSignedURLs": true}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!((status, code(&body)), (400, 5410), "{body}");
    let resp = emu
        .req(Method::PATCH, "/v1/p.png")
        .json(&json!({"metadata": {"a": "x".repeat(1100)}}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!((status, code(&body)), (400, 5400), "{body}");
    let resp = emu
        .req(Method::PATCH, "/v1/missing.png")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!((status, code(&body)), (404, 5404), "{body}");
    // Assigned ids may become private.
    let id = emu.upload_png(2, None).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = emu
        .req(Method::PATCH, &format!("/v1/{id}"))
        .json(&json!({"requireSignedURLs": true}))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(
        (status, &body["result"]["requireSignedURLs"]),
        (200, &json!(true))
    );
}

async fn v2_ids(emu: &Emu, query: &str) -> (Vec<String>, Option<String>) {
    let (status, body) = status_json(emu.get(&format!("/v2?{query}")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{query}: {body}");
    let ids = body["result"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect();
    (
        ids,
        body["result"]["continuation_token"]
            .as_str()
            .map(str::to_owned),
    )
}

#[tokio::test]
async fn list_v2_pages_sorts_and_filters() {
    let emu = Emu::start().await;
    for i in 0..25u32 {
        let form = Form::new()
            .part("file", file_part(png(i), "a.png"))
            .text("id", format!("img{i:02}.png"))
            .text(
                "metadata",
                format!(
                    r#"{{"parity":"{}","n":{i}}}"#,
                    if i % 2 == 0 { "even" } else { "odd" }
                ),
            )
            .text("creator", if i < 5 { "alice" } else { "bob" });
        assert_eq!(emu.upload(form).await.0, 200);
    }
    // Default: newest first, pages of per_page, null token on the last page.
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let q = match &token {
            Some(t) => format!("per_page=10&continuation_token={t}"),
            None => "per_page=10".into(),
        };
        let (ids, next) = v2_ids(&emu, &q).await;
        all.extend(ids);
        match next {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).rev().map(|i| format!("img{i:02}.png")).collect();
    assert_eq!(all, want);
    let (asc, _) = v2_ids(&emu, "per_page=10&sort_order=asc").await;
    assert_eq!(asc[0], "img00.png");
    // Exactly one page: no token.
    let (ids, next) = v2_ids(&emu, "per_page=10&sort_order=asc&creator=alice").await;
    assert_eq!(ids.len(), 5);
    assert_eq!(next, None);
    let (ids, _) = v2_ids(&emu, "meta.parity%5Beq%5D=odd&creator=alice").await;
    assert_eq!(ids, vec!["img03.png", "img01.png"]);
    let (ids, _) = v2_ids(&emu, "meta.n[eq]=7").await;
    assert_eq!(ids, vec!["img07.png"]);
    let (ids, _) = v2_ids(&emu, "meta.missing[eq]=x").await;
    assert!(ids.is_empty());
    for bad in [
        "per_page=5",
        "per_page=10001",
        "sort_order=up",
        "meta.n[like]=1",
        "continuation_token=zzz",
    ] {
        let (status, body) =
            status_json(emu.get(&format!("/v2?{bad}")).send().await.unwrap()).await;
        assert_eq!((status, code(&body)), (400, 5400), "{bad}: {body}");
    }
}

#[tokio::test]
async fn list_v1_pages_oldest_first_and_stats_count() {
    let emu = Emu::start().await;
    for i in 0..12u32 {
        emu.upload_png(i, Some(&format!("v1-{i:02}.png"))).await;
    }
    let page = |p: u32| {
        let emu = &emu;
        async move {
            let (status, body) = status_json(
                emu.get(&format!("/v1?page={p}&per_page=10"))
                    .send()
                    .await
                    .unwrap(),
            )
            .await;
            assert_eq!(status, 200, "{body}");
            body["result"]["images"].as_array().unwrap().len()
        }
    };
    assert_eq!(page(1).await, 10);
    assert_eq!(page(2).await, 2);
    assert_eq!(page(3).await, 0);
    let (_, body) = status_json(emu.get("/v1?per_page=10").send().await.unwrap()).await;
    assert_eq!(body["result"]["images"][0]["id"], "v1-00.png");
    let (status, body) = status_json(emu.get("/v1/stats").send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["result"]["count"]["current"], 12);
    assert!(body["result"]["count"]["allowed"].as_u64().unwrap() > 12);
}

/// A loopback origin for url uploads: `/ok.png` serves a PNG, `/broken` answers 500.
async fn origin() -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route("/ok.png", get(|| async { png(42) }))
        .route(
            "/broken",
            get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no") }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn url_uploads_fetch_the_origin_and_report_5454() {
    let emu = Emu::start().await;
    let base = origin().await;
    let (status, body) = emu
        .upload(
            Form::new()
                .text("url", format!("{base}/ok.png"))
                .text("id", "from-url"),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["filename"], "ok.png");
    let blob = emu.blob("from-url").await;
    assert_eq!(blob.as_ref(), png(42).as_slice());
    for url in [
        format!("{base}/broken"),
        "http://127.0.0.1:1/x.png".into(),
        "ftp://x/y.png".into(),
    ] {
        let (status, body) = emu.upload(Form::new().text("url", url.clone())).await;
        assert_eq!((status, code(&body)), (400, 5454), "{url}: {body}");
    }
}

#[tokio::test]
async fn unknown_routes_are_7003_and_unknown_images_5404() {
    let emu = Emu::start().await;
    for (method, path) in [
        (Method::GET, "/v3"),
        (Method::PUT, "/v1/x.png"),
        (Method::POST, "/v1/stats"),
    ] {
        let (status, body) = status_json(emu.req(method, path).send().await.unwrap()).await;
        assert_eq!((status, code(&body)), (404, 7003), "{path}: {body}");
    }
    let (status, body) = status_json(emu.get("/v1/nope.png").send().await.unwrap()).await;
    assert_eq!((status, code(&body)), (404, 5404));
    let (status, body) = status_json(
        emu.req(Method::DELETE, "/v1/nope.png")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, code(&body)), (404, 5404));
}

#[tokio::test]
async fn private_images_need_a_valid_signature() {
    let emu = Emu::start().await;
    let form = Form::new()
        .part("file", file_part(png(9), "s.png"))
        .text("requireSignedURLs", "true");
    let (status, body) = emu.upload(form).await;
    assert_eq!(status, 200, "{body}");
    let url = body["result"]["variants"][0].as_str().unwrap().to_owned();
    assert_eq!(emu.http.get(&url).send().await.unwrap().status(), 403);
    let (_, keys) = status_json(emu.get("/v1/keys").send().await.unwrap()).await;
    let key = keys["result"]["keys"][0]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = reqwest::Url::parse(&url).unwrap().path().to_owned();
    let sign = |exp: i64| {
        let q = format!("exp={exp}");
        let sig = cfimg_hmac(&key, &format!("{path}?{q}"));
        format!("{url}?{q}&sig={sig}")
    };
    let now = chrono::Utc::now().timestamp();
    let good = emu.http.get(sign(now + 60)).send().await.unwrap();
    assert_eq!(good.status(), 200);
    assert_eq!(good.bytes().await.unwrap().as_ref(), png(9).as_slice());
    assert_eq!(
        emu.http.get(sign(now - 1)).send().await.unwrap().status(),
        403
    );
    let forged = format!("{url}?exp={}&sig={}", now + 60, "0".repeat(64));
    assert_eq!(emu.http.get(forged).send().await.unwrap().status(), 403);
}

/// HMAC-SHA256 written independently of the emulator's, so the test checks it.
fn cfimg_hmac(key: &str, msg: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut k = [0u8; 64];
    k[..key.len()].copy_from_slice(key.as_bytes());
    let ipad: Vec<u8> = k.iter().map(|b| b ^ 0x36).chain(msg.bytes()).collect();
    let inner = Sha256::digest(&ipad);
    let mut opad: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    opad.extend_from_slice(&inner);
    Sha256::digest(&opad)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
