//! `migrate`'s pre-flight quota check: before the first upload, the images the job would
//! add are compared with the room the account has left (`GET /v1/stats`: allowed minus
//! current), and a job that cannot fit is stopped before that upload unless `--force`.
//!
//! It runs when the first upload is about to start (the upload workers wait on a [`Gate`]),
//! not before the run: a rerun with nothing to upload, the common case, never pays for it,
//! and is never refused however full the account. Nothing has been uploaded when it
//! refuses; what the run found until then (rejected, unchanged items) is recorded.
//!
//! What "would add" means: every listed item the ledger's quick check cannot settle (new,
//! changed, failed and retried), minus changed items that replace their own image (net
//! zero, unless `--keep-replaced`). It is counted before reading any content, so
//! duplicates that a hash id would share are still counted: an upper bound.
//!
//! Counting costs a listing of its own, so it is kept short: first the items alone are
//! counted, up to one past the room (a job with no more items than room fits, whatever the
//! ledger says); only when there are more are they looked up in the ledger, to the end, so
//! that the refusal says by how much. Folders (a walk) and manifest files (a read) are
//! counted so; a bucket of millions is listed only when the account is already full, and
//! then only up to its first item that needs an image; a manifest on stdin cannot be read
//! twice and is not counted. A check that cannot be made (the stats request fails) lets the
//! run go on. Whatever is not counted here still stops at the quota mid-run (5453 is
//! fatal, exit 3).

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::ledger::{BatchedReader, Destination, Ledger, State};
use crate::plan::{self, Quick};
use crate::shard::Shard;
use crate::source::{Found, Recount, Source};
use crate::transport::ApiLane;

/// Which of the job's items count, and how: what the check needs besides the source.
#[derive(Debug, Clone, Copy)]
pub struct Scope {
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

/// By how much a job cannot fit (the figures of [`Error::WouldExceedQuota`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shortfall {
    to_add: u64,
    exact: bool,
    current: u64,
    allowed: u64,
}

/// The check the upload workers wait on before the first upload: run once, by the first
/// worker with a job; every worker gets its verdict.
pub struct Gate {
    cfg: Config,
    /// Two more instances of the job's source: one per counting pass.
    sources: std::sync::Mutex<Option<(Source, Source)>>,
    scope: Scope,
    destination: Destination,
    verdict: tokio::sync::OnceCell<Option<Shortfall>>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("scope", &self.scope)
            .field("verdict", &self.verdict.get())
            .finish_non_exhaustive()
    }
}

impl Gate {
    /// A gate for a job whose source is listed again through `counting` (two instances).
    pub fn new(
        cfg: &Config,
        counting: (Source, Source),
        scope: Scope,
        destination: Destination,
    ) -> Gate {
        Gate {
            cfg: cfg.clone(),
            sources: std::sync::Mutex::new(Some(counting)),
            scope,
            destination,
            verdict: tokio::sync::OnceCell::new(),
        }
    }

    /// Waits for the check, running it on the first call (its stats request goes through
    /// the run's API lane, so it is paced and counted like the run's own); an
    /// [`Error::WouldExceedQuota`] when the job cannot fit.
    pub async fn wait(&self, lane: &ApiLane) -> Result<()> {
        let verdict = self.verdict.get_or_init(|| self.check(lane)).await;
        match *verdict {
            None => Ok(()),
            Some(r) => Err(Error::WouldExceedQuota {
                to_add: r.to_add,
                exact: r.exact,
                current: r.current,
                allowed: r.allowed,
            }),
        }
    }

