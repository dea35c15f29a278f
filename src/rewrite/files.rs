//! Which files `rewrite` reads and where each one's output goes: in place (through a
//! temporary file renamed over it), into a mirror tree under `-o DIR`, or nowhere (a dry run
//! that only reports).

use std::io::{self, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::engine::{self, Edit, Matcher, Miss, Options, Sink, Stats};
use super::journal::{Hashing, Journal};

/// File name extensions a folder is searched for (named files are read whatever their name).
pub const EXTENSIONS: &[&str] = &[
    "html", "htm", "xhtml", "shtml", "css", "scss", "md", "markdown", "mdx", "json", "jsonl",
    "ndjson", "xml", "svg", "rss", "atom", "sql", "txt", "csv", "tsv", "yaml", "yml",
];

/// Where rewritten files go.
#[derive(Debug, Clone)]
pub enum Output {
    /// Nowhere: report only.
    DryRun,
    /// Over the input.
    InPlace,
    /// The same relative path under this folder.
    Dir(PathBuf),
}

/// One file to rewrite.
#[derive(Debug, Clone)]
pub struct Job {
    /// The file read.
    pub input: PathBuf,
    /// The file written (`None`: dry run).
    pub output: Option<PathBuf>,
}

/// The files named (a folder: every file under it with a known extension), in a stable order.
pub fn jobs(inputs: &[PathBuf], out: &Output) -> io::Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for input in inputs {
        let meta = std::fs::metadata(input)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", input.display())))?;
        let target = |rel: &Path, file: &Path| match out {
            Output::DryRun => None,
            Output::InPlace => Some(file.to_path_buf()),
            Output::Dir(d) => Some(d.join(rel)),
        };
        if meta.is_dir() {
            let walk = walkdir::WalkDir::new(input)
                .sort_by_file_name()
                .follow_links(false);
            for entry in walk {
                let entry = entry.map_err(io::Error::other)?;
                if !entry.file_type().is_file() {
                    continue;
                }
                let known = entry
                    .path()
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()));
                if !known {
                    continue;
                }
                let rel = entry.path().strip_prefix(input).unwrap_or(entry.path());
                jobs.push(Job {
                    input: entry.path().to_path_buf(),
                    output: target(rel, entry.path()),
                });
            }
        } else {
            let name = input.file_name().map(Path::new).unwrap_or(input);
            jobs.push(Job {
                input: input.clone(),
                output: target(name, input),
            });
        }
    }
    if let Output::Dir(d) = out {
        let d = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
        for j in &jobs {
            if std::fs::canonicalize(&j.input).is_ok_and(|i| i.starts_with(&d)) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is inside -o {}: write elsewhere, or use --in-place",
                        j.input.display(),
                        d.display()
                    ),
                ));
            }
        }
    }
    Ok(jobs)
}

struct Report<'a> {
    on_miss: &'a mut dyn FnMut(u64, &str, Miss),
    journal: Option<&'a mut Journal>,
}

impl Sink for Report<'_> {
    fn missed(&mut self, line: u64, url: &str, why: Miss) {
        (self.on_miss)(line, url, why)
    }
    fn edit(&mut self, e: &Edit) -> io::Result<()> {
        match self.journal.as_deref_mut() {
            Some(j) => j.edit(e),
            None => Ok(()),
        }
    }
}

/// Rewrites one file; its changes go to the journal (when writing), its misses to `on_miss`.
/// The output appears whole or not at all (written aside, then renamed).
pub fn rewrite(
    m: &Matcher,
    job: &Job,
    resolve: &mut dyn FnMut(&str) -> Option<String>,
    on_miss: &mut dyn FnMut(u64, &str, Miss),
    mut journal: Option<&mut Journal>,
    opts: &Options,
) -> io::Result<Stats> {
    let named = |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let file = std::fs::File::open(&job.input).map_err(|e| named(e, &job.input))?;
    let mut input = Hashing::new(BufReader::with_capacity(opts.chunk.max(1), file));
    let Some(out) = &job.output else {
        let mut report = Report {
            on_miss,
            journal: None,
        };
        return engine::rewrite(m, &mut input, &mut io::sink(), resolve, &mut report, opts)
            .map_err(|e| named(e, &job.input));
    };
    let dir = out
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| named(e, dir))?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| named(e, dir))?;
    let mut output = Hashing::new(BufWriter::with_capacity(1 << 20, tmp));
    if let Some(j) = journal.as_deref_mut() {
        j.begin(out, &job.input)?;
    }
    let mut report = Report {
        on_miss,
        journal: journal.as_deref_mut(),
    };
    let stats = engine::rewrite(m, &mut input, &mut output, resolve, &mut report, opts)
        .map_err(|e| named(e, &job.input))?;
    let (before, before_size, _) = input.finish();
    let (after, after_size, w) = output.finish();
    let tmp = w.into_inner().map_err(|e| e.into_error())?;
    if let Some(j) = journal {
        j.end(out, (before, before_size), (after, after_size))?;
    }
    if stats.replaced == 0 && stats.lengths_fixed == 0 && *out == job.input {
        // Nothing changed: the file keeps its inode and times (the copy is dropped).
        return Ok(stats);
    }
    if let Ok(meta) = std::fs::metadata(&job.input) {
        let _ = std::fs::set_permissions(tmp.path(), meta.permissions());
    }
    tmp.as_file().sync_data()?;
    tmp.persist(out).map_err(|e| named(e.error, out))?;
    Ok(stats)
}

/// An old URL left as it is: its line, the URL, why.
pub type Missed = (u64, String, Miss);

/// Rewrites a byte slice in memory (tests and small inputs): the output and the changes.
pub fn rewrite_bytes(
    m: &Matcher,
    input: &[u8],
    resolve: &mut dyn FnMut(&str) -> Option<String>,
    opts: &Options,
) -> io::Result<(Vec<u8>, Vec<Edit>, Vec<Missed>)> {
    struct Collect(Vec<Edit>, Vec<Missed>);
    impl Sink for Collect {
        fn missed(&mut self, line: u64, url: &str, why: Miss) {
            self.1.push((line, url.to_string(), why));
        }
        fn edit(&mut self, e: &Edit) -> io::Result<()> {
            self.0.push(e.clone());
            Ok(())
        }
    }
    let mut out = Vec::new();
    let mut c = Collect(Vec::new(), Vec::new());
    engine::rewrite(m, &mut &input[..], &mut out, resolve, &mut c, opts)?;
    out.flush()?;
    Ok((out, c.0, c.1))
}
