//! The SQLite ledger: what each source item became, the sources and the destination it
//! belongs to, and the record of every run. All of cfimg's SQL lives in this folder:
//! `schema` (tables and migrations), `read` (queries), `writer` (the one thread that writes,
//! in batched transactions whose commit is the acknowledgement) and `lock` (one run per
//! ledger). Readers use their own connections; WAL lets them read while the writer writes.
//!
//! - `backup.rs`: a consistent copy of a ledger in use, and SQLite's full check of one.
//! - `check.rs`: is the ledger whole, checked when a command opens it.
//! - `drafts.rs`: the SQL of direct-upload drafts (the `drafts` source).
//! - `lock.rs`: one run per ledger, an exclusive `flock` on the database file.
//! - `manage.rs`: `Maintenance`, the writes outside a migration (verify's repair, rebuild's rows).
//! - `read.rs`: every query (quick check, rows, holders of an id, views, pending checks).
//! - `schema.rs`: the tables and their forward migrations.
//! - `shelf.rs`: records handed to the writer without waking its thread.
//! - `tests.rs`: unit tests of the ledger's SQL.
//! - `writer.rs`: the one writer thread, whose commit is the acknowledgement.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::error::{Error, Result};

mod backup;
mod check;
mod drafts;
mod lock;
mod manage;
mod old_bases;
mod read;
mod schema;
mod shelf;
mod writer;

pub use backup::{BackupDone, integrity_check};
pub use drafts::{Change as DraftChange, Draft, DraftBook, DraftState, NewDraft};
pub use lock::is_locked;
pub use manage::{Maintenance, RebuiltRow};
pub use read::{BatchedReader, FolderRows, SharedReader};
pub use schema::SCHEMA_VERSION;
pub use writer::{Durable, Failure, LedgerWriter, Opening, Record, Superseded};

/// Where an item stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// An upload was started and its outcome is not recorded yet.
    Uploading,
    /// The current version is in Cloudflare as `image_id`.
    Uploaded,
    /// Retries ran out; tried again with `--retry-failed` (local failures: every run).
    Failed,
    /// The item itself is bad; tried again only when it changes.
    Rejected,
    /// Deliberately passed over (a symlink not followed, a FIFO, ...), with its reason.
    Ignored,
}

impl State {
    fn as_str(self) -> &'static str {
        match self {
            State::Uploading => "uploading",
            State::Uploaded => "uploaded",
            State::Failed => "failed",
            State::Rejected => "rejected",
            State::Ignored => "ignored",
        }
    }

    fn parse(s: &str) -> State {
        match s {
            "uploaded" => State::Uploaded,
            "failed" => State::Failed,
            "rejected" => State::Rejected,
            "ignored" => State::Ignored,
            _ => State::Uploading,
        }
    }
}

/// One row of `items`, with its source spelled out.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The source's number in this ledger.
    pub source_id: i64,
    /// The source, as `kind:location`.
    pub source: String,
    /// Key within the source.
    pub key: String,
    /// Bytes at the last plan (0 when unknown).
    pub size: u64,
    /// Modification time at the last plan, ns (files).
    pub mtime_ns: i64,
    /// ETag at the last plan (objects).
    pub etag: Option<String>,
    /// Digest of the per-item settings at the last plan.
    pub options: Option<String>,
    /// Content hash of the version last planned.
    pub sha256: Option<String>,
    /// The stamp (`cfimg_src`) of its image or intent; `None` for one written by cfimg v1.
    pub stamp: Option<String>,
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
    /// Why it failed, was rejected or ignored.
    pub last_error: Option<String>,
    /// It failed for a local reason (I/O): the next run retries it.
    pub retry_local: bool,
    /// An ambiguous answer left possible duplicates to look for after this time.
    pub check_after: Option<String>,
    /// Last change of the row.
    pub updated_at: String,
    /// When the current image was uploaded.
    pub uploaded_at: Option<String>,
    /// When a changed item last replaced its image.
    pub replaced_at: Option<String>,
}

impl Row {
    /// The stamp its image or intent carries (v1 rows: the hash of the key alone).
    pub fn stamp_source(&self) -> String {
        self.stamp
            .clone()
            .unwrap_or_else(|| crate::stamp::source_hash_v1(&self.key))
    }
}

/// The identity of one version of a source item, as the writer records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// The source's number in this ledger.
    pub source_id: i64,
    /// Key within the source.
    pub key: String,
    /// Bytes (0 when unknown).
    pub size: u64,
    /// Modification time, ns (files; else 0).
    pub mtime_ns: i64,
    /// ETag (objects).
    pub etag: Option<String>,
    /// Digest of the per-item settings.
    pub options: Option<String>,
    /// Content hash, when it was computed.
    pub sha256: Option<String>,
    /// Dropped with the record once it is committed, which tells the source it is done.
    pub ticket: crate::item::Ticket,
}

