//! The folder walk: regular files under a root, in directory order (sorting costs more
//! than the whole ledger lookup on a no-op rerun), with hidden and temporary files skipped
//! and include/exclude globs applied to the relative path.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use globset::{Glob, GlobSet, GlobSetBuilder};
use walkdir::{DirEntry, WalkDir};

use super::{Found, Item};
use crate::config::WalkConfig;
use crate::error::{Error, Result};

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

/// A prepared walk of one folder.
#[derive(Debug)]
pub struct Walk {
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
        Ok(Walk {
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

    /// Iterates over the files, lazily.
    pub fn iter(&self) -> impl Iterator<Item = Found> + '_ {
        let include_hidden = self.cfg.include_hidden;
        WalkDir::new(&self.root)
            .follow_links(self.cfg.follow_symlinks)
            .into_iter()
            .filter_entry(move |e| e.depth() == 0 || include_hidden || !is_hidden(e))
            .filter_map(move |entry| self.found(entry))
    }

    fn found(&self, entry: walkdir::Result<DirEntry>) -> Option<Found> {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => {
                let key = err
                    .path()
                    .and_then(|p| p.strip_prefix(&self.root).ok())
                    .map(key_of)
                    .unwrap_or_else(|| "<walk>".to_string());
                return Some(Found::Bad {
                    key,
                    reason: format!("cannot list: {err}"),
                });
            }
        };
        // With follow_links the type is the target's; without, symlinks are left out here.
        if !entry.file_type().is_file() {
            return None;
        }
        let name = entry.file_name().to_string_lossy();
        if is_temporary(&name) {
            return None;
        }
        let rel = relative(entry.path(), &self.root)?;
        let key = key_of(rel);
        if self.include.as_ref().is_some_and(|set| !set.is_match(&key))
            || self.exclude.is_match(&key)
        {
            return None;
        }
        if rel.to_str().is_none() {
            return Some(Found::Bad {
                key,
                reason: "the file name is not valid UTF-8, so it cannot be an image id or a ledger key; rename it".into(),
            });
        }
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(err) => {
                return Some(Found::Bad {
                    key,
                    reason: format!("cannot read its metadata: {err}"),
                });
            }
        };
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos().min(i64::MAX as u128) as i64)
            .unwrap_or(0);
        Some(Found::Item(Item {
            key,
            path: entry.into_path(),
            size: meta.len(),
            mtime_ns,
        }))
    }
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
            .map(|f| match f {
                Found::Item(i) => i.key,
                Found::Bad { key, reason } => format!("BAD {key}: {reason}"),
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
}
