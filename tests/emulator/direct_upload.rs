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

#[tokio::test]
async fn uploads_notify_the_webhook_with_its_secret_and_the_url_answers_preflights() {
    use axum::http::HeaderMap;
    let (tx, mut rx) =
        tokio::sync::mpsc::unbounded_channel::<(Option<String>, serde_json::Value)>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            async move {
                let secret = headers
                    .get("cf-webhook-auth")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = tx.send((secret, serde_json::from_slice(&body).unwrap_or_default()));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });
    let emu = Emu::start_with(|c| {
        c.webhook = Some(cfimg::emulator::WebhookDestination {
            url: hook,
            secret: Some("hook-secret".into()),
        })
    })
    .await;
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<_>| {
        tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
            .await
            .expect("a notification arrives")
            .expect("receiver open")
    };

    let (_, body) = create(&emu, Form::new().text("id", "hooked.png")).await;
    let url = body["result"]["uploadURL"].as_str().unwrap().to_owned();
    let pre = emu
        .http
        .request(reqwest::Method::OPTIONS, &url)
        .header("Origin", "http://app.test")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Headers", "x-requested-with")
        .send()
        .await
        .unwrap();
    assert_eq!(pre.status(), 204);
    assert_eq!(pre.headers()["access-control-allow-origin"], "*");
    assert_eq!(
        pre.headers()["access-control-allow-headers"],
        "x-requested-with"
    );
    let up = emu
        .http
        .post(&url)
        .multipart(Form::new().part("file", file_part(png(8), "h.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(up.headers()["access-control-allow-origin"], "*");
    let (secret, note) = next(&mut rx).await;
    assert_eq!(secret.as_deref(), Some("hook-secret"));
    assert_eq!(note["alert_type"], "image_notification");
    assert_eq!(note["account_id"], emu.handle.account_id());
    assert_eq!(note["data"]["image_id"], "hooked.png");
    assert_eq!(note["data"]["status"], "uploaded");
    for key in ["name", "text", "ts"] {
        assert!(!note[key].is_null(), "{key} in {note}");
    }

    let (_, body) = create(&emu, Form::new().text("creator", "c")).await;
    let url = body["result"]["uploadURL"].as_str().unwrap().to_owned();
    let bad = emu
        .http
        .post(&url)
        .multipart(Form::new().part("file", file_part(b"not an image".to_vec(), "x.png")))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 415);
    let (_, note) = next(&mut rx).await;
    assert_eq!(note["data"]["status"], "failed");
    assert_eq!(note["data"]["image_id"], body["result"]["id"]);
    assert!(
        note["data"]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty())
    );

    let test = emu
        .http
        .post(format!(
            "{}/__emulator/webhook/test",
            emu.handle.batch_base()
        ))
        .send()
        .await
        .unwrap();
    let (status, answer) = status_json(test).await;
    assert_eq!(
        (status, answer["receiver_status"].as_u64()),
        (200, Some(200))
    );
    let (_, note) = next(&mut rx).await;
    assert!(
        note["text"].as_str().unwrap().contains("test message"),
        "{note}"
    );
    assert_eq!(emu.handle.webhooks_delivered(), 3);
}
