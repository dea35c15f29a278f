//! Uploading one planned item, exactly once: record the intent durably, send the file,
//! resolve whatever an earlier or ambiguous attempt left on the server by its stamp, replace
//! the older image of a changed source, and record the outcome.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use crate::api::client::{FileUpload, ImagesClient, ListQuery};
use crate::api::types::Image;
use crate::error::{Disposition, Error, Result};
use crate::ledger::{LedgerWriter, Record, SharedReader};
use crate::limit::Limiter;
use crate::plan::Job;
use crate::progress::Stats;
use crate::retry::{self, Policy};
use crate::stamp::{self, Stamp};

/// Page size when looking a stamp up in the image list.
/// Large, so that a server ignoring the metadata filter costs as few requests as possible.
const LOOKUP_PAGE: u32 = 1000;

/// How far the server's clock may run behind ours when bounding a stamp lookup by time.
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// Everything a worker needs; shared by all workers of a run.
#[derive(Debug)]
pub struct Uploader {
    /// The API client.
    pub client: ImagesClient,
    /// The shared limiter of the API host.
    pub limiter: Arc<Limiter>,
    /// Retry settings.
    pub policy: Policy,
    /// The user's metadata for every image.
    pub metadata: Map<String, Value>,
    /// Upload private images.
    pub require_signed_urls: bool,
    /// Where intents and outcomes go.
    pub ledger: LedgerWriter,
    /// For checking whether another source shares an image before deleting it.
    pub reader: Arc<SharedReader>,
    /// Run counters.
    pub stats: Arc<Stats>,
}

/// How one job ended, for the caller.
#[derive(Debug)]
pub enum Ended {
    /// Uploaded, failed or rejected, and recorded.
    Recorded,
    /// Nothing else can succeed: stop the run.
    Fatal(Error),
}

impl Uploader {
    /// Uploads one job and records its outcome. Only a fatal error is returned to the caller.
    pub async fn run(&self, job: Job) -> Ended {
        let spent = AtomicU32::new(0);
        let version = job.version();
        let intent_at = job.earlier_intent.unwrap_or_else(chrono::Utc::now);
        if let Err(e) = self
            .ledger
            .commit(Record::Intent {
                version: version.clone(),
                planned_id: job.id.clone(),
            })
            .await
        {
            return Ended::Fatal(e);
        }
        let mut previous_gone = false;
        let result = match job.id.as_deref() {
            Some(id) => {
                self.upload_custom(&job, id, &spent, &mut previous_gone)
                    .await
            }
            None => self.upload_auto(&job, intent_at, &spent).await,
        };
        let attempts = spent.load(Ordering::Relaxed);
        let record = match result {
            Ok(image) => {
                if let Some(prev) = job
                    .previous
                    .as_deref()
                    .filter(|p| Some(*p) != Some(image.id.as_str()))
                {
                    self.remove_previous(&job, prev, &spent).await;
                }
                self.stats.uploaded(job.item.size, job.previous.is_some());
                Record::Uploaded {
                    version,
                    url: delivery_url(&image),
                    image_id: image.id,
                    attempts: spent.load(Ordering::Relaxed),
                    replaced: job.previous.is_some(),
                }
            }
            // `retry::call` only gives up on a retryable error once its budget is spent,
            // which makes the item deferred to a later run.
            Err(e) => match e.disposition() {
                Disposition::Fatal => return Ended::Fatal(e),
                Disposition::Retry { .. } | Disposition::Defer | Disposition::Reject => {
                    let rejected = e.disposition() == Disposition::Reject;
                    self.stats.failed(rejected);
                    let reason = if rejected {
                        e.to_string()
                    } else {
                        format!("gave up after {attempts} requests: {e}; rerun with --retry-failed")
                    };
                    tracing::warn!(key = %job.item.key, %reason, "{}", if rejected { "rejected" } else { "failed" });
                    Record::Failed {
                        version,
                        reason,
                        attempts,
                        rejected,
                        image_gone: previous_gone,
                    }
                }
            },
        };
        match self.ledger.record(record).await {
            Ok(()) => Ended::Recorded,
            Err(e) => Ended::Fatal(e),
        }
    }

