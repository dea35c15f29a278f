//! `cfimg verify --deep`: the account holds the right pictures. Stamps prove what cfimg
//! sent; this downloads what is stored (`GET v1/{id}/blob`, through the account's limiter)
//! for all or a sample of the mapped images, reads each one's source again from its origin
//! (the folder's file, the bucket's object, the manifest's URL: the sources' own `body`
//! readers) and compares them: equal sha256 is [`Verdict::Ok`]; else the two are looked at
//! as pictures (`likeness`).
//!
//! Bounded: the ledger's rows are read by a thread that hands the chosen ones over a small
//! channel (a sample of N holds N rows; all rows are streamed, never collected); each
//! comparison holds two files on disk (the source's copy and the blob, spooled to temporary
//! files, deleted when done), at most [`IN_FLIGHT`] at once; and one picture is decoded at a
//! time (`likeness::MAX_DECODE_BYTES` at most). Each result goes to the caller as it is
//! known, so the report streams.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use futures_util::StreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::likeness::{self, Likeness};
use crate::download::Spool;
use crate::error::{Disposition, Error, Result};
use crate::item::{Body, Item, ItemOptions, Locator, SourceKind};
use crate::ledger::{Ledger, State};
use crate::source::{self, Source, Spec};
use crate::transport::ApiLane;

/// Comparisons at once: downloads overlap, decoding does not.
pub const IN_FLIGHT: usize = 4;

/// Which mapped images to check.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sample {
    /// Every one.
    All,
    /// This many, chosen at random.
    Count(u64),
    /// This share (percent, above 0 and at most 100), rounded up, chosen at random.
    Percent(f64),
}

impl std::str::FromStr for Sample {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Sample, String> {
        let s = s.trim();
        if let Some(pct) = s.strip_suffix('%') {
            return match pct.trim().parse::<f64>() {
                Ok(p) if p > 0.0 && p <= 100.0 => Ok(Sample::Percent(p)),
                _ => Err(format!(
                    "expected a percentage above 0 and at most 100 (e.g. 5%), got {s:?}"
                )),
            };
        }
        match s.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Sample::Count(n)),
            _ => Err(format!(
                "expected a number of images (e.g. 200) or a percentage (e.g. 5%), got {s:?}"
            )),
        }
    }
}

/// One mapped image to check.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// The item's source, as the ledger records it (`kind:location`).
    pub source: String,
    /// The item's key.
    pub key: String,
    /// The image the ledger maps.
    pub image_id: String,
    /// The sha256 the ledger recorded for the version uploaded.
    #[serde(skip)]
    sha256: Option<String>,
}

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The stored original is the source's bytes.
    Ok,
    /// Other bytes, the same picture (dimensions, frames, a close perceptual hash).
    Recompressed {
        /// Perceptual hashes this many bits apart, of 256.
        distance: u32,
    },
    /// Other bytes of a format cfimg does not decode (SVG, HEIC, AVIF): the dimensions
    /// and frames agree, which is all that was compared.
    SameDimensions {
        /// The format not decoded.
        format: &'static str,
    },
    /// Another picture is stored: a finding.
    Different {
        /// What differs.
        reason: String,
    },
    /// The account has no such image (404): a finding.
    Missing,
    /// The source no longer has the item: nothing to compare with, not a finding.
    SourceGone {
        /// What is gone.
        reason: String,
    },
    /// The source holds another version than the one uploaded (the ledger's sha256): the
    /// next `migrate` replaces the image; not a finding.
    SourceChanged,
    /// Could not be compared (the source or the blob could not be read): not judged, so the
    /// run is not clean.
    Unchecked {
        /// Why.
        reason: String,
    },
}

impl Verdict {
    /// The word reports use.
    pub fn word(&self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Recompressed { .. } => "recompressed",
            Verdict::SameDimensions { .. } => "same dimensions",
            Verdict::Different { .. } => "different",
            Verdict::Missing => "missing",
            Verdict::SourceGone { .. } => "source gone",
            Verdict::SourceChanged => "source changed",
            Verdict::Unchecked { .. } => "unchecked",
        }
    }

    /// Whether the report lists it line by line (ok and recompressed are only counted).
    pub fn listed(&self) -> bool {
        !matches!(self, Verdict::Ok | Verdict::Recompressed { .. })
    }
}

