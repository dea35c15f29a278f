//! `cfimg ledger backup FILE` and `cfimg ledger check`: keeping the only record of what
//! became of every item safe.

use super::EXIT_OK;
use super::ledger_views::ledger_path;
use crate::cli::{BackupArgs, Cli};
use crate::error::{Error, Result};
use crate::ledger::{self, Ledger};
use crate::progress::human_bytes;

/// Copies the ledger, checked, to a new file.
pub fn backup(cli: &Cli, args: &BackupArgs) -> Result<i32> {
    let path = ledger_path(cli)?;
    let ledger = Ledger::open_existing(&path)?;
    let started = std::time::Instant::now();
    let done = ledger.backup_to(&args.file, args.force)?;
    println!(
        "backed up {} to {} ({} pages, {}, checked) in {:.1} s",
        path.display(),
        args.file.display(),
        done.pages,
        human_bytes(done.bytes),
        started.elapsed().as_secs_f64()
    );
    Ok(EXIT_OK)
}

/// SQLite's full integrity check; the problems, and exit 2 when there are any.
pub fn check(cli: &Cli) -> Result<i32> {
    let path = ledger_path(cli)?;
    let started = std::time::Instant::now();
    let problems = ledger::integrity_check(&path, 100)?;
    if problems.is_empty() {
        println!(
            "ledger {}: ok (integrity_check in {:.1} s)",
            path.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(EXIT_OK);
    }
    for p in &problems {
        println!("{p}");
    }
    Err(Error::LedgerDamaged {
        path,
        damage: format!(
            "{} problem{} found by SQLite's integrity check (listed above)",
            problems.len(),
            if problems.len() == 1 { "" } else { "s" }
        ),
    })
}
