//! Stage 3: the upload workers, and the removal of items that left their source.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::run::Run;
use super::sink::{Sink, Upload};
use crate::error::{Disposition, Result};
use crate::progress::Stats;
use crate::quota::Gate;
use crate::remove::{self, Removal};
use crate::upload::{Ended, Queued};

/// Stage 3: N workers taking jobs from one queue. After the first stop signal no queued
/// job starts (an intent recorded ahead of them is withdrawn); past the grace period
/// in-flight ones are abandoned (their intents stay recorded and the next run resolves
/// them).
pub(super) fn start(
    run: &Run,
    up: &Arc<Upload>,
    jobs: async_channel::Receiver<Queued>,
    concurrency: usize,
    gate: Option<Arc<Gate>>,
) -> Vec<JoinHandle<Result<()>>> {
    (0..concurrency)
        .map(|_| {
            let up = up.clone();
            let jobs = jobs.clone();
            let run = run.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                loop {
                    let job = tokio::select! {
                        biased;
                        _ = run.shutdown.intake.cancelled() => None,
                        job = jobs.recv() => job.ok(),
                    };
                    let Some(job) = job else { break };
                    if run.shutdown.intake.is_cancelled() {
                        withdraw(&run, &up, job).await;
                        break;
                    }
                    if let Some(gate) = &gate {
                        let passed = tokio::select! {
                            passed = gate.wait(&up.lane) => passed,
                            _ = run.shutdown.intake.cancelled() => Ok(()),
                        };
                        if let Err(e) = passed {
                            run.stop(e);
                        }
                        if run.shutdown.intake.is_cancelled() {
                            withdraw(&run, &up, job).await;
                            break;
                        }
                    }
                    tokio::select! {
                        ended = up.uploader.run(job) => if let Ended::Fatal(e) = ended { run.stop(e); break },
                        _ = run.shutdown.work.cancelled() => break,
                    }
                }
                Ok(())
            })
        })
        .collect()
}

/// A job taken but not started (the run is stopping): an intent recorded ahead of the
/// workers is withdrawn, so the stop leaves the item as it was.
pub(super) async fn withdraw(run: &Run, up: &Upload, queued: Queued) {
    if let Some(intent) = queued.intent
        && let Err(e) = up
            .uploader
            .withdraw(
                (queued.job.version.source_id, queued.job.version.key),
                queued.job.stamp.source,
                intent,
            )
            .await
    {
        run.stop(e);
    }
}

/// Stage 3b: items that left their source (a watched folder's deleted files, when deletes
/// are propagated): their image is deleted unless another item holds it, and the row
/// becomes a tombstone. One at a time: deletes are rare and the cap already limits them.
pub(super) async fn remove_stage(run: Run, mut gone: mpsc::Receiver<Removal>) -> Result<()> {
    while let Some(removal) = gone.recv().await {
        if run.shutdown.intake.is_cancelled() {
            break;
        }
        let Sink::Upload(u) = &run.sink else {
            tracing::info!(key = %removal.version.key, "would remove");
            continue;
        };
        tokio::select! {
            done = remove::remove(&u.lane, &u.reader, &u.writer, removal) => match done {
                Ok(true) => Stats::bump(&run.stats.removed),
                Ok(false) => {}
                Err(e) if e.disposition() == Disposition::Fatal => {
                    run.stop(e);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "the image of a removed file was not deleted; the next pass tries again"),
            },
            _ = run.shutdown.work.cancelled() => break,
        }
    }
    Ok(())
}
