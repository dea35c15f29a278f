//! A long-lived run's upkeep: the recheck after ambiguous answers, the counters saved for
//! `status`, and pruning.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Live;
use super::run::Run;
use super::sink::Upload;
use crate::error::Result;
use crate::ledger::Record;

/// Every `upkeep_every` until intake stops: prunes (at most hourly), saves the counters,
/// and looks for duplicates of ambiguous uploads.
pub(super) async fn upkeep(run: Run, live: Live, up: Arc<Upload>) -> Result<()> {
    let mut tick = tokio::time::interval(live.upkeep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = run.shutdown.intake.cancelled() => return Ok(()),
        }
        if pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            let before = chrono::Utc::now()
                - chrono::TimeDelta::from_std(live.keep_tombstones).unwrap_or_default();
            up.writer
                .record(Record::Prune {
                    before: crate::ledger::timestamp(before),
                    keep_runs: live.keep_runs,
                })
                .await?;
            pruned = Some(Instant::now());
        }
        up.writer
            .record(Record::RunProgress {
                run_id: up.run_id,
                counts: run.stats.counts(&run.traffic),
            })
            .await?;
        if !run.recheck(&up, "it is tried again later").await {
            return Ok(());
        }
    }
}
