//! The stamp cfimg writes into every image's metadata: which source it came from and the
//! sha256 of its content. It is how a rerun recognises its own earlier uploads after a
//! crash, a 5xx-after-store or a 5409, without trusting anything but the server.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::types::Image;
use crate::rules::MAX_METADATA_BYTES;

/// Metadata key holding a hash of the source key.
pub const SOURCE_KEY: &str = "cfimg_src";
/// Metadata key holding the sha256 of the content.
pub const SHA256_KEY: &str = "cfimg_sha256";

/// Bytes the stamp adds to the metadata JSON at most (two keys, 32 + 64 hex chars).
const STAMP_BYTES: usize = 2 + SOURCE_KEY.len() + 3 + 32 + 3 + SHA256_KEY.len() + 3 + 64 + 2;

/// The stamp of one source version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// 128-bit hash of the source key, hex.
    pub source: String,
    /// sha256 of the content, hex.
    pub sha256: String,
}

impl Stamp {
    /// The stamp for a source key and its content hash.
    pub fn new(source_key: &str, sha256: &str) -> Stamp {
        Stamp {
            source: source_hash(source_key),
            sha256: sha256.to_string(),
        }
    }

    /// The metadata JSON text to upload: the user's metadata plus the stamp.
    pub fn metadata_json(&self, user: &Map<String, Value>) -> String {
        let mut all = user.clone();
        all.insert(SOURCE_KEY.into(), Value::String(self.source.clone()));
        all.insert(SHA256_KEY.into(), Value::String(self.sha256.clone()));
        Value::Object(all).to_string()
    }

    /// What an image on the server says about its own origin.
    pub fn of(image: &Image) -> Option<Stamp> {
        let meta = image.meta.as_ref()?;
        Some(Stamp {
            source: meta.get(SOURCE_KEY)?.as_str()?.to_string(),
            sha256: meta.get(SHA256_KEY)?.as_str()?.to_string(),
        })
    }
}

/// The 128-bit hex hash of a source key used in stamps.
pub fn source_hash(source_key: &str) -> String {
    let digest = Sha256::digest(source_key.as_bytes());
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that user metadata leaves room for the stamp and does not use its keys.
pub fn check_user_metadata(user: &Map<String, Value>) -> Result<(), String> {
    if user.contains_key(SOURCE_KEY) || user.contains_key(SHA256_KEY) {
        return Err(format!(
            "the keys {SOURCE_KEY} and {SHA256_KEY} are cfimg's own; rename yours"
        ));
    }
    let len = if user.is_empty() {
        0
    } else {
        Value::Object(user.clone()).to_string().len()
    };
    if len + STAMP_BYTES > MAX_METADATA_BYTES {
        return Err(format!(
            "{len} bytes of JSON; with cfimg's {STAMP_BYTES}-byte stamp it must stay within \
             Cloudflare's {MAX_METADATA_BYTES}: keep it under {} bytes",
            MAX_METADATA_BYTES - STAMP_BYTES
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamp_round_trips_through_image_metadata_within_the_limit() {
        let mut user = Map::new();
        user.insert("team".into(), Value::String("x".repeat(850)));
        assert!(check_user_metadata(&user).is_ok());
        let stamp = Stamp::new("photos/cat.jpg", &"ab".repeat(32));
        let json = stamp.metadata_json(&user);
        assert!(json.len() <= MAX_METADATA_BYTES, "{}", json.len());
        let meta: Map<String, Value> = serde_json::from_str(&json).unwrap();
        let image = Image {
            id: "x".into(),
            filename: None,
            meta: Some(meta),
            require_signed_urls: false,
            uploaded: None,
            variants: vec![],
            creator: None,
            draft: None,
        };
        assert_eq!(Stamp::of(&image), Some(stamp));
    }

    #[test]
    fn metadata_that_leaves_no_room_is_refused() {
        let mut user = Map::new();
        user.insert("team".into(), Value::String("x".repeat(1000)));
        assert!(
            check_user_metadata(&user)
                .unwrap_err()
                .contains("keep it under")
        );
        let mut clash = Map::new();
        clash.insert(SHA256_KEY.into(), Value::Null);
        assert!(check_user_metadata(&clash).is_err());
    }

    #[test]
    fn source_hashes_differ_per_key() {
        assert_eq!(source_hash("a").len(), 32);
        assert_ne!(source_hash("a"), source_hash("b"));
    }
}
