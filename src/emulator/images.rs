//! Image handlers: upload (file or url), get, patch, delete, blob, stats and both lists.

use std::ops::Bound;
use std::sync::Arc;

use axum::extract::Request;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use bytes::Bytes;
use chrono::Utc;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::app::App;
use super::faults::Draw;
use super::form::{self, check_custom_id, check_image};
use super::meta_filter::MetaFilter;
use super::reply::{ApiError, Reply, ok};
use super::server::ConnKill;
use super::store::{Blob, ImageRec};
use super::util::parse_query;
use crate::api::types::{AccountStats, ImageCount, ImageList, ImageListV2, codes};
use crate::rules::SERVICE_MAX_FILE_BYTES;

fn io_error(e: std::io::Error) -> ApiError {
    ApiError::internal(format!("emulator storage failed: {e}"))
}

/// `POST /v1` on either host.
/// `on_drop` runs just before a fault drops the connection (the answer is never counted).
pub async fn upload(
    app: &App,
    req: Request,
    draw: &Draw,
    kill: Option<ConnKill>,
    on_drop: impl FnOnce(),
) -> Reply {
    let form = form::read(req).await?;
    if draw.drop_before_store {
        on_drop();
        return Ok(drop_connection(kill).await);
    }
    let (bytes, filename) = match (form.file, form.url) {
        (Some(file), None) => file,
        (None, Some(url)) => fetch(app, &url).await?,
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "Bad request: send either file or url, not both",
            ));
        }
        (None, None) => {
            return Err(ApiError::bad_request(
                "Bad request: a file or a url is required",
            ));
        }
    };
    let mime = check_image(&bytes).await?;
    form::check_account_takes(app, mime)?;
    let (id, custom_id) = form::assign_id(form.id, form.require_signed_urls)?;
    let rec = ImageRec {
        id,
        filename,
        meta: form.metadata,
        creator: form.creator,
        require_signed_urls: form.require_signed_urls,
        uploaded: Utc::now(),
        arrived: Some(tokio::time::Instant::now()),
        seq: 0,
        custom_id,
        draft_expiry: None,
        blob: Some(Blob::new(bytes, mime)),
    };
    let inserted = {
        // Counted and stored under one lock: concurrent uploads never overshoot.
        let _gate = app.quota_gate.lock().unwrap_or_else(|p| p.into_inner());
        // The length bounds the count from above, so a full count is needed only near the quota.
        let near = app.store.lock().images.len() as u64 >= app.max_images;
        if near && stored_images(app) >= app.max_images {
            return Err(quota_reached());
        }
        app.store.insert(rec).map_err(io_error)?
    };
    let Some(rec) = inserted else {
        return Err(already_exists());
    };
    if draw.store_then_500 {
        return Err(ApiError::internal("Internal server error"));
    }
    if draw.drop_after_store {
        on_drop();
        return Ok(drop_connection(kill).await);
    }
    ok(app.wire_one(&rec))
}

async fn drop_connection(kill: Option<ConnKill>) -> axum::response::Response {
    match kill {
        Some(kill) => kill.fire().await,
        // Served outside the accept loop (no connection to drop): the closest is a 502.
        None => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// 400 code 5453: the account holds as many images as its plan allows.
fn quota_reached() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        codes::QUOTA_REACHED,
        "You have reached a service limit",
    )
}

/// Images `stats` counts: everything but drafts.
fn stored_images(app: &App) -> u64 {
    app.store
        .lock()
        .images
        .values()
        .filter(|r| r.draft_expiry.is_none())
        .count() as u64
}

/// 409 code 5409.
pub fn already_exists() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        codes::ALREADY_EXISTS,
        "Resource already exists",
    )
}

