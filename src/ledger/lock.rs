//! One run per ledger: an exclusive `flock` on the database file itself, held by the writer
//! for as long as it lives.
//!
//! Locking the file (its inode), not a name next to it, is what makes every spelling of the
//! path meet the same lock: a symlink, a hard link, `./x` or a relative path all reach one
//! inode. `flock` locks are independent of the POSIX (`fcntl`) locks SQLite itself takes on
//! the same file, so the two never disturb each other, with one catch: closing *any*
//! descriptor of a file drops every POSIX lock this process holds on it, SQLite's included.
//! So the descriptor opened here is never closed: it is kept, one per inode, for the life
//! of the process, and a later writer of the same ledger reuses it.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use crate::error::{Error, Result};

/// (device, inode) of a ledger file.
type Inode = (u64, u64);

struct Held {
    file: Arc<File>,
    locked: bool,
}

/// Descriptors of the ledger files this process has locked once; never closed (see above).
fn files() -> &'static Mutex<HashMap<Inode, Held>> {
    static FILES: OnceLock<Mutex<HashMap<Inode, Held>>> = OnceLock::new();
    FILES.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The writer's lock on a ledger; released when dropped.
#[derive(Debug)]
pub(super) struct LedgerLock {
    inode: Inode,
    file: Arc<File>,
}

impl Drop for LedgerLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
        if let Ok(mut files) = files().lock()
            && let Some(held) = files.get_mut(&self.inode)
        {
            held.locked = false;
        }
    }
}

fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Takes the ledger's lock, creating the (empty) file if there is none: two runs writing one
/// ledger would both plan the same items, and with Cloudflare-assigned ids nothing on the
/// server would stop them uploading twice.
pub(super) fn lock_exclusively(path: &Path) -> Result<LedgerLock> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
    }
    let mut files = files()
        .lock()
        .map_err(|_| Error::LedgerWrite("the ledger lock table is poisoned".into()))?;
    // Look the inode up before opening: a second descriptor, once closed, would drop the
    // POSIX locks of this process's own connections to the file.
    let known = std::fs::metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
        .filter(|inode| files.contains_key(inode));
    let inode = match known {
        Some(inode) => inode,
        None => {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|source| io(path, source))?;
            let meta = file.metadata().map_err(|source| io(path, source))?;
            let inode = (meta.dev(), meta.ino());
            match files.entry(inode) {
                // Replaced between the look-up and the open, by a file this process has
                // locked before: keep the new descriptor open too rather than close it.
                std::collections::hash_map::Entry::Occupied(_) => std::mem::forget(file),
                std::collections::hash_map::Entry::Vacant(v) => {
                    v.insert(Held {
                        file: Arc::new(file),
                        locked: false,
                    });
                }
            }
            inode
        }
    };
    let held = files
        .get_mut(&inode)
        .ok_or_else(|| Error::LedgerWrite("the ledger lock table lost an entry".into()))?;
    // flock belongs to the open file description, which every writer of this process
    // shares: the flag tells a second writer of this process that the first one is alive.
    if held.locked {
        return Err(Error::LedgerBusy(path.to_path_buf()));
    }
    match held.file.try_lock() {
        Ok(()) => {
            held.locked = true;
            Ok(LedgerLock {
                inode,
                file: held.file.clone(),
            })
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::LedgerBusy(path.to_path_buf())),
        Err(std::fs::TryLockError::Error(source)) => Err(io(path, source)),
    }
}

/// Whether another process holds the writer's lock on the ledger at `path` (a run is alive).
/// Asked without opening the file when this process has not locked it before: a reader must
/// not leave a descriptor behind, and closing one would drop its own connections' locks.
pub fn is_locked(path: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let inode = (meta.dev(), meta.ino());
    if let Ok(files) = files().lock()
        && let Some(held) = files.get(&inode)
    {
        if held.locked {
            return true;
        }
        return match held.file.try_lock_shared() {
            Ok(()) => {
                let _ = held.file.unlock();
                false
            }
            Err(_) => true,
        };
    }
    // Not known here: /proc/locks names every flock by device and inode, without touching
    // the file ("1: FLOCK  ADVISORY  WRITE 4242 00:2f:1234567 0 EOF").
    let Ok(locks) = std::fs::read_to_string("/proc/locks") else {
        return false;
    };
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"FLOCK") && f.get(5) == Some(&wanted.as_str())
    })
}
