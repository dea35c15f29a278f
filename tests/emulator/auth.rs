//! Authentication on the API and batch hosts, and batch-token expiry.

use reqwest::multipart::Form;

use super::{Emu, code, file_part, png, status_json};

/// Asserts the sparse 401 answer Cloudflare gives for any authentication failure.
async fn assert_auth_error(resp: reqwest::Response) {
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.text().await.unwrap(), AUTH_BODY);
}

const AUTH_BODY: &str =
    r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}"#;

async fn batch_token(emu: &Emu) -> String {
    let (status, body) = status_json(emu.get("/v1/batch_token").send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let expires = body["result"]["expiresAt"].as_str().unwrap();
    assert!(chrono::DateTime::parse_from_rfc3339(expires).unwrap() > chrono::Utc::now());
    body["result"]["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn api_host_refuses_missing_wrong_and_batch_tokens() {
    let emu = Emu::start().await;
    let (status, body) =
        status_json(emu.http.get(emu.url("/v1/stats")).send().await.unwrap()).await;
    assert_eq!((status, code(&body)), (400, 6003), "{body}");
    let resp = emu
        .http
        .get(emu.url("/v1/stats"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_auth_error(resp).await;
    let token = batch_token(&emu).await;
    let resp = emu
        .http
        .get(emu.url("/v1/stats"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_auth_error(resp).await;
    // The right token for another account.
    let other = format!("{}/accounts/ffff/images/v1/stats", emu.handle.api_base());
    let resp = emu
        .http
        .get(other)
        .bearer_auth(emu.handle.token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Counted per route and status.
    let state = emu.handle.inspect();
    let row = state
        .requests
        .iter()
        .find(|r| {
            r.route == "GET /client/v4/accounts/{account_id}/images/v1/stats" && r.status == 401
        })
        .unwrap();
    assert_eq!(row.count, 3);
}

#[tokio::test]
async fn batch_host_takes_batch_tokens_only_until_they_expire() {
    let emu = Emu::start().await;
    let base = emu.handle.batch_base();
    let token = batch_token(&emu).await;
    let form = Form::new()
        .part("file", file_part(png(1), "b.png"))
        .text("id", "batch/one.png");
    let resp = emu
        .http
        .post(format!("{base}/images/v1"))
        .bearer_auth(&token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!(status, 200, "{body}");
    for path in ["/images/v1/batch%2Fone.png", "/images/v2"] {
        let resp = emu
            .http
            .get(format!("{base}{path}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
    }
    // API-only routes do not exist on the batch host.
    let resp = emu
        .http
        .get(format!("{base}/images/v1/stats"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(resp).await;
    assert_eq!((status, code(&body)), (404, 7003), "{body}");
    // API token refused.
    let resp = emu
        .http
        .get(format!("{base}/images/v2"))
        .bearer_auth(emu.handle.token())
        .send()
        .await
        .unwrap();
    assert_auth_error(resp).await;
    // Expired token refused.
    let expired = emu.handle.issue_batch_token(chrono::Duration::seconds(-1));
    let resp = emu
        .http
        .get(format!("{base}/images/v2"))
        .bearer_auth(&expired)
        .send()
        .await
        .unwrap();
    assert_auth_error(resp).await;
    let resp = emu
        .http
        .delete(format!("{base}/images/v1/batch/one.png"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn batch_tokens_expire_at_their_expires_at() {
    let emu = Emu::start_with(|c| c.batch_token_ttl = std::time::Duration::from_millis(300)).await;
    let token = batch_token(&emu).await;
    let url = format!("{}/images/v2", emu.handle.batch_base());
    assert_eq!(
        emu.http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The ttl is the only wait: 300 ms plus margin, not a guess at scheduling.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(
        emu.http
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

/// Asserts 400 code 6003 with error chain 6111.
async fn assert_malformed(resp: reqwest::Response) {
    let (status, body) = status_json(resp).await;
    assert_eq!((status, code(&body)), (400, 6003), "{body}");
    assert_eq!(body["errors"][0]["error_chain"][0]["code"], 6111, "{body}");
}

#[tokio::test]
async fn a_token_with_a_space_is_malformed_not_wrong() {
    let emu = Emu::start().await;
    for value in [
        "Bearer abc def".to_owned(),
        format!("Bearer {} x", emu.handle.token()),
        format!("Bearer {}\tx", emu.handle.token()),
    ] {
        let resp = emu
            .http
            .get(emu.url("/v1/stats"))
            .header("authorization", &value)
            .send()
            .await
            .unwrap();
        assert_malformed(resp).await;
    }
    // Surrounding spaces are not part of the token.
    let resp = emu
        .http
        .get(emu.url("/v1/stats"))
        .header("authorization", format!("Bearer  {} ", emu.handle.token()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The batch host too.
    let token = emu.handle.issue_batch_token(chrono::Duration::hours(1));
    let resp = emu
        .http
        .get(format!("{}/images/v2", emu.handle.batch_base()))
        .header("authorization", format!("Bearer {token} x"))
        .send()
        .await
        .unwrap();
    assert_malformed(resp).await;
}

const READ_ONLY: &str = "read-only-token-1234";

const UNAUTHORIZED_WRITE: &str = r#"{"success":false,"errors":[{"code":9109,"message":"Unauthorized to access requested resource"}],"messages":[],"result":null}"#;

#[tokio::test]
async fn read_only_tokens_read_but_every_write_is_403_9109() {
    let emu = Emu::start_with(|c| c.read_only_tokens = vec![READ_ONLY.to_owned()]).await;
    emu.upload_png(1, Some("ro/a.png")).await;
    let as_ro = |method: reqwest::Method, path: &str| {
        emu.http
            .request(method, emu.url(path))
            .bearer_auth(READ_ONLY)
    };
    use reqwest::Method;
    for path in [
        "/v1/stats",
        "/v1",
        "/v2",
        "/v2?meta.a[eq]=b",
        "/v1/ro/a.png",
        "/v1/ro/a.png/blob",
        "/v1/variants",
        "/v1/variants/public",
        "/v1/keys",
        "/v1/config",
    ] {
        let resp = as_ro(Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {path}");
    }
    let writes = vec![
        as_ro(Method::POST, "/v1").multipart(Form::new().part("file", file_part(png(2), "b.png"))),
        as_ro(Method::PATCH, "/v1/ro/a.png").json(&serde_json::json!({"metadata": {"x": "y"}})),
        as_ro(Method::DELETE, "/v1/ro/a.png"),
        as_ro(Method::POST, "/v2/direct_upload").multipart(Form::new().text("id", "du.png")),
        as_ro(Method::GET, "/v1/batch_token"),
        as_ro(Method::POST, "/v1/variants").json(&serde_json::json!({
            "id": "thumb", "options": {"fit": "cover", "metadata": "none", "width": 10, "height": 10}
        })),
        as_ro(Method::PATCH, "/v1/variants/public").json(&serde_json::json!({
            "options": {"fit": "cover", "metadata": "none", "width": 10, "height": 10}
        })),
        as_ro(Method::DELETE, "/v1/variants/public"),
        as_ro(Method::PUT, "/v1/keys/k2"),
        as_ro(Method::DELETE, "/v1/keys/default"),
        as_ro(Method::PATCH, "/v1/config").json(&serde_json::json!({"flexible_variants": true})),
    ];
    for req in writes {
        let req = req.build().unwrap();
        let what = format!("{} {}", req.method(), req.url().path());
        let resp = emu.http.execute(req).await.unwrap();
        assert_eq!(resp.status(), 403, "{what}");
        let body: serde_json::Value = resp.json().await.unwrap();
        let want: serde_json::Value = serde_json::from_str(UNAUTHORIZED_WRITE).unwrap();
        assert_eq!(body, want, "{what}");
    }
    // Nothing changed.
    let state = emu.handle.inspect();
    assert_eq!(state.images.len(), 1);
    assert!(state.images[0].meta.is_empty());
    let (_, variants) = status_json(emu.get("/v1/variants").send().await.unwrap()).await;
    assert_eq!(
        variants["result"]["variants"].as_object().unwrap().len(),
        1,
        "{variants}"
    );
    // A read-only token for another account, or on the batch host, is refused as usual.
    let other = format!("{}/accounts/ffff/images/v1/stats", emu.handle.api_base());
    assert_auth_error(
        emu.http
            .get(other)
            .bearer_auth(READ_ONLY)
            .send()
            .await
            .unwrap(),
    )
    .await;
    let batch = format!("{}/images/v2", emu.handle.batch_base());
    assert_auth_error(
        emu.http
            .get(batch)
            .bearer_auth(READ_ONLY)
            .send()
            .await
            .unwrap(),
    )
    .await;
}
