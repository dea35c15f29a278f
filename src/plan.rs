//! Planning: for each item, decide against the ledger whether to skip it, reject it, point
//! it at an image that already holds its content, or upload it (like rclone's
//! NeedTransfer). The cheap quick check (size + mtime) runs first; only what it cannot
//! settle is read and hashed.

use std::io::Read;

use sha2::{Digest, Sha256};

use crate::config::IdMode;
use crate::ledger::{QuickRow, Row, State, Version};
use crate::rules::{self, ImageFormat, MAX_FILE_BYTES, SNIFF_BYTES};
use crate::source::Item;

/// Read size while hashing.
const HASH_CHUNK: usize = 256 * 1024;

/// What the quick check concluded without reading the file.
#[derive(Debug, PartialEq, Eq)]
pub enum Quick {
    /// Uploaded and unchanged: nothing to do.
    Unchanged,
    /// Rejected before and unchanged: still rejected.
    StillRejected,
    /// Failed before and unchanged, and failed items are not being retried.
    StillFailed,
    /// Rejected without reading it (empty, too large).
    Reject(String),
    /// Needs hashing and a full decision.
    Examine,
}

/// The quick check: size and mtime against the ledger row.
pub fn quick_check(row: Option<QuickRow>, item: &Item, retry_failed: bool) -> Quick {
    if let Some(row) = row {
        let same = row.size == item.size && row.mtime_ns == item.mtime_ns;
        match row.state {
            State::Uploaded if same => return Quick::Unchanged,
            State::Rejected if same => return Quick::StillRejected,
            State::Failed if same && !retry_failed => return Quick::StillFailed,
            _ => {}
        }
    }
    if item.size == 0 {
        return Quick::Reject("the file is empty".into());
    }
    if item.size > MAX_FILE_BYTES {
        return Quick::Reject(format!(
            "the file is {} bytes; Cloudflare Images accepts at most {MAX_FILE_BYTES} bytes (10 MB)",
            item.size
        ));
    }
    Quick::Examine
}

/// What reading the file found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examined {
    /// sha256 of the content, hex.
    pub sha256: String,
    /// Bytes actually read.
    pub size: u64,
    /// The format its magic bytes show, if accepted.
    pub format: Option<ImageFormat>,
}

