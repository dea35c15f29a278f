//! The service manager's side of a daemon: systemd's notify protocol (READY once the
//! start-up scan is queued, STATUS lines with counts, RELOADING and STOPPING, and WATCHDOG
//! pings that stop when the watch loop stops turning). Without `NOTIFY_SOCKET` every call
//! is a no-op, so the same binary runs under systemd, in a container or in a terminal.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::progress::Stats;
use crate::source::watch::WatchStatus;

/// Tells the service manager something; a failure to reach it is logged, never fatal.
fn tell(state: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::debug!(error = %e, "the service manager's notify socket did not take a message");
    }
}

/// The daemon is ready (the start-up scan is queued).
pub fn ready(status: &str) {
    tell(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A configuration reload starts (systemd waits for the next READY).
pub fn reloading() {
    let now = sd_notify::NotifyState::monotonic_usec_now();
    match now {
        Ok(now) => tell(&[NotifyState::Reloading, now]),
        Err(_) => tell(&[NotifyState::Reloading]),
    }
}

/// The daemon is stopping.
pub fn stopping() {
    tell(&[
        NotifyState::Stopping,
        NotifyState::Status("stopping: finishing in-flight uploads"),
    ]);
}

/// A status line: what the daemon is doing, with its counts.
pub fn status_line(stats: &Stats, watch: &WatchStatus) -> String {
    let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    format!(
        "{}{} uploaded, {} failed, {} rejected, {} removed; {} settling, {} in flight{}",
        watch
            .folder_missing()
            .map_or_else(String::new, |why| format!("FOLDER GONE ({why}); ")),
        get(&stats.uploaded),
        get(&stats.failed),
        get(&stats.rejected),
        get(&stats.removed),
        get(&watch.settling),
        get(&watch.in_flight),
        if watch.polling.load(Ordering::Relaxed) {
            "; polling (no inotify)"
        } else {
            ""
        }
    )
}

/// Sends READY once the start-up scan is queued, then STATUS every few seconds and WATCHDOG
/// pings at half the watchdog interval, as long as the watch loop's heartbeat is fresh.
pub async fn run(stats: Arc<Stats>, watch: Arc<WatchStatus>, stop: CancellationToken) {
    tokio::select! {
        _ = watch.ready.cancelled() => {}
        _ = stop.cancelled() => return,
    }
    ready(&status_line(&stats, &watch));
    tracing::info!("ready: the start-up scan is queued");
    let watchdog = sd_notify::watchdog_enabled();
    let every = watchdog.map_or(Duration::from_secs(5), |w| {
        (w / 2).min(Duration::from_secs(5))
    });
    let mut tick = tokio::time::interval(every);
    let mut last_status = String::new();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let line = status_line(&stats, &watch);
        if line != last_status {
            tell(&[NotifyState::Status(&line)]);
            last_status = line;
        }
        if let Some(limit) = watchdog {
            // A stuck loop must not be kept alive by this task: no fresh beat, no ping.
            if watch.since_heartbeat() < limit / 2 {
                tell(&[NotifyState::Watchdog]);
            } else {
                tracing::error!(
                    "the watch loop has not turned for {}: not pinging the watchdog",
                    humantime::format_duration(Duration::from_secs(
                        watch.since_heartbeat().as_secs()
                    ))
                );
            }
        }
    }
}
