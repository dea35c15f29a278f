//! `cfimg rewrite`: old image URLs in files replaced by their delivery URLs (the algorithm
//! is in `rewrite`), the report of what was replaced and of every old URL the ledger cannot
//! map, and `--undo`.
//!
//! Exit status: 0 when every old URL found was replaced (or, with `--undo`, every file
//! restored); 1 when some old URL was left as it is (the links that would still break are
//! listed) or some file could not be restored; 2 for usage errors (no old base, no ledger,
//! a file that cannot be read).

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use super::ledger_views::ledger_path;
use super::{EXIT_INCOMPLETE, EXIT_OK};
use crate::cli::{Cli, RewriteArgs};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::old_url::{OldBases, Resolver};
use crate::rewrite::files::{self, Output};
use crate::rewrite::journal::{self, Journal};
use crate::rewrite::{Bases, Matcher, Miss, Options};

/// Lookups remembered per run (a dump names the same image many times); cleared when full.
const CACHE: usize = 100_000;

/// A file that is missing, unreadable or not what it should be is the user's to fix (exit 2);
/// any other I/O error (a full disk) may pass (exit 75).
fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    use std::io::ErrorKind::{InvalidData, InvalidInput, NotFound, PermissionDenied};
    let path = path.into();
    move |source| match source.kind() {
        NotFound | PermissionDenied | InvalidInput | InvalidData => {
            let text = source.to_string();
            let shown = path.display().to_string();
            Error::Usage(if text.starts_with(&shown) {
                text
            } else {
                format!("{shown}: {text}")
            })
        }
        _ => Error::Io { path, source },
    }
}

/// Runs `cfimg rewrite`.
pub fn run(cli: &Cli, args: &RewriteArgs) -> Result<i32> {
    if let Some(j) = &args.undo {
        return undo(j);
    }
    if args.paths.is_empty() {
        return Err(Error::Usage(
            "cfimg rewrite needs the files or folders to rewrite (or --undo JOURNAL)".into(),
        ));
    }
    let path = ledger_path(cli)?;
    let ledger = Ledger::open_existing(&path)?;
    let bases = OldBases::from_flags(&args.old_base)?.with_stored(&ledger, None)?;
    if bases.is_empty() {
        return Err(Error::Usage(
            "no old base: give --old-base URL (where the images used to be served, e.g. https://www.example.com/uploads/) or store one per source".into(),
        ));
    }
    let urls: Vec<String> = bases.all().iter().map(|b| b.url.clone()).collect();
    let matcher = Matcher::new(Bases::new(&urls).map_err(Error::Usage)?).map_err(Error::Usage)?;
    let resolver = Resolver::new(&ledger, &bases, args.variant.as_deref())?;
    let output = match (&args.output, args.in_place) {
        (Some(d), _) => Output::Dir(d.clone()),
        (None, true) => Output::InPlace,
        (None, false) => Output::DryRun,
    };
    let jobs = files::jobs(&args.paths, &output).map_err(|e| Error::Usage(e.to_string()))?;
    let journal_path = journal_path(&output, args.journal.as_ref());
    let mut journal = match &journal_path {
        Some(p) => Some(Journal::create(p).map_err(io_err(p))?),
        None => None,
    };
    let opts = Options {
        chunk: args.chunk.max(1),
        srcset_widths: args.srcset_widths,
    };
    let failure: RefCell<Option<Error>> = RefCell::new(None);
    let mut cache: HashMap<String, Option<String>> = HashMap::new();
    let mut resolve = |url: &str| -> Option<String> {
        if let Some(hit) = cache.get(url) {
            return hit.clone();
        }
        let found = match resolver.resolve(url) {
            Ok(m) => m.map(|m| m.delivery_url),
            Err(e) => {
                failure.borrow_mut().get_or_insert(e);
                None
            }
        };
        if cache.len() >= CACHE {
            cache.clear();
        }
        cache.insert(url.to_string(), found.clone());
        found
    };
    let stdout = std::io::stdout();
    let (mut replaced, mut missed, mut fixed, mut bytes) = (0u64, 0u64, 0u64, 0u64);
    for job in &jobs {
        let shown = job.input.display().to_string();
        let mut on_miss = |line: u64, url: &str, why: Miss| {
            let reason = miss_reason(why);
            let _ = writeln!(stdout.lock(), "missed\t{shown}:{line}\t{url}\t{reason}");
        };
        let stats = files::rewrite(
            &matcher,
            job,
            &mut resolve,
            &mut on_miss,
            journal.as_mut(),
            &opts,
        )
        .map_err(io_err(&job.input))?;
        if let Some(e) = failure.borrow_mut().take() {
            return Err(e);
        }
        let target = match &job.output {
            Some(o) if *o != job.input => format!(" -> {}", o.display()),
            _ => String::new(),
        };
        let _ = writeln!(
            stdout.lock(),
            "{shown}{target}: {} replaced, {} serialized lengths corrected, {} missed",
            stats.replaced,
            stats.lengths_fixed,
            stats.missed
        );
        replaced += stats.replaced;
        missed += stats.missed;
        fixed += stats.lengths_fixed;
        bytes += stats.bytes_in;
    }
    let what = written_to(&output, journal_path.as_ref());
    let _ = writeln!(
        stdout.lock(),
        "rewrite: {} files, {bytes} bytes, {replaced} replaced, {fixed} serialized lengths corrected, {missed} missed; {what}",
        jobs.len()
    );
    Ok(if missed > 0 { EXIT_INCOMPLETE } else { EXIT_OK })
}

/// Why an old URL stays, as the report's `missed` line says it.
fn miss_reason(why: Miss) -> &'static str {
    match why {
        Miss::NotMapped => "no uploaded item in the ledger",
        Miss::LongSerialized => "inside a PHP-serialized string over 16 MiB, left as it is",
    }
}

/// Where a run that writes keeps its journal: `--journal`, or a timestamped name here.
fn journal_path(output: &Output, flag: Option<&PathBuf>) -> Option<PathBuf> {
    match (output, flag) {
        (Output::DryRun, _) => None,
        (_, Some(j)) => Some(j.clone()),
        (_, None) => Some(PathBuf::from(format!(
            "cfimg-rewrite-{}.journal",
            chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
        ))),
    }
}

/// The closing line's last words: a dry run, or the journal and how to undo it.
fn written_to(output: &Output, journal: Option<&PathBuf>) -> String {
    match (output, journal) {
        (Output::DryRun, _) => "dry run, nothing written (--in-place or -o DIR writes)".to_string(),
        (_, Some(j)) => format!(
            "journal {} (undo: cfimg rewrite --undo {})",
            j.display(),
            j.display()
        ),
        (_, None) => String::new(),
    }
}

/// `--undo JOURNAL`: every file the journal names restored, or named as changed since.
fn undo(path: &std::path::Path) -> Result<i32> {
    let results = journal::undo(path).map_err(io_err(path))?;
    let mut failed = 0;
    for r in &results {
        match r {
            Ok(done) => println!(
                "{}: restored ({} changes undone)",
                done.file.display(),
                done.edits
            ),
            Err(e) => {
                failed += 1;
                println!("not restored: {e}");
            }
        }
    }
    println!(
        "undo: {} of {} files restored",
        results.len() - failed,
        results.len()
    );
    Ok(if failed > 0 { EXIT_INCOMPLETE } else { EXIT_OK })
}
