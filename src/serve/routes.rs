//! The app-facing routes: mint a draft (`POST /v1/direct-uploads`), read one
//! (`GET /v1/direct-uploads/{id}`), and the service's own description (`/openapi.json`,
//! `/healthz`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value};

use super::Service;
use super::keys::Denied;
use super::reply::Fail;
use crate::api::types::codes;
use crate::direct::{self, MintRequest};
use crate::error::Error;

/// The OpenAPI description of these routes.
const OPENAPI: &str = include_str!("openapi.json");

/// The app a request's key belongs to.
pub fn app_of(svc: &Service, headers: &HeaderMap) -> Result<String, Fail> {
    svc.keys.authenticate(headers).map_err(|d| {
        let message = match d {
            Denied::Missing => "send the app key as `Authorization: Bearer <key>`",
            Denied::Unknown => "unknown app key: use a key from the server's `serve.app_keys`",
        };
        tracing::info!(reason = message, "request refused: no valid app key");
        Fail::new(StatusCode::UNAUTHORIZED, "authorization", message)
    })
}

/// `POST /v1/direct-uploads`.
pub async fn mint(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    mint_inner(&svc, &headers, body)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn mint_inner(
    svc: &Service,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Fail> {
    let app = app_of(svc, headers)?;
    let body = body.map_err(|e| {
        Fail::new(
            e.status(),
            "body",
            format!(
                "{} (the limit is {} bytes)",
                e.body_text(),
                svc.max_body_bytes
            ),
        )
    })?;
    let req = parse_mint(&body)?;
    let checked = direct::check(&req, chrono::Utc::now())?;
    // Only a request that would reach Cloudflare is charged to the app's budget.
    svc.keys.take(&app).map_err(|wait| {
        tracing::info!(app, "mint refused: the app key's rate is used up");
        Fail::too_many(
            "authorization",
            "this app key has minted too many upload URLs: wait and try again",
            wait,
        )
    })?;
    let wait = svc.lane.limiter.delay();
    if wait > svc.max_wait {
        tracing::info!(
            app,
            wait_secs = wait.as_secs_f64(),
            "mint refused: the account's API budget is near its limit"
        );
        return Err(Fail::too_many(
            "request",
            "the Cloudflare account's request budget is used up for now: try again after Retry-After",
            wait,
        ));
    }
    match direct::mint(&svc.lane, &svc.book, &checked, &app).await {
        Ok(minted) => {
            tracing::info!(app, id = %minted.id, expiry = %minted.expiry, "draft minted");
            Ok((StatusCode::OK, axum::Json(minted)).into_response())
        }
        Err(e) => Err(api_fail(svc, &e)),
    }
}

/// What an app is told when Cloudflare or the ledger said no; the details go to the log.
fn api_fail(svc: &Service, e: &Error) -> Fail {
    if e.is_rate_limited() {
        let wait = e
            .rate_limit_wait()
            .unwrap_or_else(|| svc.lane.limiter.delay());
        return Fail::too_many(
            "request",
            "Cloudflare is rate limiting this account: try again after Retry-After",
            wait,
        );
    }
    match e {
        Error::Api {
            code: codes::CUSTOM_ID_PRIVATE,
            message,
            ..
        } => Fail::bad("requireSignedURLs", message.clone()),
        Error::Api {
            code: codes::INVALID_ID,
            message,
            ..
        } => Fail::bad("id", message.clone()),
        Error::Api {
            code: codes::ALREADY_EXISTS,
            ..
        } => Fail::new(
            StatusCode::CONFLICT,
            "id",
            "an image or draft with this id exists already: choose another id",
        ),
        Error::Api {
            status: 400,
            message,
            ..
        } => Fail::bad("request", message.clone()),
        _ => {
            tracing::error!(error = %e, "minting a draft failed");
            let status = if matches!(e, Error::Ledger(_) | Error::LedgerWrite(_)) {
                StatusCode::INTERNAL_SERVER_ERROR
            } else {
                StatusCode::BAD_GATEWAY
            };
            Fail::new(
                status,
                "request",
                "the upload URL could not be obtained from Cloudflare: try again later (the server's log says why)",
            )
        }
    }
}

/// Reads the mint body: a JSON object with optional `id`, `metadata`, `creator`,
/// `expiry` (RFC 3339), `expiresIn` (`30m`, `2h`, or seconds) and `requireSignedURLs`.
pub fn parse_mint(body: &[u8]) -> Result<MintRequest, Fail> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(MintRequest::default());
    }
    let obj: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(Fail::bad("body", "the body must be a JSON object")),
        Err(e) => return Err(Fail::bad("body", format!("the body is not JSON: {e}"))),
    };
    let mut req = MintRequest::default();
    for (k, v) in obj {
        match (k.as_str(), v) {
            (_, Value::Null) => {}
            ("id", Value::String(s)) => req.id = Some(s),
            ("creator", Value::String(s)) => req.creator = Some(s),
            ("metadata", Value::Object(m)) => req.metadata = Some(m),
            ("requireSignedURLs", Value::Bool(b)) => req.private = b,
            ("expiry", Value::String(s)) => {
                let t = chrono::DateTime::parse_from_rfc3339(&s).map_err(|e| {
                    Fail::bad(
                        "expiry",
                        format!("{s:?} is not an RFC 3339 time ({e}), e.g. 2030-01-01T12:00:00Z"),
                    )
                })?;
                req.expiry = Some(t.with_timezone(&chrono::Utc));
            }
            ("expiresIn", Value::String(s)) => {
                req.expires_in = Some(humantime::parse_duration(&s).map_err(|e| {
                    Fail::bad(
                        "expiresIn",
                        format!("{s:?} is not a duration ({e}), e.g. 30m or 2h"),
                    )
                })?);
            }
            ("expiresIn", Value::Number(n)) => {
                let secs = n
                    .as_f64()
                    .filter(|s| s.is_finite() && *s >= 0.0 && *s < 1e9)
                    .ok_or_else(|| Fail::bad("expiresIn", "give a number of seconds, e.g. 1800"))?;
                req.expires_in = Some(std::time::Duration::from_secs_f64(secs));
            }
            ("id" | "creator" | "expiry", _) => {
                return Err(Fail::bad(field_name(&k), "must be a string"));
            }
            ("metadata", _) => return Err(Fail::bad("metadata", "must be a JSON object")),
            ("requireSignedURLs", _) => {
                return Err(Fail::bad("requireSignedURLs", "must be true or false"));
            }
            ("expiresIn", _) => {
                return Err(Fail::bad(
                    "expiresIn",
                    "must be a duration like \"30m\" or a number of seconds",
                ));
            }
            _ => {
                return Err(Fail::bad(
                    "body",
                    format!(
                        "unknown field {k:?}: the fields are id, metadata, creator, expiry, expiresIn, requireSignedURLs"
                    ),
                ));
            }
        }
    }
    Ok(req)
}

