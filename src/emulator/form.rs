//! Reading the multipart forms of uploads and direct-upload requests.

use std::io::Cursor;

use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{StatusCode, header};
use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};

use super::reply::ApiError;
use crate::api::types::codes;
use crate::image_check::{self, ImageProblem};
use crate::rules::{self, MAX_CREATOR_CHARS, SERVICE_MAX_FILE_BYTES};

/// The fields of an upload form.
#[derive(Default)]
pub struct UploadForm {
    /// The `file` part: bytes and the part's file name.
    pub file: Option<(Bytes, Option<String>)>,
    /// The `url` field.
    pub url: Option<String>,
    /// The custom `id`.
    pub id: Option<String>,
    /// Metadata from `metadata` JSON text, `metadata.k` fields and bracket-form fields
    /// (`metadata[a][b]`, `metadata[tags][]`) as nested objects and arrays.
    pub metadata: Map<String, Value>,
    /// `requireSignedURLs`.
    pub require_signed_urls: bool,
    /// `creator`.
    pub creator: Option<String>,
    /// `expiry` (direct upload).
    pub expiry: Option<String>,
}

/// True when the request says it is `multipart/form-data`.
pub fn is_multipart(req: &Request) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            ct.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// The 5415 answer for anything not sent as multipart.
pub fn not_multipart() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        codes::NOT_MULTIPART,
        "Images must be uploaded as a form, not as raw image data. Please use multipart/form-data format",
    )
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        too_large()
    } else {
        ApiError::bad_request(format!("Bad request: malformed multipart body: {e}"))
    }
}

/// 413 code 5413.
pub fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        codes::TOO_LARGE,
        format!("Uploaded image must have a size of at most {SERVICE_MAX_FILE_BYTES} bytes"),
    )
}

/// Reads the whole form. Metadata is checked after all fields are in, because the dotted
/// SDK forms arrive one key per field.
pub async fn read(req: Request) -> Result<UploadForm, ApiError> {
    if !is_multipart(&req) {
        return Err(not_multipart());
    }
    let mut multipart = Multipart::from_request(req, &())
        .await
        .map_err(|e| ApiError::bad_request(format!("Bad request: {e}")))?;
    let mut form = UploadForm::default();
    let mut json_meta: Option<String> = None;
    let mut loose_meta = Map::new();
    let mut too_big = false;
    while let Some(mut field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "file" {
            let filename = field.file_name().map(str::to_owned);
            // Keep the chunks as they come and join them once, to copy the body at most once.
            let mut chunks: Vec<Bytes> = Vec::new();
            let mut len = 0u64;
            while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
                len += chunk.len() as u64;
                // Cloudflare's edge takes the whole body before the service refuses it, so
                // the client reads a 5413 rather than a reset mid-write (which it would
                // rightly retry): read on, keep nothing, answer at the end.
                if len > SERVICE_MAX_FILE_BYTES {
                    too_big = true;
                    chunks.clear();
                } else {
                    chunks.push(chunk);
                }
            }
            if too_big {
                continue;
            }
            let bytes = if chunks.len() == 1 {
                chunks.pop().unwrap_or_default()
            } else {
                let mut all = BytesMut::with_capacity(len as usize);
                chunks.iter().for_each(|c| all.extend_from_slice(c));
                all.freeze()
            };
            form.file = Some((bytes, filename));
            continue;
        }
        let value = field.text().await.map_err(multipart_error)?;
        match name.as_str() {
            "url" => form.url = Some(value),
            "id" => form.id = Some(value),
            "metadata" => json_meta = Some(value),
            "requireSignedURLs" => form.require_signed_urls = parse_bool(&value)?,
            "creator" => form.creator = Some(value),
            "expiry" => form.expiry = Some(value),
            other => {
                if let Some(key) = other.strip_prefix("metadata.") {
                    loose_meta.insert(key.to_owned(), Value::String(value));
                } else if let Some(path) = bracket_path(other) {
                    insert_at(&mut loose_meta, &path, value)?;
                }
                // Unknown fields are ignored, as the service does.
            }
        }
    }
    if too_big {
        return Err(too_large());
    }
    let mut meta = match json_meta {
        Some(text) => rules::validate_metadata(&text)
            .map_err(|e| ApiError::bad_request(format!("Bad request: {e}")))?,
        None => Map::new(),
    };
    if !loose_meta.is_empty() {
        meta.extend(loose_meta);
        check_metadata_size(&meta)?;
    }
    form.metadata = meta;
    if let Some(c) = &form.creator {
        check_creator(c)?;
    }
    Ok(form)
}

/// The segments of a bracket-form metadata field, as the TypeScript SDK sends nested
/// metadata: `metadata[a][b]` is `["a", "b"]`, `metadata[tags][]` is `["tags", ""]` (an
/// empty segment appends to an array). `None` for any other field name.
fn bracket_path(name: &str) -> Option<Vec<&str>> {
    let mut rest = name.strip_prefix("metadata")?;
    let mut path = Vec::new();
    while !rest.is_empty() {
        let (seg, tail) = rest.strip_prefix('[')?.split_once(']')?;
        path.push(seg);
        rest = tail;
    }
    (!path.is_empty() && !path[0].is_empty()).then_some(path)
}

