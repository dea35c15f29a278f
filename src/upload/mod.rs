//! Uploading one planned item, exactly once: record the intent durably, send the body,
//! resolve whatever an earlier or ambiguous attempt left on the server by its stamp, replace
//! the older image of a changed item without ever losing it, and record the outcome.
//!
//! - `mod.rs`: the [`Uploader`]: one job's intent, upload, replacement and record
//! - `conflict.rs`: the answer to a 5409 (the id is taken), a pure function of who holds it
//! - `lookup.rs`: finding an item's images by stamp; deleting duplicates and orphans
//!   (the answer to an ambiguous or repeated upload, here and in the recheck)

pub mod conflict;
pub mod lookup;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use futures_util::FutureExt;
use serde_json::{Map, Value};

use crate::api::client::{ImageUpdate, Ready, Upload};
use crate::api::types::Image;
use crate::config::UploadConfig;
use crate::error::{Error, Result, Stage};
use crate::item::Locator;
use crate::ledger::{Failure, LedgerWriter, Record, SharedReader, Superseded};
use crate::outcome::{Failed, How, Outcome, Stored};
use crate::plan::{Action, Job};
use crate::progress::Stats;
use crate::replace::{self, Backup};
use crate::stamp::Stamp;
use crate::transport::retry;
use crate::transport::{ApiLane, Lanes};
use conflict::{Holder, OnConflict, on_conflict};
use lookup::Wanted;

/// Everything a worker needs; shared by all workers of a run. Built by [`Uploader::new`];
/// no other stage reaches into it.
#[derive(Debug)]
pub struct Uploader {
    /// Where requests go: the API host.
    lane: ApiLane,
    /// Where uploads (`POST /v1`) go: the batch lanes with `transport = "batch"`, else
    /// the API lane.
    lanes: Arc<Lanes>,
    /// The user's metadata for every image.
    metadata: Map<String, Value>,
    /// Upload private images.
    require_signed_urls: bool,
    /// Leave replaced images in place (recorded as superseded).
    keep_replaced: bool,
    /// How long lists may lag behind uploads: after an ambiguous answer, duplicates are
    /// looked for again once this has passed.
    list_lag: Duration,
    /// One log line per upload (a daemon's log is its record; a migration has its bar).
    log_each: bool,
    /// Where intents and outcomes go.
    ledger: LedgerWriter,
    /// For checking whether another item shares an image before deleting it.
    reader: Arc<SharedReader>,
    /// Run counters.
    stats: Arc<Stats>,
}

impl Uploader {
    /// The workers' uploader for `[upload]`'s settings; `log_each` logs every upload.
    pub fn new(
        lane: ApiLane,
        lanes: Arc<Lanes>,
        settings: &UploadConfig,
        ledger: LedgerWriter,
        reader: Arc<SharedReader>,
        stats: Arc<Stats>,
        log_each: bool,
    ) -> Uploader {
        Uploader {
            lane,
            lanes,
            metadata: settings.metadata.clone(),
            require_signed_urls: settings.require_signed_urls,
            keep_replaced: settings.keep_replaced,
            list_lag: settings.list_lag,
            log_each,
            ledger,
            reader,
            stats,
        }
    }
}

/// A job on its way to the workers, with its intent when that was recorded ahead of them
/// ([`Uploader::intent_ahead`]).
pub struct Queued {
    /// The job.
    pub job: Job,
    /// Durable once settled; every upload request of the job awaits it.
    pub intent: Option<Ready>,
}

/// How one job ended, for the caller.
#[derive(Debug)]
pub enum Ended {
    /// Uploaded, failed or rejected, and recorded.
    Recorded,
    /// Nothing else can succeed: stop the run.
    Fatal(Error),
}

/// An item that did not make it, with what happened to its live image.
#[derive(Debug)]
struct Refused {
    error: Error,
    /// The live image was deleted and could not be put back.
    image_gone: bool,
    /// What happened to the live image, for the reason.
    note: Option<String>,
}

impl From<Error> for Refused {
    fn from(error: Error) -> Refused {
        Refused {
            error,
            image_gone: false,
            note: None,
        }
    }
}

/// Per-job state shared by its attempts.
struct Attempt<'a> {
    job: &'a Job,
    spent: AtomicU32,
    /// An answer was ambiguous: the server may have stored what it did not confirm.
    ambiguous: AtomicBool,
    /// The job's intent is durable: every upload request awaits it before it goes.
    intent: Option<Ready>,
}

