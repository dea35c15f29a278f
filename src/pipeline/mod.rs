//! Wires a migration: source listing -> quick check -> read, hash and decide -> upload
//! workers -> ledger writer, with bounded channels between the stages so memory stays flat
//! however large the source; then the settle stage for ambiguous answers. It owns the stop
//! order (stop intake, let in-flight uploads finish, flush) and turns a panicked task into
//! a failed run.
//!
//! ```text
//! source.list ──Found──> check ──Candidate──> examine + decide ──Job──> N upload workers
//!  (its own task)        (blocking thread,     (bodies fetched,          (limiter token per
//!                         batched reads)        hashing on the pool)       attempt; retries)
//!                          └──── Record ─────────────┴────── Record ────────────┴──> ledger writer
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::api::client::ImagesClient;
use crate::api::types;
use crate::config::Config;
use crate::error::{Disposition, Error, Result};
use crate::ledger::{
    BatchedReader, Destination, Failure, Ledger, LedgerWriter, Record, Row, SharedReader, Version,
};
use crate::limit::Limiter;
use crate::plan::{self, Decision, Examined, Job, Policy, Quick, Retry};
use crate::progress::{Display, Stats, Summary};
use crate::quota::Gate;
use crate::remove::{self, Removal};
use crate::retry;
use crate::settle;
use crate::shard::Shard;
use crate::shutdown::Shutdown;
use crate::source::walk::mtime_ns as mtime_ns_of;
use crate::source::{Fingerprint, Found, Item, Locator, Source, SourceId, SourceKind};
use crate::transport::{ApiLane, Lanes, Traffic};
use crate::upload::{Ended, Uploader};

/// Items waiting between the quick check and reading.
const CANDIDATE_QUEUE: usize = 256;
/// Listed items waiting for the quick check.
const FOUND_QUEUE: usize = 4096;

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

/// What every stage shares: counters, the writer, the stop tokens and the first fatal error.
#[derive(Clone)]
struct Run {
    stats: Arc<Stats>,
    writer: Option<LedgerWriter>,
    shutdown: Arc<Shutdown>,
    fatal: Arc<Mutex<Option<Error>>>,
    source_id: i64,
    source: SourceId,
    shard: Option<Shard>,
}

impl Run {
    /// Stops the run for an error nothing else can get past.
    fn stop(&self, e: Error) {
        // Every worker in flight may meet the same refusal (a full quota, a revoked token):
        // the reason is printed once, by the command, when the run has ended.
        tracing::debug!(error = %e, "stopping the run");
        if let Ok(mut slot) = self.fatal.lock()
            && slot.is_none()
        {
            tracing::warn!(
                "stopping the run: no new uploads; the reason is printed once those in flight are recorded"
            );
            *slot = Some(e);
        }
        self.shutdown.intake.cancel();
        self.shutdown.work.cancel();
    }

