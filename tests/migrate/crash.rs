//! Exactly once across kill -9 and Ctrl-C: whatever point a run dies at, reruns end with
//! every file uploaded once, in every id mode.

use std::time::Duration;

use cfimg::emulator::Faults;

use crate::common::{TestEnv, text};

const FILES: usize = 30;

fn setup_files(env: &TestEnv) -> Vec<String> {
    let keys: Vec<String> = (0..FILES).map(|i| format!("d{}/f{i}.png", i % 4)).collect();
    env.write_pngs(&keys, 2000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_runs_end_with_every_file_uploaded_exactly_once() {
    for (seed, mode) in [(11u64, "path"), (12, "hash"), (13, "auto")] {
        // Latency keeps requests in flight when the kill lands; drops after store make
        // ambiguous attempts that the rerun must resolve by stamp.
        let faults = Faults {
            seed,
            p_latency: 1.0,
            latency_ms: 15,
            p_drop_after_store: 0.1,
            p_store_then_500: 0.1,
            ..Faults::default()
        };
        let env = TestEnv::with_faults(faults, "max_attempts = 30").await;
        let keys = setup_files(&env);
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut kills = 0;
        for round in 0..6 {
            let mut child = env
                .cmd(&["migrate", env.src.to_str().unwrap(), "--id-mode", mode])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            // Kill after a random number of further upload requests reached the server.
            let target = env.upload_posts() + rng.u64(1..8);
            let reached = tokio::time::timeout(Duration::from_secs(30), async {
                loop {
                    if env.upload_posts() >= target {
                        return true;
                    }
                    if let Ok(Some(_)) = child.try_wait() {
                        return false;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await
            .unwrap_or(false);
            if !reached {
                let _ = child.wait().await;
                break;
            }
            child.start_kill().unwrap();
            let status = child.wait().await.unwrap();
            assert_eq!(
                status.code(),
                None,
                "{mode} round {round}: killed by a signal"
            );
            kills += 1;
        }
        assert!(kills >= 3, "{mode}: only {kills} runs were killed mid-way");
        let (code, summary, out) = env.migrate(&["--id-mode", mode]).await;
        assert_eq!(code, 0, "{mode}: {}", text(&out));
        assert_eq!(summary["failed"], 0);
        env.assert_exactly_once(&keys).await;
        // And one more run has nothing left to do.
        let posts = env.upload_posts();
        let (code, summary, _) = env.migrate(&["--id-mode", mode]).await;
        assert_eq!(
            (code, summary["skipped"].as_u64()),
            (0, Some(FILES as u64)),
            "{mode}: {summary}"
        );
        assert_eq!(env.upload_posts(), posts);
    }
}

/// Runs a migration of the files, sends it SIGINT once `posts` uploads were sent, and
/// checks the stop: exit 130, "interrupted", and a ledger holding exactly the uploads the
/// summary counts, every one finished (nothing half-done). Returns that count.
async fn ctrl_c_after(env: &TestEnv, posts: u64) -> u64 {
    let child = env
        .cmd(&["migrate", env.src.to_str().unwrap(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    env.wait_for(Duration::from_secs(30), |e| e.upload_posts() >= posts)
        .await;
    let kill = std::process::Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", text(&out));
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["outcome"], "interrupted");
    let uploaded = summary["uploaded"].as_u64().unwrap();
    assert!(uploaded < FILES as u64, "{summary}");
    let rows = env.ledger_rows();
    assert!(
        rows.values()
            .all(|r| r.state == cfimg::ledger::State::Uploaded),
        "{rows:?}"
    );
    assert_eq!(rows.len() as u64, uploaded, "{rows:?}");
    uploaded
}

/// The rerun after a stop that left `uploaded` done uploads the rest, each file once.
async fn rerun_finishes(env: &TestEnv, keys: &[String], uploaded: u64) {
    let (code, summary, out) = env.migrate(&[]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(
        summary["uploaded"].as_u64().unwrap() + uploaded,
        FILES as u64
    );
    env.assert_exactly_once(keys).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_stops_intake_finishes_in_flight_uploads_and_exits_130() {
    let faults = Faults {
        seed: 5,
        p_latency: 1.0,
        latency_ms: 40,
        ..Faults::default()
    };
    let env = TestEnv::with_faults(faults, "concurrency = 2").await;
    let keys = setup_files(&env);
    // In-flight uploads finish and are recorded.
    let uploaded = ctrl_c_after(&env, 3).await;
    assert!(uploaded >= 1);
    rerun_finishes(&env, &keys, uploaded).await;
}

/// A paced run records the intents of queued uploads ahead of the workers (to share
/// commits); a Ctrl-C leaves those jobs unstarted, and their intents are withdrawn: the
/// ledger holds exactly the finished uploads, nothing half-done, and the rerun uploads the
/// rest once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_withdraws_the_intents_of_queued_uploads() {
    // Four workers at 20 uploads/s: the queue's jobs wait long enough for their intents
    // to be recorded ahead of the workers.
    let env = TestEnv::with_faults(Faults::default(), "rate = 20\nconcurrency = 4").await;
    let keys = setup_files(&env);
    let uploaded = ctrl_c_after(&env, 6).await;
    assert!(uploaded >= 6);
    rerun_finishes(&env, &keys, uploaded).await;
}

/// Issue 6: a kill while a changed file's upload was stored but not recorded, then another
/// change: the stored image of the killed run is found by its stamp and deleted, never
/// orphaned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_then_a_change_in_auto_mode_leaves_no_orphan() {
    let env = TestEnv::new().await;
    env.write("a.png", &crate::common::png(1, 3000));
    let (code, _, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    env.write("a.png", &crate::common::png(2, 3000));
    // The new version is stored, the connection drops, and every answer is slow: the kill
    // lands while the run is still looking for what it stored.
    env.emu.set_faults(Faults {
        seed: 1,
        p_latency: 1.0,
        latency_ms: 3000,
        p_drop_after_store: 1.0,
        ..Faults::default()
    });
    let mut child = env
        .cmd(&["migrate", env.src.to_str().unwrap(), "--id-mode", "auto"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    env.wait_for(Duration::from_secs(30), |e| e.requests_with_status(0) >= 1)
        .await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert_eq!(
        env.inspect().images.len(),
        2,
        "the killed run stored its version"
    );
    env.emu.set_faults(Faults::default());
    env.write("a.png", &crate::common::png(3, 3000));
    let (code, summary, out) = env.migrate(&["--id-mode", "auto"]).await;
    assert_eq!(code, 0, "{}", text(&out));
    assert_eq!(summary["uploaded"], 1, "{summary}");
    env.assert_exactly_once(&["a.png"]).await;
}
