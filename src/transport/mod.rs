//! Transports: the lanes requests go out through. The API host is one lane, with the
//! account's limiter and the retry policy; with `transport = "batch"` every batch token is
//! a lane of its own ([`BatchLane`]: its client, its limiter and 429 cool-off, its token
//! renewal). [`Lanes`] is what the uploader asks: uploads go to the least busy batch lane,
//! everything else (lookups, GETs after a 5409, deletes, backups, PATCHes) stays on the
//! API host, where lists are known to work. A lane owns its pacing and counting, so that
//! callers ask for a lane, not for a host.
//!
//! - `mod.rs`: the lanes ([`ApiLane`], [`BatchLane`], [`Lanes`]), built from `Config` by
//!   [`ApiLane::from_config`] and [`Lanes::new`], and the run's [`Traffic`]
//! - `limit.rs`: the shared, adaptive rate limiter (token bucket, AIMD), the 429 cool-off and
//!   the holds a used-up budget imposes, after which a lane resumes evenly
//! - `retry.rs`: backoff with full jitter and attempt budgets (backon)

pub mod limit;
pub mod retry;

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::Url;
use tokio::time::Instant;

use crate::api::client::{ImagesClient, Sent, Upload};
use crate::api::types::AccountStats;
use crate::config::{Config, Transport};
use crate::error::{Error, Result};
use limit::{Answer, Limiter};
use retry::RetryPolicy;

/// The API host: every attempt through the shared limiter, retried by the policy.
#[derive(Debug, Clone)]
pub struct ApiLane {
    /// The client.
    pub client: ImagesClient,
    /// The account's limiter.
    pub limiter: Arc<Limiter>,
    /// Retry settings.
    pub policy: RetryPolicy,
}

/// The account's limiter a configuration asks for: `upload.rate` per second, `upload.burst`
/// at once after idling.
pub fn api_limiter(cfg: &Config) -> Arc<Limiter> {
    let tokens = match cfg.upload.transport {
        Transport::Api => 0,
        Transport::Batch => cfg.upload.batch_tokens,
    };
    Arc::new(
        Limiter::new(cfg.upload.rate, cfg.upload.burst)
            .with_documented_limit(limit::API_HOST_LIMIT)
            .with_start_credit(start_credit(cfg.upload.rate, tokens)),
    )
}

/// Requests the API host may take at once when a run starts (the lost-ledger lookup, the
/// quota check), so that start-up does not wait a pacing gap for each.
const START_CREDIT: u32 = 4;

/// The start-up credit at `rate` with `batch_tokens` to fetch: a second's worth, at most
/// [`START_CREDIT`], and one request per batch token (a lane that waits a pacing gap for
/// its token starts late: with 3 tokens at the default rate the last two waited 0.29 s and
/// 0.57 s, 0.26 s of the run's upload time lost), as far as the documented budget (1,200
/// requests per 5 minutes, 4/s) has room for it beside 5 minutes at `rate` (150 at the
/// default 3.5/s; none above 3.98/s, where only the burst goes).
fn start_credit(rate: f64, batch_tokens: u32) -> u32 {
    // The budget's window: 1,200 requests per 300 s.
    let window = 300.0;
    let room = limit::ACCOUNT_AVERAGE
        .mul_add(window, -rate * window)
        .floor();
    if room < f64::from(START_CREDIT) {
        return 1;
    }
    // A second's worth at `rate`, so a slow rate keeps its budget; below the cap, so the
    // cast is exact.
    let own = rate.ceil().clamp(1.0, f64::from(START_CREDIT)) as u32;
    // Within the room, which is below 1,200: the cast is exact.
    own.saturating_add(batch_tokens).min(room as u32)
}

impl ApiLane {
    /// The API lane a configuration asks for: a client of the account, a new
    /// [`api_limiter`] and [`RetryPolicy::from_config`]. Sends nothing.
    pub fn from_config(cfg: &Config) -> Result<ApiLane> {
        ApiLane::sharing(cfg, api_limiter(cfg))
    }

