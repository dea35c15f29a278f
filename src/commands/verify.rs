//! `cfimg verify`: the ledger against the account, in one pass over the v2 listing
//! (following continuation tokens; never a request per item). Memory holds what the ledger
//! records (image ids and stamps), not the listing: each listed image is judged as it
//! arrives and only findings are kept.
//!
//! Findings: *missing* (an uploaded row whose image is not listed), *duplicates* (another
//! image of the same version of a recorded item), *orphans* (images stamped as one of the
//! ledger's items that no row maps: another version, an interrupted upload), *unrecorded*
//! (images stamped by one of the ledger's sources, and its shard, for items it has no row
//! for: a lost ledger), *mismatches* (the recorded image's stamp has another sha256 than
//! the ledger). Images of sources this ledger has never seen, of other shards, or stamped
//! before images named their source are counted, never judged: they belong to another
//! ledger. `--repair` re-queues the missing (after a GET confirms each is really gone,
//! since lists lag) and deletes the duplicates, keeping the recorded image; the rest is
//! reported only.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Serialize;
use serde_json::json;

use super::ledger_views::ledger_path;
use super::{EXIT_INCOMPLETE, EXIT_OK, api_lane};
use crate::api::client::ListQuery;
use crate::cli::{Cli, VerifyArgs};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Maintenance, State};
use crate::progress::plural;
use crate::shard::Shard;
use crate::shown::Shown;
use crate::stamp::{self, Stamp};

/// Images per listing page (the API's maximum): fewest requests.
const PAGE: u32 = 10_000;

/// What the ledger records about one item with a stamp or an image.
struct Known {
    source: u32,
    source_id: i64,
    key: String,
    /// State `uploaded` with an image: only these can be missing or mismatched.
    uploaded: bool,
    /// The image the row maps, whatever its state (a file that later became invalid
    /// keeps its live image and its URL in `export`).
    image_id: Option<String>,
    sha256: Option<String>,
    seen: bool,
    /// The previous row mapping the same image (hash ids: identical files share one).
    same_image: Option<usize>,
}

#[derive(Debug, Serialize)]
struct Missing {
    source: String,
    key: String,
    image_id: String,
    /// With --repair: re-queued for the next migrate; `false` when a GET found it after all.
    #[serde(skip_serializing_if = "Option::is_none")]
    requeued: Option<bool>,
}

#[derive(Debug, Serialize)]
struct Duplicate {
    source: String,
    key: String,
    image_id: String,
    kept: String,
    /// The recorded image is not listed: this one stands in for it (--repair records it
    /// as the item's image instead of deleting it).
    stands_in: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    deleted: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    adopted: Option<bool>,
    #[serde(skip)]
    at: usize,
    #[serde(skip)]
    source_id: i64,
    #[serde(skip)]
    url: Option<String>,
}

#[derive(Debug, Serialize)]
struct Orphan {
    image_id: String,
    stamp: String,
    sha256: Option<String>,
    /// The item the stamp names, when the ledger knows it.
    source: Option<String>,
    key: Option<String>,
}

#[derive(Debug, Serialize)]
struct Unrecorded {
    image_id: String,
    stamp: String,
    source: String,
}

#[derive(Debug, Serialize)]
struct Mismatch {
    source: String,
    key: String,
    image_id: String,
    ledger_sha256: Option<String>,
    remote_sha256: Option<String>,
}

