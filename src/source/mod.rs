//! Sources: where items come from. Every source has an identity ([`SourceId`]: a kind and a
//! canonical location), lists its items lazily into a bounded channel (a listing of millions
//! never sits in memory), and turns one item into an upload [`Body`] when the planner asks.
//! Planning and uploading see only [`Item`] and [`Body`], never which source it came from.

use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::error::Result;

pub mod bucket;
pub mod manifest;
pub mod ticket;
pub mod walk;
pub mod watch;

pub use ticket::Ticket;

/// What kind of store a source is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// A folder tree (migrated or watched: the same source).
    Dir,
    /// A manifest of URLs.
    Manifest,
    /// An S3-compatible bucket and prefix.
    Bucket,
    /// Direct creator uploads minted by `cfimg serve`.
    Drafts,
}

impl SourceKind {
    /// The name stored in the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Dir => "dir",
            SourceKind::Manifest => "manifest",
            SourceKind::Bucket => "bucket",
            SourceKind::Drafts => "drafts",
        }
    }

    /// The kind of a stored name.
    pub fn parse(s: &str) -> Option<SourceKind> {
        Some(match s {
            "dir" => SourceKind::Dir,
            "manifest" => SourceKind::Manifest,
            "bucket" => SourceKind::Bucket,
            "drafts" => SourceKind::Drafts,
            _ => return None,
        })
    }
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

/// What a source produces.
#[derive(Debug)]
pub enum Found {
    /// An item to plan.
    Item(Item),
    /// Something that could not be listed or read properly: recorded as rejected.
    Bad {
        /// Key to record it under.
        key: String,
        /// Why.
        reason: String,
    },
    /// An item that left the source and whose image is to go too (a watched folder's
    /// deleted file, when deletes are propagated and the pass is under the cap).
    Gone {
        /// Its key.
        key: String,
        /// Tells the source when the removal is recorded.
        ticket: Ticket,
    },
    /// Something deliberately passed over (a symlink not followed, a FIFO, a socket, a
    /// device): counted and recorded with its reason, never silently.
    Ignored {
        /// Key to record it under.
        key: String,
        /// Why.
        reason: String,
    },
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

/// Every kind of source, behind one interface.
#[derive(Debug)]
pub enum Source {
    /// A folder tree.
    Walk(walk::Walk),
    /// A manifest of URLs.
    Manifest(manifest::Manifest),
    /// An S3-compatible bucket and prefix.
    Bucket(bucket::Bucket),
    /// A folder kept in sync (`watch`): listed until the run stops.
    Watch(Arc<watch::Watch>),
}

impl Source {
    /// Its identity.
    pub fn id(&self) -> &SourceId {
        match self {
            Source::Walk(w) => w.id(),
            Source::Manifest(m) => m.id(),
            Source::Bucket(b) => b.id(),
            Source::Watch(w) => w.id(),
        }
    }

    /// Lists every item into `out` until done, `stop` is cancelled or the receiver is
    /// dropped. An error here (an unreadable manifest, a refused listing) ends the run.
    pub async fn list(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
    ) -> Result<()> {
        match &*self {
            Source::Bucket(b) => b.list(&out, &stop).await,
            Source::Watch(w) => w.run(&out, &stop).await,
            // The other listers block (a directory walk, a buffered file read): each runs
            // on a thread of the blocking pool and hands items over with `blocking_send`.
            _ => {
                let me = self.clone();
                run_blocking(move || match &*me {
                    Source::Walk(w) => w.list(&out, &stop),
                    Source::Manifest(m) => m.list(&out, &stop),
                    Source::Bucket(_) | Source::Watch(_) => Ok(()),
                })
                .await
            }
        }
    }

    /// The bytes (or URL) to upload for an item.
    pub async fn body(&self, item: &Item) -> Result<Body> {
        match (self, &item.locator) {
            (_, Locator::File(path)) => Ok(Body::file(path.clone())),
            (Source::Manifest(m), _) => m.body(item).await,
            (Source::Bucket(b), Locator::Object(key)) => b.body(item, key).await,
            (Source::Bucket(_), other) => Err(crate::error::Error::Invalid(format!(
                "a bucket source cannot read {}",
                other.describe()
            ))),
            (Source::Walk(_) | Source::Watch(_), other) => Err(crate::error::Error::Invalid(
                format!("a folder source cannot read {}", other.describe()),
            )),
        }
    }
}

/// Runs a blocking lister on its own thread of the blocking pool, turning a panic into an
/// error instead of a silently short listing.
async fn run_blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(crate::error::Error::Panicked(format!(
            "the source listing: {e}"
        ))),
    }
}
