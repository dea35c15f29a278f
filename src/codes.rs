//! Cloudflare error codes that cfimg acts on. A leaf: `error` classifies by them, the API
//! client and the emulator speak them, and none of those need the other for it.

/// Bad request.
pub const BAD_REQUEST: u32 = 5400;
/// Account not authorised for Images.
pub const NOT_AUTHORISED: u32 = 5403;
/// Image not found.
pub const NOT_FOUND: u32 = 5404;
/// Upload timed out at Cloudflare.
pub const UPLOAD_TIMEOUT: u32 = 5408;
/// Resource already exists.
pub const ALREADY_EXISTS: u32 = 5409;
/// A custom id cannot be private.
pub const CUSTOM_ID_PRIVATE: u32 = 5410;
/// Invalid custom id.
pub const INVALID_ID: u32 = 5411;
/// Too large.
pub const TOO_LARGE: u32 = 5413;
/// Not sent as multipart.
pub const NOT_MULTIPART: u32 = 5415;
/// Animation too large.
pub const ANIMATION_TOO_LARGE: u32 = 5443;
/// The account reached a service limit (its image quota).
pub const QUOTA_REACHED: u32 = 5453;
/// Could not fetch the url.
pub const URL_FETCH_FAILED: u32 = 5454;
/// Unsupported image type.
pub const UNSUPPORTED_TYPE: u32 = 5455;
/// Too large (alternative code).
pub const TOO_LARGE_ALT: u32 = 7011;
/// No route.
pub const NO_ROUTE: u32 = 7003;
/// Malformed auth header.
pub const MALFORMED_AUTH: u32 = 6003;
/// Image could not be decoded.
pub const UNDECODABLE: u32 = 9422;
/// Authentication error.
pub const AUTH: u32 = 10000;
/// The token may not do this (e.g. a write with a read-only token); comes with 403.
pub const UNAUTHORIZED_RESOURCE: u32 = 9109;
/// Rate limited (current code).
pub const RATE_LIMITED: u32 = 971;
/// Rate limited (older codes).
pub const RATE_LIMITED_OLD: u32 = 10100;
/// Rate limited (older codes).
pub const RATE_LIMITED_OLD2: u32 = 10429;

/// True for the codes that mean "rate limited", under whatever HTTP status.
pub fn is_rate_limit(code: u32) -> bool {
    matches!(code, RATE_LIMITED | RATE_LIMITED_OLD | RATE_LIMITED_OLD2)
}
