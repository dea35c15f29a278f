//! Sources: where items come from. Each yields [`Found`] values, one per candidate item,
//! lazily, so a listing of millions never sits in memory. Today: a folder walk; the URL
//! manifest, bucket listing and folder watch plug in here as siblings of `walk`.

use std::path::PathBuf;

pub mod walk;

/// One file to consider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Stable key of the item in the ledger: the path relative to the source root, `/`-separated.
    pub key: String,
    /// Where to read it.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, ns since the epoch.
    pub mtime_ns: i64,
}

/// What a source produces.
#[derive(Debug)]
pub enum Found {
    /// An item to plan.
    Item(Item),
    /// Something that could not be listed properly, with the reason to record.
    Bad {
        /// Key to record it under.
        key: String,
        /// Why.
        reason: String,
    },
}
