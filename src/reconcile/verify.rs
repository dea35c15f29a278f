//! The verify algorithm: the ledger's rows as an [`Index`] (image ids and stamps, not the
//! listing), each listed image judged against it as it arrives ([`Index::judge`], pure),
//! then the recorded images nobody listed ([`Index::finish`]), and the repairs.
//!
//! Findings: *missing* (an uploaded row whose image is not listed), *duplicates* (another
//! image of the same version of a recorded item), *orphans* (images stamped as one of the
//! ledger's items that no row maps: another version, an interrupted upload), *unrecorded*
//! (images stamped by one of the ledger's sources, and its shard, for items it has no row
//! for: a lost ledger), *mismatches* (the recorded image's stamp has another sha256 than
//! the ledger). Images of sources this ledger has never seen, of other shards, or stamped
//! before images named their source are counted, never judged: they belong to another
//! ledger.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::AtomicU32;

use serde::Serialize;

use crate::api::client::ListQuery;
use crate::api::types::Image;
use crate::error::Result;
use crate::ledger::{Ledger, Maintenance, Row, State};
use crate::shard::Shard;
use crate::stamp::{self, Stamp};
use crate::transport::ApiLane;

/// Images per listing page: the 2026 description of the v2 list says "up to 1000 results
/// per page" (the schema still allows 10000), so asking for more may be refused.
const PAGE: u32 = 1_000;

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

/// An uploaded row whose image the listing does not hold.
#[derive(Debug, Serialize)]
pub struct Missing {
    /// The row's source, as the ledger records it.
    pub source: String,
    /// The row's key.
    pub key: String,
    /// The image the row maps.
    pub image_id: String,
    /// With --repair: re-queued for the next migrate; `false` when a GET found it after all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeued: Option<bool>,
    #[serde(skip)]
    source_id: i64,
}

/// Another image of the same version of a recorded item.
#[derive(Debug, Serialize)]
pub struct Duplicate {
    /// The item's source.
    pub source: String,
    /// The item's key.
    pub key: String,
    /// The extra image.
    pub image_id: String,
    /// The image the ledger maps.
    pub kept: String,
    /// The recorded image is not listed: this one stands in for it (--repair records it
    /// as the item's image instead of deleting it).
    pub stands_in: bool,
    /// With --repair: deleted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<bool>,
    /// With --repair: recorded as the item's image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adopted: Option<bool>,
    #[serde(skip)]
    at: usize,
    #[serde(skip)]
    source_id: i64,
    #[serde(skip)]
    url: Option<String>,
}

/// An image stamped as one of the ledger's items that no row maps.
#[derive(Debug, Serialize)]
pub struct Orphan {
    /// The image.
    pub image_id: String,
    /// Its stamp's source field.
    pub stamp: String,
    /// Its stamp's sha256.
    pub sha256: Option<String>,
    /// The item the stamp names, when the ledger knows it.
    pub source: Option<String>,
    /// That item's key.
    pub key: Option<String>,
}

/// An image of one of the ledger's sources for an item it has no row for.
#[derive(Debug, Serialize)]
pub struct Unrecorded {
    /// The image.
    pub image_id: String,
    /// Its stamp's source field.
    pub stamp: String,
    /// The ledger's source it belongs to (`kind:location`).
    pub source: String,
}

/// A recorded image whose stamp has another sha256 than the ledger.
#[derive(Debug, Serialize)]
pub struct Mismatch {
    /// The item's source.
    pub source: String,
    /// The item's key.
    pub key: String,
    /// The recorded image.
    pub image_id: String,
    /// What the ledger records.
    pub ledger_sha256: Option<String>,
    /// What the image's stamp says.
    pub remote_sha256: Option<String>,
}

/// Everything one pass found, with its counts.
#[derive(Debug, Default)]
pub struct Findings {
    /// Images listed.
    pub listed: u64,
    /// Listing pages read.
    pub pages: u64,
    /// Images without a cfimg stamp (not judged).
    pub unmanaged: u64,
    /// Images of other sources or shards (not judged).
    pub others: u64,
    /// See [`Missing`].
    pub missing: Vec<Missing>,
    /// See [`Duplicate`].
    pub duplicates: Vec<Duplicate>,
    /// See [`Orphan`].
    pub orphans: Vec<Orphan>,
    /// See [`Unrecorded`].
    pub unrecorded: Vec<Unrecorded>,
    /// See [`Mismatch`].
    pub mismatches: Vec<Mismatch>,
}

impl Findings {
    /// Whether the ledger and the account agree.
    pub fn clean(&self) -> bool {
        self.missing.is_empty()
            && self.duplicates.is_empty()
            && self.orphans.is_empty()
            && self.unrecorded.is_empty()
            && self.mismatches.is_empty()
    }
}

