//! How the emulator writes answers: the Cloudflare envelope, error items and edge pages.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::api::types::{Envelope, codes};

/// An API error: HTTP status plus one Cloudflare error item.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Cloudflare error code.
    pub code: u32,
    /// Message of the error item.
    pub message: String,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: u32, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with code 5400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    /// 404 with code 5404.
    pub fn image_not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "Image not found")
    }

    /// 404 with code 7003, for paths the service does not know.
    pub fn no_route() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            codes::NO_ROUTE,
            "No route for that URI",
        )
    }

    /// 500 for a local failure (disk), with a code the client treats as transient.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, 5500, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json(self.status, &Envelope::<()>::err(self.code, self.message))
    }
}

/// What a handler returns.
pub type Reply = Result<Response, ApiError>;

/// A JSON answer with the given status.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            bytes,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// A 200 success envelope around `result`.
pub fn ok<T: Serialize>(result: T) -> Reply {
    Ok(json(StatusCode::OK, &Envelope::ok(result)))
}

/// The authentication failure, byte for byte as it has been seen from the service
/// (no `messages`, no `result`), so clients are tested against the sparse form.
pub fn auth_error() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"success":false,"errors":[{"code":10000,"message":"Authentication error"}]}"#,
    )
        .into_response()
}

/// A missing or malformed `Authorization` header: 400 code 6003 with its error chain.
pub fn malformed_auth() -> Response {
    (
        StatusCode::BAD_REQUEST,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"success":false,"errors":[{"code":6003,"message":"Invalid request headers","error_chain":[{"code":6111,"message":"Invalid format for Authorization header"}]}],"messages":[],"result":null}"#,
    )
        .into_response()
}

/// The edge's rate-limit page, "Error 1015 - You are being rate limited": 429, text/html,
/// with `Retry-After` only when `retry_after` is given (the edge does not always send it).
pub fn edge_rate_limited(retry_after: Option<u64>) -> Response {
    let body = "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head>\n<title>Access denied | api.cloudflare.com used Cloudflare to restrict access</title>\n<meta charset=\"UTF-8\" />\n</head>\n<body>\n<div id=\"cf-wrapper\">\n<div id=\"cf-error-details\" class=\"cf-error-details-wrapper\">\n<h1><span class=\"cf-error-type\">Error</span> <span class=\"cf-error-code\">1015</span></h1>\n<h2 class=\"cf-subheadline\">You are being rate limited</h2>\n<p>The owner of this website (api.cloudflare.com) has banned you temporarily from accessing this website.</p>\n</div>\n</div>\n</body>\n</html>\n";
    let mut resp = (
        StatusCode::TOO_MANY_REQUESTS,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=UTF-8"),
        )],
        body,
    )
        .into_response();
    if let Some(secs) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// 403 code 9109: a read-only token asked for a change.
pub fn unauthorized_write() -> Response {
    json(
        StatusCode::FORBIDDEN,
        &Envelope::<()>::err(9109, "Unauthorized to access requested resource"),
    )
}

/// An HTML error page like the ones Cloudflare's edge serves for 5xx.
pub fn edge_html(status: StatusCode) -> Response {
    let line = format!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<html>\r\n<head><title>{line}</title></head>\r\n<body>\r\n<center><h1>{line}</h1></center>\r\n<hr><center>cloudflare</center>\r\n</body>\r\n</html>\r\n"
    );
    (
        status,
        [(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))],
        body,
    )
        .into_response()
}
