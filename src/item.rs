//! The vocabulary every layer shares: a source's identity ([`SourceId`]), an [`Item`] to
//! consider, where its bytes are ([`Locator`]), what the uploader sends ([`Body`]) and the
//! drop-guard [`Ticket`]. A leaf: nothing here imports from the crate, so sources, the
//! planner, the uploader, the API client, stamps and the ledger all depend on it and not
//! on each other for it.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

/// Declares [`SourceKind`] from one line per kind (its doc, variant and name in the ledger),
/// so that a new kind of source is one line here.
macro_rules! source_kinds {
    ($($(#[doc = $doc:literal])* $kind:ident => $name:literal,)+) => {
        /// What kind of store a source is.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum SourceKind {
            $($(#[doc = $doc])* $kind,)+
        }

        impl SourceKind {
            /// Every kind, in declaration order.
            pub const ALL: &'static [SourceKind] = &[$(SourceKind::$kind,)+];

            /// The name stored in the ledger.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(SourceKind::$kind => $name,)+
                }
            }

            /// The kind of a stored name.
            pub fn parse(s: &str) -> Option<SourceKind> {
                match s {
                    $($name => Some(SourceKind::$kind),)+
                    _ => None,
                }
            }
        }
    };
}

source_kinds! {
    /// A folder tree (migrated or watched: the same source).
    Dir => "dir",
    /// A manifest of URLs.
    Manifest => "manifest",
    /// An S3-compatible bucket and prefix.
    Bucket => "bucket",
    /// Direct creator uploads minted by `cfimg serve`.
    Drafts => "drafts",
}

/// The identity of a source: its kind and canonical location (a folder's canonical absolute
/// path, a manifest's canonical path, `s3://bucket/prefix` at an endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SourceId {
    /// Its kind.
    pub kind: SourceKind,
    /// Its canonical location.
    pub location: String,
}

impl SourceId {
    /// A source of this kind at this location.
    pub fn new(kind: SourceKind, location: impl Into<String>) -> SourceId {
        SourceId {
            kind,
            location: location.into(),
        }
    }
}

impl std::fmt::Display for SourceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.kind.as_str(), self.location)
    }
}

/// Where an item's bytes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locator {
    /// A local file.
    File(PathBuf),
    /// A URL (http or https).
    Url(String),
    /// An object key in the source's bucket.
    Object(String),
}

impl Locator {
    /// The locator as a person reads it: the path, the URL, or the object key.
    pub fn describe(&self) -> String {
        match self {
            Locator::File(path) => format!("the file {}", path.display()),
            Locator::Url(url) => format!("the URL {url}"),
            Locator::Object(key) => format!("the object {key}"),
        }
    }
}

/// What tells cheaply, without reading the bytes, that an item has not changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fingerprint {
    /// A file's size and modification time (ns since the epoch).
    SizeMtime {
        /// Bytes.
        size: u64,
        /// Modification time, ns.
        mtime_ns: i64,
    },
    /// An object's ETag and size (an ETag of a multipart object is not a content hash: it
    /// only tells change).
    ETagSize {
        /// The ETag as listed, quotes included.
        etag: String,
        /// Bytes.
        size: u64,
    },
}

impl Fingerprint {
    /// The size it records.
    pub fn size(&self) -> u64 {
        match self {
            Fingerprint::SizeMtime { size, .. } | Fingerprint::ETagSize { size, .. } => *size,
        }
    }
}

/// Per-item settings a source may carry (a manifest row's columns); unset ones come from
/// the configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemOptions {
    /// The image id to use.
    pub id: Option<String>,
    /// Metadata for this image, merged over the configured metadata.
    pub metadata: Option<Map<String, Value>>,
    /// Upload as private.
    pub require_signed_urls: Option<bool>,
    /// The `creator` field.
    pub creator: Option<String>,
}

impl ItemOptions {
    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == ItemOptions::default()
    }

    /// A short digest of the settings, recorded so that a change is noticed; `None` when
    /// nothing is set.
    pub fn digest(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let all = serde_json::json!({
            "id": self.id,
            "metadata": self.metadata,
            "require_signed_urls": self.require_signed_urls,
            "creator": self.creator,
        });
        Some(hex::encode(
            &<sha2::Sha256 as sha2::Digest>::digest(all.to_string().as_bytes())[..16],
        ))
    }
}

