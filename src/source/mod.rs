//! Sources: where items come from. Every source has an identity ([`SourceId`]: a kind and a
//! canonical location), lists its items lazily into a bounded channel (a listing of millions
//! never sits in memory), and turns one item into an upload [`Body`] when the planner asks.
//! Planning and uploading see only [`Item`] and [`Body`], never which source it came from.
//!
//! - `mod.rs`: [`Source`] (one arm per source), [`Source::open`] from a [`Spec`], what a
//!   listing yields ([`Found`]), and how the quota check may list a source again ([`Recount`])
//! - `walk.rs`: a folder tree, and the `[walk]` settings
//! - `manifest.rs`: URL manifests (text, CSV, JSON Lines) and their downloads, and `[manifest]`
//! - `bucket.rs`: a bucket and prefix (S3 and S3-compatible, GCS, Azure Blob Storage), and `[bucket]`
//! - `azure_sas.rs`: the signed read URL of an Azure blob (presign mode)
//! - `gcs.rs`: Google Cloud Storage's JSON API, which lists and reads a `gs://` bucket
//! - `watch.rs`: a folder kept in sync (`watch`), the ledger reads it needs, and `[watch]`

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::download::Bounds;
use crate::error::Result;
use crate::item::{Body, Item, Locator, SourceId, Ticket};

pub mod azure_sas;
pub mod bucket;
pub mod gcs;
pub mod manifest;
pub mod walk;
pub mod watch;

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

/// Every kind of source, behind one interface. Each one, in its own file, has the same four
/// methods ([`Source`]'s own call them through `each!`): `id`, `run` (lists into the
/// channel until done or stopped), `body` (an item's bytes or URL) and `recount` (how the
/// quota check may list it again); and [`Source::open`] is the one place that builds them.
#[derive(Debug)]
pub enum Source {
    /// A folder tree.
    Walk(Arc<walk::Walk>),
    /// A manifest of URLs.
    Manifest(Arc<manifest::Manifest>),
    /// A bucket and prefix (S3, GCS, Azure).
    Bucket(Arc<bucket::Bucket>),
    /// A folder kept in sync (`watch`): listed until the run stops.
    Watch(Arc<watch::Watch>),
}

/// Calls the same method on whichever source `$source` is: a new source adds one arm here.
macro_rules! each {
    ($source:expr, $s:ident => $call:expr) => {
        match $source {
            Source::Walk($s) => $call,
            Source::Manifest($s) => $call,
            Source::Bucket($s) => $call,
            Source::Watch($s) => $call,
        }
    };
}

/// Which source to open, as the command line names it.
#[derive(Debug)]
pub enum Spec {
    /// A folder, or a bucket URL (`s3://`, `gs://`, `az://`): `migrate DIR`, `ledger rebuild --source`.
    Location(PathBuf),
    /// A manifest of URLs (`-` reads stdin), in this format (else told by its name).
    Manifest(PathBuf, Option<manifest::ManifestFormat>),
    /// A folder kept in sync (`watch DIR`).
    Watched {
        /// The folder.
        dir: PathBuf,
        /// Its live settings: a reload sends new ones.
        settings: tokio::sync::watch::Receiver<watch::WatchConfig>,
        /// The ledger's reads it makes (failed items due, recorded keys, counts).
        ledger: Arc<dyn watch::LedgerView>,
        /// Its status, which the command shares with the service manager and the metrics.
        status: Arc<watch::WatchStatus>,
    },
}

/// What opening a source takes from the checked settings (`Config::source_settings`).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Folder-walk settings.
    pub walk: walk::WalkConfig,
    /// Bucket settings and credentials.
    pub bucket: bucket::BucketConfig,
    /// How the bytes of URL items reach Cloudflare.
    pub url_mode: manifest::UrlMode,
    /// Time limits of downloads.
    pub download: Bounds,
    /// How a manifest URL's download is tried again within the run (local URL mode);
    /// `None`: once, and the next run tries again. The command sets it (see
    /// [`manifest::Retrier`]).
    pub fetch_retry: Option<Arc<dyn manifest::Retrier>>,
}

/// How the pre-flight quota check may list a source once more before the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recount {
    /// Cheap to list again (a folder walk, a file read): counted, to the end if need be.
    Cheap,
    /// Costly to list (a bucket of millions): counted only when the account is already
    /// full, and then only until past the room.
    Costly,
    /// Cannot be read twice (a manifest on stdin): not counted.
    Never,
}