    /// [`ApiLane::from_config`] with a limiter that outlives the lane (the daemon's, kept
    /// across runs and reloads).
    pub fn sharing(cfg: &Config, limiter: Arc<Limiter>) -> Result<ApiLane> {
        Ok(ApiLane {
            client: ImagesClient::new(
                &cfg.api_base_url,
                &cfg.account_id,
                &cfg.api_token,
                cfg.upload.request_timeout,
            )?,
            limiter,
            policy: RetryPolicy::from_config(cfg),
        })
    }

    /// [`ApiLane::sharing`], checked with [`ApiLane::check`]: a bad token or account fails
    /// here, after one request.
    pub async fn connect(cfg: &Config, limiter: Arc<Limiter>) -> Result<ApiLane> {
        let lane = ApiLane::sharing(cfg, limiter)?;
        lane.check().await?;
        Ok(lane)
    }

    /// `GET /v1/stats` through the limiter, with retries: the cheapest proof that the token
    /// and the account work.
    pub async fn check(&self) -> Result<AccountStats> {
        let spent = AtomicU32::new(0);
        self.call(&spent, || self.client.stats()).await
    }

    /// One API call with its retries; every attempt takes a limiter token and is counted
    /// in `spent`.
    pub async fn call<F, Fut>(
        &self,
        spent: &AtomicU32,
        mut request: F,
    ) -> Result<<Fut::Output as Answer>::Value>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output: Answer>,
    {
        retry::call(self.policy, || self.limiter.send(spent, request())).await
    }

    /// One attempt, no retry (the caller decides what an error means).
    pub async fn once<A: Answer>(
        &self,
        spent: &AtomicU32,
        request: impl Future<Output = A>,
    ) -> Result<A::Value> {
        self.limiter.send(spent, request).await
    }
}

/// A batch token is renewed once this share of its lifetime has passed, or [`RENEW_BEFORE`]
/// before it expires, whichever is earlier...
const RENEW_AT_SHARE: f64 = 0.8;
/// ...(see [`RENEW_AT_SHARE`])...
const RENEW_BEFORE: Duration = Duration::from_secs(60);
/// ...but never before half its lifetime, so that a short-lived token is not renewed for
/// every request.
const RENEW_NOT_BEFORE_SHARE: f64 = 0.5;

/// When to renew a token that lives `lifetime` from now.
fn renew_after(lifetime: Duration) -> Duration {
    let share = lifetime.mul_f64(RENEW_AT_SHARE);
    let before = lifetime.saturating_sub(RENEW_BEFORE);
    share
        .min(before)
        .max(lifetime.mul_f64(RENEW_NOT_BEFORE_SHARE))
}

/// The token a batch lane holds now.
#[derive(Debug, Clone)]
struct Held {
    /// A client carrying the token (the token lives only in its sensitive header).
    client: ImagesClient,
    /// Renew from here on.
    renew_at: Instant,
    /// Counts renewals, so that workers who saw the same stale token renew it once.
    generation: u64,
}

/// One batch token: its client, its limiter (its own 429 cool-off) and its renewal.
#[derive(Debug)]
pub struct BatchLane {
    /// Number of the lane, for logs (never the token).
    pub index: usize,
    base: Url,
    timeout: Duration,
    held: Mutex<Option<Held>>,
    /// One renewal at a time per lane.
    renewing: tokio::sync::Mutex<()>,
    /// The lane's pacing: `batch_rate` per second, its own cool-off.
    pub limiter: Arc<Limiter>,
    in_flight: AtomicUsize,
    /// Tokens fetched for this lane.
    pub tokens_fetched: Arc<AtomicU64>,
}

