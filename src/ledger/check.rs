//! Is the ledger whole? Checked when a command opens it, before anything is written: a
//! damaged ledger written into spreads the damage, and a run on a ledger that lost its rows
//! would upload what it already uploaded. `cfimg ledger check` runs SQLite's full check.

use std::io::Read;
use std::path::{Path, PathBuf};

use rusqlite::Connection;

use crate::error::{Error, Result};

/// The size of SQLite's file header.
const HEADER: usize = 100;

/// What SQLite's file header says about the file, when it is one.
#[derive(Debug, Clone, Copy)]
pub(super) struct Header {
    /// The header says the database is in WAL mode.
    pub wal: bool,
}

fn damaged(path: &Path, damage: impl Into<String>) -> Error {
    Error::LedgerDamaged {
        path: path.to_path_buf(),
        damage: damage.into(),
    }
}

fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(suffix);
    PathBuf::from(name)
}

/// The WAL file next to a ledger.
pub(super) fn wal_path(path: &Path) -> PathBuf {
    sidecar(path, "-wal")
}

/// The shared-memory index next to a ledger in WAL mode.
pub(super) fn shm_path(path: &Path) -> PathBuf {
    sidecar(path, "-shm")
}

/// Reads and checks the file header without SQLite (nothing is opened for writing): the
/// magic, a page size SQLite can have, and a file that holds every page the header counts.
/// `None` for an empty file (a new ledger).
pub(super) fn header(path: &Path) -> Result<Option<Header>> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(None);
    }
    let mut h = [0u8; HEADER];
    if len < HEADER as u64 {
        return Err(damaged(
            path,
            format!("it is {len} bytes long, shorter than a SQLite database header"),
        ));
    }
    file.read_exact(&mut h).map_err(io)?;
    if &h[..16] != b"SQLite format 3\0" {
        return Err(damaged(
            path,
            "its first bytes are not a SQLite database header (damaged, or another kind of file)",
        ));
    }
    let page_size = match u16::from_be_bytes([h[16], h[17]]) {
        1 => 65536u64,
        n if n >= 512 && n.is_power_of_two() => u64::from(n),
        n => {
            return Err(damaged(
                path,
                format!("its header gives an impossible page size ({n})"),
            ));
        }
    };
    // The header's page count is valid when the change counter at 24 matches the one at 92.
    // While a WAL holds commits, the file may lag behind the header: checked only without.
    let pages = u64::from(u32::from_be_bytes([h[28], h[29], h[30], h[31]]));
    let counted = h[24..28] == h[92..96] && pages > 0;
    let wal_empty = std::fs::metadata(wal_path(path)).map_or(true, |m| m.len() == 0);
    if counted && wal_empty && len < pages * page_size {
        return Err(damaged(
            path,
            format!(
                "its header counts {pages} pages of {page_size} bytes, but the file holds only {} (it was cut short)",
                len / page_size
            ),
        ));
    }
    Ok(Some(Header { wal: h[18] == 2 }))
}

/// What SQLite says when it meets damage, turned into the ledger's damage error.
pub(super) fn named(path: &Path, e: rusqlite::Error) -> Error {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase) => {
            damaged(path, e.to_string())
        }
        _ => Error::Ledger(e),
    }
}

/// The largest part of the ledger the check at open maps into memory at once.
const CHECK_MMAP_BYTES: i64 = 1 << 30;

/// The check at open: the schema can be read, and `PRAGMA quick_check` (every page of every
/// table and index is read and its b-tree structure checked; about 0.2 s per 100,000 rows,
/// see the README) finds nothing.
pub(super) fn at_open(conn: &Connection, path: &Path) -> Result<()> {
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| named(path, e))?;
    // Read through a memory map, the check costs about half (0.07 s instead of 0.14 s per
    // 100,000 rows, warm cache): it runs at every open, so a no-op rerun pays it. The header
    // check has made sure the file holds every page it counts, so no read falls past its end.
    conn.pragma_update(None, "mmap_size", CHECK_MMAP_BYTES)
        .map_err(|e| named(path, e))?;
    let problems = pragma_check(conn, "quick_check", 5);
    let _ = conn.pragma_update(None, "mmap_size", 0);
    let problems = problems.map_err(|e| named(path, e))?;
    match problems.is_empty() {
        true => Ok(()),
        false => Err(damaged(path, problems.join("; "))),
    }
}

/// Runs `PRAGMA integrity_check` or `quick_check`, up to `max` problems; empty when whole.
pub(super) fn pragma_check(
    conn: &Connection,
    pragma: &str,
    max: u32,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA {pragma}({max})"))?;
    let lines = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(lines.into_iter().filter(|l| l != "ok").collect())
}
