//! The lost-ledger check: before the first upload of a source the ledger has no rows for,
//! are this source's images already in the account? With Cloudflare-assigned ids nothing
//! collides, so a deleted, replaced or emptied ledger would upload the whole library again;
//! this check stops that run before its first upload and names `ledger rebuild`.
//!
//! It costs one filtered request (`meta.cfimg_set[eq]=<the source's hash>`, see
//! [`crate::stamp::set_hash`]), at most [`MAX_PAGES`] when a shard must look past other
//! shards' images or the server ignores the filter, and nothing at all when the ledger
//! already has a row for the source (every rerun). It sees only images uploaded by a cfimg
//! that writes the source field; `ledger rebuild` still finds older ones.

use std::sync::atomic::AtomicU32;

use crate::api::client::ListQuery;
use crate::api::types::codes;
use crate::config::IdMode;
use crate::error::{Error, Result};
use crate::item::{SourceId, SourceKind};
use crate::shard::Shard;
use crate::stamp::{self, Stamp};
use crate::transport::ApiLane;

/// Images per page: a server that ignores the filter still shows a good part of the
/// account in one request.
const PAGE: u32 = 1000;
/// Pages at most, so that the check stays a handful of requests whatever the account holds.
pub const MAX_PAGES: u32 = 3;

/// What the look found: this source's images already in the account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PriorUploads {
    /// This source's (and this shard's) images seen.
    pub images: u64,
    /// More pages were left unread: `images` is a lower bound.
    pub more: bool,
    /// Of those, images whose id Cloudflare assigned (a UUID: uploaded with `id_mode = auto`).
    pub assigned: u64,
    /// Of those, images whose id holds their stamp's content hash (uploaded with
    /// `id_mode = hash`).
    pub hashed: u64,
    /// Requests it cost.
    pub requests: u32,
}

impl PriorUploads {
    /// Images seen whose id the given mode would not give their item again: a run in
    /// that mode would upload each of them once more under a new id. A manifest's own
    /// `id` column is kept in every mode, so a manifest's other custom ids count only
    /// against `path`.
    pub fn not_recognised(&self, mode: IdMode, kind: SourceKind) -> u64 {
        match mode {
            IdMode::Auto => self.images,
            IdMode::Path => self.assigned + self.hashed,
            IdMode::Hash if kind == SourceKind::Manifest => self.assigned,
            IdMode::Hash => self.images - self.hashed,
        }
    }

    /// "12" or "at least 3000".
    pub fn count_text(&self) -> String {
        if self.more {
            format!("at least {}", self.images)
        } else {
            self.images.to_string()
        }
    }
}

/// Lists the account's images stamped with this source (and owned by this shard), newest
/// first, for at most [`MAX_PAGES`] pages; stops at the first page that shows any.
pub async fn look(lane: &ApiLane, source: &SourceId, shard: Option<Shard>) -> Result<PriorUploads> {
    let set = stamp::set_hash(&source.to_string());
    let spent = AtomicU32::new(0);
    let mut query = ListQuery {
        per_page: Some(PAGE),
        sort_order: Some("desc".into()),
        meta_eq: vec![(stamp::SET_KEY.into(), set.clone())],
        ..ListQuery::default()
    };
    let mut found = PriorUploads::default();
    for page_no in 0..MAX_PAGES {
        let page = match lane.call(&spent, || lane.client.list_v2(&query)).await {
            Ok(p) => p,
            // A server that refuses metadata filters: the newest images, filtered here.
            Err(Error::Api {
                code: codes::BAD_REQUEST,
                ..
            }) if !query.meta_eq.is_empty() && page_no == 0 => {
                query.meta_eq.clear();
                lane.call(&spent, || lane.client.list_v2(&query)).await?
            }
            Err(e) => return Err(e),
        };
        // Filtered again here: a server may ignore the filter, and shards share the source.
        for (image, stamp) in page.images.iter().filter_map(|i| Some((i, Stamp::of(i)?))) {
            if stamp.set.as_deref() != Some(set.as_str())
                || !shard.is_none_or(|sh| sh.owns_stamp(&stamp.source))
            {
                continue;
            }
            found.images += 1;
            if is_assigned(&image.id) {
                found.assigned += 1;
            } else if stamp
                .sha256
                .as_deref()
                .is_some_and(|sha| image.id.contains(sha))
            {
                found.hashed += 1;
            }
        }
        match page.continuation_token {
            Some(t) if !t.is_empty() => {
                found.more = true;
                query.continuation_token = Some(t);
            }
            _ => {
                found.more = false;
                break;
            }
        }
        if found.images > 0 {
            break;
        }
    }
    found.requests = spent.load(std::sync::atomic::Ordering::Relaxed);
    Ok(found)
}

/// An id in the form Cloudflare assigns (a hyphenated UUID), which no path or hash id has.
fn is_assigned(id: &str) -> bool {
    id.len() == 36 && uuid::Uuid::try_parse(id).is_ok()
}

/// The `ledger rebuild` command that records this source's images in this ledger.
pub fn rebuild_command(
    source: &SourceId,
    ledger: &std::path::Path,
    shard: Option<Shard>,
) -> String {
    let ledger = quote(&ledger.display().to_string());
    let what = match source.kind {
        // A manifest read from stdin is given again the same way.
        SourceKind::Manifest if source.location == "stdin" => "--manifest - < FILE".into(),
        SourceKind::Manifest => format!("--manifest {}", quote(&source.location)),
        SourceKind::Bucket => match source.location.rsplit_once('@') {
            Some((url, at)) => match at.strip_prefix("aws:") {
                Some(region) => format!("--source {} --region {}", quote(url), quote(region)),
                None => format!("--source {} --endpoint-url {}", quote(url), quote(at)),
            },
            None => format!("--source {}", quote(&source.location)),
        },
        // Any other source is named by its location: a folder, or a URL `Source::open` claims.
        _ => format!("--source {}", quote(&source.location)),
    };
    let shard = shard.map(|s| format!(" --shard {s}")).unwrap_or_default();
    format!("cfimg --ledger {ledger} ledger rebuild {what}{shard}")
}

/// A word a POSIX shell reads back as itself.
fn quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:@+=,".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_commands_name_the_source_as_the_flags_spell_it() {
        let ledger = std::path::Path::new("/var/lib/cfimg/l.sqlite");
        let dir = SourceId::new(SourceKind::Dir, "/srv/my photos");
        assert_eq!(
            rebuild_command(&dir, ledger, None),
            "cfimg --ledger /var/lib/cfimg/l.sqlite ledger rebuild --source '/srv/my photos'"
        );
        let aws = SourceId::new(SourceKind::Bucket, "s3://b/p/@aws:eu-west-1");
        assert!(
            rebuild_command(&aws, ledger, None).ends_with("--source s3://b/p/ --region eu-west-1")
        );
        let r2 = SourceId::new(SourceKind::Bucket, "s3://b/@https://x.r2.dev");
        assert!(
            rebuild_command(&r2, ledger, None)
                .ends_with("--source s3://b/ --endpoint-url https://x.r2.dev")
        );
        let m = SourceId::new(SourceKind::Manifest, "/m/urls.csv");
        assert!(
            rebuild_command(&m, ledger, Some(Shard { index: 1, count: 2 }))
                .ends_with("--manifest /m/urls.csv --shard 1/2")
        );
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