impl Uploader {
    /// Runs one job and records its outcome. Only a fatal error is returned to the caller.
    pub async fn run(&self, queued: Queued) -> Ended {
        let Queued { job, intent } = queued;
        let intent = match intent {
            Some(ahead) => Some(ahead),
            None => match self.intent(&job).await {
                Ok(intent) => intent,
                Err(e) => return Ended::Fatal(e),
            },
        };
        let at = Attempt {
            job: &job,
            spent: AtomicU32::new(0),
            ambiguous: AtomicBool::new(false),
            intent,
        };
        let result = match &job.action {
            Action::Update { image_id } => self.update(&at, image_id).await.map_err(Refused::from),
            Action::Upload => match job.id.as_deref() {
                Some(id) => self.upload_custom(&at, id).await,
                None => self.upload_auto(&at).await.map_err(Refused::from),
            },
        };
        let check_after = at
            .ambiguous
            .load(Ordering::Relaxed)
            .then(|| crate::ledger::timestamp(Utc::now() + self.list_lag));
        let outcome = match result {
            Ok(image) => self.finish(&at, image, check_after).await,
            Err(refused) => match refused.error.failure(Stage::Sending) {
                None => return Ended::Fatal(refused.error),
                Some(failure) => self.failed(&at, refused, failure, check_after),
            },
        };
        // The outcome comes after its intent, also when no request awaited the intent (a
        // body that could not be read): the writer applies records in the order they come.
        if let Some(intent) = at.intent
            && let Err(why) = intent.await
        {
            return Ended::Fatal(Error::LedgerWrite(why));
        }
        let Some(record) = outcome.end(&self.stats, &job.source, self.log_each) else {
            return Ended::Recorded;
        };
        match self.ledger.record(record).await {
            Ok(()) => Ended::Recorded,
            Err(e) => Ended::Fatal(e),
        }
    }

    /// Records the job's intent. With slack it is durable by the time its upload's turn
    /// comes, and the upload request awaits it (the returned [`Ready`]); without, it is
    /// committed before this returns.
    async fn intent(&self, job: &Job) -> Result<Option<Ready>> {
        let slack = self.intent_slack(job);
        if slack.is_zero() {
            self.ledger.commit(intent_of(job)).await?;
            return Ok(None);
        }
        self.submit_intent(job, slack).await.map(Some)
    }

    /// Hands the job's intent to the writer, to be durable within `within`; every upload
    /// request of the job awaits the returned [`Ready`].
    async fn submit_intent(&self, job: &Job, within: Duration) -> Result<Ready> {
        let durable = self.ledger.submit_within(intent_of(job), within).await?;
        Ok(durable.settled().boxed().shared())
    }

    /// Records the intent of a job about to be queued for the workers, `queued` jobs
    /// ahead of it and `workers` taking them, when its first request is the upload of a
    /// custom id: it may then wait to share a commit until close to its turn, which
    /// comes after the queue's jobs as well as the limiter's, so the queue's length in
    /// intents shares each commit (an fsync) rather than the workers' number. `None`:
    /// the worker records it. A job that never starts (a stop) leaves its intent, as a
    /// crash does, unless withdrawn ([`Uploader::withdraw`]): only for items the ledger
    /// holds no row of, whose row can go, and custom ids, whose leftover intent (a kill)
    /// the next run's POST resolves at no cost; an auto id's would cost a lookup.
    pub async fn intent_ahead(
        &self,
        job: &Job,
        queued: usize,
        workers: usize,
    ) -> Result<Option<Ready>> {
        let slack = self.intent_slack(job);
        if job.id.is_none() || !job.unrecorded || slack.is_zero() {
            return Ok(None);
        }
        let ahead = slack.mul_f64(1.0 + queued as f64 / workers.max(1) as f64);
        self.submit_intent(job, ahead).await.map(Some)
    }

    /// Withdraws the intent [`Uploader::intent_ahead`] recorded for a job that never
    /// started (the run stopped first), so that a stop leaves no item half-done. Once the
    /// intent is applied: the writer orders what it is sent and what it finds shelved only
    /// by their deadlines, and a withdrawal applied first would be undone by its intent.
    pub async fn withdraw(
        &self,
        (source_id, key): (i64, String),
        stamp: String,
        intent: Ready,
    ) -> Result<()> {
        // A failed intent has nothing to withdraw; the delete finds no row.
        let _ = intent.await;
        let withdrawn = Record::Withdrawn {
            source_id,
            key,
            stamp,
        };
        self.ledger.record(withdrawn).await
    }

