//! Direct creator uploads, shared by `cfimg direct-upload` and `cfimg serve`: the checks a
//! draft request must pass before a request is spent (expiry window, custom-id rules, no
//! custom id on a private image, metadata and creator limits), the mint itself through the
//! account's limiter with its record in the ledger, and the refresh of a draft from the
//! `draft` field of `GET /v1/{id}`.

use std::sync::Mutex;
use std::sync::atomic::AtomicU32;

use chrono::{DateTime, Duration, Utc};
use serde_json::{Map, Value};

use crate::api::client::DraftRequest;
use crate::api::types::codes;
use crate::error::{Error, Result};
use crate::ledger::{Draft, DraftBook, DraftChange, DraftState, NewDraft};
use crate::rules;
use crate::transport::ApiLane;

/// The earliest expiry Cloudflare accepts, from now.
pub const MIN_EXPIRY: Duration = Duration::minutes(2);
/// The latest expiry Cloudflare accepts, from now.
pub const MAX_EXPIRY: Duration = Duration::hours(6);
/// The expiry when none is asked for (Cloudflare's default too).
pub const DEFAULT_EXPIRY: Duration = Duration::minutes(30);
/// Room left at either end of the window for the request's trip, so that a draft asked
/// for "in 2 minutes" or "in 6 hours" is not refused on arrival.
const SLACK: Duration = Duration::seconds(10);

/// What an app or the CLI asks for.
#[derive(Debug, Clone, Default)]
pub struct MintRequest {
    /// Custom id.
    pub id: Option<String>,
    /// Absolute expiry.
    pub expiry: Option<DateTime<Utc>>,
    /// Relative expiry (instead of `expiry`).
    pub expires_in: Option<std::time::Duration>,
    /// User metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Creator tag.
    pub creator: Option<String>,
    /// Private image (`requireSignedURLs`).
    pub private: bool,
}

/// A request refused before any request was spent, naming the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field, as the HTTP API names it.
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

