//! One connection of `cfimg serve` and the clocks that end it, so that a slow or silent
//! client cannot keep a connection (and its file descriptor) for ever:
//! - idle: no request in progress and no byte received for `idle` (a silent new
//!   connection, a keep-alive between requests, a client that never reads its answer);
//! - head: a request head still incomplete `header` after its first byte;
//! - body: no piece of a request body for `body` (answered 408, then closed);
//! - request: no answer `request` after the head, body and handling included (408 while
//!   the body is still arriving, e.g. trickled a byte at a time; 503 when the handling is
//!   slow), then closed.
//!
//! The idle and head clocks are kept here because hyper's `header_read_timeout` starts when
//! the connection begins to wait for a head, so it cannot tell a keep-alive pause from a
//! slow head; it is set to `idle + header` as a backstop that never fires first.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::reply::Fail;

/// How long a connection with no request in progress may take to close at a stop.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// The timeouts of a connection (config `[serve]`, `*_timeout_secs`).
#[derive(Debug, Clone, Copy)]
pub struct Clocks {
    /// A request head must be complete this long after its first byte.
    pub header: Duration,
    /// Silence allowed with no request in progress.
    pub idle: Duration,
    /// Longest wait for the next piece of a body.
    pub body: Duration,
    /// Longest time from a head to its answer.
    pub request: Duration,
}

/// What the connection is doing, as the clocks need it.
#[derive(Debug)]
struct Activity {
    in_flight: u32,
    idle_since: Instant,
    head_started: Option<Instant>,
}

/// The activity, and a wake-up for the watch when a deadline moves earlier.
#[derive(Debug, Clone)]
struct ConnState(Arc<(Mutex<Activity>, Notify)>);

impl ConnState {
    fn new() -> ConnState {
        ConnState(Arc::new((
            Mutex::new(Activity {
                in_flight: 0,
                idle_since: Instant::now(),
                head_started: None,
            }),
            Notify::new(),
        )))
    }

    fn with<R>(&self, f: impl FnOnce(&mut Activity) -> R) -> R {
        f(&mut self.0.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Bytes arrived: with no request in progress they start a head.
    fn read_some(&self) {
        let started = self.with(|a| {
            let start = a.in_flight == 0 && a.head_started.is_none();
            if start {
                a.head_started = Some(Instant::now());
            }
            start
        });
        if started {
            self.0.1.notify_one();
        }
    }

    fn request_started(&self) -> InFlight {
        self.with(|a| {
            a.in_flight += 1;
            a.head_started = None;
        });
        InFlight(self.clone())
    }

    /// When the connection is to be closed, and why; `None` while a request is in progress.
    fn expiry(&self, clocks: &Clocks) -> Option<(Instant, &'static str)> {
        self.with(|a| {
            if a.in_flight > 0 {
                return None;
            }
            Some(match a.head_started {
                Some(t) => (
                    t + clocks.header,
                    "the request head was not complete in time",
                ),
                None => (a.idle_since + clocks.idle, "idle"),
            })
        })
    }
}

/// What the accept loop knows of a connection: whether it is idle, and how to close it
/// to make room for a new one at the cap.
#[derive(Debug, Clone)]
pub struct Handle {
    state: ConnState,
    evict: Arc<Notify>,
    /// Asked to close and not yet refused: not to be picked twice.
    evicting: Arc<AtomicBool>,
}

impl Default for Handle {
    fn default() -> Handle {
        Handle::new()
    }
}

impl Handle {
    /// A handle for a connection about to be served.
    pub fn new() -> Handle {
        Handle {
            state: ConnState::new(),
            evict: Arc::new(Notify::new()),
            evicting: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Since when the connection has had no request in progress; `None` while one is, or
    /// once it has been asked to close.
    pub fn idle_since(&self) -> Option<Instant> {
        if self.evicting.load(Ordering::Relaxed) {
            return None;
        }
        self.state
            .with(|a| (a.in_flight == 0).then_some(a.idle_since))
    }

    /// Asks the connection to close if it is still idle.
    pub fn evict(&self) {
        self.evicting.store(true, Ordering::Relaxed);
        self.evict.notify_one();
    }
}

/// A request in progress; dropped when its answer is ready (or the connection is gone).
struct InFlight(ConnState);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.with(|a| {
            a.in_flight = a.in_flight.saturating_sub(1);
            if a.in_flight == 0 {
                a.idle_since = Instant::now();
                a.head_started = None;
            }
        });
        self.0.0.1.notify_one();
    }
}

/// The socket, telling the clocks when bytes arrive.
struct WatchedIo {
    io: TcpStream,
    state: ConnState,
}

impl AsyncRead for WatchedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.state.read_some();
        }
        polled
    }
}

impl AsyncWrite for WatchedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// How a request's body went.
#[derive(Debug, Default)]
struct BodyState {
    done: AtomicBool,
    timed_out: AtomicBool,
}

/// A body read too slowly.
#[derive(Debug, thiserror::Error)]
#[error("the request body stopped arriving")]
struct BodyTimeout;

