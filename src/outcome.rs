//! How an item's run ends, written once: whichever stage met the end (the quick check,
//! planning, an upload worker), it is counted, logged and turned into its ledger record
//! here.

use std::sync::atomic::Ordering;

use crate::error::Failure;
use crate::item::SourceId;
use crate::ledger::{Record, Superseded, Version};
use crate::progress::Stats;

/// How one item ended in this run.
#[derive(Debug)]
pub enum Outcome {
    /// Its record still describes it: nothing to do, nothing written.
    Unchanged,
    /// Unchanged since its record, which is refreshed.
    Touched(Version),
    /// Failed (`rejected`: rejected) in an earlier run and not tried again in this one.
    StillFailed {
        /// It was rejected, not failed.
        rejected: bool,
    },
    /// Passed over with a reason (a symlink not followed, a hidden file, a FIFO...).
    PassedOver {
        /// The entry.
        version: Version,
        /// Why.
        reason: String,
        /// A hidden or temporary file, or a hidden folder.
        hidden: bool,
        /// The ledger records it as passed over already: not written again.
        known: bool,
    },
    /// A dry run would upload it.
    WouldUpload {
        /// The item.
        key: String,
        /// Its size.
        bytes: u64,
        /// The id it would get (`None`: assigned by Cloudflare).
        id: Option<String>,
        /// The image it would replace.
        replaces: Option<String>,
    },
    /// An image holds it now.
    Stored(Stored),
    /// It did not make it.
    Failed(Failed),
}

/// How an image came to hold an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum How {
    /// Its bytes were uploaded.
    Uploaded,
    /// An image another item holds has the same content; nothing was uploaded for it.
    Deduplicated,
    /// Only its settings changed: its image was updated in place.
    Updated,
}

/// An item an image holds now.
#[derive(Debug)]
pub struct Stored {
    /// How the image came to hold it.
    pub how: How,
    /// The version stored.
    pub version: Version,
    /// Its image.
    pub image_id: String,
    /// A delivery URL.
    pub url: Option<String>,
    /// Requests spent.
    pub attempts: u32,
    /// Its older image went away (replaced by this one).
    pub replaced: bool,
    /// The stamp its image carries (`None`: keep the recorded one).
    pub stamp: Option<String>,
    /// An answer was ambiguous: look for duplicates after this time.
    pub check_after: Option<String>,
    /// The older image, kept in place by `--keep-replaced`.
    pub superseded: Option<Superseded>,
}

/// An item that did not make it.
#[derive(Debug)]
pub struct Failed {
    /// The version that failed.
    pub version: Version,
    /// Why, and what happens next.
    pub reason: String,
    /// Requests spent.
    pub attempts: u32,
    /// Which kind of failure (see [`crate::error::Error::failure`]).
    pub failure: Failure,
    /// Its live image was deleted and could not be put back.
    pub image_gone: bool,
    /// An answer was ambiguous: look for duplicates after this time.
    pub check_after: Option<String>,
}

impl Failed {
    /// A failure before any request: nothing spent, no image touched.
    pub fn before_sending(version: Version, reason: String, failure: Failure) -> Failed {
        Failed {
            version,
            reason,
            attempts: 0,
            failure,
            image_gone: false,
            check_after: None,
        }
    }
}

impl Outcome {
    /// Counts and logs the end, and returns the record the ledger keeps of it, if any.
    /// Failures, passed-over entries and a dry run's uploads are always logged; stored
    /// items only with `log_each` (a daemon's log is its record, a migration has its bar).
    pub fn end(self, stats: &Stats, source: &SourceId, log_each: bool) -> Option<Record> {
        match self {
            Outcome::Unchanged => Stats::bump(&stats.skipped),
            Outcome::Touched(version) => {
                Stats::bump(&stats.skipped);
                return Some(Record::Touch { version });
            }
            Outcome::StillFailed { rejected: true } => Stats::bump(&stats.rejected_earlier),
            Outcome::StillFailed { rejected: false } => Stats::bump(&stats.failed_earlier),
            Outcome::PassedOver {
                version,
                reason,
                hidden,
                known,
            } => {
                tracing::info!(key = %version.key, %reason, "passed over");
                Stats::bump(&stats.ignored);
                if hidden {
                    Stats::bump(&stats.hidden_or_temporary);
                }
                // Recorded once: a rerun over a tree with a `.DS_Store` in every folder
                // reads these rows, it does not write them again.
                return (!known).then_some(Record::Ignored { version, reason });
            }
            Outcome::WouldUpload {
                key,
                bytes,
                id,
                replaces,
            } => {
                tracing::info!(
                    %key,
                    bytes,
                    id = id.as_deref().unwrap_or("(assigned by Cloudflare)"),
                    replaces = replaces.as_deref().unwrap_or("-"),
                    "would upload"
                );
                Stats::bump(&stats.would_upload);
                stats.would_upload_bytes.fetch_add(bytes, Ordering::Relaxed);
            }
            Outcome::Stored(s) => return Some(s.end(stats, source, log_each)),
            Outcome::Failed(f) => return Some(f.end(stats, source)),
        }
        None
    }
}

