//! `cfimg status` and `cfimg failures`: read-only views of the ledger.

use std::path::PathBuf;

use serde_json::json;

use super::EXIT_OK;
use crate::cli::Cli;
use crate::config::{self, RawConfig};
use crate::error::Result;
use crate::ledger::Ledger;
use crate::progress::human_bytes;
use crate::shown::Shown;

pub(super) fn ledger_path(cli: &Cli) -> Result<PathBuf> {
    let flags = RawConfig {
        ledger: cli.ledger.clone(),
        ..RawConfig::default()
    };
    Ok(config::load(cli.config.as_deref(), flags, false)?.ledger)
}

/// Counts by state, bytes, and the last run.
pub fn status(cli: &Cli, as_json: bool) -> Result<i32> {
    let path = ledger_path(cli)?;
    let Some(ledger) = Ledger::open_read_only(&path)? else {
        if as_json {
            println!("{}", json!({ "ledger": path, "exists": false }));
        } else {
            println!(
                "no ledger at {}: nothing migrated yet (or pass --ledger)",
                path.display()
            );
        }
        return Ok(EXIT_OK);
    };
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
    if counts.uploading > 0 {
        println!(
            "  ({} uploads were in flight when a run stopped; the next run resolves them)",
            counts.uploading
        );
    }
    if let Some(run) = last {
        println!(
            "last run #{} ({} {}): started {}, finished {}, outcome {}",
            run.id,
            Shown(&run.command),
            Shown(&run.source),
            run.started_at,
            run.finished_at.as_deref().unwrap_or("never (killed?)"),
            run.outcome.as_deref().unwrap_or("-")
        );
        let c = run.counts;
        println!(
            "  {} uploaded ({} replaced), {} unchanged, {} deduplicated, {} failed, {} rejected, {}, {} requests, {} rate-limited",
            c.uploaded,
            c.replaced,
            c.skipped,
            c.deduplicated,
            c.failed,
            c.rejected,
            human_bytes(c.bytes),
            c.requests,
            c.throttled
        );
    }
    Ok(EXIT_OK)
}

/// Every failed or rejected item with its reason and attempts.
pub fn failures(cli: &Cli, as_json: bool, all: bool) -> Result<i32> {
    let path = ledger_path(cli)?;
    let rows = match Ledger::open_read_only(&path)? {
        Some(l) => l.failures(all)?,
        None => Vec::new(),
    };
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
            "{state}\t{}\t{}\t{} requests\t{}",
            Shown(&r.source),
            Shown(&r.key),
            r.attempts,
            Shown(r.last_error.as_deref().unwrap_or(""))
        );
    }
    Ok(EXIT_OK)
}
