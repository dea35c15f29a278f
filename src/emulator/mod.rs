//! A local emulator of the Cloudflare Images API (`cfimg emulator`), faithful enough that
//! cfimg's tests, benchmarks and first-run demo need no Cloudflare account.
//!
//! - `admission.rs`: what a limiter answers for one request, shared by the buckets and the
//!   sliding windows.
//! - `app.rs`: the state every handler shares (configuration, store, rate limits, faults).
//! - `args.rs`: the `cfimg emulator` command line and its foreground run.
//! - `batch_tokens.rs`: the batch tokens the API issues, with their expiry.
//! - `auth.rs`: authentication on both hosts.
//! - `delivery.rs`: delivery URLs, with signed-URL checks for private images.
//! - `direct_upload.rs`: the draft-creating call and the one-time upload URL.
//! - `faults.rs`: seeded fault injection (edge pages, drops, store-then-500, latency).
//! - `form.rs`: reading the multipart forms of uploads and direct uploads.
//! - `images.rs`: image handlers (upload, get, patch, delete, blob, stats, both lists).
//! - `inspect.rs`: the inspection view (stored images with their sha256, request counts).
//! - `keys.rs`: signing keys and the account's image config.
//! - `originals.rs`: what blob downloads serve: large originals re-encoded, altered ones.
//! - `ratelimit.rs`: `TokenBuckets`, the service's per-token rate limit with its penalty,
//!   and `HostLimit`, a host's limit (bucket or sliding window) with its headers.
//! - `reply.rs`: the Cloudflare envelope, error items and edge pages.
//! - `routes.rs`: the router and the per-request order auth, rate limit, route, faults.
//! - `sliding.rs`: `SlidingWindows`, the strict sliding-window limit of `--batch-window sliding`.
//! - `server.rs`: the accept loop, with a kill switch per connection for "drop" faults.
//! - `store.rs`: images, variants, keys and config, and their optional journal on disk.
//! - `util.rs`: hex, base64, HMAC and percent-encoding, spelled one way.
//! - `variants.rs`: variant definitions (list, create, get, patch, delete).
//! - `webhook.rs`: the notification POST for a completed or failed direct upload.
//!
//! It serves the API host (`/client/v4/accounts/{id}/images/...`), the batch host
//! (`/images/v1...` at the root), one-time direct-upload URLs (`/upload/<hash>/<id>`),
//! delivery URLs (`/cdn/<hash>/<id>/<variant>`) and, outside the Cloudflare paths, an
//! inspection endpoint (`GET /__emulator/state`, `GET|PUT /__emulator/faults`).
//! `shared/API.md` is the contract; where it is silent these judgement calls apply:
//!
//! - **Auth.** A missing or malformed `Authorization` header is 400 code 6003 (with error
//!   chain 6111), and so is a token with whitespace inside (`Bearer abc def`: a token is one
//!   word, so this is a malformed header, not a wrong token); a well-formed but wrong token, a token for another account id, an API
//!   token on the batch host, a batch token on the API host, or an expired batch token is
//!   401 with exactly `{"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}`.
//!   The legacy `X-Auth-Email` + `X-Auth-Key` pair is accepted with the API token as key.
//!   **Read-only tokens** (`read_only_tokens`, `--read-only-token`) authenticate on the API
//!   host only, have their own rate-limit bucket, and may GET, list and read stats,
//!   variants, keys and config; every change, and the routes that hand out credentials
//!   (`batch_token`, `direct_upload`), answer 403 `{"success":false,"errors":[{"code":9109,
//!   "message":"Unauthorized to access requested resource"}],"messages":[],"result":null}`.
//!   That check comes after rate limiting and routing (unknown paths stay 7003) and before
//!   faults.
//! - **Batch tokens** live `batch_token_ttl` (default 1 h, the real lifetime is
//!   undocumented); they are not persisted across restarts.
//! - **Rate limits** are a token bucket per token: capacity `requests`, refilled
//!   continuously at `requests / window`. When empty, the token is blocked for `penalty`
//!   (every request 429 code 971 until then, even if the bucket has refilled), after which
//!   it starts again with a full bucket. So a client that keeps strictly to the rate never
//!   sees a 429 despite jitter, while one that goes over is punished like the real service;
//!   the price is that a fresh token may burst up to `requests` at once. Every
//!   authenticated request counts, failed ones included; limiting happens after
//!   authentication (unknown tokens get 10000, not 429). Headers: `Ratelimit:
//!   "default";r=<remaining>;t=<secs>` and `Ratelimit-Policy: "burst";q=<requests>;w=<window>`
//!   on every answer of the API host, `retry-after` (remaining penalty, rounded up) on
//!   429s; answers that were not counted (refused credentials, a path outside any account)
//!   carry them too, with the whole quota left (`r=<requests>;t=0`). The direct-upload
//!   URL and delivery are not limited (no token pays for them). With the `edge_429` fault
//!   knob the limiter's refusals are instead the edge's HTML page "Error 1015 - You are
//!   being rate limited" (429, text/html, no `Ratelimit` headers), with `retry-after` only
//!   when `edge_429_retry_after` is set.
//! - **The strict batch host** (`batch_window: Sliding`, `--batch-window sliding`): the
//!   batch limit becomes a sliding window per batch token, at most `requests` admitted in
//!   any `window` (refused requests are not counted, and there is no penalty: a token is
//!   free again the moment its oldest counted request ages out). Every batch-host answer
//!   then carries `Ratelimit: "default";r=<remaining>;t=<reset>` and `Ratelimit-Policy:
//!   "default";q=<requests>;w=<window>`, where `t` is the whole seconds, rounded up, until
//!   the oldest counted request leaves the window (so `t >= 1` whenever `r=0`); a 429 adds
//!   `retry-after` equal to `t`. This is the server issue 20 describes; whether the real
//!   batch host sends these headers is undocumented. `batch_ratelimit_headers: false`
//!   (`--no-batch-ratelimit-headers`) leaves `Ratelimit` and `Ratelimit-Policy` off the
//!   batch host's answers in either mode.
//! - **Faults** are drawn after auth and rate limiting (so a faulted attempt still counted
//!   against the limit, as at Cloudflare), from one seeded RNG: six numbers per request
//!   on the Cloudflare hosts, so a seed plus a request order reproduces a run (concurrent
//!   requests race for their order). 5xx and latency apply to every API and batch route;
//!   the drop and store-then-500 knobs to uploads (`POST /v1` on both hosts) only. Half of
//!   the 502/503 answers are the edge's HTML page; the others, and all 500s, are JSON
//!   envelopes with codes 5500/5502/5503 (not documented codes: clients must classify by
//!   status). `p_429_html` draws, on the same number as the 5xx (after them), a 429 edge
//!   HTML page without the limiter running dry (`retry-after: 1` when
//!   `edge_429_retry_after`), so clients meet HTML 429s at a set rate; the knob at zero
//!   leaves existing seeds' sequences unchanged. A dropped connection is counted in the
//!   inspection with status 0.
//! - **Uploads.** An empty file is 400 code 9422 (cannot be decoded); an unknown format is
//!   415 code 5455; over 10 MB is 413 code 5413, answered once the whole body is read (as
//!   Cloudflare's edge takes it), so a client is never cut off mid-write; then the image
//!   is decoded as the service would (`crate::image_check`, on file, url and direct
//!   uploads alike): truncated or
//!   corrupt is 400 code 9422, over 12,000 px a side or 100 megapixels (animations: the
//!   total area of their frames) is 400 code 5400 naming the dimensions (not 5443: the
//!   service's code for animations is undocumented); a refused direct upload leaves its
//!   one-time URL unused. Not multipart is 415 code 5415; file and
//!   url together or neither, invalid metadata, a bad boolean or a creator over 1024
//!   characters are 400 code 5400. Metadata may come as JSON text, as dotted
//!   `metadata.k=v` fields (Python SDK) or `metadata[k]=v` (TypeScript SDK); those merge
//!   over the JSON text, with string values, and the 1024-byte limit applies to the merged
//!   compact JSON. Unknown form fields are ignored. Url uploads follow redirects, and any
//!   network error or non-2xx answer is 400 code 5454.
//! - **Images** always carry `meta` (possibly `{}`), `creator` only when set, `uploaded`
//!   with milliseconds, and one delivery URL per defined variant (sorted by name). A
//!   default `public` variant and a `default` signing key exist from the start.
//! - **Ids with `/`** are accepted raw or percent-encoded. `GET .../v1/a/blob` is the blob of
//!   `a` when image `a` exists, else the image `a/blob`. The reserved names `stats`,
//!   `batch_token`, `config`, `variants/...` and `keys/...` win over equal custom ids.
//!   A PATCH making a custom-id image private is refused with 5410.
//! - **Lists lag** by `list_lag` (`--list-lag`, default 0): an image uploaded (or a draft
//!   completed) less than that long ago is absent from v1 and v2 lists, and so from the
//!   `meta.*` and `creator` filters, while GET by id, blob, delivery and `stats` see it at
//!   once. The lag is measured on tokio's clock (`tokio::time::Instant`), so a test with
//!   paused time drives it with `tokio::time::advance`; images replayed from `--data` at
//!   start are listed at once. Continuation tokens page by upload order, so an image that
//!   surfaces behind a client's token is missed by that pass, as with a lagging index.
//! - **Quota** (`--max-images`, default 100000): `stats` reports it as `allowed`, and an
//!   upload (file or url) that would store one image more answers 400 code 5453. Drafts
//!   do not count, as in `stats`.
//! - **Lists.** Drafts are never listed. v1 lists oldest first (page from 1); v2 sorts by
//!   upload time (ties by arrival), default `desc`; its continuation token is opaque
//!   (`ct1.<position>`) and stays valid across inserts and deletes. per_page outside
//!   10..=10000 is 5400. v2 takes the 2026 metadata filters (`meta_filter.rs`):
//!   `meta.<path>[<op>]=<value>` with `eq`, `eq:string`, `eq:number`, `eq:boolean`, `gt`,
//!   `gte`, `lt`, `lte` (numbers), `in`, `in:string`, `in:number` (`|`-separated, at most
//!   10); dotted paths reach into nested objects (at most 5 levels); at most 5 filters,
//!   combined with AND. Untyped `eq` compares strings as they are and numbers/booleans by
//!   their JSON text; null, objects and arrays never match. Past a limit, an unknown
//!   operator or a value its operator cannot take: 400 code 5400 naming it. Both lists
//!   take `creator` (`creator=` empty: the images without a creator). Unknown query
//!   parameters are ignored.
//! - **Direct upload.** A draft gets its upload time and list position when its file
//!   arrives. The one-time URL takes a multipart `file`; a second POST is 409 code 5409, one
//!   after expiry 400 code 5400, an unknown draft 404 code 5404. Expired drafts stay
//!   visible as drafts (the service's clean-up time is undocumented), but an expired draft
//!   that never got its file no longer holds its id: an upload or a new draft may take it.
//! - **Webhooks** (`--webhook-url`, `--webhook-secret`, [`EmulatorHandle::set_webhook`]):
//!   one POST per completed or failed direct upload, sent in the background after the
//!   upload's answer, in Cloudflare's notification envelope (`name`, `text`, `data`, `ts`,
//!   `account_id`, `policy_id`, `policy_name`, `alert_type: "image_notification"`,
//!   `alert_correlation_id`, `alert_event`) with `data: {image_id, status, filename, error}`
//!   (Cloudflare's `data` fields are undocumented: these are our choice), the secret in
//!   `cf-webhook-auth`; one attempt, no retry. `POST /__emulator/webhook/test` sends the
//!   dashboard's test POST, `{"text": "Hello World! This is a test message ..."}` alone.
//!   A direct upload refused for its content (9422, 5455, 5413, 5400) is a failed one.
//! - **CORS on upload URLs**: the one-time URL answers preflights (`OPTIONS`) for any origin
//!   and adds `Access-Control-Allow-Origin: *` to its answers, so that a page's `fetch` can
//!   read them.
//! - **Delivery** serves the stored bytes unchanged for every variant (no resizing), 404
//!   for unknown images or variants (flexible `w=..` variants only when enabled). Private
//!   images need `exp` (future unix time) and `sig` = hex HMAC-SHA256(key, path + "?" +
//!   query without sig) with any signing key, the path taken with or without the `/cdn`
//!   prefix; variants with `neverRequireSignedURLs` skip the check.
//! - **Variants**: ids are 1 to 99 letters and digits; a duplicate is 409 code 5409; a
//!   missing one 404 code 5404. **Keys**: `PUT` creates or rotates; `default` cannot be
//!   deleted (5400). `GET /v1/variants/{id}/flat` (2026) is the variant without the
//!   `{"variant": ...}` wrapper. **Direct upload v1** (deprecated, 2026 document): `POST
//!   /v1/direct_upload` with an optional JSON body `{expiry, metadata, requireSignedURLs,
//!   creator}` (no custom id) makes the same draft as v2. **Config**: `GET`/`PATCH /v1/config` echo `{"flexible_variants": bool}`.
//! - Unknown paths or methods under the Cloudflare prefixes are 404 code 7003 (after auth).
//! - **Persistence** (`--data DIR`): blobs as `DIR/blobs/<sha256>`, every mutation as a
//!   line of `DIR/journal.jsonl`, replayed at start (a torn last line is skipped). Writes
//!   are synchronous, not fsynced, and the journal is never compacted. Memory mode never
//!   touches the disk, and the sha256 of an upload is computed only when inspected.
//! - URLs handed out use the bound address (`127.0.0.1` when bound to an unspecified one).