/// Runs the check (and the repairs); exit 0 when the ledger and the account agree.
pub async fn run(cli: &Cli, args: &VerifyArgs) -> Result<i32> {
    let path = ledger_path(cli)?;
    if !path.exists() {
        return Err(Error::Usage(format!(
            "no ledger at {}: nothing to verify (a lost ledger: `cfimg ledger rebuild --source DIR`)",
            path.display()
        )));
    }
    let (_cfg, lane) = api_lane(cli)?;
    let maintenance = if args.repair {
        Some(Maintenance::open(&path)?)
    } else {
        None
    };
    let read_only = match &maintenance {
        Some(_) => None,
        None => Some(Ledger::open_existing(&path)?),
    };
    let ledger = match (&maintenance, &read_only) {
        (Some(m), _) => m.ledger(),
        (None, Some(l)) => l,
        (None, None) => return Err(Error::Usage("the ledger vanished".into())),
    };
    let shard = args.shard.or_else(|| shard_of_name(&path));
    let only = match &args.source {
        Some(s) => Some(
            ledger
                .find_source(s)?
                .ok_or_else(|| Error::Usage(format!("the ledger has no source {s}")))?,
        ),
        None => None,
    };
    let mut sources: Vec<String> = Vec::new();
    let mut source_at: HashMap<i64, u32> = HashMap::new();
    let mut known: Vec<Known> = Vec::new();
    let mut by_id: HashMap<String, usize> = HashMap::new();
    let mut by_stamp: HashMap<String, usize> = HashMap::new();
    let mut rows = 0u64;
    ledger.for_each_row(None, |r| {
        rows += 1;
        let uploaded = r.state == State::Uploaded && r.image_id.is_some();
        if r.image_id.is_none() && r.stamp.is_none() {
            return Ok(());
        }
        let source = *source_at.entry(r.source_id).or_insert_with(|| {
            sources.push(r.source.clone());
            (sources.len() - 1) as u32
        });
        let at = known.len();
        let same_image = r
            .image_id
            .as_ref()
            .and_then(|id| by_id.insert(id.clone(), at));
        by_stamp.insert(r.stamp_source(), at);
        known.push(Known {
            source,
            source_id: r.source_id,
            key: r.key.clone(),
            uploaded,
            image_id: r.image_id.clone(),
            sha256: r.sha256.clone(),
            seen: false,
            same_image,
        });
        Ok(())
    })?;
    let mut superseded = HashSet::new();
    ledger.for_each_superseded(|id| {
        superseded.insert(id.to_string());
        Ok(())
    })?;
    let in_scope = |k: &Known| only.is_none_or(|s| s == k.source_id);
    // The ledger's sources by the source field of their images' stamps.
    let mut by_set: HashMap<String, (i64, String)> = HashMap::new();
    for (id, kind, location) in ledger.sources()? {
        let text = format!("{kind}:{location}");
        by_set.insert(stamp::set_hash(&text), (id, text));
    }

    let spent = AtomicU32::new(0);
    let mut query = ListQuery {
        per_page: Some(PAGE),
        ..ListQuery::default()
    };
    let (mut listed, mut unmanaged, mut pages, mut others) = (0u64, 0u64, 0u64, 0u64);
    let mut duplicates = Vec::new();
    let mut orphans = Vec::new();
    let mut unrecorded = Vec::new();
    let mut mismatches = Vec::new();
    loop {
        let page = lane.call(&spent, || lane.client.list_v2(&query)).await?;
        pages += 1;
        for image in page.images {
            listed += 1;
            let stamp = Stamp::of(&image);
            if let Some(&first) = by_id.get(&image.id) {
                // Every row mapping this image has it, not only the last one read.
                let mut next = Some(first);
                while let Some(at) = next {
                    let k = &mut known[at];
                    next = k.same_image;
                    k.seen = true;
                    let remote = stamp.as_ref().and_then(|s| s.sha256.clone());
                    if k.uploaded
                        && remote.is_some()
                        && k.sha256.is_some()
                        && remote != k.sha256
                        && in_scope(k)
                    {
                        mismatches.push(Mismatch {
                            source: sources[k.source as usize].clone(),
                            key: k.key.clone(),
                            image_id: image.id.clone(),
                            ledger_sha256: k.sha256.clone(),
                            remote_sha256: remote,
                        });
                    }
                }
                continue;
            }
            if superseded.contains(&image.id) {
                continue;
            }
            let Some(stamp) = stamp else {
                unmanaged += 1;
                continue;
            };
            match by_stamp.get(&stamp.source).map(|&at| &known[at]) {
                Some(k) if !in_scope(k) => others += 1,
                Some(k) if k.uploaded && k.sha256 == stamp.sha256 => {
                    let at = by_stamp[&stamp.source];
                    duplicates.push(Duplicate {
                        stands_in: false,
                        adopted: None,
                        at,
                        source_id: k.source_id,
                        url: crate::upload::delivery_url(&image),
                        source: sources[k.source as usize].clone(),
                        key: k.key.clone(),
                        image_id: image.id.clone(),
                        kept: k.image_id.clone().unwrap_or_default(),
                        deleted: None,
                    });
                }
                Some(k) => orphans.push(Orphan {
                    image_id: image.id.clone(),
                    stamp: stamp.source.clone(),
                    sha256: stamp.sha256.clone(),
                    source: Some(sources[k.source as usize].clone()),
                    key: Some(k.key.clone()),
                }),
                // No row names this item: whose image it is, only the source field and
                // the shard rule can tell.
                None => match stamp.set.as_ref().and_then(|set| by_set.get(set)) {
                    Some((id, text))
                        if only.is_none_or(|s| s == *id)
                            && shard.is_none_or(|sh| sh.owns_stamp(&stamp.source)) =>
                    {
                        unrecorded.push(Unrecorded {
                            image_id: image.id.clone(),
                            stamp: stamp.source.clone(),
                            source: text.clone(),
                        })
                    }
                    _ => others += 1,
                },
            }
        }
        match page.continuation_token {
            Some(t) if !t.is_empty() => query.continuation_token = Some(t),
            _ => break,
        }
    }
    // An item whose recorded image is gone but which has a twin: the first twin stands in.
    for d in &mut duplicates {
        let k = &mut known[d.at];
        if !k.seen {
            k.seen = true;
            d.stands_in = true;
        }
    }
    let mut missing: Vec<(Missing, i64)> = known
        .iter()
        .filter(|k| k.uploaded && !k.seen && in_scope(k))
        .map(|k| {
            (
                Missing {
                    source: sources[k.source as usize].clone(),
                    key: k.key.clone(),
                    image_id: k.image_id.clone().unwrap_or_default(),
                    requeued: None,
                },
                k.source_id,
            )
        })
        .collect();
    drop(known);

    let (mut requeued, mut deleted) = (0u64, 0u64);
    if let Some(m) = &maintenance {
        for (miss, source_id) in &mut missing {
            // Lists lag behind uploads: only a 404 proves the image is gone.
            match lane.call(&spent, || lane.client.get(&miss.image_id)).await {
                Ok(_) => miss.requeued = Some(false),
                Err(e) if e.is_not_found() => {
                    let why = format!(
                        "verify: image {} is missing from the account; re-queued",
                        miss.image_id
                    );
                    let done = m.requeue(*source_id, &miss.key, &why)?;
                    requeued += u64::from(done);
                    miss.requeued = Some(done);
                }
                Err(e) => return Err(e),
            }
        }
        for d in &mut duplicates {
            if d.stands_in {
                let done = m.adopt(d.source_id, &d.key, &d.image_id, d.url.as_deref())?;
                d.adopted = Some(done);
                continue;
            }
            // Said before acting: a script's log shows what the repair broke.
            eprintln!(
                "cfimg: deleting duplicate {} of {} {} (the ledger maps {}): its delivery URLs stop working",
                d.image_id,
                Shown(&d.source),
                Shown(&d.key),
                d.kept
            );
            match lane.call(&spent, || lane.client.delete(&d.image_id)).await {
                Ok(()) => {
                    deleted += 1;
                    d.deleted = Some(true);
                }
                Err(e) if e.is_not_found() => d.deleted = Some(true),
                Err(e) => return Err(e),
            }
        }
    }
    let clean = missing.is_empty()
        && duplicates.is_empty()
        && orphans.is_empty()
        && unrecorded.is_empty()
        && mismatches.is_empty();
    let missing: Vec<Missing> = missing.into_iter().map(|(m, _)| m).collect();
    let requests = spent.load(Ordering::Relaxed);
    if args.output.json {
        println!(
            "{}",
            json!({
                "clean": clean,
                "ledger_rows": rows,
                "listed": listed,
                "pages": pages,
                "requests": requests,
                "unmanaged": unmanaged,
                "other_sources_or_shards": others,
                "shard": shard.map(|s| s.to_string()),
                "counts": {
                    "missing": missing.len(),
                    "duplicates": duplicates.len(),
                    "orphans": orphans.len(),
                    "unrecorded": unrecorded.len(),
                    "mismatches": mismatches.len(),
                },
                "missing": missing,
                "duplicates": duplicates,
                "orphans": orphans,
                "unrecorded": unrecorded,
                "mismatches": mismatches,
                "repaired": args.repair.then(|| json!({ "requeued": requeued, "deleted": deleted })),
            })
        );
    } else {
        print_text(&TextReport {
            rows,
            listed,
            pages,
            unmanaged,
            others,
            shard,
            ledger: &path,
            missing: &missing,
            duplicates: &duplicates,
            orphans: &orphans,
            unrecorded: &unrecorded,
            mismatches: &mismatches,
            repair: args.repair,
            requeued,
            deleted,
        });
    }
    Ok(if clean { EXIT_OK } else { EXIT_INCOMPLETE })
}

