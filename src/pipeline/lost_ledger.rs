//! Before the first upload of a source the ledger has no row for: are its images in the
//! account already (the ledger was deleted, replaced or emptied)?

use crate::config::Config;
use crate::error::{Disposition, Error, Result};
use crate::item::SourceId;
use crate::ledger::Ledger;
use crate::shard::Shard;
use crate::transport::ApiLane;

/// Before the first upload of a source this ledger has no row for, looks for the source's
/// images in the account (see `existing.rs`). Those whose ids this run's id mode would not
/// give again (all of them with Cloudflare-assigned ids; with custom ids, those uploaded
/// in another mode, e.g. an `auto` library rerun without `--id-mode auto`) would be
/// uploaded again: the run stops before its first upload. The others are each met as a
/// 5409 and recorded without a duplicate, so the run goes on, with a warning that
/// `ledger rebuild` does the same in far fewer requests. A ledger with any row for the
/// source skips the check (no request): an older backup restored in place is not noticed
/// here (`cfimg verify` reports its missing rows).
pub(super) async fn check(
    cfg: &Config,
    lane: &ApiLane,
    source: &SourceId,
    source_id: i64,
    shard: Option<Shard>,
) -> Result<()> {
    let known = match Ledger::open_read_only(&cfg.ledger)? {
        Some(l) => l.has_items(source_id)?,
        None => false,
    };
    if known || source.kind == crate::item::SourceKind::Drafts {
        return Ok(());
    }
    let mode = cfg.upload.id_mode;
    let auto = mode == crate::config::IdMode::Auto;
    let found = match crate::existing::look(lane, source, shard).await {
        Ok(f) => f,
        // Only a warning is at stake with custom ids: the 5409s protect the library.
        Err(e) if !auto && e.disposition() != Disposition::Fatal => {
            tracing::warn!(error = %e, "could not look for this source's images in the account; going on (custom ids cannot duplicate)");
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    tracing::debug!(
        images = found.images,
        assigned = found.assigned,
        hashed = found.hashed,
        requests = found.requests,
        "looked for this source's images before its first upload"
    );
    if found.images == 0 {
        return Ok(());
    }
    let rebuild = crate::existing::rebuild_command(source, &cfg.ledger, shard);
    let what = format!(
        "the account already holds {} {} uploaded from {source}{} (by their cfimg stamp), \
         but the ledger {} has no row for this source: it was deleted, replaced or emptied",
        found.count_text(),
        if found.images == 1 && !found.more {
            "image"
        } else {
            "images"
        },
        shard.map(|s| format!(" shard {s}")).unwrap_or_default(),
        cfg.ledger.display()
    );
    let fix = format!(
        "Record them in the ledger first: `{rebuild}` (one listing pass), then run again; or \
         run again with --ignore-existing to upload anyway"
    );
    if auto {
        return Err(Error::Usage(format!(
            "{what}. With `id_mode = auto` every one of them would be uploaded again, so \
             nothing was uploaded. {fix}"
        )));
    }
    let lost = found.not_recognised(mode, source.kind);
    if lost > 0 {
        // Which mode they came from, as far as their ids tell.
        let mut from = Vec::new();
        if found.assigned > 0 {
            from.push(format!(
                "{} have ids Cloudflare assigned, as with `id_mode = auto`",
                found.assigned
            ));
        }
        if lost > found.assigned {
            from.push(format!(
                "{} have {}",
                lost - found.assigned,
                match mode {
                    crate::config::IdMode::Hash => "path ids, as with `id_mode = path`",
                    _ => "content-hash ids, as with `id_mode = hash`",
                }
            ));
        }
        let assigned = format!(" ({})", from.join(", "));
        return Err(Error::Usage(format!(
            "{what}. {lost} of them have ids that `id_mode = {}` would not give them{assigned}: \
             each would be uploaded again under a new id, so nothing was uploaded. {fix} (or \
             run again with the id mode they were uploaded with)",
            mode.as_str()
        )));
    }
    tracing::warn!(
        "{what}. With `id_mode = {}` each is recognised by its id (one refused upload and \
         one read each): going on. `{rebuild}` records them in one listing pass instead",
        mode.as_str()
    );
    Ok(())
}