    /// One API call with its retries, every attempt through the limiter.
    async fn call<T, F, Fut>(&self, spent: &AtomicU32, mut request: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        retry::call(self.policy, || self.limiter.send(spent, request())).await
    }

    /// The upload form of a job: the file streamed under its own name.
    fn file_upload<'a>(
        &self,
        job: &'a Job,
        id: Option<&'a str>,
        metadata: &'a str,
    ) -> FileUpload<'a> {
        FileUpload {
            path: &job.item.path,
            size: job.item.size,
            filename: job.item.key.rsplit('/').next().unwrap_or(&job.item.key),
            mime: job.format.mime(),
            id,
            metadata,
            require_signed_urls: self.require_signed_urls,
        }
    }

    async fn post(
        &self,
        job: &Job,
        id: Option<&str>,
        stamp: &Stamp,
        spent: &AtomicU32,
    ) -> Result<Image> {
        let metadata = stamp.metadata_json(&self.metadata);
        let upload = self.file_upload(job, id, &metadata);
        self.call(spent, || self.client.upload_file(&upload)).await
    }

    /// Custom ids: POST; a 5409 means the id is taken, and the stamp says by what.
    async fn upload_custom(
        &self,
        job: &Job,
        id: &str,
        spent: &AtomicU32,
        previous_gone: &mut bool,
    ) -> Result<Image> {
        let stamp = Stamp::new(&job.item.key, &job.sha256);
        if job.previous.as_deref() == Some(id) && !job.resume {
            // A changed file keeps its path id: there is no upsert, so delete, then post.
            self.delete_if_present(id, spent).await?;
            *previous_gone = true;
        }
        // Bounded: each round either ends or deletes our own older version first.
        for _ in 0..3 {
            match self.post(job, Some(id), &stamp, spent).await {
                Ok(image) => return Ok(image),
                Err(e) if e.is_conflict() => {}
                Err(e) => return Err(e),
            }
            let Some(existing) = self.get_settled(id, spent).await? else {
                continue;
            };
            match Stamp::of(&existing) {
                // Ours (an earlier attempt, or an identical file in hash mode): done.
                Some(s) if s.sha256 == stamp.sha256 => return Ok(existing),
                // An older version of this same source: replace it.
                Some(s) if s.source == stamp.source => {
                    self.delete_if_present(id, spent).await?;
                    *previous_gone = true;
                }
                _ => {
                    return Err(Error::Invalid(format!(
                        "the image id {id:?} is already taken by an image that cfimg did not upload from this file; \
                         delete that image or choose another --id-prefix"
                    )));
                }
            }
        }
        Err(Error::Invalid(format!(
            "the image id {id:?} kept changing on the server while uploading; try again later"
        )))
    }

    /// Cloudflare-assigned ids: nothing on the server answers 5409, so before any upload that
    /// may repeat an earlier one, look the stamp up.
    async fn upload_auto(
        &self,
        job: &Job,
        intent_at: DateTime<Utc>,
        spent: &AtomicU32,
    ) -> Result<Image> {
        let stamp = Stamp::new(&job.item.key, &job.sha256);
        if job.resume
            && let Some(found) = self.find_stamped(&stamp, intent_at, spent).await?
        {
            return Ok(found);
        }
        let ambiguous = AtomicBool::new(false);
        let attempt = || async {
            if ambiguous.load(Ordering::Relaxed)
                && let Some(found) = self.find_stamped_once(&stamp, intent_at, spent).await?
            {
                return Ok(found);
            }
            let metadata = stamp.metadata_json(&self.metadata);
            let upload = self.file_upload(job, None, &metadata);
            let result = self
                .limiter
                .send(spent, self.client.upload_file(&upload))
                .await;
            if result.as_ref().is_err_and(Error::is_ambiguous) {
                ambiguous.store(true, Ordering::Relaxed);
            }
            result
        };
        retry::call(self.policy, attempt).await
    }

    /// Finds the image holding exactly this stamp, deleting any duplicates of it.
    async fn find_stamped(
        &self,
        stamp: &Stamp,
        since: DateTime<Utc>,
        spent: &AtomicU32,
    ) -> Result<Option<Image>> {
        retry::call(self.policy, || self.find_stamped_once(stamp, since, spent)).await
    }

    /// One pass over the list filtered by the source hash, newest first, down to the time
    /// the intent was recorded: an image our attempt stored cannot be older. So a server that
    /// ignores the filter costs a listing of the recent uploads, not of the whole account.
    async fn find_stamped_once(
        &self,
        stamp: &Stamp,
        since: DateTime<Utc>,
        spent: &AtomicU32,
    ) -> Result<Option<Image>> {
        let cutoff = since - CLOCK_SKEW;
        let mut query = ListQuery {
            per_page: Some(LOOKUP_PAGE),
            sort_order: Some("desc".into()),
            meta_eq: vec![(stamp::SOURCE_KEY.into(), stamp.source.clone())],
            ..ListQuery::default()
        };
        let mut found: Vec<Image> = Vec::new();
        loop {
            let page = self
                .limiter
                .send(spent, self.client.list_v2(&query))
                .await?;
            let reached_cutoff = older_than(&page.images, cutoff);
            found.extend(
                page.images
                    .into_iter()
                    .filter(|i| Stamp::of(i).as_ref() == Some(stamp)),
            );
            if reached_cutoff {
                break;
            }
            match page.continuation_token {
                Some(t) if !t.is_empty() => query.continuation_token = Some(t),
                _ => break,
            }
        }
        let mut found = found.into_iter();
        let keep = found.next();
        for extra in found {
            // Two images with one stamp: an earlier ambiguous attempt did store. Keep one.
            tracing::info!(image_id = %extra.id, "deleting a duplicate left by an interrupted upload");
            if let Err(e) = self
                .limiter
                .send(spent, self.client.delete(&extra.id))
                .await
                && !e.is_not_found()
            {
                return Err(e);
            }
        }
        Ok(keep)
    }

    /// GET that tolerates the brief 404 right after an upload with a custom id.
    async fn get_settled(&self, id: &str, spent: &AtomicU32) -> Result<Option<Image>> {
        for pause_ms in [0u64, 250, 1000] {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
            match self.call(spent, || self.client.get(id)).await {
                Ok(image) => return Ok(Some(image)),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn delete_if_present(&self, id: &str, spent: &AtomicU32) -> Result<()> {
        match self.call(spent, || self.client.delete(id)).await {
            Ok(()) => Ok(()),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes the image an older version of this source lived in, unless another source
    /// still points at it (identical content in hash mode).
    async fn remove_previous(&self, job: &Job, previous: &str, spent: &AtomicU32) {
        match self
            .reader
            .with(|l| l.image_shared(previous, &job.item.key))
        {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(key = %job.item.key, image_id = previous, error = %e, "kept the older image: the ledger could not say whether it is shared");
                return;
            }
        }
        if let Err(e) = self.delete_if_present(previous, spent).await {
            tracing::warn!(
                key = %job.item.key, image_id = previous, error = %e,
                "the new version is uploaded but its older image could not be deleted; delete it by hand"
            );
        }
    }
}

/// Whether a newest-first page reaches back before `cutoff` (its last image is older).
fn older_than(page: &[Image], cutoff: DateTime<Utc>) -> bool {
    page.last()
        .and_then(|i| i.uploaded.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t < cutoff)
}

/// The delivery URL to record: the `public` variant when there is one, else the first.
fn delivery_url(image: &Image) -> Option<String> {
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

    fn image(uploaded: &str) -> Image {
        Image {
            id: "x".into(),
            filename: None,
            meta: None,
            require_signed_urls: false,
            uploaded: Some(uploaded.into()),
            variants: vec!["https://d/h/x/thumb".into(), "https://d/h/x/public".into()],
            creator: None,
            draft: None,
        }
    }

    #[test]
    fn a_lookup_stops_once_the_listing_reaches_back_before_the_intent() {
        let cutoff = DateTime::parse_from_rfc3339("2026-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let newer = image("2026-01-01T12:30:00.000Z");
        let older = image("2026-01-01T11:59:59.999Z");
        assert!(!older_than(std::slice::from_ref(&newer), cutoff));
        assert!(older_than(&[newer.clone(), older], cutoff));
        assert!(!older_than(&[], cutoff));
        assert_eq!(
            delivery_url(&newer).as_deref(),
            Some("https://d/h/x/public")
        );
    }
}
