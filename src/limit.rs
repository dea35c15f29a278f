//! The one rate limiter every HTTP attempt to the API host passes through, retries
//! included, and the shared cool-off that a 429 sets so that all workers pause together.
//! Cloudflare counts every request and answers overshoot by blocking the user for minutes,
//! so the limiter is the only safe place to decide when a request may leave.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

use crate::error::Result;

/// Pause after a 429 that carried no `retry-after`: long enough not to deepen a block, short
/// enough to notice when it lifts (the API's penalty is 5 minutes; probes are rate-limited too).
pub const DEFAULT_COOL_OFF: Duration = Duration::from_secs(60);

/// A shared limiter for one host and credential.
#[derive(Debug)]
pub struct Limiter {
    gcra: DefaultDirectRateLimiter,
    cool_off_until: Mutex<Option<Instant>>,
    requests: AtomicU64,
    throttled: AtomicU64,
}

impl Limiter {
    /// A limiter letting `rate` requests per second through, `burst` at once after idling.
    pub fn new(rate: f64, burst: u32) -> Limiter {
        let period = Duration::from_secs_f64(1.0 / rate.max(1e-6));
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Limiter {
            gcra: RateLimiter::direct(quota),
            cool_off_until: Mutex::new(None),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
        }
    }

    /// Waits until a request may be sent, and counts it as sent.
    pub async fn acquire(&self) {
        loop {
            self.wait_cool_off().await;
            self.gcra.until_ready().await;
            // A 429 may have arrived while this worker waited for its token.
            if self.cool_off_remaining().is_none() {
                break;
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    async fn wait_cool_off(&self) {
        while let Some(left) = self.cool_off_remaining() {
            tokio::time::sleep(left).await;
        }
    }

    fn cool_off_remaining(&self) -> Option<Duration> {
        let until = (*self.cool_off_until.lock().ok()?)?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Sends one request once the limiter allows it, counting it in `spent` and turning a
    /// 429 answer into the shared cool-off. `request` must not have started yet.
    pub async fn send<T>(
        &self,
        spent: &AtomicU32,
        request: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.acquire().await;
        spent.fetch_add(1, Ordering::Relaxed);
        let result = request.await;
        if let Err(e) = &result
            && e.is_rate_limited()
        {
            self.throttled(e.rate_limit_wait());
        }
        result
    }

    /// Records a 429: every worker pauses until `retry_after` (or [`DEFAULT_COOL_OFF`]) has passed.
    pub fn throttled(&self, retry_after: Option<Duration>) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let until = Instant::now() + retry_after.unwrap_or(DEFAULT_COOL_OFF);
        if let Ok(mut slot) = self.cool_off_until.lock()
            && slot.is_none_or(|current| current < until)
        {
            *slot = Some(until);
        }
        tracing::warn!(
            pause_secs = retry_after.unwrap_or(DEFAULT_COOL_OFF).as_secs_f64(),
            "rate limited by Cloudflare (429): all uploads pause; lower --rate if this repeats"
        );
    }

    /// Requests sent through this limiter so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// 429 answers seen so far.
    pub fn throttled_count(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_caller_until_retry_after() {
        let limiter = std::sync::Arc::new(Limiter::new(1000.0, 10));
        limiter.acquire().await;
        let start = Instant::now();
        limiter.throttled(Some(Duration::from_secs(7)));
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    l.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        for w in waiters {
            assert!(w.await.unwrap() - start >= Duration::from_secs(7));
        }
        assert_eq!((limiter.requests(), limiter.throttled_count()), (4, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn any_rate_limit_error_sets_the_shared_cool_off() {
        use crate::error::Error;
        let limiter = Limiter::new(1000.0, 10);
        let spent = AtomicU32::new(0);
        let html_429 = || async {
            Err::<(), _>(Error::RateLimited {
                status: 429,
                code: 0,
                message: "<html>Error 1015</html>".into(),
                retry_after: Some(Duration::from_secs(9)),
            })
        };
        let _ = limiter.send(&spent, html_429()).await;
        let start = Instant::now();
        limiter.acquire().await;
        assert!(Instant::now() - start >= Duration::from_secs(9));
        assert_eq!(limiter.throttled_count(), 1);
    }
}
