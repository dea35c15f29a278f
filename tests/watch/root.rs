//! The watched folder itself: deleted and recreated, moved away and back, swapped for a
//! symbolic link. The daemon says it is gone (log, `/healthz`, metrics), never turns that
//! into deletes, and watches the folder again within seconds when it is back.

use std::time::Duration;

use super::{Daemon, row, until, uploaded_as};
use crate::common::{TestEnv, png};

const WAIT: Duration = Duration::from_secs(30);
/// Far longer than any wait in these tests: what happens comes from the watch, never the
/// periodic rescan.
const HOURLY: &str = "3600";

/// The metrics endpoint's address, from the daemon's log.
pub fn metrics_addr(d: &Daemon) -> String {
    let log = d.log_text();
    log.split("addr=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string()
}

/// GET `path` on the metrics endpoint: status and body.
pub async fn get(addr: &str, path: &str) -> (u16, String) {
    let r = reqwest::get(format!("http://{addr}{path}")).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// One figure of the metrics text (-1 when absent).
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(-1.0)
}

/// Polls `/healthz` until its status is `want`; returns the body.
async fn health_turns(addr: &str, want: u16) -> String {
    tokio::time::timeout(WAIT, async {
        loop {
            let (status, body) = get(addr, "/healthz").await;
            if status == want {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("/healthz did not turn {want} in {WAIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_folder_is_watched_again_within_seconds() {
    let env = TestEnv::new().await;
    let a = env.write("sub/a.png", &png(1, 700));
    let d = Daemon::start(
        &env,
        &["--metrics-addr", "127.0.0.1:0", "--rescan-interval", HOURLY],
    )
    .await;
    until("a.png uploaded", WAIT, || {
        uploaded_as(&env, "sub/a.png", &a)
    })
    .await;
    let addr = metrics_addr(&d);
    assert_eq!(get(&addr, "/healthz").await.0, 200);

    std::fs::remove_dir_all(&env.src).unwrap();
    let why = health_turns(&addr, 503).await;
    assert!(why.contains("watched folder is gone"), "{why}");
    let (_, text) = get(&addr, "/metrics").await;
    assert_eq!(metric(&text, "cfimg_folder_missing"), 1.0, "{text}");
    assert_eq!(metric(&text, "cfimg_healthy"), 0.0, "{text}");
    d.wait_log("the watched folder is gone", WAIT).await;

    // Recreated: a new file in it (and in a new subfolder) goes within seconds.
    std::fs::create_dir(&env.src).unwrap();
    d.wait_log("the watched folder is back", WAIT).await;
    let b = env.write("b.png", &png(2, 700));
    let c = env.write("new/c.png", &png(3, 700));
    until("b.png uploaded after the folder came back", WAIT, || {
        uploaded_as(&env, "b.png", &b)
    })
    .await;
    until("new/c.png uploaded", WAIT, || {
        uploaded_as(&env, "new/c.png", &c)
    })
    .await;
    health_turns(&addr, 200).await;
    let (_, text) = get(&addr, "/metrics").await;
    assert_eq!(metric(&text, "cfimg_folder_missing"), 0.0, "{text}");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_swapped_for_a_symlink_to_a_folder_is_followed() {
    let env = TestEnv::new().await;
    let a = env.write("a.png", &png(1, 700));
    let d = Daemon::start(&env, &["--rescan-interval", HOURLY]).await;
    until("a.png uploaded", WAIT, || uploaded_as(&env, "a.png", &a)).await;

    let elsewhere = env.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let there = png(2, 700);
    std::fs::write(elsewhere.join("there.png"), &there).unwrap();
    std::fs::rename(&env.src, env.dir.path().join("src.old")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &env.src).unwrap();

    // Logged, rescanned: what the linked folder holds goes under the same keys' rules.
    until("the swap logged", WAIT, || {
        let log = d.log_text();
        (log.contains("the watched folder is back") || log.contains("was replaced"))
            && log.contains("symlink=true")
    })
    .await;
    until("there.png uploaded", WAIT, || {
        uploaded_as(&env, "there.png", &env.src.join("there.png"))
    })
    .await;
    // And it is watched: a file written into the link's target goes within seconds.
    let later = png(3, 700);
    std::fs::write(elsewhere.join("later.png"), &later).unwrap();
    until("later.png uploaded", WAIT, || {
        uploaded_as(&env, "later.png", &env.src.join("later.png"))
    })
    .await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_folder_never_turns_into_deletes() {
    let env = TestEnv::new().await;
    let keys: Vec<String> = (0..3).map(|i| format!("f{i}.png")).collect();
    env.write_pngs(&keys, 700);
    let d = Daemon::start(
        &env,
        &[
            "--on-delete",
            "delete",
            // A cap that would allow every delete: only the watch itself protects them.
            "--max-delete",
            "100",
            "--metrics-addr",
            "127.0.0.1:0",
            "--rescan-interval",
            HOURLY,
        ],
    )
    .await;
    until("all uploaded", WAIT, || {
        keys.iter().all(|k| uploaded_as(&env, k, &env.src.join(k)))
    })
    .await;
    let addr = metrics_addr(&d);

    std::fs::remove_dir_all(&env.src).unwrap();
    health_turns(&addr, 503).await;
    std::fs::create_dir(&env.src).unwrap();
    health_turns(&addr, 200).await;
    // A file after the folder came back proves the daemon went past every event of the
    // removal (and past the settle time the deletes would have waited).
    let after = env.write("after.png", &png(9, 700));
    until("after.png uploaded", WAIT, || {
        uploaded_as(&env, "after.png", &after)
    })
    .await;
    assert_eq!(
        env.inspect().images.len(),
        4,
        "the removal of the folder deleted images"
    );
    for k in &keys {
        assert!(row(&env, k).is_some(), "{k}'s record was removed");
    }
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_deletes_are_looked_at_again_after_a_reload() {
    use nix::sys::signal::Signal;
    let env = TestEnv::new().await;
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    std::fs::write(
        &env.config,
        format!("{cfg}\n[watch]\non_delete = \"delete\"\nmax_delete = \"1\"\n"),
    )
    .unwrap();
    let keys: Vec<String> = (0..4).map(|i| format!("f{i}.png")).collect();
    env.write_pngs(&keys, 700);
    let d = Daemon::start(&env, &["--rescan-interval", HOURLY]).await;
    until("all uploaded", WAIT, || {
        keys.iter().all(|k| uploaded_as(&env, k, &env.src.join(k)))
    })
    .await;
    for k in &keys[..3] {
        std::fs::remove_file(env.src.join(k)).unwrap();
    }
    d.wait_log("REFUSED to delete", WAIT).await;
    assert_eq!(env.inspect().images.len(), 4);

    // Exactly what the message says: raise the cap and reload.
    std::fs::write(
        &env.config,
        format!("{cfg}\n[watch]\non_delete = \"delete\"\nmax_delete = \"10\"\n"),
    )
    .unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log("watch.max_delete: 1 -> 10", WAIT).await;
    until("the refused deletes done after the reload", WAIT, || {
        env.inspect().images.len() == 1
    })
    .await;
    // The image goes first, then the ledger records it.
    until("their rows removed", WAIT, || {
        keys[..3].iter().all(|k| row(&env, k).is_none())
    })
    .await;
    assert!(uploaded_as(&env, &keys[3], &env.src.join(&keys[3])));
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_inotify_the_periodic_check_notices_the_folder_going_and_coming_back() {
    let env = TestEnv::new().await;
    let d = Daemon::start_with(
        &env,
        &["--metrics-addr", "127.0.0.1:0", "--rescan-interval", HOURLY],
        &[("CFIMG_ASSUME_NETWORK_FS", "1")],
    )
    .await;
    d.wait_log("network file system", WAIT).await;
    let addr = metrics_addr(&d);
    std::fs::remove_dir_all(&env.src).unwrap();
    let why = health_turns(&addr, 503).await;
    assert!(why.contains("deleted or moved away"), "{why}");
    // A folder moved into place, with a file in it: the scan of its return uploads it.
    let incoming = env.dir.path().join("incoming");
    std::fs::create_dir(&incoming).unwrap();
    std::fs::write(incoming.join("b.png"), png(2, 700)).unwrap();
    std::fs::rename(&incoming, &env.src).unwrap();
    health_turns(&addr, 200).await;
    until("b.png uploaded", WAIT, || {
        uploaded_as(&env, "b.png", &env.src.join("b.png"))
    })
    .await;
    assert_eq!(d.stop().await, 0);
}