/// What repairs did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Repaired {
    /// Missing rows re-queued.
    pub requeued: u64,
    /// Duplicates deleted.
    pub deleted: u64,
}

/// One row as the index needs it.
struct Recorded<'a> {
    source_id: i64,
    source: &'a str,
    key: &'a str,
    uploaded: bool,
    image_id: Option<&'a str>,
    sha256: Option<&'a str>,
    stamp: String,
}

/// What the ledger records, by image id and by stamp: all a pass keeps in memory.
#[derive(Default)]
pub struct Index {
    /// Rows read.
    pub rows: u64,
    sources: Vec<String>,
    source_at: HashMap<i64, u32>,
    known: Vec<Known>,
    by_id: HashMap<String, usize>,
    by_stamp: HashMap<String, usize>,
    superseded: HashSet<String>,
    /// The ledger's sources by the source field of their images' stamps.
    by_set: HashMap<String, (i64, String)>,
    only: Option<i64>,
    shard: Option<Shard>,
}

impl Index {
    /// Reads the ledger; `only` limits judgement to one source, `shard` to its items.
    pub fn read(ledger: &Ledger, only: Option<i64>, shard: Option<Shard>) -> Result<Index> {
        let mut index = Index {
            only,
            shard,
            ..Index::default()
        };
        ledger.for_each_row(None, |r| {
            index.add_row(r);
            Ok(())
        })?;
        ledger.for_each_superseded(|id| {
            index.superseded.insert(id.to_string());
            Ok(())
        })?;
        for (id, kind, location) in ledger.sources()? {
            index.add_source(id, &format!("{kind}:{location}"));
        }
        Ok(index)
    }

    fn add_row(&mut self, r: &Row) {
        self.rows += 1;
        if r.image_id.is_none() && r.stamp.is_none() {
            return;
        }
        self.add(Recorded {
            source_id: r.source_id,
            source: &r.source,
            key: &r.key,
            uploaded: r.state == State::Uploaded && r.image_id.is_some(),
            image_id: r.image_id.as_deref(),
            sha256: r.sha256.as_deref(),
            stamp: r.stamp_source(),
        });
    }

    fn add(&mut self, r: Recorded<'_>) {
        let sources = &mut self.sources;
        let source = *self.source_at.entry(r.source_id).or_insert_with(|| {
            sources.push(r.source.to_string());
            (sources.len() - 1) as u32
        });
        let at = self.known.len();
        let same_image = r
            .image_id
            .and_then(|id| self.by_id.insert(id.to_string(), at));
        self.by_stamp.insert(r.stamp, at);
        self.known.push(Known {
            source,
            source_id: r.source_id,
            key: r.key.to_string(),
            uploaded: r.uploaded,
            image_id: r.image_id.map(str::to_string),
            sha256: r.sha256.map(str::to_string),
            seen: false,
            same_image,
        });
    }

    fn add_source(&mut self, id: i64, text: &str) {
        self.by_set
            .insert(stamp::set_hash(text), (id, text.to_string()));
    }

    fn in_scope(&self, k: &Known) -> bool {
        self.only.is_none_or(|s| s == k.source_id)
    }

    /// Judges one listed image against the ledger and keeps what it finds.
    pub fn judge(&mut self, image: &Image, f: &mut Findings) {
        f.listed += 1;
        let stamp = Stamp::of(image);
        if let Some(&first) = self.by_id.get(&image.id) {
            // Every row mapping this image has it, not only the last one read.
            let remote = stamp.as_ref().and_then(|s| s.sha256.clone());
            let mut next = Some(first);
            while let Some(at) = next {
                self.known[at].seen = true;
                let k = &self.known[at];
                next = k.same_image;
                if k.uploaded
                    && remote.is_some()
                    && k.sha256.is_some()
                    && remote != k.sha256
                    && self.in_scope(k)
                {
                    f.mismatches.push(Mismatch {
                        source: self.sources[k.source as usize].clone(),
                        key: k.key.clone(),
                        image_id: image.id.clone(),
                        ledger_sha256: k.sha256.clone(),
                        remote_sha256: remote.clone(),
                    });
                }
            }
            return;
        }
        if self.superseded.contains(&image.id) {
            return;
        }
        let Some(stamp) = stamp else {
            f.unmanaged += 1;
            return;
        };
        let Some(&at) = self.by_stamp.get(&stamp.source) else {
            self.judge_unknown(image, &stamp, f);
            return;
        };
        let k = &self.known[at];
        if !self.in_scope(k) {
            f.others += 1;
        } else if k.uploaded && k.sha256 == stamp.sha256 {
            f.duplicates.push(Duplicate {
                stands_in: false,
                adopted: None,
                at,
                source_id: k.source_id,
                url: crate::upload::delivery_url(image),
                source: self.sources[k.source as usize].clone(),
                key: k.key.clone(),
                image_id: image.id.clone(),
                kept: k.image_id.clone().unwrap_or_default(),
                deleted: None,
            });
        } else {
            f.orphans.push(Orphan {
                image_id: image.id.clone(),
                stamp: stamp.source.clone(),
                sha256: stamp.sha256.clone(),
                source: Some(self.sources[k.source as usize].clone()),
                key: Some(k.key.clone()),
            });
        }
    }

