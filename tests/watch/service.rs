//! The daemon's service side: systemd's notify protocol on a fake socket, SIGHUP reloads,
//! metrics and health, JSON logs, and the fallbacks when inotify cannot do the job.

use std::time::Duration;

use cfimg::emulator::Faults;
use nix::sys::signal::Signal;

use super::{Daemon, until, uploaded_as};
use crate::common::{TestEnv, png};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speaks_the_notify_protocol_and_reloads_on_sighup() {
    let env = TestEnv::new().await;
    let mut d = Daemon::start_with(&env, &[], &[("WATCHDOG_USEC", "1000000")]).await;
    d.wait_notify("WATCHDOG=1", WAIT).await;
    let a = env.write("a.png", &png(1, 500));
    until("a.png uploaded", WAIT, || uploaded_as(&env, "a.png", &a)).await;
    let status = d.wait_notify("STATUS=1 uploaded", WAIT).await;
    assert!(status.contains("0 failed"), "{status}");

    // A valid change: applied live where it can be, and named.
    let cfg = std::fs::read_to_string(&env.config).unwrap();
    let changed = cfg.replace("rate = 2000", "rate = 500") + "[watch]\nmax_settle_secs = 30\n";
    std::fs::write(&env.config, &changed).unwrap();
    d.signal(Signal::SIGHUP);
    d.next_notify("RELOADING=1", WAIT).await;
    // systemd holds the reload job until READY comes again.
    d.next_notify("READY=1", WAIT).await;
    d.wait_log("upload.rate: 2000 -> 500", WAIT).await;
    d.wait_log("watch.max_settle_secs: 60s -> 30s", WAIT).await;

    // A broken one: refused, and the daemon goes on with what it had.
    std::fs::write(&env.config, changed.replace("rate = 500", "rate = -1")).unwrap();
    d.signal(Signal::SIGHUP);
    d.wait_log("reload refused", WAIT).await;
    let b = env.write("b.png", &png(2, 500));
    until("b.png uploaded after a refused reload", WAIT, || {
        uploaded_as(&env, "b.png", &b)
    })
    .await;

    d.signal(Signal::SIGTERM);
    d.wait_notify("STOPPING=1", WAIT).await;
    let code = d.child.wait().await.unwrap().code();
    assert_eq!(code, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_health_follow_uploads_and_failures() {
    let env = TestEnv::with_faults(Faults::default(), "max_attempts = 1").await;
    let d = Daemon::start(
        &env,
        &["--metrics-addr", "127.0.0.1:0", "--unhealthy-after", "1"],
    )
    .await;
    let log = d.log_text();
    let addr = log
        .split("addr=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no metrics address in the log:\n{log}"))
        .to_string();
    let get = |path: &'static str| {
        let url = format!("http://{addr}{path}");
        async move {
            let r = reqwest::get(&url).await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let metric = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    let (_, text) = get("/metrics").await;
    assert_eq!(metric(&text, "cfimg_uploads_total"), 0.0, "{text}");
    assert_eq!(get("/healthz").await.0, 200);

    let a = env.write("a.png", &png(1, 500));
    until("a.png uploaded", WAIT, || uploaded_as(&env, "a.png", &a)).await;
    let (_, text) = get("/metrics").await;
    assert_eq!(metric(&text, "cfimg_uploads_total"), 1.0, "{text}");
    assert!(
        metric(&text, "cfimg_last_upload_timestamp_seconds") > 1.7e9,
        "{text}"
    );
    assert!(
        metric(&text, "cfimg_requests_total{host=\"api\"}") >= 2.0,
        "{text}"
    );

    // The service fails every upload: failures count, retries wait, health turns.
    env.emu.set_faults(Faults {
        p_500: 1.0,
        ..Faults::default()
    });
    env.write("b.png", &png(2, 500));
    let turned = tokio::time::timeout(WAIT, async {
        loop {
            let (status, body) = get("/healthz").await;
            if status == 503 {
                return body;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("health turns unhealthy");
    assert!(turned.contains("failing"), "{turned}");
    // The failure's record, which the pending retries are counted from, is committed a
    // moment after the health turns (the writer groups commits): wait for it, not race it.
    let text = tokio::time::timeout(WAIT, async {
        loop {
            let (_, text) = get("/metrics").await;
            if metric(&text, "cfimg_pending_retries") == 1.0 {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the failed upload becomes a pending retry");
    assert!(
        metric(&text, "cfimg_failures_total{reason=\"failed\"}") >= 1.0,
        "{text}"
    );
    assert_eq!(metric(&text, "cfimg_pending_retries"), 1.0, "{text}");
    assert_eq!(metric(&text, "cfimg_healthy"), 0.0, "{text}");
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_have_one_line_per_upload_with_source_and_image() {
    let env = TestEnv::new().await;
    let d = Daemon::start(&env, &["--log-format", "json"]).await;
    let a = env.write("a.png", &png(1, 500));
    until("a.png uploaded", WAIT, || uploaded_as(&env, "a.png", &a)).await;
    d.wait_log("\"uploaded\"", WAIT).await;
    let log = d.log_text();
    assert_eq!(d.stop().await, 0);
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let upload = lines
        .iter()
        .find(|l| l["fields"]["message"] == "uploaded")
        .unwrap_or_else(|| panic!("no upload line in:\n{log}"));
    assert_eq!(upload["fields"]["key"], "a.png", "{upload}");
    assert!(upload["fields"]["image_id"].is_string(), "{upload}");
    assert!(
        upload["fields"]["source"]
            .as_str()
            .is_some_and(|s| s.starts_with("dir:")),
        "{upload}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_periodic_scans_past_the_watch_limit_and_on_network_file_systems() {
    let env = TestEnv::new().await;
    env.write("d1/x.png", &png(1, 500));
    env.write("d2/y.png", &png(2, 500));
    let d = Daemon::start_with(
        &env,
        &["--rescan-interval", "0.5"],
        &[("CFIMG_MAX_USER_WATCHES", "2")],
    )
    .await;
    d.wait_log("too many folders for inotify watches", WAIT)
        .await;
    let z = env.write("d1/z.png", &png(3, 500));
    until("a file found by a periodic scan", WAIT, || {
        uploaded_as(&env, "d1/z.png", &z)
    })
    .await;
    // Several scans later the warning has still been given once: no retry loop.
    until("more rescans", WAIT, || {
        d.log_text().matches("scan finished").count() >= 4
    })
    .await;
    assert_eq!(
        d.log_text().matches("too many folders").count(),
        1,
        "{}",
        d.log_text()
    );
    assert_eq!(d.stop().await, 0);

    let d = Daemon::start_with(
        &env,
        &["--rescan-interval", "0.5"],
        &[("CFIMG_ASSUME_NETWORK_FS", "1")],
    )
    .await;
    d.wait_log("network file system", WAIT).await;
    let w = env.write("d2/w.png", &png(4, 500));
    until("a file found by polling", WAIT, || {
        uploaded_as(&env, "d2/w.png", &w)
    })
    .await;
    assert_eq!(d.stop().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_comes_from_the_systemd_credentials_directory() {
    let env = TestEnv::new().await;
    let creds = env.dir.path().join("credentials");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(
        creds.join("api_token"),
        format!("{}\n", crate::common::TOKEN),
    )
    .unwrap();
    let out = env
        .cmd(&["validate"])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", crate::common::text(&out));
    // Without it, the missing token is named.
    let out = env
        .cmd(&["validate"])
        .env_remove("CLOUDFLARE_API_TOKEN")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", crate::common::text(&out));
}
