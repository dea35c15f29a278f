//! Stopping cleanly: the first SIGINT/SIGTERM stops intake (no new items start), in-flight
//! uploads get a grace period to finish and be recorded, and then the rest is cancelled.
//! A second signal quits at once; the ledger's recorded intents let the next run resolve
//! whatever was in flight.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Exit status of a run stopped by a signal (128 + SIGINT).
pub const INTERRUPTED_EXIT: i32 = crate::error::EXIT_INTERRUPTED;

/// The two stop levels of a run.
#[derive(Debug, Default)]
pub struct Shutdown {
    /// Cancelled on the first signal: take no new items.
    pub intake: CancellationToken,
    /// Cancelled when the grace period ends: abandon in-flight requests.
    pub work: CancellationToken,
    interrupted: AtomicBool,
}

impl Shutdown {
    /// A new, untriggered shutdown.
    pub fn new() -> Arc<Shutdown> {
        Arc::new(Shutdown::default())
    }

    /// Whether a stop was asked for.
    pub fn interrupted(&self) -> bool {
        self.interrupted.load(Ordering::Relaxed)
    }

    /// Stops intake now and abandons in-flight work after `grace`.
    pub fn trigger(self: &Arc<Self>, grace: Duration) {
        self.interrupted.store(true, Ordering::Relaxed);
        self.intake.cancel();
        let me = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(grace) => me.work.cancel(),
                _ = me.work.cancelled() => {}
            }
        });
    }

    /// Listens for SIGINT and SIGTERM for the rest of the process.
    pub fn listen(self: &Arc<Self>, grace: Duration) {
        let me = self.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::warn!(
                grace_secs = grace.as_secs_f64(),
                "stopping: no new uploads; in-flight ones may finish (signal again to quit now)"
            );
            me.trigger(grace);
            wait_for_signal().await;
            eprintln!("cfimg: quitting now; the next run resumes from the ledger");
            std::process::exit(INTERRUPTED_EXIT);
        });
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn trigger_stops_intake_at_once_and_work_after_the_grace() {
        let s = Shutdown::new();
        s.trigger(Duration::from_secs(5));
        assert!(s.intake.is_cancelled() && s.interrupted());
        assert!(!s.work.is_cancelled());
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(s.work.is_cancelled());
    }
}
