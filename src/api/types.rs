//! Wire types of the Cloudflare Images API, shared by the client and the emulator.
//!
//! These follow `shared/API.md`: the response key of image metadata is `meta`, error
//! items may carry extra fields, and `messages`/`result` may be missing on errors.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The envelope around every JSON answer of the API.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Whether the call succeeded.
    #[serde(default)]
    pub success: bool,
    /// Error items; empty on success.
    #[serde(default)]
    pub errors: Vec<ApiErrorItem>,
    /// Informational messages.
    #[serde(default)]
    pub messages: Vec<Value>,
    /// The payload; absent or null on most errors.
    #[serde(default = "none")]
    pub result: Option<T>,
    /// Paging information on some list calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_info: Option<Value>,
}

fn none<T>() -> Option<T> {
    None
}

impl<T> Envelope<T> {
    /// A successful envelope around `result`.
    pub fn ok(result: T) -> Self {
        Envelope {
            success: true,
            errors: Vec::new(),
            messages: Vec::new(),
            result: Some(result),
            result_info: None,
        }
    }

    /// A failed envelope with one error item.
    pub fn err(code: u32, message: impl Into<String>) -> Self {
        Envelope {
            success: false,
            errors: vec![ApiErrorItem {
                code,
                message: message.into(),
                extra: Map::new(),
            }],
            messages: Vec::new(),
            result: None,
            result_info: None,
        }
    }
}

/// One item of an envelope's `errors` array.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiErrorItem {
    /// Cloudflare's numeric error code (5409, 10000, 971, ...).
    #[serde(default)]
    pub code: u32,
    /// Human-readable message.
    #[serde(default)]
    pub message: String,
    /// `documentation_url`, `source`, `error_chain` and anything else the server adds.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// An image as the API returns it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// Image id (custom or Cloudflare-assigned).
    pub id: String,
    /// Original file name, or the URL's last segment for url uploads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    /// User metadata (the key on the wire is `meta`, not `metadata`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Map<String, Value>>,
    /// Whether delivery needs a signed URL.
    #[serde(rename = "requireSignedURLs", default)]
    pub require_signed_urls: bool,
    /// Upload time, RFC 3339.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uploaded: Option<String>,
    /// Delivery URLs, one per variant.
    #[serde(default)]
    pub variants: Vec<String>,
    /// The creator tag, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creator: Option<String>,
    /// Present and true only for a direct-upload record whose file has not arrived yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<bool>,
}

/// `result` of `GET /v1` (deprecated list).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageList {
    /// One page of images.
    pub images: Vec<Image>,
}

/// `result` of `GET /v2`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ImageListV2 {
    /// One page of images.
    pub images: Vec<Image>,
    /// Token for the next page; null on the last page.
    #[serde(default)]
    pub continuation_token: Option<String>,
}

/// `result` of `GET /v1/stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AccountStats {
    /// Image counts.
    pub count: ImageCount,
}

/// Current and allowed image counts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ImageCount {
    /// Images stored now.
    pub current: u64,
    /// Images the account may store.
    pub allowed: u64,
}

/// `result` of `POST /v2/direct_upload`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DirectUpload {
    /// The id the image will have.
    pub id: String,
    /// One-time URL the creator POSTs the file to.
    #[serde(rename = "uploadURL")]
    pub upload_url: String,
}

/// `result` of `GET /v1/batch_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BatchToken {
    /// The batch token (a secret).
    pub token: String,
    /// Expiry, RFC 3339 with nanoseconds.
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
}

/// `result` of `GET /v1/batch_token` as the client reads it: the token is a [`Secret`]
/// from the moment it is parsed.
#[derive(Debug, Clone, Deserialize)]
pub struct BatchGrant {
    /// The batch token.
    pub token: crate::secret::Secret,
    /// Expiry, RFC 3339.
    #[serde(rename = "expiresAt")]
    pub expires_at: String,
}

/// A variant definition.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Variant {
    /// Variant name, e.g. `public`.
    pub id: String,
    /// Resizing options.
    pub options: VariantOptions,
    /// Whether this variant is always public.
    #[serde(
        rename = "neverRequireSignedURLs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub never_require_signed_urls: Option<bool>,
}

/// Resizing options of a variant.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VariantOptions {
    /// `scale-down`, `contain`, `cover`, `crop` or `pad`.
    pub fit: String,
    /// `keep`, `copyright` or `none`.
    pub metadata: String,
    /// Width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    /// Height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
}

/// `result` of the single-variant calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantResult {
    /// The variant.
    pub variant: Variant,
}

/// `result` of `GET /v1/variants`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VariantList {
    /// Variants by name.
    pub variants: Map<String, Value>,
}

/// A signing key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SigningKey {
    /// Key name.
    pub name: String,
    /// Key value (a secret).
    pub value: String,
}

/// `result` of the signing-key calls.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKeys {
    /// All keys of the account.
    pub keys: Vec<SigningKey>,
}

// The codes live in `crate::codes` (a leaf, so that `error` need not import `api`, issue 19);
// named here too for the client and the emulator that reach them as `api::types::codes`.
pub use crate::codes;