    /// How long this job's intent may wait to share a commit: seven eighths of the wait
    /// its upload would have for its turn, the rest left for the commit itself. The upload
    /// holds its place in the limiter's queue meanwhile and awaits the commit when its turn
    /// comes; a later commit delays that request only. Jobs whose first request is not the
    /// upload (an update, a lookup, a backup) commit at once.
    fn intent_slack(&self, job: &Job) -> Duration {
        let upload_first = job.action == Action::Upload
            && !job.lookup_first
            && (job.id.is_none() || job.previous.as_deref() != job.id.as_deref());
        if upload_first {
            self.lanes.upload_wait() * 7 / 8
        } else {
            Duration::ZERO
        }
    }

    /// The outcome of a stored image, after removing what it replaces.
    async fn finish(&self, at: &Attempt<'_>, image: Image, check_after: Option<String>) -> Outcome {
        let job = at.job;
        let mut superseded = None;
        for old in [job.previous.as_deref(), job.abandoned.as_deref()]
            .into_iter()
            .flatten()
            .filter(|old| *old != image.id)
        {
            if self.keep_replaced && Some(old) == job.previous.as_deref() {
                superseded = Some(Superseded {
                    image_id: old.to_string(),
                    sha256: None,
                    url: None,
                });
                continue;
            }
            self.remove_unshared(job, old, &at.spent).await;
        }
        let replaced = job.previous.is_some() && job.action == Action::Upload;
        // A 5409 resolved to an image another item stored with the same content (two
        // identical files under hash ids in one run): nothing was uploaded for this one.
        let shared = job.action == Action::Upload
            && Stamp::of(&image).is_some_and(|s| s.source != job.stamp.source);
        let how = match job.action {
            Action::Upload if shared => How::Deduplicated,
            Action::Upload => How::Uploaded,
            Action::Update { .. } => How::Updated,
        };
        Outcome::Stored(Stored {
            how,
            version: job.version.clone(),
            url: delivery_url(&image),
            image_id: image.id,
            attempts: at.spent.load(Ordering::Relaxed),
            replaced,
            stamp: Some(job.stamp.source.clone()),
            check_after,
            superseded,
        })
    }

    /// The outcome of an item that did not make it.
    fn failed(
        &self,
        at: &Attempt<'_>,
        refused: Refused,
        failure: Failure,
        check_after: Option<String>,
    ) -> Outcome {
        let attempts = at.spent.load(Ordering::Relaxed);
        let e = &refused.error;
        let mut reason = match failure {
            Failure::Rejected => e.to_string(),
            Failure::Local => format!("{e}; the next run tries again"),
            Failure::Deferred => {
                format!(
                    "gave up after {}: {e}; rerun with --retry-failed",
                    crate::progress::plural(u64::from(attempts), "request", "requests")
                )
            }
        };
        if let Some(note) = &refused.note {
            reason.push_str("; ");
            reason.push_str(note);
        }
        Outcome::Failed(Failed {
            version: at.job.version.clone(),
            reason,
            attempts,
            failure,
            image_gone: refused.image_gone,
            check_after,
        })
    }

