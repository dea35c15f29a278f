//! The SQLite ledger: what each source became, and the record of every run. All SQL of cfimg
//! lives here. One writer thread owns the only read-write connection and commits in
//! batches; a commit is the acknowledgement that an intent or an outcome is durable.
//! Readers use their own connections (WAL lets them read while the writer writes).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Error, Result};

/// Schema version this build writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i32 = 1;

/// Most records the writer commits in one transaction.
const MAX_BATCH: usize = 1024;

/// Migrations, in order; entry `n` brings the schema from version `n` to `n + 1`.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE items (
    key          TEXT PRIMARY KEY,          -- the source item: a path relative to the folder
    source       TEXT NOT NULL,             -- where it came from: the folder migrated
    size         INTEGER NOT NULL,          -- bytes, at the last plan
    mtime_ns     INTEGER NOT NULL,          -- modification time, ns since the epoch
    sha256       TEXT,                      -- content hash of the version last planned
    image_id     TEXT,                      -- the image that holds this source now, if any
    url          TEXT,                      -- a delivery URL of that image
    planned_id   TEXT,                      -- while uploading: the custom id being written
    state        TEXT NOT NULL CHECK (state IN ('uploading', 'uploaded', 'failed', 'rejected')),
    attempts     INTEGER NOT NULL DEFAULT 0, -- HTTP requests spent on it the last time
    last_error   TEXT,                      -- why it failed or was rejected
    created_at   TEXT NOT NULL,
    updated_at   TEXT NOT NULL,
    uploaded_at  TEXT,                      -- when the current image was uploaded
    replaced_at  TEXT                       -- when a changed file last replaced its image
);
CREATE INDEX items_image_id ON items(image_id);
CREATE INDEX items_state ON items(state);
CREATE TABLE runs (
    id           INTEGER PRIMARY KEY,
    command      TEXT NOT NULL,
    source       TEXT NOT NULL,
    started_at   TEXT NOT NULL,
    finished_at  TEXT,
    uploaded     INTEGER NOT NULL DEFAULT 0,
    replaced     INTEGER NOT NULL DEFAULT 0,
    deduplicated INTEGER NOT NULL DEFAULT 0,
    skipped      INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    rejected     INTEGER NOT NULL DEFAULT 0,
    bytes        INTEGER NOT NULL DEFAULT 0,
    requests     INTEGER NOT NULL DEFAULT 0,
    throttled    INTEGER NOT NULL DEFAULT 0,
    outcome      TEXT                       -- done, incomplete, interrupted, fatal: <why>
);
"#];

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// An upload was started and its outcome is not recorded yet.
    Uploading,
    /// The current version is in Cloudflare as `image_id`.
    Uploaded,
    /// Retries ran out; tried again with `--retry-failed`.
    Failed,
    /// The item itself is bad; tried again only when it changes.
    Rejected,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Uploading => "uploading",
            State::Uploaded => "uploaded",
            State::Failed => "failed",
            State::Rejected => "rejected",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "uploaded" => State::Uploaded,
            "failed" => State::Failed,
            "rejected" => State::Rejected,
            _ => State::Uploading,
        }
    }
}

/// One row of `items`.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Source key.
    pub key: String,
    /// Where it came from.
    pub source: String,
    /// Bytes at the last plan.
    pub size: u64,
    /// Modification time at the last plan, ns.
    pub mtime_ns: i64,
    /// Content hash of the version last planned.
    pub sha256: Option<String>,
    /// The image that holds it now.
    pub image_id: Option<String>,
    /// A delivery URL of that image.
    pub url: Option<String>,
    /// The custom id being written while uploading.
    pub planned_id: Option<String>,
    /// Where it stands.
    pub state: State,
    /// Requests spent on it the last time.
    pub attempts: u32,
    /// Why it failed or was rejected.
    pub last_error: Option<String>,
    /// Last change of the row.
    pub updated_at: String,
    /// When the current image was uploaded.
    pub uploaded_at: Option<String>,
    /// When a changed file last replaced its image.
    pub replaced_at: Option<String>,
}

