//! The accept loop of `cfimg serve` and its cap on connections. Each connection holds a
//! file descriptor; past the open-file limit `accept` fails and nothing, not even
//! `/healthz`, is answered. So at most `max_connections` are served at once (sized from
//! `RLIMIT_NOFILE` at start unless configured), and a few spare slots are kept for
//! connections that arrive at the cap. Such a connection closes the connection idle for
//! longest (no request in progress: a silent one, a keep-alive, a slow head) and takes its
//! slot. When none is idle, it gets its head read under a short clock: `GET /healthz` is
//! answered 200, anything else 503 with `Retry-After`, then it is closed. When the spare
//! slots are busy too, a new connection is closed at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::conn::{self, Clocks};
use super::reply::Fail;

/// Descriptors kept out of the connection budget: the ledger (database, WAL, shared
/// memory), connections to Cloudflare, the log, the runtime's own (epoll, eventfd, signal
/// pipe) and, with `--emulator`, the emulator's.
pub const FD_RESERVE: u64 = 128;
/// Extra slots for connections that arrive at the cap (`/healthz` stays answered).
pub const SPARE_SLOTS: usize = 8;
/// The largest cap sized from the open-file limit: each connection may buffer a few tens
/// of KiB, so this bounds memory too. A configured `max_connections` may go beyond.
pub const AUTO_CAP_MAX: usize = 16_384;
/// The smallest cap worth serving with.
const MIN_CAP: u64 = 16;
/// Longest time a connection at the cap gets to send its head and read the answer.
const SPARE_CLOCK: Duration = Duration::from_secs(2);

/// The soft open-file limit of this process (`ulimit -n`, systemd's `LimitNOFILE=`).
pub fn open_file_limit() -> u64 {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
}

/// The cap on connections: `configured`, or sized from the open-file limit `nofile`. An
/// error names the key and the fix.
pub fn connection_cap(configured: Option<usize>, nofile: u64) -> Result<usize, String> {
    let budget = nofile.saturating_sub(FD_RESERVE + SPARE_SLOTS as u64);
    match configured {
        Some(n) if n as u64 > budget => Err(format!(
            "`serve.max_connections` is {n}, but with the open-file limit at {nofile} at most {budget} fit \
             ({FD_RESERVE} descriptors stay for the ledger, Cloudflare and the log, {SPARE_SLOTS} for /healthz at the cap): \
             lower it, or raise the limit (`ulimit -n`, systemd's LimitNOFILE=)"
        )),
        Some(n) => Ok(n),
        None if budget < MIN_CAP => Err(format!(
            "the open-file limit is {nofile}: too low for `cfimg serve`; raise it to 1024 or more \
             (`ulimit -n`, systemd's LimitNOFILE=)"
        )),
        None => Ok(usize::try_from(budget).map_or(AUTO_CAP_MAX, |b| b.min(AUTO_CAP_MAX))),
    }
}

/// The connections being served, for eviction at the cap.
#[derive(Default)]
struct Registry {
    next: u64,
    conns: HashMap<u64, conn::Handle>,
}

/// What every connection task shares.
struct Shared {
    router: Router,
    clocks: Clocks,
    stop: CancellationToken,
    slots: Arc<Semaphore>,
    registry: Mutex<Registry>,
    tasks: TaskTracker,
    /// Newcomers waiting for the slot of a connection they evicted: while any waits, the
    /// accept loop takes no free slot, so that it cannot take theirs.
    waiting: AtomicUsize,
}

impl Shared {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Serves `stream` in a slot of its own.
    fn launch(self: &Arc<Self>, slot: OwnedSemaphorePermit, stream: TcpStream) {
        let shared = self.clone();
        self.tasks.spawn(async move {
            let handle = conn::Handle::new();
            let id = {
                let mut r = shared.registry();
                r.next += 1;
                let id = r.next;
                r.conns.insert(id, handle.clone());
                id
            };
            conn::serve(
                stream,
                shared.router.clone(),
                shared.clocks,
                shared.stop.clone(),
                handle,
            )
            .await;
            shared.registry().conns.remove(&id);
            drop(slot);
        });
    }

