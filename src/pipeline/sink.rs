//! Where a run's decisions go: nowhere (a dry run plans only), or the API and the ledger.

use std::sync::Arc;
use std::time::Duration;

use crate::ledger::{LedgerWriter, SharedReader};
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
