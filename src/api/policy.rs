//! The quota a server announces in `Ratelimit-Policy: "<name>";q=<quota>;w=<window s>`
//! (IETF draft, sent by Cloudflare since 2025-09): what a lane may send in any window.
//! A lane that knows it paces at the quota's rate at most and knows when its own requests
//! leave the server's window, instead of trusting a reset rounded up to whole seconds.

use std::time::Duration;

use reqwest::header::HeaderMap;

/// The longest window believed: a policy claiming more is not one a lane can pace by.
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// At most `quota` requests in any `window`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Requests allowed per window.
    pub quota: u32,
    /// The window.
    pub window: Duration,
}

impl Policy {
    /// The quota's average rate, per second.
    pub fn rate(&self) -> f64 {
        f64::from(self.quota) / self.window.as_secs_f64()
    }

    /// The policy a response's `Ratelimit-Policy` header announces, if it does; with several
    /// items, the tightest (the lowest rate), since every one of them applies.
    pub fn from_headers(headers: &HeaderMap) -> Option<Policy> {
        let text = headers.get("ratelimit-policy")?.to_str().ok()?;
        parse(text)
    }
}

/// `"default";q=200;w=1, "burst";q=1200;w=300` -> the tightest well-formed item.
pub fn parse(value: &str) -> Option<Policy> {
    value
        .split(',')
        .filter_map(|item| {
            let mut quota = None;
            let mut window = None;
            for param in item.split(';') {
                match param.trim().split_once('=') {
                    Some(("q", v)) => quota = v.trim().parse::<u32>().ok(),
                    Some(("w", v)) => window = v.trim().parse::<u64>().ok(),
                    _ => {}
                }
            }
            let window = Duration::from_secs(window?);
            let quota = quota?;
            (quota > 0 && !window.is_zero() && window <= MAX_WINDOW)
                .then_some(Policy { quota, window })
        })
        .min_by(|a, b| a.rate().total_cmp(&b.rate()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_tightest_well_formed_policy() {
        let p = |q, w| {
            Some(Policy {
                quota: q,
                window: Duration::from_secs(w),
            })
        };
        assert_eq!(parse("\"default\";q=200;w=1"), p(200, 1));
        assert_eq!(
            parse("\"burst\";q=1200;w=300, \"default\";q=200;w=1"),
            p(1200, 300)
        );
        assert_eq!(parse(" \"a\" ; w=10 ; q=50 "), p(50, 10));
        // Missing or absurd parameters: nothing to pace by.
        for bad in [
            "",
            "\"default\";q=200",
            "\"d\";w=1",
            "\"d\";q=0;w=1",
            "\"d\";q=5;w=0",
            "\"d\";q=-1;w=1",
            "\"d\";q=5;w=1.5",
            "\"d\";q=5;w=999999",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        let mut h = HeaderMap::new();
        assert_eq!(Policy::from_headers(&h), None);
        h.insert("ratelimit-policy", "\"default\";q=40;w=10".parse().unwrap());
        assert_eq!(Policy::from_headers(&h).map(|p| p.rate()), Some(4.0));
    }
}