/// One checked image.
#[derive(Debug, Clone, Serialize)]
pub struct Checked {
    /// What was checked.
    #[serde(flatten)]
    pub target: Target,
    /// What was found.
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The counts of a run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Tally {
    /// Uploaded rows with an image (in scope): what could be checked.
    pub mapped: u64,
    /// Checked.
    pub checked: u64,
    /// Same bytes.
    pub ok: u64,
    /// Same picture, other bytes.
    pub recompressed: u64,
    /// Same dimensions, format not decoded.
    pub same_dimensions: u64,
    /// Another picture (findings).
    pub different: u64,
    /// Not in the account (findings).
    pub missing: u64,
    /// Source gone.
    pub source_gone: u64,
    /// Source changed since the upload.
    pub source_changed: u64,
    /// Not compared.
    pub unchecked: u64,
    /// Blob bytes downloaded.
    pub blob_bytes: u64,
    /// Stopped by a signal before the end (`mapped` is then not known: 0).
    pub interrupted: bool,
}

impl Tally {
    fn add(&mut self, v: &Verdict) {
        self.checked += 1;
        *match v {
            Verdict::Ok => &mut self.ok,
            Verdict::Recompressed { .. } => &mut self.recompressed,
            Verdict::SameDimensions { .. } => &mut self.same_dimensions,
            Verdict::Different { .. } => &mut self.different,
            Verdict::Missing => &mut self.missing,
            Verdict::SourceGone { .. } => &mut self.source_gone,
            Verdict::SourceChanged => &mut self.source_changed,
            Verdict::Unchecked { .. } => &mut self.unchecked,
        } += 1;
    }

    /// Nothing wrong found and nothing left unchecked.
    pub fn clean(&self) -> bool {
        self.different == 0 && self.missing == 0 && self.unchecked == 0
    }
}

/// Checks the chosen mapped images of `ledger` (of source `only`, when given), telling
/// `report` each result as it is known. `settings` opens the sources again (a manifest's
/// URLs are always downloaded here, whatever its URL mode). When `stop` is cancelled, the
/// checks in flight are abandoned (their temporary files deleted) and the tally so far is
/// returned, marked interrupted.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ledger: Ledger,
    only: Option<i64>,
    sample: Sample,
    settings: source::Settings,
    lane: &ApiLane,
    spent: &AtomicU32,
    stop: &CancellationToken,
    mut report: impl FnMut(&Checked),
) -> Result<Tally> {
    let (tx, rx) = mpsc::channel::<Target>(IN_FLIGHT * 4);
    let reader = tokio::task::spawn_blocking(move || choose(&ledger, only, sample, &tx));
    let targets =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) });
    let mut sources = Sources::new(settings);
    let decoding = Arc::new(Semaphore::new(1));
    let mut checks = Box::pin(
        targets
            .map(|t| {
                let opened = sources.get(&t.source);
                let decoding = decoding.clone();
                async move {
                    let (verdict, bytes) = check(lane, spent, &opened, &t, &decoding).await?;
                    Ok::<_, Error>((Checked { target: t, verdict }, bytes))
                }
            })
            .buffer_unordered(IN_FLIGHT),
    );
    let mut tally = Tally::default();
    loop {
        let next = tokio::select! {
            next = checks.next() => next,
            () = stop.cancelled() => {
                // Dropping the checks deletes their files; the reader stops at its next send.
                tally.interrupted = true;
                return Ok(tally);
            }
        };
        let Some(done) = next else { break };
        let (checked, bytes) = done?;
        tally.blob_bytes += bytes;
        tally.add(&checked.verdict);
        report(&checked);
    }
    tally.mapped = match reader.await {
        Ok(read) => read?,
        Err(e) => return Err(Error::Panicked(format!("reading the ledger: {e}"))),
    };
    Ok(tally)
}