impl Stored {
    fn end(self, stats: &Stats, source: &SourceId, log_each: bool) -> Record {
        let key = &self.version.key;
        match self.how {
            How::Uploaded => {
                stats.uploaded(self.version.size, self.replaced);
                if log_each {
                    tracing::info!(%source, %key, image_id = %self.image_id, bytes = self.version.size, replaced = self.replaced, "uploaded");
                }
            }
            How::Deduplicated => {
                Stats::bump(&stats.deduplicated);
                // The item's own older image still went away: replaced by the shared one.
                if self.replaced {
                    Stats::bump(&stats.replaced);
                }
                if log_each {
                    tracing::info!(%source, %key, image_id = %self.image_id, "deduplicated: another item holds the same content");
                }
            }
            How::Updated => Stats::bump(&stats.updated),
        }
        Record::Uploaded {
            version: self.version,
            image_id: self.image_id,
            url: self.url,
            attempts: self.attempts,
            replaced: self.replaced,
            stamp: self.stamp,
            check_after: self.check_after,
            superseded: self.superseded,
        }
    }
}

impl Failed {
    fn end(self, stats: &Stats, source: &SourceId) -> Record {
        let rejected = self.failure == Failure::Rejected;
        tracing::warn!(%source, key = %self.version.key, reason = %self.reason, "{}", if rejected { "rejected" } else { "failed" });
        stats.failed(rejected);
        Record::Failed {
            version: self.version,
            reason: self.reason,
            attempts: self.attempts,
            failure: self.failure,
            image_gone: self.image_gone,
            check_after: self.check_after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(size: u64) -> Version {
        Version {
            source_id: 1,
            key: "a.png".into(),
            size,
            mtime_ns: 0,
            etag: None,
            options: None,
            sha256: None,
            ticket: Default::default(),
        }
    }

    fn stored(how: How, replaced: bool) -> Outcome {
        Outcome::Stored(Stored {
            how,
            version: version(10),
            image_id: "img".into(),
            url: None,
            attempts: 1,
            replaced,
            stamp: None,
            check_after: None,
            superseded: None,
        })
    }

    #[test]
    fn every_end_is_counted_once_and_recorded() {
        let stats = Stats::default();
        let source = SourceId {
            kind: crate::item::SourceKind::Dir,
            location: "/photos".into(),
        };
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        let r = stored(How::Uploaded, true).end(&stats, &source, true);
        assert!(matches!(r, Some(Record::Uploaded { replaced: true, .. })));
        assert_eq!((get(&stats.uploaded), get(&stats.replaced)), (1, 1));
        assert_eq!(get(&stats.bytes), 10);
        stored(How::Deduplicated, true).end(&stats, &source, false);
        assert_eq!((get(&stats.deduplicated), get(&stats.replaced)), (1, 2));
        stored(How::Updated, false).end(&stats, &source, false);
        assert_eq!(get(&stats.updated), 1);
        let r = Outcome::Touched(version(0)).end(&stats, &source, false);
        assert!(matches!(r, Some(Record::Touch { .. })));
        assert_eq!(get(&stats.skipped), 1);
        for (failure, rejected, failed) in [
            (Failure::Rejected, 1, 0),
            (Failure::Local, 1, 1),
            (Failure::Deferred, 1, 2),
        ] {
            let f = Failed::before_sending(version(0), "why".into(), failure);
            let r = Outcome::Failed(f).end(&stats, &source, false);
            assert!(matches!(r, Some(Record::Failed { failure: f, .. }) if f == failure));
            assert_eq!(
                (get(&stats.rejected), get(&stats.failed)),
                (rejected, failed)
            );
        }
        // Uploaded, deduplicated, updated, touched, and three failed: each once.
        assert_eq!(stats.finished(), 7);
        assert!(Outcome::Unchanged.end(&stats, &source, false).is_none());
        Outcome::StillFailed { rejected: true }.end(&stats, &source, false);
        Outcome::StillFailed { rejected: false }.end(&stats, &source, false);
        assert_eq!(get(&stats.skipped), 2);
        assert_eq!(
            (get(&stats.rejected_earlier), get(&stats.failed_earlier)),
            (1, 1)
        );
        let passed = |known| Outcome::PassedOver {
            version: version(0),
            reason: "a hidden file".into(),
            hidden: true,
            known,
        };
        // Recorded once: a known entry is counted again, not written again.
        assert!(matches!(
            passed(false).end(&stats, &source, false),
            Some(Record::Ignored { .. })
        ));
        assert!(passed(true).end(&stats, &source, false).is_none());
        assert_eq!(
            (get(&stats.ignored), get(&stats.hidden_or_temporary)),
            (2, 2)
        );
        let would = Outcome::WouldUpload {
            key: "a.png".into(),
            bytes: 5,
            id: None,
            replaces: None,
        };
        assert!(would.end(&stats, &source, false).is_none());
        assert_eq!(
            (get(&stats.would_upload), get(&stats.would_upload_bytes)),
            (1, 5)
        );
        assert_eq!(stats.finished(), 7 + 3 + 2 + 1);
    }
}