const ROW_COLUMNS: &str = "key, source, size, mtime_ns, sha256, image_id, url, planned_id, state, \
                           attempts, last_error, updated_at, uploaded_at, replaced_at";

fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok(Row {
        key: r.get(0)?,
        source: r.get(1)?,
        size: r.get::<_, i64>(2)?.max(0) as u64,
        mtime_ns: r.get(3)?,
        sha256: r.get(4)?,
        image_id: r.get(5)?,
        url: r.get(6)?,
        planned_id: r.get(7)?,
        state: State::parse(&r.get::<_, String>(8)?),
        attempts: r.get::<_, i64>(9)?.max(0) as u32,
        last_error: r.get(10)?,
        updated_at: r.get(11)?,
        uploaded_at: r.get(12)?,
        replaced_at: r.get(13)?,
    })
}

/// The identity of one version of a source item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Source key.
    pub key: String,
    /// Where it came from.
    pub source: String,
    /// Bytes.
    pub size: u64,
    /// Modification time, ns.
    pub mtime_ns: i64,
    /// Content hash, when it was computed.
    pub sha256: Option<String>,
}

/// Counters of one run, as stored in `runs`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunCounts {
    /// Images uploaded (new sources and replacements).
    pub uploaded: u64,
    /// Of those, replacements of changed files.
    pub replaced: u64,
    /// Sources resolved to an image that already held the same content.
    pub deduplicated: u64,
    /// Sources skipped as unchanged.
    pub skipped: u64,
    /// Items whose retries ran out.
    pub failed: u64,
    /// Items rejected.
    pub rejected: u64,
    /// Bytes uploaded.
    pub bytes: u64,
    /// HTTP requests sent.
    pub requests: u64,
    /// 429 answers seen.
    pub throttled: u64,
}

/// One row of `runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    /// Run number.
    pub id: i64,
    /// `migrate`, ...
    pub command: String,
    /// The folder.
    pub source: String,
    /// Start time.
    pub started_at: String,
    /// End time; null if the run never ended cleanly.
    pub finished_at: Option<String>,
    /// Counters.
    #[serde(flatten)]
    pub counts: RunCounts,
    /// How it ended.
    pub outcome: Option<String>,
}

