//! Authentication on both hosts (the batch tokens themselves are `batch_tokens.rs`).
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::app::App;
use super::reply::{auth_error, malformed_auth};

/// The bearer credential of a request: `Ok(None)` when there is no header at all.
fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| ())?;
    let (scheme, token) = value.split_once(' ').ok_or(())?;
    let token = token.trim();
    // A token is one word: `Bearer abc def` is malformed (6003), not a wrong token.
    if !scheme.eq_ignore_ascii_case("bearer")
        || token.is_empty()
        || token.contains(char::is_whitespace)
    {
        return Err(());
    }
    Ok(Some(token))
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

/// Who a request authenticated as.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token that pays for the request (rate limits are per token).
    pub token: String,
    /// A read-only API token: changes are refused with 403 code 9109.
    pub read_only: bool,
}

/// Checks an API-host request; returns the token that pays for it.
pub fn api(app: &App, headers: &HeaderMap, account_id: &str) -> Result<Caller, Denied> {
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
    let read_only = app.read_only_tokens.contains(&token);
    if !(token == app.api_token || read_only) || account_id != app.account_id {
        return Err(Denied::Refused);
    }
    Ok(Caller { token, read_only })
}

/// Checks a batch-host request; returns the batch token.
pub fn batch(app: &App, headers: &HeaderMap) -> Result<Caller, Denied> {
    match bearer(headers) {
        Ok(Some(t)) if app.batch_tokens.valid(t) => Ok(Caller {
            token: t.to_owned(),
            read_only: false,
        }),
        Ok(Some(_)) => Err(Denied::Refused),
        Ok(None) | Err(()) => Err(Denied::Malformed),
    }
}
