//! Downloads are bounded in time, not only in size (issue 18.7): a trickling origin is cut
//! off by the rate floor with a recorded reason, and a stop signal abandons downloads in
//! flight at once instead of waiting for them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use cfimg::emulator::EmulatorConfig;

use crate::common::origin::Origin;
use crate::common::{TestEnv, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_origin_is_cut_off_by_the_rate_floor_with_a_reason() {
    let env = TestEnv::new().await;
    let origin = Origin::start().await;
    // One byte every 50 ms: 20 B/s, under a floor of 100 bytes per second.
    let url = origin.url("/trickle/50/slow.png");
    let list = env.dir.path().join("urls.txt");
    std::fs::write(&list, format!("{url}\n")).unwrap();
    let started = Instant::now();
    let out = env
        .run(&[
            "migrate",
            "--manifest",
            list.to_str().unwrap(),
            "--url-mode",
            "local",
            "--download-floor-bytes",
            "100",
            "--download-floor-window",
            "1",
            "--json",
        ])
        .await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(took < Duration::from_secs(20), "took {took:?}");
    // Not retried within the run: a trickle is a trickle again at once.
    assert_eq!(origin.hits("/trickle/50/slow.png"), 1);
    let f = env.run(&["failures", "--json"]).await;
    let rows: Value = serde_json::from_slice(&f.stdout).unwrap_or(Value::Null);
    let reason = rows
        .as_array()
        .and_then(|r| r.iter().find(|r| r["key"] == url.as_str()))
        .and_then(|r| r["reason"].as_str())
        .unwrap_or_else(|| panic!("{}", text(&f)))
        .to_string();
    assert!(
        reason.contains("too slow") && reason.contains("under the floor of 100 bytes"),
        "{reason}"
    );
    assert_eq!(env.upload_posts(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_trickling_download_exits_within_the_grace() {
    let env = TestEnv::with(
        EmulatorConfig {
            api_rate_limit: None,
            batch_rate_limit: None,
            ..EmulatorConfig::default()
        },
        "shutdown_grace_secs = 5",
    )
    .await;
    let origin = Origin::start().await;
    // 10 bytes/s keeps above a floor of 1 byte per window: only the stop can end it.
    let path = "/trickle/100/slow.png";
    let list = env.dir.path().join("urls.txt");
    std::fs::write(&list, format!("{}\n", origin.url(path))).unwrap();
    let mut child = env
        .cmd(&[
            "migrate",
            "--manifest",
            list.to_str().unwrap(),
            "--url-mode",
            "local",
            "--download-floor-bytes",
            "1",
            "--download-deadline",
            "600",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while origin.hits(path) == 0 {
        assert!(Instant::now() < until, "the download never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = Pid::from_raw(child.id().expect("pid") as i32);
    let signalled = Instant::now();
    kill(pid, Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits within the 5 s grace")
        .unwrap();
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130));
}