fn field(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// A checked request: the expiry is fixed and within the window.
#[derive(Debug, Clone)]
pub struct Checked {
    request: DraftRequest,
    expiry: DateTime<Utc>,
    metadata: Option<String>,
}

/// Checks a request against the service's rules at `now`.
pub fn check(req: &MintRequest, now: DateTime<Utc>) -> Result<Checked, FieldError> {
    let expiry = match (req.expiry, req.expires_in) {
        (Some(_), Some(_)) => {
            return Err(field(
                "expiry",
                "give either an expiry time or a duration (expiresIn), not both",
            ));
        }
        (Some(at), None) => {
            if at < now + MIN_EXPIRY || at > now + MAX_EXPIRY {
                return Err(field(
                    "expiry",
                    format!(
                        "{} is outside the window Cloudflare accepts: at least 2 minutes and at most 6 hours from now",
                        at.to_rfc3339()
                    ),
                ));
            }
            at
        }
        (None, Some(d)) => {
            let d = Duration::from_std(d).unwrap_or(Duration::MAX);
            if d < MIN_EXPIRY || d > MAX_EXPIRY {
                return Err(field(
                    "expiresIn",
                    "the expiry must be at least 2 minutes and at most 6 hours from now (e.g. 30m)",
                ));
            }
            (now + d).clamp(now + MIN_EXPIRY + SLACK, now + MAX_EXPIRY - SLACK)
        }
        (None, None) => now + DEFAULT_EXPIRY,
    };
    if let Some(id) = &req.id {
        rules::validate_custom_id(id)
            .map_err(|why| field("id", format!("{why} (Cloudflare's custom-id rules)")))?;
        if req.private {
            return Err(field(
                "requireSignedURLs",
                "a custom id cannot be private: Cloudflare refuses it (code 5410); drop the id to get one assigned, or make the image public",
            ));
        }
    }
    let metadata = match &req.metadata {
        Some(m) => {
            let text = Value::Object(m.clone()).to_string();
            rules::validate_metadata(&text).map_err(|why| field("metadata", why))?;
            Some(text)
        }
        None => None,
    };
    if let Some(c) = &req.creator
        && c.chars().count() > 1024
    {
        return Err(field(
            "creator",
            "the creator is longer than 1024 characters",
        ));
    }
    Ok(Checked {
        request: DraftRequest {
            id: req.id.clone(),
            expiry: Some(expiry.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            metadata: metadata.clone(),
            require_signed_urls: req.private,
            creator: req.creator.clone(),
        },
        expiry,
        metadata,
    })
}

/// A minted draft: its id, its one-time URL (a credential: hand it to the uploader only)
/// and its expiry.
#[derive(Clone, serde::Serialize)]
pub struct Minted {
    /// The image id.
    pub id: String,
    /// The one-time upload URL.
    #[serde(rename = "uploadURL")]
    pub upload_url: String,
    /// When the URL stops working.
    pub expiry: String,
}

impl std::fmt::Debug for Minted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Minted")
            .field("id", &self.id)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

/// Mints a checked draft through the account's lane and records it in the ledger for
/// `app`. A custom id is sent once (a retry after an ambiguous failure would meet its own
/// draft as 5409); an assigned id is retried, since an unused extra draft only expires.
pub async fn mint(
    lane: &ApiLane,
    book: &Mutex<DraftBook>,
    checked: &Checked,
    app: &str,
) -> Result<Minted> {
    let spent = AtomicU32::new(0);
    let d = &checked.request;
    let got = if d.id.is_some() {
        lane.once(&spent, lane.client.direct_upload(d)).await?
    } else {
        lane.call(&spent, || lane.client.direct_upload(d)).await?
    };
    let draft = NewDraft {
        image_id: got.id.clone(),
        app: app.to_string(),
        creator: d.creator.clone(),
        metadata: checked.metadata.clone(),
        private: d.require_signed_urls,
        expires_at: checked.expiry,
    };
    book.lock()
        .map_err(|_| Error::LedgerWrite("the drafts ledger lock is poisoned".into()))?
        .insert(&draft)?;
    Ok(Minted {
        id: got.id,
        upload_url: got.upload_url,
        expiry: checked
            .expiry
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    })
}

/// Asks Cloudflare where a pending draft stands (`GET /v1/{id}`, one attempt through the
/// limiter) and records it: an image without `draft` is completed; a draft past its expiry,
/// or gone after it, expired unused. Returns the draft as recorded afterwards.
pub async fn refresh(lane: &ApiLane, book: &Mutex<DraftBook>, draft: &Draft) -> Result<Draft> {
    let spent = AtomicU32::new(0);
    let lookup_url = draft.state == DraftState::Completed && draft.url.is_none();
    let expired = !lookup_url
        && DateTime::parse_from_rfc3339(&draft.expires_at)
            .map(|t| t.with_timezone(&Utc) <= Utc::now())
            .unwrap_or(false);
    let lock = || {
        book.lock()
            .map_err(|_| Error::LedgerWrite("the drafts ledger lock is poisoned".into()))
    };
    match lane.once(&spent, lane.client.get(&draft.id)).await {
        Ok(image) if image.draft != Some(true) => {
            // The same URL `migrate` records for an image, whichever variant the account lists first.
            let url = crate::upload::delivery_url(&image);
            lock()?.complete(&draft.id, url.as_deref(), image.filename.as_deref())?;
        }
        Ok(_) if expired => {
            lock()?.expire(&draft.id)?;
        }
        Ok(_) => {}
        // A draft the service no longer knows after its expiry was cleaned up unused; before
        // it, a 404 may be the short lag of a fresh custom id, so it proves nothing.
        Err(Error::Api {
            code: codes::NOT_FOUND,
            ..
        }) if expired => {
            lock()?.expire(&draft.id)?;
        }
        Err(Error::Api {
            code: codes::NOT_FOUND,
            ..
        }) => {}
        Err(e) => return Err(e),
    }
    Ok(lock()?.get(&draft.id)?.unwrap_or_else(|| draft.clone()))
}

/// Records what a notification says of a draft, confirming with `GET /v1/{id}` whatever it
/// says (the delivery URL comes from there; a "failed" draft may be stored after all).
/// Returns whether the ledger changed.
pub async fn apply_notice(
    lane: &ApiLane,
    book: &Mutex<DraftBook>,
    id: &str,
    claim: Option<DraftState>,
    reason: Option<&str>,
) -> Result<DraftChange> {
    let lock = || {
        book.lock()
            .map_err(|_| Error::LedgerWrite("the drafts ledger lock is poisoned".into()))
    };
    let Some(draft) = lock()?.get(id)? else {
        return Ok(DraftChange::Unknown);
    };
    lock()?.count_notice(id)?;
    if draft.state == DraftState::Completed {
        return Ok(DraftChange::Unchanged);
    }
    let before = draft.state;
    if claim == Some(DraftState::Failed) {
        // Confirmed like any outcome: the lookup may show the image stored after all (a
        // misread `data`, a retried upload that succeeded).
        match refresh(lane, book, &draft).await {
            Ok(after) if after.state == DraftState::Completed => return Ok(DraftChange::Changed),
            Ok(_) => {}
            Err(e) => {
                tracing::debug!(id, error = %e, "could not confirm a failed upload; recorded from the notice");
            }
        }
        return lock()?.fail(
            id,
            reason.unwrap_or("Cloudflare reported the upload as failed"),
        );
    }
    match refresh(lane, book, &draft).await {
        Ok(after) if after.state != before => Ok(DraftChange::Changed),
        Ok(_) if claim == Some(DraftState::Completed) => {
            // The notice says uploaded but the lookup does not show it yet (lists and
            // lookups lag): trust the notice; the URL is filled in by a later lookup.
            lock()?.complete(id, None, None)
        }
        Ok(_) => Ok(DraftChange::Unchanged),
        Err(e) if claim == Some(DraftState::Completed) => {
            tracing::debug!(id, error = %e, "could not confirm a completed upload; recorded from the notice");
            lock()?.complete(id, None, None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> MintRequest {
        MintRequest {
            expiry: Some(Utc::now() + Duration::minutes(minutes)),
            ..MintRequest::default()
        }
    }

    #[test]
    fn the_expiry_window_is_2_minutes_to_6_hours() {
        let now = Utc::now();
        assert_eq!(check(&at(1), now).unwrap_err().field, "expiry");
        assert_eq!(check(&at(361), now).unwrap_err().field, "expiry");
        assert!(check(&at(3), now).is_ok());
        for (d, ok) in [(119, false), (120, true), (21_600, true), (21_601, false)] {
            let r = MintRequest {
                expires_in: Some(std::time::Duration::from_secs(d)),
                ..MintRequest::default()
            };
            let got = check(&r, now);
            assert_eq!(got.is_ok(), ok, "{d} s");
            if let Ok(c) = got {
                assert!(c.expiry >= now + MIN_EXPIRY && c.expiry <= now + MAX_EXPIRY);
            }
        }
        let default = check(&MintRequest::default(), now).unwrap();
        assert_eq!(default.expiry, now + DEFAULT_EXPIRY);
    }

    #[test]
    fn custom_ids_follow_the_rules_and_are_never_private() {
        let now = Utc::now();
        let id = |id: &str, private| MintRequest {
            id: Some(id.into()),
            private,
            ..MintRequest::default()
        };
        assert!(check(&id("avatars/u1.png", false), now).is_ok());
        assert_eq!(check(&id("x.txt", false), now).unwrap_err().field, "id");
        assert_eq!(check(&id("/x", false), now).unwrap_err().field, "id");
        assert_eq!(
            check(&id("avatars/u1.png", true), now).unwrap_err().field,
            "requireSignedURLs"
        );
        let big = MintRequest {
            metadata: Some(Map::from_iter([(
                "k".to_string(),
                Value::from("v".repeat(2000)),
            )])),
            ..MintRequest::default()
        };
        assert_eq!(check(&big, now).unwrap_err().field, "metadata");
    }
}
