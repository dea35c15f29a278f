//! One run per ledger: `<ledger>.lock`, held by the writer for as long as it lives.

use std::path::Path;

use crate::error::{Error, Result};

/// Takes `<ledger>.lock`: two runs writing one ledger would both plan the same items, and
/// with Cloudflare-assigned ids nothing on the server would stop them uploading twice.
pub(super) fn lock_exclusively(path: &Path) -> Result<std::fs::File> {
    let lock_path = lock_path_of(path);
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

fn lock_path_of(path: &Path) -> std::path::PathBuf {
    let mut name = path
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

/// Whether a writer (a run, a daemon) holds the ledger's lock right now: tried without
/// waiting, creating nothing, and let go at once. A read-only view uses it to tell a live
/// run from one that was killed.
pub fn writer_alive(path: &Path) -> bool {
    let Ok(file) = std::fs::File::open(lock_path_of(path)) else {
        return false;
    };
    matches!(
        file.try_lock_shared(),
        Err(std::fs::TryLockError::WouldBlock)
    )
}
