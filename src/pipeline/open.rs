//! The start-up checks, before any item is touched: the ledger opens (and an existing one
//! is checked) while one request proves the token and the account; the destination is
//! claimed, and a source the ledger has never seen is looked for in the account. They
//! build the [`Run`].

use std::sync::{Arc, Mutex};

use super::run::Run;
use super::sink::{Sink, Upload};
use super::{MigrateOptions, lost_ledger};
use crate::config::Config;
use crate::error::Result;
use crate::item::SourceId;
use crate::ledger::{Ledger, LedgerWriter, SharedReader};
use crate::progress::Stats;
use crate::shutdown::Shutdown;
use crate::transport::limit::Limiter;
use crate::transport::{ApiLane, Lanes, Traffic, api_limiter};
use crate::upload::Uploader;

/// The ledger writer's thread; every record is committed once it has ended.
pub(super) type WriterThread = std::thread::JoinHandle<Result<()>>;

/// Runs the start-up checks and builds the run: a dry run reads the ledger only, any
/// other starts its writer and connects.
pub(super) async fn open(
    cfg: &Config,
    source: &SourceId,
    opts: &MigrateOptions,
    shutdown: Arc<Shutdown>,
) -> Result<(Run, Option<WriterThread>)> {
    let daemon = opts.live.is_some();
    let (limiter, stats) = match (&opts.live, &opts.observed) {
        (Some(live), _) => (live.limiter.clone(), live.stats.clone()),
        (None, Some(o)) => (api_limiter(cfg), o.stats.clone()),
        (None, None) => (api_limiter(cfg), Arc::new(Stats::default())),
    };
    let (sink, traffic, source_id, thread) = if opts.dry_run {
        let (traffic, source_id) = open_dry(cfg, source, opts, &limiter)?;
        (Sink::Dry, traffic, source_id, None)
    } else {
        let (up, traffic, source_id, thread) =
            open_upload(cfg, source, opts, &limiter, &stats, daemon).await?;
        (Sink::Upload(Arc::new(up)), traffic, source_id, Some(thread))
    };
    if let Some(live) = &opts.live {
        let _ = live.traffic.set(traffic.clone());
    }
    if let Some(o) = &opts.observed {
        let _ = o.traffic.set(traffic.clone());
    }
    let reader = match &sink {
        Sink::Upload(up) => Some(up.reader.clone()),
        Sink::Dry => Ledger::open_read_only(&cfg.ledger)?.map(|l| Arc::new(SharedReader::new(l))),
    };
    let run = Run {
        stats,
        sink,
        reader,
        traffic,
        shutdown,
        fatal: Arc::new(Mutex::new(None)),
        source_id,
        source: source.clone(),
        shard: opts.shard,
        daemon,
    };
    Ok((run, thread))
}

/// A dry run's start: the destination check (when it knows the account) and the source's
/// number, both read from the ledger as it is. Returns the traffic and the number.
fn open_dry(
    cfg: &Config,
    source: &SourceId,
    opts: &MigrateOptions,
    limiter: &Arc<Limiter>,
) -> Result<(Traffic, i64)> {
    // The dry run says what the run would say; without credentials it knows no account.
    if !opts.destination.account_id.is_empty() {
        check_destination(cfg, opts)?;
    }
    let source_id = match Ledger::open_read_only(&cfg.ledger)? {
        Some(l) => l.source_number(source)?.unwrap_or(-1),
        None => -1,
    };
    Ok((Traffic::api_only(limiter.clone()), source_id))
}

/// An uploading run's start. Returns its sink, traffic, source number and writer thread.
async fn open_upload(
    cfg: &Config,
    source: &SourceId,
    opts: &MigrateOptions,
    limiter: &Arc<Limiter>,
    stats: &Arc<Stats>,
    daemon: bool,
) -> Result<(Upload, Traffic, i64, WriterThread)> {
    // The writer thread opens the ledger and checks an existing one page by page (before
    // anything is written to it) while the start-up request is under way.
    let (writer, opening, thread) = LedgerWriter::start(&cfg.ledger, cfg.watch.retry_base)?;
    if let Err(e) = check_destination(cfg, opts) {
        // A damaged ledger is best described by the writer's check.
        opening.opened().await?;
        return Err(e);
    }
    // One cheap request proves the token and the account before any item is touched.
    let connected = ApiLane::connect(cfg, limiter.clone()).await;
    // A damaged ledger is named before a failed start-up request: one a restart cannot fix.
    opening.opened().await?;
    let lane = connected?;
    // Recorded only now: a run refused for a mistyped account id leaves the ledger unbound.
    writer.claim_destination(&opts.destination).await?;
    let lanes = Arc::new(Lanes::new(lane.clone(), cfg));
    let traffic = lanes.traffic();
    let source_id = writer.source(source).await?;
    if !opts.ignore_existing {
        lost_ledger::check(cfg, &lane, source, source_id, opts.shard).await?;
    }
    let command = if daemon { "watch" } else { "migrate" };
    let run_id = writer.run_started(command, &source.to_string()).await?;
    let Some(ledger) = Ledger::open_read_only(&cfg.ledger)? else {
        return Err(crate::error::Error::LedgerWrite(format!(
            "{} is gone since the run opened it",
            cfg.ledger.display()
        )));
    };
    let reader = Arc::new(SharedReader::new(ledger));
    let uploader = Uploader::new(
        lane.clone(),
        lanes,
        &cfg.upload,
        writer.clone(),
        reader.clone(),
        stats.clone(),
        daemon,
    );
    let up = Upload {
        lane,
        writer,
        reader,
        uploader: Arc::new(uploader),
        run_id,
        list_lag: cfg.upload.list_lag,
    };
    Ok((up, traffic, source_id, thread))
}

/// Refused before any request: the ledger's records describe one account only. Read
/// through a view of its own, which writes nothing.
fn check_destination(cfg: &Config, opts: &MigrateOptions) -> Result<()> {
    Ledger::open_read_only(&cfg.ledger)
        .and_then(|view| view.map_or(Ok(()), |l| l.check_destination(&opts.destination)))
}
