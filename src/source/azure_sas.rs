//! A read-only service SAS for one blob: the signed URL Cloudflare fetches in presign mode.
//!
//! Signed here rather than by `object_store` (0.12.5), whose signer puts the blob's
//! percent-encoded path into the string to sign: Azure requires the decoded name, so every
//! key with a space, a `%` or a non-ASCII character got a URL that Azure (and Azurite)
//! refuse with 403. The string to sign is Azure's "service SAS" of version 2020-12-06 and
//! later (<https://learn.microsoft.com/rest/api/storageservices/create-service-sas>).

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;
use sha2::Sha256;

/// The service version signed for.
const VERSION: &str = "2023-11-03";

/// Characters of a blob name left as they are in its URL path (`/` separates its segments).
const BLOB_PATH: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why a SAS could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign a URL for the blob: {0}")]
pub struct SasError(String);

/// A URL that reads blob `name` of `container` until `ttl` from now, signed with the
/// account key (base64, as the portal shows it). `endpoint` is the account's blob endpoint
/// (`https://ACCOUNT.blob.core.windows.net`, or Azurite's `http://HOST:PORT/ACCOUNT`).
pub fn blob_read_url(
    endpoint: &str,
    account: &str,
    key: &str,
    container: &str,
    name: &str,
    ttl: Duration,
) -> Result<Url, SasError> {
    let key = STANDARD
        .decode(key.trim())
        .map_err(|_| SasError("the account key is not base64".into()))?;
    let start = chrono::Utc::now() - chrono::Duration::minutes(5);
    let ttl = chrono::Duration::from_std(ttl).map_err(|e| SasError(e.to_string()))?;
    let expiry = start + chrono::Duration::minutes(5) + ttl;
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let (st, se) = (fmt(start), fmt(expiry));
    // The decoded name, whatever the URL's path looks like.
    let resource = format!("/blob/{account}/{container}/{name}");
    let to_sign = [
        "r",
        &st,
        &se,
        &resource,
        "",
        "",
        "https,http",
        VERSION,
        "b",
        "",
        "",
        "",
        "",
        "",
        "",
        "",
    ]
    .join("\n");
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|e| SasError(e.to_string()))?;
    mac.update(to_sign.as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    let mut url = Url::parse(&format!(
        "{}/{container}/{}",
        endpoint.trim_end_matches('/'),
        utf8_percent_encode(name, BLOB_PATH)
    ))
    .map_err(|e| SasError(e.to_string()))?;
    url.query_pairs_mut()
        .append_pair("sv", VERSION)
        .append_pair("spr", "https,http")
        .append_pair("st", &st)
        .append_pair("se", &se)
        .append_pair("sr", "b")
        .append_pair("sp", "r")
        .append_pair("sig", &sig);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_blob_encoded_and_carries_a_read_only_signature() {
        let url = blob_read_url(
            "https://acct.blob.core.windows.net/",
            "acct",
            "a2V5",
            "photos",
            "sub dir/ü+1.png",
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(url.path(), "/photos/sub%20dir/%C3%BC%2B1.png");
        let q: std::collections::BTreeMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["sp"], "r");
        assert_eq!(q["sr"], "b");
        assert!(!q["sig"].is_empty());
        assert!(blob_read_url("https://a", "a", "not base64!", "c", "n", Duration::ZERO).is_err());
    }
}
