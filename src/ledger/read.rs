//! Reads of the ledger: the quick check, item rows, holders of an image id, views for
//! `status` and `failures`, and pending checks. Readers never write.

use std::sync::Mutex;

use rusqlite::{OptionalExtension, params};

use super::{Destination, Ledger, QuickRow, Row, RunCounts, RunRow, State, StateCounts};
use crate::error::{Error, Result};
use crate::item::SourceId;

const ROW_COLUMNS: &str = "i.source_id, s.kind || ':' || s.location, i.key, i.size, i.mtime_ns, \
     i.etag, i.options, i.sha256, i.stamp, i.image_id, i.url, i.planned_id, i.state, i.attempts, \
     i.last_error, i.retry_local, i.check_after, i.updated_at, i.uploaded_at, i.replaced_at";

/// A folder's uploaded rows without per-item settings, by name: (size, mtime in ns).
pub type FolderRows = std::collections::HashMap<Box<str>, (u64, i64)>;

const ROW_FROM: &str = "FROM items i JOIN sources s ON s.id = i.source_id";

/// The query of [`Ledger::holder_of`]: the items an image id is recorded for, and those
/// writing it. Two plain index searches in one statement (one read transaction): `OR` with
/// an `ORDER BY` built a temporary b-tree for every new upload's check.
pub(super) static HOLDER_OF_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let [held, writing] = ["image_id", "planned_id"].map(|column| {
        format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM}
             WHERE i.{column} = ?1 AND NOT (i.source_id = ?2 AND i.key = ?3)"
        )
    });
    format!("{held} UNION ALL {writing}")
});

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        source_id: r.get(0)?,
        source: r.get(1)?,
        key: r.get(2)?,
        size: r.get::<_, i64>(3)?.max(0) as u64,
        mtime_ns: r.get(4)?,
        etag: r.get(5)?,
        options: r.get(6)?,
        sha256: r.get(7)?,
        stamp: r.get(8)?,
        image_id: r.get(9)?,
        url: r.get(10)?,
        planned_id: r.get(11)?,
        state: State::parse(&r.get::<_, String>(12)?),
        attempts: r.get::<_, i64>(13)?.max(0) as u32,
        last_error: r.get(14)?,
        retry_local: r.get(15)?,
        check_after: r.get(16)?,
        updated_at: r.get(17)?,
        uploaded_at: r.get(18)?,
        replaced_at: r.get(19)?,
    })
}

impl Ledger {
    /// The fields the quick check needs, without allocating the rest of the row.
    pub fn quick(&self, source_id: i64, key: &str) -> Result<Option<QuickRow>> {
        self.quick_at(source_id, key, &super::now())
    }

