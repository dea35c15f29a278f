//! The receiver of Cloudflare's image notifications (`POST /v1/webhook`). It checks the
//! `cf-webhook-auth` secret in constant time, answers the dashboard's test POST, and marks
//! drafts completed or failed. The fields of `data` are undocumented, so it reads them
//! defensively (an object, or JSON text inside a string): the draft is any string in
//! `data`, else in `text`, else anywhere in the notice, that names a known draft; the
//! outcome any status-like field; every outcome is confirmed with `GET /v1/{id}` before it
//! is recorded. Repeated deliveries change nothing (a completed draft stays completed). A
//! notice that names no draft (other than the dashboard's test) is kept, raw and bounded,
//! for `GET /v1/webhook/unmatched`, and logged.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use super::Service;
use super::reply::Fail;
use crate::direct;
use crate::ledger::{DraftChange, DraftState};

/// Strings of a notification looked at as possible draft ids, at most.
const MAX_CANDIDATES: usize = 64;
/// Notices that could not be attributed, kept for `GET /v1/webhook/unmatched`, at most.
const MAX_UNMATCHED: usize = 32;
/// Bytes kept of each such notice's body.
const MAX_UNMATCHED_BYTES: usize = 8 * 1024;

/// The raw bodies of the last notices this server could not attribute to a draft (bounded:
/// [`MAX_UNMATCHED`] notices of at most [`MAX_UNMATCHED_BYTES`] each), so that an operator
/// can see what Cloudflare sent when its undocumented `data` named nothing we know.
#[derive(Default)]
pub struct Unmatched {
    kept: Mutex<VecDeque<Value>>,
}

impl Unmatched {
    /// Keeps one body (cut to the bound), dropping the oldest past the bound, and logs it.
    pub fn keep(&self, body: &[u8], why: &str) {
        let cut = body.len() > MAX_UNMATCHED_BYTES;
        let text = String::from_utf8_lossy(&body[..body.len().min(MAX_UNMATCHED_BYTES)]);
        tracing::warn!(why, bytes = body.len(), body = %text, "webhook kept unattributed: it names no draft of this server");
        let entry = json!({
            "received_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "why": why,
            "bytes": body.len(),
            "truncated": cut,
            "body": text,
        });
        if let Ok(mut kept) = self.kept.lock() {
            if kept.len() == MAX_UNMATCHED {
                kept.pop_front();
            }
            kept.push_back(entry);
        }
    }

    fn list(&self) -> Vec<Value> {
        self.kept
            .lock()
            .map(|k| k.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// `GET /v1/webhook/unmatched`: the kept notices, oldest first; the webhook secret is the
/// credential, as for deliveries.
pub async fn unmatched(State(svc): State<Arc<Service>>, headers: HeaderMap) -> Response {
    if let Some(refusal) = refused(&svc, &headers) {
        return refusal;
    }
    (
        StatusCode::OK,
        axum::Json(json!({ "notices": svc.unmatched.list() })),
    )
        .into_response()
}

/// The `cf-webhook-auth` check, in constant time: `Some(refusal)` to send when it fails.
fn refused(svc: &Service, headers: &HeaderMap) -> Option<Response> {
    let Some(secret) = &svc.webhook_secret else {
        return Some(Fail::new(
            StatusCode::NOT_FOUND,
            "cf-webhook-auth",
            "webhooks are off: set serve.webhook_secret (or CFIMG_WEBHOOK_SECRET) and the same secret in Cloudflare's webhook destination",
        )
        .into_response());
    };
    let given = headers
        .get("cf-webhook-auth")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(secret.expose().as_bytes().ct_eq(given)) {
        tracing::warn!("webhook refused: wrong or missing cf-webhook-auth");
        return Some(
            Fail::new(
                StatusCode::UNAUTHORIZED,
                "cf-webhook-auth",
                "wrong or missing webhook secret",
            )
            .into_response(),
        );
    }
    None
}

/// `POST /v1/webhook`.
pub async fn receive(State(svc): State<Arc<Service>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refusal) = refused(&svc, &headers) {
        return refusal;
    }
    let note: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            svc.unmatched.keep(&body, "not a JSON object");
            return Fail::bad("body", "a notification is a JSON object").into_response();
        }
    };
    let data = data_of(&note);
    let mut strings = Vec::new();
    collect_strings(&data, &mut strings);
    let looked_up = svc.book.lock().map_err(|_| ()).and_then(|book| {
        let mut ids = book.known(&strings).map_err(|_| ())?;
        if ids.is_empty()
            && let Some(text) = note.get("text").and_then(Value::as_str)
        {
            // Some notifications may name the image only in their text.
            let words: Vec<String> = text
                .split(|c: char| c.is_whitespace() || c == ',' || c == '"' || c == '\'')
                .map(|w| w.trim_end_matches(['.', ':', ';']).to_string())
                .filter(|w| !w.is_empty())
                .take(MAX_CANDIDATES)
                .collect();
            ids = book.known(&words).map_err(|_| ())?;
        }
        if ids.is_empty() {
            // Last, any string anywhere in the notification (an id outside `data`).
            let mut all = Vec::new();
            collect_strings(&note, &mut all);
            ids = book.known(&all).map_err(|_| ())?;
        }
        Ok(ids)
    });
    let Ok(ids) = looked_up else {
        tracing::warn!(
            "a webhook could not be matched: the ledger is unavailable; asking for a redelivery"
        );
        return Fail::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "request",
            "the notification could not be recorded now; deliver it again",
        )
        .into_response();
    };
    if ids.is_empty() {
        let test = note
            .get("text")
            .and_then(Value::as_str)
            .is_some_and(|t| t.contains("test message"));
        if test {
            tracing::info!("webhook test POST received");
        } else {
            svc.unmatched.keep(&body, "names no draft of this server");
        }
        return (
            StatusCode::OK,
            axum::Json(json!({ "ok": true, "test": test, "drafts": [] })),
        )
            .into_response();
    }
    let (claim, reason) = outcome(&data);
    let mut changed = Vec::new();
    for id in &ids {
        match direct::apply_notice(&svc.lane, &svc.book, id, claim, reason.as_deref()).await {
            Ok(c) => {
                tracing::info!(
                    id,
                    changed = c == DraftChange::Changed,
                    claim = claim.map_or("none", DraftState::as_str),
                    "webhook applied"
                );
                changed.push(json!({ "id": id, "changed": c == DraftChange::Changed }));
            }
            Err(e) => {
                // Cloudflare retries a delivery that is not answered 2xx.
                tracing::warn!(id, error = %e, "webhook could not be applied; asking for a redelivery");
                return Fail::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request",
                    "the notification could not be recorded now; deliver it again",
                )
                .into_response();
            }
        }
    }
    (
        StatusCode::OK,
        axum::Json(json!({ "ok": true, "test": false, "drafts": changed })),
    )
        .into_response()
}

