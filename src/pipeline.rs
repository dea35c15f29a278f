//! Wires a migration: source -> quick check -> hash and decide -> upload workers -> ledger
//! writer, with bounded channels between the stages so memory stays flat however large the
//! source, and owns the stop order (stop intake, let in-flight uploads finish, flush).
//!
//! ```text
//! walk + quick check ──Candidate──> examine + decide ──Job──> N upload workers
//!   (blocking thread,                (hashing on the          (limiter token per
//!    own ledger reader)               blocking pool)           attempt; retries)
//!          └──────────── Record ──────────┴───────── Record ──────────┴──> ledger writer
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::api::client::ImagesClient;
use crate::api::types;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::ledger::{BatchedReader, Ledger, LedgerWriter, Record, Row, SharedReader, Version};
use crate::limit::Limiter;
use crate::plan::{self, Decision, Job, Policy, Quick};
use crate::progress::{Display, Stats, Summary};
use crate::retry;
use crate::shutdown::Shutdown;
use crate::source::walk::Walk;
use crate::source::{Found, Item};
use crate::upload::{Ended, Uploader};

/// Items waiting between the quick check and hashing.
const CANDIDATE_QUEUE: usize = 256;
/// Listed files waiting for the quick check.
const FOUND_QUEUE: usize = 4096;

/// What to migrate and how.
#[derive(Debug, Clone)]
pub struct MigrateOptions {
    /// The folder.
    pub root: PathBuf,
    /// Plan only: no API writes, no ledger writes.
    pub dry_run: bool,
    /// Retry items that failed in earlier runs.
    pub retry_failed: bool,
    /// Interval of progress log lines when not on a terminal.
    pub progress_every: Duration,
}