/// Counters of one run: what the summary shows and `runs` stores.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RunCounts {
    /// Images uploaded (new items and replacements).
    pub uploaded: u64,
    /// Of those, replacements of changed items.
    pub replaced: u64,
    /// Images whose settings were updated in place (no upload).
    pub updated: u64,
    /// Items resolved to an image that already held the same content.
    pub deduplicated: u64,
    /// Items skipped as unchanged.
    pub skipped: u64,
    /// Items whose retries ran out in this run.
    pub failed: u64,
    /// Items rejected in this run.
    pub rejected: u64,
    /// Items failed in an earlier run and not retried (use --retry-failed).
    pub failed_earlier: u64,
    /// Items rejected in an earlier run and unchanged since.
    pub rejected_earlier: u64,
    /// Entries passed over with a reason (symlinks not followed, FIFOs, ...).
    pub ignored: u64,
    /// Duplicates deleted after ambiguous answers.
    pub duplicates_deleted: u64,
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
    /// The source.
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
    /// Rows ignored.
    pub ignored: u64,
    /// Rows with duplicates still to look for after an ambiguous answer.
    pub pending_checks: u64,
    /// Total size of uploaded rows.
    pub uploaded_bytes: u64,
}

/// The quick-check fields of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuickRow {
    /// Bytes at the last plan.
    pub size: u64,
    /// Modification time at the last plan, ns.
    pub mtime_ns: i64,
    /// ETag at the last plan.
    pub etag: Option<String>,
    /// Digest of the per-item settings at the last plan.
    pub options: Option<String>,
    /// Where it stands.
    pub state: State,
    /// A local failure the next run retries.
    pub retry_local: bool,
    /// An ambiguous answer is still to be checked.
    pub check_pending: bool,
    /// A failure whose retry delay has passed (or that has none).
    pub retry_due: bool,
}

/// Where a ledger's images live: one account at one API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// The account id.
    pub account_id: String,
    /// The API base URL, or `emulator` for the built-in emulator.
    pub api_base: String,
}

/// The refusal of a run whose destination is not the ledger's (the writer's typed refusal
/// carries it as its message).
fn destination_mismatch(recorded: &Destination, wanted: &Destination) -> String {
    format!(
        "this ledger belongs to account {} at {}, not account {} at {}: its records say what is in \
         that account only, so give this run another --ledger (or check the account id)",
        recorded.account_id, recorded.api_base, wanted.account_id, wanted.api_base
    )
}

impl Ledger {
    /// Refuses a destination other than the recorded one (the dry run's check; nothing is
    /// recorded).
    pub fn check_destination(&self, wanted: &Destination) -> Result<()> {
        match self.destination()? {
            Some(recorded) if recorded != *wanted => {
                Err(Error::Config(vec![destination_mismatch(&recorded, wanted)]))
            }
            _ => Ok(()),
        }
    }
}

fn now() -> String {
    timestamp(chrono::Utc::now())
}

/// A time as the ledger stores it (RFC 3339, milliseconds, UTC), so that text order is
/// time order.
pub fn timestamp(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A connection to the ledger; the writer and each reader own one.
pub struct Ledger {
    conn: Connection,
    path: PathBuf,
    /// Opened for writing: on close it puts the file back in rollback-journal mode.
    writable: bool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if !self.writable {
            return;
        }
        // At rest the file is left in rollback-journal mode, so that a read-only command
        // reads it without creating `-wal` and `-shm` files (a WAL database cannot be read
        // without them, and on a read-only file system they cannot be made). Only the last
        // connection may leave WAL mode; while another is open this fails at once and the
        // file stays in WAL mode, which every reader still handles.
        let _ = self.conn.busy_timeout(Duration::ZERO);
        let mode = self
            .conn
            .query_row("PRAGMA journal_mode = DELETE", [], |r| {
                r.get::<_, String>(0)
            });
        // At rest and whole (it passed the check at open, and SQLite wrote it since): the
        // next open may skip the page-by-page check while the file stays exactly so.
        if mode.is_ok_and(|m| m.eq_ignore_ascii_case("delete")) {
            check::mark_clean(&self.path);
        }
    }
}