/// Counts of items by state, and bytes uploaded.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StateCounts {
    /// Rows uploading (interrupted runs leave these).
    pub uploading: u64,
    /// Rows uploaded.
    pub uploaded: u64,
    /// Rows failed.
    pub failed: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Total size of uploaded rows.
    pub uploaded_bytes: u64,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A connection to the ledger; the writer and each reader own one.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Ledger {
    /// Opens (creating and migrating if needed) the ledger for writing.
    pub fn open(path: &Path) -> Result<Ledger> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: every commit reaches the disk before the request it stands for leaves.
        conn.pragma_update(None, "synchronous", "FULL")?;
        migrate(&mut conn)?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// Opens an existing ledger for reading; `None` when there is none yet.
    pub fn open_read_only(path: &Path) -> Result<Option<Ledger>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )?;
        conn.busy_timeout(Duration::from_secs(10))?;
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(newer_schema(path, version));
        }
        if version < SCHEMA_VERSION {
            // An older ledger: readers see it once a writer has migrated it.
            return Ok(None);
        }
        Ok(Some(Ledger {
            conn,
            path: path.to_path_buf(),
        }))
    }

    /// The fields the quick check needs, without allocating the rest of the row.
    pub fn quick(&self, key: &str) -> Result<Option<QuickRow>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT size, mtime_ns, state FROM items WHERE key = ?1")?;
        let row = stmt
            .query_row([key], |r| {
                let state: String = r.get(2)?;
                Ok(QuickRow {
                    size: r.get::<_, i64>(0)?.max(0) as u64,
                    mtime_ns: r.get(1)?,
                    state: State::parse(&state),
                })
            })
            .optional()?;
        Ok(row)
    }

    /// The row of a source key.
    pub fn lookup(&self, key: &str) -> Result<Option<Row>> {
        let mut stmt = self
            .conn
            .prepare_cached(&format!("SELECT {ROW_COLUMNS} FROM items WHERE key = ?1"))?;
        Ok(stmt.query_row([key], read_row).optional()?)
    }

    /// Whether some source other than `except_key` is recorded as held by `image_id`.
    pub fn image_shared(&self, image_id: &str, except_key: &str) -> Result<bool> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM items WHERE image_id = ?1 AND key <> ?2 LIMIT 1")?;
        Ok(stmt.exists(params![image_id, except_key])?)
    }

    /// An uploaded row held by `image_id`, if any (for content deduplication).
    pub fn uploaded_with_image(&self, image_id: &str) -> Result<Option<Row>> {
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT {ROW_COLUMNS} FROM items WHERE image_id = ?1 AND state = 'uploaded' LIMIT 1"
        ))?;
        Ok(stmt.query_row([image_id], read_row).optional()?)
    }

    /// Item counts by state.
    pub fn state_counts(&self) -> Result<StateCounts> {
        let mut counts = StateCounts::default();
        let mut stmt = self
            .conn
            .prepare("SELECT state, COUNT(*), COALESCE(SUM(size), 0) FROM items GROUP BY state")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let n = r.get::<_, i64>(1)?.max(0) as u64;
            match State::parse(&r.get::<_, String>(0)?) {
                State::Uploading => counts.uploading = n,
                State::Uploaded => {
                    counts.uploaded = n;
                    counts.uploaded_bytes = r.get::<_, i64>(2)?.max(0) as u64;
                }
                State::Failed => counts.failed = n,
                State::Rejected => counts.rejected = n,
            }
        }
        Ok(counts)
    }

    /// Every failed or rejected item, oldest change first.
    pub fn failures(&self) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare(&format!(
            "SELECT {ROW_COLUMNS} FROM items WHERE state IN ('failed', 'rejected') ORDER BY updated_at, key"
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
             skipped, failed, rejected, bytes, requests, throttled, outcome FROM runs ORDER BY id DESC LIMIT 1",
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
                        bytes: n(11)?,
                        requests: n(12)?,
                        throttled: n(13)?,
                    },
                    outcome: r.get(14)?,
                })
            })
            .optional()?;
        Ok(row)
    }

    /// Every row, in key order (for exports and tests).
    pub fn all_rows(&self) -> Result<Vec<Row>> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {ROW_COLUMNS} FROM items ORDER BY key"))?;
        let rows = stmt
            .query_map([], read_row)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }
}

fn newer_schema(path: &Path, version: i32) -> Error {
    Error::Config(vec![format!(
        "ledger {} has schema version {version}, newer than this cfimg understands ({SCHEMA_VERSION}): upgrade cfimg",
        path.display()
    )])
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(newer_schema(
            Path::new(conn.path().unwrap_or("ledger")),
            version,
        ));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i32 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

/// The quick-check fields of a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuickRow {
    /// Bytes at the last plan.
    pub size: u64,
    /// Modification time at the last plan, ns.
    pub mtime_ns: i64,
    /// Where it stands.
    pub state: State,
}

/// Lookups in read transactions of `READ_BATCH` lookups each, so that a walk over millions
/// of files takes SQLite's file locks a few hundred times instead of once per file, while
/// the writer's commits still become visible and the WAL can still be checkpointed.
#[derive(Debug)]
pub struct BatchedReader {
    ledger: Ledger,
    in_transaction: usize,
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
        })
    }

    fn step(&mut self) -> Result<&Ledger> {
        if self.in_transaction >= READ_BATCH {
            self.ledger.conn.execute_batch("COMMIT")?;
            self.in_transaction = 0;
        }
        if self.in_transaction == 0 {
            self.ledger.conn.execute_batch("BEGIN")?;
        }
        self.in_transaction += 1;
        Ok(&self.ledger)
    }

    /// [`Ledger::quick`] inside the current read transaction.
    pub fn quick(&mut self, key: &str) -> Result<Option<QuickRow>> {
        self.step()?.quick(key)
    }

    /// [`Ledger::lookup`] inside the current read transaction.
    pub fn lookup(&mut self, key: &str) -> Result<Option<Row>> {
        self.step()?.lookup(key)
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
}