    /// No row names this item: whose image it is, only the source field and the shard
    /// rule can tell.
    fn judge_unknown(&self, image: &Image, stamp: &Stamp, f: &mut Findings) {
        match stamp.set.as_ref().and_then(|set| self.by_set.get(set)) {
            Some((id, text))
                if self.only.is_none_or(|s| s == *id)
                    && self.shard.is_none_or(|sh| sh.owns_stamp(&stamp.source)) =>
            {
                f.unrecorded.push(Unrecorded {
                    image_id: image.id.clone(),
                    stamp: stamp.source.clone(),
                    source: text.clone(),
                })
            }
            _ => f.others += 1,
        }
    }

    /// After the listing: duplicates stand in for recorded images that are gone, and the
    /// uploaded rows nobody listed are missing.
    pub fn finish(mut self, f: &mut Findings) {
        // An item whose recorded image is gone but which has a twin: the first twin stands in.
        for d in &mut f.duplicates {
            let k = &mut self.known[d.at];
            if !k.seen {
                k.seen = true;
                d.stands_in = true;
            }
        }
        f.missing = self
            .known
            .iter()
            .filter(|k| k.uploaded && !k.seen && self.in_scope(k))
            .map(|k| Missing {
                source: self.sources[k.source as usize].clone(),
                key: k.key.clone(),
                image_id: k.image_id.clone().unwrap_or_default(),
                requeued: None,
                source_id: k.source_id,
            })
            .collect();
    }
}

/// One pass over the v2 listing (following continuation tokens; never a request per
/// item), judging each image against `index`.
pub async fn check(lane: &ApiLane, spent: &AtomicU32, mut index: Index) -> Result<Findings> {
    let mut query = ListQuery {
        per_page: Some(PAGE),
        ..ListQuery::default()
    };
    let mut f = Findings::default();
    loop {
        let page = lane.call(spent, || lane.client.list_v2(&query)).await?;
        f.pages += 1;
        for image in &page.images {
            index.judge(image, &mut f);
        }
        match page.continuation_token {
            Some(t) if !t.is_empty() => query.continuation_token = Some(t),
            _ => break,
        }
    }
    index.finish(&mut f);
    Ok(f)
}

