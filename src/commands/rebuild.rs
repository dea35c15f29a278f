//! `cfimg ledger rebuild --source DIR`: a lost ledger rebuilt from the account. Stamps hold
//! only a hash of (source, key), so the folder is walked again: each file's key is hashed
//! with [`stamp::source_hash`], one pass over the v2 listing matches the stamps, and each
//! match is recorded as uploaded, with the file's size and mtime (so the next run's quick
//! check skips it) and the sha256 the stamp records. A file whose content no longer hashes
//! to the stamp's sha256 is recorded with an unknown fingerprint instead, so the next run
//! looks at it again and replaces its image.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use super::ledger_views::ledger_path;
use super::{EXIT_OK, api_lane};
use crate::api::client::ListQuery;
use crate::cli::{Cli, RebuildArgs};
use crate::error::{Error, Result};
use crate::ledger::{Destination, Maintenance, RebuiltRow};
use crate::source::walk::Walk;
use crate::source::{Found, Locator};
use crate::stamp::{self, Stamp};

/// Images per listing page.
const PAGE: u32 = 10_000;
/// Rows recorded per transaction.
const BATCH: usize = 4096;

struct File {
    key: String,
    path: std::path::PathBuf,
    size: u64,
    mtime_ns: i64,
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

/// Rebuilds the ledger's rows of one folder.
pub async fn run(cli: &Cli, args: &RebuildArgs) -> Result<i32> {
    let path = ledger_path(cli)?;
    let (cfg, lane) = api_lane(cli)?;
    let walk = Walk::new(&args.source, &cfg.walk)?;
    let source = walk.id().clone();
    // The folder's files by stamp hash: one entry per file, the listing streams past it.
    let mut files: HashMap<String, File> = HashMap::new();
    for found in walk.iter() {
        if let Found::Item(item) = found
            && let Locator::File(p) = &item.locator
        {
            let (size, mtime_ns) = match &item.fingerprint {
                Some(crate::source::Fingerprint::SizeMtime { size, mtime_ns }) => {
                    (*size, *mtime_ns)
                }
                _ => (0, 0),
            };
            files.insert(
                stamp::source_hash(&source, &item.key),
                File {
                    key: item.key.clone(),
                    path: p.clone(),
                    size,
                    mtime_ns,
                },
            );
        }
    }
    let mut ledger = Maintenance::open(&path)?;
    ledger.claim_destination(&Destination {
        account_id: cfg.account_id.clone(),
        api_base: cfg.api_base_url.to_string(),
    })?;
    let source_id = ledger.source(&source)?;

    let spent = AtomicU32::new(0);
    let mut query = ListQuery {
        per_page: Some(PAGE),
        // Newest first: of several images of one item, the newest is kept.
        sort_order: Some("desc".into()),
        ..ListQuery::default()
    };
    let (mut listed, mut matched, mut changed, mut added, mut extra) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    let mut batch = Vec::new();
    let mut taken: std::collections::HashSet<String> = std::collections::HashSet::new();
    loop {
        let page = lane.call(&spent, || lane.client.list_v2(&query)).await?;
        for image in page.images {
            listed += 1;
            let Some(s) = Stamp::of(&image) else { continue };
            let Some(file) = files.get(&s.source) else {
                continue;
            };
            if !taken.insert(s.source.clone()) {
                // Another image of the same item: `cfimg verify` reports it.
                extra += 1;
                continue;
            }
            matched += 1;
            let same = s.sha256.is_some() && sha256_of(&file.path) == s.sha256;
            if !same {
                changed += 1;
            }
            batch.push(RebuiltRow {
                key: file.key.clone(),
                size: if same { file.size } else { 0 },
                mtime_ns: if same { file.mtime_ns } else { 0 },
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
    let not_found = files.len() as u64 - matched;
    if args.json {
        println!(
            "{}",
            json!({
                "source": source.to_string(),
                "files": files.len(),
                "listed": listed,
                "matched": matched,
                "recorded": added,
                "changed_since": changed,
                "not_uploaded": not_found,
                "extra_images": extra,
                "requests": requests,
            })
        );
    } else {
        println!(
            "{}: {} files, {} images listed ({requests} requests); {matched} matched by their stamp, {added} recorded as uploaded",
            source,
            files.len(),
            listed
        );
        if changed > 0 {
            println!(
                "{changed} files changed since their upload: the next `cfimg migrate` replaces their images"
            );
        }
        if not_found > 0 {
            println!("{not_found} files have no image: the next `cfimg migrate` uploads them");
        }
        if extra > 0 {
            println!(
                "{extra} more images carry the stamp of an item already matched: `cfimg verify --repair` deletes them"
            );
        }
    }
    if matched == 0 && files.is_empty() {
        return Err(Error::Usage(format!(
            "{} holds no files to match",
            args.source.display()
        )));
    }
    Ok(EXIT_OK)
}
