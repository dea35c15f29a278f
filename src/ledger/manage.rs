//! Writes outside a migration: `verify --repair` re-queues items whose image is gone, and
//! `ledger rebuild` records rows found on the server. Each takes the ledger's lock for as
//! long as it lives, like the migration's writer, so that no run writes meanwhile.

use std::path::Path;

use rusqlite::params;

use super::lock::lock_exclusively;
use super::{Destination, Ledger, now};
use crate::error::Result;
use crate::item::SourceId;

/// A read-write connection that holds the ledger's lock.
#[derive(Debug)]
pub struct Maintenance {
    ledger: Ledger,
    _lock: super::lock::LedgerLock,
}

/// A row `ledger rebuild` found on the server.
#[derive(Debug, Clone)]
pub struct RebuiltRow {
    /// The item's key.
    pub key: String,
    /// Bytes of the file now (0: unknown, so the quick check looks again).
    pub size: u64,
    /// Its modification time now, ns (0: unknown).
    pub mtime_ns: i64,
    /// An object's ETag now (`None`: unknown, so the quick check looks again).
    pub etag: Option<String>,
    /// Digest of the item's own settings (manifest rows), as `migrate` records it.
    pub options: Option<String>,
    /// The content hash the stamp records.
    pub sha256: Option<String>,
    /// The stamp (`cfimg_src`).
    pub stamp: String,
    /// The image.
    pub image_id: String,
    /// Its delivery URL.
    pub url: Option<String>,
    /// Upload time, from the listing.
    pub uploaded_at: Option<String>,
}

impl Maintenance {
    /// Locks and opens (creating if needed) the ledger.
    pub fn open(path: &Path) -> Result<Maintenance> {
        let lock = lock_exclusively(path)?;
        let ledger = Ledger::open(path)?;
        Ok(Maintenance {
            ledger,
            _lock: lock,
        })
    }

    /// The read side.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// Marks an uploaded item whose image is gone as failed for a local reason, so that the
    /// next `migrate` uploads it again without `--retry-failed`. Returns whether a row changed.
    pub fn requeue(&self, source_id: i64, key: &str, reason: &str) -> Result<bool> {
        let n = self.ledger.conn.execute(
            "UPDATE items SET state = 'failed', retry_local = 1, last_error = ?3, image_id = NULL,
               url = NULL, check_after = NULL, updated_at = ?4
             WHERE source_id = ?1 AND key = ?2 AND state = 'uploaded'",
            params![source_id, key, reason, now()],
        )?;
        Ok(n > 0)
    }

    /// Forgets `image_id` after `images delete` removed it: an uploaded item that held it is
    /// marked failed for a local reason, so that the next `migrate` uploads it again without
    /// `--retry-failed`; any other item keeps its state and loses the dead image and URL.
    /// Returns how many rows changed.
    pub fn forget_image(&self, image_id: &str, reason: &str) -> Result<u64> {
        let n = self.ledger.conn.execute(
            "UPDATE items SET
               retry_local = CASE WHEN state = 'uploaded' THEN 1 ELSE retry_local END,
               last_error = CASE WHEN state = 'uploaded' THEN ?2 ELSE last_error END,
               state = CASE WHEN state = 'uploaded' THEN 'failed' ELSE state END,
               image_id = NULL, url = NULL, check_after = NULL, updated_at = ?3
             WHERE image_id = ?1",
            params![image_id, reason, now()],
        )?;
        Ok(n as u64)
    }

    /// Records that image `old_id` is now `new_id` (a PATCH of `requireSignedURLs` may
    /// answer with a new id): every row that held the old id holds the new one and its URL.
    /// Returns how many rows changed.
    pub fn move_image(&self, old_id: &str, new_id: &str, url: Option<&str>) -> Result<u64> {
        let n = self.ledger.conn.execute(
            "UPDATE items SET image_id = ?2, url = COALESCE(?3, url), updated_at = ?4
             WHERE image_id = ?1",
            params![old_id, new_id, url, now()],
        )?;
        Ok(n as u64)
    }

    /// Records `image_id` as the image of an uploaded item whose recorded image is gone (a
    /// twin of the same version found by `verify`). Returns whether a row changed.
    pub fn adopt(
        &self,
        source_id: i64,
        key: &str,
        image_id: &str,
        url: Option<&str>,
    ) -> Result<bool> {
        let n = self.ledger.conn.execute(
            "UPDATE items SET image_id = ?3, url = ?4, updated_at = ?5
             WHERE source_id = ?1 AND key = ?2 AND state = 'uploaded'",
            params![source_id, key, image_id, url, now()],
        )?;
        Ok(n > 0)
    }

    /// Records the destination, or checks that it is the recorded one.
    pub fn claim_destination(&self, d: &Destination) -> Result<()> {
        match self.ledger.destination()? {
            None => {
                self.ledger.conn.execute(
                    "INSERT INTO destination (id, account_id, api_base, created_at) VALUES (1, ?1, ?2, ?3)",
                    params![d.account_id, d.api_base, now()],
                )?;
                Ok(())
            }
            Some(r) if r == *d => Ok(()),
            Some(r) => Err(crate::error::Error::Config(vec![format!(
                "this ledger belongs to account {} at {}, not account {} at {}: give another --ledger",
                r.account_id, r.api_base, d.account_id, d.api_base
            )])),
        }
    }

    /// The number of a source, registering it on first use.
    pub fn source(&self, s: &SourceId) -> Result<i64> {
        self.ledger.conn.execute(
            "INSERT INTO sources (kind, location, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, location) DO NOTHING",
            params![s.kind.as_str(), s.location, now()],
        )?;
        Ok(self.ledger.conn.query_row(
            "SELECT id FROM sources WHERE kind = ?1 AND location = ?2",
            params![s.kind.as_str(), s.location],
            |r| r.get(0),
        )?)
    }

    /// Records rows found on the server as uploaded, in one transaction; rows the ledger
    /// already has are left alone. Returns how many were added.
    pub fn record_found(&mut self, source_id: i64, rows: &[RebuiltRow]) -> Result<u64> {
        let ts = now();
        let tx = self.ledger.conn.transaction()?;
        let mut added = 0;
        {
            let mut stmt = tx.prepare_cached(
                "INSERT INTO items (source_id, key, size, mtime_ns, sha256, stamp, image_id, url, state,
                   attempts, created_at, updated_at, uploaded_at, etag, options)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'uploaded', 0, ?9, ?9, COALESCE(?10, ?9), ?11, ?12)
                 ON CONFLICT (source_id, key) DO NOTHING",
            )?;
            for f in rows {
                added += stmt.execute(params![
                    source_id,
                    f.key,
                    f.size as i64,
                    f.mtime_ns,
                    f.sha256,
                    f.stamp,
                    f.image_id,
                    f.url,
                    ts,
                    f.uploaded_at,
                    f.etag,
                    f.options
                ])? as u64;
            }
        }
        tx.commit()?;
        Ok(added)
    }
}