struct TextReport<'a> {
    rows: u64,
    listed: u64,
    pages: u64,
    unmanaged: u64,
    others: u64,
    shard: Option<Shard>,
    ledger: &'a std::path::Path,
    missing: &'a [Missing],
    duplicates: &'a [Duplicate],
    orphans: &'a [Orphan],
    unrecorded: &'a [Unrecorded],
    mismatches: &'a [Mismatch],
    repair: bool,
    requeued: u64,
    deleted: u64,
}

fn print_text(r: &TextReport<'_>) {
    println!(
        "{}, {} listed in {} ({} without a cfimg stamp, not judged)",
        plural(r.rows, "ledger row", "ledger rows"),
        plural(r.listed, "image", "images"),
        plural(r.pages, "page", "pages"),
        r.unmanaged
    );
    println!(
        "other sources or shards: {} (images of sources this ledger has never seen, of other shards, \
         or stamped before images named their source; not judged)",
        r.others
    );
    println!(
        "missing {}, duplicates {}, orphans {}, unrecorded {}, content mismatches {}",
        r.missing.len(),
        r.duplicates.len(),
        r.orphans.len(),
        r.unrecorded.len(),
        r.mismatches.len()
    );
    for m in r.missing {
        let what = match m.requeued {
            Some(true) => " (re-queued: the next `cfimg migrate` uploads it)",
            Some(false) => " (a GET found it after all: the listing lagged; nothing to do)",
            None => "",
        };
        println!(
            "missing\t{}\t{}\t{}{what}",
            Shown(&m.source),
            Shown(&m.key),
            Shown(&m.image_id)
        );
    }
    for d in r.duplicates {
        let what = match (d.stands_in, d.deleted, d.adopted) {
            (_, _, Some(true)) => " (the recorded image is gone: this one is now recorded instead)",
            (true, _, _) => " (the recorded image is gone: --repair records this one instead)",
            (_, Some(true), _) => " (deleted)",
            _ => "",
        };
        println!(
            "duplicate\t{}\t{}\t{} (recorded: {}){what}",
            Shown(&d.source),
            Shown(&d.key),
            Shown(&d.image_id),
            Shown(&d.kept)
        );
    }
    for o in r.orphans {
        match (&o.source, &o.key) {
            (Some(s), Some(k)) => println!(
                "orphan\t{}\tstamp {}: an image of {} {} the ledger does not hold (another version, or an interrupted upload)",
                Shown(&o.image_id),
                Shown(&o.stamp),
                Shown(s),
                Shown(k)
            ),
            _ => println!(
                "orphan\t{}\tstamp {}: no row of this ledger maps it",
                Shown(&o.image_id),
                Shown(&o.stamp)
            ),
        }
    }
    for u in r.unrecorded {
        println!(
            "unrecorded\t{}\tstamp {}: an image of {} for an item this ledger has no row for",
            Shown(&u.image_id),
            Shown(&u.stamp),
            Shown(&u.source)
        );
    }
    if let Some(u) = r.unrecorded.first() {
        let source = u.source.split_once(':').and_then(|(kind, location)| {
            crate::source::SourceKind::parse(kind)
                .map(|k| crate::source::SourceId::new(k, location))
        });
        let rebuild = source
            .map(|s| crate::existing::rebuild_command(&s, r.ledger, r.shard))
            .unwrap_or_else(|| "cfimg ledger rebuild --source ...".into());
        // The source comes from an image's metadata: anything a client wrote there.
        let rebuild = Shown(&rebuild).to_string();
        match r.shard {
            Some(_) => println!(
                "unrecorded images are this ledger's: it lost their rows; `{rebuild}` records them (do not delete them: they may be in use)"
            ),
            None => println!(
                "unrecorded images belong to another shard (give --shard K/N if this ledger is a shard's), \
                 or this ledger lost their rows: `{rebuild}` records them (do not delete them: they may be in use)"
            ),
        }
    }
    for m in r.mismatches {
        println!(
            "mismatch\t{}\t{}\t{}: ledger sha256 {}, image stamp {}",
            Shown(&m.source),
            Shown(&m.key),
            Shown(&m.image_id),
            m.ledger_sha256.as_deref().unwrap_or("-"),
            m.remote_sha256.as_deref().unwrap_or("-")
        );
    }
    if r.repair {
        println!(
            "repaired: {} re-queued, {} duplicates deleted; orphans are left for you (`cfimg images delete ID` removes one); \
             mismatched images are still mapped by their rows: keep them",
            r.requeued, r.deleted
        );
    } else if !(r.missing.is_empty() && r.duplicates.is_empty()) {
        println!("`cfimg verify --repair` re-queues the missing and deletes the duplicates");
    }
    if r.missing.is_empty()
        && r.duplicates.is_empty()
        && r.orphans.is_empty()
        && r.unrecorded.is_empty()
        && r.mismatches.is_empty()
    {
        println!("clean: the ledger and the account agree");
    }
}

/// The shard a ledger belongs to when its name is the one `migrate --shard K/N` gives it
/// (`<name>-shard-K-of-N.sqlite`).
fn shard_of_name(path: &std::path::Path) -> Option<Shard> {
    let name = path.file_name()?.to_str()?.strip_suffix(".sqlite")?;
    let (_, tail) = name.rsplit_once("-shard-")?;
    let (k, n) = tail.split_once("-of-")?;
    format!("{k}/{n}").parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_ledger_is_known_by_its_default_name() {
        let s = shard_of_name(std::path::Path::new("/x/cfimg-shard-1-of-3.sqlite"));
        assert_eq!(s, Some(Shard { index: 1, count: 3 }));
        assert_eq!(shard_of_name(std::path::Path::new("cfimg.sqlite")), None);
        assert_eq!(
            shard_of_name(std::path::Path::new("a-shard-3-of-3.sqlite")),
            None
        );
    }
}
