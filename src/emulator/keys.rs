//! Signing keys and the account's image config (flexible variants).

use axum::extract::Request;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::app::App;
use super::reply::{ApiError, Reply, ok};
use super::store::new_key_value;
use crate::api::types::{SigningKey, SigningKeys, codes};

fn io(e: std::io::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

/// `GET /v1/keys`.
pub fn list(app: &App) -> Reply {
    let keys = app.store.lock().keys.clone();
    ok(SigningKeys { keys })
}

/// `PUT /v1/keys/{name}`: creates the key, or rotates it to a new value if it exists.
pub fn put(app: &App, name: &str) -> Reply {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::bad_request(
            "Bad request: a key name is 1 to 64 letters, digits, '-' or '_'",
        ));
    }
    let mut st = app.store.lock();
    let mut keys: Vec<SigningKey> = st.keys.iter().filter(|k| k.name != name).cloned().collect();
    keys.push(SigningKey {
        name: name.to_owned(),
        value: new_key_value(),
    });
    app.store.set_keys(&mut st, keys.clone()).map_err(io)?;
    ok(SigningKeys { keys })
}

/// `DELETE /v1/keys/{name}`; the `default` key cannot be deleted.
pub fn delete(app: &App, name: &str) -> Reply {
    if name == "default" {
        return Err(ApiError::bad_request(
            "Bad request: the default key cannot be deleted",
        ));
    }
    let mut st = app.store.lock();
    if !st.keys.iter().any(|k| k.name == name) {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "Key not found",
        ));
    }
    let keys: Vec<SigningKey> = st.keys.iter().filter(|k| k.name != name).cloned().collect();
    app.store.set_keys(&mut st, keys.clone()).map_err(io)?;
    ok(SigningKeys { keys })
}

#[derive(Deserialize)]
struct ConfigBody {
    flexible_variants: Option<bool>,
}

/// `GET /v1/config`.
pub fn get_config(app: &App) -> Reply {
    ok(json!({ "flexible_variants": app.store.lock().flexible_variants }))
}

/// `PATCH /v1/config`: echoes the setting (the real answer's shape is undocumented).
pub async fn patch_config(app: &App, req: Request) -> Reply {
    let body = axum::body::to_bytes(req.into_body(), 64 * 1024)
        .await
        .map_err(|e| ApiError::bad_request(format!("Bad request: {e}")))?;
    let body: ConfigBody = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Bad request: invalid JSON body: {e}")))?;
    let mut st = app.store.lock();
    if let Some(on) = body.flexible_variants {
        app.store.set_flexible(&mut st, on).map_err(io)?;
    }
    ok(json!({ "flexible_variants": st.flexible_variants }))
}