impl Ledger {
    /// Opens (creating and migrating if needed) the ledger for writing. An existing ledger
    /// is checked ([`check`]) before anything is written to it.
    pub fn open(path: &Path) -> Result<Ledger> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let existing = match path.exists() {
            true => check::header(path)?.is_some(),
            false => false,
        };
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        stable_plans(&conn)?;
        if existing {
            check::at_open(&conn, path)?;
        }
        // Before anything is written: a run that does not end in a clean close leaves no marker.
        check::unmark_clean(path);
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| check::named(path, e))?;
        // FULL: every commit reaches the disk before the request it stands for leaves.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        // A checkpoint leaves the WAL file at its largest size unless told otherwise; a
        // daemon's ledger would keep the peak of its busiest hour on disk for good.
        conn.pragma_update(None, "journal_size_limit", 64 * 1024 * 1024)?;
        schema::migrate(&mut conn).map_err(|e| match e {
            Error::Ledger(e) => check::named(path, e),
            e => e,
        })?;
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
            writable: true,
        })
    }

    /// Opens an existing ledger for reading; `None` when there is none yet, or when it is
    /// of an older schema that a writer has not migrated yet. Not checked: for the readers
    /// of a run, whose writer checked it.
    pub fn open_read_only(path: &Path) -> Result<Option<Ledger>> {
        if !path.exists() {
            return Ok(None);
        }
        let conn = connect_read_only(path)?;
        let version: i32 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(schema::newer_schema(path, version));
        }
        if version < SCHEMA_VERSION {
            return Ok(None);
        }
        Ok(Some(Ledger {
            conn,
            path: path.to_path_buf(),
            writable: false,
        }))
    }

    /// Opens the ledger of a read-only command (`status`, `export`, `failures`, `verify`):
    /// read-only, nothing created or written, checked as a writer would check it.
    /// `no ledger at PATH` (exit 2) when there is none.
    pub fn open_existing(path: &Path) -> Result<Ledger> {
        if !path.exists() {
            return Err(missing(path));
        }
        if check::header(path)?.is_none() {
            return Err(Error::Usage(format!(
                "no ledger at {}: the file is empty (nothing was ever recorded in it)",
                path.display()
            )));
        }
        let conn = connect_read_only(path)?;
        check::at_open(&conn, path)?;
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| check::named(path, e))?;
        if version > SCHEMA_VERSION {
            return Err(schema::newer_schema(path, version));
        }
        if version < SCHEMA_VERSION {
            return Err(Error::Usage(format!(
                "the ledger {} has schema version {version}, from an older cfimg; a command that writes it \
                 (`cfimg migrate`, `cfimg watch`, `cfimg ledger rebuild`) brings it to version {SCHEMA_VERSION}",
                path.display()
            )));
        }
        Ok(Ledger {
            conn,
            path: path.to_path_buf(),
            writable: false,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The error of a command that needs a ledger where there is none (exit 2).
pub fn missing(path: &Path) -> Error {
    Error::Usage(format!(
        "no ledger at {}: nothing recorded there yet; give the ledger's path with --ledger (or `ledger` in the config file)",
        path.display()
    ))
}

/// A read-only connection that creates and writes nothing. A ledger in WAL mode cannot be
/// read without its `-shm` index; where none exists and none can be made (a read-only file
/// system or folder) no writer can be using the file either, so it is opened as immutable.
fn connect_read_only(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let in_wal_mode = check::header(path).ok().flatten().is_some_and(|h| h.wal);
    let immutable = in_wal_mode && !check::shm_path(path).exists() && !folder_writable(path);
    let conn = if immutable {
        Connection::open_with_flags(format!("{}?immutable=1", file_uri(path)), flags)
    } else {
        Connection::open_with_flags(path, flags)
    }
    .map_err(|e| check::named(path, e))?;
    conn.busy_timeout(Duration::from_secs(10))?;
    stable_plans(&conn)?;
    Ok(conn)
}

/// Plans that do not depend on the values bound. Without this, a query whose parameter
/// meets a partial index (`holder_of`: `planned_id = ?1` against
/// `items_planned_id ... WHERE planned_id IS NOT NULL`) is compiled again at every step
/// after a new binding, so a cached statement saves nothing: that recompiling was a
/// twentieth of a small upload's CPU. The ledger keeps no statistics for bound values
/// to improve a plan anyway (no ANALYZE).
fn stable_plans(conn: &Connection) -> Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )?;
    Ok(())
}

/// Whether this process may create files next to the ledger (false on a read-only mount).
fn folder_writable(path: &Path) -> bool {
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d,
        None => Path::new("."),
    };
    nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// `file:` URI of a path, every byte that is not plainly safe percent-encoded.
fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    format!(
        "file:{}",
        percent_encoding::percent_encode(absolute.as_os_str().as_bytes(), KEEP)
    )
}

#[cfg(test)]
mod tests;