mod admission;
mod app;
mod args;
mod auth;
mod batch_tokens;
mod delivery;
mod direct_upload;
mod faults;
mod form;
mod images;
mod inspect;
mod keys;
mod meta_filter;
mod originals;
mod ratelimit;
mod reply;
mod routes;
mod server;
mod sliding;
mod store;
mod switches;
mod util;
mod variants;
mod webhook;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use args::{EmulatorArgs, parse_rate_limit, run};
pub use faults::Faults;
pub use inspect::{InspectedImage, Inspection, RouteCount};
pub use originals::OriginalsArgs;
pub use ratelimit::{LimitWindow, RateLimit};
pub use switches::Switches;
pub use webhook::Destination as WebhookDestination;

use app::App;

/// How the emulator is set up.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Account id in API paths (at most 32 characters).
    pub account_id: String,
    /// The API token clients must send.
    pub api_token: String,
    /// Where state survives restarts; `None` keeps it in memory only.
    pub data_dir: Option<PathBuf>,
    /// API-host limit per token; `None` turns it off.
    pub api_rate_limit: Option<RateLimit>,
    /// Batch-host limit per batch token; `None` turns it off.
    pub batch_rate_limit: Option<RateLimit>,
    /// How the batch host counts its limit: a token bucket with a penalty (default) or a
    /// strict sliding window (no penalty; the policy header is named `default`).
    pub batch_window: LimitWindow,
    /// Whether batch-host answers carry `Ratelimit` and `Ratelimit-Policy` (default on;
    /// its 429s carry `retry-after` either way).
    pub batch_ratelimit_headers: bool,
    /// Fault knobs.
    pub faults: Faults,
    /// Lifetime of batch tokens.
    pub batch_token_ttl: Duration,
    /// Tokens accepted on the API host for reads only: any change (POST, PATCH, PUT,
    /// DELETE, `direct_upload`, `batch_token`) answers 403 code 9109.
    pub read_only_tokens: Vec<String>,
    /// Eventual consistency: an image stays out of v1 and v2 lists (and their filters) for
    /// this long after its upload; GET by id finds it at once. Zero by default.
    pub list_lag: Duration,
    /// Images the account may hold, as `stats` reports it; an upload past it answers 400
    /// code 5453 ("reached a service limit").
    pub max_images: u64,
    /// Where notifications of direct uploads go (`None`: nowhere, as without webhooks).
    pub webhook: Option<WebhookDestination>,
    /// What `GET v1/{id}/blob` serves: re-encoded large originals, altered ones (`originals.rs`).
    pub originals: OriginalsArgs,
    /// Account and service switches (`switches.rs`).
    pub switches: Switches,
}

