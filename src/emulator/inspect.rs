//! The inspection view: stored images with their sha256, request counts, 429s.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::app::App;

/// Everything the emulator can tell a test about itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inspection {
    /// Every stored image and draft, oldest first.
    pub images: Vec<InspectedImage>,
    /// Requests served by route and status (status 0: connection dropped by a fault).
    pub requests: Vec<RouteCount>,
    /// 429s served.
    pub throttled: u64,
}

/// One stored image.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InspectedImage {
    /// Image id.
    pub id: String,
    /// File name given at upload.
    pub filename: Option<String>,
    /// Hex sha256 of the stored bytes (empty for drafts).
    pub sha256: String,
    /// Size of the stored bytes.
    pub size: u64,
    /// User metadata.
    pub meta: Map<String, Value>,
    /// Creator tag.
    pub creator: Option<String>,
    /// Whether delivery needs a signed URL.
    pub require_signed_urls: bool,
    /// Upload time, RFC 3339.
    pub uploaded: String,
    /// Whether this is a direct-upload draft.
    pub draft: bool,
}

/// Requests of one route answered with one status.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteCount {
    /// Method and path template, e.g. `POST /images/v1`.
    pub route: String,
    /// HTTP status; 0 for a dropped connection.
    pub status: u16,
    /// How many.
    pub count: u64,
}

/// Builds the inspection. Hashing happens outside the store lock.
pub fn inspect(app: &App) -> Inspection {
    let recs: Vec<_> = {
        let st = app.store.lock();
        st.order
            .values()
            .filter_map(|id| st.images.get(id).cloned())
            .collect()
    };
    let images = recs
        .iter()
        .map(|r| InspectedImage {
            id: r.id.clone(),
            filename: r.filename.clone(),
            sha256: r
                .blob
                .as_ref()
                .map(|b| b.sha256().to_owned())
                .unwrap_or_default(),
            size: r.blob.as_ref().map_or(0, |b| b.bytes.len() as u64),
            meta: r.meta.clone(),
            creator: r.creator.clone(),
            require_signed_urls: r.require_signed_urls,
            uploaded: r
                .uploaded
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            draft: r.draft_expiry.is_some(),
        })
        .collect();
    Inspection {
        images,
        requests: app
            .counters
            .rows()
            .into_iter()
            .map(|(route, status, count)| RouteCount {
                route,
                status,
                count,
            })
            .collect(),
        throttled: app.counters.throttled.load(Ordering::Relaxed),
    }
}
