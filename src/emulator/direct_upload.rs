//! Direct creator uploads: the draft-creating API call and the one-time upload URL.

use axum::extract::Request;
use axum::http::StatusCode;
use chrono::{DateTime, Duration, Utc};

use super::app::App;
use super::form::{self, check_image};
use super::images::already_exists;
use super::reply::{ApiError, Reply, ok};
use super::store::{Blob, DraftError, ImageRec};
use super::util::{encode_path, percent_decode};
use super::webhook::Outcome;
use crate::api::types::{DirectUpload, codes};

/// `POST /v2/direct_upload`: creates a draft and returns its one-time URL. A request
/// without a body is accepted, since every field is optional.
pub async fn create(app: &App, req: Request) -> Reply {
    let empty = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .is_some_and(|v| v == "0")
        && !form::is_multipart(&req);
    let form = if empty {
        form::UploadForm::default()
    } else {
        form::read(req).await?
    };
    draft(app, form)
}

/// The deprecated `POST /v1/direct_upload`: a JSON body (every field optional: `expiry`,
/// `metadata`, `requireSignedURLs`, `creator`; no custom id), the same draft and answer.
pub async fn create_v1(app: &App, req: Request) -> Reply {
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("Bad request: {e}")))?;
    let v1: V1Body = if body.iter().all(u8::is_ascii_whitespace) {
        V1Body::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("Bad request: invalid JSON body: {e}")))?
    };
    let metadata = v1.metadata.unwrap_or_default();
    form::check_metadata_size(&metadata)?;
    if let Some(c) = &v1.creator {
        form::check_creator(c)?;
    }
    draft(
        app,
        form::UploadForm {
            metadata,
            require_signed_urls: v1.require_signed_urls.unwrap_or(false),
            creator: v1.creator,
            expiry: v1.expiry,
            ..form::UploadForm::default()
        },
    )
}

#[derive(Default, serde::Deserialize)]
struct V1Body {
    expiry: Option<String>,
    metadata: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "requireSignedURLs")]
    require_signed_urls: Option<bool>,
    creator: Option<String>,
}

/// Creates the draft a direct-upload form describes.
fn draft(app: &App, form: form::UploadForm) -> Reply {
    let now = Utc::now();
    let expiry = match &form.expiry {
        None => now + Duration::minutes(30),
        Some(text) => DateTime::parse_from_rfc3339(text)
            .map_err(|e| {
                ApiError::bad_request(format!("Bad request: expiry is not RFC 3339: {e}"))
            })?
            .with_timezone(&Utc),
    };
    if expiry < now + Duration::minutes(2) || expiry > now + Duration::hours(6) {
        return Err(ApiError::bad_request(
            "Bad request: expiry must be at least 2 minutes and at most 6 hours in the future",
        ));
    }
    let (id, custom_id) = form::assign_id(form.id, form.require_signed_urls)?;
    let rec = ImageRec {
        id,
        filename: None,
        meta: form.metadata,
        creator: form.creator,
        require_signed_urls: form.require_signed_urls,
        uploaded: now,
        arrived: None,
        seq: 0,
        custom_id,
        draft_expiry: Some(expiry),
        blob: None,
    };
    let rec = app
        .store
        .insert(rec)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .ok_or_else(already_exists)?;
    ok(DirectUpload {
        upload_url: format!(
            "{}/upload/{}/{}",
            app.origin,
            app.account_hash,
            encode_path(&rec.id)
        ),
        id: rec.id.clone(),
    })
}

/// `POST /upload/<account_hash>/<id>`: the creator's one upload, no auth.
pub async fn upload(app: &App, rest: &str, req: Request) -> Reply {
    let (hash, raw_id) = rest.split_once('/').ok_or_else(ApiError::image_not_found)?;
    let id = percent_decode(raw_id, false).ok_or_else(ApiError::image_not_found)?;
    if hash != app.account_hash {
        return Err(ApiError::image_not_found());
    }
    let form = form::read(req).await?;
    let (bytes, filename) = form
        .file
        .ok_or_else(|| ApiError::bad_request("Bad request: a file field is required"))?;
    let checked = match check_image(&bytes).await {
        Ok(mime) => form::check_account_takes(app, mime).map(|()| mime),
        Err(e) => Err(e),
    };
    let mime = match checked {
        Ok(mime) => mime,
        Err(refused) => {
            // Only a pending draft's upload is one the service would report.
            let pending = app
                .store
                .get(&id)
                .is_some_and(|r| r.draft_expiry.is_some_and(|e| e > Utc::now()));
            if pending {
                app.webhooks.notify(
                    &app.account_id,
                    &id,
                    Outcome::Failed,
                    filename.as_deref(),
                    Some(&refused.message),
                );
            }
            return Err(refused);
        }
    };
    let done = app
        .store
        .complete_draft(&id, Blob::new(bytes, mime), filename, Utc::now())
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match done {
        Ok(rec) => {
            app.webhooks.notify(
                &app.account_id,
                &rec.id,
                Outcome::Uploaded,
                rec.filename.as_deref(),
                None,
            );
            ok(app.wire_one(&rec))
        }
        Err(DraftError::NotFound) => Err(ApiError::image_not_found()),
        Err(DraftError::AlreadyUploaded) => Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::ALREADY_EXISTS,
            "This upload URL has been used already",
        )),
        Err(DraftError::Expired) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            "This upload URL has expired",
        )),
    }
}
