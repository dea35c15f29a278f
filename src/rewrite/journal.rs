//! The rewrite journal and its replay (`cfimg rewrite --undo`).
//!
//! JSON lines: a first line `{"cfimg_rewrite_journal":1}`, then per file a header
//! `{"file": OUTPUT, "from": INPUT}`, one line per change in file order
//! `{"at": OFFSET_IN_INPUT, "old": "...", "new": "..."}` (`old_hex`/`new_hex` instead when the
//! bytes are not UTF-8), and a footer `{"end": OUTPUT, "before_sha256", "before_size",
//! "after_sha256", "after_size", "edits"}`. Undo checks that the file still hashes to
//! `after_sha256`, puts every `old` back, and replaces the file only when the result hashes
//! to `before_sha256`: the input byte for byte, or nothing changed.

use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::engine::Edit;

/// The first line of every journal.
const MAGIC: &str = r#"{"cfimg_rewrite_journal":1}"#;

/// A reader or writer that hashes and counts what passes through.
pub struct Hashing<T> {
    inner: T,
    hash: Sha256,
    size: u64,
}

impl<T> Hashing<T> {
    /// Wraps `inner`.
    pub fn new(inner: T) -> Hashing<T> {
        Hashing {
            inner,
            hash: Sha256::new(),
            size: 0,
        }
    }

