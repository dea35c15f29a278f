//! A strict sliding-window rate limit per token: at most `requests` admitted in any
//! `window`, the shape of limit the standard `Ratelimit` headers describe.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::admission::{Admission, ceil_secs};

/// The admitted requests of the last `window`, per token.
pub struct SlidingWindows {
    requests: u32,
    window: Duration,
    // Times of the admitted requests still inside the window, oldest first: at most
    // `requests` per token, so memory is bounded by the quota, not the rate.
    log: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl SlidingWindows {
    /// Windows admitting `requests` per `window`.
    pub fn new(requests: u32, window: Duration) -> Self {
        SlidingWindows {
            requests: requests.max(1),
            window,
            log: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one request of `key` and decides it, on tokio's clock (so tests with paused
    /// time can drive it).
    pub fn check(&self, key: &str) -> Admission {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Admission {
        let mut log = self.log.lock().expect("sliding windows poisoned");
        let times = log.entry(key.to_owned()).or_default();
        while times
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        // A refused request is not counted: the window holds only admitted ones, so a
        // token is free again exactly when its oldest request ages out.
        let admitted = times.len() < self.requests as usize;
        if admitted {
            times.push_back(now);
        }
        // Whole seconds, rounded up, until the oldest counted request leaves the window
        // (when a slot frees): never 0 while any request is counted.
        let reset = times.front().map_or(0, |t| {
            ceil_secs((*t + self.window).saturating_duration_since(now))
        });
        if admitted {
            Admission::Allowed {
                remaining: self.requests - times.len() as u32,
                reset,
            }
        } else {
            Admission::Limited { retry_after: reset }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_window_slides_rather_than_resets() {
        let w = SlidingWindows::new(2, Duration::from_secs(1));
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert_eq!(
            w.check_at("t", ms(0)),
            Admission::Allowed {
                remaining: 1,
                reset: 1
            }
        );
        assert_eq!(
            w.check_at("t", ms(600)),
            Admission::Allowed {
                remaining: 0,
                reset: 1
            }
        );
        // A fixed window would have reset at 1000 ms and let two more through; here the
        // request of 600 ms still counts until 1600 ms.
        assert_eq!(
            w.check_at("t", ms(999)),
            Admission::Limited { retry_after: 1 }
        );
        assert!(matches!(
            w.check_at("t", ms(1000)),
            Admission::Allowed { remaining: 0, .. }
        ));
        assert_eq!(
            w.check_at("t", ms(1500)),
            Admission::Limited { retry_after: 1 }
        );
        assert!(matches!(
            w.check_at("t", ms(1600)),
            Admission::Allowed { .. }
        ));
        // Other tokens have their own window.
        assert!(matches!(
            w.check_at("u", ms(1600)),
            Admission::Allowed { .. }
        ));
    }

    #[test]
    fn reset_rounds_up_to_whole_seconds() {
        let w = SlidingWindows::new(1, Duration::from_millis(2500));
        let t0 = Instant::now();
        assert!(matches!(
            w.check_at("t", t0),
            Admission::Allowed {
                remaining: 0,
                reset: 3
            }
        ));
        assert_eq!(
            w.check_at("t", t0 + Duration::from_millis(2499)),
            Admission::Limited { retry_after: 1 }
        );
    }
}
