//! How `cfimg serve` answers errors: a status and `{"error": {"field", "message"}}`, so
//! that an app can show the user which field to fix; 429s carry `Retry-After`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::direct::FieldError;

/// An error answer of the service.
#[derive(Debug, Clone)]
pub struct Fail {
    /// HTTP status.
    pub status: StatusCode,
    /// The request field at fault (`authorization`, `body`, `id`, `expiry`, ...).
    pub field: &'static str,
    /// What is wrong and what to do.
    pub message: String,
    /// Seconds to wait, for 429s.
    pub retry_after: Option<u64>,
}

impl Fail {
    /// An error naming a field.
    pub fn new(status: StatusCode, field: &'static str, message: impl Into<String>) -> Fail {
        Fail {
            status,
            field,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 400 naming a field.
    pub fn bad(field: &'static str, message: impl Into<String>) -> Fail {
        Fail::new(StatusCode::BAD_REQUEST, field, message)
    }

    /// 429 with `Retry-After` (whole seconds, at least 1).
    pub fn too_many(
        field: &'static str,
        message: impl Into<String>,
        wait: std::time::Duration,
    ) -> Fail {
        Fail {
            retry_after: Some(wait.as_secs_f64().ceil().max(1.0) as u64),
            ..Fail::new(StatusCode::TOO_MANY_REQUESTS, field, message)
        }
    }
}

impl From<FieldError> for Fail {
    fn from(e: FieldError) -> Fail {
        Fail::bad(e.field, e.message)
    }
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "field": self.field, "message": self.message } });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}
