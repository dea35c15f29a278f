//! The strict batch host of `--batch-window sliding`: a sliding window per batch token and
//! the standard `Ratelimit` headers on every answer. Time is paused, and the client has no
//! timers of its own, so the window moves only when the test advances the clock.

use std::time::Duration;

use cfimg::emulator::{LimitWindow, RateLimit};
use reqwest::header::HeaderMap;

use super::{Emu, code, status_json};

const QUOTA: u32 = 3;

async fn strict(headers: bool) -> (Emu, String) {
    let mut emu = Emu::start_with(|c| {
        c.batch_rate_limit = Some(RateLimit {
            requests: QUOTA,
            window: Duration::from_secs(1),
            // Ignored by the sliding window: a token is free once its requests age out.
            penalty: Duration::from_secs(60),
        });
        c.batch_window = LimitWindow::Sliding;
        c.batch_ratelimit_headers = headers;
    })
    .await;
    emu.http = reqwest::Client::builder()
        .pool_idle_timeout(None)
        .build()
        .unwrap();
    let token = emu.handle.issue_batch_token(chrono::Duration::hours(1));
    (emu, token)
}

/// One batch-host list request: its status, error code (0 on success) and headers.
async fn list(emu: &Emu, token: &str) -> (u16, u64, HeaderMap) {
    let resp = emu
        .http
        .get(format!("{}/images/v2", emu.handle.batch_base()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let headers = resp.headers().clone();
    let (status, body) = status_json(resp).await;
    (status, code(&body), headers)
}

/// `(r, t)` of `Ratelimit: "default";r=<r>;t=<t>`, both integers (the test fails on any
/// other shape), after checking the policy header beside it.
fn ratelimit(headers: &HeaderMap) -> (u32, u64) {
    assert_eq!(
        headers["ratelimit-policy"],
        format!("\"default\";q={QUOTA};w=1").as_str()
    );
    let value = headers["ratelimit"].to_str().unwrap();
    let rest = value
        .strip_prefix("\"default\";r=")
        .unwrap_or_else(|| panic!("{value}"));
    let (r, t) = rest.split_once(";t=").unwrap_or_else(|| panic!("{value}"));
    let parsed = (r.parse().unwrap(), t.parse().unwrap());
    if parsed.0 == 0 {
        assert!(parsed.1 >= 1, "r=0 needs a reset of at least 1 s: {value}");
    }
    parsed
}

async fn admitted(emu: &Emu, token: &str, remaining: u32) {
    let (status, _, headers) = list(emu, token).await;
    assert_eq!(status, 200);
    assert_eq!(ratelimit(&headers), (remaining, 1));
}

async fn refused(emu: &Emu, token: &str) {
    let (status, code, headers) = list(emu, token).await;
    assert_eq!((status, code), (429, 971));
    assert_eq!(ratelimit(&headers), (0, 1));
    assert_eq!(headers["retry-after"], "1");
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn the_window_slides_and_every_answer_says_so() {
    let (emu, token) = strict(true).await;
    admitted(&emu, &token, 2).await; // at 0 ms
    tokio::time::advance(ms(600)).await;
    admitted(&emu, &token, 1).await; // at 600 ms
    admitted(&emu, &token, 0).await;
    refused(&emu, &token).await; // the (q+1)th within one second
    tokio::time::advance(ms(399)).await;
    refused(&emu, &token).await; // at 999 ms the first still counts
    tokio::time::advance(ms(1)).await;
    // At 1000 ms only the first request has aged out: one admitted, where a fixed window
    // reset at 1000 ms would admit three.
    admitted(&emu, &token, 0).await;
    refused(&emu, &token).await;
    tokio::time::advance(ms(599)).await;
    refused(&emu, &token).await; // at 1599 ms the two of 600 ms still count
    tokio::time::advance(ms(1)).await;
    admitted(&emu, &token, 1).await; // at 1600 ms they have aged out
    admitted(&emu, &token, 0).await;
    refused(&emu, &token).await;

    // Another token has its own window, and answers that are errors carry the headers too.
    let other = emu.handle.issue_batch_token(chrono::Duration::hours(1));
    let resp = emu
        .http
        .get(format!("{}/images/v1/nope.png", emu.handle.batch_base()))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(ratelimit(resp.headers()), (QUOTA - 1, 1));
    // Refusals were not counted: a second later the first token has its whole quota.
    tokio::time::advance(ms(1000)).await;
    admitted(&emu, &token, 2).await;
    assert_eq!(emu.handle.inspect().throttled, 5);
}

#[tokio::test(start_paused = true)]
async fn without_headers_the_window_is_the_same_and_429s_keep_retry_after() {
    let (emu, token) = strict(false).await;
    for _ in 0..QUOTA {
        let (status, _, headers) = list(&emu, &token).await;
        assert_eq!(status, 200);
        assert!(headers.get("ratelimit").is_none());
        assert!(headers.get("ratelimit-policy").is_none());
    }
    let (status, code, headers) = list(&emu, &token).await;
    assert_eq!((status, code), (429, 971));
    assert_eq!(headers["retry-after"], "1");
    assert!(headers.get("ratelimit").is_none());
    tokio::time::advance(ms(1000)).await;
    assert_eq!(list(&emu, &token).await.0, 200);
}
