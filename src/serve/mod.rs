//! `cfimg serve`: the backend of an app's direct creator uploads. It mints one-time upload
//! URLs for app keys (the API token stays here; every request through the account's
//! limiter, 429 with `Retry-After` when the budget is near its end), records each draft in
//! the ledger, serves a draft's status, receives Cloudflare's image notifications, and
//! reconciles pending drafts in the background. One concept per file:
//!
//! - `conn.rs`: one connection and the clocks that end it (idle, head, body, request).
//! - `cors.rs`: CORS for the routes a browser app calls (mint and status).
//! - `demo.rs`: the page of `--demo`, an upload from the browser.
//! - `keys.rs`: app keys, compared in constant time, and their budgets.
//! - `listener.rs`: the accept loop and its cap on connections.
//! - `openapi.json`: the service's own description, served at `/openapi.json`.
//! - `reconciler.rs`: looks pending drafts up when no webhook said what became of them.
//! - `reply.rs`: error answers naming the field to fix; 429s with `Retry-After`.
//! - `routes.rs`: mint a draft, read one, `/openapi.json` and `/healthz`.
//! - `webhook.rs`: the receiver of Cloudflare's image notifications.

mod conn;
mod cors;
mod demo;
mod keys;
mod listener;
mod reconciler;
mod reply;
mod routes;
mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServeConfig;
use crate::ledger::DraftBook;
use crate::secret::Secret;
use crate::transport::ApiLane;

pub use keys::AppKeys;
pub use listener::{connection_cap, open_file_limit};
pub use reconciler::pass as reconcile_once;
pub use routes::parse_mint;

/// What every handler shares.
pub struct Service {
    /// The account's lane: client, limiter, retries.
    pub lane: ApiLane,
    /// The drafts of the ledger.
    pub book: Mutex<DraftBook>,
    /// App keys and their mint budgets.
    pub keys: AppKeys,
    /// The `cf-webhook-auth` secret; `None` turns the receiver off.
    pub webhook_secret: Option<Secret>,
    /// Longest wait for the limiter before a mint is answered 429.
    pub max_wait: Duration,
    /// Largest body accepted.
    pub max_body_bytes: usize,
    /// The key the demo page carries (`--demo`).
    pub demo_key: Option<Secret>,
    /// Notices the webhook could not attribute, kept raw and bounded.
    pub unmatched: webhook::Unmatched,
}

/// A running service.
pub struct ServeHandle {
    /// The bound address.
    pub addr: SocketAddr,
    stop: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl ServeHandle {
    /// `http://HOST:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, lets requests in flight finish, stops the reconciler.
    pub async fn shutdown(self) {
        self.stop.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// A random key for the demo page: 32 hex digits.
pub fn demo_key() -> Secret {
    Secret::new(uuid::Uuid::new_v4().simple().to_string())
}

/// Binds `cfg.listen` and serves until [`ServeHandle::shutdown`]. With `demo_key`, `GET /`
/// is the demo page and that key is an app key named `demo`.
pub async fn start(
    cfg: &ServeConfig,
    lane: ApiLane,
    book: DraftBook,
    demo_key: Option<Secret>,
) -> std::io::Result<ServeHandle> {
    let mut app_keys = cfg.app_keys.clone();
    if let Some(k) = &demo_key {
        app_keys.push(("demo".into(), k.clone()));
    }
    let svc = Arc::new(Service {
        lane,
        book: Mutex::new(book),
        keys: AppKeys::new(app_keys, cfg.key_rate, cfg.key_burst),
        webhook_secret: cfg.webhook_secret.clone(),
        max_wait: cfg.max_wait,
        max_body_bytes: cfg.max_body_bytes,
        demo_key: demo_key.clone(),
        unmatched: webhook::Unmatched::default(),
    });
    let api = Router::new()
        .route("/v1/direct-uploads", post(routes::mint))
        .route("/v1/direct-uploads/{*id}", get(routes::status))
        .layer(cors::layer(&cfg.cors_origins));
    let mut router = Router::new()
        .merge(api)
        .route("/v1/webhook", post(webhook::receive))
        .route("/v1/webhook/unmatched", get(webhook::unmatched))
        .route("/openapi.json", get(routes::openapi))
        .route("/healthz", get(routes::health));
    if demo_key.is_some() {
        router = router.route("/", get(demo::page));
    }
    let router = router
        .layer(DefaultBodyLimit::max(cfg.max_body_bytes))
        .with_state(svc.clone());
    let cap = match cfg.max_connections {
        Some(n) => n,
        None => listener::connection_cap(None, listener::open_file_limit())
            .map_err(std::io::Error::other)?,
    };
    let clocks = conn::Clocks {
        header: cfg.header_timeout,
        idle: cfg.idle_timeout,
        body: cfg.body_timeout,
        request: cfg.request_timeout,
    };
    let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
    let addr = listener.local_addr()?;
    tracing::info!(
        max_connections = cap,
        header_timeout_secs = clocks.header.as_secs_f64(),
        idle_timeout_secs = clocks.idle.as_secs_f64(),
        body_timeout_secs = clocks.body.as_secs_f64(),
        request_timeout_secs = clocks.request.as_secs_f64(),
        "connection limits"
    );
    let stop = CancellationToken::new();
    let server = tokio::spawn(listener::run(listener, router, clocks, cap, stop.clone()));
    let reconciler = tokio::spawn(reconciler::run(svc, cfg.reconcile, stop.clone()));
    Ok(ServeHandle {
        addr,
        stop,
        tasks: vec![server, reconciler],
    })
}
