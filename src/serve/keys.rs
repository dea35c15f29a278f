//! App keys: who may mint drafts and read their status. A request names its key in
//! `Authorization: Bearer <key>`; every configured key is compared in constant time (no
//! early exit on the first match either), and only the app's name is ever logged. Each
//! key has its own token bucket of mints.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{HeaderMap, header};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::secret::Secret;

/// The configured keys and their mint budgets.
#[derive(Debug)]
pub struct AppKeys {
    keys: Vec<(String, Secret)>,
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Why a request was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A key no app has.
    Unknown,
}

impl AppKeys {
    /// Keys as (app name, key), each allowed `rate` mints per second, `burst` at once.
    pub fn new(keys: Vec<(String, Secret)>, rate: f64, burst: u32) -> AppKeys {
        AppKeys {
            keys,
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any key is configured.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The app whose key the request carries.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<String, Denied> {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or(Denied::Missing)?;
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.expose().as_bytes().ct_eq(given.as_bytes())) {
                found = Some(name.clone());
            }
        }
        found.ok_or(Denied::Unknown)
    }

    /// Takes one mint from the app's bucket, or says how long until one is there.
    pub fn take(&self, app: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut buckets) = self.buckets.lock() else {
            return Ok(());
        };
        let (tokens, at) = buckets.entry(app.to_string()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, v.parse().unwrap());
        h
    }

    #[test]
    fn keys_name_their_app_and_budgets_are_per_key() {
        let k = AppKeys::new(
            vec![
                ("web".into(), Secret::new("k-web-0123456789")),
                ("ios".into(), Secret::new("k-ios-0123456789")),
            ],
            0.001,
            2,
        );
        assert_eq!(
            k.authenticate(&headers("Bearer k-ios-0123456789")),
            Ok("ios".into())
        );
        assert_eq!(
            k.authenticate(&headers("Bearer k-ios-012345678")),
            Err(Denied::Unknown)
        );
        assert_eq!(k.authenticate(&HeaderMap::new()), Err(Denied::Missing));
        assert!(k.take("web").is_ok() && k.take("web").is_ok());
        assert!(k.take("web").unwrap_err() > Duration::from_secs(100));
        assert!(k.take("ios").is_ok());
    }
}
