//! `cfimg ledger rebuild --source DIR|s3://BUCKET/PREFIX` or `--manifest FILE`: a lost
//! ledger rebuilt from the account. The algorithm is `reconcile::rebuild`; this file builds
//! the source from the flags, opens the ledger and prints.

use std::sync::atomic::{AtomicU32, Ordering};

use serde_json::json;

use super::ledger_views::ledger_path;
use super::{EXIT_OK, api_lane_with};
use crate::cli::{Cli, RebuildArgs};
use crate::config::{Config, RawConfig, UrlMode};
use crate::error::{Error, Result};
use crate::ledger::{Destination, Maintenance};
use crate::progress::plural;
use crate::reconcile::rebuild::{self, Matched};
use crate::source::{Settings, Source, Spec};

/// The source the flags name, as `migrate` would build it (so that its identity, and so
/// every stamp hash, is the same).
fn source(args: &RebuildArgs, cfg: &Config) -> Result<Source> {
    let settings = Settings {
        // The URL mode does not change a manifest's identity or keys; remote needs no client.
        url_mode: UrlMode::Remote,
        ..cfg.source_settings()
    };
    match (&args.source, &args.manifest) {
        (Some(dir), None) => Source::open(Spec::Location(dir.clone()), &settings),
        (None, Some(file)) => Source::open(
            Spec::Manifest(file.clone(), args.manifest_format),
            &settings,
        ),
        _ => Err(Error::Usage(
            "give the migrated source: --source DIR|s3://BUCKET/PREFIX, or --manifest FILE".into(),
        )),
    }
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
    let items = rebuild::list(source, args.shard).await?;
    let mut ledger = Maintenance::open(&path)?;
    let destination = Destination {
        account_id: cfg.account_id.clone(),
        api_base: cfg.api_base_url.to_string(),
    };
    // Recorded once the account has answered: a mistyped account id binds nothing.
    ledger.ledger().check_destination(&destination)?;
    let source_id = ledger.source(&source_id_text)?;
    let spent = AtomicU32::new(0);
    let m = rebuild::record(&lane, &spent, &mut ledger, &destination, source_id, &items).await?;
    let requests = spent.load(Ordering::Relaxed);
    let source = source_id_text.to_string();
    if args.output.json {
        print_json(&source, items.len() as u64, &m, requests);
    } else {
        print_text(&source, items.len() as u64, &m, requests);
    }
    if m.matched == 0 && items.is_empty() {
        return Err(Error::Usage(format!("{source} holds no items to match")));
    }
    Ok(EXIT_OK)
}

fn print_json(source: &str, items: u64, m: &Matched, requests: u32) {
    println!(
        "{}",
        json!({
            "source": source,
            "items": items,
            // The older name of `items`, from when only folders were rebuilt.
            "files": items,
            "listed": m.listed,
            "matched": m.matched,
            "recorded": m.added,
            "changed_since": m.changed,
            "to_check": m.to_check,
            "not_uploaded": items - m.matched,
            "extra_images": m.extra,
            "requests": requests,
        })
    );
}

fn print_text(source: &str, items: u64, m: &Matched, requests: u32) {
    let (matched, added, extra) = (m.matched, m.added, m.extra);
    let not_found = items - matched;
    println!(
        "{}: {}, {} listed ({}); {matched} matched by their stamp, {added} recorded as uploaded",
        crate::shown::Shown(source),
        plural(items, "item", "items"),
        plural(m.listed, "image", "images"),
        plural(u64::from(requests), "request", "requests"),
    );
    if m.changed > 0 {
        println!(
            "{} since their upload: the next `cfimg migrate` replaces their images",
            plural(m.changed, "file changed", "files changed")
        );
    }
    if m.to_check > 0 {
        println!(
            "{} recorded without their ETag: the next `cfimg migrate` reads each once, \
             compares it with its stamp's sha256 and uploads only those that changed",
            plural(m.to_check, "object is", "objects are")
        );
    }
    if not_found > 0 {
        // Not a promise of uploads: some of them may be what `migrate` rejects (empty
        // files, other types, invalid ids), which is likely why they have no image.
        println!(
            "{} no image: the next `cfimg migrate` uploads those that pass its checks and \
             records a reason for each it rejects (then see `cfimg failures`)",
            plural(not_found, "item has", "items have")
        );
    }
    if extra > 0 {
        println!(
            "{extra} more images carry the stamp of an item already matched: `cfimg verify --repair` deletes them"
        );
    }
}