impl BatchLane {
    fn new(index: usize, base: Url, rate: f64, timeout: Duration) -> BatchLane {
        BatchLane {
            index,
            base,
            timeout,
            held: Mutex::new(None),
            renewing: tokio::sync::Mutex::new(()),
            // No burst: what the host's 200 a second leaves beside the rate goes to sending
            // requests due close together at once (`Pacer::group`).
            limiter: Arc::new(Limiter::new(rate, 1).with_documented_limit(limit::BATCH_HOST_LIMIT)),
            in_flight: AtomicUsize::new(0),
            tokens_fetched: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The client with a token that is not due for renewal, fetching one if needed.
    async fn client(&self, api: &ApiLane, spent: &AtomicU32) -> Result<(ImagesClient, u64)> {
        let seen = {
            let held = self.held.lock().map_err(|_| poisoned())?;
            match held.as_ref() {
                Some(h) if Instant::now() < h.renew_at => {
                    return Ok((h.client.clone(), h.generation));
                }
                Some(h) => h.generation,
                None => 0,
            }
        };
        self.renew(api, spent, seen).await
    }

    /// Replaces the token of generation `seen` with a fresh one from the API host, unless
    /// another worker already did: one renewal at a time, and one per stale token.
    async fn renew(
        &self,
        api: &ApiLane,
        spent: &AtomicU32,
        seen: u64,
    ) -> Result<(ImagesClient, u64)> {
        let _one_at_a_time = self.renewing.lock().await;
        if let Some(h) = self.held.lock().map_err(|_| poisoned())?.as_ref()
            && h.generation != seen
            && Instant::now() < h.renew_at
        {
            return Ok((h.client.clone(), h.generation));
        }
        // Through the API lane: its limiter counts the request against the account.
        let grant = api.call(spent, || api.client.batch_token()).await?;
        self.tokens_fetched.fetch_add(1, Ordering::Relaxed);
        let lifetime = DateTime::parse_from_rfc3339(&grant.expires_at)
            .ok()
            .and_then(|at| (at.with_timezone(&Utc) - Utc::now()).to_std().ok())
            .unwrap_or_else(|| {
                tracing::warn!(expires_at = %grant.expires_at, "a batch token's expiry could not be read: renewing it in a minute");
                Duration::from_secs(120)
            });
        let renew_in = renew_after(lifetime);
        let client = {
            let previous = self.held.lock().map_err(|_| poisoned())?.clone();
            match previous {
                Some(h) => h.client.with_token(&grant.token)?,
                None => ImagesClient::batch(&self.base, &grant.token, self.timeout)?,
            }
        };
        let generation = seen.max(self.generation()) + 1;
        tracing::debug!(
            lane = self.index,
            generation,
            lifetime_secs = lifetime.as_secs_f64(),
            renew_in_secs = renew_in.as_secs_f64(),
            "batch token fetched"
        );
        *self.held.lock().map_err(|_| poisoned())? = Some(Held {
            client: client.clone(),
            renew_at: Instant::now() + renew_in,
            generation,
        });
        Ok((client, generation))
    }

    fn generation(&self) -> u64 {
        self.held
            .lock()
            .ok()
            .and_then(|h| h.as_ref().map(|h| h.generation))
            .unwrap_or(0)
    }

    /// One request on this lane. A 10000 (the token expired or was revoked early) renews
    /// the token once and sends again; a second refusal is [`BatchRefusal::Token`], for the
    /// caller to send elsewhere: a batch token never ends a run.
    async fn send<T, F, Fut>(
        &self,
        api: &ApiLane,
        spent: &AtomicU32,
        request: &F,
    ) -> std::result::Result<T, BatchRefusal>
    where
        F: Fn(ImagesClient) -> Fut,
        Fut: Future<Output: Answer<Value = T>>,
    {
        let (client, generation) = self.client(api, spent).await.map_err(BatchRefusal::Other)?;
        match self.limiter.send(spent, request(client)).await {
            Err(e) if e.is_auth_failure() => {
                tracing::debug!(
                    lane = self.index,
                    "the batch host refused the token: renewing it"
                );
            }
            Err(e @ Error::EndpointRefused { .. }) => return Err(BatchRefusal::Endpoint(e)),
            other => return other.map_err(BatchRefusal::Other),
        }
        let (client, _) = self
            .renew(api, spent, generation)
            .await
            .map_err(BatchRefusal::Other)?;
        match self.limiter.send(spent, request(client)).await {
            Err(e) if e.is_auth_failure() => Err(BatchRefusal::Token(e)),
            Err(e @ Error::EndpointRefused { .. }) => Err(BatchRefusal::Endpoint(e)),
            other => other.map_err(BatchRefusal::Other),
        }
    }
}

/// Why a batch lane did not deliver an answer.
enum BatchRefusal {
    /// A freshly renewed token was refused too.
    Token(Error),
    /// The batch host does not serve this endpoint (a bare `{"code":"103",...}`).
    Endpoint(Error),
    /// Any other error, for the caller's usual handling.
    Other(Error),
}

fn poisoned() -> Error {
    Error::Panicked("a batch lane's state".into())
}

/// Counts a lane as busy while a request is on it.
struct Busy<'a>(&'a AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the uploader asks for a lane: the API lane, and the batch lanes uploads go to when
/// `transport = "batch"`. Batch tokens are fetched on first use, so a dry run fetches none.
#[derive(Debug)]
pub struct Lanes {
    /// The API host: everything but uploads, and uploads when there are no batch lanes.
    pub api: ApiLane,
    /// One per batch token; empty with `transport = "api"`.
    pub batch: Vec<BatchLane>,
    next: AtomicUsize,
    /// Set when the batch host refused the upload endpoint: uploads go to the API host.
    batch_refused: AtomicBool,
}

impl Lanes {
    /// The lanes a configuration asks for.
    pub fn new(api: ApiLane, cfg: &Config) -> Lanes {
        let batch = match cfg.upload.transport {
            Transport::Api => Vec::new(),
            Transport::Batch => (0..cfg.upload.batch_tokens as usize)
                .map(|i| {
                    BatchLane::new(
                        i,
                        cfg.batch_base_url.clone(),
                        cfg.upload.batch_rate,
                        cfg.upload.request_timeout,
                    )
                })
                .collect(),
        };
        Lanes {
            api,
            batch,
            next: AtomicUsize::new(0),
            batch_refused: AtomicBool::new(false),
        }
    }

    /// The batch lane for the next upload: one not cooling off after a 429, the least busy
    /// of those, taking turns among equals.
    fn pick(&self) -> Option<(&BatchLane, Busy<'_>)> {
        if self.batch.is_empty() || self.batch_refused.load(Ordering::Relaxed) {
            return None;
        }
        let n = self.batch.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let lane = (0..n)
            .map(|i| &self.batch[(start + i) % n])
            .min_by_key(|l| {
                (
                    l.limiter.cool_off_remaining().is_some(),
                    l.in_flight.load(Ordering::Relaxed),
                )
            })?;
        lane.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((lane, Busy(&lane.in_flight)))
    }

    /// How long an upload asking now would wait for its turn on the lane it would get:
    /// the shortest queue of the batch lanes, else the API host's.
    pub fn upload_wait(&self) -> Duration {
        if self.batch.is_empty() || self.batch_refused.load(Ordering::Relaxed) {
            return self.api.limiter.queue_wait();
        }
        self.batch
            .iter()
            .map(|l| l.limiter.queue_wait())
            .min()
            .unwrap_or_default()
    }

    /// One upload attempt (`POST /v1`), on a batch lane when there are any, else on the
    /// API host. Batch-token trouble and a batch host refusing the endpoint fall back to
    /// the API host for this attempt, never failing the item or the run on their own.
    pub async fn upload(&self, spent: &AtomicU32, form: &Upload<'_>) -> Result<Sent> {
        let Some((lane, _busy)) = self.pick() else {
            return self.api.once(spent, self.api.client.upload(form)).await;
        };
        let request = |client: ImagesClient| async move { client.upload(form).await };
        match lane.send(&self.api, spent, &request).await {
            Ok(sent) => Ok(sent),
            Err(BatchRefusal::Other(e)) => Err(e),
            Err(BatchRefusal::Token(e)) => {
                tracing::warn!(lane = lane.index, error = %e, "the batch host refused a freshly renewed batch token: this upload goes to the API host");
                self.api.once(spent, self.api.client.upload(form)).await
            }
            Err(BatchRefusal::Endpoint(e)) => {
                if !self.batch_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "the batch host refuses uploads: the rest of the run uploads through the API host");
                }
                self.api.once(spent, self.api.client.upload(form)).await
            }
        }
    }