    /// The SHA-256 (hex) and size of what passed, and the inner value.
    pub fn finish(self) -> (String, u64, T) {
        (hex::encode(self.hash.finalize()), self.size, self.inner)
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    file: PathBuf,
    from: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Footer {
    end: PathBuf,
    before_sha256: String,
    before_size: u64,
    after_sha256: String,
    after_size: u64,
    edits: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Line {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    old: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    old_hex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    new_hex: Option<String>,
}

impl Line {
    fn of(e: &Edit) -> Line {
        let mut l = Line {
            at: Some(e.at),
            ..Line::default()
        };
        match String::from_utf8(e.old.clone()) {
            Ok(s) => l.old = Some(s),
            Err(_) => l.old_hex = Some(hex::encode(&e.old)),
        }
        match String::from_utf8(e.new.clone()) {
            Ok(s) => l.new = Some(s),
            Err(_) => l.new_hex = Some(hex::encode(&e.new)),
        }
        l
    }

    fn edit(self) -> Option<Edit> {
        let bytes = |s: Option<String>, h: Option<String>| match (s, h) {
            (Some(s), _) => Some(s.into_bytes()),
            (None, Some(h)) => hex::decode(h).ok(),
            (None, None) => None,
        };
        Some(Edit {
            at: self.at?,
            old: bytes(self.old, self.old_hex)?,
            new: bytes(self.new, self.new_hex)?,
        })
    }
}

/// Writes a journal.
pub struct Journal {
    w: BufWriter<std::fs::File>,
    edits: u64,
}

impl Journal {
    /// Creates (truncates) the journal file.
    pub fn create(path: &Path) -> io::Result<Journal> {
        let mut w = BufWriter::new(std::fs::File::create(path)?);
        writeln!(w, "{MAGIC}")?;
        Ok(Journal { w, edits: 0 })
    }

    fn line(&mut self, v: &impl Serialize) -> io::Result<()> {
        serde_json::to_writer(&mut self.w, v)?;
        self.w.write_all(b"\n")
    }

    /// Starts a file's section.
    pub fn begin(&mut self, file: &Path, from: &Path) -> io::Result<()> {
        self.edits = 0;
        self.line(&Header {
            file: file.to_path_buf(),
            from: from.to_path_buf(),
        })
    }

    /// Records one change.
    pub fn edit(&mut self, e: &Edit) -> io::Result<()> {
        self.edits += 1;
        self.line(&Line::of(e))
    }

    /// Ends a file's section with the hashes undo checks.
    pub fn end(
        &mut self,
        file: &Path,
        before: (String, u64),
        after: (String, u64),
    ) -> io::Result<()> {
        let edits = self.edits;
        self.line(&Footer {
            end: file.to_path_buf(),
            before_sha256: before.0,
            before_size: before.1,
            after_sha256: after.0,
            after_size: after.1,
            edits,
        })?;
        self.w.flush()?;
        self.w.get_ref().sync_data()
    }
}

/// What undo did to one file.
#[derive(Debug)]
pub struct Restored {
    /// The file put back.
    pub file: PathBuf,
    /// Changes reverted.
    pub edits: u64,
}

fn bad(journal: &Path, line: usize, what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("{}, line {line}: {what}", journal.display()),
    )
}

/// Replays a journal backwards: every file it names gets its input bytes back. A file that
/// changed since the rewrite is left as it is (an error names it); the others are restored.
pub fn undo(journal: &Path) -> io::Result<Vec<io::Result<Restored>>> {
    // First pass: the footers (small), so each file is checked against its hashes.
    let mut footers = Vec::new();
    let mut lines = BufReader::new(std::fs::File::open(journal)?).lines();
    match lines.next() {
        Some(Ok(first)) if first.trim() == MAGIC => {}
        _ => return Err(bad(journal, 1, "not a cfimg rewrite journal")),
    }
    for (n, line) in lines.enumerate() {
        let line = line?;
        if line.starts_with("{\"end\"") {
            let f: Footer =
                serde_json::from_str(&line).map_err(|e| bad(journal, n + 2, &e.to_string()))?;
            footers.push(f);
        }
    }
    let mut lines = BufReader::new(std::fs::File::open(journal)?)
        .lines()
        .enumerate()
        .skip(1);
    let mut results = Vec::new();
    for footer in footers {
        // The header, then the edits up to this footer.
        let header: Header = loop {
            let Some((n, line)) = lines.next() else {
                return Err(bad(journal, 0, "ends before a file's section"));
            };
            let line = line?;
            if line.starts_with("{\"file\"") {
                break serde_json::from_str(&line)
                    .map_err(|e| bad(journal, n + 1, &e.to_string()))?;
            }
        };
        if header.file != footer.end {
            return Err(bad(
                journal,
                0,
                "a file's section has another file's footer",
            ));
        }
        let mut edits = std::iter::from_fn(|| {
            let (n, line) = lines.next()?;
            let line = match line {
                Ok(l) => l,
                Err(e) => return Some(Err(e)),
            };
            if line.starts_with("{\"end\"") {
                return None;
            }
            Some(
                serde_json::from_str::<Line>(&line)
                    .ok()
                    .and_then(Line::edit)
                    .ok_or_else(|| bad(journal, n + 1, "not a change")),
            )
        })
        // Ends at the footer, and stays ended: the next section is not this one's.
        .fuse();
        let result = restore(&header.file, &footer, &mut edits);
        // Skip what is left of a section that failed part-way.
        for _ in edits.by_ref() {}
        results.push(result);
    }
    Ok(results)
}

/// Restores one file from its changes, through a temporary file renamed over it.
fn restore(
    file: &Path,
    footer: &Footer,
    edits: &mut dyn Iterator<Item = io::Result<Edit>>,
) -> io::Result<Restored> {
    let changed = |what: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} changed since the rewrite ({what}): left as it is",
                file.display()
            ),
        )
    };
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut r = Hashing::new(BufReader::new(std::fs::File::open(file)?));
    let tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut w = Hashing::new(BufWriter::new(tmp));
    let (mut pos, mut shift, mut count) = (0u64, 0i64, 0u64);
    let mut seen = Vec::new();
    for e in edits {
        let e = e?;
        let target = (e.at as i64 + shift) as u64;
        if target < pos {
            return Err(changed("changes out of order".into()));
        }
        io::copy(&mut (&mut r).take(target - pos), &mut w)?;
        seen.resize(e.new.len(), 0);
        r.read_exact(&mut seen)
            .map_err(|_| changed(format!("it ends before offset {target}")))?;
        if seen != e.new {
            return Err(changed(format!(
                "offset {target} does not hold the new bytes"
            )));
        }
        w.write_all(&e.old)?;
        pos = target + e.new.len() as u64;
        shift += e.new.len() as i64 - e.old.len() as i64;
        count += 1;
    }
    io::copy(&mut r, &mut w)?;
    let (after, after_size, _) = r.finish();
    if after != footer.after_sha256 || after_size != footer.after_size {
        return Err(changed(
            "its SHA-256 is not the one the rewrite wrote".into(),
        ));
    }
    let (before, before_size, inner) = w.finish();
    if before != footer.before_sha256 || before_size != footer.before_size {
        return Err(changed(
            "undoing did not give back the input's SHA-256".into(),
        ));
    }
    let tmp = inner.into_inner().map_err(|e| e.into_error())?;
    if let Ok(meta) = std::fs::metadata(file) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.as_file().sync_data()?;
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(Restored {
        file: file.to_path_buf(),
        edits: count,
    })
}
