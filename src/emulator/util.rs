//! Encoding helpers the emulator needs, as thin wrappers over the `hex`, `base64`, `hmac`
//! and `percent-encoding` crates (so every handler spells them the same way).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    hex::encode(bytes)
}

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// True when `sig` is the hex (either case) HMAC-SHA256 (RFC 2104) of `message` under `key`;
/// compared in constant time.
pub fn hmac_sha256_verify(key: &[u8], message: &[u8], sig: &str) -> bool {
    let Ok(sig) = hex::decode(sig) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.verify_slice(&sig).is_ok()
}

/// URL-safe base64 without padding.
pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`, for query strings).
/// `None` when the result is not UTF-8; malformed escapes are kept literally, as browsers do.
pub fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let spaced;
    let s = if plus_is_space && s.contains('+') {
        spaced = s.replace('+', " ");
        spaced.as_str()
    } else {
        s
    };
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// What [`encode_path`] escapes: everything outside the unreserved and sub-delimiter sets,
/// except `/`, `:` and `@`, which path segments may hold.
const PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b':')
    .remove(b'@');

/// Percent-encodes an image id for use as URL path segments: `/` stays a separator,
/// everything outside the unreserved and sub-delimiter sets is escaped (so `%` becomes `%25`).
pub fn encode_path(id: &str) -> String {
    utf8_percent_encode(id, PATH).to_string()
}

/// Splits a raw query string into decoded `(key, value)` pairs.
pub fn parse_query(query: Option<&str>) -> Vec<(String, String)> {
    let Some(q) = query else { return Vec::new() };
    q.split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Some((percent_decode(k, true)?, percent_decode(v, true)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let want = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            want
        ));
        assert!(hmac_sha256_verify(
            b"Jefe",
            b"what do ya want for nothing?",
            &want.to_ascii_uppercase()
        ));
        assert!(!hmac_sha256_verify(b"Jefe", b"what do ya want?", want));
        assert!(!hmac_sha256_verify(b"Jefe", b"x", "not hex"));
    }

    #[test]
    fn base64url_lengths_and_alphabet() {
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0u8; 16]).len(), 22);
    }

    #[test]
    fn percent_round_trip() {
        assert_eq!(
            percent_decode("a%2Fb%2fc.jpg", false).as_deref(),
            Some("a/b/c.jpg")
        );
        assert_eq!(percent_decode("a+b%", true).as_deref(), Some("a b%"));
        assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
        assert_eq!(percent_decode("%2B+%zz", true).as_deref(), Some("+ %zz"));
        assert_eq!(percent_decode("%ff", false), None);
        let id = "a b/100%/ü?.png";
        assert_eq!(percent_decode(&encode_path(id), false).as_deref(), Some(id));
        assert_eq!(encode_path("x%y"), "x%25y");
        assert_eq!(encode_path("a b/ü:@!"), "a%20b/%C3%BC:@!");
    }
}