    /// Requests and 429s so far, per host and per token.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            api: self.api.limiter.clone(),
            batch: self.batch.iter().map(|l| l.limiter.clone()).collect(),
            tokens: self
                .batch
                .iter()
                .map(|l| l.tokens_fetched.clone())
                .collect(),
        }
    }
}

/// The limiters of a run's lanes, for the progress display and the summary.
#[derive(Debug, Clone)]
pub struct Traffic {
    /// The API host's limiter.
    pub api: Arc<Limiter>,
    /// One per batch token.
    pub batch: Vec<Arc<Limiter>>,
    /// Batch tokens fetched, per lane.
    pub tokens: Vec<Arc<AtomicU64>>,
}

impl Traffic {
    /// The API host only (dry runs, `transport = "api"`).
    pub fn api_only(api: Arc<Limiter>) -> Traffic {
        Traffic {
            api,
            batch: Vec::new(),
            tokens: Vec::new(),
        }
    }

    /// Requests sent to the batch host.
    pub fn batch_requests(&self) -> u64 {
        self.batch.iter().map(|l| l.requests()).sum()
    }

    /// 429s from the batch host.
    pub fn batch_throttled(&self) -> u64 {
        self.batch.iter().map(|l| l.throttled_count()).sum()
    }

    /// Batch tokens fetched from the API host (each one API request, counted there too).
    pub fn token_requests(&self) -> u64 {
        self.tokens.iter().map(|t| t.load(Ordering::Relaxed)).sum()
    }

