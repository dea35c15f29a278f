//! Per-token rate limiting: a token bucket with a penalty period once it runs dry, or a
//! strict sliding window (`sliding.rs`), and the headers that describe either.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue};

use super::admission::Admission;
use super::admission::ceil_secs;
use super::sliding::SlidingWindows;

/// A rate-limit policy: `requests` per `window`; going over blocks for `penalty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests allowed per window (also the burst capacity).
    pub requests: u32,
    /// The window the quota refills over.
    pub window: Duration,
    /// How long a token is blocked once over.
    pub penalty: Duration,
}

struct Bucket {
    tokens: f64,
    last: Instant,
    blocked_until: Option<Instant>,
}

/// The service's rate limit on one host: a bucket per token. (The client's own pacing is
/// the `Limiter` in cfimg's transport; this one is what it paces against.)
pub struct TokenBuckets {
    policy: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl TokenBuckets {
    /// Buckets enforcing `policy`.
    pub fn new(policy: RateLimit) -> Self {
        TokenBuckets {
            policy,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `key` and decides it.
    pub fn check(&self, key: &str) -> Admission {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Admission {
        let cap = f64::from(self.policy.requests.max(1));
        let rate = cap / self.policy.window.as_secs_f64().max(1e-9);
        let mut buckets = self.buckets.lock().expect("rate limiter poisoned");
        if !buckets.contains_key(key) {
            buckets.insert(
                key.to_owned(),
                Bucket {
                    tokens: cap,
                    last: now,
                    blocked_until: None,
                },
            );
        }
        let Some(b) = buckets.get_mut(key) else {
            return Admission::Allowed {
                remaining: 0,
                reset: 0,
            };
        };
        if let Some(until) = b.blocked_until {
            if now < until {
                return Admission::Limited {
                    retry_after: ceil_secs(until - now),
                };
            }
            // The penalty is served: start again with a full quota, as the real
            // service's counter resets when its block ends.
            b.blocked_until = None;
            b.tokens = cap;
            b.last = now;
        }
        b.tokens = (b.tokens + (now - b.last).as_secs_f64() * rate).min(cap);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Admission::Allowed {
                remaining: b.tokens as u32,
                reset: ((cap - b.tokens) / rate).ceil() as u64,
            }
        } else {
            b.blocked_until = Some(now + self.policy.penalty);
            Admission::Limited {
                retry_after: ceil_secs(self.policy.penalty),
            }
        }
    }
}

/// How a host counts its limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitWindow {
    /// A token bucket refilled continuously, with a penalty once it runs dry.
    #[default]
    Bucket,
    /// At most the quota in any window, no penalty: the server of the standard headers.
    Sliding,
}

enum Counter {
    Bucket(TokenBuckets),
    Sliding(SlidingWindows),
}

/// One host's rate limit: how it counts, and what its answers say about it.
pub struct HostLimit {
    policy: RateLimit,
    counter: Counter,
    headers: bool,
}

impl HostLimit {
    /// A limit enforcing `policy` counted the `window` way; `headers` says whether answers
    /// carry `Ratelimit` and `Ratelimit-Policy` (`retry-after` on a 429 always).
    pub fn new(policy: RateLimit, window: LimitWindow, headers: bool) -> Self {
        let counter = match window {
            LimitWindow::Bucket => Counter::Bucket(TokenBuckets::new(policy)),
            LimitWindow::Sliding => {
                Counter::Sliding(SlidingWindows::new(policy.requests, policy.window))
            }
        };
        HostLimit {
            policy,
            counter,
            headers,
        }
    }

    /// Counts one request of `key` and decides it.
    pub fn check(&self, key: &str) -> Admission {
        match &self.counter {
            Counter::Bucket(b) => b.check(key),
            Counter::Sliding(w) => w.check(key),
        }
    }

    /// `Ratelimit` and `Ratelimit-Policy` (when on) for an answer that was not counted
    /// (refused credentials, a path outside any account): the whole quota, nothing to wait.
    pub fn unmetered_headers(&self, headers: &mut HeaderMap) {
        let full = Admission::Allowed {
            remaining: self.policy.requests,
            reset: 0,
        };
        self.headers(full, headers);
    }

    /// The `Ratelimit`, `Ratelimit-Policy` (when on) and, when limited, `retry-after`
    /// headers. The policy is named `burst` for the bucket, as the API host's answers
    /// have it, and `default` for the sliding window, as the standard form has it.
    pub fn headers(&self, admission: Admission, headers: &mut HeaderMap) {
        let (remaining, reset) = match admission {
            Admission::Allowed { remaining, reset } => (remaining, reset),
            Admission::Limited { retry_after } => {
                headers.insert("retry-after", HeaderValue::from(retry_after));
                (0, retry_after)
            }
        };
        if !self.headers {
            return;
        }
        let name = match self.counter {
            Counter::Bucket(_) => "burst",
            Counter::Sliding(_) => "default",
        };
        let policy = format!(
            "\"{name}\";q={};w={}",
            self.policy.requests,
            ceil_secs(self.policy.window)
        );
        let current = format!("\"default\";r={remaining};t={reset}");
        if let Ok(v) = HeaderValue::from_str(&current) {
            headers.insert("ratelimit", v);
        }
        if let Ok(v) = HeaderValue::from_str(&policy) {
            headers.insert("ratelimit-policy", v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buckets() -> TokenBuckets {
        TokenBuckets::new(RateLimit {
            requests: 3,
            window: Duration::from_secs(3),
            penalty: Duration::from_secs(10),
        })
    }

    #[test]
    fn burst_then_penalty_then_fresh_quota() {
        let l = buckets();
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(matches!(l.check_at("t", t0), Admission::Allowed { .. }));
        }
        assert_eq!(l.check_at("t", t0), Admission::Limited { retry_after: 10 });
        // Refilled tokens do not lift the penalty early.
        let t1 = t0 + Duration::from_secs(5);
        assert_eq!(l.check_at("t", t1), Admission::Limited { retry_after: 5 });
        let t2 = t0 + Duration::from_secs(10);
        assert_eq!(
            l.check_at("t", t2),
            Admission::Allowed {
                remaining: 2,
                reset: 1
            }
        );
        // Other tokens are unaffected.
        assert!(matches!(l.check_at("u", t0), Admission::Allowed { .. }));
    }

    #[test]
    fn a_client_at_exactly_the_rate_is_never_limited() {
        let l = buckets();
        let t0 = Instant::now();
        for i in 0..100 {
            let t = t0 + Duration::from_secs(i);
            assert!(matches!(l.check_at("t", t), Admission::Allowed { .. }));
        }
    }
}
