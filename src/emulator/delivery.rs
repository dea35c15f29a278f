//! Delivery URLs: the stored bytes for every variant, with signed-URL checks for
//! private images.

use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;

use super::app::App;
use super::util::{hmac_sha256_verify, percent_decode};

fn error(status: StatusCode, text: &'static str) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], text).into_response()
}

/// `GET /cdn/<account_hash>/<image_id>/<variant>`; `path` is the raw request path.
pub fn serve(app: &App, path: &str, query: Option<&str>) -> Response {
    let Some(rest) = path.strip_prefix("/cdn/") else {
        return error(StatusCode::NOT_FOUND, "ERROR 9404: not found");
    };
    let parsed = rest.split_once('/').and_then(|(hash, tail)| {
        let (raw_id, variant) = tail.rsplit_once('/')?;
        Some((hash, percent_decode(raw_id, false)?, variant))
    });
    let Some((hash, id, variant)) = parsed else {
        return error(StatusCode::NOT_FOUND, "ERROR 9404: not found");
    };
    if hash != app.account_hash {
        return error(StatusCode::NOT_FOUND, "ERROR 9404: not found");
    }
    let (rec, never_signed, keys) = {
        let st = app.store.lock();
        let never_signed = match st.variants.get(variant) {
            Some(v) => v.never_require_signed_urls == Some(true),
            // Flexible variants are option strings such as `w=100,h=50`.
            None if st.flexible_variants && variant.contains('=') => false,
            None => return error(StatusCode::NOT_FOUND, "ERROR 9425: variant not found"),
        };
        let keys: Vec<String> = st.keys.iter().map(|k| k.value.clone()).collect();
        (st.images.get(&id).cloned(), never_signed, keys)
    };
    let Some(blob) = rec.as_ref().and_then(|r| r.blob.clone()) else {
        return error(StatusCode::NOT_FOUND, "ERROR 9404: image not found");
    };
    let private = rec.is_some_and(|r| r.require_signed_urls);
    if private && !never_signed && !signature_ok(path, query, &keys) {
        return error(
            StatusCode::FORBIDDEN,
            "ERROR 9403: signature required or invalid",
        );
    }
    (
        [
            (header::CONTENT_TYPE, blob.mime),
            (header::CACHE_CONTROL, "public, max-age=14400"),
        ],
        blob.bytes,
    )
        .into_response()
}

/// `exp` in the future and `sig` = hex HMAC-SHA256(key, path + "?" + query without sig),
/// with the path taken either as served (with `/cdn`) or as on imagedelivery.net (without).
fn signature_ok(path: &str, query: Option<&str>, keys: &[String]) -> bool {
    let Some(query) = query else { return false };
    let mut sig = None;
    let mut exp = None;
    let mut rest = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sig", v)) => sig = Some(v),
            Some(("exp", v)) => {
                exp = v.parse::<i64>().ok();
                rest.push(pair);
            }
            _ => rest.push(pair),
        }
    }
    let (Some(sig), Some(exp)) = (sig, exp) else {
        return false;
    };
    if exp <= Utc::now().timestamp() {
        return false;
    }
    let unsigned = rest.join("&");
    let bare = path.strip_prefix("/cdn").unwrap_or(path);
    keys.iter().any(|key| {
        [path, bare].iter().any(|p| {
            let msg = format!("{p}?{unsigned}");
            hmac_sha256_verify(key.as_bytes(), msg.as_bytes(), sig)
        })
    })
}