    /// Every request, both hosts.
    pub fn requests(&self) -> u64 {
        self.api.requests() + self.batch_requests()
    }

    /// Every 429, both hosts.
    pub fn throttled(&self) -> u64 {
        self.api.throttled_count() + self.batch_throttled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_up_may_send_a_few_at_once_only_within_the_accounts_budget() {
        assert_eq!(start_credit(crate::config::DEFAULT_RATE, 0), START_CREDIT);
        assert_eq!(start_credit(3.0, 0), 3);
        // A slow rate keeps its budget: no more at once than a second's worth (or the burst).
        assert_eq!(start_credit(1.0, 0), 1);
        assert_eq!(start_credit(0.2, 0), 1);
        assert_eq!(start_credit(3.99, 0), 1);
        assert_eq!(start_credit(4.0, 0), 1);
        assert_eq!(start_credit(100.0, 0), 1);
        // Each batch token's lane starts at once, as far as the budget has room.
        assert_eq!(
            start_credit(crate::config::DEFAULT_RATE, 3),
            START_CREDIT + 3
        );
        assert_eq!(start_credit(1.0, 3), 4);
        assert_eq!(start_credit(3.9, 50), 30);
        assert_eq!(start_credit(4.0, 3), 1);
    }

    #[test]
    fn tokens_are_renewed_well_before_they_expire() {
        let secs = |s: u64| Duration::from_secs(s);
        // An hour: at 80%.
        assert_eq!(renew_after(secs(3600)), secs(2880));
        // Two minutes: a minute before.
        assert_eq!(renew_after(secs(120)), secs(60));
        // A second: halfway, never at once.
        assert_eq!(renew_after(secs(1)), Duration::from_millis(500));
        assert_eq!(renew_after(Duration::ZERO), Duration::ZERO);
    }
}
