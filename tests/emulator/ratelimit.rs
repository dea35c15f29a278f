//! The rate-limit window and penalty on both hosts.

use std::time::Duration;

use cfimg::emulator::RateLimit;

use super::{Emu, code, status_json};

fn small() -> Option<RateLimit> {
    Some(RateLimit {
        requests: 5,
        window: Duration::from_secs(1),
        penalty: Duration::from_secs(1),
    })
}

#[tokio::test]
async fn api_limit_blocks_for_the_penalty_then_recovers() {
    let emu = Emu::start_with(|c| c.api_rate_limit = small()).await;
    for i in 0..5 {
        let resp = emu.get("/v1/stats").send().await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.headers()["ratelimit-policy"], "\"burst\";q=5;w=1");
        assert!(
            resp.headers()["ratelimit"]
                .to_str()
                .unwrap()
                .starts_with("\"default\";r=")
        );
    }
    let resp = emu.get("/v1/stats").send().await.unwrap();
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(resp.headers()["ratelimit"], "\"default\";r=0;t=1");
    let (status, body) = status_json(resp).await;
    assert_eq!((status, code(&body)), (429, 971), "{body}");
    assert_eq!(body["result"], serde_json::Value::Null);
    // Failed requests count too, and the bucket refilling does not lift the penalty.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(emu.get("/v1/nope.png").send().await.unwrap().status(), 429);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(emu.get("/v1/stats").send().await.unwrap().status(), 200);
    assert_eq!(emu.handle.inspect().throttled, 2);
    // Unknown tokens are refused, not limited.
    let resp = emu
        .http
        .get(emu.url("/v1/stats"))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
}

#[tokio::test]
async fn batch_limit_is_per_batch_token_and_separate_from_the_api() {
    let emu = Emu::start_with(|c| c.batch_rate_limit = small()).await;
    let token = |emu: &Emu| emu.handle.issue_batch_token(chrono::Duration::hours(1));
    let (a, b) = (token(&emu), token(&emu));
    let url = format!("{}/images/v2", emu.handle.batch_base());
    for _ in 0..5 {
        assert_eq!(
            emu.http
                .get(&url)
                .bearer_auth(&a)
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let (status, body) =
        status_json(emu.http.get(&url).bearer_auth(&a).send().await.unwrap()).await;
    assert_eq!((status, code(&body)), (429, 971));
    assert_eq!(
        emu.http
            .get(&url)
            .bearer_auth(&b)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // The API limit is off in this emulator: the API host is unaffected.
    assert_eq!(emu.get("/v1/stats").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn limits_can_be_off() {
    let emu = Emu::start().await;
    for _ in 0..50 {
        let resp = emu.get("/v1/stats").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.headers().get("ratelimit").is_none());
    }
}
