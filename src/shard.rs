//! Shards: `--shard K/N` splits one source over N independent runs (N machines, or the N
//! pods of a Kubernetes Indexed Job). A stable hash of (source, key) picks each item's
//! shard, so every shard sees the same listing, takes only its own items, keeps its own
//! ledger, and needs no coordination with the others.

use std::fmt;
use std::str::FromStr;

use crate::item::SourceId;
use crate::stamp;

/// This run's part of the source: shard `index` of `count`, counted from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    /// Which shard, `0..count` (Kubernetes' `JOB_COMPLETION_INDEX`).
    pub index: u32,
    /// How many shards there are.
    pub count: u32,
}

impl Shard {
    /// Whether an item belongs to this shard. The hash is the item's stamp hash, so it is
    /// stable across runs, machines and cfimg versions that keep the stamp.
    pub fn owns(&self, source: &SourceId, key: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        self.owns_stamp(&stamp::source_hash(source, key))
    }

    /// Whether an image whose stamp carries this item hash (`cfimg_src`) is this shard's:
    /// the same rule as [`Shard::owns`], read back from the image.
    pub fn owns_stamp(&self, hash: &str) -> bool {
        if self.count <= 1 {
            return true;
        }
        // The first 16 hex digits are 64 evenly spread bits.
        let bits = hash
            .get(..16)
            .and_then(|h| u64::from_str_radix(h, 16).ok())
            .unwrap_or(0);
        bits % u64::from(self.count) == u64::from(self.index)
    }

    /// The ledger file a shard uses unless one is given: one per shard, so that a restarted
    /// shard resumes its own items.
    pub fn ledger_name(&self, base: &str) -> String {
        let stem = base.strip_suffix(".sqlite").unwrap_or(base);
        format!("{stem}-shard-{}-of-{}.sqlite", self.index, self.count)
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Shard, String> {
        let usage = || {
            format!(
                "--shard {s:?}: use K/N with 0 <= K < N, e.g. 0/3 (K counts from 0, like JOB_COMPLETION_INDEX)"
            )
        };
        let (k, n) = s.split_once('/').ok_or_else(usage)?;
        let index: u32 = k.trim().parse().map_err(|_| usage())?;
        let count: u32 = n.trim().parse().map_err(|_| usage())?;
        if count == 0 || index >= count || count > 10_000 {
            return Err(usage());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::SourceKind;

    #[test]
    fn every_item_belongs_to_exactly_one_shard_and_shards_are_even() {
        let src = SourceId::new(SourceKind::Dir, "/srv/images");
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, count: 3 }).collect();
        let mut sizes = [0usize; 3];
        for i in 0..3000 {
            let key = format!("d{}/f{i}.jpg", i % 7);
            let owners: Vec<usize> = (0..3).filter(|&s| shards[s].owns(&src, &key)).collect();
            assert_eq!(owners.len(), 1, "{key}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|&n| (850..1150).contains(&n)), "{sizes:?}");
    }

    #[test]
    fn parses_k_of_n_and_names_its_ledger() {
        let s: Shard = "2/5".parse().unwrap();
        assert_eq!(s, Shard { index: 2, count: 5 });
        assert_eq!(s.ledger_name("cfimg.sqlite"), "cfimg-shard-2-of-5.sqlite");
        for bad in ["5/5", "1", "a/3", "0/0", "-1/3"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }
}
