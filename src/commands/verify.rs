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

//! `cfimg verify`: the ledger against the account, in one pass over the v2 listing. The
//! algorithm is `reconcile::verify`; this file opens the ledger, takes the flags and prints.
//! `--repair` re-queues the missing (after a GET confirms each is really gone, since lists
//! lag) and deletes the duplicates, keeping the recorded image; the rest is reported only.
//! `--deep` compares the stored pictures with their sources instead (`reconcile::deep`).

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use super::ledger_views::ledger_path;
use super::{EXIT_INCOMPLETE, EXIT_INTERRUPTED, EXIT_OK, api_lane};
use crate::cli::{Cli, VerifyArgs};
use crate::error::{Error, Result};
use crate::ledger::{Ledger, Maintenance};
use crate::progress::plural;
use crate::reconcile::deep::{self, Sample, Verdict};
use crate::reconcile::verify::{self, Findings, Index, Repaired};
use crate::shard::Shard;
use crate::shown::Shown;

/// Runs the check (and the repairs); exit 0 when the ledger and the account agree.
pub async fn run(cli: &Cli, args: &VerifyArgs) -> Result<i32> {
    let path = ledger_path(cli)?;
    if !path.exists() {
        return Err(Error::Usage(format!(
            "no ledger at {}: nothing to verify (a lost ledger: `cfimg ledger rebuild --source DIR`)",
            path.display()
        )));
    }
    if args.deep {
        return deep(cli, args, &path).await;
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
    let index = Index::read(ledger, only, shard)?;
    let rows = index.rows;
    let spent = AtomicU32::new(0);
    let mut found = verify::check(&lane, &spent, index).await?;
    let mut repaired = Repaired::default();
    if let Some(m) = &maintenance {
        repaired = verify::repair(&lane, &spent, m, &mut found, |d| {
            // Said before acting: a script's log shows what the repair broke.
            eprintln!(
                "cfimg: deleting duplicate {} of {} {} (the ledger maps {}): its delivery URLs stop working",
                d.image_id,
                Shown(&d.source),
                Shown(&d.key),
                d.kept
            );
        })
        .await?;
    }
    let clean = found.clean();
    let requests = spent.load(Ordering::Relaxed);
    let report = Report {
        rows,
        shard,
        found: &found,
        repair: args.repair,
        repaired,
    };
    if args.output.json {
        print_json(&report, requests);
    } else {
        print_text(&report, &path);
    }
    Ok(if clean { EXIT_OK } else { EXIT_INCOMPLETE })
}

/// `verify --deep`: the stored originals against their sources, one line per image that is
/// not `ok` or `recompressed` as it is known, then the summary.
async fn deep(cli: &Cli, args: &VerifyArgs, path: &std::path::Path) -> Result<i32> {
    let (cfg, lane) = api_lane(cli)?;
    let ledger = Ledger::open_existing(path)?;
    let only = match &args.source {
        Some(s) => Some(
            ledger
                .find_source(s)?
                .ok_or_else(|| Error::Usage(format!("the ledger has no source {s}")))?,
        ),
        None => None,
    };
    let sample = args.sample.unwrap_or(Sample::All);
    let spent = AtomicU32::new(0);
    let json = args.output.json;
    let stop = stop_on_signal()?;
    let tally = deep::run(
        ledger,
        only,
        sample,
        cfg.source_settings(),
        &lane,
        &spent,
        &stop,
        |c| {
            if !c.verdict.listed() {
                return;
            }
            if json {
                println!("{}", json!(c));
            } else {
                println!(
                    "{}\t{}\t{}\t{}{}",
                    c.verdict.word(),
                    Shown(&c.target.source),
                    Shown(&c.target.key),
                    Shown(&c.target.image_id),
                    deep_detail(&c.verdict)
                );
            }
        },
    )
    .await?;
    let requests = spent.load(Ordering::Relaxed);
    if json {
        println!(
            "{}",
            json!({ "summary": { "clean": tally.clean(), "requests": requests, "counts": tally } })
        );
    } else {
        let of = if tally.interrupted {
            "checked before the interruption".to_string()
        } else {
            format!(
                "of {} checked",
                plural(tally.mapped, "mapped image", "mapped images")
            )
        };
        println!(
            "{} {of} ({requests} requests, {} bytes of originals): {} ok, {} recompressed, \
             {} same dimensions (format not decoded), {} different, {} missing, {} source gone, \
             {} source changed, {} unchecked",
            tally.checked,
            tally.blob_bytes,
            tally.ok,
            tally.recompressed,
            tally.same_dimensions,
            tally.different,
            tally.missing,
            tally.source_gone,
            tally.source_changed,
            tally.unchecked
        );
        if tally.interrupted {
            println!("interrupted: the images not checked yet were left out");
        } else if tally.clean() {
            println!("clean: the account holds the pictures of their sources");
        }
    }
    Ok(if tally.interrupted {
        EXIT_INTERRUPTED
    } else if tally.clean() {
        EXIT_OK
    } else {
        EXIT_INCOMPLETE
    })
}

/// The first SIGINT/SIGTERM cancels the token (the checks in flight end, their files are
/// deleted, the summary so far is printed); a second one quits at once. The handlers are in
/// place when this returns, before any download starts.
fn stop_on_signal() -> Result<tokio_util::sync::CancellationToken> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |source| Error::Io {
        path: "(signal handler)".into(),
        source,
    };
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let stop = tokio_util::sync::CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        token.cancel();
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        eprintln!("cfimg: quitting now");
        std::process::exit(EXIT_INTERRUPTED);
    });
    Ok(stop)
}

