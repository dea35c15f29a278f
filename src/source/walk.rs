//! The folder walk: regular files under a root, in directory order (sorting costs more
//! than the whole ledger lookup on a no-op rerun), with hidden and temporary files skipped
//! and include/exclude globs applied to the relative path.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use globset::{Glob, GlobSet, GlobSetBuilder};
use walkdir::{DirEntry, WalkDir};

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{Found, Recount};
use crate::error::{Error, Result};
use crate::item::{Body, Item, Locator, SourceId, SourceKind};
use crate::layer::raw_section;

raw_section! {
/// `[walk]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWalk {
    /// Follow symbolic links.
    pub follow_symlinks: Option<bool>,
    /// Include hidden files and folders (names starting with `.`).
    pub include_hidden: Option<bool>,
    /// Only paths matching one of these globs (relative to the folder).
    pub include: Option<Vec<String>>,
    /// Skip paths matching one of these globs.
    pub exclude: Option<Vec<String>>,
}
}

/// Checked `[walk]` settings.
#[derive(Debug, Clone, Default)]
pub struct WalkConfig {
    /// Follow symbolic links.
    pub follow_symlinks: bool,
    /// Include hidden files and folders.
    pub include_hidden: bool,
    /// Only paths matching one of these globs.
    pub include: Vec<String>,
    /// Skip paths matching one of these globs.
    pub exclude: Vec<String>,
}

/// `[walk]`: every glob must compile.
pub fn validate_walk(w: RawWalk, problems: &mut Vec<String>) -> WalkConfig {
    let walk = WalkConfig {
        follow_symlinks: w.follow_symlinks.unwrap_or(false),
        include_hidden: w.include_hidden.unwrap_or(false),
        include: w.include.unwrap_or_default(),
        exclude: w.exclude.unwrap_or_default(),
    };
    for (key, globs) in [
        ("walk.include", &walk.include),
        ("walk.exclude", &walk.exclude),
    ] {
        for g in globs {
            if let Err(e) = globset::Glob::new(g) {
                problems.push(format!("`{key}` pattern {g:?} is not a valid glob: {e}"));
            }
        }
    }
    walk
}

/// Why a hidden file is passed over.
const HIDDEN_FILE: &str =
    "a hidden file (its name starts with '.'): skipped; --include-hidden takes hidden files";
/// Why a hidden folder is passed over, with everything in it.
const HIDDEN_FOLDER: &str = "a hidden folder (its name starts with '.'): skipped with everything in it; --include-hidden takes hidden files";
/// Why a temporary file is passed over.
const TEMPORARY_FILE: &str =
    "a temporary file (still being written, or an editor's or a download's leftover): skipped";

/// Whether an entry was passed over for being hidden or temporary (the summary counts
/// those apart from symlinks, FIFOs and the like).
pub fn is_hidden_or_temporary(reason: &str) -> bool {
    [HIDDEN_FILE, HIDDEN_FOLDER, TEMPORARY_FILE].contains(&reason)
}

/// Name endings of files that are still being written or are editor leftovers.
const TEMP_SUFFIXES: &[&str] = &[
    "~",
    ".tmp",
    ".temp",
    ".part",
    ".partial",
    ".crdownload",
    ".download",
    ".swp",
    ".swx",
];

/// Decides in the walk's own thread whether a file needs anything more: a rerun's
/// unchanged files are counted there, with no item built or sent for them.
pub trait Settled: Send {
    /// Whether the file `key` with this size and modification time is settled (then it is
    /// counted as such, and the walk hands nothing over for it).
    fn settled(&mut self, key: &str, size: u64, mtime_ns: i64) -> Result<bool>;
    /// Releases any read snapshot before the walk waits for the next stage.
    fn pause(&mut self) -> Result<()>;
}

/// A prepared walk of one folder.
#[derive(Debug)]
pub struct Walk {
    id: SourceId,
    root: PathBuf,
    cfg: WalkConfig,
    include: Option<GlobSet>,
    exclude: GlobSet,
}