/// The default image quota (the allowance of the smallest paid plan).
pub const DEFAULT_MAX_IMAGES: u64 = 100_000;

/// The default account id.
pub const DEFAULT_ACCOUNT_ID: &str = "0123456789abcdef0123456789abcdef";
/// The default API token.
pub const DEFAULT_API_TOKEN: &str = "emulator-token";

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            account_id: DEFAULT_ACCOUNT_ID.into(),
            api_token: DEFAULT_API_TOKEN.into(),
            data_dir: None,
            api_rate_limit: Some(RateLimit {
                requests: 1200,
                window: Duration::from_secs(300),
                penalty: Duration::from_secs(300),
            }),
            batch_rate_limit: Some(RateLimit {
                requests: 200,
                window: Duration::from_secs(1),
                penalty: Duration::from_secs(1),
            }),
            batch_window: LimitWindow::Bucket,
            batch_ratelimit_headers: true,
            faults: Faults::default(),
            batch_token_ttl: Duration::from_secs(3600),
            list_lag: Duration::ZERO,
            read_only_tokens: Vec::new(),
            max_images: DEFAULT_MAX_IMAGES,
            webhook: None,
            originals: OriginalsArgs::default(),
            switches: Switches::default(),
        }
    }
}

/// A running emulator.
pub struct EmulatorHandle {
    addr: SocketAddr,
    origin: String,
    app: Arc<App>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts the emulator on `listen` (port 0 picks a free port) and returns once it accepts.
pub async fn start(listen: SocketAddr, config: EmulatorConfig) -> std::io::Result<EmulatorHandle> {
    let store = store::Store::open(config.data_dir.as_deref())?;
    let listener = tokio::net::TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let host = match addr.ip() {
        ip if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        ip => ip,
    };
    let origin = format!("http://{}", SocketAddr::new(host, addr.port()));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(std::io::Error::other)?;
    let app = Arc::new(App {
        account_hash: app::account_hash(&config.account_id),
        account_id: config.account_id,
        api_token: config.api_token,
        read_only_tokens: config.read_only_tokens,
        origin: origin.clone(),
        store,
        api_buckets: config
            .api_rate_limit
            .map(|l| ratelimit::HostLimit::new(l, LimitWindow::Bucket, true)),
        batch_buckets: config.batch_rate_limit.map(|l| {
            ratelimit::HostLimit::new(l, config.batch_window, config.batch_ratelimit_headers)
        }),
        faults: faults::FaultInjector::new(config.faults),
        batch_tokens: batch_tokens::BatchTokens::default(),
        batch_token_ttl: config.batch_token_ttl,
        list_lag: config.list_lag,
        max_images: config.max_images,
        quota_gate: std::sync::Mutex::new(()),
        counters: app::Counters::default(),
        webhooks: webhook::Webhooks::new(config.webhook, http.clone()),
        originals: originals::Originals::new(&config.originals)?,
        switches: config.switches,
        http,
    });
    let (shutdown, rx) = watch::channel(false);
    let task = tokio::spawn(server::serve(listener, routes::router(app.clone()), rx));
    Ok(EmulatorHandle {
        addr,
        origin,
        app,
        shutdown,
        task,
    })
}

impl EmulatorHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API base URL, `http://HOST:PORT/client/v4`.
    pub fn api_base(&self) -> String {
        format!("{}/client/v4", self.origin)
    }

