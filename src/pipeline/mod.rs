//! Wires a migration: source listing -> quick check -> read, hash and decide -> upload
//! workers -> ledger writer, with bounded channels between the stages so memory stays flat
//! however large the source; then the recheck for ambiguous answers. It owns the stop
//! order (stop intake, let in-flight uploads finish, flush) and turns a panicked task into
//! a failed run.
//!
//! ```text
//! source.list ──Found──> check ──Candidate──> examine + decide ──Job──> N upload workers
//!  (its own task)        (blocking thread,     (bodies fetched,          (limiter token per
//!                         batched reads)        hashing on the pool)       attempt; retries)
//!                          └──── Record ─────────────┴────── Record ────────────┴──> ledger writer
//! ```
//!
//! Files:
//! - `mod.rs`: the run's order (open -> start -> wait -> recheck -> finish) and its options.
//! - `run.rs`: `Run`, what every stage shares (counters, sink, stop tokens, first fatal error).
//! - `sink.rs`: `Sink`, where decisions go: nowhere (dry run) or the API and the ledger.
//! - `open.rs`: the start-up checks (ledger, destination, token) that build the `Run`.
//! - `lost_ledger.rs`: the check for a source's images in the account before its first upload.
//! - `stages.rs`: `Stages`, the spawned stages and the one way to wait for them.
//! - `quick.rs`: stage 1, the quick check of every listed item against the ledger.
//! - `plan_stage.rs`: stage 2, reading, hashing and deciding each candidate.
//! - `workers.rs`: stage 3, the upload workers, and the removal of items that left the source.
//! - `upkeep.rs`: a long-lived run's upkeep (recheck, counters, pruning).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ledger::{Destination, Record};
use crate::plan::Retry;
use crate::progress::{Display, Stats, Summary};
use crate::quota::Gate;
use crate::shard::Shard;
use crate::shutdown::Shutdown;
use crate::source::Source;
use crate::transport::Traffic;
use crate::transport::limit::Limiter;

mod lost_ledger;
mod open;
mod plan_stage;
mod quick;
mod run;
mod seen_lines;
mod sink;
mod stages;
mod upkeep;
mod workers;

use open::WriterThread;
use run::Run;
use sink::Sink;
use stages::Stages;

/// How to migrate.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// Plan only: no API writes, no ledger writes.
    pub dry_run: bool,
    /// When items that failed earlier are tried again.
    pub retry: Retry,
    /// Interval of progress log lines when not on a terminal.
    pub progress_every: Duration,
    /// Where the images go, as the ledger records it.
    pub destination: Destination,
    /// Only this shard's items, when the source is split over several runs.
    pub shard: Option<Shard>,
    /// What a run that never ends by itself (`watch`) adds.
    pub live: Option<Live>,
    /// The counters to fill, for a metrics endpoint, when the run is not `live`.
    pub observed: Option<Observed>,
    /// Upload even when the lost-ledger check finds this source's images in the account
    /// (`--ignore-existing`; see `existing.rs`).
    pub ignore_existing: bool,
}

/// What a long-lived run shares with its command, and the upkeep it does meanwhile.
#[derive(Debug, Clone)]
pub struct Live {
    /// The counters, for the metrics endpoint and the service manager.
    pub stats: Arc<Stats>,
    /// The account's limiter, so a reload can change the rate.
    pub limiter: Arc<Limiter>,
    /// Set once the transports exist: their request and 429 counters.
    pub traffic: Arc<std::sync::OnceLock<Traffic>>,
    /// How often to look for duplicates of ambiguous uploads and save the counters.
    pub upkeep_every: Duration,
    /// Tombstones older than this are forgotten.
    pub keep_tombstones: Duration,
    /// Runs kept in the ledger.
    pub keep_runs: u32,
}

/// The counters a run fills for its command to read meanwhile (`migrate --metrics-addr`).
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The run's counters.
    pub stats: Arc<Stats>,
    /// Set once the transports exist: their request and 429 counters.
    pub traffic: Arc<std::sync::OnceLock<Traffic>>,
}