/// Re-queues the missing (after a GET confirms each is really gone, since lists lag),
/// records a standing-in duplicate as its item's image and deletes the other duplicates,
/// keeping the recorded image. `deleting` is told before each delete.
pub async fn repair(
    lane: &ApiLane,
    spent: &AtomicU32,
    m: &Maintenance,
    f: &mut Findings,
    mut deleting: impl FnMut(&Duplicate),
) -> Result<Repaired> {
    let mut done = Repaired::default();
    for miss in &mut f.missing {
        // Lists lag behind uploads: only a 404 proves the image is gone.
        match lane.call(spent, || lane.client.get(&miss.image_id)).await {
            Ok(_) => miss.requeued = Some(false),
            Err(e) if e.is_not_found() => {
                let why = format!(
                    "verify: image {} is missing from the account; re-queued",
                    miss.image_id
                );
                let queued = m.requeue(miss.source_id, &miss.key, &why)?;
                done.requeued += u64::from(queued);
                miss.requeued = Some(queued);
            }
            Err(e) => return Err(e),
        }
    }
    for d in &mut f.duplicates {
        if d.stands_in {
            let adopted = m.adopt(d.source_id, &d.key, &d.image_id, d.url.as_deref())?;
            d.adopted = Some(adopted);
            continue;
        }
        deleting(d);
        match lane.call(spent, || lane.client.delete(&d.image_id)).await {
            Ok(()) => {
                done.deleted += 1;
                d.deleted = Some(true);
            }
            Err(e) if e.is_not_found() => d.deleted = Some(true),
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Source 1 (`dir:/a`) has `up` uploaded as image `img-up` (sha `s1`) and `pending`
    /// with a stamp but no image; source 2 (`dir:/b`) has `other` uploaded as `img-b`.
    fn index(only: Option<i64>) -> Index {
        let mut ix = Index {
            only,
            ..Index::default()
        };
        let rows = [
            (1, "dir:/a", "up", true, Some("img-up"), Some("s1"), "st-up"),
            (
                1,
                "dir:/a",
                "pending",
                false,
                None,
                Some("s2"),
                "st-pending",
            ),
            (
                2,
                "dir:/b",
                "other",
                true,
                Some("img-b"),
                Some("s3"),
                "st-other",
            ),
        ];
        for (source_id, source, key, uploaded, image_id, sha256, stamp) in rows {
            ix.add(Recorded {
                source_id,
                source,
                key,
                uploaded,
                image_id,
                sha256,
                stamp: stamp.to_string(),
            });
        }
        ix.add_source(1, "dir:/a");
        ix.add_source(2, "dir:/b");
        ix.superseded.insert("img-old".into());
        ix
    }

    fn image(id: &str, stamp: Option<(&str, Option<&str>, Option<&str>)>) -> Image {
        let meta = stamp.map(|(src, set, sha)| {
            let mut m = serde_json::Map::new();
            m.insert(stamp::SOURCE_KEY.into(), src.into());
            if let Some(set) = set {
                m.insert(stamp::SET_KEY.into(), set.into());
            }
            if let Some(sha) = sha {
                m.insert(stamp::SHA256_KEY.into(), sha.into());
            }
            serde_json::Value::Object(m)
        });
        serde_json::from_value(serde_json::json!({ "id": id, "meta": meta, "variants": [] }))
            .expect("a test image parses")
    }

    /// What one image was judged as.
    fn verdict(f: &Findings) -> &'static str {
        match (
            f.unmanaged,
            f.others,
            f.duplicates.len(),
            f.orphans.len(),
            f.unrecorded.len(),
            f.mismatches.len(),
        ) {
            (0, 0, 0, 0, 0, 0) => "none",
            (1, 0, 0, 0, 0, 0) => "unmanaged",
            (0, 1, 0, 0, 0, 0) => "other",
            (0, 0, 1, 0, 0, 0) => "duplicate",
            (0, 0, 0, 1, 0, 0) => "orphan",
            (0, 0, 0, 0, 1, 0) => "unrecorded",
            (0, 0, 0, 0, 0, 1) => "mismatch",
            _ => "several",
        }
    }

    #[test]
    fn each_listed_image_is_judged_against_the_ledger() {
        let set_a = stamp::set_hash("dir:/a");
        let set_c = stamp::set_hash("dir:/c");
        let cases: [(&str, Option<i64>, Image, &str); 12] = [
            (
                "the recorded image",
                None,
                image("img-up", Some(("st-up", None, Some("s1")))),
                "none",
            ),
            (
                "the recorded image, unstamped",
                None,
                image("img-up", None),
                "none",
            ),
            (
                "the recorded image, another sha",
                None,
                image("img-up", Some(("st-up", None, Some("zz")))),
                "mismatch",
            ),
            (
                "another sha, other source in scope only",
                Some(2),
                image("img-up", Some(("st-up", None, Some("zz")))),
                "none",
            ),
            (
                "a superseded image",
                None,
                image("img-old", Some(("st-up", None, Some("s1")))),
                "none",
            ),
            ("no stamp", None, image("x", None), "unmanaged"),
            (
                "same version, another image",
                None,
                image("x", Some(("st-up", None, Some("s1")))),
                "duplicate",
            ),
            (
                "another version of an item",
                None,
                image("x", Some(("st-up", None, Some("s9")))),
                "orphan",
            ),
            (
                "an item with no image yet",
                None,
                image("x", Some(("st-pending", None, Some("s2")))),
                "orphan",
            ),
            (
                "an item of a source out of scope",
                Some(2),
                image("x", Some(("st-up", None, Some("s1")))),
                "other",
            ),
            (
                "no row, one of the ledger's sources",
                None,
                image("x", Some(("st-new", Some(&set_a), None))),
                "unrecorded",
            ),
            (
                "no row, a source never seen",
                None,
                image("x", Some(("st-new", Some(&set_c), None))),
                "other",
            ),
        ];
        for (what, only, img, want) in cases {
            let mut ix = index(only);
            let mut f = Findings::default();
            ix.judge(&img, &mut f);
            assert_eq!(f.listed, 1, "{what}");
            assert_eq!(verdict(&f), want, "{what}");
        }
    }

    #[test]
    fn unlisted_uploads_are_missing_unless_a_twin_stands_in() {
        let mut ix = index(None);
        let mut f = Findings::default();
        ix.judge(&image("twin", Some(("st-up", None, Some("s1")))), &mut f);
        ix.finish(&mut f);
        assert!(f.duplicates[0].stands_in, "the twin stands in for img-up");
        let missing: Vec<&str> = f.missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(missing, ["other"]);

        let mut f = Findings::default();
        index(Some(1)).finish(&mut f);
        let missing: Vec<&str> = f.missing.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(missing, ["up"], "only the source in scope");
    }
}
