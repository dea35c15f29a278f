//! Finding an item's images on the server by their stamp, for uploads whose earlier
//! attempt may have stored something (a kill, a 5xx after storing, a dropped connection).
//! Lists lag behind uploads, so a lookup that finds nothing proves nothing; the recheck
//! (`recheck.rs`) repeats it once lists have caught up.

use std::sync::atomic::AtomicU32;

use chrono::{DateTime, Utc};

use crate::api::client::ListQuery;
use crate::api::types::Image;
use crate::error::Result;
use crate::stamp::{self, Stamp};
use crate::transport::ApiLane;

/// Page size when looking a stamp up in the image list: large, so that a server ignoring
/// the metadata filter costs as few requests as possible.
const LOOKUP_PAGE: u32 = 1000;

/// How far the server's clock may run behind ours when bounding a lookup by time.
const CLOCK_SKEW: chrono::TimeDelta = chrono::TimeDelta::minutes(10);

/// What one item's lookup should keep.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// The stamp of the version being uploaded.
    pub stamp: &'a Stamp,
    /// Images of this item that must stay (its recorded image, superseded ones).
    pub keep: &'a [String],
    /// Among images of this very version, the one to keep if it is there.
    pub prefer: Option<&'a str>,
}

/// What a lookup found.
#[derive(Debug, Default)]
pub struct Resolved {
    /// The image holding this version, kept.
    pub image: Option<Image>,
    /// Duplicates and orphans deleted.
    pub deleted: u64,
    /// `prefer` was given but not listed: nothing of this version was deleted.
    pub preferred_missing: bool,
}

/// Lists images by the stamp's source hash (newest first, back to `since` less the clock
/// skew, so a server that ignores the filter costs a listing of recent uploads, not of the
/// account), keeps one image of this version and deletes the others, and deletes images of
/// other versions of the item that nothing records (left by an interrupted upload).
pub async fn resolve(
    lane: &ApiLane,
    spent: &AtomicU32,
    wanted: Wanted<'_>,
    since: DateTime<Utc>,
) -> Result<Resolved> {
    let cutoff = since - CLOCK_SKEW;
    let mut query = ListQuery {
        per_page: Some(LOOKUP_PAGE),
        sort_order: Some("desc".into()),
        meta_eq: vec![(stamp::SOURCE_KEY.into(), wanted.stamp.source.clone())],
        ..ListQuery::default()
    };
    let mut same: Vec<Image> = Vec::new();
    let mut stale: Vec<Image> = Vec::new();
    loop {
        let page = lane.once(spent, lane.client.list_v2(&query)).await?;
        let reached_cutoff = older_than(&page.images, cutoff);
        for image in page.images {
            let Some(s) = Stamp::of(&image) else { continue };
            if s.source != wanted.stamp.source || wanted.keep.contains(&image.id) {
                continue;
            }
            if s.sha256 == wanted.stamp.sha256 {
                same.push(image);
            } else {
                stale.push(image);
            }
        }
        if reached_cutoff {
            break;
        }
        match page.continuation_token {
            Some(t) if !t.is_empty() => query.continuation_token = Some(t),
            _ => break,
        }
    }
    let mut resolved = Resolved::default();
    let keep_at = match wanted.prefer {
        Some(p) => same.iter().position(|i| i.id == p),
        None => (!same.is_empty()).then_some(0),
    };
    if wanted.prefer.is_some() && keep_at.is_none() {
        // The recorded image is not listed yet: deleting its twins now could delete the
        // only one that is really there.
        resolved.preferred_missing = true;
        same.clear();
    }
    let kept = keep_at.map(|at| same.swap_remove(at));
    for extra in same.into_iter().chain(stale) {
        tracing::info!(image_id = %extra.id, "deleting a duplicate left by an interrupted or ambiguous upload");
        match lane.once(spent, lane.client.delete(&extra.id)).await {
            Ok(()) => resolved.deleted += 1,
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    resolved.image = kept;
    Ok(resolved)
}

/// Whether a newest-first page reaches back before `cutoff` (its last image is older).
fn older_than(page: &[Image], cutoff: DateTime<Utc>) -> bool {
    page.last()
        .and_then(|i| i.uploaded.as_deref())
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .is_some_and(|t| t < cutoff)
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
            variants: vec![],
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
        assert!(older_than(&[newer, older], cutoff));
        assert!(!older_than(&[], cutoff));
    }
}