/// An item the quick check could not settle.
struct Candidate {
    item: Item,
    row: Option<Row>,
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

/// Migrates a folder into Cloudflare Images.
pub async fn migrate(
    cfg: &Config,
    opts: &MigrateOptions,
    shutdown: Arc<Shutdown>,
) -> Result<RunResult> {
    let started = Instant::now();
    let walk = Walk::new(&opts.root, &cfg.walk)?;
    let source = std::fs::canonicalize(walk.root())
        .unwrap_or_else(|_| walk.root().to_path_buf())
        .to_string_lossy()
        .into_owned();
    let limiter = Arc::new(Limiter::new(cfg.upload.rate, cfg.upload.burst));
    let stats = Arc::new(Stats::default());
    let policy = retry::Policy {
        max_attempts: cfg.upload.max_attempts,
        ..retry::Policy::default()
    };

    let (writer, writer_thread) = if opts.dry_run {
        (None, None)
    } else {
        let (w, t) = LedgerWriter::spawn(&cfg.ledger)?;
        (Some(w), Some(t))
    };
    let client = if opts.dry_run {
        None
    } else {
        // One cheap request proves the token and the account before any file is touched.
        let (client, _) = connect(cfg, &limiter, policy).await?;
        Some(client)
    };
    let open_reader = || -> Result<Option<Ledger>> { Ledger::open_read_only(&cfg.ledger) };
    let run_id = match &writer {
        Some(w) => Some(w.run_started("migrate", &source).await?),
        None => None,
    };

    let display = Display::start(stats.clone(), limiter.clone(), opts.progress_every);
    let fatal: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
    let stop_for_fatal = {
        let fatal = fatal.clone();
        let shutdown = shutdown.clone();
        move |e: Error| {
            tracing::error!(error = %e, "stopping the run");
            if let Ok(mut slot) = fatal.lock() {
                slot.get_or_insert(e);
            }
            shutdown.intake.cancel();
            shutdown.work.cancel();
        }
    };

    // Stage 1: walk and quick check, on a blocking thread with its own ledger reader.
    let (cand_tx, cand_rx) = mpsc::channel::<Candidate>(CANDIDATE_QUEUE);
    let walker = {
        let reader = open_reader()?.map(BatchedReader::new).transpose()?;
        let stats = stats.clone();
        let writer = writer.clone();
        let shutdown = shutdown.clone();
        let source = source.clone();
        let retry_failed = opts.retry_failed;
        let stop = stop_for_fatal.clone();
        tokio::task::spawn_blocking(move || {
            // Listing (readdir + stat) and the ledger lookups each keep a core busy, so the
            // listing runs on a thread of its own.
            let (found_tx, found_rx) = std::sync::mpsc::sync_channel::<Found>(FOUND_QUEUE);
            let intake = shutdown.intake.clone();
            let lister = std::thread::Builder::new()
                .name("walk".into())
                .spawn(move || {
                    for found in walk.iter() {
                        if intake.is_cancelled() || found_tx.send(found).is_err() {
                            break;
                        }
                    }
                });
            if let Err(e) = lister {
                stop(Error::Io {
                    path: "walk thread".into(),
                    source: e,
                });
                return;
            }
            if let Err(e) = walk_and_check(
                found_rx.into_iter(),
                reader,
                &source,
                retry_failed,
                &stats,
                writer.as_ref(),
                &shutdown,
                &cand_tx,
            ) {
                stop(e);
            }
        })
    };

    // Stage 2: hash and decide, in parallel on the blocking pool.
    let (job_tx, job_rx) = mpsc::channel::<Job>(cfg.upload.concurrency * 2);
    let shared_reader = open_reader()?.map(|l| Arc::new(SharedReader::new(l)));
    let planner = {
        let plan_policy = Policy {
            id_mode: cfg.upload.id_mode,
            id_prefix: cfg.upload.id_prefix.clone(),
        };
        let stats = stats.clone();
        let writer = writer.clone();
        let reader = shared_reader.clone();
        let source = source.clone();
        let dry_run = opts.dry_run;
        let stop = stop_for_fatal.clone();
        let intake = shutdown.intake.clone();
        let hashers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        tokio::spawn(async move {
            let mut decisions = ReceiverStream::new(cand_rx)
                .map(|c| {
                    let reader = reader.clone();
                    let policy = plan_policy.clone();
                    let source = source.clone();
                    tokio::task::spawn_blocking(move || {
                        examine_and_decide(c, &policy, &source, reader.as_deref())
                    })
                })
                .buffer_unordered(hashers);
            while let Some(joined) = decisions.next().await {
                if intake.is_cancelled() {
                    break;
                }
                let Ok((version, decision)) = joined else {
                    continue;
                };
                let r = route(
                    decision,
                    version,
                    &stats,
                    writer.as_ref(),
                    &job_tx,
                    dry_run,
                    &intake,
                )
                .await;
                if let Err(e) = r {
                    stop(e);
                    break;
                }
            }
        })
    };

    // Stage 3: upload workers.
    let mut workers = Vec::new();
    if let (Some(client), Some(writer), Some(reader)) = (client, writer.clone(), shared_reader) {
        let uploader = Arc::new(Uploader {
            client,
            limiter: limiter.clone(),
            policy,
            metadata: cfg.upload.metadata.clone(),
            require_signed_urls: cfg.upload.require_signed_urls,
            ledger: writer,
            reader,
            stats: stats.clone(),
        });
        let job_rx = Arc::new(tokio::sync::Mutex::new(job_rx));
        for _ in 0..cfg.upload.concurrency {
            let uploader = uploader.clone();
            let job_rx = job_rx.clone();
            let shutdown = shutdown.clone();
            let stop = stop_for_fatal.clone();
            workers.push(tokio::spawn(async move {
                loop {
                    let job = tokio::select! {
                        job = async { job_rx.lock().await.recv().await } => job,
                        _ = shutdown.intake.cancelled() => None,
                    };
                    let Some(job) = job else { break };
                    tokio::select! {
                        ended = uploader.run(job) => if let Ended::Fatal(e) = ended { stop(e); break },
                        // Past the grace period: the intent stays recorded, the next run resolves it.
                        _ = shutdown.work.cancelled() => break,
                    }
                }
            }));
        }
    } else {
        drop(job_rx);
    }

    let _ = walker.await;
    let _ = planner.await;
    for w in workers {
        let _ = w.await;
    }
    display.finish();

    let interrupted = shutdown.interrupted();
    let fatal = fatal.lock().ok().and_then(|mut f| f.take());
    let mut summary = Summary::new(
        &stats,
        &limiter,
        started.elapsed(),
        opts.dry_run,
        cfg.upload.rate,
        cfg.ledger.display().to_string(),
    );
    if interrupted {
        summary.outcome = "interrupted".into();
    }
    if let Some(e) = &fatal {
        summary.outcome = format!("fatal: {e}");
    }
    if let (Some(w), Some(id)) = (writer, run_id) {
        w.record(Record::RunFinished {
            run_id: id,
            counts: stats.counts(&limiter),
            outcome: summary.outcome.clone(),
        })
        .await?;
    }
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

/// A client for the configured account, checked with `GET /v1/stats` (through the limiter,
/// with retries): a bad token or account fails here, after one request.
pub async fn connect(
    cfg: &Config,
    limiter: &Limiter,
    policy: retry::Policy,
) -> Result<(ImagesClient, types::Stats)> {
    let client = ImagesClient::new(
        &cfg.api_base_url,
        &cfg.account_id,
        &cfg.api_token,
        cfg.upload.request_timeout,
    )?;
    let spent = std::sync::atomic::AtomicU32::new(0);
    let stats = retry::call(policy, || limiter.send(&spent, client.stats())).await?;
    Ok((client, stats))
}

#[allow(clippy::too_many_arguments)]
fn walk_and_check(
    found: impl Iterator<Item = Found>,
    mut reader: Option<BatchedReader>,
    source: &str,
    retry_failed: bool,
    stats: &Stats,
    writer: Option<&LedgerWriter>,
    shutdown: &Shutdown,
    out: &mpsc::Sender<Candidate>,
) -> Result<()> {
    for found in found {
        if shutdown.intake.is_cancelled() {
            break;
        }
        Stats::bump(&stats.discovered);
        let item = match found {
            Found::Item(item) => item,
            Found::Bad { key, reason } => {
                reject(
                    writer,
                    stats,
                    Version {
                        key,
                        source: source.into(),
                        size: 0,
                        mtime_ns: 0,
                        sha256: None,
                    },
                    reason,
                )?;
                continue;
            }
        };
        let quick = match reader.as_mut() {
            Some(r) => r.quick(&item.key)?,
            None => None,
        };
        match plan::quick_check(quick, &item, retry_failed) {
            Quick::Unchanged => Stats::bump(&stats.skipped),
            Quick::StillRejected => Stats::bump(&stats.rejected_earlier),
            Quick::StillFailed => Stats::bump(&stats.failed_earlier),
            Quick::Reject(reason) => {
                let v = Version {
                    key: item.key,
                    source: source.into(),
                    size: item.size,
                    mtime_ns: item.mtime_ns,
                    sha256: None,
                };
                reject(writer, stats, v, reason)?;
            }
            Quick::Examine => {
                let row = match (quick, reader.as_mut()) {
                    (Some(_), Some(r)) => r.lookup(&item.key)?,
                    _ => None,
                };
                if out.blocking_send(Candidate { item, row }).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Counts and logs a local rejection; returns what the ledger records for it.
fn rejection(stats: &Stats, version: Version, reason: String) -> Record {
    tracing::warn!(key = %version.key, %reason, "rejected");
    stats.failed(true);
    Record::Failed {
        version,
        reason,
        attempts: 0,
        rejected: true,
        image_gone: false,
    }
}

fn reject(
    writer: Option<&LedgerWriter>,
    stats: &Stats,
    version: Version,
    reason: String,
) -> Result<()> {
    let record = rejection(stats, version, reason);
    match writer {
        Some(w) => w.record_blocking(record),
        None => Ok(()),
    }
}

/// Blocking: reads the file and decides. Returns the version for records.
fn examine_and_decide(
    c: Candidate,
    policy: &Policy,
    source: &str,
    reader: Option<&SharedReader>,
) -> (Version, Decision) {
    let mut version = Version {
        key: c.item.key.clone(),
        source: source.into(),
        size: c.item.size,
        mtime_ns: c.item.mtime_ns,
        sha256: None,
    };
    let examined = match plan::examine(&c.item) {
        Ok(e) => e,
        Err(e) => {
            return (
                version,
                Decision::Reject(format!("cannot read {}: {e}", c.item.path.display())),
            );
        }
    };
    version.sha256 = Some(examined.sha256.clone());
    let shared =
        |id: &str| reader.and_then(|r| r.with(|l| l.uploaded_with_image(id)).ok().flatten());
    let decision = plan::decide(policy, c.item, source, examined, c.row.as_ref(), shared);
    (version, decision)
}

async fn route(
    decision: Decision,
    version: Version,
    stats: &Stats,
    writer: Option<&LedgerWriter>,
    jobs: &mpsc::Sender<Job>,
    dry_run: bool,
    intake: &CancellationToken,
) -> Result<()> {
    let record = match decision {
        Decision::Touch => {
            Stats::bump(&stats.skipped);
            Record::Touch { version }
        }
        Decision::Share { image_id, url } => {
            Stats::bump(&stats.deduplicated);
            Record::Uploaded {
                version,
                image_id,
                url,
                attempts: 0,
                replaced: false,
            }
        }
        Decision::Reject(reason) => rejection(stats, version, reason),
        Decision::Upload(job) => {
            if dry_run {
                tracing::info!(
                    key = %job.item.key,
                    bytes = job.item.size,
                    id = job.id.as_deref().unwrap_or("(assigned by Cloudflare)"),
                    replaces = job.previous.as_deref().unwrap_or("-"),
                    "would upload"
                );
                Stats::bump(&stats.would_upload);
                stats
                    .would_upload_bytes
                    .fetch_add(job.item.size, Ordering::Relaxed);
                return Ok(());
            }
            // Once intake stops, the workers take no more jobs: drop it rather than wait.
            tokio::select! {
                _ = jobs.send(job) => {}
                _ = intake.cancelled() => {}
            }
            return Ok(());
        }
    };
    match writer {
        Some(w) => w.record(record).await,
        None => Ok(()),
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
