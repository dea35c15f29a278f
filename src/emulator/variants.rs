//! Variant definitions: list, create, get, patch, delete.

use axum::extract::Request;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::app::App;
use super::images::already_exists;
use super::reply::{ApiError, Reply, ok};
use crate::api::types::{Variant, VariantList, VariantOptions, VariantResult, codes};
use crate::rules::MAX_VARIANTS;

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "Variant not found")
}

fn io(e: std::io::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

async fn json_body<T: for<'de> Deserialize<'de>>(req: Request) -> Result<T, ApiError> {
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("Bad request: {e}")))?;
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Bad request: invalid JSON body: {e}")))
}

fn check_options(o: &VariantOptions) -> Result<(), ApiError> {
    if !["scale-down", "contain", "cover", "crop", "pad"].contains(&o.fit.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Bad request: invalid fit {:?}",
            o.fit
        )));
    }
    if !["keep", "copyright", "none"].contains(&o.metadata.as_str()) {
        return Err(ApiError::bad_request(format!(
            "Bad request: invalid metadata {:?}",
            o.metadata
        )));
    }
    for side in [o.width, o.height].into_iter().flatten() {
        if !(1..=9999).contains(&side) {
            return Err(ApiError::bad_request(
                "Bad request: width and height must be between 1 and 9999",
            ));
        }
    }
    Ok(())
}

fn check_name(id: &str) -> Result<(), ApiError> {
    if id.is_empty() || id.len() > 99 || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(ApiError::bad_request(
            "Bad request: a variant id is 1 to 99 letters and digits",
        ));
    }
    Ok(())
}

/// `GET /v1/variants`.
pub fn list(app: &App) -> Reply {
    let st = app.store.lock();
    let variants: Map<String, Value> = st
        .variants
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), serde_json::to_value(v).ok()?)))
        .collect();
    ok(VariantList { variants })
}

/// `POST /v1/variants`.
pub async fn create(app: &App, req: Request) -> Reply {
    let v: Variant = json_body(req).await?;
    check_name(&v.id)?;
    check_options(&v.options)?;
    let mut st = app.store.lock();
    if st.variants.contains_key(&v.id) {
        return Err(already_exists());
    }
    if st.variants.len() >= MAX_VARIANTS {
        return Err(ApiError::bad_request(format!(
            "Bad request: at most {MAX_VARIANTS} variants"
        )));
    }
    app.store.put_variant(&mut st, v.clone()).map_err(io)?;
    ok(VariantResult { variant: v })
}

/// `GET /v1/variants/{id}`.
pub fn get(app: &App, id: &str) -> Reply {
    let st = app.store.lock();
    let v = st.variants.get(id).cloned().ok_or_else(not_found)?;
    ok(VariantResult { variant: v })
}

/// `GET /v1/variants/{id}/flat` (2026): the variant itself, without the `variant` wrapper.
pub fn get_flat(app: &App, id: &str) -> Reply {
    let st = app.store.lock();
    let v = st.variants.get(id).cloned().ok_or_else(not_found)?;
    ok(v)
}

#[derive(Deserialize)]
struct PatchBody {
    options: Option<VariantOptions>,
    #[serde(rename = "neverRequireSignedURLs")]
    never_require_signed_urls: Option<bool>,
}

/// `PATCH /v1/variants/{id}`. Like the API, the body is the variant's whole new definition:
/// `options` is required and replaces the old options as one object (a field left out is
/// not kept), and a missing `neverRequireSignedURLs` is its default, false.
pub async fn patch(app: &App, id: &str, req: Request) -> Reply {
    let body: PatchBody = json_body(req).await?;
    let options = body
        .options
        .ok_or_else(|| ApiError::bad_request("Bad request: options is required"))?;
    check_options(&options)?;
    let mut st = app.store.lock();
    let mut v = st.variants.get(id).cloned().ok_or_else(not_found)?;
    v.options = options;
    v.never_require_signed_urls = Some(body.never_require_signed_urls.unwrap_or(false));
    app.store.put_variant(&mut st, v.clone()).map_err(io)?;
    ok(VariantResult { variant: v })
}

/// `DELETE /v1/variants/{id}`.
pub fn delete(app: &App, id: &str) -> Reply {
    let mut st = app.store.lock();
    if !app.store.delete_variant(&mut st, id).map_err(io)? {
        return Err(not_found());
    }
    ok(json!({}))
}