    async fn check(&self, lane: &ApiLane) -> Option<Shortfall> {
        let sources = self.sources.lock().ok().and_then(|mut s| s.take());
        let (first, second) = sources?;
        match preflight(
            &self.cfg,
            lane,
            (first, second),
            self.scope,
            &self.destination,
        )
        .await
        {
            Ok(Ok(p)) => {
                match p {
                    Preflight::Fits { to_add, room } => {
                        tracing::info!(to_add, room, "pre-flight quota check passed")
                    }
                    Preflight::NotCounted { room } => {
                        tracing::info!(
                            room,
                            "pre-flight quota check passed (the source was not counted)"
                        )
                    }
                }
                None
            }
            Ok(Err(shortfall)) => Some(shortfall),
            Err(e) => {
                // The run's own requests meet the same trouble; the quota still stops it.
                tracing::warn!(error = %e, "the pre-flight quota check could not be made; going on");
                None
            }
        }
    }
}

/// The check itself: how the job compares with the room left.
async fn preflight(
    cfg: &Config,
    lane: &ApiLane,
    (first, second): (Source, Source),
    scope: Scope,
    destination: &Destination,
) -> Result<std::result::Result<Preflight, Shortfall>> {
    let spent = std::sync::atomic::AtomicU32::new(0);
    let stats = lane.call(&spent, || lane.client.stats()).await?;
    let (current, allowed) = (stats.count.current, stats.count.allowed);
    let room = allowed.saturating_sub(current);
    let recount = first.recount();
    let countable = match recount {
        Recount::Cheap => true,
        Recount::Costly => room == 0,
        Recount::Never => false,
    };
    // A ledger of another account is refused by the run itself, with its own message.
    let foreign = match Ledger::open_read_only(&cfg.ledger)? {
        Some(l) => l.destination()?.is_some_and(|d| d != *destination),
        None => false,
    };
    if !countable || foreign {
        return Ok(Ok(Preflight::NotCounted { room }));
    }
    let past_room = room.saturating_add(1);
    if recount == Recount::Cheap && room > 0 {
        let (items, _) = count(cfg, first, scope, past_room, false).await?;
        if items <= room {
            return Ok(Ok(Preflight::Fits {
                to_add: items,
                room,
            }));
        }
    }
    // A walk or a file is counted to the end, so that the refusal says by how much; a
    // bucket only until it is past the room (its first item that needs an image).
    let enough = match recount {
        Recount::Costly => past_room,
        Recount::Cheap | Recount::Never => u64::MAX,
    };
    let (to_add, exact) = count(cfg, second, scope, enough, true).await?;
    if to_add > room {
        return Ok(Err(Shortfall {
            to_add,
            exact,
            current,
            allowed,
        }));
    }
    Ok(Ok(Preflight::Fits { to_add, room }))
}

/// Counts the images the job would add (with `lookup`; else every item of the job), up to
/// `enough`; returns the count and whether it is exact (the listing ran to its end).
async fn count(
    cfg: &Config,
    source: Source,
    scope: Scope,
    enough: u64,
    lookup: bool,
) -> Result<(u64, bool)> {
    let source = Arc::new(source);
    let stop = CancellationToken::new();
    // Dropped mid-way (the run is stopping), the count ends its listing and its thread.
    let _stop_on_drop = stop.clone().drop_guard();
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
        tokio::task::spawn_blocking(move || tally(&source, rx, reader, scope, enough, &stop))
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
    scope: Scope,
    enough: u64,
    stop: &CancellationToken,
) -> Result<(u64, bool)> {
    let mut n = 0u64;
    while let Some(f) = found.blocking_recv() {
        if stop.is_cancelled() {
            return Ok((n, false));
        }
        let Found::Item(item) = f else { continue };
        if let Some(shard) = &scope.shard
            && !shard.owns(source.id(), &item.key)
        {
            continue;
        }
        let row = match reader.as_mut() {
            Some((r, source_id)) => r.quick(*source_id, &item.key)?,
            None => None,
        };
        let retry = match scope.retry_failed {
            true => plan::Retry::Always,
            false => plan::Retry::Local,
        };
        let adds = match plan::quick_check(row.as_ref(), &item, retry) {
            // A changed item replaces its own image (deleted after the upload).
            Quick::Examine => {
                scope.keep_replaced || row.as_ref().is_none_or(|r| r.state != State::Uploaded)
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
