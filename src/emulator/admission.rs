//! What a rate limiter answers for one request (`ratelimit.rs`'s buckets and `sliding.rs`'s
//! windows alike), and the whole-second rounding both use in their headers.

use std::time::Duration;

/// Whether the buckets let one request through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; `remaining` whole requests left, full again in `reset` seconds.
    Allowed {
        /// Whole requests left in the bucket.
        remaining: u32,
        /// Seconds until the bucket is full again.
        reset: u64,
    },
    /// Refused for another `retry_after` seconds.
    Limited {
        /// Seconds until the penalty ends (rounded up).
        retry_after: u64,
    },
}

/// `d` in whole seconds, rounded up.
pub(super) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}
