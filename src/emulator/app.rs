//! The state every handler shares: configuration, store, rate limits, faults, counters.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Method;

use super::batch_tokens::BatchTokens;
use super::faults::FaultInjector;
use super::ratelimit::HostLimit;
use super::store::{ImageRec, State, Store};
use sha2::{Digest, Sha256};

use super::util::{base64url, encode_path};
use crate::api::types::Image;

/// Shared emulator state.
pub struct App {
    /// The account id in API paths.
    pub account_id: String,
    /// The one API token.
    pub api_token: String,
    /// API tokens that may read but not change anything.
    pub read_only_tokens: Vec<String>,
    /// The 22-character account hash of delivery and upload URLs.
    pub account_hash: String,
    /// `http://HOST:PORT`, the root of every URL the emulator hands out.
    pub origin: String,
    /// Images, variants, keys, config.
    pub store: Store,
    /// The API host's rate limit (a bucket per API token), if on.
    pub api_buckets: Option<HostLimit>,
    /// The batch host's rate limit (a bucket per batch token), if on.
    pub batch_buckets: Option<HostLimit>,
    /// Fault knobs.
    pub faults: FaultInjector,
    /// Issued batch tokens.
    pub batch_tokens: BatchTokens,
    /// Lifetime of new batch tokens.
    pub batch_token_ttl: Duration,
    /// How long a new image stays out of lists.
    pub list_lag: Duration,
    /// Images the account may hold (`stats`' `allowed`; 5453 past it).
    pub max_images: u64,
    /// Held across an upload's count and insert, so concurrent uploads cannot overshoot
    /// the quota.
    pub quota_gate: std::sync::Mutex<()>,
    /// Request counts.
    pub counters: Counters,
    /// Client for url uploads.
    pub http: reqwest::Client,
    /// Notifications of direct uploads.
    pub webhooks: super::webhook::Webhooks,
    /// What blob downloads serve (`originals.rs`).
    pub originals: super::originals::Originals,
    /// Account and service switches.
    pub switches: super::switches::Switches,
}

/// The stable account hash: a digest of the account id, in the service's 22-character form.
pub fn account_hash(account_id: &str) -> String {
    base64url(&Sha256::digest(account_id.as_bytes())[..16])
}

impl App {
    /// The wire form of a record, with one delivery URL per variant.
    pub fn wire(&self, rec: &ImageRec, variant_names: &[String]) -> Image {
        let id = encode_path(&rec.id);
        Image {
            id: rec.id.clone(),
            filename: rec.filename.clone(),
            meta: Some(rec.meta.clone()),
            require_signed_urls: rec.require_signed_urls,
            uploaded: Some(
                rec.uploaded
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            ),
            variants: variant_names
                .iter()
                .map(|v| format!("{}/cdn/{}/{id}/{v}", self.origin, self.account_hash))
                .collect(),
            creator: rec.creator.clone(),
            draft: rec.draft_expiry.map(|_| true),
        }
    }

    /// Whether lists show a record now: not a draft, and arrived at least `list_lag` ago.
    pub fn listed(&self) -> impl Fn(&ImageRec) -> bool + use<> {
        let lag = self.list_lag;
        let now = tokio::time::Instant::now();
        move |r: &ImageRec| {
            r.draft_expiry.is_none()
                && (lag.is_zero() || r.arrived.is_none_or(|t| now.duration_since(t) >= lag))
        }
    }

    /// The variant names, in the order images list their URLs.
    pub fn variant_names(st: &State) -> Vec<String> {
        st.variants.keys().cloned().collect()
    }

    /// The wire form of one image, reading the variant names itself.
    pub fn wire_one(&self, rec: &ImageRec) -> Image {
        let names = Self::variant_names(&self.store.lock());
        self.wire(rec, &names)
    }
}

/// Requests served, by route template and status, plus the 429 count.
#[derive(Default)]
pub struct Counters {
    by_route: Mutex<HashMap<(&'static str, &'static str, u16), u64>>,
    /// 429s served.
    pub throttled: AtomicU64,
}

impl Counters {
    /// Counts one answer; status 0 stands for a connection dropped without an answer.
    pub fn record(&self, method: &Method, template: &'static str, status: u16) {
        if status == 429 {
            self.throttled.fetch_add(1, Ordering::Relaxed);
        }
        let method = static_method(method);
        *self
            .by_route
            .lock()
            .expect("counters poisoned")
            .entry((method, template, status))
            .or_insert(0) += 1;
    }

    /// `(route, status, count)` rows, sorted.
    pub fn rows(&self) -> Vec<(String, u16, u64)> {
        let mut rows: Vec<_> = self
            .by_route
            .lock()
            .expect("counters poisoned")
            .iter()
            .map(|((m, t, s), c)| (format!("{m} {t}"), *s, *c))
            .collect();
        rows.sort();
        rows
    }
}

fn static_method(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}