    /// The upload form of a job.
    fn form<'a>(
        &'a self,
        job: &'a Job,
        id: Option<&'a str>,
        metadata: &'a str,
        ready: Option<&'a Ready>,
    ) -> Upload<'a> {
        Upload {
            body: &job.body,
            filename: job.item.filename(),
            mime: job.format.map_or("application/octet-stream", |f| f.mime()),
            id,
            metadata,
            require_signed_urls: job
                .item
                .options
                .require_signed_urls
                .unwrap_or(self.require_signed_urls),
            creator: job.item.options.creator.as_deref(),
            // The bytes that were read and hashed; a file body's examined size.
            size: matches!(job.body, crate::item::Body::File { .. }).then_some(job.version.size),
            held: job.held.as_ref(),
            ready,
        }
    }

    /// The metadata an image of this job carries: the configured metadata, the item's own
    /// over it, and the stamp.
    fn metadata(&self, job: &Job) -> String {
        let mut user = self.metadata.clone();
        if let Some(own) = &job.item.options.metadata {
            user.extend(own.clone());
        }
        job.stamp.metadata_json(&user)
    }

    /// One POST attempt; marks the job ambiguous when the answer was, and refuses a body
    /// that changed since it was hashed (deleting what it stored).
    async fn post_once(&self, at: &Attempt<'_>, id: Option<&str>) -> Result<Image> {
        let metadata = self.metadata(at.job);
        let form = self.form(at.job, id, &metadata, at.intent.as_ref());
        let result = self.lanes.upload(&at.spent, &form).await;
        if result.as_ref().is_err_and(Error::is_ambiguous) {
            at.ambiguous.store(true, Ordering::Relaxed);
        }
        let sent = result?;
        if let (Some(sent_sha), Some(planned)) = (&sent.sha256, &at.job.stamp.sha256)
            && sent_sha != planned
        {
            // The stamp names content that was not sent: never let it stand.
            self.delete_if_present(&sent.image.id, &at.spent).await?;
            return Err(Error::ChangedWhileUploading(at.job.item.key.clone()));
        }
        Ok(sent.image)
    }

    /// Only the item's settings changed: PATCH the image.
    async fn update(&self, at: &Attempt<'_>, image_id: &str) -> Result<Image> {
        let job = at.job;
        let mut meta = self.metadata.clone();
        if let Some(own) = &job.item.options.metadata {
            meta.extend(own.clone());
        }
        let metadata: Value = serde_json::from_str(&job.stamp.metadata_json(&meta))
            .map_err(|e| Error::Invalid(format!("metadata: {e}")))?;
        let update = ImageUpdate {
            metadata: Some(metadata),
            require_signed_urls: job.item.options.require_signed_urls,
            creator: job.item.options.creator.clone(),
        };
        self.lane
            .call(&at.spent, || self.lane.client.update(image_id, &update))
            .await
    }

    /// Custom ids: POST; a 5409 means the id is taken, and the stamp says by what. When the
    /// id must be freed first, the live image is copied aside and put back if the new
    /// version is refused.
    async fn upload_custom(&self, at: &Attempt<'_>, id: &str) -> Result<Image, Refused> {
        let job = at.job;
        let mut backup: Option<Backup> = None;
        if job.previous.as_deref() == Some(id) && !job.resume {
            backup = replace::backup(&self.lane, &at.spent, id).await?;
            self.delete_if_present(id, &at.spent).await?;
        }
        // Bounded: each round either ends or frees our own older version first.
        for _ in 0..3 {
            let posted = retry::call(self.lane.policy, || self.post_once(at, Some(id))).await;
            match posted {
                Ok(image) => return Ok(image),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(self.put_back(at, e, backup).await),
            }
            let existing = self.get_settled(id, &at.spent).await?;
            let stamp = existing.as_ref().and_then(Stamp::of);
            let holder = match &existing {
                Some(_) => Holder::Image(stamp.as_ref()),
                None => Holder::Gone,
            };
            let recorded_here = job.previous.as_deref() == Some(id);
            match on_conflict(holder, &job.stamp, recorded_here) {
                OnConflict::PostAgain => {}
                OnConflict::Keep => {
                    if let Some(image) = existing {
                        return Ok(image);
                    }
                }
                OnConflict::Free => {
                    if backup.is_none() {
                        backup = replace::backup(&self.lane, &at.spent, id).await?;
                    }
                    self.delete_if_present(id, &at.spent).await?;
                }
                OnConflict::Taken { stamped } => {
                    return Err(Error::Invalid(self.taken(job, id, stamped)).into());
                }
            }
        }
        let e = Error::Invalid(format!(
            "the image id {id:?} kept changing on the server while uploading; try again later"
        ));
        Err(self.put_back(at, e, backup).await)
    }

    /// Why an id another image holds cannot be this item's, and what to change. Not
    /// "delete that image": something else (another row, another source, another tool) put
    /// it there and may still use it.
    fn taken(&self, job: &Job, id: &str, stamped: bool) -> String {
        let holder = self
            .reader
            .with(|l| l.holder_of(id, job.version.source_id, &job.item.key))
            .ok()
            .flatten();
        let url = matches!(job.item.locator, Locator::Url(_));
        let whose = match &holder {
            Some(row) if row.source_id == job.version.source_id => {
                format!("by the image of {} in this same source", row.key)
            }
            Some(row) => format!("by the image of {} (source {})", row.key, row.source),
            None if stamped => "by an image cfimg uploaded for another item".to_string(),
            None => "by an image cfimg did not upload".to_string(),
        };
        let why = if url && job.item.options.id.is_none() {
            " (a path id keeps a URL's host and path and drops its query)"
        } else {
            ""
        };
        let fix = if job.item.options.id.is_some() {
            "give this row another value in the manifest's `id` column"
        } else if url {
            "give this row its own id in the manifest's `id` column (csv or jsonl), or choose another --id-prefix"
        } else {
            "choose another --id-prefix"
        };
        format!(
            "Cloudflare answered that the image id {id:?} is already taken (code 5409), {whose}{why}; {fix}"
        )
    }

    /// The new version was refused after the live image was deleted: put the old one back.
    async fn put_back(&self, at: &Attempt<'_>, error: Error, backup: Option<Backup>) -> Refused {
        let Some(backup) = backup else {
            return error.into();
        };
        match replace::restore(&self.lane, &at.spent, &backup).await {
            Ok(image) => {
                tracing::warn!(key = %at.job.item.key, image_id = %image.id, "the new version was refused; the previous one is back in place");
                Refused {
                    error,
                    image_gone: false,
                    note: Some("the previous version is still live".into()),
                }
            }
            Err(restore) => {
                let kept = backup.keep_file();
                let note = format!(
                    "the previous version was deleted to free the id and could not be put back ({restore}); its bytes are kept at {}",
                    kept.map_or("(nowhere: the copy failed)".into(), |p| p
                        .display()
                        .to_string())
                );
                tracing::error!(key = %at.job.item.key, "{note}");
                Refused {
                    error,
                    image_gone: true,
                    note: Some(note),
                }
            }
        }
    }

    /// Cloudflare-assigned ids: nothing on the server answers 5409, so before any upload
    /// that may repeat an earlier one, look the stamp up.
    async fn upload_auto(&self, at: &Attempt<'_>) -> Result<Image> {
        let job = at.job;
        let since = job.earlier_intent.unwrap_or_else(Utc::now);
        let keep = self.held_images(job)?;
        let find = || async {
            let wanted = Wanted {
                stamp: &job.stamp,
                keep: &keep,
                prefer: None,
            };
            lookup::resolve(&self.lane, &at.spent, wanted, since).await
        };
        if job.lookup_first
            && let Some(found) = retry::call(self.lane.policy, find).await?.image
        {
            return Ok(found);
        }
        let attempt = || async {
            if at.ambiguous.load(Ordering::Relaxed)
                && let Some(found) = find().await?.image
            {
                return Ok(found);
            }
            self.post_once(at, None).await
        };
        retry::call(self.lane.policy, attempt).await
    }

    /// Images of this item that a lookup must leave alone: the recorded one and those kept
    /// by `--keep-replaced`.
    fn held_images(&self, job: &Job) -> Result<Vec<String>> {
        let mut keep = self
            .reader
            .with(|l| l.superseded_ids(job.version.source_id, &job.item.key))?;
        keep.extend(job.previous.clone());
        Ok(keep)
    }

    /// GET that tolerates the brief 404 right after an upload with a custom id.
    async fn get_settled(&self, id: &str, spent: &AtomicU32) -> Result<Option<Image>> {
        for pause_ms in [0u64, 250, 1000] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            match self.lane.call(spent, || self.lane.client.get(id)).await {
                Ok(image) => return Ok(Some(image)),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn delete_if_present(&self, id: &str, spent: &AtomicU32) -> Result<()> {
        match self.lane.call(spent, || self.lane.client.delete(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes an image this item no longer needs, unless another item still points at it.
    async fn remove_unshared(&self, job: &Job, image_id: &str, spent: &AtomicU32) {
        match self
            .reader
            .with(|l| l.image_shared(image_id, job.version.source_id, &job.item.key))
        {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(key = %job.item.key, image_id, error = %e, "kept the older image: the ledger could not say whether it is shared");
                return;
            }
        }
        if let Err(e) = self.delete_if_present(image_id, spent).await {
            tracing::warn!(
                key = %job.item.key, image_id, error = %e,
                "the new version is uploaded but its older image could not be deleted; delete it by hand"
            );
        }
    }
}

/// The record of a job's intent: the version and the id it is about to write.
fn intent_of(job: &Job) -> Record {
    Record::Intent {
        version: job.version.clone(),
        planned_id: job.id.clone(),
        stamp: job.stamp.source.clone(),
    }
}

/// The delivery URL to record: the `public` variant when there is one, else the first.
pub fn delivery_url(image: &Image) -> Option<String> {
    image
        .variants
        .iter()
        .find(|v| v.ends_with("/public"))
        .or_else(|| image.variants.first())
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_public_variant_is_the_recorded_url() {
        let image = Image {
            id: "x".into(),
            filename: None,
            meta: None,
            require_signed_urls: false,
            uploaded: None,
            variants: vec!["https://d/h/x/thumb".into(), "https://d/h/x/public".into()],
            creator: None,
            draft: None,
        };
        assert_eq!(
            delivery_url(&image).as_deref(),
            Some("https://d/h/x/public")
        );
    }
}