/// Whether a row can be checked: uploaded, with an image, of a source that has an origin
/// (direct creator uploads have none).
fn eligible(r: &crate::ledger::Row, only: Option<i64>) -> bool {
    r.state == State::Uploaded
        && r.image_id.is_some()
        && only.is_none_or(|s| s == r.source_id)
        && !r.source.starts_with("drafts:")
}

fn target(r: &crate::ledger::Row) -> Target {
    Target {
        source: r.source.clone(),
        key: r.key.clone(),
        image_id: r.image_id.clone().unwrap_or_default(),
        sha256: r.sha256.clone(),
    }
}

/// Reads the rows and sends the chosen ones (all of them, as read; or a reservoir sample);
/// returns how many were eligible.
fn choose(
    ledger: &Ledger,
    only: Option<i64>,
    sample: Sample,
    tx: &mpsc::Sender<Target>,
) -> Result<u64> {
    // The receiver is gone only when the run ended early (an error): stop reading.
    let closed = || Error::Invalid("the check ended early".into());
    let mut mapped = 0u64;
    let want = match sample {
        Sample::All => {
            ledger.for_each_row(only, |r| {
                if eligible(r, only) {
                    mapped += 1;
                    tx.blocking_send(target(r)).map_err(|_| closed())?;
                }
                Ok(())
            })?;
            return Ok(mapped);
        }
        Sample::Count(n) => n,
        Sample::Percent(p) => {
            let mut n = 0u64;
            ledger.for_each_row(only, |r| {
                n += u64::from(eligible(r, only));
                Ok(())
            })?;
            ((n as f64) * p / 100.0).ceil() as u64
        }
    };
    // Reservoir sampling (algorithm R): each eligible row is kept with equal chance, in one
    // pass, holding `want` rows.
    let mut kept: Vec<Target> = Vec::new();
    ledger.for_each_row(only, |r| {
        if !eligible(r, only) {
            return Ok(());
        }
        mapped += 1;
        if (kept.len() as u64) < want {
            kept.push(target(r));
        } else {
            let at = fastrand::u64(0..mapped);
            if at < want {
                kept[at as usize] = target(r);
            }
        }
        Ok(())
    })?;
    for t in kept {
        tx.blocking_send(t).map_err(|_| closed())?;
    }
    Ok(mapped)
}

/// A source opened again, or why it cannot be.
#[derive(Debug)]
enum Opened {
    /// A folder: its items are its files.
    Folder(PathBuf),
    /// A manifest or a bucket, read through its own `body`; a bucket's keys are relative
    /// to its prefix.
    Source { source: Source, prefix: String },
    /// Its items are all gone (the folder is).
    Gone(String),
    /// It cannot be read again (stdin, an unknown kind, a bad location).
    Unreadable(String),
}

/// The sources met so far, each opened once.
struct Sources {
    settings: source::Settings,
    opened: HashMap<String, Arc<Opened>>,
}

impl Sources {
    fn new(mut settings: source::Settings) -> Sources {
        // A manifest's URLs are compared by their bytes, whatever the configured URL mode.
        settings.url_mode = source::manifest::UrlMode::Local;
        settings.bucket.mode = source::bucket::S3Mode::Download;
        Sources {
            settings,
            opened: HashMap::new(),
        }
    }

    fn get(&mut self, source: &str) -> Arc<Opened> {
        if let Some(o) = self.opened.get(source) {
            return o.clone();
        }
        let o = Arc::new(self.open(source));
        self.opened.insert(source.to_string(), o.clone());
        o
    }

    fn open(&self, text: &str) -> Opened {
        let (kind, location) = text.split_once(':').unwrap_or(("", text));
        match SourceKind::parse(kind) {
            Some(SourceKind::Dir) => {
                let root = PathBuf::from(location);
                if root.is_dir() {
                    Opened::Folder(root)
                } else {
                    Opened::Gone(format!("the folder {location} is gone"))
                }
            }
            Some(SourceKind::Manifest) => {
                // The items are URLs: only the downloader is needed, not the manifest file
                // (which may be gone, or have been stdin), so it is opened as stdin, unread.
                let spec = Spec::Manifest("-".into(), Some(source::manifest::ManifestFormat::Text));
                match Source::open(spec, &self.settings) {
                    Ok(source) => Opened::Source {
                        source,
                        prefix: String::new(),
                    },
                    Err(e) => Opened::Unreadable(e.to_string()),
                }
            }
            Some(SourceKind::Bucket) => self.open_bucket(location),
            _ => Opened::Unreadable(format!("{text} has no origin to read again")),
        }
    }

