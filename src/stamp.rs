//! The stamp cfimg writes into every image's metadata: which source item it came from (a
//! hash of the source's identity and the item's key), which source alone (a shorter hash of
//! its identity, so that one filtered listing finds a source's images) and the sha256 of
//! its content. It is how a rerun recognises its own earlier uploads after a crash, a
//! 5xx-after-store or a 5409, and tells an older version of the same item from another
//! source's image, without trusting anything but the server.
//!
//! Images uploaded before the source field existed carry only the other two: everything
//! that matches items still works on them; only the source-wide look-up misses them.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::api::types::Image;
use crate::item::SourceId;
use crate::rules::MAX_METADATA_BYTES;

/// Metadata key holding a hash of the source and the item's key.
pub const SOURCE_KEY: &str = "cfimg_src";
/// Metadata key holding the sha256 of the content.
pub const SHA256_KEY: &str = "cfimg_sha256";
/// Metadata key holding a hash of the source alone ([`set_hash`]).
pub const SET_KEY: &str = "cfimg_set";

/// Hex digits of [`set_hash`]: 64 bits, enough to tell an account's sources apart.
const SET_HEX: usize = 16;

/// Bytes the stamp adds to the metadata JSON at most: `{"k":"v","k":"v","k":"v"}` with
/// 32, 16 and 64 hex chars.
pub const STAMP_BYTES: usize = 2
    + SOURCE_KEY.len()
    + 3
    + 32
    + 3
    + SET_KEY.len()
    + 3
    + SET_HEX
    + 3
    + SHA256_KEY.len()
    + 3
    + 64
    + 2;

/// The stamp of one version of a source item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// 128-bit hash of the source and the key, hex ([`source_hash`]).
    pub source: String,
    /// 64-bit hash of the source alone, hex ([`set_hash`]); `None` on images uploaded by
    /// versions before it, and on stamps rebuilt from a ledger row for a look-up.
    pub set: Option<String>,
    /// sha256 of the content, hex; `None` when cfimg never holds the bytes (a URL that
    /// Cloudflare fetches itself).
    pub sha256: Option<String>,
}

impl Stamp {
    /// The stamp for an item of a source with this content hash.
    pub fn new(source: &SourceId, key: &str, sha256: Option<&str>) -> Stamp {
        Stamp {
            source: source_hash(source, key),
            set: Some(set_hash(&source.to_string())),
            sha256: sha256.map(str::to_string),
        }
    }

    /// The metadata JSON text to upload: the user's metadata plus the stamp.
    pub fn metadata_json(&self, user: &Map<String, Value>) -> String {
        let mut all = user.clone();
        all.insert(SOURCE_KEY.into(), Value::String(self.source.clone()));
        match &self.set {
            Some(set) => all.insert(SET_KEY.into(), Value::String(set.clone())),
            None => all.remove(SET_KEY),
        };
        match &self.sha256 {
            Some(sha) => all.insert(SHA256_KEY.into(), Value::String(sha.clone())),
            None => all.remove(SHA256_KEY),
        };
        Value::Object(all).to_string()
    }

    /// What an image on the server says about its own origin.
    pub fn of(image: &Image) -> Option<Stamp> {
        let meta = image.meta.as_ref()?;
        Some(Stamp {
            source: meta.get(SOURCE_KEY)?.as_str()?.to_string(),
            set: meta
                .get(SET_KEY)
                .and_then(Value::as_str)
                .map(str::to_string),
            sha256: meta
                .get(SHA256_KEY)
                .and_then(Value::as_str)
                .map(str::to_string),
        })
    }

    /// Whether an image's stamp says it holds this very version (the source field is
    /// implied by the item's hash, and absent from older images).
    pub fn same_version(&self, other: &Stamp) -> bool {
        self.source == other.source && self.sha256 == other.sha256
    }
}

/// The 128-bit hex hash of a source item used in stamps: the source's identity and the key,
/// so that two folders with the same relative paths never mistake each other's images.
pub fn source_hash(source: &SourceId, key: &str) -> String {
    let mut h = Sha256::new();
    h.update(source.to_string().as_bytes());
    h.update(b"\n");
    h.update(key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// The hex hash of a source alone, as [`SourceId`]'s text (`dir:/srv/a`, as the ledger
/// records it) gives it: every image of one source carries it, whatever its key.
pub fn set_hash(source: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"cfimg source\n");
    h.update(source.as_bytes());
    hex::encode(&h.finalize()[..SET_HEX / 2])
}

/// The stamp hash cfimg 0.1 wrote (schema v1 ledgers): the key alone.
pub fn source_hash_v1(key: &str) -> String {
    hex::encode(&Sha256::digest(key.as_bytes())[..16])
}

/// Checks that user metadata leaves room for the stamp and does not use its keys.
pub fn check_user_metadata(user: &Map<String, Value>) -> Result<(), String> {
    if [SOURCE_KEY, SET_KEY, SHA256_KEY]
        .iter()
        .any(|k| user.contains_key(*k))
    {
        return Err(format!(
            "the keys {SOURCE_KEY}, {SET_KEY} and {SHA256_KEY} are cfimg's own; rename yours"
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
        // The largest user metadata the check lets through still fits with the stamp.
        let room = MAX_METADATA_BYTES - STAMP_BYTES - r#"{"team":""}"#.len();
        user.insert("team".into(), Value::String("x".repeat(room)));
        assert!(check_user_metadata(&user).is_ok());
        let src = SourceId::new(crate::item::SourceKind::Dir, "/srv/a");
        let stamp = Stamp::new(&src, "photos/cat.jpg", Some(&"ab".repeat(32)));
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
        assert_eq!(Stamp::of(&image), Some(stamp.clone()));
        assert_eq!(
            stamp.set.as_deref(),
            Some(set_hash("dir:/srv/a").as_str()),
            "the source field is the hash of the source's text"
        );
    }

    #[test]
    fn images_stamped_before_the_source_field_still_resolve() {
        let src = SourceId::new(crate::item::SourceKind::Dir, "/srv/a");
        let stamp = Stamp::new(&src, "a.jpg", Some(&"cd".repeat(32)));
        let mut meta = Map::new();
        meta.insert(SOURCE_KEY.into(), Value::String(stamp.source.clone()));
        meta.insert(SHA256_KEY.into(), Value::String("cd".repeat(32)));
        let image = Image {
            id: "old".into(),
            filename: None,
            meta: Some(meta),
            require_signed_urls: false,
            uploaded: None,
            variants: vec![],
            creator: None,
            draft: None,
        };
        let old = Stamp::of(&image).unwrap();
        assert_eq!(old.set, None);
        assert!(stamp.same_version(&old));
        assert_ne!(set_hash("dir:/srv/a"), set_hash("dir:/srv/b"));
        assert_eq!(set_hash("dir:/srv/a").len(), SET_HEX);
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
    fn source_hashes_differ_per_source_and_key() {
        let a = SourceId::new(crate::item::SourceKind::Dir, "/srv/a");
        let b = SourceId::new(crate::item::SourceKind::Dir, "/srv/b");
        assert_eq!(source_hash(&a, "x").len(), 32);
        assert_ne!(source_hash(&a, "x"), source_hash(&a, "y"));
        assert_ne!(source_hash(&a, "x"), source_hash(&b, "x"));
        assert_ne!(source_hash(&a, "x"), source_hash_v1("x"));
        assert_eq!(source_hash_v1("a").len(), 32);
    }
}
