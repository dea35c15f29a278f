//! What becomes of an item that left its source (a watched folder's deleted file, under
//! `--on-delete delete`): its image is deleted unless another item still holds it, and its
//! row becomes a tombstone saying what happened. The cap on how many go in one pass is the
//! source's business; by the time a removal gets here it has been allowed.

use std::sync::atomic::AtomicU32;

use crate::error::Result;
use crate::item::Ticket;
use crate::ledger::{LedgerWriter, Record, Row, SharedReader, Version};
use crate::transport::ApiLane;

/// An item to remove, as the ledger last recorded it.
#[derive(Debug)]
pub struct Removal {
    /// The item's version (its ticket is dropped once the tombstone is committed).
    pub version: Version,
    /// The image it holds, if any.
    pub image_id: Option<String>,
}

impl Removal {
    /// The removal of a recorded item.
    pub fn of(row: Row, ticket: Ticket) -> Removal {
        Removal {
            version: Version {
                source_id: row.source_id,
                key: row.key,
                size: row.size,
                mtime_ns: row.mtime_ns,
                etag: row.etag,
                options: row.options,
                sha256: row.sha256,
                ticket,
            },
            image_id: row.image_id,
        }
    }
}

/// Deletes the item's image (unless shared) and records the tombstone. Returns whether an
/// image was deleted. An error leaves the row in place, so a later pass tries again.
pub async fn remove(
    lane: &ApiLane,
    reader: &SharedReader,
    writer: &LedgerWriter,
    removal: Removal,
) -> Result<bool> {
    let v = &removal.version;
    let (deleted, outcome) = match removal.image_id.as_deref() {
        None => (false, "it held no image".to_string()),
        Some(id) => match reader.with(|l| l.holder_of(id, v.source_id, &v.key))? {
            Some(other) => (
                false,
                format!(
                    "image {id} kept: {} {} still holds it",
                    other.source, other.key
                ),
            ),
            None => {
                let spent = AtomicU32::new(0);
                match lane.call(&spent, || lane.client.delete(id)).await {
                    Ok(()) => (true, format!("image {id} deleted")),
                    Err(e) if e.is_not_found() => (false, format!("image {id} was already gone")),
                    Err(e) => return Err(e),
                }
            }
        },
    };
    tracing::warn!(key = %v.key, image_id = removal.image_id.as_deref().unwrap_or("-"), %outcome, "removed: the file left the watched folder");
    writer
        .record(Record::Removed {
            version: removal.version,
            image_id: removal.image_id,
            outcome,
        })
        .await?;
    Ok(deleted)
}
