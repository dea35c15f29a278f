//! The accept loop of `cfimg serve` and its cap on connections. Each connection holds a
//! file descriptor; past the open-file limit `accept` fails and nothing, not even
//! `/healthz`, is answered. So at most `max_connections` are served at once (sized from
//! `RLIMIT_NOFILE` at start unless configured), and a few more slots are kept for
//! connections that arrive at the cap: each gets its head read under a short clock, a
//! `GET /healthz` is answered 200, anything else 503 with `Retry-After`, then it is closed.
//! When those spare slots are busy too, a new connection is closed at once.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{Method, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
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

/// Accepts connections until `stop`, then waits for the ones in progress to finish (each is
/// bounded by its clocks).
pub async fn run(
    listener: TcpListener,
    router: Router,
    clocks: Clocks,
    cap: usize,
    stop: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(cap));
    let spare = Arc::new(Semaphore::new(SPARE_SLOTS));
    let tasks = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    let mut warn = |what: &str, detail: String| {
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
                    warn("accepting a connection failed", e.to_string());
                    // Out of descriptors and the like: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            let (router, stop) = (router.clone(), stop.clone());
            tasks.spawn(async move {
                conn::serve(stream, router, clocks, stop).await;
                drop(slot);
            });
            continue;
        }
        warn(
            "the connection limit is reached",
            "new connections get 503 (serve.max_connections), /healthz is still answered".into(),
        );
        match spare.clone().try_acquire_owned() {
            Ok(slot) => {
                tasks.spawn(async move {
                    at_cap(stream).await;
                    drop(slot);
                });
            }
            Err(_) => drop(stream),
        }
    }
    tasks.close();
    tasks.wait().await;
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
