//! The batch tokens the API issues (`POST v1/batch_token`), by value, with their expiry.

use std::collections::HashMap;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

/// Batch tokens by value, with their expiry.
#[derive(Default)]
pub struct BatchTokens {
    tokens: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl BatchTokens {
    /// Issues a token expiring at `expires` (may be in the past, for tests).
    pub fn issue(&self, expires: DateTime<Utc>) -> String {
        let token = format!("emu-batch-{}", uuid::Uuid::new_v4().simple());
        let mut tokens = self.tokens.lock().expect("batch tokens poisoned");
        // Forget tokens that expired long ago so a long run does not grow without bound.
        let horizon = Utc::now() - chrono::Duration::hours(1);
        tokens.retain(|_, e| *e > horizon);
        tokens.insert(token.clone(), expires);
        token
    }

    /// Invalidates every token before its expiry, as the service may (tests: a token the
    /// client still believes valid).
    pub fn revoke_all(&self) {
        self.tokens.lock().expect("batch tokens poisoned").clear();
    }

    /// Whether `token` was issued and has not expired.
    pub fn valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .expect("batch tokens poisoned")
            .get(token)
            .is_some_and(|e| *e > Utc::now())
    }
}
