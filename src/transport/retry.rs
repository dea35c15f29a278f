//! The retry policy of one API call: capped exponential backoff with full jitter (backon
//! drives it) and a bounded number of attempts for failures of the item. A 429 says
//! nothing about the item: it never spends an attempt, and is waited out by the shared
//! cool-off in `limit`, for as long as it takes; only the limiter ends that wait, with
//! [`crate::error::Error::ThrottledTooLong`], after 30 minutes of unbroken 429s.

use std::future::Future;
use std::time::Duration;

use backon::Retryable;

use crate::config::Config;
use crate::error::{Disposition, Result};

/// Backoff settings: how often and how patiently one call is retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts per call for transient failures, the first included.
    pub max_attempts: u32,
    /// First backoff ceiling.
    pub base: Duration,
    /// Largest backoff ceiling.
    pub cap: Duration,
}

impl RetryPolicy {
    /// The policy of API calls a configuration asks for: `upload.max_attempts` attempts.
    pub fn from_config(cfg: &Config) -> RetryPolicy {
        RetryPolicy {
            max_attempts: cfg.upload.max_attempts,
            ..RetryPolicy::default()
        }
    }
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 6,
            base: Duration::from_millis(250),
            cap: Duration::from_secs(30),
        }
    }
}

/// Full jitter (AWS architecture blog): each delay is uniform in [0, min(cap, base * 2^n)],
/// which spreads retrying workers apart instead of letting them stampede together.
#[derive(Debug, Clone, Copy)]
struct FullJitter {
    base: Duration,
    cap: Duration,
    n: u32,
}

impl Iterator for FullJitter {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.n.min(20))
            .min(self.cap);
        self.n = self.n.saturating_add(1);
        Some(ceiling.mul_f64(fastrand::f64()))
    }
}

/// Runs `op` until it succeeds, fails permanently, or its retries run out. `op` sends its
/// requests through [`crate::transport::limit::Limiter::send`], so every attempt is rate-limited.
pub async fn call<T, F, Fut>(policy: RetryPolicy, op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut failures = 0u32;
    op.retry(FullJitter {
        base: policy.base,
        cap: policy.cap,
        n: 0,
    })
    .when(|e| matches!(e.disposition(), Disposition::Retry { .. }))
    .adjust(|e, delay| {
        if e.is_rate_limited() {
            // The cool-off already holds every worker back; no extra delay, no attempt spent.
            Some(Duration::ZERO)
        } else {
            failures += 1;
            if failures >= policy.max_attempts {
                return None;
            }
            match e.disposition() {
                Disposition::Retry { after: Some(after) } => {
                    Some(after.max(delay.unwrap_or_default()))
                }
                _ => delay,
            }
        }
    })
    .notify(|e, delay| tracing::debug!(error = %e, delay_ms = delay.as_millis() as u64, "retrying"))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, api_error};
    use crate::transport::limit::Limiter;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api(status: u16, code: u32) -> Error {
        api_error(status, code, None)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_a_bounded_number_of_times() {
        let limiter = Limiter::new(1000.0, 100);
        let spent = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: 4,
            ..RetryPolicy::default()
        };
        let r: Result<()> = call(policy, || limiter.send(&spent, async { Err(api(503, 0)) })).await;
        assert!(r.is_err());
        assert_eq!(spent.load(Ordering::Relaxed), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_permanent_errors_and_stops_when_it_succeeds() {
        let limiter = Limiter::new(1000.0, 100);
        let spent = AtomicU32::new(0);
        let r: Result<()> = call(RetryPolicy::default(), || {
            limiter.send(&spent, async { Err(api(400, 5455)) })
        })
        .await;
        assert!(r.is_err());
        assert_eq!(spent.load(Ordering::Relaxed), 1);

        let spent = AtomicU32::new(0);
        let calls = AtomicU32::new(0);
        let r = call(RetryPolicy::default(), || {
            limiter.send(&spent, async {
                if calls.fetch_add(1, Ordering::Relaxed) < 2 {
                    Err(api(502, 0))
                } else {
                    Ok(7)
                }
            })
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(spent.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn full_jitter_stays_under_the_capped_ceiling() {
        let mut b = FullJitter {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
            n: 0,
        };
        let delays: Vec<_> = (0..10).map(|_| b.next().unwrap()).collect();
        assert!(delays[0] <= Duration::from_millis(100));
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_never_spends_an_attempt() {
        let limiter = Limiter::new(1000.0, 100);
        let spent = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: 2,
            ..RetryPolicy::default()
        };
        let r = call(policy, || {
            limiter.send(&spent, async {
                if spent.load(Ordering::Relaxed) <= 50 {
                    Err(api_error(429, 971, Some(Duration::from_secs(2))))
                } else {
                    Ok(1)
                }
            })
        })
        .await;
        assert_eq!(r.unwrap(), 1);
        assert_eq!(spent.load(Ordering::Relaxed), 51);
        assert_eq!(limiter.throttled_count(), 50);
    }

    #[tokio::test(start_paused = true)]
    async fn unbroken_429s_end_the_call_fatally_after_the_give_up_limit() {
        let limiter = Limiter::new(1000.0, 100);
        let spent = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let r: Result<()> = call(RetryPolicy::default(), || {
            limiter.send(&spent, async {
                Err(api_error(429, 971, Some(Duration::from_secs(60))))
            })
        })
        .await;
        let e = r.unwrap_err();
        assert!(matches!(e, Error::ThrottledTooLong(_)), "{e:?}");
        assert_eq!(e.disposition(), Disposition::Fatal);
        assert!(tokio::time::Instant::now() - start >= crate::transport::limit::GIVE_UP_AFTER);
        assert_eq!(spent.load(Ordering::Relaxed), 31);
        assert!(e.to_string().contains("30 minutes"), "{e}");

        // A shorter limit for a limiter built with one.
        let limiter = Limiter::new(1000.0, 100).with_give_up_after(Duration::from_secs(10));
        let r: Result<()> = call(RetryPolicy::default(), || {
            limiter.send(&spent, async { Err(api_error(429, 0, None)) })
        })
        .await;
        assert!(matches!(r, Err(Error::ThrottledTooLong(_))));
    }
}