    /// `s3://bucket/prefix/@endpoint` (or `@aws:region`), with the configured credentials.
    fn open_bucket(&self, location: &str) -> Opened {
        let Some((url, at)) = location.rsplit_once('@') else {
            return Opened::Unreadable(format!("{location}: no endpoint recorded"));
        };
        let mut settings = self.settings.clone();
        match at.strip_prefix("aws:") {
            Some(region) => {
                settings.bucket.endpoint_url = None;
                settings.bucket.region = Some(region.to_string());
            }
            None => match reqwest::Url::parse(at) {
                Ok(endpoint) => settings.bucket.endpoint_url = Some(endpoint),
                Err(e) => return Opened::Unreadable(format!("{location}: the endpoint {e}")),
            },
        }
        let prefix = url
            .strip_prefix("s3://")
            .and_then(|rest| rest.split_once('/'))
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        match Source::open(Spec::Location(url.into()), &settings) {
            Ok(source) => Opened::Source { source, prefix },
            Err(e) => Opened::Unreadable(e.to_string()),
        }
    }
}

/// Reads one item again: its bytes on disk (kept alive by the body), or the verdict that
/// ends its check.
async fn read_source(opened: &Opened, t: &Target) -> std::result::Result<Body, Verdict> {
    let (source, locator) = match opened {
        Opened::Folder(root) => {
            let path = root.join(&t.key);
            return match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => Ok(Body::file(path)),
                Ok(_) => Err(Verdict::SourceGone {
                    reason: format!("{} is no longer a file", path.display()),
                }),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(Verdict::SourceGone {
                    reason: format!("the file {} is gone", path.display()),
                }),
                Err(e) => Err(Verdict::Unchecked {
                    reason: format!("cannot read {}: {e}", path.display()),
                }),
            };
        }
        Opened::Gone(why) => {
            return Err(Verdict::SourceGone {
                reason: why.clone(),
            });
        }
        Opened::Unreadable(why) => {
            return Err(Verdict::Unchecked {
                reason: format!("the source cannot be read again: {why}"),
            });
        }
        Opened::Source { source, prefix } => match source.id().kind {
            SourceKind::Bucket => (source, Locator::Object(format!("{prefix}{}", t.key))),
            _ => (source, Locator::Url(t.key.clone())),
        },
    };
    let item = Item {
        key: t.key.clone(),
        locator,
        fingerprint: None,
        options: ItemOptions::default(),
        ticket: Default::default(),
    };
    match source.body(&item).await {
        Ok(body @ Body::File { .. }) => Ok(body),
        Ok(Body::Url(_)) => Err(Verdict::Unchecked {
            reason: "the source gave a URL, not bytes".into(),
        }),
        Err(e) if gone(&e) => Err(Verdict::SourceGone {
            reason: e.to_string(),
        }),
        Err(e) => Err(Verdict::Unchecked {
            reason: e.to_string(),
        }),
    }
}

/// An origin's answer that the item is not there any more.
fn gone(e: &Error) -> bool {
    match e {
        Error::Object { source, .. } => matches!(source, object_store::Error::NotFound { .. }),
        // The status is only in the reason's text (`the origin answered 404 Not Found`).
        Error::Origin {
            reason,
            retryable: false,
            ..
        } => reason.contains("answered 404") || reason.contains("answered 410"),
        _ => false,
    }
}

