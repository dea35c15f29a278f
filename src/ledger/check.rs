//! Is the ledger whole? Checked when a command opens it, before anything is written: a
//! damaged ledger written into spreads the damage, and a run on a ledger that lost its rows
//! would upload what it already uploaded. `cfimg ledger check` runs SQLite's full check.
//!
//! The page-by-page check reads the whole file (a second per million rows), so it is
//! skipped when the file is provably as a clean close left it: that close writes a marker
//! beside the ledger (`<ledger>-clean`) naming the file's device, inode, size, change and
//! modification times and SQLite's change counter; a ledger that was not closed cleanly,
//! or was written in any way since (ctime cannot be set back from user space), gets the
//! full check. Damage that leaves all of those alone (a bad disk sector) is then found by
//! `cfimg ledger check`, not at open.

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

/// The marker a clean close leaves beside a ledger.
pub(super) fn clean_path(path: &Path) -> PathBuf {
    sidecar(path, "-clean")
}

/// What the marker says of a ledger at rest: `None` when the file is not at rest (a WAL
/// or a rollback journal beside it: SQLite would change the file when it reads it).
fn at_rest(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    if wal_path(path).exists() || sidecar(path, "-journal").exists() {
        return None;
    }
    let mut file = std::fs::File::open(path).ok()?;
    let m = file.metadata().ok()?;
    let mut h = [0u8; HEADER];
    file.read_exact(&mut h).ok()?;
    Some(format!(
        "cfimg ledger closed cleanly: dev {} ino {} size {} mtime {}.{:09} ctime {}.{:09} counter {}\n",
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        u32::from_be_bytes([h[24], h[25], h[26], h[27]]),
    ))
}

/// Records a clean close of the ledger at `path` (best effort: without a marker the next
/// open runs the full check, which is only slower).
pub(super) fn mark_clean(path: &Path) {
    if let Some(state) = at_rest(path) {
        let _ = std::fs::write(clean_path(path), state);
    }
}

/// Removes the marker before a writer changes the file (best effort: a marker left behind
/// no longer matches the file once it is written).
pub(super) fn unmark_clean(path: &Path) {
    let _ = std::fs::remove_file(clean_path(path));
}

/// Whether the file is exactly as its last clean close left it.
fn closed_cleanly(path: &Path) -> bool {
    match (std::fs::read_to_string(clean_path(path)), at_rest(path)) {
        (Ok(marked), Some(now)) => marked == now,
        _ => false,
    }
}

/// The largest part of the ledger the check at open maps into memory at once.
const CHECK_MMAP_BYTES: i64 = 1 << 30;

/// The check at open: the schema can be read, and `PRAGMA quick_check` (every page of every
/// table and index is read and its b-tree structure checked; about 0.2 s per 100,000 rows,
/// see the README) finds nothing. The page-by-page part is skipped for a file exactly as a
/// clean close left it (see the module's comment). Call before anything reads the file
/// through `conn`.
pub(super) fn at_open(conn: &Connection, path: &Path) -> Result<()> {
    let clean = closed_cleanly(path);
    conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(|e| named(path, e))?;
    if clean {
        return Ok(());
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{Ledger, integrity_check};

    /// A ledger of a few hundred rows, closed cleanly.
    fn ledger(dir: &Path) -> PathBuf {
        let path = dir.join("l.sqlite");
        let l = Ledger::open(&path).unwrap();
        l.conn
            .execute_batch(
                "CREATE TABLE filler (x TEXT);
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 400)
                 INSERT INTO filler SELECT printf('%0200d', i) FROM n;",
            )
            .unwrap();
        drop(l);
        path
    }

    /// Overwrites the start of the last page, where only a page-by-page check looks.
    fn damage_last_page(path: &Path) {
        let mut bytes = std::fs::read(path).unwrap();
        let page = u16::from_be_bytes([bytes[16], bytes[17]]) as usize;
        let at = bytes.len() - page;
        bytes[at..at + 64].fill(0xA5);
        std::fs::write(path, bytes).unwrap();
    }

    fn opened(path: &Path) -> Result<()> {
        let conn = Connection::open(path).unwrap();
        at_open(&conn, path)
    }

    #[test]
    fn a_clean_close_is_trusted_only_while_the_file_is_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger(dir.path());
        assert!(closed_cleanly(&path), "a clean close leaves its marker");
        // While a writer has it open there is no marker: a crash leaves none behind.
        let l = Ledger::open(&path).unwrap();
        assert!(!clean_path(&path).exists());
        drop(l);
        assert!(closed_cleanly(&path));
        damage_last_page(&path);
        assert!(!closed_cleanly(&path), "written since the clean close");
        let err = opened(&path).unwrap_err();
        assert!(matches!(err, Error::LedgerDamaged { .. }), "{err}");
    }

    #[test]
    fn a_ledger_not_closed_cleanly_gets_the_full_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = ledger(dir.path());
        std::fs::remove_file(clean_path(&path)).unwrap();
        opened(&path).unwrap();
        damage_last_page(&path);
        assert!(matches!(
            opened(&path).unwrap_err(),
            Error::LedgerDamaged { .. }
        ));
    }

    #[test]
    fn damage_that_leaves_the_file_as_marked_is_found_by_ledger_check() {
        // What the cheap path gives up: damage that changes none of what the marker names
        // (here, a marker forged after the damage) is not seen at open; `ledger check` runs
        // SQLite's full check whatever the marker says.
        let dir = tempfile::tempdir().unwrap();
        let path = ledger(dir.path());
        damage_last_page(&path);
        mark_clean(&path);
        opened(&path).unwrap();
        assert!(!integrity_check(&path, 5).unwrap().is_empty());
    }
}