/// What the writer is asked to record.
#[derive(Debug)]
pub enum Record {
    /// An upload of `version` is about to start (with `planned_id` for custom ids).
    Intent {
        /// The version being uploaded.
        version: Version,
        /// The custom id, if any.
        planned_id: Option<String>,
    },
    /// `version` is now held by `image_id`.
    Uploaded {
        /// The version uploaded.
        version: Version,
        /// Its image.
        image_id: String,
        /// A delivery URL.
        url: Option<String>,
        /// Requests spent.
        attempts: u32,
        /// Whether it replaced an earlier image of the same source.
        replaced: bool,
    },
    /// `version` failed (retries spent) or was rejected.
    Failed {
        /// The version that failed.
        version: Version,
        /// Why.
        reason: String,
        /// Requests spent.
        attempts: u32,
        /// Rejected (bad item) rather than failed (retries spent).
        rejected: bool,
        /// The image the row pointed to is gone (deleted before a failed re-upload).
        image_gone: bool,
    },
    /// The content did not change, only the file's times: refresh the quick-check fields.
    Touch {
        /// The version now on disk.
        version: Version,
    },
    /// A run ended.
    RunFinished {
        /// Run number.
        run_id: i64,
        /// Its counters.
        counts: RunCounts,
        /// How it ended.
        outcome: String,
    },
}

enum Msg {
    Record(Record, Option<oneshot::Sender<Result<(), String>>>),
    RunStarted {
        command: String,
        source: String,
        reply: oneshot::Sender<Result<i64, String>>,
    },
}

/// The handle async code uses to send records to the writer thread.
#[derive(Clone, Debug)]
pub struct LedgerWriter {
    tx: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Record(r, _) => r.fmt(f),
            Msg::RunStarted { command, .. } => write!(f, "RunStarted({command})"),
        }
    }
}

impl LedgerWriter {
    /// Opens the ledger and starts its writer thread. The thread ends when every handle
    /// is dropped; join it to know every record is committed.
    pub fn spawn(path: &Path) -> Result<(LedgerWriter, thread::JoinHandle<Result<()>>)> {
        let lock = lock_exclusively(path)?;
        let ledger = Ledger::open(path)?;
        let (tx, rx) = mpsc::channel(4096);
        let handle = thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                // The lock lives as long as the writer: one run per ledger at a time.
                let _lock = lock;
                write_loop(ledger, rx)
            })
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((LedgerWriter { tx }, handle))
    }

    /// Records and waits until the record is durable.
    pub async fn commit(&self, record: Record) -> Result<()> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg::Record(record, Some(ack)))
            .await
            .map_err(|_| writer_gone())?;
        done.await
            .map_err(|_| writer_gone())?
            .map_err(ledger_failed)
    }

    /// Queues a record; it is durable once a later [`LedgerWriter::commit`] returns or the
    /// writer thread has been joined.
    pub async fn record(&self, record: Record) -> Result<()> {
        self.tx
            .send(Msg::Record(record, None))
            .await
            .map_err(|_| writer_gone())
    }

    /// Queues a record from a blocking thread.
    pub fn record_blocking(&self, record: Record) -> Result<()> {
        self.tx
            .blocking_send(Msg::Record(record, None))
            .map_err(|_| writer_gone())
    }

    /// Records the start of a run and returns its number.
    pub async fn run_started(&self, command: &str, source: &str) -> Result<i64> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Msg::RunStarted {
                command: command.into(),
                source: source.into(),
                reply,
            })
            .await
            .map_err(|_| writer_gone())?;
        done.await
            .map_err(|_| writer_gone())?
            .map_err(ledger_failed)
    }
}