/// Checks one image: its source, then its blob, then the comparison. Returns the verdict
/// and the blob bytes downloaded. An error ends the run (one that would fail every check:
/// a refused token, an account that does not exist).
async fn check(
    lane: &ApiLane,
    spent: &AtomicU32,
    opened: &Opened,
    t: &Target,
    decoding: &Semaphore,
) -> Result<(Verdict, u64)> {
    let body = match read_source(opened, t).await {
        Ok(body) => body,
        Err(verdict) => return Ok((verdict, 0)),
    };
    let Body::File { path: source, .. } = &body else {
        return Ok((
            Verdict::Unchecked {
                reason: "no bytes".into(),
            },
            0,
        ));
    };
    let (spool, _) = Spool::create("cfimg-verify-")?;
    let copied = lane
        .call(spent, || {
            let p = spool.path().to_path_buf();
            async move {
                // A fresh file per attempt: a retry after a broken transfer starts over.
                match tokio::fs::File::create(&p).await {
                    Ok(mut file) => lane.client.blob_to(&t.image_id, &mut file).await,
                    Err(source) => Err(Error::Io { path: p, source }).into(),
                }
            }
        })
        .await;
    match copied {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return Ok((Verdict::Missing, 0)),
        Err(e) if matches!(e.disposition(), Disposition::Fatal) => return Err(e),
        Err(e) => {
            return Ok((
                Verdict::Unchecked {
                    reason: format!("the original could not be downloaded: {e}"),
                },
                0,
            ));
        }
    }
    let stored = spool.path().to_path_buf();
    let bytes = std::fs::metadata(&stored).map(|m| m.len()).unwrap_or(0);
    let source = source.clone();
    let recorded = t.sha256.clone();
    let _one = decoding
        .acquire()
        .await
        .map_err(|_| Error::Invalid("the decoder is gone".into()))?;
    let verdict = tokio::task::spawn_blocking(move || compare(&source, &stored, recorded))
        .await
        .map_err(|e| Error::Panicked(format!("comparing an image: {e}")))?;
    drop(spool);
    drop(body);
    Ok((verdict, bytes))
}

/// Compares the source's bytes with the stored original's (blocking: hashes and decodes).
fn compare(source: &Path, stored: &Path, recorded: Option<String>) -> Verdict {
    let (a, b) = match (sha256(source), sha256(stored)) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) => {
            return Verdict::Unchecked {
                reason: format!("cannot read the source: {e}"),
            };
        }
        (_, Err(e)) => {
            return Verdict::Unchecked {
                reason: format!("cannot read the downloaded original: {e}"),
            };
        }
    };
    if a == b {
        return Verdict::Ok;
    }
    if recorded.is_some_and(|r| r != a) {
        return Verdict::SourceChanged;
    }
    let source_look = match likeness::look(source) {
        Ok(l) => l,
        Err(e) => {
            return Verdict::Unchecked {
                reason: format!("the source is not an image cfimg can compare: {e}"),
            };
        }
    };
    let stored_look = match likeness::look(stored) {
        Ok(l) => l,
        Err(e) => {
            return Verdict::Different {
                reason: format!("the stored original is not a readable image: {e}"),
            };
        }
    };
    match likeness::compare(&source_look, &stored_look) {
        Likeness::Close { distance } => Verdict::Recompressed { distance },
        Likeness::SameDimensions { format } => Verdict::SameDimensions { format },
        Likeness::Far(reason) => Verdict::Different { reason },
    }
}

/// Hex sha256 of a file, streamed.
fn sha256(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_is_a_count_or_a_share() {
        assert_eq!("200".parse(), Ok(Sample::Count(200)));
        assert_eq!(" 5% ".parse(), Ok(Sample::Percent(5.0)));
        assert_eq!("0.5%".parse(), Ok(Sample::Percent(0.5)));
        for bad in ["0", "0%", "101%", "-3", "x", "5 %x"] {
            assert!(bad.parse::<Sample>().is_err(), "{bad}");
        }
    }

    #[test]
    fn only_wrong_or_unchecked_images_make_a_run_unclean() {
        let mut t = Tally::default();
        for v in [
            Verdict::Ok,
            Verdict::Recompressed { distance: 3 },
            Verdict::SameDimensions { format: "SVG" },
            Verdict::SourceGone { reason: "x".into() },
            Verdict::SourceChanged,
        ] {
            t.add(&v);
        }
        assert!(t.clean());
        assert_eq!(t.checked, 5);
        t.add(&Verdict::Different { reason: "x".into() });
        assert!(!t.clean());
    }
}