/// Fetches a url upload; any failure of the origin is code 5454.
async fn fetch(app: &App, url: &str) -> Result<(Bytes, Option<String>), ApiError> {
    let fail = |why: String| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::URL_FETCH_FAILED,
            format!("Failed to fetch the image from the url: {why}"),
        )
    };
    let parsed = reqwest::Url::parse(url).map_err(|e| fail(format!("invalid url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(fail("only http and https urls are supported".into()));
    }
    let filename = parsed
        .path_segments()
        .and_then(|mut s| s.next_back().map(str::to_owned))
        .filter(|s| !s.is_empty());
    let mut resp = app
        .http
        .get(parsed)
        .send()
        .await
        .map_err(|e| fail(e.to_string()))?;
    if !resp.status().is_success() {
        return Err(fail(format!("the origin answered {}", resp.status())));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(e.to_string()))? {
        if (body.len() + chunk.len()) as u64 > SERVICE_MAX_FILE_BYTES {
            return Err(form::too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok((body.freeze(), filename))
}

/// `GET /v1/{id}`.
pub fn get(app: &App, id: &str) -> Reply {
    let rec = app.store.get(id).ok_or_else(ApiError::image_not_found)?;
    ok(app.wire_one(&rec))
}

#[derive(Deserialize)]
struct PatchBody {
    metadata: Option<Map<String, Value>>,
    #[serde(rename = "requireSignedURLs")]
    require_signed_urls: Option<bool>,
    creator: Option<String>,
}

/// `PATCH /v1/{id}`: replaces the fields given; metadata is replaced as a whole.
pub async fn patch(app: &App, id: &str, req: Request) -> Reply {
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("Bad request: {e}")))?;
    let body: PatchBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Bad request: invalid JSON body: {e}")))?;
    if let Some(meta) = &body.metadata {
        form::check_metadata_size(meta)?;
    }
    if let Some(c) = &body.creator {
        form::check_creator(c)?;
    }
    let existing = app.store.get(id).ok_or_else(ApiError::image_not_found)?;
    if existing.custom_id && body.require_signed_urls == Some(true) {
        check_custom_id(id, true)?;
    }
    // "Returns a new UID on a change": with the switch on, a change of requireSignedURLs
    // moves the image to a fresh id.
    let moves = app.switches.new_id_on_signed_change
        && body
            .require_signed_urls
            .is_some_and(|p| p != existing.require_signed_urls);
    let change = |rec: &mut ImageRec| {
        if let Some(meta) = body.metadata {
            rec.meta = meta;
        }
        if let Some(private) = body.require_signed_urls {
            rec.require_signed_urls = private;
        }
        if let Some(creator) = body.creator {
            rec.creator = Some(creator);
        }
    };
    let rec = if moves {
        let new_id = uuid::Uuid::new_v4().to_string();
        app.store.rename(id, &new_id, |rec| {
            rec.custom_id = false;
            change(rec);
        })
    } else {
        app.store.update(id, change)
    };
    let rec = rec
        .map_err(io_error)?
        .ok_or_else(ApiError::image_not_found)?;
    ok(app.wire_one(&rec))
}

/// `DELETE /v1/{id}`.
pub fn delete(app: &App, id: &str) -> Reply {
    if !app.store.delete(id).map_err(io_error)? {
        return Err(ApiError::image_not_found());
    }
    ok(json!({}))
}

/// `GET /v1/{id}/blob`: the stored bytes.
pub fn blob(app: &App, id: &str) -> Reply {
    let rec = app.store.get(id).ok_or_else(ApiError::image_not_found)?;
    let blob = rec.blob.as_ref().ok_or_else(ApiError::image_not_found)?;
    let (mime, bytes) = app.originals.serve(&rec.id, blob);
    Ok(([(header::CONTENT_TYPE, mime)], bytes).into_response())
}

/// `GET /v1/stats`.
pub fn stats(app: &App) -> Reply {
    ok(AccountStats {
        count: ImageCount {
            current: stored_images(app),
            allowed: app.max_images,
        },
    })
}

fn per_page(app: &App, value: Option<&str>) -> Result<usize, ApiError> {
    let max = app.switches.max_per_page as usize;
    let Some(v) = value else {
        return Ok(1000.min(max));
    };
    match v.parse::<usize>() {
        Ok(n) if (10..=max).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "Bad request: per_page must be between 10 and {max}"
        ))),
    }
}

