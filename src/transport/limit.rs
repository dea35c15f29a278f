//! The one rate limiter every HTTP attempt to the API host passes through, retries
//! included, and the shared cool-off that a 429 sets so that all workers pause together.
//! Cloudflare counts every request and answers overshoot by blocking the user for minutes,
//! so the limiter is the only safe place to decide when a request may leave.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::client::{Answered, MAX_WAIT};
use crate::config::DEFAULT_RATE;
use crate::error::{Error, Result};

/// First pause after a 429 that said nothing about how long to wait (no `Retry-After`, no
/// rate-limit reset header): short, because the 429 may have been a brief overshoot.
pub const FIRST_COOL_OFF: Duration = Duration::from_secs(5);
/// The API's penalty once over its limit, and the longest pause a 429 without a hint gets;
/// from [`FIRST_COOL_OFF`] the pause doubles with each consecutive 429 up to this.
pub const PENALTY: Duration = Duration::from_secs(300);
/// How long an unbroken streak of 429s may last before the run gives up with
/// [`Error::ThrottledTooLong`]: a 429 never spends an item's attempts, so this is the bound.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(30 * 60);

/// Cloudflare's documented average on the API host: 1,200 requests per 5 minutes per user.
pub const ACCOUNT_AVERAGE: f64 = 4.0;

/// What to tell the user when `rate` requests per second on the API host, in each of
/// `processes` processes sharing the account (shards), add up to more than the account's
/// average: the run cannot go faster, it only gets blocked. `None` within the limit.
pub fn over_account_limit(rate: f64, processes: u32) -> Option<String> {
    let total = rate * f64::from(processes.max(1));
    if total <= ACCOUNT_AVERAGE {
        return None;
    }
    let given = if processes > 1 {
        format!(
            "`upload.rate` (--rate) {rate}/s in each of {processes} shards is {total}/s in all, which"
        )
    } else {
        format!("`upload.rate` (--rate) {rate}/s")
    };
    Some(format!(
        "{given} is above Cloudflare's documented 4/s average on the API host (1,200 requests per \
         5 minutes, counted over every client of the user): past it Cloudflare blocks every API \
         call of the user for 5 minutes (429), so the run pauses for minutes at a time and \
         averages 4/s at best; use --rate {} (the default) or less",
        DEFAULT_RATE / f64::from(processes.max(1))
    ))
}

/// What a request sent through [`Limiter::send`] yields: a plain result, or the client's
/// [`Answered`], whose rate-limit budget the limiter acts on.
pub trait Answer {
    /// The value of a success.
    type Value;
    /// The result, and the reset of a budget the server reported as used up.
    fn split(self) -> (Result<Self::Value>, Option<Duration>);
}

impl<T> Answer for Result<T> {
    type Value = T;
    fn split(self) -> (Result<T>, Option<Duration>) {
        (self, None)
    }
}

impl<T> Answer for Answered<T> {
    type Value = T;
    fn split(self) -> (Result<T>, Option<Duration>) {
        (self.result, self.exhausted)
    }
}

/// The shared cool-off and the 429 streak behind it.
#[derive(Debug, Default)]
struct CoolOff {
    /// No request leaves before this.
    until: Option<Instant>,
    /// Consecutive 429 episodes, without an answer in between that was not a 429.
    streak: u32,
    /// When the last 429 arrived: answers to requests sent before it are the same episode.
    last_429: Option<Instant>,
    /// The first 429 of the current streak.
    since: Option<Instant>,
}

/// Each 429 episode halves the rate, down to this fraction of the configured rate.
const FLOOR_FRACTION: f64 = 1.0 / 16.0;
/// After this long without a 429 the rate climbs back by [`RECOVER_STEP`] of the configured rate.
pub const RECOVER_EVERY: Duration = Duration::from_secs(60);
/// The share of the configured rate won back every [`RECOVER_EVERY`] without a 429.
const RECOVER_STEP: f64 = 0.1;

