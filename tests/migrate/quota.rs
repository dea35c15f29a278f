//! `migrate`'s pre-flight quota check against an emulator with a small image quota: a job
//! that cannot fit is refused before any upload, `--force` starts it anyway and it stops at
//! the quota, and a job that fits (or has nothing left to add) runs.

use cfimg::emulator::EmulatorConfig;

use crate::common::{TestEnv, png, text};

/// An emulator whose account may hold `max_images` images, rate limits off.
async fn with_quota(max_images: u64) -> TestEnv {
    TestEnv::with(
        EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            max_images,
            ..EmulatorConfig::default()
        },
        "",
    )
    .await
}

fn keys(n: usize, prefix: &str) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}.png")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_cannot_fit_is_refused_with_its_figures_and_zero_uploads() {
    let env = with_quota(3).await;
    env.write_pngs(&keys(5, "a"), 200);
    let (code, _, out) = env.migrate(&[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code, 2, "{}", text(&out));
    assert!(
        err.contains("would add 5 images")
            && err.contains("holds 0 of the 3")
            && err.contains("(3 free)"),
        "{err}"
    );
    assert!(
        err.contains("--force") && err.contains("cfimg images delete"),
        "{err}"
    );
    assert_eq!(env.upload_posts(), 0);
    assert!(env.inspect().images.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_force_it_starts_and_stops_at_the_quota_with_5453() {
    let env = with_quota(3).await;
    env.write_pngs(&keys(5, "a"), 200);
    let (code, _, out) = env.migrate(&["--force", "--concurrency", "1"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code, 3, "{}", text(&out));
    assert!(err.contains("5453"), "{err}");
    assert!(err.contains("holds 3 images of 3 allowed"), "{err}");
    assert_eq!(env.inspect().images.len(), 3);
    let uploaded = env
        .all_rows()
        .iter()
        .filter(|r| r.state == cfimg::ledger::State::Uploaded)
        .count();
    assert_eq!(uploaded, 3, "the three stored images are recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_what_the_ledger_has_not_done_counts_against_the_room_left() {
    let env = with_quota(10).await;
    env.write_pngs(&keys(5, "a"), 200);
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(5)),
        "{}",
        text(&out)
    );
    // 5 stored, 5 free: three new files fit, the five done ones do not count.
    for (i, k) in keys(3, "b").iter().enumerate() {
        env.write(k, &png(100 + i as u32, 200));
    }
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(3)),
        "{}",
        text(&out)
    );
    // 8 stored, 2 free: three more do not.
    for (i, k) in keys(3, "c").iter().enumerate() {
        env.write(k, &png(200 + i as u32, 200));
    }
    let posts = env.upload_posts();
    let (code, _, out) = env.migrate(&[]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code, 2, "{}", text(&out));
    assert!(
        err.contains("would add 3 images") && err.contains("8 of the 10"),
        "{err}"
    );
    assert_eq!(env.upload_posts(), posts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rerun_with_nothing_left_to_add_is_not_refused_on_a_full_account() {
    let env = with_quota(4).await;
    env.write_pngs(&keys(4, "a"), 200);
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(
        (code, summary["uploaded"].as_u64()),
        (0, Some(4)),
        "{}",
        text(&out)
    );
    let posts = env.upload_posts();
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        (summary["uploaded"].as_u64(), summary["skipped"].as_u64()),
        (Some(0), Some(4)),
        "{summary}"
    );
    assert_eq!(env.upload_posts(), posts);
    // One more file on the full account is refused, and --dry-run is never refused.
    env.write("new.png", &png(300, 200));
    let (code, _, out) = env.migrate(&[]).await;
    assert_eq!(code, 2, "{}", text(&out));
    let (code, summary, out) = env.migrate(&["--dry-run"]).await;
    assert_eq!(
        (code, summary["would_upload"].as_u64()),
        (0, Some(1)),
        "{}",
        text(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_that_cannot_fit_is_refused_before_any_fetch() {
    let env = with_quota(2).await;
    let origin = crate::common::origin::Origin::start().await;
    let mut list = String::new();
    for i in 0..3 {
        origin.put(&format!("{i}.png"), png(60 + i, 900));
        list.push_str(&origin.img(&format!("{i}.png")));
        list.push('\n');
    }
    let file = env.dir.path().join("urls.txt");
    std::fs::write(&file, list).unwrap();
    let out = env
        .run(&["migrate", "--manifest", file.to_str().unwrap(), "--json"])
        .await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(err.contains("would add 3 images"), "{err}");
    assert_eq!(env.upload_posts(), 0);
    assert_eq!(origin.total_hits(), 0, "nothing was fetched");
}
