//! Seeded fault injection: edge 5xx and 429 pages, dropped connections, store-then-500 and
//! latency.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Fault probabilities (0.0 ..= 1.0) and the seed that makes their draws reproducible.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Seed of the fault RNG; setting faults restarts the sequence from it.
    pub seed: u64,
    /// Probability of a 500 (JSON envelope).
    pub p_500: f64,
    /// Probability of a 502 (half of them with an HTML edge page).
    pub p_502: f64,
    /// Probability of a 503 (half of them with an HTML edge page).
    pub p_503: f64,
    /// Uploads only: probability of closing the connection after reading the body, before storing.
    pub p_drop_before_store: f64,
    /// Uploads only: probability of storing the image, then closing the connection unanswered.
    pub p_drop_after_store: f64,
    /// Uploads only: probability of storing the image, then answering 500.
    pub p_store_then_500: f64,
    /// Probability of delaying the answer by `latency_ms`.
    pub p_latency: f64,
    /// The added latency, in milliseconds.
    pub latency_ms: u64,
    /// Probability of a 429 that is the edge's HTML page "Error 1015", drawn like the 5xx
    /// faults and without touching the rate limiter (its `Retry-After` is 1 second when
    /// `edge_429_retry_after` is set).
    pub p_429_html: f64,
    /// When true, the rate limiter's own refusals come as the edge's HTML page "Error 1015"
    /// (text/html, no `Ratelimit` headers) instead of the JSON envelope with code 971.
    pub edge_429: bool,
    /// Whether the edge's HTML 429s (from `edge_429` or `p_429_html`) carry `Retry-After`.
    pub edge_429_retry_after: bool,
}

impl Faults {
    fn is_active(&self) -> bool {
        [
            self.p_500,
            self.p_502,
            self.p_503,
            self.p_drop_before_store,
            self.p_drop_after_store,
            self.p_store_then_500,
            self.p_latency,
            self.p_429_html,
        ]
        .iter()
        .any(|p| *p > 0.0)
    }
}

/// An error the edge answers instead of the service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeError {
    /// 500 with a JSON envelope.
    Internal,
    /// 502, HTML page or JSON.
    BadGateway {
        /// Whether the body is the edge's HTML page.
        html: bool,
    },
    /// 503, HTML page or JSON.
    Unavailable {
        /// Whether the body is the edge's HTML page.
        html: bool,
    },
    /// 429, the edge's HTML page "Error 1015".
    RateLimitedHtml {
        /// Whether to send `Retry-After`.
        retry_after: bool,
    },
}

/// What the faults decided for one request.
#[derive(Debug, Clone, Default)]
pub struct Draw {
    /// Sleep this long before answering.
    pub latency: Option<Duration>,
    /// Answer this error instead of handling the request.
    pub error: Option<EdgeError>,
    /// Upload: close the connection before storing.
    pub drop_before_store: bool,
    /// Upload: store, then close the connection.
    pub drop_after_store: bool,
    /// Upload: store, then answer 500.
    pub store_then_500: bool,
}

/// The fault knobs and their RNG, shared by every connection.
pub struct FaultInjector {
    active: AtomicBool,
    state: Mutex<(Faults, fastrand::Rng)>,
}

impl FaultInjector {
    /// An injector with the given knobs.
    pub fn new(faults: Faults) -> Self {
        let injector = FaultInjector {
            active: AtomicBool::new(false),
            state: Mutex::new((Faults::default(), fastrand::Rng::with_seed(0))),
        };
        injector.set(faults);
        injector
    }

    /// Replaces the knobs and restarts the RNG from their seed.
    pub fn set(&self, faults: Faults) {
        let mut state = self.state.lock().expect("fault state poisoned");
        self.active.store(faults.is_active(), Ordering::Relaxed);
        state.1 = fastrand::Rng::with_seed(faults.seed);
        state.0 = faults;
    }

    /// `(edge_429, edge_429_retry_after)`: how the rate limiter's refusals look.
    pub fn edge_429(&self) -> (bool, bool) {
        let state = self.state.lock().expect("fault state poisoned");
        (state.0.edge_429, state.0.edge_429_retry_after)
    }

    /// The current knobs.
    pub fn get(&self) -> Faults {
        self.state.lock().expect("fault state poisoned").0.clone()
    }

    /// Draws the faults of one request. Every request draws the same six numbers in the
    /// same order, so a seed and a request sequence reproduce the same faults; with every
    /// probability at zero nothing is drawn (the hot path takes no lock).
    pub fn draw(&self, is_upload: bool) -> Draw {
        if !self.active.load(Ordering::Relaxed) {
            return Draw::default();
        }
        let mut state = self.state.lock().expect("fault state poisoned");
        let (f, rng) = &mut *state;
        let r: [f64; 6] = std::array::from_fn(|_| rng.f64());
        let mut draw = Draw::default();
        if r[0] < f.p_latency {
            draw.latency = Some(Duration::from_millis(f.latency_ms));
        }
        let html = r[2] < 0.5;
        draw.error = if r[1] < f.p_500 {
            Some(EdgeError::Internal)
        } else if r[1] < f.p_500 + f.p_502 {
            Some(EdgeError::BadGateway { html })
        } else if r[1] < f.p_500 + f.p_502 + f.p_503 {
            Some(EdgeError::Unavailable { html })
        } else if r[1] < f.p_500 + f.p_502 + f.p_503 + f.p_429_html {
            Some(EdgeError::RateLimitedHtml {
                retry_after: f.edge_429_retry_after,
            })
        } else {
            None
        };
        if is_upload && draw.error.is_none() {
            draw.drop_before_store = r[3] < f.p_drop_before_store;
            draw.store_then_500 = !draw.drop_before_store && r[4] < f.p_store_then_500;
            draw.drop_after_store =
                !draw.drop_before_store && !draw.store_then_500 && r[5] < f.p_drop_after_store;
        }
        draw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws() {
        let faults = Faults {
            seed: 7,
            p_500: 0.3,
            p_drop_after_store: 0.3,
            ..Faults::default()
        };
        let a = FaultInjector::new(faults.clone());
        let b = FaultInjector::new(faults);
        for _ in 0..100 {
            let (x, y) = (a.draw(true), b.draw(true));
            assert_eq!(x.error, y.error);
            assert_eq!(x.drop_after_store, y.drop_after_store);
        }
    }

    #[test]
    fn html_429s_share_the_error_draw() {
        let all = FaultInjector::new(Faults {
            p_429_html: 1.0,
            edge_429_retry_after: true,
            ..Faults::default()
        });
        assert_eq!(
            all.draw(true).error,
            Some(EdgeError::RateLimitedHtml { retry_after: true })
        );
        // Adding the knob at zero leaves an existing seed's sequence as it was.
        let base = Faults {
            seed: 3,
            p_502: 0.5,
            ..Faults::default()
        };
        let a = FaultInjector::new(base.clone());
        let b = FaultInjector::new(Faults {
            edge_429: true,
            ..base
        });
        for _ in 0..50 {
            assert_eq!(a.draw(false).error, b.draw(false).error);
        }
    }

    #[test]
    fn zero_knobs_never_fire_and_one_always_does() {
        let none = FaultInjector::new(Faults::default());
        assert!(none.draw(true).error.is_none());
        let all = FaultInjector::new(Faults {
            p_503: 1.0,
            ..Faults::default()
        });
        assert!(matches!(
            all.draw(false).error,
            Some(EdgeError::Unavailable { .. })
        ));
    }
}