/// One item to consider.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    /// Stable key of the item within its source: a `/`-separated relative path, a
    /// normalized URL, an object key.
    pub key: String,
    /// Where its bytes are.
    pub locator: Locator,
    /// The cheap change check, when the source has one (remote URLs do not).
    pub fingerprint: Option<Fingerprint>,
    /// Per-item settings.
    pub options: ItemOptions,
    /// Tells the source when the pipeline is done with the item (watched folders).
    pub ticket: Ticket,
}

impl Item {
    /// A local file with its size and modification time.
    pub fn file(key: String, path: PathBuf, size: u64, mtime_ns: i64) -> Item {
        Item {
            key,
            locator: Locator::File(path),
            fingerprint: Some(Fingerprint::SizeMtime { size, mtime_ns }),
            options: ItemOptions::default(),
            ticket: Ticket::default(),
        }
    }

    /// The size known before reading, if any.
    pub fn size(&self) -> Option<u64> {
        self.fingerprint.as_ref().map(Fingerprint::size)
    }

    /// The name the upload part carries (the image's `filename`): the key's last segment.
    pub fn filename(&self) -> &str {
        let key = self.key.split(['?', '#']).next().unwrap_or(&self.key);
        key.rsplit('/').find(|s| !s.is_empty()).unwrap_or(&self.key)
    }
}

/// What the uploader sends for an item.
#[derive(Debug, Clone)]
pub enum Body {
    /// Bytes in a local file, streamed: the source's own file or a downloaded copy (which
    /// is deleted when the last clone of the body is dropped).
    File {
        /// The file.
        path: PathBuf,
        /// Keeps a downloaded copy alive.
        spool: Option<Arc<tempfile::TempPath>>,
    },
    /// Cloudflare fetches this URL itself (the `url` form).
    Url(String),
}

impl Body {
    /// The source's own file.
    pub fn file(path: PathBuf) -> Body {
        Body::File { path, spool: None }
    }
}

// A ticket travels with an item through every stage and into the ledger writer's records.
// When the last holder drops it (after the record that ends the item is committed, or when
// a stage passes the item over) its source hears that the item is done. The watch source
// uses this to keep one item in one worker at a time, and to look at a file again once the
// pipeline has finished with it; sources that list once carry no ticket.

/// Held by everything that still works on one item.
#[derive(Clone, Default)]
pub struct Ticket(Option<Arc<Handback>>);

struct Handback {
    key: String,
    done: mpsc::UnboundedSender<String>,
}

impl Drop for Handback {
    fn drop(&mut self) {
        // The source may already be gone (the run is ending): nobody is left to tell.
        let _ = self.done.send(std::mem::take(&mut self.key));
    }
}

impl Ticket {
    /// A ticket that sends `key` to `done` when the item is finished.
    pub fn new(key: String, done: mpsc::UnboundedSender<String>) -> Ticket {
        Ticket(Some(Arc::new(Handback { key, done })))
    }

    /// Whether a source is waiting for this item.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_held() { "Ticket" } else { "-" })
    }
}

// A ticket says who waits, not what the item is: two items never differ by their tickets.
impl PartialEq for Ticket {
    fn eq(&self, _: &Ticket) -> bool {
        true
    }
}

impl Eq for Ticket {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_reads_back_from_its_ledger_name_and_no_two_share_one() {
        let names: std::collections::HashSet<_> =
            SourceKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), SourceKind::ALL.len());
        for kind in SourceKind::ALL {
            assert_eq!(SourceKind::parse(kind.as_str()), Some(*kind));
        }
        // The names already in ledgers on disk never change.
        assert_eq!(SourceKind::Dir.as_str(), "dir");
        assert_eq!(SourceKind::Bucket.as_str(), "bucket");
        assert_eq!(SourceKind::Manifest.as_str(), "manifest");
        assert_eq!(SourceKind::Drafts.as_str(), "drafts");
        assert_eq!(SourceKind::parse("gcs"), None);
    }

    #[test]
    fn the_key_comes_back_once_the_last_clone_is_dropped() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t = Ticket::new("a.png".into(), tx);
        let copy = t.clone();
        drop(t);
        assert!(rx.try_recv().is_err());
        drop(copy);
        assert_eq!(rx.try_recv().ok().as_deref(), Some("a.png"));
    }
}