    /// Waits for a stage; a panic or an error in it stops the run.
    async fn join(&self, stage: &str, task: JoinHandle<Result<()>>) {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.stop(e),
            Err(e) if e.is_panic() => self.stop(Error::Panicked(format!("the {stage} stage"))),
            Err(_) => {}
        }
    }

    fn version(&self, key: String) -> Version {
        Version {
            source_id: self.source_id,
            key,
            size: 0,
            mtime_ns: 0,
            etag: None,
            options: None,
            sha256: None,
            ticket: Default::default(),
        }
    }

    /// Counts and records an item refused before any request.
    async fn reject(&self, version: Version, reason: String, failure: Failure) -> Result<()> {
        match self.writer.as_ref() {
            Some(w) => w.record(self.rejection(version, reason, failure)).await,
            None => {
                self.rejection(version, reason, failure);
                Ok(())
            }
        }
    }

    fn reject_blocking(&self, version: Version, reason: String, failure: Failure) -> Result<()> {
        let record = self.rejection(version, reason, failure);
        match self.writer.as_ref() {
            Some(w) => w.record_blocking(record),
            None => Ok(()),
        }
    }

    fn rejection(&self, version: Version, reason: String, failure: Failure) -> Record {
        tracing::warn!(source = %self.source, key = %version.key, %reason, "{}", if failure == Failure::Rejected { "rejected" } else { "failed" });
        self.stats.failed(failure == Failure::Rejected);
        Record::Failed {
            version,
            reason,
            attempts: 0,
            failure,
            image_gone: false,
            check_after: None,
        }
    }
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
    let limiter = match &opts.live {
        Some(live) => live.limiter.clone(),
        None => Arc::new(Limiter::new(cfg.upload.rate, cfg.upload.burst)),
    };
    let policy = retry::Policy {
        max_attempts: cfg.upload.max_attempts,
        ..retry::Policy::default()
    };
    // The writer thread opens the ledger and checks an existing one page by page (before
    // anything is written to it) while the start-up request is under way.
    let (writer, opening, writer_thread) = if opts.dry_run {
        (None, None, None)
    } else {
        let (w, o, t) = LedgerWriter::start(&cfg.ledger, cfg.watch.retry_base)?;
        (Some(w), Some(o), Some(t))
    };
    // Refused before any request: the ledger's records describe one account only. Read
    // through a view of its own, which writes nothing (the dry run says what the run would
    // say; without credentials it knows no account).
    if writer.is_some() || !opts.destination.account_id.is_empty() {
        let recorded = Ledger::open_read_only(&cfg.ledger)
            .and_then(|view| view.map_or(Ok(()), |l| l.check_destination(&opts.destination)));
        if let Err(e) = recorded {
            // A damaged ledger is best described by the writer's check.
            if let Some(o) = opening {
                o.opened().await?;
            }
            return Err(e);
        }
    }
    // One cheap request proves the token and the account before any item is touched.
    let connected = match opts.dry_run {
        true => None,
        false => Some(connect(cfg, &limiter, policy).await),
    };
    // A damaged ledger is named before a failed start-up request: one a restart cannot fix.
    if let Some(o) = opening {
        o.opened().await?;
    }
    let lane = match connected {
        Some(c) => Some(ApiLane {
            client: c?.0,
            limiter: limiter.clone(),
            policy,
        }),
        None => None,
    };
    // Recorded only now: a run refused for a mistyped account id leaves the ledger unbound.
    if let Some(w) = &writer {
        w.claim_destination(&opts.destination).await?;
    }
    let lanes = lane.as_ref().map(|l| Arc::new(Lanes::new(l.clone(), cfg)));
    let traffic = lanes
        .as_ref()
        .map_or_else(|| Traffic::api_only(limiter.clone()), |l| l.traffic());
    let source_id = match &writer {
        Some(w) => w.source(source.id()).await?,
        None => match Ledger::open_read_only(&cfg.ledger)? {
            Some(l) => l.source_number(source.id())?.unwrap_or(-1),
            None => -1,
        },
    };
    if let Some(lane) = &lane
        && !opts.ignore_existing
    {
        lost_ledger_check(cfg, lane, source.id(), source_id, opts.shard).await?;
    }
    if let Some(live) = &opts.live {
        let _ = live.traffic.set(traffic.clone());
    }
    let command = if opts.live.is_some() {
        "watch"
    } else {
        "migrate"
    };
    let run_id = match &writer {
        Some(w) => Some(w.run_started(command, &source.id().to_string()).await?),
        None => None,
    };
    let run = Run {
        stats: opts
            .live
            .as_ref()
            .map_or_else(|| Arc::new(Stats::default()), |l| l.stats.clone()),
        writer: writer.clone(),
        shutdown: shutdown.clone(),
        fatal: Arc::new(Mutex::new(None)),
        source_id,
        source: source.id().clone(),
        shard: opts.shard,
    };
    let display = Display::start(run.stats.clone(), traffic.clone(), opts.progress_every);

    let (found_tx, found_rx) = mpsc::channel::<Found>(FOUND_QUEUE);
    let lister = tokio::spawn(source.clone().list(found_tx, shutdown.intake.clone()));
    let (cand_tx, cand_rx) = mpsc::channel::<Candidate>(CANDIDATE_QUEUE);
    let (gone_tx, gone_rx) = mpsc::channel::<Removal>(CANDIDATE_QUEUE);
    let checker = {
        let reader = Ledger::open_read_only(&cfg.ledger)?
            .map(BatchedReader::new)
            .transpose()?;
        let run = run.clone();
        let retry = opts.retry;
        tokio::task::spawn_blocking(move || {
            check(&run, found_rx, reader, retry, &cand_tx, &gone_tx)
        })
    };
    let shared_reader =
        Ledger::open_read_only(&cfg.ledger)?.map(|l| Arc::new(SharedReader::new(l)));
    let (job_tx, job_rx) = mpsc::channel::<Job>(cfg.upload.concurrency * 2);
    let planner = tokio::spawn(plan_stage(
        run.clone(),
        source.clone(),
        Policy {
            id_mode: cfg.upload.id_mode,
            id_prefix: cfg.upload.id_prefix.clone(),
            require_signed_urls: cfg.upload.require_signed_urls,
            follow_content: opts.live.is_some(),
        },
        shared_reader.clone(),
        cand_rx,
        job_tx,
        opts.dry_run,
    ));
    let uploader = match (&lane, &lanes, writer.clone(), shared_reader.clone()) {
        (Some(lane), Some(lanes), Some(ledger), Some(reader)) => Some(Arc::new(Uploader {
            lane: lane.clone(),
            lanes: lanes.clone(),
            metadata: cfg.upload.metadata.clone(),
            require_signed_urls: cfg.upload.require_signed_urls,
            keep_replaced: cfg.upload.keep_replaced,
            settle: cfg.upload.settle,
            ledger,
            reader,
            stats: run.stats.clone(),
            log_each: opts.live.is_some(),
        })),
        _ => None,
    };
    let workers = match &uploader {
        Some(u) => start_workers(&run, u, job_rx, cfg.upload.concurrency, gate),
        None => {
            drop(job_rx);
            Vec::new()
        }
    };
    let remover = tokio::spawn(remove_stage(run.clone(), uploader.clone(), gone_rx));
    let upkeep = match (&opts.live, &lane, &shared_reader, &writer, run_id) {
        (Some(live), Some(lane), Some(reader), Some(w), Some(run_id)) => {
            Some(tokio::spawn(upkeep(
                run.clone(),
                live.clone(),
                lane.clone(),
                reader.clone(),
                w.clone(),
                run_id,
                cfg.upload.settle,
                traffic.clone(),
            )))
        }
        _ => None,
    };

    run.join("listing", lister).await;
    run.join("quick check", checker).await;
    run.join("planning", planner).await;
    for w in workers {
        run.join("upload", w).await;
    }
    run.join("removal", remover).await;
    if let Some(task) = upkeep {
        run.join("upkeep", task).await;
    }
    // The second look after ambiguous answers, unless the run is stopping.
    if let (Some(lane), Some(reader), Some(w)) = (&lane, &shared_reader, &writer)
        && !shutdown.intake.is_cancelled()
    {
        match settle::settle(
            lane,
            reader,
            w,
            source_id,
            cfg.upload.settle,
            &shutdown.intake,
        )
        .await
        {
            Ok(done) => {
                run.stats
                    .duplicates_deleted
                    .fetch_add(done.deleted, Ordering::Relaxed);
            }
            Err(e) if e.disposition() == Disposition::Fatal => run.stop(e),
            Err(e) => {
                tracing::warn!(error = %e, "the duplicate check after ambiguous answers failed; the next run repeats it")
            }
        }
    }
    display.finish();

    let interrupted = shutdown.interrupted();
    let fatal = run.fatal.lock().ok().and_then(|mut f| f.take());
    let mut summary = Summary::new(
        &run.stats,
        &traffic,
        started.elapsed(),
        opts.dry_run,
        upload_rate(cfg),
        cfg.ledger.display().to_string(),
    );
    summary.rate_warning =
        crate::limit::over_account_limit(cfg.upload.rate, opts.shard.map_or(1, |s| s.count));
    if interrupted {
        summary.outcome = "interrupted".into();
    }
    if let Some(e) = &fatal {
        summary.outcome = format!("fatal: {e}");
    }
    if let (Some(w), Some(id)) = (writer, run_id) {
        w.record(Record::RunFinished {
            run_id: id,
            counts: summary.counts.clone(),
            outcome: summary.outcome.clone(),
        })
        .await?;
    }
    drop(run);
    drop(uploader);
    // Closed before the writer, so that it is the last connection and leaves the file in
    // rollback-journal mode, readable by read-only commands without creating anything.
    drop(shared_reader);
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

