//! Issue 6: the promise under lagging lists, refused replacements and edge 429 pages.

use std::time::Duration;

use cfimg::emulator::{EmulatorConfig, Faults, RateLimit};

use crate::common::{TestEnv, png, sha256_file, text, truncated_png, wide_png};

/// Path ids: a changed file whose new version the service would refuse (truncated, over
/// 12,000 px) never costs the live image; a good new version replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_new_version_never_costs_the_live_image() {
    let env = TestEnv::new().await;
    let keys = env.write_pngs(&["t.png", "w.png", "g.png"], 1500);
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let before: Vec<String> = keys.iter().map(|k| sha256_file(&env.src.join(k))).collect();
    env.write("t.png", &truncated_png(7));
    env.write("w.png", &wide_png(12_500));
    env.write("g.png", &png(99, 1500));
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 1, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["rejected"].as_u64()),
        (Some(1), Some(2)),
        "{summary}"
    );
    let images = env.inspect().images;
    let held = |id: &str| images.iter().find(|i| i.id == id).map(|i| i.sha256.clone());
    assert_eq!(
        held("t.png"),
        Some(before[0].clone()),
        "the old t.png is still live"
    );
    assert_eq!(
        held("w.png"),
        Some(before[1].clone()),
        "the old w.png is still live"
    );
    assert_eq!(held("g.png"), Some(sha256_file(&env.src.join("g.png"))));
    // The delivery URL still serves the old bytes.
    let rows = env.ledger_rows();
    let url = rows["t.png"].url.clone().expect("url kept");
    let bytes = reqwest::get(&url).await.unwrap().bytes().await.unwrap();
    assert_eq!(crate::common::sha256_bytes(&bytes), before[0]);
    let reasons = |k: &str| rows[k].last_error.clone().unwrap_or_default();
    assert!(reasons("t.png").contains("9422"), "{}", reasons("t.png"));
    assert!(
        reasons("w.png").contains("12500") || reasons("w.png").contains("12,500"),
        "{}",
        reasons("w.png")
    );
    assert_eq!(
        env.api_requests("DELETE", "v1/{image_id}"),
        1,
        "only g.png's id was freed"
    );
}

/// Cloudflare-assigned ids with lists that lag by 2 s, and uploads that were stored but
/// answered 500 or dropped: the settle pass finds every duplicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_answers_with_lagging_lists_leave_no_duplicate() {
    let env = TestEnv::with(
        EmulatorConfig {
            api_rate_limit: None,
            list_lag: Duration::from_secs(2),
            faults: Faults {
                seed: 21,
                p_store_then_500: 0.25,
                p_drop_after_store: 0.15,
                ..Faults::default()
            },
            ..EmulatorConfig::default()
        },
        "max_attempts = 20\nsettle_secs = 2.5",
    )
    .await;
    let keys: Vec<String> = (0..40).map(|i| format!("a/{i}.png")).collect();
    let keys = env.write_pngs(&keys, 1200);
    let (code, summary, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    let ambiguous = env.requests_with_status(0) + env.requests_with_status(500);
    assert!(
        ambiguous >= 5,
        "the faults made ambiguous answers: {ambiguous}"
    );
    assert!(
        summary["duplicates_deleted"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let per = env.images_per_source();
    let twice: Vec<&String> = keys
        .iter()
        .filter(|k| per.get(&env.stamp_of(k)) != Some(&1))
        .collect();
    let rows = env.ledger_rows();
    let detail: Vec<_> = twice
        .iter()
        .map(|k| {
            (
                &rows[k.as_str()].image_id,
                &rows[k.as_str()].check_after,
                env.inspect()
                    .images
                    .iter()
                    .filter(|i| {
                        i.meta.get("cfimg_src").and_then(|v| v.as_str())
                            == Some(env.stamp_of(k).as_str())
                    })
                    .map(|i| (i.id.clone(), i.uploaded.clone()))
                    .collect::<Vec<_>>(),
            )
        })
        .collect();
    assert!(twice.is_empty(), "{twice:?} {detail:?} {}", text(&out));
    env.assert_exactly_once(&keys).await;
    let status = env.run(&["status", "--json"]).await;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["items"]["pending_checks"], 0, "{status}");
}

/// A kill between the upload and the settle pass: the next run finishes the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_duplicate_checks_survive_a_kill() {
    let env = TestEnv::with(
        EmulatorConfig {
            api_rate_limit: None,
            list_lag: Duration::from_secs(1),
            faults: Faults {
                seed: 3,
                p_store_then_500: 1.0,
                ..Faults::default()
            },
            ..EmulatorConfig::default()
        },
        "settle_secs = 600",
    )
    .await;
    let keys = env.write_pngs(&["x.png"], 1200);
    let mut child = env
        .cmd(&["migrate", env.src.to_str().unwrap(), "--id-mode", "auto"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Every upload is stored and answered 500; the lookup misses it (lag) and uploads
    // again until one answer is seen. With the faults off after two stores, the run
    // records its image and then waits 600 s to look again: kill it there.
    env.wait_for(Duration::from_secs(30), |e| e.inspect().images.len() >= 2)
        .await;
    env.emu.set_faults(Faults::default());
    env.wait_for(Duration::from_secs(30), |e| {
        e.ledger_rows()
            .get("x.png")
            .is_some_and(|r| r.state == cfimg::ledger::State::Uploaded && r.check_after.is_some())
    })
    .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert!(env.inspect().images.len() >= 2);
    // The next run, with a short settle, checks the pending item although it is unchanged.
    let (code, summary, out) = env
        .migrate(&["--id-mode", "auto", "--settle-secs", "1.5"])
        .await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["skipped"], 1, "{summary}");
    env.assert_exactly_once(&keys).await;
}

/// Rate limits answered by the edge's HTML page, with and without Retry-After: every
/// worker pauses, no item fails, and the 429s stay few.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_429_pages_pause_every_worker_and_fail_nothing() {
    for retry_after in [true, false] {
        let env = TestEnv::with(
            EmulatorConfig {
                api_rate_limit: Some(RateLimit {
                    requests: 20,
                    window: Duration::from_secs(5),
                    penalty: Duration::from_secs(2),
                }),
                faults: Faults {
                    edge_429: true,
                    edge_429_retry_after: retry_after,
                    ..Faults::default()
                },
                ..EmulatorConfig::default()
            },
            "rate = 50",
        )
        .await;
        let keys: Vec<String> = (0..40).map(|i| format!("{i}.png")).collect();
        let keys = env.write_pngs(&keys, 900);
        let (code, summary, out) = env.migrate(&[]).await;
        assert_eq!(code, 0, "retry-after {retry_after}: {}", text(&out));
        assert_eq!(summary["failed"], 0, "{summary}");
        env.assert_exactly_once(&keys).await;
        let served = env.inspect().throttled;
        assert!(
            served <= 10,
            "retry-after {retry_after}: {served} 429s served: {summary}"
        );
    }
}
