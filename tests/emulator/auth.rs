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
