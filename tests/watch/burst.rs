//! A burst of thousands of files, a stop in the middle of it, files added while stopped,
//! and a restart: every file ends uploaded exactly once.

use std::time::Duration;

use cfimg::emulator::Faults;

use super::{Daemon, until};
use crate::common::{TestEnv, png, write_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_stopped_by_sigterm_and_restarted_ends_exactly_once() {
    // Latency keeps uploads in flight when the stop lands.
    let faults = Faults {
        p_latency: 1.0,
        latency_ms: 10,
        ..Faults::default()
    };
    let env = TestEnv::with_faults(faults, "concurrency = 8").await;
    let d = Daemon::start(&env, &["--settle", "0.2"]).await;
    let mut keys: Vec<String> = (0..2000)
        .map(|i| format!("burst/{}/f{i}.png", i % 10))
        .collect();
    let src = env.src.clone();
    let written = keys.clone();
    std::thread::spawn(move || {
        for (i, k) in written.iter().enumerate() {
            write_in(&src, k, &png(i as u32, 300));
        }
    })
    .join()
    .unwrap();
    until("a few hundred uploads", Duration::from_secs(60), || {
        env.upload_posts() >= 300
    })
    .await;
    assert_eq!(d.stop().await, 0, "a stop mid-burst is still a clean exit");
    let at_stop = env.inspect().images.len();
    assert!(
        at_stop < keys.len(),
        "the burst was over before the stop ({at_stop} images)"
    );

    // Added while the daemon was down: the start-up scan catches up.
    for i in 0..50 {
        let k = format!("while-down/g{i}.png");
        env.write(&k, &png(10_000 + i, 300));
        keys.push(k);
    }
    let d = Daemon::start(&env, &["--settle", "0.2"]).await;
    until("every file uploaded", Duration::from_secs(120), || {
        env.inspect().images.len() >= keys.len()
    })
    .await;
    until("every file recorded", Duration::from_secs(30), || {
        env.ledger_rows()
            .values()
            .filter(|r| r.state == cfimg::ledger::State::Uploaded)
            .count()
            == keys.len()
    })
    .await;
    assert_eq!(d.stop().await, 0);
    env.assert_exactly_once(&keys).await;
}
