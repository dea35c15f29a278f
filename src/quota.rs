//! `migrate`'s pre-flight quota check: before the first upload, the images the job would
//! add are compared with the room the account has left (`GET /v1/stats`: allowed minus
//! current), and a job that cannot fit is refused unless `--force`.
//!
//! What "would add" means: every listed item the ledger's quick check cannot settle (new,
//! changed, failed and retried), minus changed items that replace their own image (net
//! zero, unless `--keep-replaced`). It is counted before reading any content, so
//! duplicates that a hash id would share are still counted: an upper bound.
//!
//! Counting costs a listing of its own before the run's, so it is kept short: first the
//! items alone are counted, up to one past the room (a job with no more items than room
//! fits, whatever the ledger says); only when there are more are they looked up in the
//! ledger, to the end, so that the refusal says by how much. Folders (a walk) and manifest
//! files (a read) are counted so; a bucket of millions is listed only when the account is
//! already full, and then only up to its first item that needs an image; a manifest on
//! stdin cannot be read twice and is not counted. Whatever is not counted here still stops
//! at the quota mid-run (5453 is fatal, exit 3).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ledger::{BatchedReader, Destination, Ledger, State};
use crate::limit::Limiter;
use crate::plan::{self, Quick};
use crate::retry;
use crate::shard::Shard;
use crate::source::{Found, Source, SourceKind};

/// What the job is checked with, besides the source.
#[derive(Debug, Clone, Copy)]
pub struct Job {
    /// Only this shard's items count.
    pub shard: Option<Shard>,
    /// Failed items are tried again, so they count.
    pub retry_failed: bool,
    /// Replaced images stay, so a changed item adds one.
    pub keep_replaced: bool,
}

/// How the pre-flight check went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preflight {
    /// The job fits: `to_add` images, `room` free.
    Fits {
        /// Images the job would add.
        to_add: u64,
        /// Images the account has room for.
        room: u64,
    },
    /// The source was not counted (a bucket while the account has room, stdin).
    NotCounted {
        /// Images the account has room for.
        room: u64,
    },
}

/// Refuses, with [`Error::WouldExceedQuota`], a job that cannot fit in the account.
/// `source` makes another instance of the job's source each time one is listed here.
pub async fn preflight(
    cfg: &Config,
    source: impl Fn() -> Result<Source>,
    job: Job,
    destination: &Destination,
) -> Result<Preflight> {
    let limiter = Limiter::new(cfg.upload.rate, cfg.upload.burst);
    let policy = retry::Policy {
        max_attempts: cfg.upload.max_attempts,
        ..retry::Policy::default()
    };
    let (_, stats) = crate::pipeline::connect(cfg, &limiter, policy).await?;
    let (current, allowed) = (stats.count.current, stats.count.allowed);
    let room = allowed.saturating_sub(current);
    let first = source()?;
    let kind = first.id().kind;
    let countable = match kind {
        SourceKind::Bucket => room == 0,
        SourceKind::Manifest => first.id().location != "stdin",
        _ => true,
    };
    // A ledger of another account is refused by the run itself, with its own message.
    let foreign = match Ledger::open_read_only(&cfg.ledger)? {
        Some(l) => l.destination()?.is_some_and(|d| d != *destination),
        None => false,
    };
    if !countable || foreign {
        return Ok(Preflight::NotCounted { room });
    }
    let past_room = room.saturating_add(1);
    if kind != SourceKind::Bucket && room > 0 {
        let (items, _) = count(cfg, first, job, past_room, false).await?;
        if items <= room {
            return Ok(Preflight::Fits {
                to_add: items,
                room,
            });
        }
    }
    // A walk or a file is counted to the end, so that the refusal says by how much; a
    // bucket only until it is past the room (its first item that needs an image).
    let enough = match kind {
        SourceKind::Bucket => past_room,
        _ => u64::MAX,
    };
    let (to_add, exact) = count(cfg, source()?, job, enough, true).await?;
    if to_add > room {
        return Err(Error::WouldExceedQuota {
            to_add,
            exact,
            current,
            allowed,
        });
    }
    Ok(Preflight::Fits { to_add, room })
}

/// Counts the images the job would add (with `lookup`; else every item of the job), up to
/// `enough`; returns the count and whether it is exact (the listing ran to its end).
async fn count(
    cfg: &Config,
    source: Source,
    job: Job,
    enough: u64,
    lookup: bool,
) -> Result<(u64, bool)> {
    let source = Arc::new(source);
    let stop = CancellationToken::new();
    let (tx, rx) = mpsc::channel::<Found>(4096);
    let lister = tokio::spawn(source.clone().list(tx, stop.clone()));
    let ledger = match lookup {
        true => Ledger::open_read_only(&cfg.ledger)?,
        false => None,
    };
    let source_id = match &ledger {
        Some(l) => l.source_number(source.id())?,
        None => None,
    };
    let reader = match (ledger, source_id) {
        (Some(l), Some(n)) => Some((BatchedReader::new(l)?, n)),
        _ => None,
    };
    let counting = {
        let stop = stop.clone();
        let source = source.clone();
        // Ledger reads block: on the blocking pool, like the pipeline's quick check.
        tokio::task::spawn_blocking(move || tally(&source, rx, reader, job, enough, &stop))
    };
    let counted = match counting.await {
        Ok(r) => r,
        Err(_) => Err(Error::Panicked("the pre-flight quota count".into())),
    };
    stop.cancel();
    let listed = match lister.await {
        Ok(r) => r,
        Err(_) => Err(Error::Panicked("the pre-flight listing".into())),
    };
    let (n, exact) = counted?;
    listed?;
    Ok((n, exact))
}

fn tally(
    source: &Source,
    mut found: mpsc::Receiver<Found>,
    mut reader: Option<(BatchedReader, i64)>,
    job: Job,
    enough: u64,
    stop: &CancellationToken,
) -> Result<(u64, bool)> {
    let mut n = 0u64;
    while let Some(f) = found.blocking_recv() {
        let Found::Item(item) = f else { continue };
        if let Some(shard) = &job.shard
            && !shard.owns(source.id(), &item.key)
        {
            continue;
        }
        let row = match reader.as_mut() {
            Some((r, source_id)) => r.quick(*source_id, &item.key)?,
            None => None,
        };
        let adds = match plan::quick_check(row.as_ref(), &item, job.retry_failed) {
            // A changed item replaces its own image (deleted after the upload).
            Quick::Examine => {
                job.keep_replaced || row.as_ref().is_none_or(|r| r.state != State::Uploaded)
            }
            _ => false,
        };
        if adds {
            n += 1;
            if n >= enough {
                stop.cancel();
                return Ok((n, false));
            }
        }
    }
    Ok((n, true))
}