/// Every string inside `v`, at most [`MAX_CANDIDATES`].
fn collect_strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) if out.len() < MAX_CANDIDATES && s.len() <= 1024 => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}

/// A notification's `data`, read leniently: an object or array as it is, JSON text inside
/// a string parsed, anything else (absent, null, a plain string) as it is.
fn data_of(note: &Value) -> Value {
    match note.get("data") {
        Some(Value::String(text)) => serde_json::from_str::<Value>(text)
            .ok()
            .filter(|v| v.is_object() || v.is_array())
            .unwrap_or_else(|| Value::String(text.clone())),
        Some(v) => v.clone(),
        None => Value::Null,
    }
}

/// What the notification's `data` says happened, when it says so clearly: a status-like
/// field saying uploaded/completed or failed/error. `None`: unclear. Either way the draft is
/// then looked up (`direct::apply_notice`) before anything is recorded.
fn outcome(data: &Value) -> (Option<DraftState>, Option<String>) {
    let data = Some(data);
    let field = |k: &str| {
        data.and_then(|d| d.get(k))
            .and_then(Value::as_str)
            .map(str::to_ascii_lowercase)
    };
    let status = ["status", "state", "event", "result", "outcome"]
        .iter()
        .find_map(|k| field(k));
    let error = ["error", "reason", "message"].iter().find_map(|k| {
        data.and_then(|d| d.get(*k))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    match status.as_deref() {
        Some(s) if s.contains("fail") || s.contains("error") || s.contains("reject") => {
            (Some(DraftState::Failed), error)
        }
        Some(s)
            if s.contains("upload")
                || s.contains("complete")
                || s.contains("success")
                || s.contains("ready") =>
        {
            (Some(DraftState::Completed), None)
        }
        _ => (None, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_are_read_from_any_status_like_field() {
        let o = |data: Value| outcome(&data_of(&json!({ "data": data }))).0;
        assert_eq!(
            o(json!({"status": "uploaded"})),
            Some(DraftState::Completed)
        );
        assert_eq!(
            o(json!({"state": "FAILED", "error": "x"})),
            Some(DraftState::Failed)
        );
        assert_eq!(
            o(json!({"event": "image.upload.complete"})),
            Some(DraftState::Completed)
        );
        assert_eq!(o(json!({"id": "x"})), None);
        assert_eq!(
            o(json!("{\"status\": \"uploaded\"}")),
            Some(DraftState::Completed),
            "JSON text inside a string"
        );
        assert_eq!(o(json!("uploaded")), None);
        let mut s = Vec::new();
        collect_strings(&json!({"a": ["x", {"b": "y"}], "n": 1}), &mut s);
        assert_eq!(s, ["x", "y"]);
    }
}
