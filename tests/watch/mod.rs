//! `cfimg watch` as a child process against the in-process emulator: files created,
//! changed, renamed and deleted while it runs; bursts, stops and restarts; and its service
//! side (the systemd notify protocol on a fake socket, SIGHUP, metrics, logs).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::net::UnixDatagram;

use crate::common::TestEnv;

mod burst;
mod files;
mod partial;
mod root;
mod service;

/// A running `cfimg watch`, with the datagram socket it reports to as its NOTIFY_SOCKET.
pub struct Daemon {
    pub child: tokio::process::Child,
    pub log: PathBuf,
    notify: UnixDatagram,
    /// Every notify message received so far.
    pub messages: Vec<String>,
}

static DAEMONS: AtomicUsize = AtomicUsize::new(0);

impl Daemon {
    /// Starts `cfimg watch <src> --settle 0.3 <extra>` and waits for READY=1.
    pub async fn start(env: &TestEnv, extra: &[&str]) -> Daemon {
        Daemon::start_with(env, extra, &[]).await
    }

    /// Starts it with extra environment variables.
    pub async fn start_with(env: &TestEnv, extra: &[&str], vars: &[(&str, &str)]) -> Daemon {
        let n = DAEMONS.fetch_add(1, Ordering::Relaxed);
        let socket = env.dir.path().join(format!("notify-{n}.sock"));
        let notify = UnixDatagram::bind(&socket).expect("notify socket");
        let log = env.dir.path().join(format!("watch-{n}.log"));
        let src = env.src.to_str().expect("utf-8 path").to_string();
        let mut args = vec!["watch", src.as_str()];
        if !extra.contains(&"--settle") {
            args.extend_from_slice(&["--settle", "0.3"]);
        }
        args.extend_from_slice(extra);
        let mut cmd = env.cmd(&args);
        cmd.env("NOTIFY_SOCKET", &socket)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"));
        for (k, v) in vars {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("cfimg watch starts");
        let mut d = Daemon {
            child,
            log,
            notify,
            messages: Vec::new(),
        };
        d.wait_notify("READY=1", Duration::from_secs(60)).await;
        d
    }

    /// Waits for a notify message containing `what`; returns it.
    pub async fn wait_notify(&mut self, what: &str, limit: Duration) -> String {
        if let Some(m) = self.messages.iter().find(|m| m.contains(what)) {
            return m.clone();
        }
        self.next_notify(what, limit).await
    }

    /// Waits for a message containing `what` among those not received yet.
    pub async fn next_notify(&mut self, what: &str, limit: Duration) -> String {
        let deadline = tokio::time::Instant::now() + limit;
        let mut buf = vec![0u8; 4096];
        loop {
            let got = tokio::time::timeout_at(deadline, self.notify.recv(&mut buf)).await;
            let Ok(Ok(n)) = got else {
                panic!(
                    "no {what:?} from the daemon in {limit:?}; got {:?}\nlog:\n{}",
                    self.messages,
                    self.log_text()
                );
            };
            let m = String::from_utf8_lossy(&buf[..n]).to_string();
            self.messages.push(m.clone());
            if m.contains(what) {
                return m;
            }
        }
    }

    /// Sends a signal.
    pub fn signal(&self, sig: Signal) {
        let pid = self.child.id().expect("running daemon") as i32;
        kill(Pid::from_raw(pid), sig).expect("signal sent");
    }

    /// SIGTERM, then the exit code.
    pub async fn stop(mut self) -> i32 {
        self.signal(Signal::SIGTERM);
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the daemon stops within its grace period")
            .expect("wait");
        status.code().unwrap_or(-1)
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `what`.
    pub async fn wait_log(&self, what: &str, limit: Duration) {
        poll(limit, || self.log_text().contains(what))
            .await
            .unwrap_or_else(|| panic!("{what:?} not logged in {limit:?}:\n{}", self.log_text()));
    }
}

/// Polls `cond` every 20 ms until it holds (Some) or `limit` passes (None).
pub async fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> Option<()> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond() {
            return Some(());
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `cond` holds, or fails the test with `what`.
pub async fn until(what: &str, limit: Duration, cond: impl FnMut() -> bool) {
    poll(limit, cond)
        .await
        .unwrap_or_else(|| panic!("{what}: not reached in {limit:?}"));
}

/// The ledger row of a key, if any.
pub fn row(env: &TestEnv, key: &str) -> Option<cfimg::ledger::Row> {
    let l = cfimg::ledger::Ledger::open_read_only(&env.ledger).ok()??;
    l.all_rows().ok()?.into_iter().find(|r| r.key == key)
}

/// Whether the ledger records `key` as uploaded with the content of `path`.
pub fn uploaded_as(env: &TestEnv, key: &str, path: &Path) -> bool {
    let want = crate::common::sha256_file(path);
    row(env, key).is_some_and(|r| {
        r.state == cfimg::ledger::State::Uploaded && r.sha256.as_deref() == Some(want.as_str())
    })
}

/// Whether the emulator holds an image with exactly these bytes.
pub fn stored(env: &TestEnv, bytes: &[u8]) -> bool {
    let want = crate::common::sha256_bytes(bytes);
    env.inspect().images.iter().any(|i| i.sha256 == want)
}

/// One number from the ledger (a test's read-only look at columns no command shows).
pub fn sql(env: &TestEnv, query: &str) -> i64 {
    let conn = rusqlite::Connection::open_with_flags(
        &env.ledger,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("ledger opens");
    conn.query_row(query, [], |r| r.get(0)).unwrap_or(0)
}