impl Walk {
    /// Checks the root and compiles the globs.
    pub fn new(root: &Path, cfg: &WalkConfig) -> Result<Walk> {
        let meta = std::fs::metadata(root).map_err(|source| Error::Io {
            path: root.to_path_buf(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!(
                "{} is not a folder: give the folder to migrate",
                root.display()
            )));
        }
        let include = if cfg.include.is_empty() {
            None
        } else {
            Some(globs(&cfg.include)?)
        };
        // The same folder reached through a symlink or a relative path is the same source.
        let canonical = std::fs::canonicalize(root).map_err(|source| Error::Io {
            path: root.to_path_buf(),
            source,
        })?;
        let location = canonical.to_str().map(str::to_string).ok_or_else(|| {
            Error::Config(vec![format!(
                "{} is not valid UTF-8: give a folder whose path is",
                canonical.display()
            )])
        })?;
        Ok(Walk {
            id: SourceId::new(SourceKind::Dir, location),
            root: root.to_path_buf(),
            cfg: cfg.clone(),
            include,
            exclude: globs(&cfg.exclude)?,
        })
    }

    /// The root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The source's identity: the folder's canonical path.
    pub fn id(&self) -> &SourceId {
        &self.id
    }

    /// Lists every entry into `out` on a thread of the blocking pool.
    pub async fn run(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
    ) -> Result<()> {
        super::run_blocking(move || self.list(&out, &stop)).await
    }

    /// [`Walk::run`], with the files `settled` takes counted in the walk's thread and not
    /// handed over.
    pub async fn run_settled(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
        mut settled: Box<dyn Settled>,
    ) -> Result<()> {
        super::run_blocking(move || self.list_unsettled(&out, &stop, Some(&mut *settled))).await
    }

    /// The file to upload: a folder's items are files.
    pub async fn body(&self, item: &Item) -> Result<Body> {
        match &item.locator {
            Locator::File(path) => Ok(Body::file(path.clone())),
            other => Err(Error::Invalid(format!(
                "a folder source cannot read {}",
                other.describe()
            ))),
        }
    }

    /// A walk is cheap to list again.
    pub fn recount(&self) -> Recount {
        Recount::Cheap
    }

    /// Lists every entry into `out` (blocking) until done or stopped.
    pub fn list(&self, out: &mpsc::Sender<Found>, stop: &CancellationToken) -> Result<()> {
        self.list_unsettled(out, stop, None)
    }