fn field_name(k: &str) -> &'static str {
    match k {
        "id" => "id",
        "creator" => "creator",
        _ => "expiry",
    }
}

/// `GET /v1/direct-uploads/{id}`: the draft as the ledger has it, if the caller's app minted it.
pub async fn status(
    State(svc): State<Arc<Service>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let run = || -> Result<Response, Fail> {
        let app = app_of(&svc, &headers)?;
        let draft = svc
            .book
            .lock()
            .map_err(|_| {
                Fail::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request",
                    "the ledger is unavailable",
                )
            })?
            // A draft belongs to the app that minted it; another app's draft reads as
            // absent (404, not 403: the answer must not confirm that it exists).
            .get_owned(&id, &app)
            .map_err(|e| {
                tracing::error!(error = %e, "reading a draft failed");
                Fail::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "request",
                    "the ledger could not be read",
                )
            })?;
        match draft {
            Some(d) => {
                tracing::debug!(app, id, state = d.state.as_str(), "draft status");
                Ok(axum::Json(d).into_response())
            }
            None => Err(Fail::new(
                StatusCode::NOT_FOUND,
                "id",
                format!("no draft {id:?} was minted with this app key"),
            )),
        }
    };
    run().unwrap_or_else(IntoResponse::into_response)
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// `GET /healthz`.
pub async fn health() -> &'static str {
    "ok\n"
}
