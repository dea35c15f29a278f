//! The keys of the bad and repeated lines one pass over a manifest met, for the sweep of
//! stale line records, in memory that does not grow with the manifest: a manifest with
//! millions of repeated lines has as many keys. They go to a private temporary SQLite
//! database, which keeps a small page cache and spills the rest to a file in the temporary
//! folder, deleted when it is closed. Nothing is opened until the first such line: a clean
//! manifest costs nothing.

use rusqlite::{Connection, OptionalExtension};

use crate::error::Result;

/// Page cache of the temporary database, in KiB (SQLite's negative `cache_size`).
const CACHE_KIB: u32 = 2048;

/// An exact set of line keys, on disk beyond a small cache.
#[derive(Default)]
pub(super) struct SeenLines {
    db: Option<Connection>,
}

impl SeenLines {
    /// Adds a key; a key added twice is held once.
    pub fn insert(&mut self, key: &str) -> Result<()> {
        let db = match &mut self.db {
            Some(db) => db,
            None => self.db.insert(open()?),
        };
        db.prepare_cached("INSERT OR IGNORE INTO seen (key) VALUES (?1)")?
            .execute([key])?;
        Ok(())
    }

    /// Whether the key was added.
    pub fn contains(&self, key: &str) -> Result<bool> {
        let Some(db) = &self.db else {
            return Ok(false);
        };
        Ok(db
            .prepare_cached("SELECT 1 FROM seen WHERE key = ?1")?
            .query_row([key], |_| Ok(()))
            .optional()?
            .is_some())
    }
}

/// An empty file name is SQLite's private temporary database. No journal and no syncs:
/// it lives as long as the pass, and a crash loses nothing the ledger needs. One open
/// transaction for its whole life, so the inserts are not committed one by one.
fn open() -> Result<Connection> {
    let db = Connection::open("")?;
    db.execute_batch(&format!(
        "PRAGMA journal_mode = OFF;
         PRAGMA synchronous = OFF;
         PRAGMA cache_size = -{CACHE_KIB};
         CREATE TABLE seen (key TEXT PRIMARY KEY) WITHOUT ROWID;
         BEGIN;"
    ))?;
    Ok(db)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_exactly_the_keys_added_beyond_its_cache() {
        let mut seen = SeenLines::default();
        assert!(!seen.contains("line 1").unwrap());
        // Well past the page cache (2 MiB): the keys spill to the file and stay exact.
        for i in 0..100_000u64 {
            seen.insert(&format!("line {}", i * 2)).unwrap();
            seen.insert(&format!("bad line #{:016x}", i * 2)).unwrap();
        }
        seen.insert("line 0").unwrap();
        for i in [0u64, 1, 2, 3, 99_999, 100_000, 199_998, 199_999, 200_000] {
            let held = i % 2 == 0 && i < 200_000;
            assert_eq!(seen.contains(&format!("line {i}")).unwrap(), held, "{i}");
            assert_eq!(
                seen.contains(&format!("bad line #{i:016x}")).unwrap(),
                held,
                "{i}"
            );
        }
        assert!(!seen.contains("line").unwrap());
    }
}