/// Puts `value` at `path` in `meta`, creating the objects and arrays on the way. A field
/// that is both a value and a container is refused.
fn insert_at(meta: &mut Map<String, Value>, path: &[&str], value: String) -> Result<(), ApiError> {
    let clash = || {
        ApiError::bad_request(format!(
            "Bad request: metadata field {:?} is given both as a value and as an object or list",
            path.join(".")
        ))
    };
    let mut slot: &mut Value = meta.entry(path[0].to_owned()).or_insert(Value::Null);
    for seg in &path[1..] {
        if slot.is_null() {
            *slot = if seg.is_empty() {
                Value::Array(Vec::new())
            } else {
                Value::Object(Map::new())
            };
        }
        slot = match (slot, seg.is_empty()) {
            (Value::Array(items), true) => {
                items.push(Value::Null);
                items.last_mut().ok_or_else(clash)?
            }
            (Value::Object(map), false) => map.entry((*seg).to_owned()).or_insert(Value::Null),
            _ => return Err(clash()),
        };
    }
    if !slot.is_null() {
        return Err(clash());
    }
    *slot = Value::String(value);
    Ok(())
}

/// The 1024-byte limit, measured on the compact JSON text.
pub fn check_metadata_size(meta: &Map<String, Value>) -> Result<(), ApiError> {
    let text = serde_json::to_string(meta).map_err(|e| ApiError::bad_request(e.to_string()))?;
    rules::validate_metadata(&text)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(format!("Bad request: {e}")))
}

/// The creator length limit.
pub fn check_creator(creator: &str) -> Result<(), ApiError> {
    if creator.chars().count() > MAX_CREATOR_CHARS {
        return Err(ApiError::bad_request(format!(
            "Bad request: creator is longer than {MAX_CREATOR_CHARS} characters"
        )));
    }
    Ok(())
}

fn parse_bool(v: &str) -> Result<bool, ApiError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "Bad request: requireSignedURLs must be true or false, not {v:?}"
        ))),
    }
}

/// Checks uploaded bytes: not empty, at most 10 MB, a format sniffed from magic bytes, then
/// decoded as the service would (`image_check`): 9422 when it cannot be, 5400 when too large.
/// Returns the MIME type to serve them with.
pub async fn check_image(bytes: &Bytes) -> Result<&'static str, ApiError> {
    if bytes.is_empty() {
        return Err(undecodable("the file is empty"));
    }
    if bytes.len() as u64 > SERVICE_MAX_FILE_BYTES {
        return Err(too_large());
    }
    let head = &bytes[..bytes.len().min(rules::SNIFF_BYTES)];
    let format = rules::sniff_format(head).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_TYPE,
            "Unsupported image type: use JPEG, PNG, GIF, WebP, SVG or HEIC",
        )
    })?;
    // Decoding a large image takes a while: keep it off the async workers.
    let checked = if bytes.len() > 256 * 1024 {
        let bytes = bytes.clone();
        tokio::task::spawn_blocking(move || image_check::check(format, Cursor::new(bytes)))
            .await
            .map_err(|e| ApiError::internal(format!("image check failed: {e}")))?
    } else {
        image_check::check(format, Cursor::new(bytes))
    };
    match checked {
        Ok(_) => Ok(format.mime()),
        Err(ImageProblem::Undecodable(why)) => Err(undecodable(&why)),
        Err(ImageProblem::TooLarge(why)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_REQUEST,
            format!("Bad request: the image is too large: {why}"),
        )),
    }
}

/// What the account's plan refuses of a decodable image: AVIF unless it is Enterprise
/// (the switch `avif_input`). 415 code 5455, with the service's words.
pub fn check_account_takes(app: &super::app::App, mime: &str) -> Result<(), ApiError> {
    if mime == "image/avif" && !app.switches.avif_input {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            codes::UNSUPPORTED_TYPE,
            "AVIF input is not enabled for this account",
        ));
    }
    Ok(())
}

/// 400 code 9422.
fn undecodable(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        codes::UNDECODABLE,
        format!("Bad request: image could not be decoded: {why}"),
    )
}

/// The id a new image or draft gets: the checked custom id, or a fresh UUID; and whether
/// it was custom.
pub fn assign_id(
    custom: Option<String>,
    require_signed_urls: bool,
) -> Result<(String, bool), ApiError> {
    match custom {
        Some(id) => {
            check_custom_id(&id, require_signed_urls)?;
            Ok((id, true))
        }
        None => Ok((uuid::Uuid::new_v4().to_string(), false)),
    }
}

/// Checks a custom id and its combination with `requireSignedURLs`.
pub fn check_custom_id(id: &str, require_signed_urls: bool) -> Result<(), ApiError> {
    rules::validate_service_custom_id(id).map_err(|reason| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::INVALID_ID,
            format!("Invalid custom id: {reason}"),
        )
    })?;
    if require_signed_urls {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            codes::CUSTOM_ID_PRIVATE,
            "Custom ids cannot be used with requireSignedURLs: private images always get Cloudflare-assigned ids",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bracket_fields_become_nested_objects_and_arrays() {
        let mut meta = Map::new();
        for (name, value) in [
            ("metadata[a][b]", "c"),
            ("metadata[a][d]", "e"),
            ("metadata[tags][]", "x"),
            ("metadata[tags][]", "y"),
            ("metadata[k]", "v"),
        ] {
            let path = bracket_path(name).expect("a bracket field");
            insert_at(&mut meta, &path, value.to_owned()).expect("inserted");
        }
        assert_eq!(
            Value::Object(meta.clone()),
            serde_json::json!({"a": {"b": "c", "d": "e"}, "tags": ["x", "y"], "k": "v"})
        );
        let clash = bracket_path("metadata[k][z]").expect("a bracket field");
        assert!(insert_at(&mut meta, &clash, "w".into()).is_err());
        assert!(bracket_path("metadata").is_none());
        assert!(bracket_path("metadata[a]x").is_none());
        assert!(bracket_path("other[a]").is_none());
    }
}
