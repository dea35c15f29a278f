//! What every stage of a run shares.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use super::sink::{Sink, Upload};
use crate::error::{Disposition, Error, Result};
use crate::item::SourceId;
use crate::ledger::{Failure, LedgerWriter, SharedReader, Version};
use crate::outcome::{Failed, Outcome};
use crate::progress::Stats;
use crate::recheck;
use crate::shard::Shard;
use crate::shutdown::Shutdown;
use crate::transport::Traffic;

/// What every stage shares: counters, where decisions go, the stop tokens and the first
/// fatal error.
#[derive(Clone)]
pub(super) struct Run {
    /// The run's counters (a daemon's are its command's, for the metrics endpoint).
    pub stats: Arc<Stats>,
    /// Where decisions go: nowhere (dry run), or the API and the ledger.
    pub sink: Sink,
    /// A view of the ledger for planning, when there is a ledger.
    pub reader: Option<Arc<SharedReader>>,
    /// Requests and 429s of the run's transports.
    pub traffic: Traffic,
    /// The stop tokens.
    pub shutdown: Arc<Shutdown>,
    /// The first fatal error: set by [`Run::stop`], taken by [`Run::take_fatal`].
    pub fatal: Arc<Mutex<Option<Error>>>,
    /// The source's number in the ledger (-1: none yet, in a dry run).
    pub source_id: i64,
    /// The source.
    pub source: SourceId,
    /// Only this shard's items.
    pub shard: Option<Shard>,
    /// A run that never ends by itself (`watch`), decided once here: it follows content
    /// across renames and logs every upload (a daemon's log is its record).
    pub daemon: bool,
}

impl Run {
    /// The second look after ambiguous answers (see `recheck.rs`), counted. A fatal error
    /// stops the run (returns false); any other is logged, ending with `later` (when it is
    /// tried again).
    pub async fn recheck(&self, up: &Upload, later: &str) -> bool {
        let done = recheck::recheck(
            &up.lane,
            &up.reader,
            &up.writer,
            self.source_id,
            up.list_lag,
            &self.shutdown.intake,
        )
        .await;
        match done {
            Ok(done) => {
                self.stats
                    .duplicates_deleted
                    .fetch_add(done.deleted, Ordering::Relaxed);
            }
            Err(e) if e.disposition() == Disposition::Fatal => {
                self.stop(e);
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the duplicate check after ambiguous answers failed; {later}")
            }
        }
        true
    }

    /// The ledger writer, unless this is a dry run.
    pub fn writer(&self) -> Option<&LedgerWriter> {
        match &self.sink {
            Sink::Dry => None,
            Sink::Upload(up) => Some(&up.writer),
        }
    }

    /// Stops the run for an error nothing else can get past.
    pub fn stop(&self, e: Error) {
        // Every worker in flight may meet the same refusal (a full quota, a revoked token):
        // the reason is printed once, by the command, when the run has ended.
        tracing::debug!(error = %e, "stopping the run");
        if let Ok(mut slot) = self.fatal.lock()
            && slot.is_none()
        {
            tracing::warn!(
                "stopping the run: no new uploads; the reason is printed once those in flight are recorded"
            );
            *slot = Some(e);
        }
        self.shutdown.intake.cancel();
        self.shutdown.work.cancel();
    }

    /// The fatal error that stopped the run, if any.
    pub fn take_fatal(&self) -> Option<Error> {
        self.fatal.lock().ok().and_then(|mut f| f.take())
    }

    /// Waits for a stage; a panic or an error in it stops the run.
    pub async fn join(&self, stage: &str, task: JoinHandle<Result<()>>) {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.stop(e),
            Err(e) if e.is_panic() => self.stop(Error::Panicked(format!("the {stage} stage"))),
            Err(_) => {}
        }
    }

    /// A version of this source known only by its key.
    pub fn version(&self, key: String) -> Version {
        Version {
            source_id: self.source_id,
            key,
            size: 0,
            mtime_ns: 0,
            etag: None,
            options: None,
            sha256: None,
            ticket: Default::default(),
        }
    }

    /// Counts, logs and records the end of an item decided without a request. What it
    /// stores is not logged one by one: a daemon's workers log their uploads, the plan's
    /// own decisions (unchanged, deduplicated by content) are counted.
    pub async fn end(&self, outcome: Outcome) -> Result<()> {
        match (outcome.end(&self.stats, &self.source, false), self.writer()) {
            (Some(record), Some(w)) => w.record(record).await,
            _ => Ok(()),
        }
    }

    /// [`Run::end`] from a blocking thread.
    pub fn end_blocking(&self, outcome: Outcome) -> Result<()> {
        match (outcome.end(&self.stats, &self.source, false), self.writer()) {
            (Some(record), Some(w)) => w.record_blocking(record),
            _ => Ok(()),
        }
    }

    /// Counts and records an item refused before any request.
    pub async fn reject(&self, version: Version, reason: String, failure: Failure) -> Result<()> {
        let failed = Failed::before_sending(version, reason, failure);
        self.end(Outcome::Failed(failed)).await
    }

    /// [`Run::reject`] from a blocking thread.
    pub fn reject_blocking(
        &self,
        version: Version,
        reason: String,
        failure: Failure,
    ) -> Result<()> {
        let failed = Failed::before_sending(version, reason, failure);
        self.end_blocking(Outcome::Failed(failed))
    }
}