/// Before the first upload of a source this ledger has no row for, looks for the source's
/// images in the account (see `existing.rs`). Those whose ids this run's id mode would not
/// give again (all of them with Cloudflare-assigned ids; with custom ids, those uploaded
/// in another mode, e.g. an `auto` library rerun without `--id-mode auto`) would be
/// uploaded again: the run stops before its first upload. The others are each met as a
/// 5409 and recorded without a duplicate, so the run goes on, with a warning that
/// `ledger rebuild` does the same in far fewer requests. A ledger with any row for the
/// source skips the check (no request): an older backup restored in place is not noticed
/// here (`cfimg verify` reports its missing rows).
async fn lost_ledger_check(
    cfg: &Config,
    lane: &ApiLane,
    source: &SourceId,
    source_id: i64,
    shard: Option<Shard>,
) -> Result<()> {
    let known = match Ledger::open_read_only(&cfg.ledger)? {
        Some(l) => l.has_items(source_id)?,
        None => false,
    };
    if known || source.kind == crate::source::SourceKind::Drafts {
        return Ok(());
    }
    let mode = cfg.upload.id_mode;
    let auto = mode == crate::config::IdMode::Auto;
    let found = match crate::existing::look(lane, source, shard).await {
        Ok(f) => f,
        // Only a warning is at stake with custom ids: the 5409s protect the library.
        Err(e) if !auto && e.disposition() != Disposition::Fatal => {
            tracing::warn!(error = %e, "could not look for this source's images in the account; going on (custom ids cannot duplicate)");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    tracing::debug!(
        images = found.images,
        assigned = found.assigned,
        hashed = found.hashed,
        requests = found.requests,
        "looked for this source's images before its first upload"
    );
    if found.images == 0 {
        return Ok(());
    }
    let rebuild = crate::existing::rebuild_command(source, &cfg.ledger, shard);
    let what = format!(
        "the account already holds {} {} uploaded from {source}{} (by their cfimg stamp), \
         but the ledger {} has no row for this source: it was deleted, replaced or emptied",
        found.count_text(),
        if found.images == 1 && !found.more {
            "image"
        } else {
            "images"
        },
        shard.map(|s| format!(" shard {s}")).unwrap_or_default(),
        cfg.ledger.display()
    );
    let fix = format!(
        "Record them in the ledger first: `{rebuild}` (one listing pass), then run again; or \
         run again with --ignore-existing to upload anyway"
    );
    if auto {
        return Err(Error::Usage(format!(
            "{what}. With `id_mode = auto` every one of them would be uploaded again, so \
             nothing was uploaded. {fix}"
        )));
    }
    let lost = found.not_recognised(mode, source.kind);
    if lost > 0 {
        // Which mode they came from, as far as their ids tell.
        let mut from = Vec::new();
        if found.assigned > 0 {
            from.push(format!(
                "{} have ids Cloudflare assigned, as with `id_mode = auto`",
                found.assigned
            ));
        }
        if lost > found.assigned {
            from.push(format!(
                "{} have {}",
                lost - found.assigned,
                match mode {
                    crate::config::IdMode::Hash => "path ids, as with `id_mode = path`",
                    _ => "content-hash ids, as with `id_mode = hash`",
                }
            ));
        }
        let assigned = format!(" ({})", from.join(", "));
        return Err(Error::Usage(format!(
            "{what}. {lost} of them have ids that `id_mode = {}` would not give them{assigned}: \
             each would be uploaded again under a new id, so nothing was uploaded. {fix} (or \
             run again with the id mode they were uploaded with)",
            mode.as_str()
        )));
    }
    tracing::warn!(
        "{what}. With `id_mode = {}` each is recognised by its id (one refused upload and \
         one read each): going on. `{rebuild}` records them in one listing pass instead",
        mode.as_str()
    );
    Ok(())
}

/// Uploads per second the configuration allows: the API rate, or every batch token's.
fn upload_rate(cfg: &Config) -> f64 {
    match cfg.upload.transport {
        // A rate above the account's average only earns 5-minute blocks: it cannot go faster.
        crate::config::Transport::Api => cfg.upload.rate.min(crate::limit::ACCOUNT_AVERAGE),
        crate::config::Transport::Batch => {
            cfg.upload.batch_rate * f64::from(cfg.upload.batch_tokens)
        }
    }
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

/// Stage 1: the quick check of every listed item against the ledger, on a blocking thread
/// with its own reader; what it cannot settle goes on as a candidate.
fn check(
    run: &Run,
    mut found: mpsc::Receiver<Found>,
    mut reader: Option<BatchedReader>,
    retry: Retry,
    out: &mpsc::Sender<Candidate>,
    gone: &mpsc::Sender<Removal>,
) -> Result<()> {
    // A manifest's bad lines are keyed by content: once a whole, unsharded pass has been
    // read, the line records it did not meet again (fixed or deleted lines) are stale.
    let mut line_keys =
        (run.source.kind == SourceKind::Manifest && run.shard.is_none() && run.writer.is_some())
            .then(std::collections::HashSet::<String>::new);
    loop {
        let next = match found.try_recv() {
            Ok(f) => Some(f),
            Err(mpsc::error::TryRecvError::Empty) => {
                // Hold no read snapshot while waiting, so the WAL can be checkpointed.
                if let Some(r) = reader.as_mut() {
                    r.pause()?;
                }
                found.blocking_recv()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let Some(found) = next else {
            if let (Some(seen), Some(r)) = (line_keys.as_ref(), reader.as_mut()) {
                forget_stale_lines(run, r, seen)?;
            }
            break;
        };
        if run.shutdown.intake.is_cancelled() {
            break;
        }
        if let (Some(seen), Found::Bad { key, .. } | Found::Ignored { key, .. }) =
            (line_keys.as_mut(), &found)
        {
            seen.insert(key.clone());
        }
        if let Some(shard) = &run.shard {
            let key = match &found {
                Found::Item(item) => &item.key,
                Found::Bad { key, .. } | Found::Ignored { key, .. } | Found::Gone { key, .. } => {
                    key
                }
            };
            if !shard.owns(&run.source, key) {
                continue;
            }
        }
        if let Found::Gone { key, ticket } = found {
            let row = match reader.as_mut() {
                Some(r) => {
                    r.pause()?;
                    r.lookup(run.source_id, &key)?
                }
                None => None,
            };
            if let Some(row) = row
                && send_unpinned(gone, Removal::of(row, ticket), reader.as_mut()).is_err()
            {
                break;
            }
            continue;
        }
        Stats::bump(&run.stats.discovered);
        let item = match found {
            Found::Item(item) => item,
            Found::Bad { key, reason } => {
                run.reject_blocking(run.version(key), reason, Failure::Local)?;
                continue;
            }
            Found::Gone { .. } => continue,
            Found::Ignored { key, reason } => {
                tracing::info!(%key, %reason, "passed over");
                Stats::bump(&run.stats.ignored);
                if crate::source::walk::is_hidden_or_temporary(&reason) {
                    Stats::bump(&run.stats.hidden_or_temporary);
                }
                // Recorded once: a rerun over a tree with a `.DS_Store` in every folder
                // reads these rows, it does not write them again.
                let known = match reader.as_mut() {
                    Some(r) => r
                        .quick(run.source_id, &key)?
                        .is_some_and(|q| q.state == crate::ledger::State::Ignored),
                    None => false,
                };
                if !known && let Some(w) = &run.writer {
                    w.record_blocking(Record::Ignored {
                        version: run.version(key),
                        reason,
                    })?;
                }
                continue;
            }
        };
        let quick = match reader.as_mut() {
            Some(r) => {
                // An item a source may hand over again (a watched file) must see the outcome
                // of its previous pass: a fresh snapshot, not the batch's.
                if item.ticket.is_held() {
                    r.pause()?;
                }
                r.quick(run.source_id, &item.key)?
            }
            None => None,
        };
        match plan::quick_check(quick.as_ref(), &item, retry) {
            Quick::Unchanged => Stats::bump(&run.stats.skipped),
            Quick::StillRejected => Stats::bump(&run.stats.rejected_earlier),
            Quick::StillFailed => Stats::bump(&run.stats.failed_earlier),
            Quick::Reject(reason) => {
                let v = plan::version(run.source_id, &item, &Examined::remote());
                run.reject_blocking(v, reason, Failure::Rejected)?;
            }
            Quick::Examine => {
                let row = match (quick, reader.as_mut()) {
                    (Some(_), Some(r)) => r.lookup(run.source_id, &item.key)?,
                    _ => None,
                };
                if send_unpinned(out, Candidate { item, row }, reader.as_mut()).is_err() {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Removes the records of manifest lines (bad rows, passed-over duplicates) that a complete
/// pass over the manifest did not meet again: their line was fixed or deleted, and they
/// would stay in `failures` for ever.
fn forget_stale_lines(
    run: &Run,
    reader: &mut BatchedReader,
    seen: &std::collections::HashSet<String>,
) -> Result<()> {
    let Some(w) = &run.writer else { return Ok(()) };
    for prefix in [crate::source::manifest::BAD_LINE_PREFIX, "line "] {
        let mut after = prefix.to_string();
        loop {
            let page = reader.keys_after(run.source_id, &after, 1000)?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            let mut done = false;
            for (key, holds_image) in page {
                if !key.starts_with(prefix) {
                    done = true;
                    break;
                }
                if holds_image || !crate::source::manifest::is_line_key(&key) || seen.contains(&key)
                {
                    continue;
                }
                tracing::info!(%key, "a manifest line recorded earlier is gone (fixed or deleted): its record is dropped");
                w.record_blocking(Record::Removed {
                    version: run.version(key),
                    image_id: None,
                    outcome: "the line is no longer in the manifest (fixed or deleted)".into(),
                })?;
            }
            if done {
                break;
            }
        }
    }
    Ok(())
}

/// Sends from the quick check's thread; when the next stage is full (uploads are the
/// bottleneck of a first run), the read snapshot is released before waiting, or SQLite
/// could never restart the WAL and it would grow by every commit of the run.
fn send_unpinned<T>(
    out: &mpsc::Sender<T>,
    value: T,
    reader: Option<&mut BatchedReader>,
) -> std::result::Result<(), ()> {
    match out.try_send(value) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        Err(mpsc::error::TrySendError::Full(value)) => {
            if let Some(r) = reader {
                r.pause().map_err(|_| ())?;
            }
            out.blocking_send(value).map_err(|_| ())
        }
    }
}

/// Stage 2: fetch each candidate's body, read and hash it on the blocking pool, decide,
/// and hand uploads to the workers; several candidates at once.
#[allow(clippy::too_many_arguments)]
async fn plan_stage(
    run: Run,
    source: Arc<Source>,
    policy: Policy,
    reader: Option<Arc<SharedReader>>,
    candidates: mpsc::Receiver<Candidate>,
    jobs: mpsc::Sender<Job>,
    dry_run: bool,
) -> Result<()> {
    let readers = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let mut decisions = ReceiverStream::new(candidates)
        .map(|c| examine_and_decide(&run, &source, &policy, reader.as_deref(), c))
        .buffer_unordered(readers);
    loop {
        // A stop abandons downloads in flight at once (their temporary files go with
        // them): no new upload starts after it, so finishing them is wasted time.
        let decided = tokio::select! {
            biased;
            _ = run.shutdown.intake.cancelled() => break,
            decided = decisions.next() => decided,
        };
        let Some(decided) = decided else { break };
        let (version, decision) = decided?;
        route(&run, decision, version, &jobs, dry_run).await?;
    }
    Ok(())
}

/// Fetches, reads and decides one candidate. Returns the version for records.
async fn examine_and_decide(
    run: &Run,
    source: &Source,
    policy: &Policy,
    reader: Option<&SharedReader>,
    c: Candidate,
) -> Result<(Version, Decision)> {
    let body = match source.body(&c.item).await {
        Ok(body) => body,
        Err(e) => {
            let v = plan::version(run.source_id, &c.item, &Examined::remote());
            return Ok((v, failure_decision(e)?));
        }
    };
    let reading = body.clone();
    let examined = match tokio::task::spawn_blocking(move || plan::examine(&reading)).await {
        Ok(Ok(e)) => e,
        Ok(Err(e)) => {
            let v = plan::version(run.source_id, &c.item, &Examined::remote());
            let reason = format!("cannot read {}: {e}", c.item.key);
            return Ok((v, Decision::Fail(reason)));
        }
        Err(_) => return Err(Error::Panicked(format!("reading {}", c.item.key))),
    };
    let version = plan::version(run.source_id, &c.item, &examined);
    // Read and hashed: a file that changed meanwhile is not the version that was hashed.
    if let (Locator::File(path), Some(Fingerprint::SizeMtime { size, mtime_ns })) =
        (&c.item.locator, &c.item.fingerprint)
        && std::fs::metadata(path).is_ok_and(|m| (m.len(), mtime_ns_of(&m)) != (*size, *mtime_ns))
    {
        let reason = format!(
            "{} changed while it was read; it is tried again once it is stable",
            c.item.key
        );
        return Ok((version, Decision::Fail(reason)));
    }
    let source_id = run.source_id;
    let key = c.item.key.clone();
    let same_content = |sha: &str| {
        reader.and_then(|r| {
            r.with(|l| l.uploaded_with_content(source_id, sha, &key))
                .ok()
                .flatten()
        })
    };
    if let Some(decision) = plan::follow_content(policy, &examined, c.row.as_ref(), same_content) {
        return Ok((version, decision));
    }
    let holder =
        |id: &str| reader.and_then(|r| r.with(|l| l.holder_of(id, source_id, &key)).ok().flatten());
    let decision = plan::decide(
        policy,
        c.item,
        source.id(),
        source_id,
        body,
        examined,
        c.row.as_ref(),
        holder,
    );
    Ok((version, decision))
}

/// What a source's error about one item means for it; a fatal one stops the run.
fn failure_decision(e: Error) -> Result<Decision> {
    Ok(match e.disposition() {
        Disposition::Fatal => return Err(e),
        Disposition::Reject => Decision::Reject(e.to_string()),
        Disposition::Retry { .. } | Disposition::Defer => Decision::Fail(e.to_string()),
    })
}

/// Records a decision, or hands its job to the workers.
async fn route(
    run: &Run,
    decision: Decision,
    version: Version,
    jobs: &mpsc::Sender<Job>,
    dry_run: bool,
) -> Result<()> {
    let stats = &run.stats;
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
                stamp: None,
                check_after: None,
                superseded: None,
            }
        }
        Decision::Reject(reason) => return run.reject(version, reason, Failure::Rejected).await,
        Decision::Fail(reason) => return run.reject(version, reason, Failure::Local).await,
        Decision::Do(job) => {
            if dry_run {
                tracing::info!(
                    key = %job.item.key,
                    bytes = job.version.size,
                    id = job.id.as_deref().unwrap_or("(assigned by Cloudflare)"),
                    replaces = job.previous.as_deref().unwrap_or("-"),
                    "would upload"
                );
                Stats::bump(&stats.would_upload);
                stats
                    .would_upload_bytes
                    .fetch_add(job.version.size, Ordering::Relaxed);
                return Ok(());
            }
            // Once intake stops, the workers take no more jobs: drop it rather than wait.
            tokio::select! {
                _ = jobs.send(*job) => {}
                _ = run.shutdown.intake.cancelled() => {}
            }
            return Ok(());
        }
    };
    match run.writer.as_ref() {
        Some(w) => w.record(record).await,
        None => Ok(()),
    }
}

/// Stage 3: N workers taking jobs from one queue. After the first stop signal no queued
/// job starts; past the grace period in-flight ones are abandoned (their intents stay
/// recorded and the next run resolves them).
fn start_workers(
    run: &Run,
    uploader: &Arc<Uploader>,
    jobs: mpsc::Receiver<Job>,
    concurrency: usize,
    gate: Option<Arc<Gate>>,
) -> Vec<JoinHandle<Result<()>>> {
    let jobs = Arc::new(tokio::sync::Mutex::new(jobs));
    (0..concurrency)
        .map(|_| {
            let uploader = uploader.clone();
            let jobs = jobs.clone();
            let run = run.clone();
            let gate = gate.clone();
            tokio::spawn(async move {
                loop {
                    let job = tokio::select! {
                        biased;
                        _ = run.shutdown.intake.cancelled() => None,
                        job = async { jobs.lock().await.recv().await } => job,
                    };
                    let Some(job) = job else { break };
                    if run.shutdown.intake.is_cancelled() {
                        break;
                    }
                    if let Some(gate) = &gate {
                        tokio::select! {
                            passed = gate.wait(&uploader.lane) => if let Err(e) = passed { run.stop(e); break },
                            _ = run.shutdown.intake.cancelled() => break,
                        }
                    }
                    tokio::select! {
                        ended = uploader.run(job) => if let Ended::Fatal(e) = ended { run.stop(e); break },
                        _ = run.shutdown.work.cancelled() => break,
                    }
                }
                Ok(())
            })
        })
        .collect()
}

/// Stage 3b: items that left their source (a watched folder's deleted files, when deletes
/// are propagated): their image is deleted unless another item holds it, and the row
/// becomes a tombstone. One at a time: deletes are rare and the cap already limits them.
async fn remove_stage(
    run: Run,
    uploader: Option<Arc<Uploader>>,
    mut gone: mpsc::Receiver<Removal>,
) -> Result<()> {
    while let Some(removal) = gone.recv().await {
        if run.shutdown.intake.is_cancelled() {
            break;
        }
        let Some(u) = uploader.as_deref() else {
            tracing::info!(key = %removal.version.key, "would remove");
            continue;
        };
        tokio::select! {
            done = remove::remove(&u.lane, &u.reader, &u.ledger, removal) => match done {
                Ok(true) => Stats::bump(&run.stats.removed),
                Ok(false) => {}
                Err(e) if e.disposition() == Disposition::Fatal => {
                    run.stop(e);
                    break;
                }
                Err(e) => tracing::warn!(error = %e, "the image of a removed file was not deleted; the next pass tries again"),
            },
            _ = run.shutdown.work.cancelled() => break,
        }
    }
    Ok(())
}

/// A long-lived run's upkeep: the duplicate check after ambiguous answers, the counters
/// saved for `status`, and pruning, every `upkeep_every` until intake stops.
#[allow(clippy::too_many_arguments)]
async fn upkeep(
    run: Run,
    live: Live,
    lane: ApiLane,
    reader: Arc<SharedReader>,
    writer: LedgerWriter,
    run_id: i64,
    settle: Duration,
    traffic: Traffic,
) -> Result<()> {
    let mut tick = tokio::time::interval(live.upkeep_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = run.shutdown.intake.cancelled() => return Ok(()),
        }
        if pruned.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
            let before = chrono::Utc::now()
                - chrono::TimeDelta::from_std(live.keep_tombstones).unwrap_or_default();
            writer
                .record(Record::Prune {
                    before: crate::ledger::timestamp(before),
                    keep_runs: live.keep_runs,
                })
                .await?;
            pruned = Some(Instant::now());
        }
        writer
            .record(Record::RunProgress {
                run_id,
                counts: run.stats.counts(&traffic),
            })
            .await?;
        match settle::settle(
            &lane,
            &reader,
            &writer,
            run.source_id,
            settle,
            &run.shutdown.intake,
        )
        .await
        {
            Ok(done) => {
                run.stats
                    .duplicates_deleted
                    .fetch_add(done.deleted, Ordering::Relaxed);
            }
            Err(e) if e.disposition() == Disposition::Fatal => {
                run.stop(e);
                return Ok(());
            }
            Err(e) => {
                tracing::warn!(error = %e, "the duplicate check after ambiguous answers failed; it is tried again later")
            }
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