impl Source {
    /// Opens the source `spec` names: checks it and prepares its client; nothing is listed.
    pub fn open(spec: Spec, settings: &Settings) -> Result<Source> {
        Ok(match spec {
            Spec::Location(dir) => match dir.to_str().filter(|d| bucket::claims(d)) {
                Some(url) => Source::Bucket(Arc::new(bucket::Bucket::new(
                    url,
                    &settings.bucket,
                    settings.download,
                )?)),
                None => Source::Walk(Arc::new(walk::Walk::new(&dir, &settings.walk)?)),
            },
            Spec::Manifest(file, format) => Source::Manifest(Arc::new(manifest::Manifest::new(
                &file,
                format,
                settings.url_mode,
                settings.fetch_retry.clone(),
                settings.download,
            )?)),
            Spec::Watched {
                dir,
                settings: live,
                ledger,
                status,
            } => {
                // Events name absolute paths: the walk's root must be the folder's canonical path.
                let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
                let walk = walk::Walk::new(&dir, &settings.walk)?;
                Source::Watch(Arc::new(watch::Watch::new(walk, live, ledger, status)))
            }
        })
    }

    /// Its identity.
    pub fn id(&self) -> &SourceId {
        each!(self, s => s.id())
    }

    /// Lists every item into `out` until done, `stop` is cancelled or the receiver is
    /// dropped. An error here (an unreadable manifest, a refused listing) ends the run.
    pub async fn list(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
    ) -> Result<()> {
        each!(&*self, s => s.clone().run(out, stop).await)
    }

    /// The bytes (or URL) to upload for an item.
    pub async fn body(&self, item: &Item) -> Result<Body> {
        if let Locator::File(path) = &item.locator {
            return Ok(Body::file(path.clone()));
        }
        each!(self, s => s.body(item).await)
    }

    /// How the pre-flight quota check may list it again.
    pub fn recount(&self) -> Recount {
        each!(self, s => s.recount())
    }
}

/// Runs a blocking lister (a directory walk, a buffered file read, which hand items over
/// with `blocking_send`) on its own thread of the blocking pool, turning a panic into an
/// error instead of a silently short listing.
async fn run_blocking(f: impl FnOnce() -> Result<()> + Send + 'static) -> Result<()> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(crate::error::Error::Panicked(format!(
            "the source listing: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::SourceKind;

    fn settings() -> Settings {
        Settings {
            walk: walk::WalkConfig::default(),
            bucket: bucket::BucketConfig {
                endpoint_url: Some("http://127.0.0.1:9/".parse().unwrap()),
                access_key_id: Some("AKIDOPENTEST".into()),
                secret_access_key: Some(crate::secret::Secret::new("open-test-secret")),
                ..bucket::BucketConfig::default()
            },
            url_mode: manifest::UrlMode::Remote,
            download: Bounds::default(),
            fetch_retry: None,
        }
    }

    /// The quota check lists a folder or a file again, a bucket only when the account is
    /// full, and stdin never: each source says so itself.
    #[test]
    fn open_picks_the_source_and_each_says_how_it_may_be_listed_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("urls.txt");
        std::fs::write(&file, "https://example.com/a.jpg\n").unwrap();
        let open = |spec| Source::open(spec, &settings()).unwrap();

        let folder = open(Spec::Location(dir.path().to_path_buf()));
        assert_eq!(folder.id().kind, SourceKind::Dir);
        assert_eq!(folder.recount(), Recount::Cheap);

        let bucket = open(Spec::Location("s3://photos/2019".into()));
        assert_eq!(bucket.id().kind, SourceKind::Bucket);
        assert_eq!(bucket.recount(), Recount::Costly);

        let manifest = open(Spec::Manifest(file, None));
        assert_eq!(manifest.id().kind, SourceKind::Manifest);
        assert_eq!(manifest.recount(), Recount::Cheap);

        let stdin = open(Spec::Manifest("-".into(), None));
        assert_eq!(stdin.id().location, "stdin");
        assert_eq!(stdin.recount(), Recount::Never);

        let (_tx, live) = tokio::sync::watch::channel(crate::source::watch::validate_watch(
            Default::default(),
            &mut Vec::new(),
        ));
        #[derive(Debug)]
        struct NoLedger;
        impl watch::LedgerView for NoLedger {
            fn open(&self) -> Option<Box<dyn watch::LedgerReads>> {
                None
            }
        }
        let watched = open(Spec::Watched {
            dir: dir.path().to_path_buf(),
            settings: live,
            ledger: Arc::new(NoLedger),
            status: Arc::default(),
        });
        // The same identity as the folder migrated: one ledger history for both.
        assert_eq!(watched.id(), folder.id());
    }
}