/// What a listed verdict adds after the image id.
fn deep_detail(v: &Verdict) -> String {
    match v {
        Verdict::Different { reason } => format!(": {}", Shown(reason)),
        Verdict::SourceGone { reason } | Verdict::Unchecked { reason } => {
            format!(": {}", Shown(reason))
        }
        Verdict::SameDimensions { format } => {
            format!(": {format} is not decoded; its dimensions and frames match")
        }
        Verdict::Missing => {
            ": the account has no such image (`cfimg verify --repair` re-queues it)".into()
        }
        Verdict::SourceChanged => {
            ": the source changed since its upload; the next `cfimg migrate` replaces the image"
                .into()
        }
        Verdict::Ok | Verdict::Recompressed { .. } => String::new(),
    }
}

/// What a run found and did, for printing.
struct Report<'a> {
    rows: u64,
    shard: Option<Shard>,
    found: &'a Findings,
    repair: bool,
    repaired: Repaired,
}

fn print_json(r: &Report<'_>, requests: u32) {
    let f = r.found;
    println!(
        "{}",
        json!({
            "clean": f.clean(),
            "ledger_rows": r.rows,
            "listed": f.listed,
            "pages": f.pages,
            "requests": requests,
            "unmanaged": f.unmanaged,
            "other_sources_or_shards": f.others,
            "shard": r.shard.map(|s| s.to_string()),
            "counts": {
                "missing": f.missing.len(),
                "duplicates": f.duplicates.len(),
                "orphans": f.orphans.len(),
                "unrecorded": f.unrecorded.len(),
                "mismatches": f.mismatches.len(),
            },
            "missing": f.missing,
            "duplicates": f.duplicates,
            "orphans": f.orphans,
            "unrecorded": f.unrecorded,
            "mismatches": f.mismatches,
            "repaired": r.repair.then(|| json!({ "requeued": r.repaired.requeued, "deleted": r.repaired.deleted })),
        })
    );
}

fn print_text(report: &Report<'_>, ledger: &std::path::Path) {
    let f = report.found;
    print_summary(report);
    print_missing_and_duplicates(f);
    print_orphans_and_unrecorded(f, ledger, report.shard);
    print_mismatches(f);
    if report.repair {
        println!(
            "repaired: {} re-queued, {} duplicates deleted; orphans are left for you (`cfimg images delete ID` removes one); \
             mismatched images are still mapped by their rows: keep them",
            report.repaired.requeued, report.repaired.deleted
        );
    } else if !(f.missing.is_empty() && f.duplicates.is_empty()) {
        println!("`cfimg verify --repair` re-queues the missing and deletes the duplicates");
    }
    if f.clean() {
        println!("clean: the ledger and the account agree");
    }
}

fn print_summary(report: &Report<'_>) {
    let r = report.found;
    println!(
        "{}, {} listed in {} ({} without a cfimg stamp, not judged)",
        plural(report.rows, "ledger row", "ledger rows"),
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
}

fn print_missing_and_duplicates(r: &Findings) {
    for m in &r.missing {
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
    for d in &r.duplicates {
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
}

fn print_orphans_and_unrecorded(r: &Findings, ledger: &std::path::Path, shard: Option<Shard>) {
    for o in &r.orphans {
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
    for u in &r.unrecorded {
        println!(
            "unrecorded\t{}\tstamp {}: an image of {} for an item this ledger has no row for",
            Shown(&u.image_id),
            Shown(&u.stamp),
            Shown(&u.source)
        );
    }
    if let Some(u) = r.unrecorded.first() {
        let source = u.source.split_once(':').and_then(|(kind, location)| {
            crate::item::SourceKind::parse(kind).map(|k| crate::item::SourceId::new(k, location))
        });
        let rebuild = source
            .map(|s| crate::existing::rebuild_command(&s, ledger, shard))
            .unwrap_or_else(|| "cfimg ledger rebuild --source ...".into());
        // The source comes from an image's metadata: anything a client wrote there.
        let rebuild = Shown(&rebuild).to_string();
        match shard {
            Some(_) => println!(
                "unrecorded images are this ledger's: it lost their rows; `{rebuild}` records them (do not delete them: they may be in use)"
            ),
            None => println!(
                "unrecorded images belong to another shard (give --shard K/N if this ledger is a shard's), \
                 or this ledger lost their rows: `{rebuild}` records them (do not delete them: they may be in use)"
            ),
        }
    }
}

fn print_mismatches(r: &Findings) {
    for m in &r.mismatches {
        println!(
            "mismatch\t{}\t{}\t{}: ledger sha256 {}, image stamp {}",
            Shown(&m.source),
            Shown(&m.key),
            Shown(&m.image_id),
            m.ledger_sha256.as_deref().unwrap_or("-"),
            m.remote_sha256.as_deref().unwrap_or("-")
        );
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