/// Paces requests at a rate that can change (governor's quota cannot): a token bucket of
/// `burst` tokens refilled at `rate` per second, which lets through what a GCRA would.
/// A caller reserves a token and sleeps until it is due, so callers are served in turn.
/// The rate follows AIMD: halved by each 429 episode, raised step by step after calm spells.
#[derive(Debug)]
struct Pacer {
    configured: f64,
    rate: f64,
    burst: f64,
    tokens: f64,
    refilled_at: Instant,
    /// Recovery counts calm spells from here: the end of the last slow-down's cool-off.
    calm_since: Instant,
}

impl Pacer {
    fn new(rate: f64, burst: u32, now: Instant) -> Pacer {
        let rate = if rate.is_finite() {
            rate.max(1e-6)
        } else {
            1e6
        };
        let burst = f64::from(burst.max(1));
        Pacer {
            configured: rate,
            rate,
            burst,
            tokens: burst,
            refilled_at: now,
            calm_since: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled_at = now;
    }

    /// Takes a token and says how long to wait until it is due (zero when one was ready).
    fn reserve(&mut self, now: Instant) -> Duration {
        self.recover(now);
        self.refill(now);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Multiplicative decrease: half the rate, not below the floor; calm counts from `resume`.
    fn slow_down(&mut self, now: Instant, resume: Instant) {
        self.refill(now);
        self.rate = (self.rate / 2.0).max(self.configured * FLOOR_FRACTION);
        self.calm_since = resume;
    }

    /// Additive increase: one step per calm [`RECOVER_EVERY`], up to the configured rate.
    fn recover(&mut self, now: Instant) {
        if self.rate >= self.configured || now < self.calm_since + RECOVER_EVERY {
            return;
        }
        let spells = (now - self.calm_since).as_secs_f64() / RECOVER_EVERY.as_secs_f64();
        let spells = spells.floor();
        self.refill(now);
        self.rate = (self.rate + spells * RECOVER_STEP * self.configured).min(self.configured);
        self.calm_since += RECOVER_EVERY.mul_f64(spells);
    }
}

/// A shared limiter for one host and credential.
#[derive(Debug)]
pub struct Limiter {
    pacer: Mutex<Pacer>,
    cool_off: Mutex<CoolOff>,
    requests: AtomicU64,
    throttled: AtomicU64,
    give_up_after: Duration,
}

impl Limiter {
    /// A limiter letting `rate` requests per second through, `burst` at once after idling.
    pub fn new(rate: f64, burst: u32) -> Limiter {
        Limiter {
            pacer: Mutex::new(Pacer::new(rate, burst, Instant::now())),
            cool_off: Mutex::new(CoolOff::default()),
            requests: AtomicU64::new(0),
            throttled: AtomicU64::new(0),
            give_up_after: GIVE_UP_AFTER,
        }
    }

    /// The same limiter, giving up after `limit` of unbroken 429s instead of [`GIVE_UP_AFTER`].
    pub fn with_give_up_after(mut self, limit: Duration) -> Limiter {
        self.give_up_after = limit;
        self
    }

    /// Waits until a request may be sent, and counts it as sent.
    pub async fn acquire(&self) {
        loop {
            self.wait_cool_off().await;
            let due = self
                .pacer
                .lock()
                .map(|mut p| p.reserve(Instant::now()))
                .unwrap_or_default();
            if !due.is_zero() {
                tokio::time::sleep(due).await;
            }
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

    /// How long every worker still has to wait, if a cool-off is on.
    pub fn cool_off_remaining(&self) -> Option<Duration> {
        let until = self.cool_off.lock().ok()?.until?;
        let now = Instant::now();
        (until > now).then(|| until - now)
    }

    /// Sends one request once the limiter allows it, counting it in `spent`, turning a
    /// rate-limit answer into the shared cool-off and a used-up budget into a pause. A 429
    /// after an unbroken streak of them lasting the give-up limit (30 min) becomes
    /// [`Error::ThrottledTooLong`], which ends the run.
    /// `request` must not have started yet.
    /// A used-up budget is what the answer's [`Answer::split`] reports (the response's
    /// rate-limit headers, `Ratelimit: ...;r=0;t=<reset>`): every worker is then held
    /// back until it resets, slowing down before a 429 rather than after.
    pub async fn send<A: Answer>(
        &self,
        spent: &AtomicU32,
        request: impl Future<Output = A>,
    ) -> Result<A::Value> {
        self.acquire().await;
        let sent_at = Instant::now();
        spent.fetch_add(1, Ordering::Relaxed);
        let (result, exhausted) = request.await.split();
        match &result {
            Err(e) if e.is_rate_limited() => {
                self.throttled_at(sent_at, e.rate_limit_wait());
                if let Some(spell) = self.throttled_for()
                    && spell >= self.give_up_after
                {
                    return Err(Error::ThrottledTooLong(spell));
                }
            }
            // Only an answer from the server says the block has lifted.
            Ok(_) | Err(Error::Api { .. } | Error::Protocol { .. }) => self.answered(sent_at),
            Err(_) => {}
        }
        if let Some(reset) = exhausted {
            self.budget_exhausted(reset);
        }
        result
    }

    /// Records a 429 for a request sent just now: every worker pauses for `wait` (the
    /// server's hint), or for a cool-off growing with the streak of 429s when it gave none.
    pub fn throttled(&self, wait: Option<Duration>) {
        self.throttled_at(Instant::now(), wait);
    }

    fn throttled_at(&self, sent_at: Instant, wait: Option<Duration>) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let Ok(mut c) = self.cool_off.lock() else {
            return;
        };
        // Requests sent before the last 429 was seen were in flight together: one episode.
        let new_episode = c.last_429.is_none_or(|last| sent_at >= last);
        if new_episode {
            c.streak = c.streak.saturating_add(1);
        }
        c.last_429 = Some(now);
        c.since.get_or_insert(now);
        let pause = wait
            .unwrap_or_else(|| growing_cool_off(c.streak))
            .min(MAX_WAIT);
        let until = now + pause;
        if c.until.is_none_or(|current| current < until) {
            c.until = Some(until);
        }
        if new_episode {
            if let Ok(mut p) = self.pacer.lock() {
                p.slow_down(now, c.until.unwrap_or(until));
            }
            tracing::warn!(
                pause_secs = pause.as_secs_f64(),
                streak = c.streak,
                "rate limited by Cloudflare (429): all uploads pause, then go on at half the rate"
            );
        }
    }

    /// An answer that was not a 429: when its request left after the last 429, the
    /// block has lifted and the streak ends.
    fn answered(&self, sent_at: Instant) {
        if let Ok(mut c) = self.cool_off.lock()
            && c.streak > 0
            && c.last_429.is_none_or(|last| sent_at >= last)
        {
            c.streak = 0;
            c.since = None;
        }
    }

    /// The server said no request is left until `reset`: nobody sends before then.
    pub fn budget_exhausted(&self, reset: Duration) {
        let until = Instant::now() + reset.min(MAX_WAIT);
        if let Ok(mut c) = self.cool_off.lock()
            && c.until.is_none_or(|current| current < until)
        {
            c.until = Some(until);
            tracing::debug!(
                pause_secs = reset.min(MAX_WAIT).as_secs_f64(),
                "the API's rate-limit budget is used up: pausing until it resets"
            );
        }
    }

    /// For how long the account has been answered with nothing but 429s, if it is now.
    pub fn throttled_for(&self) -> Option<Duration> {
        let since = self.cool_off.lock().ok()?.since?;
        Some(Instant::now() - since)
    }

    /// The request rate in force now (per second): the configured rate, or less after 429s.
    pub fn rate(&self) -> f64 {
        self.pacer
            .lock()
            .map(|mut p| {
                p.recover(Instant::now());
                p.rate
            })
            .unwrap_or_default()
    }

    /// Changes the configured rate (a reload): in force at once, a slow-down after 429s
    /// included, since the account's budget is what changed.
    pub fn set_rate(&self, rate: f64) {
        if let Ok(mut p) = self.pacer.lock() {
            let now = Instant::now();
            p.refill(now);
            let rate = if rate.is_finite() {
                rate.max(1e-6)
            } else {
                1e6
            };
            p.configured = rate;
            p.rate = p.rate.min(rate);
        }
    }

    /// The rate the limiter was configured with, which it climbs back to.
    pub fn configured_rate(&self) -> f64 {
        self.pacer.lock().map(|p| p.configured).unwrap_or_default()
    }

    /// How long a request asked for now would wait: the cool-off after a 429, or the
    /// queue of requests already waiting for their token. Nothing is reserved, so a server
    /// can answer 429 itself instead of queueing a caller behind a penalty.
    pub fn delay(&self) -> Duration {
        let cool_off = self.cool_off_remaining().unwrap_or_default();
        let queued = self
            .pacer
            .lock()
            .map(|mut p| {
                let now = Instant::now();
                p.recover(now);
                p.refill(now);
                if p.tokens >= 1.0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64((1.0 - p.tokens) / p.rate)
                }
            })
            .unwrap_or_default();
        cool_off.max(queued)
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

/// The pause after the `streak`-th consecutive 429 without a hint: 5 s, 10 s, 20 s, ... 300 s.
fn growing_cool_off(streak: u32) -> Duration {
    FIRST_COOL_OFF
        .saturating_mul(1u32 << streak.saturating_sub(1).min(16))
        .min(PENALTY)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three callers acquiring at once; when each got through.
    async fn three_waiters(limiter: &std::sync::Arc<Limiter>) -> Vec<Instant> {
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let l = limiter.clone();
                tokio::spawn(async move {
                    l.acquire().await;
                    Instant::now()
                })
            })
            .collect();
        let mut passed = Vec::new();
        for w in waiters {
            passed.push(w.await.unwrap());
        }
        passed
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_caller_until_retry_after() {
        let limiter = std::sync::Arc::new(Limiter::new(1000.0, 10));
        limiter.acquire().await;
        let start = Instant::now();
        limiter.throttled(Some(Duration::from_secs(7)));
        for passed in three_waiters(&limiter).await {
            assert!(passed - start >= Duration::from_secs(7));
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

    #[tokio::test(start_paused = true)]
    async fn without_a_hint_the_cool_off_grows_with_consecutive_429s_and_resets() {
        let limiter = Limiter::new(1000.0, 10);
        let mut pauses = Vec::new();
        for _ in 0..8 {
            limiter.throttled(None);
            pauses.push(limiter.cool_off_remaining().unwrap().as_secs());
            limiter.acquire().await;
        }
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 300, 300]);
        // An answer to a request sent after the last 429: the block lifted.
        limiter.answered(Instant::now());
        assert_eq!(limiter.throttled_for(), None);
        limiter.throttled(None);
        assert_eq!(limiter.cool_off_remaining(), Some(FIRST_COOL_OFF));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limits_of_requests_in_flight_together_are_one_episode() {
        let limiter = Limiter::new(1000.0, 10);
        let sent = Instant::now();
        tokio::time::advance(Duration::from_millis(10)).await;
        for _ in 0..5 {
            limiter.throttled_at(sent, None);
        }
        assert_eq!(limiter.cool_off_remaining(), Some(FIRST_COOL_OFF));
        assert_eq!(limiter.throttled_count(), 5);
        // A late answer to a request sent before the 429 proves nothing.
        limiter.answered(sent);
        assert!(limiter.throttled_for().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_used_up_budget_holds_everyone_until_its_reset() {
        let limiter = std::sync::Arc::new(Limiter::new(1000.0, 10));
        let spent = AtomicU32::new(0);
        limiter
            .send(&spent, async {
                Answered {
                    result: Ok(()),
                    exhausted: Some(Duration::from_secs(30)),
                }
            })
            .await
            .unwrap();
        let start = Instant::now();
        for passed in three_waiters(&limiter).await {
            assert!(passed - start >= Duration::from_secs(30));
        }
        assert_eq!(limiter.throttled_count(), 0);
        // A reset far away is bounded.
        limiter.budget_exhausted(Duration::from_secs(u64::MAX / 4));
        assert_eq!(limiter.cool_off_remaining(), Some(MAX_WAIT));
    }

    #[tokio::test]
    async fn a_success_saying_no_request_is_left_pauses_the_limiter() {
        let client = crate::api::client::tests::serving(
            200,
            &[("ratelimit", "\"default\";r=0;t=20")],
            r#"{"success":true,"errors":[],"result":{"count":{"current":1,"allowed":10}}}"#,
        )
        .await;
        let limiter = Limiter::new(100.0, 10);
        let spent = std::sync::atomic::AtomicU32::new(0);
        limiter.send(&spent, client.stats()).await.unwrap();
        let left = limiter.cool_off_remaining().unwrap();
        assert!(
            left > Duration::from_secs(15) && left <= Duration::from_secs(20),
            "{left:?}"
        );
        assert_eq!(limiter.throttled_count(), 0);
        // Remaining requests, or no header at all: no pause.
        let client = crate::api::client::tests::serving(
            200,
            &[("ratelimit", "\"default\";r=5;t=20")],
            r#"{"success":true,"result":{"count":{"current":1,"allowed":10}}}"#,
        )
        .await;
        let limiter = Limiter::new(100.0, 10);
        limiter.send(&spent, client.stats()).await.unwrap();
        assert_eq!(limiter.cool_off_remaining(), None);
    }

    async fn sends_in(limiter: &Limiter, window: Duration) -> u32 {
        let end = Instant::now() + window;
        let mut n = 0;
        loop {
            limiter.acquire().await;
            if Instant::now() >= end {
                return n;
            }
            n += 1;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paces_at_the_rate_after_a_burst() {
        let limiter = Limiter::new(10.0, 5);
        // The burst at once, then one every 100 ms (the one due at 2 s is outside).
        assert_eq!(sends_in(&limiter, Duration::from_secs(2)).await, 5 + 19);
    }

    #[tokio::test(start_paused = true)]
    async fn repeated_429s_halve_the_rate_down_to_a_floor_and_calm_spells_win_it_back() {
        let limiter = Limiter::new(16.0, 1);
        for expected in [8.0, 4.0, 2.0, 1.0, 1.0] {
            limiter.throttled(Some(Duration::from_secs(1)));
            assert_eq!(limiter.rate(), expected);
            limiter.acquire().await;
        }
        assert_eq!(limiter.configured_rate(), 16.0);
        // The lower rate is what requests get.
        let n = sends_in(&limiter, Duration::from_secs(10)).await;
        assert!((9..=11).contains(&n), "{n}");
        // One step of a tenth of the configured rate per calm minute, up to the configured rate.
        tokio::time::advance(RECOVER_EVERY).await;
        assert!((limiter.rate() - 2.6).abs() < 1e-9, "{}", limiter.rate());
        tokio::time::advance(RECOVER_EVERY * 20).await;
        assert_eq!(limiter.rate(), 16.0);
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_starts_after_the_cool_off_and_a_new_429_stops_it() {
        let limiter = Limiter::new(10.0, 1);
        limiter.throttled(Some(Duration::from_secs(100)));
        assert_eq!(limiter.rate(), 5.0);
        tokio::time::advance(Duration::from_secs(150)).await;
        assert_eq!(limiter.rate(), 5.0, "only 50 s of calm after the cool-off");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(limiter.rate(), 6.0);
        limiter.acquire().await;
        limiter.throttled(Some(Duration::from_secs(1)));
        assert_eq!(limiter.rate(), 3.0);
    }
}
