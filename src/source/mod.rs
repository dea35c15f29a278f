//! Sources: where items come from. Every source has an identity ([`SourceId`]: a kind and a
//! canonical location), lists its items lazily into a bounded channel (a listing of millions
//! never sits in memory), and turns one item into an upload [`Body`] when the planner asks.
//! Planning and uploading see only [`Item`] and [`Body`], never which source it came from.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

pub mod bucket;
pub mod manifest;
pub mod walk;
pub mod watch;

// The vocabulary moved to `crate::item` (issue 19); named here too for the stages that
// reach it through `source::`.
pub use crate::item::{
    Body, Fingerprint, Item, ItemOptions, Locator, SourceId, SourceKind, Ticket,
};

/// What a source produces.
#[derive(Debug)]
pub enum Found {
    /// An item to plan.
    Item(Item),
    /// Something that could not be listed or read properly: recorded as rejected.
    Bad {
        /// Key to record it under.
        key: String,
        /// Why.
        reason: String,
    },
    /// An item that left the source and whose image is to go too (a watched folder's
    /// deleted file, when deletes are propagated and the pass is under the cap).
    Gone {
        /// Its key.
        key: String,
        /// Tells the source when the removal is recorded.
        ticket: Ticket,
    },
    /// Something deliberately passed over (a symlink not followed, a FIFO, a socket, a
    /// device): counted and recorded with its reason, never silently.
    Ignored {
        /// Key to record it under.
        key: String,
        /// Why.
        reason: String,
    },
}

/// Every kind of source, behind one interface.
#[derive(Debug)]
pub enum Source {
    /// A folder tree.
    Walk(walk::Walk),
    /// A manifest of URLs.
    Manifest(manifest::Manifest),
    /// An S3-compatible bucket and prefix.
    Bucket(bucket::Bucket),
    /// A folder kept in sync (`watch`): listed until the run stops.
    Watch(Arc<watch::Watch>),
}

impl Source {
    /// Its identity.
    pub fn id(&self) -> &SourceId {
        match self {
            Source::Walk(w) => w.id(),
            Source::Manifest(m) => m.id(),
            Source::Bucket(b) => b.id(),
            Source::Watch(w) => w.id(),
        }
    }

    /// Lists every item into `out` until done, `stop` is cancelled or the receiver is
    /// dropped. An error here (an unreadable manifest, a refused listing) ends the run.
    pub async fn list(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
    ) -> Result<()> {
        match &*self {
            Source::Bucket(b) => b.list(&out, &stop).await,
            Source::Watch(w) => w.run(&out, &stop).await,
            // The other listers block (a directory walk, a buffered file read): each runs
            // on a thread of the blocking pool and hands items over with `blocking_send`.
            _ => {
                let me = self.clone();
                run_blocking(move || match &*me {
                    Source::Walk(w) => w.list(&out, &stop),
                    Source::Manifest(m) => m.list(&out, &stop),
                    Source::Bucket(_) | Source::Watch(_) => Ok(()),
                })
                .await
            }
        }
    }

    /// The bytes (or URL) to upload for an item.
    pub async fn body(&self, item: &Item) -> Result<Body> {
        match (self, &item.locator) {
            (_, Locator::File(path)) => Ok(Body::file(path.clone())),
            (Source::Manifest(m), _) => m.body(item).await,
            (Source::Bucket(b), Locator::Object(key)) => b.body(item, key).await,
            (Source::Bucket(_), other) => Err(crate::error::Error::Invalid(format!(
                "a bucket source cannot read {}",
                other.describe()
            ))),
            (Source::Walk(_) | Source::Watch(_), other) => Err(crate::error::Error::Invalid(
                format!("a folder source cannot read {}", other.describe()),
            )),
        }
    }
}

/// Runs a blocking lister on its own thread of the blocking pool, turning a panic into an
/// error instead of a silently short listing.
async fn run_blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(crate::error::Error::Panicked(format!(
            "the source listing: {e}"
        ))),
    }
}