    /// Lists into `out` (blocking) the entries `settled` does not take: a file it calls
    /// settled is counted there and never becomes an [`Item`] or a message (a rerun over a
    /// million unchanged files sends nothing per file).
    pub fn list_unsettled(
        &self,
        out: &mpsc::Sender<Found>,
        stop: &CancellationToken,
        mut settled: Option<&mut (dyn Settled + 'static)>,
    ) -> Result<()> {
        let mut entries = self.entries();
        while let Some(found) = self.next_found(&mut entries, settled.as_deref_mut())? {
            if stop.is_cancelled() {
                break;
            }
            match out.try_send(found) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Closed(_)) => break,
                Err(mpsc::error::TrySendError::Full(found)) => {
                    // The next stage is behind (uploads): hold no read snapshot meanwhile.
                    if let Some(s) = settled.as_deref_mut() {
                        s.pause()?;
                    }
                    if out.blocking_send(found).is_err() {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Iterates over the files, lazily. A hidden folder is passed over as one entry (its
    /// files are not walked): the ledger keeps one row for `.git/`, not one per object.
    pub fn iter(&self) -> impl Iterator<Item = Found> + '_ {
        let mut entries = self.entries();
        // Without a `Settled` nothing can fail but the entries, which come as `Found`s.
        std::iter::from_fn(move || self.next_found(&mut entries, None).ok().flatten())
    }

    fn entries(&self) -> Entries {
        Entries {
            walk: WalkDir::new(&self.root)
                .follow_links(self.cfg.follow_symlinks)
                .into_iter(),
            folder: OpenFolder::default(),
        }
    }

    /// The next entry to hand over, passing over those `settled` takes.
    fn next_found(
        &self,
        entries: &mut Entries,
        mut settled: Option<&mut (dyn Settled + 'static)>,
    ) -> Result<Option<Found>> {
        loop {
            let Some(entry) = entries.walk.next() else {
                return Ok(None);
            };
            if let Ok(e) = &entry
                && e.depth() > 0
                && !self.cfg.include_hidden
                && is_hidden(e)
            {
                let folder = e.file_type().is_dir();
                if folder {
                    entries.walk.skip_current_dir();
                }
                if let Some(found) = self.hidden(e.path(), folder) {
                    return Ok(Some(found));
                }
                continue;
            }
            if let Some(found) = self.found(entry, &mut entries.folder, settled.as_deref_mut())? {
                return Ok(Some(found));
            }
        }
    }

    /// A hidden file or folder, passed over with its reason (unless the globs leave it out
    /// anyway).
    fn hidden(&self, path: &Path, folder: bool) -> Option<Found> {
        let mut key = key_of(relative(path, &self.root)?);
        if self.filtered_out(&key) {
            return None;
        }
        let reason = if folder {
            key.push('/');
            HIDDEN_FOLDER
        } else {
            HIDDEN_FILE
        };
        Some(Found::Ignored {
            key,
            reason: reason.into(),
        })
    }

    /// A temporary file, passed over with its reason (unless the globs leave it out anyway).
    fn temporary(&self, path: &Path) -> Option<Found> {
        let key = key_of(relative(path, &self.root)?);
        if self.filtered_out(&key) {
            return None;
        }
        Some(Found::Ignored {
            key,
            reason: TEMPORARY_FILE.into(),
        })
    }

    /// What one walked entry is: `None` for folders, globbed-out files and files
    /// `settled` takes.
    fn found(
        &self,
        entry: walkdir::Result<DirEntry>,
        folder: &mut OpenFolder,
        settled: Option<&mut (dyn Settled + 'static)>,
    ) -> Result<Option<Found>> {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => return Ok(Some(self.walk_error(&err))),
        };
        // With follow_links the type is the target's; without, a symlink is itself.
        let file_type = entry.file_type();
        // The root itself (a folder, or a symlink to one that walkdir follows) is no item.
        if file_type.is_dir() || entry.depth() == 0 {
            return Ok(None);
        }
        let name = entry.file_name().to_string_lossy();
        if is_temporary(&name) {
            return Ok(self.temporary(entry.path()));
        }
        let Some(rel) = relative(entry.path(), &self.root) else {
            return Ok(None);
        };
        // A UTF-8 path on a '/' system is its own key: borrowed, not allocated, until the
        // file turns out to need more than the quick check.
        let plain = rel.to_str().filter(|_| std::path::MAIN_SEPARATOR == '/');
        let key = match plain {
            Some(k) => std::borrow::Cow::Borrowed(k),
            None => std::borrow::Cow::Owned(key_of(rel)),
        };
        if self.filtered_out(&key) {
            return Ok(None);
        }
        if !file_type.is_file() {
            return Ok(Some(Found::Ignored {
                key: key.into_owned(),
                reason: special_reason(&file_type).into(),
            }));
        }
        if rel.to_str().is_none() {
            return Ok(Some(Found::Bad {
                key: key.into_owned(),
                reason: "the file name is not valid UTF-8, so it cannot be an image id or a ledger key; rename it".into(),
            }));
        }
        let (size, mtime_ns) = match folder.stat(&entry, self.cfg.follow_symlinks) {
            Some(found) => found,
            None => match entry.metadata() {
                Ok(meta) => (meta.len(), mtime_ns(&meta)),
                Err(err) => {
                    return Ok(Some(Found::Bad {
                        key: key.into_owned(),
                        reason: format!("cannot read its metadata: {err}"),
                    }));
                }
            },
        };
        if let Some(s) = settled
            && s.settled(&key, size, mtime_ns)?
        {
            return Ok(None);
        }
        let key = key.into_owned();
        Ok(Some(Found::Item(Item::file(
            key,
            entry.into_path(),
            size,
            mtime_ns,
        ))))
    }

    /// An entry walkdir could not read, passed over or failed with its reason.
    fn walk_error(&self, err: &walkdir::Error) -> Found {
        let key = err
            .path()
            .and_then(|p| p.strip_prefix(&self.root).ok())
            .map(key_of)
            .unwrap_or_else(|| "<walk>".to_string());
        if err.loop_ancestor().is_some() {
            return Found::Ignored {
                key,
                reason: "a symlink loop: it leads back to a folder above it".into(),
            };
        }
        let dangling = err.io_error().map(std::io::Error::kind)
            == Some(std::io::ErrorKind::NotFound)
            && err.path().is_some_and(|p| p.is_symlink());
        if dangling {
            return Found::Ignored {
                key,
                reason: "a dangling symlink: its target does not exist".into(),
            };
        }
        // Permission denied, EIO: a later run may read it, so it is a failure, not a
        // verdict on the item.
        Found::Bad {
            key,
            reason: format!("cannot list: {err}"),
        }
    }

    /// The folders of the tree (the root first) under the same rules as files: what a
    /// watcher needs a watch on.
    pub fn folders(&self) -> impl Iterator<Item = PathBuf> + '_ {
        let include_hidden = self.cfg.include_hidden;
        WalkDir::new(&self.root)
            .follow_links(self.cfg.follow_symlinks)
            .into_iter()
            .filter_entry(move |e| e.depth() == 0 || include_hidden || !is_hidden(e))
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_dir())
            .map(DirEntry::into_path)
    }

    /// One path below the root, judged by the walk's rules (hidden, temporary, globs, file
    /// type): `None` for folders, passed-over names and paths that are not there.
    pub fn entry(&self, path: &Path) -> Option<Found> {
        let rel = relative(path, &self.root)?;
        if rel.as_os_str().is_empty() {
            return None;
        }
        let hidden = rel
            .components()
            .any(|c| c.as_os_str().to_str().is_some_and(|n| n.starts_with('.')));
        // The watcher sees these come and go (a download's `.part` becomes the image): it
        // records nothing for them, but -v shows each one.
        if hidden && !self.cfg.include_hidden {
            tracing::debug!(path = %rel.display(), reason = HIDDEN_FILE, "passed over");
            return None;
        }
        let name = path.file_name()?.to_string_lossy();
        if is_temporary(&name) {
            tracing::debug!(path = %rel.display(), reason = TEMPORARY_FILE, "passed over");
            return None;
        }
        let key = key_of(rel);
        if self.filtered_out(&key) {
            return None;
        }
        let meta = if self.cfg.follow_symlinks {
            std::fs::metadata(path)
        } else {
            std::fs::symlink_metadata(path)
        };
        let meta = match meta {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                return Some(Found::Bad {
                    key,
                    reason: format!("cannot read its metadata: {e}"),
                });
            }
        };
        let file_type = meta.file_type();
        if file_type.is_dir() {
            return None;
        }
        if !file_type.is_file() {
            return Some(Found::Ignored {
                key,
                reason: special_reason(&file_type).into(),
            });
        }
        if rel.to_str().is_none() {
            return Some(Found::Bad {
                key,
                reason: "the file name is not valid UTF-8, so it cannot be an image id or a ledger key; rename it".into(),
            });
        }
        Some(Found::Item(Item::file(
            key,
            path.to_path_buf(),
            meta.len(),
            mtime_ns(&meta),
        )))
    }

    /// Whether symlinks are followed.
    pub fn follows_symlinks(&self) -> bool {
        self.cfg.follow_symlinks
    }

    /// Whether hidden files and folders are included.
    pub fn includes_hidden(&self) -> bool {
        self.cfg.include_hidden
    }

    /// The path of a key.
    pub fn path_of(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    fn filtered_out(&self, key: &str) -> bool {
        self.include.as_ref().is_some_and(|set| !set.is_match(key)) || self.exclude.is_match(key)
    }
}

/// The walk's state: walkdir's iterator, and the folder of the last file statted.
struct Entries {
    walk: walkdir::IntoIter,
    folder: OpenFolder,
}

/// The folder of the files being walked, kept open: a file is statted by its name in it,
/// one path component for the kernel to look up instead of every one from the root (the
/// lookups were the largest single cost of a no-op rerun over a million files).
#[derive(Default)]
struct OpenFolder {
    path: Option<PathBuf>,
    #[cfg(unix)]
    dir: Option<std::fs::File>,
}

impl OpenFolder {
    /// The size and modification time (ns) of a walked file, `None` when the folder cannot
    /// be opened or the stat fails (the caller then asks by path, for its own error).
    #[cfg(unix)]
    fn stat(&mut self, entry: &DirEntry, follow: bool) -> Option<(u64, i64)> {
        use nix::fcntl::AtFlags;
        let parent = entry.path().parent()?;
        if self.path.as_deref() != Some(parent) {
            self.dir = std::fs::File::open(parent).ok();
            self.path = Some(parent.to_path_buf());
        }
        let flags = if follow {
            AtFlags::empty()
        } else {
            AtFlags::AT_SYMLINK_NOFOLLOW
        };
        let st = nix::sys::stat::fstatat(self.dir.as_ref()?, entry.file_name(), flags).ok()?;
        // As `mtime_ns`: before the epoch reads as unknown.
        let mtime_ns = if st.st_mtime < 0 {
            0
        } else {
            (i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec))
                .min(i128::from(i64::MAX)) as i64
        };
        Some((u64::try_from(st.st_size).unwrap_or(0), mtime_ns))
    }

    #[cfg(not(unix))]
    fn stat(&mut self, _entry: &DirEntry, _follow: bool) -> Option<(u64, i64)> {
        None
    }
}

/// A file's modification time in ns since the epoch (0 when unknown).
pub fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
        .unwrap_or(0)
}

/// Why a directory entry that is neither a file nor a folder is passed over.
fn special_reason(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe), not a file";
        }
        if t.is_socket() {
            return "a socket, not a file";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device, not a file";
        }
    }
    if t.is_symlink() {
        return "a symlink, not followed (use --follow-symlinks)";
    }
    "not a regular file"
}