    /// The batch base URL, `http://HOST:PORT`.
    pub fn batch_base(&self) -> String {
        self.origin.clone()
    }

    /// The account id.
    pub fn account_id(&self) -> &str {
        &self.app.account_id
    }

    /// The API token.
    pub fn token(&self) -> &str {
        &self.app.api_token
    }

    /// The account hash used in delivery and upload URLs.
    pub fn account_hash(&self) -> &str {
        &self.app.account_hash
    }

    /// Replaces the fault knobs (and restarts their RNG from the new seed).
    pub fn set_faults(&self, faults: Faults) {
        self.app.faults.set(faults);
    }

    /// Issues a batch token valid for `ttl` from now; a negative `ttl` gives an already
    /// expired one (for tests).
    pub fn issue_batch_token(&self, ttl: chrono::Duration) -> String {
        self.app.batch_tokens.issue(chrono::Utc::now() + ttl)
    }

    /// Invalidates every batch token issued so far, before its `expiresAt` (for tests).
    pub fn revoke_batch_tokens(&self) {
        self.app.batch_tokens.revoke_all();
    }

    /// Points direct-upload notifications at `destination` (`None`: send none).
    pub fn set_webhook(&self, destination: Option<WebhookDestination>) {
        self.app.webhooks.set(destination);
    }

