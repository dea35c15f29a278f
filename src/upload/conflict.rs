//! The answer to a 5409 (the custom id is already taken): what the image holding the id is
//! to this item, by its stamp and the ledger, and what the upload does about it. Pure, so
//! that every case is one row of a table test.

use crate::stamp::Stamp;

/// What the GET after a 5409 found at the id.
#[derive(Debug, Clone, Copy)]
pub enum Holder<'a> {
    /// Nothing any more (deleted meanwhile, or still not readable after the settling GETs).
    Gone,
    /// An image, with its stamp when it has one.
    Image(Option<&'a Stamp>),
}

/// What the upload does about a taken id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnConflict {
    /// The id is free again: post again.
    PostAgain,
    /// This version (an earlier attempt) or identical content is there: it is the item's image.
    Keep,
    /// An older version of this item holds the id: copy it aside, delete it, post again.
    Free,
    /// Another item's or another tool's image: the item is refused, and that image left
    /// alone (something else put it there and may still use it). `stamped`: cfimg uploaded it.
    Taken {
        /// The holder carries a cfimg stamp (another item's image), else cfimg did not upload it.
        stamped: bool,
    },
}

/// What to do about the image at a taken id. `wanted` is the stamp of the version being
/// uploaded; `recorded_here` says the ledger records this item holding the id, which makes
/// the holder ours even without a matching stamp (stamps of cfimg 0.1 hashed the key alone).
pub fn on_conflict(holder: Holder<'_>, wanted: &Stamp, recorded_here: bool) -> OnConflict {
    let theirs = match holder {
        Holder::Gone => return OnConflict::PostAgain,
        Holder::Image(stamp) => stamp,
    };
    match theirs {
        Some(s) if s.same_version(wanted) => OnConflict::Keep,
        Some(s) if s.sha256.is_some() && s.sha256 == wanted.sha256 => OnConflict::Keep,
        _ if recorded_here || theirs.is_some_and(|s| s.source == wanted.source) => OnConflict::Free,
        _ => OnConflict::Taken {
            stamped: theirs.is_some(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(source: &str, sha256: Option<&str>) -> Stamp {
        Stamp {
            source: source.into(),
            set: None,
            sha256: sha256.map(str::to_string),
        }
    }

    #[test]
    fn every_holder_of_a_taken_id_gets_its_answer() {
        use OnConflict::*;
        // The version being uploaded: item "me", content "new".
        let wanted = stamp("me", Some("new"));
        let this_version = stamp("me", Some("new"));
        let older_version = stamp("me", Some("old"));
        let same_content_elsewhere = stamp("other", Some("new"));
        let other_item = stamp("other", Some("else"));
        let other_item_by_url = stamp("other", None);
        let our_url_version = stamp("me", None);
        let wanted_url = stamp("me", None);
        // (holder, wanted, the ledger records this item at the id) -> action
        let rows: [(Holder, &Stamp, bool, OnConflict); 13] = [
            (Holder::Gone, &wanted, false, PostAgain),
            (Holder::Gone, &wanted, true, PostAgain),
            (Holder::Image(Some(&this_version)), &wanted, false, Keep),
            (Holder::Image(Some(&this_version)), &wanted, true, Keep),
            (
                Holder::Image(Some(&same_content_elsewhere)),
                &wanted,
                false,
                Keep,
            ),
            (Holder::Image(Some(&older_version)), &wanted, false, Free),
            (Holder::Image(Some(&our_url_version)), &wanted, false, Free),
            // A stamp of cfimg 0.1 (another hash) on the id the ledger gives this item.
            (Holder::Image(Some(&other_item)), &wanted, true, Free),
            (Holder::Image(None), &wanted, true, Free),
            (
                Holder::Image(Some(&other_item)),
                &wanted,
                false,
                Taken { stamped: true },
            ),
            (
                Holder::Image(Some(&other_item_by_url)),
                &wanted,
                false,
                Taken { stamped: true },
            ),
            (
                Holder::Image(None),
                &wanted,
                false,
                Taken { stamped: false },
            ),
            // Two URL bodies (no sha256 either side) are not identical content.
            (
                Holder::Image(Some(&other_item_by_url)),
                &wanted_url,
                false,
                Taken { stamped: true },
            ),
        ];
        for (i, (holder, wanted, recorded_here, action)) in rows.into_iter().enumerate() {
            assert_eq!(
                on_conflict(holder, wanted, recorded_here),
                action,
                "row {i}: {holder:?}, wanted {wanted:?}, recorded here {recorded_here}"
            );
        }
    }
}