/// The path below the root. Slicing the bytes skips `strip_prefix`'s component parsing,
/// which showed in no-op rerun profiles; every entry's path starts with the root as given.
#[cfg(unix)]
fn relative<'a>(path: &'a Path, root: &Path) -> Option<&'a Path> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = path.as_os_str().as_bytes();
    let root_bytes = root.as_os_str().as_bytes();
    match bytes.get(root_bytes.len()) {
        Some(b'/') if bytes.starts_with(root_bytes) => Some(Path::new(
            std::ffi::OsStr::from_bytes(&bytes[root_bytes.len() + 1..]),
        )),
        _ => path.strip_prefix(root).ok(),
    }
}

#[cfg(not(unix))]
fn relative<'a>(path: &'a Path, root: &Path) -> Option<&'a Path> {
    path.strip_prefix(root).ok()
}

fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| Error::Config(vec![format!("glob {p:?}: {e}")]))?);
    }
    b.build()
        .map_err(|e| Error::Config(vec![format!("globs: {e}")]))
}

fn key_of(rel: &Path) -> String {
    // The common case, a UTF-8 path on a '/' system, needs no splitting.
    if std::path::MAIN_SEPARATOR == '/'
        && let Some(s) = rel.to_str()
    {
        return s.to_string();
    }
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

fn is_hidden(e: &DirEntry) -> bool {
    e.file_name().to_str().is_some_and(|n| n.starts_with('.'))
}

fn is_temporary(name: &str) -> bool {
    name.starts_with(".#")
        || name.starts_with("~$")
        || TEMP_SUFFIXES.iter().any(|s| name.ends_with(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(root: &Path, cfg: &WalkConfig) -> Vec<String> {
        let mut keys: Vec<String> = Walk::new(root, cfg)
            .unwrap()
            .iter()
            .filter_map(|f| match f {
                Found::Item(i) => Some(i.key),
                Found::Bad { key, reason } => Some(format!("BAD {key}: {reason}")),
                Found::Ignored { .. } | Found::Gone { .. } => None,
            })
            .collect();
        keys.sort();
        keys
    }

    #[test]
    fn walks_regular_files_skipping_hidden_and_temporary_ones() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        for f in [
            "b/c.jpg",
            "a.png",
            ".hidden/x.jpg",
            ".dot.jpg",
            "d/e.jpg.part",
            "f~",
            "é/ü.gif",
        ] {
            let p = r.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        }
        #[cfg(unix)]
        std::os::unix::fs::symlink(r.join("a.png"), r.join("link.png")).unwrap();
        assert_eq!(
            keys(r, &WalkConfig::default()),
            ["a.png", "b/c.jpg", "é/ü.gif"]
        );

        let cfg = WalkConfig {
            include_hidden: true,
            follow_symlinks: true,
            ..WalkConfig::default()
        };
        assert_eq!(
            keys(r, &cfg),
            [
                ".dot.jpg",
                ".hidden/x.jpg",
                "a.png",
                "b/c.jpg",
                "link.png",
                "é/ü.gif"
            ]
        );

        let cfg = WalkConfig {
            include: vec!["**/*.jpg".into(), "*.png".into()],
            exclude: vec!["b/**".into()],
            ..WalkConfig::default()
        };
        assert_eq!(keys(r, &cfg), ["a.png"]);
    }

    #[cfg(unix)]
    #[test]
    fn special_entries_are_reported_with_their_reason_never_silently() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::write(r.join("a.png"), b"x").unwrap();
        std::os::unix::fs::symlink(r.join("a.png"), r.join("link.png")).unwrap();
        std::os::unix::fs::symlink(r.join("missing.png"), r.join("dangling.png")).unwrap();
        std::fs::create_dir(r.join("sub")).unwrap();
        std::os::unix::fs::symlink(r, r.join("sub/loop")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(r.join("pipe.png"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let ignored = |cfg: &WalkConfig| {
            let mut v: Vec<String> = Walk::new(r, cfg)
                .unwrap()
                .iter()
                .filter_map(|f| match f {
                    Found::Ignored { key, reason } => Some(format!("{key}: {reason}")),
                    _ => None,
                })
                .collect();
            v.sort();
            v
        };
        let plain = ignored(&WalkConfig::default());
        assert_eq!(plain.len(), 4, "{plain:?}");
        assert!(plain[0].starts_with("dangling.png: a symlink, not followed"));
        assert!(plain[1].starts_with("link.png: a symlink, not followed"));
        assert!(plain[2].starts_with("pipe.png: a FIFO"));
        assert!(plain[3].starts_with("sub/loop: a symlink"));
        let follow = ignored(&WalkConfig {
            follow_symlinks: true,
            ..WalkConfig::default()
        });
        assert_eq!(follow.len(), 3, "{follow:?}");
        assert!(follow[0].starts_with("dangling.png: a dangling symlink"));
        assert!(follow[1].starts_with("pipe.png: a FIFO"));
        assert!(follow[2].starts_with("sub/loop: a symlink loop"));
    }
}