/// Reads the file once: sha256 of everything, format from the first bytes. Blocking.
pub fn examine(item: &Item) -> std::io::Result<Examined> {
    let mut file = std::fs::File::open(&item.path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; HASH_CHUNK];
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut size = 0u64;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok(Examined {
        sha256: hex(&hasher.finalize()),
        size,
        format: rules::sniff_format(&head),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The custom id an item gets, or `None` when Cloudflare assigns it.
pub fn image_id(
    mode: IdMode,
    prefix: &str,
    key: &str,
    sha256: &str,
    format: ImageFormat,
) -> Option<String> {
    match mode {
        IdMode::Path => Some(format!("{prefix}{key}")),
        IdMode::Hash => Some(format!("{prefix}{sha256}.{}", format.extension())),
        IdMode::Auto => None,
    }
}

/// An upload to perform.
#[derive(Debug, Clone)]
pub struct Job {
    /// The file.
    pub item: Item,
    /// The source root it came from.
    pub source: String,
    /// sha256 of its content.
    pub sha256: String,
    /// Its format.
    pub format: ImageFormat,
    /// Custom id; `None` for a Cloudflare-assigned one.
    pub id: Option<String>,
    /// The image that holds an older version of this source, to remove once replaced.
    pub previous: Option<String>,
    /// An earlier run recorded the intent but not the outcome: the image may already exist.
    pub resume: bool,
    /// When that earlier intent was recorded: nothing it uploaded can be older.
    pub earlier_intent: Option<chrono::DateTime<chrono::Utc>>,
}

impl Job {
    /// The version this job uploads, as the ledger records it.
    pub fn version(&self) -> Version {
        Version {
            key: self.item.key.clone(),
            source: self.source.clone(),
            size: self.item.size,
            mtime_ns: self.item.mtime_ns,
            sha256: Some(self.sha256.clone()),
        }
    }
}

/// The full decision for an examined item.
#[derive(Debug)]
pub enum Decision {
    /// Same content as the uploaded version: only the file's times changed.
    Touch,
    /// Another source already holds this content under the same id (hash mode).
    Share {
        /// The image.
        image_id: String,
        /// Its delivery URL.
        url: Option<String>,
    },
    /// Upload it.
    Upload(Job),
    /// It cannot be uploaded, for this reason.
    Reject(String),
}

/// Settings the decision depends on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How ids are chosen.
    pub id_mode: IdMode,
    /// Prefix of custom ids.
    pub id_prefix: String,
}

/// Decides what to do with an examined item. `shared` looks up an uploaded row holding a
/// given image id (for deduplication in hash mode).
pub fn decide(
    policy: &Policy,
    item: Item,
    source: &str,
    examined: Examined,
    row: Option<&Row>,
    shared: impl FnOnce(&str) -> Option<Row>,
) -> Decision {
    let Some(format) = examined.format else {
        return Decision::Reject(
            "not an accepted image type: its first bytes are not JPEG, PNG, GIF, WebP, SVG, HEIC or AVIF".into(),
        );
    };
    let id = image_id(
        policy.id_mode,
        &policy.id_prefix,
        &item.key,
        &examined.sha256,
        format,
    );
    if let Some(id) = &id
        && let Err(rule) = rules::validate_custom_id(id)
    {
        return Decision::Reject(format!(
            "cannot be the custom id {id:?}: {rule} (try --id-mode hash or auto)"
        ));
    }
    let uploaded = row.filter(|r| r.state == State::Uploaded);
    if let Some(r) = uploaded {
        let same_id = match &id {
            Some(id) => r.image_id.as_deref() == Some(id.as_str()),
            None => r.image_id.is_some() && r.planned_id.is_none(),
        };
        if r.sha256.as_deref() == Some(examined.sha256.as_str()) && same_id {
            return Decision::Touch;
        }
    }
    // Sharing needs no request, but only when this source holds no other image that
    // would be left behind; otherwise the upload path resolves the 5409 and cleans up.
    let holds_other = row
        .and_then(|r| r.image_id.as_deref())
        .is_some_and(|held| Some(held) != id.as_deref());
    if policy.id_mode == IdMode::Hash
        && !holds_other
        && let Some(id) = &id
        && let Some(holder) = shared(id)
    {
        return Decision::Share {
            image_id: id.clone(),
            url: holder.url,
        };
    }
    let resume = row.is_some_and(|r| r.state == State::Uploading);
    let earlier_intent = row
        .filter(|_| resume)
        .and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.updated_at).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    Decision::Upload(Job {
        item: Item {
            size: examined.size,
            ..item
        },
        source: source.to_string(),
        sha256: examined.sha256,
        format,
        previous: row.and_then(|r| r.image_id.clone()),
        id,
        resume,
        earlier_intent,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, size: u64, mtime: i64) -> Item {
        Item {
            key: key.into(),
            path: "/nonexistent".into(),
            size,
            mtime_ns: mtime,
        }
    }

    fn row(state: State, size: u64, mtime: i64, sha: &str, id: Option<&str>) -> Row {
        Row {
            key: "k".into(),
            source: "/s".into(),
            size,
            mtime_ns: mtime,
            sha256: Some(sha.into()),
            image_id: id.map(Into::into),
            url: None,
            planned_id: None,
            state,
            attempts: 1,
            last_error: Some("why".into()),
            updated_at: String::new(),
            uploaded_at: None,
            replaced_at: None,
        }
    }

    fn examined(sha: &str) -> Examined {
        Examined {
            sha256: sha.into(),
            size: 3,
            format: Some(ImageFormat::Png),
        }
    }

    const PATH: fn() -> Policy = || Policy {
        id_mode: IdMode::Path,
        id_prefix: "p/".into(),
    };

    #[test]
    fn quick_check_skips_only_unchanged_rows() {
        let it = item("a.png", 3, 9);
        let q = |state, size, mtime_ns| {
            Some(QuickRow {
                size,
                mtime_ns,
                state,
            })
        };
        assert_eq!(
            quick_check(q(State::Uploaded, 3, 9), &it, false),
            Quick::Unchanged
        );
        assert_eq!(
            quick_check(q(State::Uploaded, 3, 8), &it, false),
            Quick::Examine
        );
        assert_eq!(
            quick_check(q(State::Uploaded, 4, 9), &it, false),
            Quick::Examine
        );
        assert_eq!(
            quick_check(q(State::Uploading, 3, 9), &it, false),
            Quick::Examine
        );
        assert_eq!(
            quick_check(q(State::Rejected, 3, 9), &it, true),
            Quick::StillRejected
        );
        assert_eq!(
            quick_check(q(State::Rejected, 3, 1), &it, false),
            Quick::Examine
        );
        assert_eq!(
            quick_check(q(State::Failed, 3, 9), &it, false),
            Quick::StillFailed
        );
        assert_eq!(
            quick_check(q(State::Failed, 3, 9), &it, true),
            Quick::Examine
        );
        assert!(
            matches!(quick_check(None, &item("e", 0, 1), false), Quick::Reject(r) if r.contains("empty"))
        );
        assert!(
            matches!(quick_check(None, &item("big", MAX_FILE_BYTES + 1, 1), false), Quick::Reject(r) if r.contains("10 MB"))
        );
    }

    #[test]
    fn decides_touch_replace_share_and_reject() {
        let none = |_: &str| None;
        let up = row(State::Uploaded, 3, 1, "s1", Some("p/a.png"));
        assert!(matches!(
            decide(
                &PATH(),
                item("a.png", 3, 2),
                "/s",
                examined("s1"),
                Some(&up),
                none
            ),
            Decision::Touch
        ));
        match decide(
            &PATH(),
            item("a.png", 3, 2),
            "/s",
            examined("s2"),
            Some(&up),
            none,
        ) {
            Decision::Upload(job) => {
                assert_eq!(job.id.as_deref(), Some("p/a.png"));
                assert_eq!(job.previous.as_deref(), Some("p/a.png"));
                assert!(!job.resume);
            }
            other => panic!("{other:?}"),
        }
        let hash = Policy {
            id_mode: IdMode::Hash,
            id_prefix: String::new(),
        };
        let holder = row(State::Uploaded, 3, 1, "s3", Some("s3.png"));
        assert!(matches!(
            decide(&hash, item("b.png", 3, 2), "/s", examined("s3"), None, |id| (id == "s3.png").then(|| holder.clone())),
            Decision::Share { image_id, .. } if image_id == "s3.png"
        ));
        let not_image = Examined {
            format: None,
            ..examined("s4")
        };
        assert!(
            matches!(decide(&PATH(), item("x.png", 3, 2), "/s", not_image, None, none), Decision::Reject(r) if r.contains("not an accepted image type"))
        );
        assert!(
            matches!(decide(&PATH(), item("notes.txt", 3, 2), "/s", examined("s5"), None, none), Decision::Reject(r) if r.contains(".txt"))
        );
        let auto = Policy {
            id_mode: IdMode::Auto,
            id_prefix: String::new(),
        };
        let leftover = row(State::Uploading, 3, 2, "s6", None);
        assert!(
            matches!(decide(&auto, item("c.png", 3, 2), "/s", examined("s6"), Some(&leftover), none), Decision::Upload(j) if j.resume && j.id.is_none())
        );
    }

    #[test]
    fn examine_hashes_and_sniffs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nrest").unwrap();
        let e = examine(&Item {
            key: "x".into(),
            path: p,
            size: 12,
            mtime_ns: 0,
        })
        .unwrap();
        assert_eq!(e.format, Some(ImageFormat::Png));
        assert_eq!(e.size, 12);
        assert_eq!(e.sha256, hex(&Sha256::digest(b"\x89PNG\r\n\x1a\nrest")));
    }
}
