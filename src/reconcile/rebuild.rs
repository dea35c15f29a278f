//! The rebuild algorithm behind `cfimg ledger rebuild`: a lost ledger rebuilt from the
//! account. Stamps hold only a hash of (source, key), so the source
//! is listed again, as `migrate` lists it: each item's key is hashed with
//! [`stamp::source_hash`], one pass over the v2 listing matches the stamps, and each match
//! is recorded as uploaded, with the image, its URL and the sha256 the stamp records.
//!
//! What the next run's quick check then sees depends on the source:
//! - a file is hashed once: unchanged, it is recorded with its size and mtime (skipped
//!   without a read); changed since its upload, with an unknown fingerprint (the next run
//!   replaces its image);
//! - a manifest row's URL is its version, as in `migrate`: recorded with the row's
//!   settings digest, it is skipped;
//! - an object is recorded with an unknown ETag: hashing it would mean downloading the
//!   bucket here, so the next run reads each matched object once and compares its sha256
//!   with the stamp's (no upload when it is unchanged; in presign mode, the key decides).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU32;

use crate::api::client::ListQuery;
use crate::error::{Error, Result};
use crate::item::{Fingerprint, Locator};
use crate::ledger::{Destination, Maintenance, RebuiltRow};
use crate::shard::Shard;
use crate::source::{Found, Source};
use crate::stamp::{self, Stamp};
use crate::transport::ApiLane;

/// Images per listing page.
const PAGE: u32 = 1_000;
/// Rows recorded per transaction.
const BATCH: usize = 4096;

/// One listed item of the source, by its stamp hash.
pub struct Listed {
    key: String,
    kind: Kind,
}

/// What a match is recorded with, by kind of source.
enum Kind {
    /// A file: hashed against the stamp when matched.
    File {
        path: PathBuf,
        size: u64,
        mtime_ns: i64,
    },
    /// A manifest row: its URL is its version.
    Url { options: Option<String> },
    /// A bucket object: left for the next run to compare.
    Object,
}

fn sha256_of(path: &std::path::Path) -> Option<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Some(hex::encode(h.finalize()))
}

/// Every item of the source by stamp hash: one entry per item; the listing streams past.
pub async fn list(source: Source, shard: Option<Shard>) -> Result<HashMap<String, Listed>> {
    let source = Arc::new(source);
    let id = source.id().clone();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Found>(4096);
    let lister = tokio::spawn(
        source
            .clone()
            .list(tx, tokio_util::sync::CancellationToken::new()),
    );
    let mut items = HashMap::new();
    while let Some(found) = rx.recv().await {
        let Found::Item(item) = found else { continue };
        if shard.is_some_and(|s| !s.owns(&id, &item.key)) {
            continue;
        }
        let kind = match (&item.locator, &item.fingerprint) {
            (Locator::File(path), fingerprint) => {
                let (size, mtime_ns) = match fingerprint {
                    Some(Fingerprint::SizeMtime { size, mtime_ns }) => (*size, *mtime_ns),
                    _ => (0, 0),
                };
                Kind::File {
                    path: path.clone(),
                    size,
                    mtime_ns,
                }
            }
            (Locator::Url(_), _) => Kind::Url {
                options: item.options.digest(),
            },
            (Locator::Object(_), _) => Kind::Object,
        };
        items.insert(
            stamp::source_hash(&id, &item.key),
            Listed {
                key: item.key,
                kind,
            },
        );
    }
    match lister.await {
        Ok(r) => r?,
        Err(_) => return Err(Error::Panicked("the source listing".into())),
    }
    Ok(items)
}

/// What matching the listing against the source's items found and recorded.
#[derive(Debug, Default, Clone, Copy)]
pub struct Matched {
    /// Images listed.
    pub listed: u64,
    /// Items matched by an image's stamp.
    pub matched: u64,
    /// Files matched whose content changed since their upload.
    pub changed: u64,
    /// Objects recorded without their ETag, for the next run to compare.
    pub to_check: u64,
    /// Rows recorded as uploaded.
    pub added: u64,
    /// More images of an item already matched.
    pub extra: u64,
}

/// One pass over the v2 listing, newest first: each image stamped as one of `items` is
/// recorded as that item's, uploaded; of several images of one item, the newest.
pub async fn record(
    lane: &ApiLane,
    spent: &AtomicU32,
    ledger: &mut Maintenance,
    destination: &Destination,
    source_id: i64,
    items: &HashMap<String, Listed>,
) -> Result<Matched> {
    let mut query = ListQuery {
        per_page: Some(PAGE),
        // Newest first: of several images of one item, the newest is kept.
        sort_order: Some("desc".into()),
        ..ListQuery::default()
    };
    let mut m = Matched::default();
    let mut batch = Vec::new();
    let mut taken: HashSet<String> = HashSet::new();
    loop {
        let page = lane.call(spent, || lane.client.list_v2(&query)).await?;
        ledger.claim_destination(destination)?;
        for image in page.images {
            m.listed += 1;
            let Some(s) = Stamp::of(&image) else { continue };
            let Some(item) = items.get(&s.source) else {
                continue;
            };
            if !taken.insert(s.source.clone()) {
                // Another image of the same item: `cfimg verify` reports it.
                m.extra += 1;
                continue;
            }
            m.matched += 1;
            let (size, mtime_ns, options) = match &item.kind {
                Kind::File {
                    path,
                    size,
                    mtime_ns,
                } => {
                    if s.sha256.is_some() && sha256_of(path) == s.sha256 {
                        (*size, *mtime_ns, None)
                    } else {
                        m.changed += 1;
                        (0, 0, None)
                    }
                }
                Kind::Url { options } => (0, 0, options.clone()),
                Kind::Object => {
                    m.to_check += 1;
                    (0, 0, None)
                }
            };
            batch.push(RebuiltRow {
                key: item.key.clone(),
                size,
                mtime_ns,
                etag: None,
                options,
                sha256: s.sha256.clone(),
                stamp: s.source.clone(),
                image_id: image.id.clone(),
                url: crate::upload::delivery_url(&image),
                uploaded_at: image.uploaded.clone(),
            });
            if batch.len() >= BATCH {
                m.added += ledger.record_found(source_id, &batch)?;
                batch.clear();
            }
        }
        match page.continuation_token {
            Some(t) if !t.is_empty() => query.continuation_token = Some(t),
            _ => break,
        }
    }
    m.added += ledger.record_found(source_id, &batch)?;
    Ok(m)
}
