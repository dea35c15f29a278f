//! `cfimg ledger backup` and `cfimg ledger check`: a consistent copy of a ledger that may be
//! in use, and SQLite's full check of one.

use std::path::{Path, PathBuf};

use rusqlite::Connection;
use rusqlite::backup::{Backup, StepResult};

use super::{Ledger, check, connect_read_only};
use crate::error::{Error, Result};

/// What a backup wrote.
#[derive(Debug, Clone)]
pub struct BackupDone {
    /// Pages copied.
    pub pages: u64,
    /// Bytes of the copy.
    pub bytes: u64,
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Ledger {
    /// Copies the ledger to `to` with SQLite's online backup, in one step: one read
    /// transaction, so the copy is the ledger as of one commit even while a writer goes on
    /// (in WAL mode readers never block it). Written next to `to` and renamed into place
    /// once whole and checked, so that a failed backup never leaves a half copy under its
    /// name; an existing `to` is replaced only with `overwrite`.
    pub fn backup_to(&self, to: &Path, overwrite: bool) -> Result<BackupDone> {
        // Renamed over the ledger (or its -wal or -shm), the copy would take the ledger's
        // name while a running writer goes on writing the old, unlinked file: whatever it
        // records after the copy is lost, and the next run takes no lock the writer holds.
        if let Some(which) = self.own_file(to) {
            return Err(Error::Usage(format!(
                "{} is {which}: a backup must be another file (e.g. {}.bak, or one on another disk)",
                to.display(),
                self.path.display()
            )));
        }
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.is_dir()
        {
            return Err(Error::Usage(format!(
                "cannot write the backup {}: there is no folder {}",
                to.display(),
                dir.display()
            )));
        }
        if to.exists() && !overwrite {
            return Err(Error::Usage(format!(
                "{} exists already: give another file, or --force to replace it",
                to.display()
            )));
        }
        let mut partial = to.as_os_str().to_os_string();
        partial.push(format!(".partial-{}", std::process::id()));
        let partial = PathBuf::from(partial);
        let result = self.backup_into(&partial);
        let done = match result {
            Ok(done) => done,
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                return Err(e);
            }
        };
        std::fs::rename(&partial, to).map_err(|source| {
            let _ = std::fs::remove_file(&partial);
            io(to, source)
        })?;
        // The rename is durable once the folder is.
        if let Some(dir) = to.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            let _ = d.sync_all();
        }
        Ok(done)
    }

    /// Which of the ledger's own files `to` is (by device and inode, so that no spelling
    /// of the path, symlink or hard link passes), if any.
    fn own_file(&self, to: &Path) -> Option<&'static str> {
        use std::os::unix::fs::MetadataExt;
        let target = std::fs::metadata(to).ok()?;
        let same = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
        };
        if same(&self.path) {
            return Some("the ledger itself");
        }
        ["-wal", "-shm", "-journal"].into_iter().find_map(|suffix| {
            let mut side = self.path.as_os_str().to_os_string();
            side.push(suffix);
            same(Path::new(&side))
                .then_some("a file of the ledger's own (its -wal, -shm or -journal)")
        })
    }

    fn backup_into(&self, partial: &Path) -> Result<BackupDone> {
        let _ = std::fs::remove_file(partial);
        let mut dest = Connection::open(partial)?;
        let pages = {
            let backup = Backup::new(&self.conn, &mut dest)?;
            loop {
                match backup.step(-1)? {
                    StepResult::Done => break,
                    // Another connection of the copy (none) or a writer switching the
                    // journal mode holds a lock for a moment.
                    StepResult::Busy | StepResult::Locked | StepResult::More => {
                        std::thread::sleep(std::time::Duration::from_millis(50))
                    }
                    _ => {}
                }
            }
            backup.progress().pagecount.max(0) as u64
        };
        // A copy stands alone: no -wal or -shm beside it, checked before it takes the name.
        dest.query_row("PRAGMA journal_mode = DELETE", [], |r| {
            r.get::<_, String>(0)
        })?;
        let problems = check::pragma_check(&dest, "quick_check", 5)?;
        if !problems.is_empty() {
            return Err(Error::LedgerDamaged {
                path: partial.to_path_buf(),
                damage: problems.join("; "),
            });
        }
        drop(dest);
        let file = std::fs::File::open(partial).map_err(|e| io(partial, e))?;
        file.sync_all().map_err(|e| io(partial, e))?;
        let bytes = file.metadata().map_err(|e| io(partial, e))?.len();
        Ok(BackupDone { pages, bytes })
    }
}

/// SQLite's full `PRAGMA integrity_check` of the ledger at `path`, up to `max` problems
/// (empty: the ledger is whole). Read-only; `no ledger at PATH` when there is none.
pub fn integrity_check(path: &Path, max: u32) -> Result<Vec<String>> {
    if !path.exists() {
        return Err(super::missing(path));
    }
    match check::header(path) {
        Ok(_) => {}
        Err(Error::LedgerDamaged { damage, .. }) => return Ok(vec![damage]),
        Err(e) => return Err(e),
    }
    let conn = connect_read_only(path)?;
    match check::pragma_check(&conn, "integrity_check", max) {
        Ok(problems) => Ok(problems),
        Err(e)
            if e.sqlite_error_code().is_some_and(|c| {
                matches!(
                    c,
                    rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase
                )
            }) =>
        {
            Ok(vec![e.to_string()])
        }
        Err(e) => Err(Error::Ledger(e)),
    }
}