    /// Sends the dashboard's test notification now; returns the receiver's HTTP status.
    pub async fn send_test_webhook(&self) -> Result<u16, String> {
        self.app.webhooks.send_test().await
    }

    /// Moves a draft's expiry to `at` (for tests: a URL that expired without waiting for
    /// it); false when `id` is not a draft.
    pub fn set_draft_expiry(&self, id: &str, at: chrono::DateTime<chrono::Utc>) -> bool {
        let done = self.app.store.update(id, |r| {
            if r.draft_expiry.is_some() {
                r.draft_expiry = Some(at);
            }
        });
        matches!(done, Ok(Some(r)) if r.draft_expiry == Some(at))
    }

    /// Notifications delivered so far (any answer from the receiver).
    pub fn webhooks_delivered(&self) -> u64 {
        self.app.webhooks.delivered()
    }

    /// From now on, `GET v1/{id}/blob` of image `id` answers `bytes` (for tests: an account
    /// that holds another picture than its source).
    pub fn alter_original(&self, id: &str, bytes: impl Into<bytes::Bytes>) {
        self.app.originals.alter(id, bytes.into());
    }

    /// Stored images, request counts and 429s, as `GET /__emulator/state` shows them.
    pub fn inspect(&self) -> Inspection {
        inspect::inspect(&self.app)
    }

    /// Stops accepting, closes every connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}