/// A request body whose next piece must come within the body clock.
struct TimedBody {
    inner: Incoming,
    wait: Duration,
    sleep: Pin<Box<Sleep>>,
    state: Arc<BodyState>,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = &mut *self;
        if this.state.timed_out.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(None) => {
                this.state.done.store(true, Ordering::Relaxed);
                Poll::Ready(None)
            }
            Poll::Ready(Some(frame)) => {
                this.sleep.as_mut().reset(Instant::now() + this.wait);
                if this.inner.is_end_stream() {
                    this.state.done.store(true, Ordering::Relaxed);
                }
                Poll::Ready(Some(frame.map_err(Into::into)))
            }
            Poll::Pending => {
                if this.sleep.as_mut().poll(cx).is_ready() {
                    this.state.timed_out.store(true, Ordering::Relaxed);
                    return Poll::Ready(Some(Err(BodyTimeout.into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An answer after which the connection closes.
fn closing(fail: Fail) -> Response {
    let mut resp = fail.into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn body_too_slow() -> Response {
    tracing::info!("request refused: its body arrived too slowly");
    closing(Fail::new(
        StatusCode::REQUEST_TIMEOUT,
        "body",
        "the request body arrived too slowly (serve.body_timeout_secs, serve.request_timeout_secs): send it at once",
    ))
}

/// The request with its body on the body clock (which starts now), and the body's state.
fn timed(req: Request<Incoming>, clocks: Clocks) -> (Request<axum::body::Body>, Arc<BodyState>) {
    let body = Arc::new(BodyState::default());
    if req.body().is_end_stream() {
        body.done.store(true, Ordering::Relaxed);
    }
    let req = req.map(|inner| {
        axum::body::Body::new(TimedBody {
            inner,
            wait: clocks.body,
            sleep: Box::pin(tokio::time::sleep(clocks.body)),
            state: body.clone(),
        })
    });
    (req, body)
}

/// The router's answer within the request clock; a body that arrived too slowly, or an
/// answer that took too long, gets an answer that closes the connection instead.
async fn answer(
    router: Router,
    req: Request<axum::body::Body>,
    body: Arc<BodyState>,
    clocks: Clocks,
) -> Response {
    let answered = tokio::time::timeout(clocks.request, router.oneshot(req)).await;
    match answered {
        Ok(Ok(resp)) if !body.timed_out.load(Ordering::Relaxed) => resp,
        Ok(Ok(_)) => body_too_slow(),
        Ok(Err(never)) => match never {},
        Err(_) if !body.done.load(Ordering::Relaxed) => body_too_slow(),
        Err(_) => {
            tracing::warn!(
                secs = clocks.request.as_secs_f64(),
                "a request was not answered within serve.request_timeout_secs: answered 503"
            );
            closing(Fail {
                retry_after: Some(1),
                ..Fail::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request",
                    "the answer took too long (serve.request_timeout_secs): try again",
                )
            })
        }
    }
}

/// Serves one accepted connection until the client or a clock ends it, an eviction while it
/// is idle, or `stop` (then the request in progress is answered first).
pub async fn serve(
    stream: TcpStream,
    router: Router,
    clocks: Clocks,
    stop: CancellationToken,
    handle: Handle,
) {
    let _ = stream.set_nodelay(true);
    let state = handle.state.clone();
    let io = TokioIo::new(WatchedIo {
        io: stream,
        state: state.clone(),
    });
    let service = {
        let state = state.clone();
        hyper::service::service_fn(move |req: Request<Incoming>| {
            // Counted here, when hyper has the head, not when the answer is first polled.
            let in_flight = state.request_started();
            let (req, body) = timed(req, clocks);
            let router = router.clone();
            async move {
                let resp = answer(router, req, body, clocks).await;
                drop(in_flight);
                Ok::<_, Infallible>(resp)
            }
        })
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(clocks.idle + clocks.header);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    // At a stop, hyper finishes the request in progress and closes an idle connection; one
    // with half a head would wait for its head clock, so it is dropped after this grace.
    let mut stopping: Option<Instant> = None;
    loop {
        let mut wake = state
            .expiry(&clocks)
            .map_or_else(|| Instant::now() + clocks.idle, |(at, _)| at);
        if let Some(at) = stopping {
            wake = wake.min(at);
        }
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                if let Some((at, why)) = state.expiry(&clocks) {
                    if at <= now {
                        tracing::debug!(why, "connection closed");
                        return;
                    }
                    if stopping.is_some_and(|t| t <= now) {
                        return;
                    }
                }
            }
            _ = state.0.1.notified() => {}
            _ = handle.evict.notified() => {
                if state.expiry(&clocks).is_some() {
                    tracing::debug!("idle connection closed to make room for a new one");
                    return;
                }
                // A request began meanwhile: it is served, and the connection may be
                // picked again once idle.
                handle.evicting.store(false, Ordering::Relaxed);
            }
            _ = stop.cancelled(), if stopping.is_none() => {
                stopping = Some(Instant::now() + STOP_GRACE);
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
