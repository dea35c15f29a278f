//! `cfimg status` and `cfimg failures`: read-only views of the ledger.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::EXIT_OK;
use crate::cli::Cli;
use crate::config::{self, RawConfig};
use crate::error::{Error, Result};
use crate::ledger::Ledger;
use crate::progress::human_bytes;
use crate::shown::Shown;

pub(super) fn ledger_path(cli: &Cli) -> Result<PathBuf> {
    let flags = RawConfig {
        ledger: cli.ledger(),
        ..RawConfig::default()
    };
    Ok(config::load(cli.config.as_deref(), flags, false)?.ledger)
}

/// Opens an existing ledger to read; a missing one is named, with the emulator runs' ledger
/// when that is the one the user meant.
fn open_existing(path: &Path) -> Result<Ledger> {
    match super::ledger_hint::elsewhere(path) {
        Some(hint) => Err(Error::Usage(format!(
            "no ledger at {}; {hint}",
            path.display()
        ))),
        None => Ledger::open_existing(path),
    }
}

/// Counts by state, bytes, and the last run.
pub fn status(cli: &Cli, as_json: bool) -> Result<i32> {
    let path = ledger_path(cli)?;
    let ledger = open_existing(&path)?;
    let counts = ledger.state_counts()?;
    let last = ledger.last_run()?;
    if as_json {
        println!(
            "{}",
            json!({ "ledger": path, "exists": true, "items": counts, "last_run": last })
        );
        return Ok(EXIT_OK);
    }
    println!("ledger {}", path.display());
    println!(
        "  uploaded {} ({}), failed {}, rejected {}, uploading {}",
        counts.uploaded,
        human_bytes(counts.uploaded_bytes),
        counts.failed,
        counts.rejected,
        counts.uploading
    );
    // The lock tells a run that is still going from one that was killed.
    let alive = crate::ledger::is_locked(&path);
    if counts.uploading > 0 && !alive {
        println!(
            "  ({} {} in flight when a run stopped; the next run resolves them)",
            counts.uploading,
            if counts.uploading == 1 {
                "upload was"
            } else {
                "uploads were"
            }
        );
    }
    if let Some(run) = last {
        println!(
            "last run #{} ({} {}): started {}, finished {}, outcome {}",
            run.id,
            Shown(&run.command),
            Shown(&run.source),
            run.started_at,
            run.finished_at.as_deref().unwrap_or(if alive {
                "not yet (it is still running)"
            } else {
                "never (it was killed or crashed)"
            }),
            run.outcome.as_deref().unwrap_or("-")
        );
        let c = run.counts;
        println!(
            "  {} uploaded ({} replaced), {} unchanged, {} deduplicated, {} failed, {} rejected, {}, {}, {} rate-limited",
            c.uploaded,
            c.replaced,
            c.skipped,
            c.deduplicated,
            c.failed,
            c.rejected,
            human_bytes(c.bytes),
            crate::progress::plural(c.requests, "request", "requests"),
            c.throttled
        );
    }
    Ok(EXIT_OK)
}

/// Every failed or rejected item with its reason and attempts.
pub fn failures(cli: &Cli, as_json: bool, all: bool) -> Result<i32> {
    let path = ledger_path(cli)?;
    let rows = open_existing(&path)?.failures(all)?;
    if as_json {
        let items: Vec<_> = rows
            .iter()
            .map(|r| json!({ "source": r.source, "key": r.key, "state": r.state, "reason": r.last_error, "attempts": r.attempts, "image_id": r.image_id, "updated_at": r.updated_at }))
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return Ok(EXIT_OK);
    }
    if rows.is_empty() {
        println!("no failed or rejected items in {}", path.display());
    }
    for r in &rows {
        let state = serde_json::to_value(r.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        // Escaped: a key (and a reason quoting it) must not start a line of its own.
        println!(
            "{state}\t{}\t{}\t{}\t{}",
            Shown(&r.source),
            Shown(&r.key),
            crate::progress::plural(u64::from(r.attempts), "request", "requests"),
            Shown(r.last_error.as_deref().unwrap_or(""))
        );
    }
    Ok(EXIT_OK)
}