    /// [`Ledger::quick`] with the time a failed item's retry must be due by given: a bulk
    /// reader reads the clock once per batch, not once per file.
    fn quick_at(&self, source_id: i64, key: &str, now: &str) -> Result<Option<QuickRow>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT size, mtime_ns, etag, options, state, retry_local, check_after IS NOT NULL,
               retry_at IS NULL OR retry_at <= ?3
             FROM items WHERE source_id = ?1 AND key = ?2",
        )?;
        let row = stmt
            .query_row(params![source_id, key, now], |r| {
                Ok(QuickRow {
                    size: r.get::<_, i64>(0)?.max(0) as u64,
                    mtime_ns: r.get(1)?,
                    etag: r.get(2)?,
                    options: r.get(3)?,
                    // Borrowed, not copied into a String: this runs once per listed file.
                    state: State::parse(r.get_ref(4)?.as_str()?),
                    retry_local: r.get(5)?,
                    check_pending: r.get(6)?,
                    retry_due: r.get(7)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    /// The row of an item.
    pub fn lookup(&self, source_id: i64, key: &str) -> Result<Option<Row>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM} WHERE i.source_id = ?1 AND i.key = ?2"
        ))?;
        Ok(stmt
            .query_row(params![source_id, key], read_row)
            .optional()?)
    }

    /// Another item that holds `image_id` or is writing it now, if any.
    /// An uploaded item comes first.
    pub fn holder_of(&self, image_id: &str, source_id: i64, key: &str) -> Result<Option<Row>> {
        let mut first = None;
        let mut stmt = self.conn.prepare_cached(&HOLDER_OF_SQL)?;
        for row in stmt.query_map(params![image_id, source_id, key], read_row)? {
            let row = row?;
            if row.state == State::Uploaded {
                return Ok(Some(row));
            }
            first.get_or_insert(row);
        }
        Ok(first)
    }

    /// Whether some item other than (`source_id`, `key`) is recorded as held by `image_id`.
    pub fn image_shared(&self, image_id: &str, source_id: i64, key: &str) -> Result<bool> {
        Ok(self.holder_of(image_id, source_id, key)?.is_some())
    }

    /// Every item whose recorded image is `image_id`, whatever its state (what deleting
    /// that image would leave pointing at nothing).
    pub fn items_holding(&self, image_id: &str) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM} WHERE i.image_id = ?1 ORDER BY i.source_id, i.key"
        ))?;
        let rows = stmt
            .query_map([image_id], read_row)?
            .collect::<rusqlite::Result<Vec<Row>>>()?;
        Ok(rows)
    }

    /// An uploaded row held by `image_id`, if any (for content deduplication).
    pub fn uploaded_with_image(&self, image_id: &str) -> Result<Option<Row>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM} WHERE i.image_id = ?1 AND i.state = 'uploaded' LIMIT 1"
        ))?;
        Ok(stmt.query_row([image_id], read_row).optional()?)
    }

    /// An uploaded item of a source other than `key` holding content `sha256` in an image
    /// of its own (renames and moves in a watched folder).
    pub fn uploaded_with_content(
        &self,
        source_id: i64,
        sha256: &str,
        key: &str,
    ) -> Result<Option<Row>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM} WHERE i.source_id = ?1 AND i.sha256 = ?2 AND i.key <> ?3
               AND i.state = 'uploaded' AND i.image_id IS NOT NULL LIMIT 1"
        ))?;
        Ok(stmt
            .query_row(params![source_id, sha256, key], read_row)
            .optional()?)
    }

    /// Images an item used to be held by and that `--keep-replaced` left in place.
    pub fn superseded_ids(&self, source_id: i64, key: &str) -> Result<Vec<String>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT image_id FROM superseded WHERE source_id = ?1 AND key = ?2")?;
        let ids = stmt
            .query_map(params![source_id, key], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<String>>>()?;
        Ok(ids)
    }

    /// Items of a source with duplicates still to look for after an ambiguous answer.
    pub fn pending_checks(&self, source_id: i64) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare(&format!(
            // The partial index holds only the pending rows; left to itself the planner has
            // been seen to walk the whole source by (source_id, sha256) instead, every
            // 30 s in a daemon.
            "SELECT {ROW_COLUMNS} FROM items i INDEXED BY items_check_after
               JOIN sources s ON s.id = i.source_id
             WHERE i.source_id = ?1 AND i.check_after IS NOT NULL ORDER BY i.check_after"
        ))?;
        let rows = stmt
            .query_map([source_id], read_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The number of a known source.
    pub fn source_number(&self, source: &SourceId) -> Result<Option<i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id FROM sources WHERE kind = ?1 AND location = ?2")?;
        Ok(stmt
            .query_row(params![source.kind.as_str(), source.location], |r| r.get(0))
            .optional()?)
    }

    /// A page of a source's keys after `after`, in key order, with whether each holds an
    /// image: how a rescan finds files that left, without holding all keys at once.
    pub fn keys_after(
        &self,
        source_id: i64,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, bool)>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, image_id IS NOT NULL FROM items
             WHERE source_id = ?1 AND key > ?2 ORDER BY key LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![source_id, after, limit], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The rows recorded directly in one folder of a source (`prefix` is the folder's keys'
    /// common start, ending in `/`, or empty for the top), by name: the size and mtime of
    /// those uploaded without per-item settings. One range read per folder, each subfolder
    /// skipped with one seek, instead of an index lookup per file. `None` past `cap` rows
    /// (the caller looks files up one by one: memory stays bounded for a huge folder).
    pub fn uploaded_in_folder(
        &self,
        source_id: i64,
        prefix: &str,
        cap: usize,
    ) -> Result<Option<FolderRows>> {
        // A key of the folder is `prefix` + a name without '/': every one of them sorts
        // from `prefix` up to `prefix` with its '/' made '0' (the next byte).
        let end = prefix.strip_suffix('/').map(|p| format!("{p}0"));
        let mut stmt = self.conn.prepare_cached(if end.is_some() {
            "SELECT key, size, mtime_ns, state = 'uploaded' AND options IS NULL FROM items
             WHERE source_id = ?1 AND key >= ?2 AND key < ?3 ORDER BY key"
        } else {
            "SELECT key, size, mtime_ns, state = 'uploaded' AND options IS NULL FROM items
             WHERE source_id = ?1 AND key >= ?2 ORDER BY key"
        })?;
        let mut rows = FolderRows::new();
        let mut from = prefix.to_string();
        let mut read = 0usize;
        loop {
            let mut query = match &end {
                Some(end) => stmt.query(params![source_id, from, end])?,
                None => stmt.query(params![source_id, from])?,
            };
            let mut next = None;
            while let Some(r) = query.next()? {
                let key = r.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
                let Some(name) = key.get(prefix.len()..) else {
                    continue;
                };
                // A subfolder's rows: skipped with one seek past them, not read.
                if let Some(slash) = name.find('/') {
                    next = Some(format!("{prefix}{}0", &name[..slash]));
                    break;
                }
                read += 1;
                if read > cap {
                    return Ok(None);
                }
                if r.get::<_, bool>(3)? {
                    let size = r.get::<_, i64>(1)?.max(0) as u64;
                    rows.insert(name.into(), (size, r.get(2)?));
                }
            }
            match next {
                Some(n) => from = n,
                None => return Ok(Some(rows)),
            }
        }
    }

    /// Failed items of a source whose retry delay has passed, oldest due first.
    pub fn failed_due(&self, source_id: i64, limit: u32) -> Result<Vec<String>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT key FROM items WHERE source_id = ?1 AND state = 'failed'
               AND retry_at IS NOT NULL AND retry_at <= ?2 ORDER BY retry_at LIMIT ?3",
        )?;
        let rows = stmt
            .query_map(params![source_id, super::now(), limit], |r| r.get(0))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Whether the ledger holds any item of a source: one index probe, where a count reads
    /// every row of the source.
    pub fn has_items(&self, source_id: i64) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM items WHERE source_id = ?1)")?;
        Ok(stmt.query_row([source_id], |r| r.get::<_, bool>(0))?)
    }

    /// Items recorded for a source, and how many of them are failed (waiting for a retry).
    pub fn item_counts(&self, source_id: i64) -> Result<(u64, u64)> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'failed') FROM items WHERE source_id = ?1",
        )?;
        Ok(stmt.query_row([source_id], |r| {
            Ok((
                r.get::<_, i64>(0)?.max(0) as u64,
                r.get::<_, i64>(1)?.max(0) as u64,
            ))
        })?)
    }

    /// The destination this ledger belongs to, once a run has recorded it.
    pub fn destination(&self) -> Result<Option<Destination>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT account_id, api_base FROM destination WHERE id = 1")?;
        Ok(stmt
            .query_row([], |r| {
                Ok(Destination {
                    account_id: r.get(0)?,
                    api_base: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Item counts by state.
    pub fn state_counts(&self) -> Result<StateCounts> {
        let mut counts = StateCounts::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*), COALESCE(SUM(size), 0), COUNT(check_after) FROM items GROUP BY state")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let n = r.get::<_, i64>(1)?.max(0) as u64;
            counts.pending_checks += r.get::<_, i64>(3)?.max(0) as u64;
            match State::parse(&r.get::<_, String>(0)?) {
                State::Uploading => counts.uploading = n,
                State::Uploaded => {
                    counts.uploaded = n;
                    counts.uploaded_bytes = r.get::<_, i64>(2)?.max(0) as u64;
                }
                State::Failed => counts.failed = n,
                State::Rejected => counts.rejected = n,
                State::Ignored => counts.ignored = n,
            }
        }
        Ok(counts)
    }

    /// Every failed or rejected item (and ignored ones when asked), oldest change first.
    pub fn failures(&self, with_ignored: bool) -> Result<Vec<Row>> {
        let states = if with_ignored {
            "('failed', 'rejected', 'ignored')"
        } else {
            "('failed', 'rejected')"
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM} WHERE i.state IN {states} ORDER BY i.updated_at, i.key"
        ))?;
        let rows = stmt
            .query_map([], read_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The most recent run.
    pub fn last_run(&self) -> Result<Option<RunRow>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, command, source, started_at, finished_at, uploaded, replaced, deduplicated, \
             skipped, failed, rejected, ignored, bytes, requests, throttled, outcome, updated, failed_earlier, \
             rejected_earlier, duplicates_deleted FROM runs ORDER BY id DESC LIMIT 1",
        )?;
        let row = stmt
            .query_row([], |r| {
                let n = |i: usize| r.get::<_, i64>(i).map(|v| v.max(0) as u64);
                Ok(RunRow {
                    id: r.get(0)?,
                    command: r.get(1)?,
                    source: r.get(2)?,
                    started_at: r.get(3)?,
                    finished_at: r.get(4)?,
                    counts: RunCounts {
                        uploaded: n(5)?,
                        replaced: n(6)?,
                        deduplicated: n(7)?,
                        skipped: n(8)?,
                        failed: n(9)?,
                        rejected: n(10)?,
                        ignored: n(11)?,
                        bytes: n(12)?,
                        requests: n(13)?,
                        throttled: n(14)?,
                        updated: n(16)?,
                        failed_earlier: n(17)?,
                        rejected_earlier: n(18)?,
                        duplicates_deleted: n(19)?,
                    },
                    outcome: r.get(15)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    /// Calls `f` on every row (of one source, when given), by source and key, as the
    /// cursor reads them: nothing is collected, so a ledger of millions of rows is
    /// streamed in constant memory. `f` may stop early by returning an error.
    pub fn for_each_row(
        &self,
        source_id: Option<i64>,
        mut f: impl FnMut(&Row) -> Result<()>,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM} WHERE (?1 IS NULL OR i.source_id = ?1)
             ORDER BY i.source_id, i.key"
        ))?;
        let mut rows = stmt.query([source_id])?;
        while let Some(r) = rows.next()? {
            f(&read_row(r)?)?;
        }
        Ok(())
    }

    /// Every source of this ledger: (number, kind, location).
    pub fn sources(&self) -> Result<Vec<(i64, String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, kind, location FROM sources ORDER BY id")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// The number of the source `spec` names: `kind:location`, a location, or a folder
    /// given by any path that leads to it. `None` when the ledger does not know it.
    pub fn find_source(&self, spec: &str) -> Result<Option<i64>> {
        let canonical = std::fs::canonicalize(spec)
            .ok()
            .and_then(|p| p.to_str().map(str::to_string));
        Ok(self
            .sources()?
            .into_iter()
            .find_map(|(id, kind, location)| {
                let full = format!("{kind}:{location}");
                (spec == full
                    || spec == location
                    || canonical.as_deref() == Some(location.as_str()))
                .then_some(id)
            }))
    }

    /// Every image id `--keep-replaced` left in place, with its item.
    pub fn for_each_superseded(&self, mut f: impl FnMut(&str) -> Result<()>) -> Result<()> {
        let mut stmt = self.conn.prepare("SELECT image_id FROM superseded")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            f(&r.get::<_, String>(0)?)?;
        }
        Ok(())
    }

    /// Every row, by source and key (for exports and tests).
    pub fn all_rows(&self) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ROW_COLUMNS} {ROW_FROM} ORDER BY i.source_id, i.key"
        ))?;
        let rows = stmt
            .query_map([], read_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

/// Lookups in read transactions of `READ_BATCH` lookups each, so that a walk over millions
/// of files takes SQLite's file locks a few hundred times instead of once per file, while
/// the writer's commits still become visible and the WAL can still be checkpointed.
#[derive(Debug)]
pub struct BatchedReader {
    ledger: Ledger,
    in_transaction: usize,
    /// The time read when the current transaction began (see [`Ledger::quick_at`]).
    now: String,
}

/// Lookups per read transaction of a [`BatchedReader`].
const READ_BATCH: usize = 4096;

impl BatchedReader {
    /// Wraps a read connection, with a page cache sized for bulk lookups.
    pub fn new(ledger: Ledger) -> Result<BatchedReader> {
        ledger.conn.pragma_update(None, "cache_size", -32_768)?;
        Ok(BatchedReader {
            ledger,
            in_transaction: 0,
            now: super::now(),
        })
    }

    fn step(&mut self) -> Result<&Ledger> {
        if self.in_transaction >= READ_BATCH {
            self.ledger.conn.execute_batch("COMMIT")?;
            self.in_transaction = 0;
        }
        if self.in_transaction == 0 {
            self.ledger.conn.execute_batch("BEGIN")?;
            self.now = super::now();
        }
        self.in_transaction += 1;
        Ok(&self.ledger)
    }

    /// Ends the open read transaction, so that a waiting stage holds no snapshot (the WAL
    /// can be checkpointed meanwhile).
    pub fn pause(&mut self) -> Result<()> {
        if self.in_transaction > 0 {
            self.ledger.conn.execute_batch("COMMIT")?;
            self.in_transaction = 0;
        }
        Ok(())
    }

    /// [`Ledger::quick`] inside the current read transaction.
    pub fn quick(&mut self, source_id: i64, key: &str) -> Result<Option<QuickRow>> {
        self.step()?;
        self.ledger.quick_at(source_id, key, &self.now)
    }

    /// [`Ledger::keys_after`] inside the current read transaction.
    pub fn keys_after(
        &mut self,
        source_id: i64,
        after: &str,
        limit: u32,
    ) -> Result<Vec<(String, bool)>> {
        self.step()?.keys_after(source_id, after, limit)
    }

    /// [`Ledger::uploaded_in_folder`] inside the current read transaction.
    pub fn uploaded_in_folder(
        &mut self,
        source_id: i64,
        prefix: &str,
        cap: usize,
    ) -> Result<Option<FolderRows>> {
        self.step()?.uploaded_in_folder(source_id, prefix, cap)
    }

    /// [`Ledger::lookup`] inside the current read transaction.
    pub fn lookup(&mut self, source_id: i64, key: &str) -> Result<Option<Row>> {
        self.step()?.lookup(source_id, key)
    }
}

/// A shared read connection for async code; each call holds it for one short query.
#[derive(Debug)]
pub struct SharedReader(Mutex<Ledger>);

impl SharedReader {
    /// Wraps a reader connection.
    pub fn new(ledger: Ledger) -> SharedReader {
        SharedReader(Mutex::new(ledger))
    }

    /// Runs one query on the connection.
    pub fn with<T>(&self, f: impl FnOnce(&Ledger) -> Result<T>) -> Result<T> {
        let guard = self
            .0
            .lock()
            .map_err(|_| Error::LedgerWrite("a thread using the ledger reader panicked".into()))?;
        f(&guard)
    }

    /// Runs several queries in one read transaction: they see one state of the ledger,
    /// and start it once (a start takes the WAL's shared-memory locks, two syscalls).
    pub fn snapshot<T>(&self, f: impl FnOnce(&Ledger) -> T) -> Result<T> {
        self.with(|ledger| {
            // Without the transaction each query still runs, in its own.
            let began = ledger.conn.execute_batch("BEGIN").is_ok();
            let out = f(ledger);
            if began && ledger.conn.execute_batch("COMMIT").is_err() {
                let _ = ledger.conn.execute_batch("ROLLBACK");
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A folder's read holds its own files' uploaded rows and nothing of its subfolders,
    /// of its neighbours, of another source, or of rows a rerun must look at again.
    #[tokio::test]
    async fn a_folders_read_is_its_own_uploaded_rows_and_nothing_else() {
        let (_dir, path, writer, thread, sources) =
            crate::ledger::tests::fresh(&["/a", "/b"]).await;
        let (a, b) = (sources[0], sources[1]);
        drop(writer);
        thread.join().unwrap().unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let rows: &[(i64, &str, &str, Option<&str>)] = &[
            (a, "top.png", "uploaded", None),
            (a, "d/a.png", "uploaded", None),
            (a, "d/b.png", "failed", None),
            (a, "d/c.png", "uploaded", Some("digest")),
            (a, "d/sub.png", "uploaded", None),
            (a, "d/sub/x.png", "uploaded", None),
            (a, "d/sub/deeper/y.png", "uploaded", None),
            (a, "d/sub0.png", "uploaded", None),
            (a, "d/z.png", "uploaded", None),
            (a, "d.png", "uploaded", None),
            (a, "d0/e.png", "uploaded", None),
            (a, "dd/f.png", "uploaded", None),
            (a, ".git/", "ignored", None),
            (b, "d/other.png", "uploaded", None),
        ];
        for (i, (source, key, state, options)) in rows.iter().enumerate() {
            conn.execute(
                "INSERT INTO items (source_id, key, size, mtime_ns, options, state, created_at,
                   updated_at) VALUES (?1, ?2, ?3, 7, ?4, ?5, 'now', 'now')",
                params![source, key, i as i64, options, state],
            )
            .unwrap();
        }
        drop(conn);
        let ledger = Ledger::open_read_only(&path).unwrap().unwrap();
        let names = |prefix: &str| {
            let rows = ledger.uploaded_in_folder(a, prefix, 100).unwrap().unwrap();
            let mut names: Vec<(String, u64)> =
                rows.into_iter().map(|(n, (s, _))| (n.into(), s)).collect();
            names.sort();
            names
        };
        let owned = |v: &[(&str, u64)]| -> Vec<(String, u64)> {
            v.iter().map(|(n, s)| (n.to_string(), *s)).collect()
        };
        assert_eq!(
            names("d/"),
            owned(&[("a.png", 1), ("sub.png", 4), ("sub0.png", 7), ("z.png", 8)])
        );
        assert_eq!(names(""), owned(&[("d.png", 9), ("top.png", 0)]));
        assert_eq!(names("d/sub/"), owned(&[("x.png", 5)]));
        assert_eq!(names("nothing/"), owned(&[]));
        // Past the cap the folder is not held: its files are looked up one by one.
        assert!(ledger.uploaded_in_folder(a, "d/", 3).unwrap().is_none());
        assert!(ledger.uploaded_in_folder(a, "d/", 6).unwrap().is_some());
    }
}