/// `GET /v1?page&per_page` (deprecated): oldest first, page numbers from 1.
pub fn list_v1(app: &App, query: Option<&str>) -> Reply {
    let q = parse_query(query);
    let find = |k: &str| q.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let per_page = per_page(app, find("per_page"))?;
    let creator = find("creator");
    let page = match find("page") {
        None => 1,
        Some(p) => p
            .parse::<usize>()
            .ok()
            .filter(|p| *p >= 1)
            .ok_or_else(|| ApiError::bad_request("Bad request: page must be 1 or more"))?,
    };
    let listed = app.listed();
    let (recs, names) = {
        let st = app.store.lock();
        let recs: Vec<Arc<ImageRec>> = st
            .order
            .values()
            .filter_map(|id| st.images.get(id))
            .filter(|r| listed(r))
            .filter(|r| creator_matches(creator, r))
            .skip((page - 1).saturating_mul(per_page))
            .take(per_page)
            .cloned()
            .collect();
        (recs, App::variant_names(&st))
    };
    ok(ImageList {
        images: recs.iter().map(|r| app.wire(r, &names)).collect(),
    })
}

/// The lists' `creator` filter: absent lists all; empty lists the images without a creator.
fn creator_matches(creator: Option<&str>, rec: &ImageRec) -> bool {
    match creator {
        None => true,
        Some("") => rec.creator.as_deref().is_none_or(str::is_empty),
        Some(c) => rec.creator.as_deref() == Some(c),
    }
}

const TOKEN_PREFIX: &str = "ct1.";

/// `GET /v2`: newest first by default, continuation tokens, creator and metadata filters.
pub fn list_v2(app: &App, query: Option<&str>) -> Reply {
    let mut per = None;
    let mut asc = false;
    let mut after: Option<u64> = None;
    let mut creator: Option<String> = None;
    let mut meta_pairs = Vec::new();
    for (k, v) in parse_query(query) {
        match k.as_str() {
            "per_page" => per = Some(v),
            "sort_order" => {
                asc = match v.as_str() {
                    "asc" => true,
                    "desc" => false,
                    _ => {
                        return Err(ApiError::bad_request(
                            "Bad request: sort_order must be asc or desc",
                        ));
                    }
                }
            }
            "continuation_token" if !v.is_empty() => {
                let seq = v
                    .strip_prefix(TOKEN_PREFIX)
                    .and_then(|h| u64::from_str_radix(h, 16).ok())
                    .ok_or_else(|| {
                        ApiError::bad_request("Bad request: invalid continuation_token")
                    })?;
                after = Some(seq);
            }
            "creator" => creator = Some(v),
            key if key.starts_with("meta.") => meta_pairs.push((k, v)),
            _ => {}
        }
    }
    let filters = MetaFilter::parse_all(&meta_pairs)?;
    let per_page = per_page(app, per.as_deref())?;
    let listed = app.listed();
    let (recs, more, names) = {
        let st = app.store.lock();
        let range = match (asc, after) {
            (true, Some(s)) => (Bound::Excluded(s), Bound::Unbounded),
            (false, Some(s)) => (Bound::Unbounded, Bound::Excluded(s)),
            (_, None) => (Bound::Unbounded, Bound::Unbounded),
        };
        let iter = st.order.range(range);
        let iter: Box<dyn Iterator<Item = (&u64, &String)>> = if asc {
            Box::new(iter)
        } else {
            Box::new(iter.rev())
        };
        let mut matching = iter
            .filter_map(|(_, id)| st.images.get(id))
            .filter(|r| listed(r))
            .filter(|r| creator_matches(creator.as_deref(), r))
            .filter(|r| filters.iter().all(|f| f.matches(&r.meta)));
        let recs: Vec<Arc<ImageRec>> = matching.by_ref().take(per_page).cloned().collect();
        let more = matching.next().is_some();
        (recs, more, App::variant_names(&st))
    };
    let continuation_token = match recs.last() {
        Some(last) if more => Some(format!("{TOKEN_PREFIX}{:x}", last.seq)),
        _ => None,
    };
    ok(ImageListV2 {
        images: recs.iter().map(|r| app.wire(r, &names)).collect(),
        continuation_token,
    })
}

/// `GET /v1/batch_token`.
pub fn batch_token(app: &App) -> Reply {
    let ttl = chrono::Duration::from_std(app.batch_token_ttl)
        .unwrap_or_else(|_| chrono::Duration::hours(1));
    let expires = Utc::now() + ttl;
    let token = app.batch_tokens.issue(expires);
    ok(crate::api::types::BatchToken {
        token,
        expires_at: expires.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
    })
}
