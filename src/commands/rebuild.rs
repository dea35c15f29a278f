//! `cfimg ledger rebuild --source DIR|s3://BUCKET/PREFIX` or `--manifest FILE`: a lost
//! ledger rebuilt from the account. Stamps hold only a hash of (source, key), so the source
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

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use super::ledger_views::ledger_path;
use super::{EXIT_OK, api_lane_with};
use crate::api::client::ListQuery;
use crate::cli::{Cli, RebuildArgs};
use crate::config::{Config, RawConfig, UrlMode};
use crate::error::{Error, Result};
use crate::ledger::{Destination, Maintenance, RebuiltRow};
use crate::shard::Shard;
use crate::source::bucket::Bucket;
use crate::source::manifest::Manifest;
use crate::source::walk::Walk;
use crate::source::{Fingerprint, Found, Locator, Source};
use crate::stamp::{self, Stamp};

/// Images per listing page.
const PAGE: u32 = 10_000;
/// Rows recorded per transaction.
const BATCH: usize = 4096;

/// One listed item of the source, by its stamp hash.
struct Listed {
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

/// The source the flags name, as `migrate` would build it (so that its identity, and so
/// every stamp hash, is the same).
fn source(args: &RebuildArgs, cfg: &Config) -> Result<Source> {
    match (&args.source, &args.manifest) {
        (Some(dir), None) => match dir.to_str().filter(|d| d.starts_with("s3://")) {
            Some(url) => Ok(Source::Bucket(Bucket::new(url, &cfg.bucket, cfg.download)?)),
            None => Ok(Source::Walk(Walk::new(dir, &cfg.walk)?)),
        },
        // The URL mode does not change a manifest's identity or keys; remote needs no client.
        (None, Some(file)) => Ok(Source::Manifest(Manifest::new(
            file,
            args.manifest_format,
            UrlMode::Remote,
            crate::retry::Policy::default(),
            cfg.download,
        )?)),
        _ => Err(Error::Usage(
            "give the migrated source: --source DIR|s3://BUCKET/PREFIX, or --manifest FILE".into(),
        )),
    }
}

/// Every item of the source by stamp hash: one entry per item; the listing streams past.
async fn list(source: Source, shard: Option<Shard>) -> Result<HashMap<String, Listed>> {
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

/// Rebuilds the ledger's rows of one source.
pub async fn run(cli: &Cli, args: &RebuildArgs) -> Result<i32> {
    let path = ledger_path(cli)?;
    let flags = RawConfig {
        bucket: args.bucket.raw(),
        ..RawConfig::default()
    };
    let (cfg, lane) = api_lane_with(cli, flags)?;
    let source = source(args, &cfg)?;
    let source_id_text = source.id().clone();
    let items = list(source, args.shard).await?;
    let mut ledger = Maintenance::open(&path)?;
    let destination = Destination {
        account_id: cfg.account_id.clone(),
        api_base: cfg.api_base_url.to_string(),
    };
    // Recorded once the account has answered: a mistyped account id binds nothing.
    ledger.ledger().check_destination(&destination)?;
    let source_id = ledger.source(&source_id_text)?;

    let spent = AtomicU32::new(0);
    let mut query = ListQuery {
        per_page: Some(PAGE),
        // Newest first: of several images of one item, the newest is kept.
        sort_order: Some("desc".into()),
        ..ListQuery::default()
    };
    let (mut listed, mut matched, mut changed, mut to_check, mut added, mut extra) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut batch = Vec::new();
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let page = lane.call(&spent, || lane.client.list_v2(&query)).await?;
        ledger.claim_destination(&destination)?;
        for image in page.images {
            listed += 1;
            let Some(s) = Stamp::of(&image) else { continue };
            let Some(item) = items.get(&s.source) else {
                continue;
            };
            if !taken.insert(s.source.clone()) {
                // Another image of the same item: `cfimg verify` reports it.
                extra += 1;
                continue;
            }
            matched += 1;
            let (size, mtime_ns, options) = match &item.kind {
                Kind::File {
                    path,
                    size,
                    mtime_ns,
                } => {
                    if s.sha256.is_some() && sha256_of(path) == s.sha256 {
                        (*size, *mtime_ns, None)
                    } else {
                        changed += 1;
                        (0, 0, None)
                    }
                }
                Kind::Url { options } => (0, 0, options.clone()),
                Kind::Object => {
                    to_check += 1;
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
                added += ledger.record_found(source_id, &batch)?;
                batch.clear();
            }
        }
        match page.continuation_token {
            Some(t) if !t.is_empty() => query.continuation_token = Some(t),
            _ => break,
        }
    }
    added += ledger.record_found(source_id, &batch)?;
    let requests = spent.load(Ordering::Relaxed);
    let not_found = items.len() as u64 - matched;
    let source = source_id_text;
    if args.output.json {
        println!(
            "{}",
            json!({
                "source": source.to_string(),
                "items": items.len(),
                // The older name of `items`, from when only folders were rebuilt.
                "files": items.len(),
                "listed": listed,
                "matched": matched,
                "recorded": added,
                "changed_since": changed,
                "to_check": to_check,
                "not_uploaded": not_found,
                "extra_images": extra,
                "requests": requests,
            })
        );
    } else {
        println!(
            "{}: {}, {} listed ({}); {matched} matched by their stamp, {added} recorded as uploaded",
            crate::shown::Shown(&source.to_string()),
            crate::progress::plural(items.len() as u64, "item", "items"),
            crate::progress::plural(listed, "image", "images"),
            crate::progress::plural(u64::from(requests), "request", "requests"),
        );
        if changed > 0 {
            println!(
                "{} since their upload: the next `cfimg migrate` replaces their images",
                crate::progress::plural(changed, "file changed", "files changed")
            );
        }
        if to_check > 0 {
            println!(
                "{} recorded without their ETag: the next `cfimg migrate` reads each once, \
                 compares it with its stamp's sha256 and uploads only those that changed",
                crate::progress::plural(to_check, "object is", "objects are")
            );
        }
        if not_found > 0 {
            // Not a promise of uploads: some of them may be what `migrate` rejects (empty
            // files, other types, invalid ids), which is likely why they have no image.
            println!(
                "{} no image: the next `cfimg migrate` uploads those that pass its checks and \
                 records a reason for each it rejects (then see `cfimg failures`)",
                crate::progress::plural(not_found, "item has", "items have")
            );
        }
        if extra > 0 {
            println!(
                "{extra} more images carry the stamp of an item already matched: `cfimg verify --repair` deletes them"
            );
        }
    }
    if matched == 0 && items.is_empty() {
        return Err(Error::Usage(format!("{source} holds no items to match")));
    }
    Ok(EXIT_OK)
}