/// Takes `<ledger>.lock`: two runs writing one ledger would both plan the same files, and
/// with Cloudflare-assigned ids nothing on the server would stop them uploading twice.
fn lock_exclusively(path: &Path) -> Result<std::fs::File> {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    let lock_path = path.with_file_name(name);
    if let Some(dir) = lock_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|source| Error::Io {
            path: lock_path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::LedgerBusy(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => Err(Error::Io {
            path: lock_path,
            source,
        }),
    }
}

fn writer_gone() -> Error {
    Error::LedgerWrite("the writer thread stopped".into())
}

fn ledger_failed(why: String) -> Error {
    Error::LedgerWrite(why)
}

fn write_loop(mut ledger: Ledger, mut rx: mpsc::Receiver<Msg>) -> Result<()> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let result = apply_batch(&mut ledger.conn, &batch);
        let shared = result.as_ref().map_err(|e| e.to_string());
        for msg in batch.drain(..) {
            match (msg, &shared) {
                (Msg::Record(_, Some(ack)), r) => {
                    let _ = ack.send(r.as_ref().map(|_| ()).map_err(Clone::clone));
                }
                (Msg::Record(_, None), _) => {}
                (Msg::RunStarted { reply, .. }, Ok(ids)) => {
                    let _ = reply.send(ids.first().copied().ok_or_else(|| "no run id".to_string()));
                }
                (Msg::RunStarted { reply, .. }, Err(e)) => {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
        result?;
    }
    Ok(())
}

/// Applies a batch in one transaction; returns the ids of runs started in it.
fn apply_batch(conn: &mut Connection, batch: &[Msg]) -> Result<Vec<i64>> {
    let tx = conn.transaction()?;
    let ts = now();
    let mut run_ids = Vec::new();
    for msg in batch {
        match msg {
            Msg::Record(record, _) => apply(&tx, record, &ts)?,
            Msg::RunStarted {
                command, source, ..
            } => {
                tx.execute(
                    "INSERT INTO runs (command, source, started_at) VALUES (?1, ?2, ?3)",
                    params![command, source, ts],
                )?;
                run_ids.push(tx.last_insert_rowid());
            }
        }
    }
    tx.commit()?;
    Ok(run_ids)
}

fn apply(tx: &Transaction<'_>, record: &Record, ts: &str) -> Result<()> {
    match record {
        Record::Intent {
            version: v,
            planned_id,
        } => {
            tx.prepare_cached(
                "INSERT INTO items (key, source, size, mtime_ns, sha256, planned_id, state, attempts, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 'uploading', 0, ?7, ?7)
                 ON CONFLICT(key) DO UPDATE SET source = excluded.source, size = excluded.size,
                   mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, planned_id = excluded.planned_id,
                   state = 'uploading', updated_at = excluded.updated_at",
            )?
            .execute(params![v.key, v.source, v.size as i64, v.mtime_ns, v.sha256, planned_id, ts])?;
        }
        Record::Uploaded {
            version: v,
            image_id,
            url,
            attempts,
            replaced,
        } => {
            tx.prepare_cached(
                "INSERT INTO items (key, source, size, mtime_ns, sha256, image_id, url, state, attempts,
                   created_at, updated_at, uploaded_at, replaced_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'uploaded', ?8, ?9, ?9, ?9, CASE WHEN ?10 THEN ?9 END)
                 ON CONFLICT(key) DO UPDATE SET source = excluded.source, size = excluded.size,
                   mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, image_id = excluded.image_id,
                   url = excluded.url, planned_id = NULL, state = 'uploaded', attempts = excluded.attempts,
                   last_error = NULL, updated_at = excluded.updated_at, uploaded_at = excluded.uploaded_at,
                   replaced_at = COALESCE(excluded.replaced_at, items.replaced_at)",
            )?
            .execute(params![
                v.key, v.source, v.size as i64, v.mtime_ns, v.sha256, image_id, url, *attempts as i64, ts, replaced
            ])?;
        }
        Record::Failed {
            version: v,
            reason,
            attempts,
            rejected,
            image_gone,
        } => {
            let state = if *rejected {
                State::Rejected
            } else {
                State::Failed
            };
            tx.prepare_cached(
                "INSERT INTO items (key, source, size, mtime_ns, sha256, state, attempts, last_error, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
                 ON CONFLICT(key) DO UPDATE SET source = excluded.source, size = excluded.size,
                   mtime_ns = excluded.mtime_ns, sha256 = excluded.sha256, planned_id = NULL,
                   state = excluded.state, attempts = excluded.attempts, last_error = excluded.last_error,
                   updated_at = excluded.updated_at,
                   image_id = CASE WHEN ?10 THEN NULL ELSE items.image_id END,
                   url = CASE WHEN ?10 THEN NULL ELSE items.url END",
            )?
            .execute(params![
                v.key, v.source, v.size as i64, v.mtime_ns, v.sha256, state.as_str(), *attempts as i64, reason, ts, image_gone
            ])?;
        }
        Record::Touch { version: v } => {
            tx.prepare_cached(
                "UPDATE items SET size = ?2, mtime_ns = ?3, updated_at = ?4 WHERE key = ?1",
            )?
            .execute(params![v.key, v.size as i64, v.mtime_ns, ts])?;
        }
        Record::RunFinished {
            run_id,
            counts: c,
            outcome,
        } => {
            tx.execute(
                "UPDATE runs SET finished_at = ?2, uploaded = ?3, replaced = ?4, deduplicated = ?5, skipped = ?6,
                   failed = ?7, rejected = ?8, bytes = ?9, requests = ?10, throttled = ?11, outcome = ?12 WHERE id = ?1",
                params![
                    run_id, ts, c.uploaded as i64, c.replaced as i64, c.deduplicated as i64, c.skipped as i64,
                    c.failed as i64, c.rejected as i64, c.bytes as i64, c.requests as i64, c.throttled as i64, outcome
                ],
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(key: &str, sha: &str) -> Version {
        Version {
            key: key.into(),
            source: "/src".into(),
            size: 10,
            mtime_ns: 5,
            sha256: Some(sha.into()),
        }
    }

    #[tokio::test]
    async fn intent_then_outcome_is_visible_to_readers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
        let reader = Ledger::open_read_only(&path).unwrap().unwrap();
        writer
            .commit(Record::Intent {
                version: version("a.jpg", "s1"),
                planned_id: Some("a.jpg".into()),
            })
            .await
            .unwrap();
        let row = reader.lookup("a.jpg").unwrap().unwrap();
        assert_eq!(row.state, State::Uploading);
        assert_eq!(row.planned_id.as_deref(), Some("a.jpg"));
        writer
            .commit(Record::Uploaded {
                version: version("a.jpg", "s1"),
                image_id: "a.jpg".into(),
                url: Some("u".into()),
                attempts: 2,
                replaced: false,
            })
            .await
            .unwrap();
        writer
            .commit(Record::Failed {
                version: version("b.txt", "s2"),
                reason: "not an image".into(),
                attempts: 0,
                rejected: true,
                image_gone: false,
            })
            .await
            .unwrap();
        let row = reader.lookup("a.jpg").unwrap().unwrap();
        assert_eq!(
            (row.state, row.image_id.as_deref(), row.planned_id),
            (State::Uploaded, Some("a.jpg"), None)
        );
        assert!(reader.image_shared("a.jpg", "other").unwrap());
        assert!(!reader.image_shared("a.jpg", "a.jpg").unwrap());
        let counts = reader.state_counts().unwrap();
        assert_eq!(
            (counts.uploaded, counts.rejected, counts.uploaded_bytes),
            (1, 1, 10)
        );
        assert_eq!(
            reader.failures().unwrap()[0].last_error.as_deref(),
            Some("not an image")
        );
        drop(writer);
        thread.join().unwrap().unwrap();
    }

    #[tokio::test]
    async fn one_writer_per_ledger_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        let (writer, thread) = LedgerWriter::spawn(&path).unwrap();
        let err = LedgerWriter::spawn(&path).unwrap_err().to_string();
        assert!(err.contains("another cfimg run"), "{err}");
        drop(writer);
        thread.join().unwrap().unwrap();
        assert!(
            LedgerWriter::spawn(&path).is_ok(),
            "the lock goes with the writer"
        );
    }

    #[test]
    fn refuses_a_ledger_from_a_newer_cfimg() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("l.sqlite");
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        let err = Ledger::open(&path).unwrap_err().to_string();
        assert!(err.contains("upgrade cfimg"), "{err}");
    }
}
