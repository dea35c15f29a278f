//! Failures of the service: transient ones are retried without duplicates, throttling
//! pauses everyone, permanent ones are recorded once, bad credentials stop the run.

use std::time::Duration;

use cfimg::emulator::{EmulatorConfig, Faults, RateLimit};

use crate::common::{TestEnv, png, text};

fn keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("dir{}/img{i}.png", i % 3)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_are_retried_without_duplicates_in_every_id_mode() {
    for (seed, mode) in [(1u64, "path"), (2, "hash"), (3, "auto")] {
        let faults = Faults {
            seed,
            // 40% of upload attempts fail: enough of every kind to matter, few enough that
            // backoff (full jitter, 30 s cap) rarely reaches seconds.
            p_500: 0.05,
            p_502: 0.05,
            p_503: 0.05,
            p_drop_before_store: 0.05,
            p_drop_after_store: 0.1,
            p_store_then_500: 0.1,
            ..Faults::default()
        };
        let env = TestEnv::with_faults(faults, "max_attempts = 30").await;
        let keys = env.write_pngs(&keys(24), 1500);
        let (code, summary, out) = env.migrate(&["--id-mode", mode]).await;
        assert_eq!(code, 0, "{mode}: {}", text(&out));
        env.assert_exactly_once(&keys).await;
        // The faults really fired: more requests than files.
        assert!(
            summary["requests"].as_u64().unwrap() > keys.len() as u64 + 1,
            "{mode}: {summary}"
        );
        assert!(
            env.requests_with_status(0) + env.requests_with_status(500) > 0,
            "{mode}: no fault fired"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_pauses_every_worker_and_the_run_recovers() {
    let limit = RateLimit {
        requests: 6,
        window: Duration::from_secs(1),
        penalty: Duration::from_millis(1500),
    };
    let env = TestEnv::with(
        EmulatorConfig {
            api_rate_limit: Some(limit),
            ..EmulatorConfig::default()
        },
        "rate = 100",
    )
    .await;
    let keys = env.write_pngs(&keys(20), 800);
    // Another user of the same token spends the budget first, so the run meets the block
    // at once: cfimg paces itself by the Ratelimit headers, but cannot see someone else's.
    let url = format!(
        "{}/accounts/{}/images/v1/stats",
        env.emu.api_base().trim_end_matches('/'),
        env.emu.account_id()
    );
    let other = reqwest::Client::new();
    let mut others_429 = 0;
    for _ in 0..20 {
        let resp = other.get(&url).bearer_auth(env.emu.token()).send().await;
        if resp.unwrap().status() == 429 {
            others_429 += 1;
            break;
        }
    }
    assert_eq!(others_429, 1);
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    env.assert_exactly_once(&keys).await;
    let throttled = summary["throttled"].as_u64().unwrap();
    assert!(throttled > 0, "{summary}");
    // All workers wait out one cool-off together instead of each hammering the blocked
    // token: far fewer 429s than there are files.
    assert!(throttled < keys.len() as u64, "{summary}");
    assert_eq!(env.inspect().throttled, throttled + others_429);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permanent_error_is_recorded_with_its_reason_and_not_retried() {
    let env = TestEnv::new().await;
    env.write("ok.png", &png(1, 900));
    env.write("taken.png", &png(2, 900));
    // Somebody else's image already holds the id cfimg would use.
    let foreign = reqwest::multipart::Form::new()
        .part(
            "file",
            reqwest::multipart::Part::bytes(png(3, 900)).file_name("x.png"),
        )
        .text("id", "taken.png");
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/accounts/{}/images/v1",
            env.emu.api_base(),
            env.emu.account_id()
        ))
        .bearer_auth(crate::common::TOKEN)
        .multipart(foreign)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());

    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    let out = env.run(&["failures", "--json"]).await;
    let failures: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(failures[0]["key"], "taken.png", "{failures}");
    assert!(
        failures[0]["reason"]
            .as_str()
            .unwrap()
            .contains("already taken"),
        "{failures}"
    );
    // The foreign image is untouched.
    assert_eq!(
        env.inspect()
            .images
            .iter()
            .filter(|i| i.id == "taken.png" && i.meta.is_empty())
            .count(),
        1
    );

    let before = env.total_requests();
    let (code, summary, _) = env.migrate(&["--retry-failed"]).await;
    // Only a reject recorded earlier: this run itself failed nothing (issue 17.5).
    assert_eq!(code, 0);
    assert_eq!(summary["rejected_earlier"], 1, "{summary}");
    assert_eq!(
        env.total_requests(),
        before + 1,
        "only the start-up check; the rejected file is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_exits_3_after_one_request() {
    let env = TestEnv::new().await;
    for i in 0..20 {
        env.write(&format!("{i}.png"), &png(i, 500));
    }
    let out = env
        .cmd(&["migrate", env.src.to_str().unwrap()])
        .env("CLOUDFLARE_API_TOKEN", "wrong")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("CLOUDFLARE_API_TOKEN"),
        "{}",
        text(&out)
    );
    assert_eq!(env.total_requests(), 1);
    assert!(env.inspect().images.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_that_run_out_leave_the_item_failed_until_retry_failed() {
    // Every upload's connection drops before the image is stored; other routes work.
    let faults = Faults {
        seed: 9,
        p_drop_before_store: 1.0,
        ..Faults::default()
    };
    let env = TestEnv::with_faults(faults, "max_attempts = 2").await;
    env.write("a.png", &png(1, 700));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(summary["failed"], 1, "{summary}");
    assert_eq!(env.upload_posts(), 2, "max_attempts bounds the attempts");
    let rows = env.ledger_rows();
    assert_eq!(
        rows["a.png"].state,
        cfimg::ledger::State::Failed,
        "{:?}",
        rows["a.png"]
    );
    assert!(
        rows["a.png"]
            .last_error
            .as_deref()
            .unwrap()
            .contains("--retry-failed")
    );

    env.emu.set_faults(Faults::default());
    let (code, summary, _) = env.migrate(&[]).await;
    assert_eq!(
        (code, summary["failed_earlier"].as_u64()),
        (1, Some(1)),
        "{summary}"
    );
    assert_eq!(
        env.upload_posts(),
        2,
        "failed items wait for --retry-failed"
    );
    let (code, summary, out) = env.migrate(&["--retry-failed"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1);
    env.assert_exactly_once(&["a.png"]).await;
}
