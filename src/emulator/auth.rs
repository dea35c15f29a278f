//! Authentication on both hosts, and the batch tokens the API issues.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};

use super::app::App;
use super::reply::{auth_error, malformed_auth};

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

    fn valid(&self, token: &str) -> bool {
        self.tokens
            .lock()
            .expect("batch tokens poisoned")
            .get(token)
            .is_some_and(|e| *e > Utc::now())
    }
}

/// The bearer credential of a request: `Ok(None)` when there is no header at all.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, token) = value.split_once(' ').ok_or(())?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(());
    }
    Ok(Some(token.trim()))
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// No usable `Authorization` header: 400 code 6003.
    Malformed,
    /// A credential that is not valid here: 401 code 10000.
    Refused,
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Denied::Malformed => malformed_auth(),
            Denied::Refused => auth_error(),
        }
    }
}

/// Checks an API-host request; returns the token that pays for it.
pub fn api(app: &App, headers: &HeaderMap, account_id: &str) -> Result<String, Denied> {
    let token = match bearer(headers) {
        Ok(Some(t)) => t.to_owned(),
        Ok(None) => {
            // The legacy global-key pair; the emulator's one key is the API token.
            let key = headers.get("x-auth-key").and_then(|v| v.to_str().ok());
            let email = headers.get("x-auth-email");
            match (key, email) {
                (Some(k), Some(_)) => k.to_owned(),
                _ => return Err(Denied::Malformed),
            }
        }
        Err(()) => return Err(Denied::Malformed),
    };
    if token != app.api_token || account_id != app.account_id {
        return Err(Denied::Refused);
    }
    Ok(token)
}

/// Checks a batch-host request; returns the batch token.
pub fn batch(app: &App, headers: &HeaderMap) -> Result<String, Denied> {
    match bearer(headers) {
        Ok(Some(t)) if app.batch_tokens.valid(t) => Ok(t.to_owned()),
        Ok(Some(_)) => Err(Denied::Refused),
        Ok(None) | Err(()) => Err(Denied::Malformed),
    }
}
