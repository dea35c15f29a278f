//! Where a run's decisions go: nowhere (a dry run plans only), or the API and the ledger.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::run::Run;
use crate::error::Disposition;
use crate::ledger::{LedgerWriter, SharedReader};
use crate::recheck;
use crate::transport::ApiLane;
use crate::upload::Uploader;

/// Where a run's decisions go.
#[derive(Clone)]
pub(super) enum Sink {
    /// Plan only: no API writes, no ledger writes.
    Dry,
    /// Upload through the API and record in the ledger.
    Upload(Arc<Upload>),
}

/// What uploading needs beyond planning.
pub(super) struct Upload {
    /// The account's API lane (lookups, deletes, the quota gate).
    pub lane: ApiLane,
    /// Where intents and outcomes go.
    pub writer: LedgerWriter,
    /// For checking whether another item shares an image.
    pub reader: Arc<SharedReader>,
    /// Runs one job, exactly once.
    pub uploader: Arc<Uploader>,
    /// This run's row in the ledger.
    pub run_id: i64,
    /// How long lists may lag behind uploads.
    pub list_lag: Duration,
}

impl Upload {
    /// The second look after ambiguous answers (see `recheck.rs`), counted. A fatal error
    /// stops the run (returns false); any other is logged, ending with `later` (when it is
    /// tried again).
    pub async fn recheck(&self, run: &Run, later: &str) -> bool {
        let done = recheck::recheck(
            &self.lane,
            &self.reader,
            &self.writer,
            run.source_id,
            self.list_lag,
            &run.shutdown.intake,
        )
        .await;
        match done {
            Ok(done) => {
                run.stats
                    .duplicates_deleted
                    .fetch_add(done.deleted, Ordering::Relaxed);
            }
            Err(e) if e.disposition() == Disposition::Fatal => {
                run.stop(e);
                return false;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the duplicate check after ambiguous answers failed; {later}")
            }
        }
        true
    }
}
