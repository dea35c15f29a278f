//! The one rate limiter every HTTP attempt to the API host passes through, retries
//! included, and the shared cool-off that a 429 sets so that all workers pause together.
//! Cloudflare counts every request and answers overshoot by blocking the user for minutes,
//! so the limiter is the only safe place to decide when a request may leave.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::api::client::{Answered, MAX_WAIT};
use crate::api::policy::Policy;
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

/// What an answer's rate-limit headers told the limiter.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct Signals {
    /// No request is left until at most this has passed (`Ratelimit: ...;r=0;t=<reset>`).
    pub exhausted: Option<Duration>,
    /// The quota the server announced (`Ratelimit-Policy: ...;q=<n>;w=<s>`).
    pub policy: Option<Policy>,
}

/// What a request sent through [`Limiter::send`] yields: a plain result, or the client's
/// [`Answered`], whose rate-limit signals the limiter acts on.
pub trait Answer {
    /// The value of a success.
    type Value;
    /// The result, and what the server said about its rate limit.
    fn split(self) -> (Result<Self::Value>, Signals);
}

impl<T> Answer for Result<T> {
    type Value = T;
    fn split(self) -> (Result<T>, Signals) {
        (self, Signals::default())
    }
}

impl<T> Answer for Answered<T> {
    type Value = T;
    fn split(self) -> (Result<T>, Signals) {
        let signals = Signals {
            exhausted: self.exhausted,
            policy: self.policy,
        };
        (self.result, signals)
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

/// Answers remembered per limiter, to tell when the oldest of a window's requests leaves it.
const ANSWER_LOG: usize = 4096;
/// Slack after the moment a lane's own oldest request of a full window leaves it.
const SLIDE_MARGIN: Duration = Duration::from_millis(5);
/// The longest a request waits past its turn to go with the others whose turns fall in the
/// same tick of this length, when the host's limit leaves room for it ([`Pacer::group`]).
const GROUP_MAX: Duration = Duration::from_millis(20);

/// The Cloudflare limit a host documents, for pacing before the server announces one.
pub const API_HOST_LIMIT: Policy = Policy {
    quota: 1200,
    window: Duration::from_secs(300),
};
/// The batch host's documented limit per token.
pub const BATCH_HOST_LIMIT: Policy = Policy {
    quota: 200,
    window: Duration::from_secs(1),
};

/// Paces requests at a rate that can change (governor's quota cannot): a token bucket of
/// `burst` tokens refilled at `rate` per second, which lets through what a GCRA would.
/// A caller reserves a token and sleeps until it is due, so callers are served in turn.
/// The rate follows AIMD: halved by each 429 episode, raised step by step after calm spells,
/// never above the configured rate nor the quota the server announced.
#[derive(Debug)]
struct Pacer {
    configured: f64,
    /// The configured rate, or the announced quota's rate when lower.
    ceiling: f64,
    rate: f64,
    /// The configured burst...
    configured_burst: f64,
    /// ...or less, so that a burst and a window's worth at `ceiling` fit in the quota.
    burst: f64,
    tokens: f64,
    /// Tokens are counted up to here; later than now during a hold, when none accrue.
    refilled_at: Instant,
    /// Recovery counts calm spells from here: the end of the last slow-down's cool-off.
    calm_since: Instant,
    /// The quota the server announced, if it did.
    policy: Option<Policy>,
    /// The quota the host documents, until one is announced.
    documented: Option<Policy>,
    /// When the last answers came, oldest first: a request reached the server before its
    /// answer came back, so it leaves the server's window by then plus the window.
    answered: VecDeque<Instant>,
    /// When the last 429 episode's pause ended (or ends): a second 429 within a calm spell
    /// of it is a lower limit, a lone one only timing.
    refused_until: Option<Instant>,
}

impl Pacer {
    fn new(rate: f64, burst: u32, now: Instant) -> Pacer {
        let rate = sane_rate(rate);
        let burst = f64::from(burst.max(1));
        Pacer {
            configured: rate,
            ceiling: rate,
            rate,
            configured_burst: burst,
            burst,
            tokens: burst,
            refilled_at: now,
            calm_since: now,
            policy: None,
            documented: None,
            answered: VecDeque::new(),
            refused_until: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        if now <= self.refilled_at {
            return;
        }
        let elapsed = (now - self.refilled_at).as_secs_f64();
        // A start-up credit above the burst stays until it is spent.
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst.max(self.tokens));
        self.refilled_at = now;
    }

    /// Takes a token and says how long to wait until it is due (zero when one was ready).
    fn reserve(&mut self, now: Instant) -> Duration {
        self.recover(now);
        self.refill(now);
        self.tokens -= 1.0;
        // During a hold nothing is due before it ends.
        let held = self.refilled_at.saturating_duration_since(now);
        if self.tokens >= 0.0 {
            held
        } else {
            held + Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// How long a token reserved now would wait, reserving nothing.
    fn due(&self, now: Instant) -> Duration {
        let held = self.refilled_at.saturating_duration_since(now);
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let tokens = (self.tokens + elapsed * self.rate).min(self.burst.max(self.tokens)) - 1.0;
        if tokens >= 0.0 {
            held
        } else {
            held + Duration::from_secs_f64(-tokens / self.rate)
        }
    }

    /// A pause the server imposed lasts until `until`: no credit builds up meanwhile, and
    /// afterwards one request goes at once and the rest at the rate, evenly, as if the
    /// lane had just started at its rate rather than idled. Reservations due after the
    /// pause stand (their callers never see it); earlier ones are asked for again.
    fn hold(&mut self, now: Instant, until: Instant) {
        self.refill(now);
        let queue_ends =
            self.refilled_at + Duration::from_secs_f64((-self.tokens).max(0.0) / self.rate);
        if queue_ends < until {
            self.refilled_at = until;
            self.tokens = 1.0;
        }
    }

    /// Counts an attempt that ended now (answered, or failed without an answer).
    fn answered(&mut self, now: Instant) {
        if self.answered.len() >= ANSWER_LOG {
            self.answered.pop_front();
        }
        self.answered.push_back(now);
    }

    /// When the server's window, full when the last answer came, has room again at the
    /// latest: once the oldest of this lane's last quota's worth of requests leaves it. A
    /// request reached the server before its answer came, so its answer's time plus the
    /// window bounds when it leaves, whatever the delays on the way. `None` without a
    /// policy, or before the lane has had a quota's worth of answers (the server counted
    /// requests this lane does not know of).
    fn window_frees(&self) -> Option<Instant> {
        let policy = self.policy?;
        let oldest = self
            .answered
            .len()
            .checked_sub(usize::try_from(policy.quota).ok()?)?;
        Some(self.answered[oldest] + policy.window + SLIDE_MARGIN)
    }

    /// Paces by the quota the server announced: at most its rate, and a burst small
    /// enough that a burst plus a window at that rate stays within the quota.
    fn learn(&mut self, policy: Policy, now: Instant) {
        if self.policy == Some(policy) {
            return;
        }
        self.refill(now);
        self.policy = Some(policy);
        self.bound();
        tracing::debug!(
            quota = policy.quota,
            window_secs = policy.window.as_secs(),
            rate = self.ceiling,
            burst = self.burst,
            "the server announced its rate limit: pacing by it"
        );
    }

    /// Recomputes the ceiling and burst from the configured values and the policy.
    fn bound(&mut self) {
        self.ceiling = self
            .policy
            .map_or(self.configured, |p| self.configured.min(p.rate()));
        self.rate = self.rate.min(self.ceiling);
        // What the quota leaves beside a window at `ceiling`: a burst, or what is left of a
        // start-up credit, must fit in it.
        let room = self.policy.map_or(f64::INFINITY, |p| {
            (f64::from(p.quota) - self.ceiling * p.window.as_secs_f64())
                .floor()
                .max(1.0)
        });
        self.burst = self.configured_burst.min(room);
        self.tokens = self.tokens.min(room.max(self.burst));
    }

    /// Requests due within one tick of this length go together at its end (zero: each at
    /// its own time): a paced lane otherwise wakes the whole client for every request.
    fn group(&self) -> Duration {
        self.policy.or(self.documented).map_or(Duration::ZERO, |p| {
            group_within(p, self.ceiling, self.burst)
        })
    }

    /// A 429 episode whose pause ends at `resume`: says whether it halves the rate. When the
    /// server announced its quota, a lone 429 is a timing skew against its sliding window
    /// (our clock and the server's never agree to the millisecond; we already pace within
    /// the quota): hold, keep the rate. A second 429 within a calm spell of the last one's
    /// pause (the announced window, if longer) says the rate is too high: it halves. With no
    /// quota known there is no telling timing from a lower limit, and forgiving the first
    /// 429 measured worse (its pair followed within the minute): every 429 halves.
    fn refused(&mut self, now: Instant, resume: Instant) -> bool {
        let spell = self
            .policy
            .map_or(RECOVER_EVERY, |p| p.window.max(RECOVER_EVERY));
        let repeated = self.refused_until.is_some_and(|until| now < until + spell);
        let lone = !repeated && self.policy.is_some();
        self.refused_until = Some(resume);
        if !lone {
            self.slow_down(now, resume);
        }
        !lone
    }

    /// Multiplicative decrease: half the rate, not below the floor; calm counts from `resume`.
    fn slow_down(&mut self, now: Instant, resume: Instant) {
        self.refill(now);
        self.rate = (self.rate / 2.0).max(self.ceiling * FLOOR_FRACTION);
        self.calm_since = resume;
    }

    /// Additive increase: one step per calm [`RECOVER_EVERY`], up to the ceiling.
    fn recover(&mut self, now: Instant) {
        if self.rate >= self.ceiling || now < self.calm_since + RECOVER_EVERY {
            return;
        }
        let spells = (now - self.calm_since).as_secs_f64() / RECOVER_EVERY.as_secs_f64();
        let spells = spells.floor();
        self.refill(now);
        self.rate = (self.rate + spells * RECOVER_STEP * self.configured).min(self.ceiling);
        self.calm_since += RECOVER_EVERY.mul_f64(spells);
    }
}

/// The tick within which requests may go together under `limit`: holding a request back
/// until its tick ends sends, in any window, up to a tick's worth at `rate` more than
/// even pacing would (those due just before the window, sent in it), so the tick is what
/// the quota leaves beside a window at `rate` and a `burst`, at most [`GROUP_MAX`].
fn group_within(limit: Policy, rate: f64, burst: f64) -> Duration {
    let room = f64::from(limit.quota) - rate * limit.window.as_secs_f64() - burst;
    Duration::from_secs_f64((room / rate).clamp(0.0, GROUP_MAX.as_secs_f64()))
}

/// The end of the tick of length `group` that `at` falls in, ticks counted from `epoch`
/// (either side of it); `at` itself when it is on a tick's end or `group` is zero.
fn tick_end(at: Instant, epoch: Instant, group: Duration) -> Instant {
    let tick = group.as_nanos();
    if tick == 0 {
        return at;
    }
    let nanos = |n: u128| Duration::from_nanos(u64::try_from(n).unwrap_or(u64::MAX));
    if at >= epoch {
        epoch + nanos((at - epoch).as_nanos().div_ceil(tick) * tick)
    } else {
        epoch - nanos((epoch - at).as_nanos() / tick * tick)
    }
}

/// When a request asking at `now`, its turn `due` after it, goes: at once when it is due
/// now, else at the end of the tick of length `group` its turn falls in.
fn goes_at(now: Instant, due: Duration, group: Duration) -> Instant {
    if due.is_zero() {
        now
    } else {
        tick_end(now + due, ticks_epoch(), group)
    }
}

/// Where every limiter of the process counts its ticks from, so that lanes sharing a
/// client also share their ticks.
fn ticks_epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A usable rate: positive and finite.
fn sane_rate(rate: f64) -> f64 {
    if rate.is_finite() {
        rate.max(1e-6)
    } else {
        1e6
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

    /// The same limiter, letting its first `credit` requests go at once (when more than its
    /// burst): a start-up's few requests need not wait for each other when the server's
    /// budget has room for them. The credit stays until spent, and an announced quota
    /// trims it to the room the quota leaves.
    pub fn with_start_credit(self, credit: u32) -> Limiter {
        if let Ok(mut p) = self.pacer.lock() {
            p.tokens = p.tokens.max(f64::from(credit));
        }
        self
    }

    /// The same limiter, knowing the quota the host documents: until the server announces
    /// one, it says how much room there is to send requests due close together at once.
    pub fn with_documented_limit(self, limit: Policy) -> Limiter {
        if let Ok(mut p) = self.pacer.lock() {
            p.documented = Some(limit);
            p.bound();
        }
        self
    }

    /// The same limiter, giving up after `limit` of unbroken 429s instead of [`GIVE_UP_AFTER`].
    pub fn with_give_up_after(mut self, limit: Duration) -> Limiter {
        self.give_up_after = limit;
        self
    }

    /// Waits until a request may be sent, and counts it as sent.
    pub async fn acquire(&self) {
        self.acquire_at().await;
    }

    /// [`Limiter::acquire`], saying when the request was let go.
    async fn acquire_at(&self) -> Instant {
        loop {
            self.wait_cool_off().await;
            let now = Instant::now();
            let (due, group) = self
                .pacer
                .lock()
                .map(|mut p| (p.reserve(now), p.group()))
                .unwrap_or_default();
            let at = goes_at(now, due, group);
            if at > now {
                tokio::time::sleep_until(at).await;
            }
            // A 429 may have arrived while this worker waited for its token.
            if self.cool_off_remaining().is_none() {
                break;
            }
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    }

    async fn wait_cool_off(&self) {
        while let Some(left) = self.cool_off_remaining() {
            tokio::time::sleep(left).await;
        }
    }

    /// How long a request asking now would wait for its turn (the queue ahead of it, a
    /// hold, a cool-off, the end of the tick its turn falls in), reserving nothing: a hint
    /// for work that can overlap the wait.
    pub fn queue_wait(&self) -> Duration {
        let now = Instant::now();
        let (due, group) = self
            .pacer
            .lock()
            .map(|p| (p.due(now), p.group()))
            .unwrap_or_default();
        let paced = goes_at(now, due, group).saturating_duration_since(now);
        paced.max(self.cool_off_remaining().unwrap_or_default())
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
    /// back until it resets, slowing down before a 429 rather than after. An announced
    /// quota (`Ratelimit-Policy`) bounds the rate from then on.
    pub async fn send<A: Answer>(
        &self,
        spent: &AtomicU32,
        request: impl Future<Output = A>,
    ) -> Result<A::Value> {
        let sent_at = self.acquire_at().await;
        spent.fetch_add(1, Ordering::Relaxed);
        let (result, signals) = request.await.split();
        if let Ok(mut p) = self.pacer.lock() {
            let now = Instant::now();
            p.answered(now);
            if let Some(policy) = signals.policy {
                p.learn(policy, now);
            }
        }
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
        if let Some(reset) = signals.exhausted {
            self.exhausted_after(reset);
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
        let Ok(mut p) = self.pacer.lock() else {
            return;
        };
        let mut until = now + pause;
        // With the quota known, the server's wait is an upper bound like its reset: the
        // window has room once this lane's oldest request in it leaves.
        if let Some(frees) = p.window_frees()
            && frees > now
        {
            until = until.min(frees);
        }
        if c.until.is_none_or(|current| current < until) {
            c.until = Some(until);
        }
        let resume = c.until.unwrap_or(until);
        let halved = new_episode && p.refused(now, resume);
        p.hold(now, resume);
        let rate = p.rate;
        drop(p);
        if !new_episode {
            return;
        }
        if halved {
            tracing::warn!(
                pause_secs = (resume - now).as_secs_f64(),
                streak = c.streak,
                rate,
                "rate limited by Cloudflare (429) again: all uploads pause, then go on at half the rate"
            );
        } else {
            tracing::info!(
                pause_secs = (resume - now).as_secs_f64(),
                rate,
                "rate limited by Cloudflare (429), a first time: all uploads pause, then go on at the same rate"
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
        let now = Instant::now();
        self.hold_until(now, now + reset.min(MAX_WAIT));
    }

    /// The answer just come said no request is left for at most `reset` (whole seconds,
    /// rounded up): with an announced quota, the window has room again as soon as this
    /// lane's oldest request in it leaves, often far sooner.
    fn exhausted_after(&self, reset: Duration) {
        let now = Instant::now();
        let mut until = now + reset.min(MAX_WAIT);
        // A window our own answers say is free already was filled by requests this lane
        // does not know of: only the reset can be trusted then.
        if let Some(frees) = self.pacer.lock().ok().and_then(|p| p.window_frees())
            && frees > now
        {
            until = until.min(frees);
        }
        self.hold_until(now, until);
    }

    /// Nobody sends before `until`, and sending resumes evenly after it.
    fn hold_until(&self, now: Instant, until: Instant) {
        let Ok(mut c) = self.cool_off.lock() else {
            return;
        };
        if c.until.is_none_or(|current| current < until) {
            c.until = Some(until);
            tracing::debug!(
                pause_secs = (until - now).as_secs_f64(),
                "the rate-limit budget is used up: pausing until the window has room"
            );
        }
        let resume = c.until.unwrap_or(until);
        if let Ok(mut p) = self.pacer.lock() {
            p.hold(now, resume);
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
            p.configured = sane_rate(rate);
            p.bound();
        }
    }

    /// The highest rate the limiter paces at: the configured one, or the server's quota.
    pub fn ceiling(&self) -> f64 {
        self.pacer.lock().map(|p| p.ceiling).unwrap_or_default()
    }

    /// The rate the limiter was configured with.
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
                let held = p.refilled_at.saturating_duration_since(now);
                if p.tokens >= 1.0 {
                    held
                } else {
                    held + Duration::from_secs_f64((1.0 - p.tokens) / p.rate)
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

    /// `n` callers acquiring at once; when each got through, in order.
    async fn waiters(limiter: &std::sync::Arc<Limiter>, n: usize) -> Vec<Instant> {
        let waiters: Vec<_> = (0..n)
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
        passed.sort();
        passed
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_pauses_every_caller_until_retry_after() {
        let limiter = std::sync::Arc::new(Limiter::new(1000.0, 10));
        limiter.acquire().await;
        let start = Instant::now();
        limiter.throttled(Some(Duration::from_secs(7)));
        for passed in waiters(&limiter, 3).await {
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
                    policy: None,
                }
            })
            .await
            .unwrap();
        let start = Instant::now();
        for passed in waiters(&limiter, 3).await {
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
    async fn a_start_up_credit_goes_at_once_once_then_the_burst_paces() {
        let limiter = std::sync::Arc::new(Limiter::new(10.0, 1).with_start_credit(4));
        let passed = waiters(&limiter, 6).await;
        assert_eq!(gaps_ms(&passed), [0, 0, 0, 100, 100]);
        // Spent: after idling, the burst of 1 again.
        tokio::time::advance(Duration::from_secs(10)).await;
        let passed = waiters(&limiter, 3).await;
        assert_eq!(gaps_ms(&passed), [100, 100]);
        // An announced quota with no room beside a window at the rate trims the credit.
        let trimmed = std::sync::Arc::new(Limiter::new(10.0, 1).with_start_credit(4));
        let spent = AtomicU32::new(0);
        trimmed
            .send(&spent, async { answer(None, Some(TEN_PER_SECOND)) })
            .await
            .unwrap();
        let passed = waiters(&trimmed, 3).await;
        assert_eq!(gaps_ms(&passed), [100, 100]);
    }

    #[test]
    fn a_request_goes_at_the_end_of_the_tick_its_turn_falls_in() {
        let epoch = Instant::now();
        let ms = Duration::from_millis;
        let tick = ms(20);
        assert_eq!(tick_end(epoch + ms(13), epoch, tick), epoch + ms(20));
        assert_eq!(tick_end(epoch + ms(20), epoch, tick), epoch + ms(20));
        assert_eq!(tick_end(epoch + ms(21), epoch, tick), epoch + ms(40));
        // Before the epoch (another runtime's clock), ticks count backwards from it.
        assert_eq!(tick_end(epoch - ms(13), epoch, tick), epoch);
        assert_eq!(tick_end(epoch - ms(27), epoch, tick), epoch - ms(20));
        assert_eq!(
            tick_end(epoch + ms(13), epoch, Duration::ZERO),
            epoch + ms(13)
        );
    }

    #[test]
    fn requests_go_together_only_within_the_room_the_hosts_limit_leaves() {
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        // 195 of the batch host's 200 a second, no burst: room for 4, 20 ms at 195/s.
        assert_eq!(group_within(BATCH_HOST_LIMIT, 195.0, 1.0), GROUP_MAX);
        assert!((ms(group_within(BATCH_HOST_LIMIT, 198.0, 1.0)) - 1000.0 / 198.0).abs() < 1e-6);
        assert_eq!(group_within(BATCH_HOST_LIMIT, 200.0, 1.0), Duration::ZERO);
        assert_eq!(group_within(BATCH_HOST_LIMIT, 195.0, 5.0), Duration::ZERO);
        assert_eq!(group_within(API_HOST_LIMIT, 3.5, 1.0), GROUP_MAX);
        assert_eq!(group_within(API_HOST_LIMIT, 4.0, 1.0), Duration::ZERO);
        // Without a known limit each request goes at its own time.
        assert_eq!(
            Limiter::new(195.0, 1).pacer.lock().unwrap().group(),
            Duration::ZERO
        );
    }

    #[tokio::test(start_paused = true)]
    async fn grouped_requests_keep_the_pace_and_stay_within_the_hosts_window() {
        let limiter =
            std::sync::Arc::new(Limiter::new(195.0, 1).with_documented_limit(BATCH_HOST_LIMIT));
        let start = Instant::now();
        let passed = waiters(&limiter, 600).await;
        let mut moments = passed.clone();
        moments.dedup();
        assert!(
            moments.len() <= 600 / 3,
            "{} moments: not grouped",
            moments.len()
        );
        // The pace is kept: the last one goes within a tick of its even turn.
        let even = Duration::from_secs_f64(599.0 / 195.0);
        assert!(
            passed[599] - start <= even + GROUP_MAX,
            "{:?}",
            passed[599] - start
        );
        // No second holds more than the host allows.
        for (i, from) in passed.iter().enumerate() {
            let within = passed[i..]
                .iter()
                .take_while(|t| **t < *from + Duration::from_secs(1))
                .count();
            assert!(
                within <= 200,
                "{within} requests in the second from request {i}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn paces_at_the_rate_after_a_burst() {
        let limiter = Limiter::new(10.0, 5);
        // The burst at once, then one every 100 ms (the one due at 2 s is outside).
        assert_eq!(sends_in(&limiter, Duration::from_secs(2)).await, 5 + 19);
    }

    /// Gaps between consecutive admissions, in milliseconds.
    fn gaps_ms(passed: &[Instant]) -> Vec<u128> {
        passed
            .windows(2)
            .map(|w| (w[1] - w[0]).as_millis())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_used_up_budget_a_lane_resumes_evenly_without_a_burst() {
        // 10/s with a burst of 5: a 2 s pause would refill the whole burst.
        let limiter = std::sync::Arc::new(Limiter::new(10.0, 5));
        for _ in 0..5 {
            limiter.acquire().await;
        }
        let start = Instant::now();
        limiter.budget_exhausted(Duration::from_secs(2));
        let passed = waiters(&limiter, 6).await;
        assert_eq!(passed[0] - start, Duration::from_secs(2));
        assert_eq!(gaps_ms(&passed), [100; 5], "one at a time, at the rate");
    }

    #[tokio::test(start_paused = true)]
    async fn after_a_429_a_lane_resumes_evenly_at_the_lowered_rate() {
        let limiter = std::sync::Arc::new(Limiter::new(10.0, 5));
        let start = Instant::now();
        limiter.throttled(Some(Duration::from_secs(3)));
        let passed = waiters(&limiter, 5).await;
        assert_eq!(passed[0] - start, Duration::from_secs(3));
        // Half the rate after a 429: one every 200 ms, no burst of credit saved up.
        assert_eq!(gaps_ms(&passed), [200; 4]);
    }

    /// A 429 with the server's wait, and the quota announced if `policy` is given.
    fn refusal(wait: Duration, policy: Option<Policy>) -> Answered<()> {
        Answered {
            result: Err(Error::RateLimited {
                status: 429,
                code: 971,
                message: "Please wait and consider throttling your request speed".into(),
                retry_after: Some(wait),
            }),
            exhausted: Some(wait),
            policy,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_429_with_a_known_quota_holds_but_keeps_the_rate_and_a_repeat_halves_it() {
        let limiter = std::sync::Arc::new(Limiter::new(10.0, 1));
        let spent = AtomicU32::new(0);
        for _ in 0..9 {
            limiter
                .send(&spent, async { answer(None, Some(TEN_PER_SECOND)) })
                .await
                .unwrap();
        }
        // The tenth is refused (our timing against the server's sliding window), `t=1`.
        let refused = limiter
            .send(&spent, async {
                refusal(Duration::from_secs(1), Some(TEN_PER_SECOND))
            })
            .await;
        assert!(refused.is_err());
        assert_eq!(limiter.throttled_count(), 1);
        assert_eq!(limiter.rate(), 10.0, "a lone 429 is not a lower limit");
        let held = limiter.cool_off_remaining().unwrap();
        assert!(held <= Duration::from_secs(1), "{held:?}");
        // The lane resumes at the same rate, evenly.
        let start = Instant::now();
        let passed = waiters(&limiter, 5).await;
        assert_eq!(passed[0] - start, held);
        assert_eq!(gaps_ms(&passed), [100; 4]);
        // Refused again within a calm spell: now the rate is too high.
        let _ = limiter
            .send(&spent, async {
                refusal(Duration::from_secs(1), Some(TEN_PER_SECOND))
            })
            .await;
        assert_eq!(limiter.rate(), 5.0);
        // A lone 429 long after (a calm spell past the last pause) is timing again.
        tokio::time::advance(RECOVER_EVERY * 2).await;
        let before = limiter.rate();
        let _ = limiter
            .send(&spent, async {
                refusal(Duration::from_secs(1), Some(TEN_PER_SECOND))
            })
            .await;
        assert_eq!(limiter.rate(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_known_quota_the_first_429_halves_the_rate() {
        // A server that announces no quota gives no way to tell timing from a lower limit;
        // measured against such a server, forgiving the first 429 let its pair follow within
        // the minute (0.50 to 0.65 of 200/s instead of 0.70 to 0.88), so it halves at once.
        for wait in [Some(Duration::from_secs(1)), Some(PENALTY), None] {
            let limiter = Limiter::new(10.0, 1);
            limiter.throttled(wait);
            assert_eq!(limiter.rate(), 5.0, "{wait:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hold_keeps_reservations_due_after_it() {
        // Eight callers queued 100 ms apart; a 250 ms hold moves the first three, and
        // nobody goes twice in one slot.
        let limiter = std::sync::Arc::new(Limiter::new(10.0, 1));
        let l = limiter.clone();
        let queued = tokio::spawn(async move { waiters(&l, 8).await });
        tokio::time::sleep(Duration::from_millis(1)).await;
        limiter.budget_exhausted(Duration::from_millis(250));
        let passed = queued.await.unwrap();
        assert!(
            gaps_ms(&passed).iter().all(|g| *g >= 99),
            "{:?}",
            gaps_ms(&passed)
        );
    }

    /// An answer saying whether the budget is used up, with the quota announced.
    fn answer(exhausted: Option<Duration>, policy: Option<Policy>) -> Answered<()> {
        Answered {
            result: Ok(()),
            exhausted,
            policy,
        }
    }

    const TEN_PER_SECOND: Policy = Policy {
        quota: 10,
        window: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn an_announced_quota_bounds_the_rate_and_the_burst() {
        let limiter = Limiter::new(100.0, 4);
        let spent = AtomicU32::new(0);
        limiter
            .send(&spent, async { answer(None, Some(TEN_PER_SECOND)) })
            .await
            .unwrap();
        assert_eq!((limiter.ceiling(), limiter.rate()), (10.0, 10.0));
        assert_eq!(limiter.configured_rate(), 100.0);
        // No burst left: a window's worth at 10/s already fills the quota of 10.
        tokio::time::advance(Duration::from_secs(5)).await;
        let n = sends_in(&limiter, Duration::from_secs(2)).await;
        assert_eq!(n, 20);
        // A configured rate below the quota stays in force.
        let slow = Limiter::new(4.0, 1);
        slow.send(&spent, async { answer(None, Some(TEN_PER_SECOND)) })
            .await
            .unwrap();
        assert_eq!(slow.ceiling(), 4.0);
        // A reload may lower the rate, never above the quota.
        limiter.set_rate(50.0);
        assert_eq!(limiter.ceiling(), 10.0);
        limiter.set_rate(5.0);
        assert_eq!(limiter.ceiling(), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reset_in_whole_seconds_is_an_upper_bound_once_the_quota_is_known() {
        for (policy, resumes_at) in [
            // The quota known: the window has room once the first of the ten leaves it,
            // 1 s after it was sent, not 1 s after the tenth.
            (Some(TEN_PER_SECOND), Duration::from_millis(1005)),
            // Unknown: only the server's reset can be trusted.
            (None, Duration::from_millis(1900)),
        ] {
            let limiter = Limiter::new(10.0, 1);
            let spent = AtomicU32::new(0);
            let start = Instant::now();
            for i in 0..10 {
                // The tenth request of the window is told none is left, for `t=1`.
                let exhausted = (i == 9).then_some(Duration::from_secs(1));
                limiter
                    .send(&spent, async { answer(exhausted, policy) })
                    .await
                    .unwrap();
            }
            assert_eq!(Instant::now() - start, Duration::from_millis(900));
            limiter.acquire().await;
            assert_eq!(Instant::now() - start, resumes_at, "{policy:?}");
        }
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

    #[tokio::test(start_paused = true)]
    async fn the_queue_wait_is_the_turn_of_a_request_asking_now_and_reserves_nothing() {
        let limiter = Limiter::new(10.0, 1);
        assert_eq!(limiter.queue_wait(), Duration::ZERO);
        limiter.acquire().await;
        let ms = |d: Duration| d.as_millis();
        assert_eq!(ms(limiter.queue_wait()), 100);
        assert_eq!(ms(limiter.queue_wait()), 100, "asking reserved a turn");
        for _ in 0..2 {
            let _ = limiter.pacer.lock().unwrap().reserve(Instant::now());
        }
        assert_eq!(ms(limiter.queue_wait()), 300);
        tokio::time::advance(Duration::from_millis(250)).await;
        assert_eq!(ms(limiter.queue_wait()), 50);
        // A cool-off is a wait too.
        limiter.throttled(Some(Duration::from_secs(5)));
        assert!(limiter.queue_wait() >= Duration::from_secs(4));
        // Requests due within a tick go at its end, and the wait says so.
        let grouped = Limiter::new(195.0, 1).with_documented_limit(BATCH_HOST_LIMIT);
        grouped.acquire().await;
        let wait = grouped.queue_wait();
        let turn = Duration::from_secs_f64(1.0 / 195.0);
        assert!(wait >= turn && wait <= turn + GROUP_MAX, "{wait:?}");
        let at = Instant::now() + wait;
        assert_eq!(tick_end(at, ticks_epoch(), GROUP_MAX), at);
    }
}
