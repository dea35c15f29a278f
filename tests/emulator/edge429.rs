//! Rate-limit answers as the edge's HTML page (Error 1015), with or without Retry-After,
//! from the limiter or drawn at a set probability.

use std::time::Duration;

use cfimg::emulator::{Faults, RateLimit};

use super::{Emu, status_json};

/// Asserts an edge 429 page and returns whether it carried `Retry-After`.
async fn assert_edge_429(resp: reqwest::Response) -> Option<String> {
    assert_eq!(resp.status(), 429);
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(resp.headers().get("ratelimit").is_none());
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.text().await.unwrap();
    assert!(body.contains("Error") && body.contains("1015"), "{body}");
    assert!(body.contains("You are being rate limited"), "{body}");
    assert!(serde_json::from_str::<serde_json::Value>(&body).is_err());
    retry_after
}

async fn put_faults(emu: &Emu, faults: &Faults) {
    let url = format!("{}/__emulator/faults", emu.handle.batch_base());
    let resp = emu.http.put(&url).json(faults).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn the_limiter_can_answer_with_the_edge_page() {
    // A penalty far longer than the test: every refusal below falls inside it.
    let emu = Emu::start_with(|c| {
        c.api_rate_limit = Some(RateLimit {
            requests: 3,
            window: Duration::from_secs(1),
            penalty: Duration::from_secs(600),
        });
        c.faults.edge_429 = true;
    })
    .await;
    for _ in 0..3 {
        assert_eq!(emu.get("/v1/stats").send().await.unwrap().status(), 200);
    }
    let resp = emu.get("/v1/stats").send().await.unwrap();
    assert_eq!(assert_edge_429(resp).await, None);
    // Over HTTP: the same page, now with Retry-After (the penalty left, rounded up).
    put_faults(
        &emu,
        &Faults {
            edge_429: true,
            edge_429_retry_after: true,
            ..Faults::default()
        },
    )
    .await;
    let resp = emu.get("/v1/stats").send().await.unwrap();
    let secs: u64 = assert_edge_429(resp).await.unwrap().parse().unwrap();
    assert!((590..=600).contains(&secs), "{secs}");
    // And back to JSON 971.
    put_faults(&emu, &Faults::default()).await;
    let (status, body) = status_json(emu.get("/v1/stats").send().await.unwrap()).await;
    assert_eq!((status, super::code(&body)), (429, 971), "{body}");
    assert_eq!(emu.handle.inspect().throttled, 3);
}

#[tokio::test]
async fn html_429s_at_a_set_probability_leave_the_limiter_alone() {
    let emu = Emu::start_with(|c| {
        c.faults = Faults {
            p_429_html: 1.0,
            ..Faults::default()
        }
    })
    .await;
    for _ in 0..3 {
        let resp = emu.get("/v1/stats").send().await.unwrap();
        assert_eq!(assert_edge_429(resp).await, None);
    }
    put_faults(
        &emu,
        &Faults {
            p_429_html: 1.0,
            edge_429_retry_after: true,
            ..Faults::default()
        },
    )
    .await;
    let resp = emu.get("/v1/stats").send().await.unwrap();
    assert_eq!(assert_edge_429(resp).await.as_deref(), Some("1"));
    // Half of them, reproducibly from the seed.
    let faults = Faults {
        seed: 11,
        p_429_html: 0.5,
        ..Faults::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        put_faults(&emu, &faults).await;
        let mut statuses = Vec::new();
        for _ in 0..40 {
            statuses.push(emu.get("/v1/stats").send().await.unwrap().status().as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    let limited = runs[0].iter().filter(|s| **s == 429).count();
    assert!((5..=35).contains(&limited), "{limited} of 40");
    assert!(runs[0].iter().all(|s| *s == 429 || *s == 200));
}