/// How a run went: its summary, and the fatal error or signal that ended it early, if any.
#[derive(Debug)]
pub struct RunResult {
    /// What happened.
    pub summary: Summary,
    /// A fatal error that stopped the run early, if any.
    pub fatal: Option<Error>,
    /// Whether a signal stopped it.
    pub interrupted: bool,
}

/// Migrates a source into Cloudflare Images.
pub async fn migrate(
    cfg: &Config,
    source: Source,
    opts: &MigrateOptions,
    shutdown: Arc<Shutdown>,
) -> Result<RunResult> {
    migrate_gated(cfg, source, opts, shutdown, None).await
}

/// [`migrate`], with a quota check the first upload waits for.
pub async fn migrate_gated(
    cfg: &Config,
    source: Source,
    opts: &MigrateOptions,
    shutdown: Arc<Shutdown>,
    gate: Option<Arc<Gate>>,
) -> Result<RunResult> {
    let started = Instant::now();
    let source = Arc::new(source);
    let (run, writer_thread) = open::open(cfg, source.id(), opts, shutdown).await?;
    let display = Display::start(run.stats.clone(), run.traffic.clone(), opts.progress_every);
    let stages = Stages::start(&run, cfg, &source, opts, gate)?;
    stages.wait(&run).await;
    // The second look after ambiguous answers, unless the run is stopping.
    if let Sink::Upload(up) = &run.sink
        && !run.shutdown.intake.is_cancelled()
    {
        run.recheck(up, "the next run repeats it").await;
    }
    display.finish();
    finish(cfg, opts, run, writer_thread, started).await
}

/// Sums the run up, records its end, and waits until the writer has committed everything.
async fn finish(
    cfg: &Config,
    opts: &MigrateOptions,
    run: Run,
    writer_thread: Option<WriterThread>,
    started: Instant,
) -> Result<RunResult> {
    let interrupted = run.shutdown.interrupted();
    let fatal = run.take_fatal();
    let mut summary = Summary::new(
        &run.stats,
        &run.traffic,
        started.elapsed(),
        opts.dry_run,
        upload_rate(cfg),
        cfg.ledger.display().to_string(),
    );
    summary.rate_warning = crate::transport::limit::over_account_limit(
        cfg.upload.rate,
        opts.shard.map_or(1, |s| s.count),
    );
    if interrupted {
        summary.outcome = "interrupted".into();
    }
    if let Some(e) = &fatal {
        summary.outcome = format!("fatal: {e}");
    }
    if let Sink::Upload(up) = &run.sink {
        up.writer
            .record(Record::RunFinished {
                run_id: up.run_id,
                counts: summary.counts.clone(),
                outcome: summary.outcome.clone(),
            })
            .await?;
    }
    // The readers are closed before the writer, so that it is the last connection and
    // leaves the file in rollback-journal mode, readable by read-only commands without
    // creating anything.
    drop(run);
    if let Some(t) = writer_thread {
        // Every record is committed once the writer thread has drained and ended.
        match tokio::task::spawn_blocking(move || t.join()).await {
            Ok(Ok(result)) => result?,
            _ => return Err(Error::LedgerWrite("the writer thread panicked".into())),
        }
    }
    Ok(RunResult {
        summary,
        fatal,
        interrupted,
    })
}

/// Uploads per second the configuration allows: the API rate, or every batch token's.
fn upload_rate(cfg: &Config) -> f64 {
    match cfg.upload.transport {
        // A rate above the account's average only earns 5-minute blocks: it cannot go faster.
        crate::config::Transport::Api => cfg
            .upload
            .rate
            .min(crate::transport::limit::ACCOUNT_AVERAGE),
        crate::config::Transport::Batch => {
            cfg.upload.batch_rate * f64::from(cfg.upload.batch_tokens)
        }
    }
}

/// Where `--emulator` keeps the emulator's state for a given ledger.
pub fn emulator_data_dir(ledger: &Path) -> PathBuf {
    let mut name = ledger
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".emulator");
    ledger.with_file_name(name)
}