    /// Closes the connection idle for longest, if any is idle; whether one was asked to.
    fn evict_oldest_idle(&self) -> bool {
        let r = self.registry();
        let oldest = r
            .conns
            .values()
            .filter_map(|h| h.idle_since().map(|t| (t, h)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, h)) => {
                h.evict();
                true
            }
            None => false,
        }
    }
}

/// Accepts connections until `stop`, then waits for the ones in progress to finish (each is
/// bounded by its clocks).
pub async fn run(
    listener: TcpListener,
    router: Router,
    clocks: Clocks,
    cap: usize,
    stop: CancellationToken,
) {
    let shared = Arc::new(Shared {
        router,
        clocks,
        stop: stop.clone(),
        slots: Arc::new(Semaphore::new(cap)),
        registry: Mutex::new(Registry::default()),
        tasks: TaskTracker::new(),
        waiting: AtomicUsize::new(0),
    });
    let spare = Arc::new(Semaphore::new(SPARE_SLOTS));
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: &str, detail: &str| {
        // At most one line per 10 s: a flood must not flood the log too.
        if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
            last_warning = Some(Instant::now());
            tracing::warn!(cap, "{what}: {detail}");
        }
    };
    loop {
        let stream = tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    warn("accepting a connection failed", &e.to_string());
                    // Out of descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if shared.waiting.load(Ordering::SeqCst) == 0
            && let Ok(slot) = shared.slots.clone().try_acquire_owned()
        {
            shared.launch(slot, stream);
            continue;
        }
        warn(
            "the connection limit is reached",
            "idle connections are closed to make room; with none idle, new connections get 503 \
             (serve.max_connections) and /healthz is still answered",
        );
        let Ok(spare_slot) = spare.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        // The connection idle for longest makes room (as a keep-alive would end anyway);
        // connections with a request in progress are never cut for a newcomer.
        shared.waiting.fetch_add(1, Ordering::SeqCst);
        let evicted = shared.evict_oldest_idle();
        let waiting = shared.clone();
        shared.tasks.spawn(async move {
            let slot = if evicted {
                tokio::time::timeout(SPARE_CLOCK, waiting.slots.clone().acquire_owned())
                    .await
                    .ok()
                    .and_then(Result::ok)
            } else {
                None
            };
            waiting.waiting.fetch_sub(1, Ordering::SeqCst);
            match slot {
                Some(slot) => {
                    drop(spare_slot);
                    waiting.launch(slot, stream);
                }
                None => {
                    at_cap(stream).await;
                    drop(spare_slot);
                }
            }
        });
    }
    shared.tasks.close();
    shared.tasks.wait().await;
}

/// Answers one request on a connection over the cap, then closes it.
async fn at_cap(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
        let health =
            req.uri().path() == "/healthz" && matches!(*req.method(), Method::GET | Method::HEAD);
        let resp: Response = if health {
            (
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "ok\n",
            )
                .into_response()
        } else {
            Fail {
                retry_after: Some(1),
                ..Fail::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request",
                    "the server is at its connection limit: try again shortly",
                )
            }
            .into_response()
        };
        Ok::<_, std::convert::Infallible>(resp)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(SPARE_CLOCK)
        .keep_alive(false)
        .serve_connection(TokioIo::new(stream), service);
    let _ = tokio::time::timeout(SPARE_CLOCK * 2, conn).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_room_below_the_open_file_limit() {
        assert_eq!(connection_cap(None, 1024), Ok(1024 - 136));
        assert_eq!(connection_cap(None, 1 << 20), Ok(AUTO_CAP_MAX));
        assert!(
            connection_cap(None, 100)
                .unwrap_err()
                .contains("LimitNOFILE")
        );
        assert_eq!(connection_cap(Some(500), 1024), Ok(500));
        let err = connection_cap(Some(1000), 1024).unwrap_err();
        assert!(
            err.contains("serve.max_connections") && err.contains("888"),
            "{err}"
        );
    }
}
