//! Planning: for each item, decide against the ledger whether to skip it, reject it, point
//! it at an image that already holds its content, update its settings, or upload it (like
//! rclone's NeedTransfer). The cheap quick check (the source's fingerprint) runs first; only
//! what it cannot settle is read, hashed and checked the way the service would check it.

use std::io::{Read, Seek};

use sha2::{Digest, Sha256};

use crate::config::IdMode;
use crate::image_check::{self, ImageProblem};
use crate::item::{Body, Fingerprint, Item, Locator, SourceId};
use crate::ledger::{QuickRow, Row, State, Version};
use crate::rules::{self, ImageFormat, MAX_FILE_BYTES, SNIFF_BYTES};
use crate::stamp::Stamp;

/// Read size while hashing.
const HASH_CHUNK: usize = 256 * 1024;
/// Bodies up to this size are kept in memory from examination to upload: a queued job
/// holds at most this much (the job queue is twice the concurrency).
pub const HOLD_UP_TO: u64 = 64 * 1024;

/// What the quick check concluded without reading the item.
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
    /// Needs reading and a full decision.
    Examine,
}

/// Whether the source's fingerprint matches what the ledger recorded.
fn same_fingerprint(row: &QuickRow, item: &Item) -> bool {
    match &item.fingerprint {
        Some(Fingerprint::SizeMtime { size, mtime_ns }) => {
            row.size == *size && row.mtime_ns == *mtime_ns
        }
        Some(Fingerprint::ETagSize { etag, size }) => {
            row.size == *size && row.etag.as_deref() == Some(etag.as_str())
        }
        // A remote URL has nothing cheap to compare: the URL itself is the version.
        None => true,
    }
}

/// The quick check: the fingerprint and per-item settings against the ledger row.
pub fn quick_check(row: Option<&QuickRow>, item: &Item, retry: Retry) -> Quick {
    if let Some(row) = row {
        let same = same_fingerprint(row, item) && row.options == item.options.digest();
        match row.state {
            State::Uploaded if same => return Quick::Unchanged,
            State::Rejected if same => return Quick::StillRejected,
            State::Failed if same => {
                let again = match retry {
                    Retry::Always => true,
                    Retry::Local => row.retry_local,
                    Retry::WhenDue => row.retry_due,
                };
                if !again {
                    return Quick::StillFailed;
                }
            }
            _ => {}
        }
    }
    match item.size() {
        Some(0) => Quick::Reject(checked_locally("it is empty (0 bytes)")),
        Some(size) if size > MAX_FILE_BYTES => Quick::Reject(checked_locally(too_large(size))),
        _ => Quick::Examine,
    }
}

/// A reason found by cfimg itself, worded so that nobody takes it for Cloudflare's answer:
/// no request was spent on the item.
pub fn checked_locally(reason: impl std::fmt::Display) -> String {
    format!("checked locally: {reason}")
}

fn too_large(size: u64) -> String {
    format!("it is {size} bytes; Cloudflare Images accepts at most {MAX_FILE_BYTES} bytes (10 MB)")
}

/// When an unchanged item that failed before is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Only after a local failure (`migrate`'s default).
    Local,
    /// Always (`migrate --retry-failed`).
    Always,
    /// Once its growing delay has passed (`watch`: never forgotten, never hammered).
    WhenDue,
}

/// What reading the item found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Examined {
    /// sha256 of the content, hex; `None` when cfimg does not hold the bytes.
    pub sha256: Option<String>,
    /// Bytes actually read.
    pub size: Option<u64>,
    /// The format its magic bytes show, if accepted.
    pub format: Option<ImageFormat>,
    /// Why the service would refuse it, found without sending it.
    pub problem: Option<String>,
    /// The whole content of a small file (up to [`HOLD_UP_TO`]), read once: its upload
    /// sends these bytes, the ones hashed, without opening the file again.
    pub held: Option<bytes::Bytes>,
    /// A file's size and modification time (ns) once read, from the open file: a file
    /// written meanwhile is not the version that was hashed.
    pub read_as: Option<(u64, i64)>,
}

impl Examined {
    /// An item whose bytes cfimg never holds (Cloudflare fetches the URL).
    pub fn remote() -> Examined {
        Examined {
            sha256: None,
            size: None,
            format: None,
            problem: None,
            held: None,
            read_as: None,
        }
    }
}

/// Reads a body once: sha256 of everything and the format from the first bytes, then
/// checks dimensions and structure as the service would. `size_hint`, the size the
/// source listed, sizes the buffer (a wrong one costs reads, never correctness). Blocking.
pub fn examine(body: &Body, size_hint: Option<u64>) -> std::io::Result<Examined> {
    let Body::File { path, .. } = body else {
        return Ok(Examined::remote());
    };
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    // A small file gets a buffer of its size (one read, and one more that finds the end),
    // not a quarter megabyte zeroed for each of a million 2 kB files.
    let expected = match size_hint {
        Some(size) => size,
        None => file.metadata().map_or(u64::MAX, |m| m.len()),
    };
    let capacity =
        usize::try_from(expected.saturating_add(1)).map_or(HASH_CHUNK, |n| n.min(HASH_CHUNK));
    let mut buf = vec![0u8; capacity];
    let mut head: Vec<u8> = Vec::with_capacity(SNIFF_BYTES);
    let mut size = 0u64;
    // Whether `buf` holds the whole file: then it is checked from memory, not read again.
    let mut reads = 0u32;
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        reads += 1;
        if head.len() < SNIFF_BYTES {
            let take = (SNIFF_BYTES - head.len()).min(n);
            head.extend_from_slice(&buf[..take]);
        }
        hasher.update(&buf[..n]);
        size += n as u64;
        // Larger than the size said (it grew, or the hint was wrong): full-size reads on.
        if n == buf.len() && buf.len() < HASH_CHUNK {
            buf.resize(HASH_CHUNK, 0);
        }
    }
    // The open file's, not the path's: no second lookup of a long path, and a file
    // replaced by a rename meanwhile was still read whole and consistent.
    let read_as = file
        .metadata()
        .ok()
        .map(|m| (m.len(), crate::source::walk::mtime_ns(&m)));
    let format = rules::sniff_format(&head);
    let problem = match format {
        Some(f) if size > 0 && size <= MAX_FILE_BYTES => {
            let checked = if reads == 1 {
                image_check::check(f, std::io::Cursor::new(&buf[..size as usize]))
            } else {
                file.rewind()?;
                image_check::check(f, std::io::BufReader::new(file))
            };
            match checked {
                Ok(_) => None,
                Err(ImageProblem::Undecodable(why)) => Some(format!(
                    "it cannot be decoded, so Cloudflare would refuse it (code 9422): {why}"
                )),
                Err(ImageProblem::TooLarge(why)) => Some(format!(
                    "over Cloudflare's limits of 12,000 px per side and 100 megapixels, so Cloudflare would refuse it (code 5400): {why}"
                )),
            }
        }
        _ => None,
    };
    let held = (reads == 1 && size <= HOLD_UP_TO).then(|| {
        buf.truncate(size as usize);
        bytes::Bytes::from(buf)
    });
    Ok(Examined {
        sha256: Some(hex::encode(hasher.finalize())),
        size: Some(size),
        format,
        problem,
        held,
        read_as,
    })
}

/// The custom id an item gets, or `None` when Cloudflare assigns it.
pub fn image_id(
    mode: IdMode,
    prefix: &str,
    item: &Item,
    sha256: Option<&str>,
    format: Option<ImageFormat>,
) -> Result<Option<String>, String> {
    if let Some(id) = &item.options.id {
        return Ok(Some(id.clone()));
    }
    Ok(match mode {
        IdMode::Path => Some(format!("{prefix}{}", path_for_id(item))),
        IdMode::Hash => match (sha256, format) {
            (Some(sha), Some(f)) => Some(format!("{prefix}{sha}.{}", f.extension())),
            _ => {
                return Err(
                    "hash ids need the bytes, and Cloudflare fetches this URL itself: use --url-mode local or another --id-mode"
                        .into(),
                );
            }
        },
        IdMode::Auto => None,
    })
}

/// The part of an item that a path id is made of: the relative path or object key; for a
/// URL, its host and path (the query and fragment are dropped).
fn path_for_id(item: &Item) -> String {
    match &item.locator {
        Locator::Url(url) => match reqwest::Url::parse(url) {
            Ok(u) => {
                let path = percent_encoding::percent_decode_str(u.path().trim_start_matches('/'))
                    .decode_utf8_lossy()
                    .into_owned();
                format!("{}/{path}", u.host_str().unwrap_or_default())
            }
            Err(_) => item.key.clone(),
        },
        Locator::File(_) | Locator::Object(_) => item.key.clone(),
    }
}

/// What a job does at the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Upload the body (replacing an older image of the item, if any).
    Upload,
    /// Only the item's settings changed: update the image in place.
    Update {
        /// The image.
        image_id: String,
    },
}

/// An API call to make for one item.
#[derive(Debug, Clone)]
pub struct Job {
    /// The item.
    pub item: Item,
    /// Its source.
    pub source: SourceId,
    /// The version this job records.
    pub version: Version,
    /// What to send.
    pub body: Body,
    /// The body's bytes as examined, when small: sent instead of reading it again.
    pub held: Option<bytes::Bytes>,
    /// Upload or update.
    pub action: Action,
    /// The stamp the image carries.
    pub stamp: Stamp,
    /// Its format, when cfimg holds the bytes.
    pub format: Option<ImageFormat>,
    /// Custom id; `None` for a Cloudflare-assigned one.
    pub id: Option<String>,
    /// The image that holds an older version of this item, to remove once replaced.
    pub previous: Option<String>,
    /// A custom id an interrupted earlier upload of this item was writing, which it may
    /// have stored: removed unless it is the new id or still held.
    pub abandoned: Option<String>,
    /// An earlier run recorded the intent but not the outcome: the image may already exist.
    pub resume: bool,
    /// An earlier attempt had an ambiguous answer: look the stamp up before uploading.
    pub lookup_first: bool,
    /// When that earlier intent was recorded: nothing it uploaded can be older.
    pub earlier_intent: Option<chrono::DateTime<chrono::Utc>>,
    /// The ledger holds no row of this item: an intent never acted on can be withdrawn
    /// by deleting its row.
    pub unrecorded: bool,
}

/// The full decision for an examined item.
#[derive(Debug)]
pub enum Decision {
    /// Same content as the uploaded version: only the quick-check fields changed.
    Touch,
    /// Another item already holds this content under the same id.
    Share {
        /// The image.
        image_id: String,
        /// Its delivery URL.
        url: Option<String>,
    },
    /// Upload it, or update its settings.
    Do(Box<Job>),
    /// It cannot be uploaded, for this reason.
    Reject(String),
    /// It could not be read now, for this reason; the next run tries again.
    Fail(String),
}

/// Settings the decision depends on.
#[derive(Debug, Clone)]
pub struct Policy {
    /// How ids are chosen.
    pub id_mode: IdMode,
    /// Prefix of custom ids.
    pub id_prefix: String,
    /// Private images by default.
    pub require_signed_urls: bool,
    /// Whether an item whose content an uploaded item of the same source holds shares its
    /// image (a watched folder's renames and moves), with Cloudflare-assigned ids.
    pub follow_content: bool,
}

/// A renamed or moved file (or a copy) of a watched folder with Cloudflare-assigned ids:
/// its content is already an image of this source, so it shares that image instead of
/// sending the bytes again. Hash ids share through their id in [`decide`]; path ids name
/// the path, so a new path is a new image.
pub fn follow_content(
    policy: &Policy,
    examined: &Examined,
    row: Option<&Row>,
    same_content: impl FnOnce(&str) -> Option<Row>,
) -> Option<Decision> {
    if !policy.follow_content || policy.id_mode != IdMode::Auto {
        return None;
    }
    // An item that holds an image already is replaced the usual way (the old image goes).
    if row.is_some_and(|r| r.image_id.is_some()) || examined.problem.is_some() {
        return None;
    }
    let other = same_content(examined.sha256.as_deref()?)?;
    Some(Decision::Share {
        image_id: other.image_id?,
        url: other.url,
    })
}

/// The version of an item as the ledger records it.
pub fn version(source_id: i64, item: &Item, examined: &Examined) -> Version {
    let (size, mtime_ns, etag) = match &item.fingerprint {
        Some(Fingerprint::SizeMtime { size, mtime_ns }) => (*size, *mtime_ns, None),
        Some(Fingerprint::ETagSize { etag, size }) => (*size, 0, Some(etag.clone())),
        None => (examined.size.unwrap_or(0), 0, None),
    };
    Version {
        source_id,
        key: item.key.clone(),
        size: examined.size.unwrap_or(size),
        mtime_ns,
        etag,
        options: item.options.digest(),
        sha256: examined.sha256.clone(),
        ticket: item.ticket.clone(),
    }
}

/// Decides what to do with an examined item. `holder` looks up another item that holds or
/// is writing a given image id (to share identical content and to refuse a collision).
/// Every refusal it makes is found without a request, and says so.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    policy: &Policy,
    item: Item,
    source: &SourceId,
    source_id: i64,
    body: Body,
    examined: Examined,
    row: Option<&Row>,
    holder: impl FnOnce(&str) -> Option<Row>,
) -> Decision {
    match decide_unworded(policy, item, source, source_id, body, examined, row, holder) {
        Decision::Reject(reason) => Decision::Reject(checked_locally(reason)),
        d => d,
    }
}

/// How to get another id for an item, offering only what the current settings accept:
/// hash ids need the bytes (not in the remote URL mode), Cloudflare-assigned ids take no
/// prefix, and an id given by the manifest is changed there.
fn other_id_hint(policy: &Policy, item: &Item, holds_bytes: bool) -> String {
    if item.options.id.is_some() {
        return "give this row another value in the manifest's `id` column".into();
    }
    let mut ways = Vec::new();
    if matches!(item.locator, Locator::Url(_)) {
        ways.push(
            "give this row its own id in the manifest's `id` column (csv or jsonl)".to_string(),
        );
    }
    if holds_bytes && policy.id_mode != IdMode::Hash {
        ways.push("use --id-mode hash".into());
    }
    if policy.id_mode != IdMode::Auto {
        let private = item
            .options
            .require_signed_urls
            .unwrap_or(policy.require_signed_urls);
        if !private {
            ways.push(if policy.id_prefix.is_empty() {
                "use --id-mode auto".to_string()
            } else {
                "use --id-mode auto without --id-prefix".to_string()
            });
        }
    }
    match ways.len() {
        0 => "rename the item".into(),
        _ => ways.join(", or "),
    }
}

/// Why the examined bytes cannot be an image at all (no type, empty, too large, undecodable),
/// if so.
fn examined_refusal(examined: &Examined, holds_bytes: bool) -> Option<String> {
    if holds_bytes && examined.format.is_none() {
        return Some(
            "not an accepted image type: its first bytes are not JPEG, PNG, GIF, WebP, SVG, HEIC or AVIF".into(),
        );
    }
    if let Some(size) = examined.size {
        if size == 0 {
            return Some("it is empty (0 bytes)".into());
        }
        if size > MAX_FILE_BYTES {
            return Some(too_large(size));
        }
    }
    examined.problem.clone()
}

/// The custom id the item will have (`None`: Cloudflare assigns one), or why it cannot
/// have it: an id Cloudflare refuses, or a private image with a custom id (code 5410).
fn planned_id(
    policy: &Policy,
    item: &Item,
    examined: &Examined,
    holds_bytes: bool,
) -> Result<Option<String>, String> {
    let id = image_id(
        policy.id_mode,
        &policy.id_prefix,
        item,
        examined.sha256.as_deref(),
        examined.format,
    )?;
    if let Some(id) = &id {
        if let Err(rule) = rules::validate_custom_id(id) {
            return Err(format!(
                "cannot be the custom id {id:?}: {rule}; {}",
                other_id_hint(policy, item, holds_bytes)
            ));
        }
        if item
            .options
            .require_signed_urls
            .unwrap_or(policy.require_signed_urls)
        {
            return Err(format!(
                "a private image cannot have the custom id {id:?} (Cloudflare code 5410): drop the id or the private flag"
            ));
        }
    }
    Ok(id)
}

/// What an uploaded row still holds of an item whose content and id are unchanged.
enum Unchanged {
    /// Everything: only the quick-check fields change (a touch).
    All,
    /// The image, with other settings: they are sent without the bytes.
    Image(String),
}

/// Whether the item's uploaded row already holds its content under its id, and with which
/// settings.
fn unchanged(
    row: Option<&Row>,
    id: Option<&str>,
    item: &Item,
    examined: &Examined,
    version: &Version,
    holds_bytes: bool,
) -> Option<Unchanged> {
    let r = row.filter(|r| r.state == State::Uploaded)?;
    let same_id = match id {
        Some(id) => r.image_id.as_deref() == Some(id),
        None => r.image_id.is_some() && r.planned_id.is_none(),
    };
    let same_content = r.sha256 == examined.sha256
        && (examined.sha256.is_some() || holds_bytes || r.key == item.key);
    if !(same_content && same_id) {
        return None;
    }
    if r.options == version.options {
        return Some(Unchanged::All);
    }
    r.image_id.clone().map(Unchanged::Image)
}

/// What to do when `other`, another item, holds or is writing the image id `id`: share the
/// image when it is the same content, refuse when it is not; `None` when the item must still
/// upload (same content, but not shareable yet or this item would leave its own image behind).
#[allow(clippy::too_many_arguments)]
fn id_taken(
    policy: &Policy,
    item: &Item,
    source_id: i64,
    examined: &Examined,
    id: &str,
    other: Row,
    holds_other: bool,
    holds_bytes: bool,
) -> Option<Decision> {
    if other.sha256.is_some() && other.sha256 == examined.sha256 {
        return (!holds_other && other.state == State::Uploaded).then(|| Decision::Share {
            image_id: id.to_string(),
            url: other.url,
        });
    }
    if other.source_id == source_id {
        // A sibling: two items of one source that map to one id (URLs that differ only
        // in their query), or one id written twice in a manifest.
        let why = if matches!(item.locator, Locator::Url(_)) && item.options.id.is_none() {
            " (a path id keeps a URL's host and path and drops its query)"
        } else {
            ""
        };
        return Some(Decision::Reject(format!(
            "the image id {id:?} is already the id of {} in this same source{why}; {}",
            other.key,
            other_id_hint(policy, item, holds_bytes)
        )));
    }
    Some(Decision::Reject(format!(
        "the image id {id:?} already belongs to {} (source {}) with other content; \
         give this source its own --id-prefix",
        other.key, other.source
    )))
}

#[allow(clippy::too_many_arguments)]
fn decide_unworded(
    policy: &Policy,
    item: Item,
    source: &SourceId,
    source_id: i64,
    body: Body,
    examined: Examined,
    row: Option<&Row>,
    holder: impl FnOnce(&str) -> Option<Row>,
) -> Decision {
    let holds_bytes = matches!(body, Body::File { .. });
    if let Some(why) = examined_refusal(&examined, holds_bytes) {
        return Decision::Reject(why);
    }
    let id = match planned_id(policy, &item, &examined, holds_bytes) {
        Ok(id) => id,
        Err(why) => return Decision::Reject(why),
    };
    let version = version(source_id, &item, &examined);
    match unchanged(row, id.as_deref(), &item, &examined, &version, holds_bytes) {
        Some(Unchanged::All) => return Decision::Touch,
        Some(Unchanged::Image(image_id)) => {
            // Only the settings changed: no need to send the bytes again.
            return job(
                item,
                source,
                version,
                body,
                examined,
                Some(image_id.clone()),
                row,
                Action::Update { image_id },
            );
        }
        None => {}
    }
    // Sharing needs no request, but only when this item holds no other image that would be
    // left behind; otherwise the upload path resolves the 5409 and cleans up.
    let holds_other = row
        .and_then(|r| r.image_id.as_deref())
        .is_some_and(|held| Some(held) != id.as_deref());
    if let Some(id) = &id
        && let Some(other) = holder(id)
        && let Some(decision) = id_taken(
            policy,
            &item,
            source_id,
            &examined,
            id,
            other,
            holds_other,
            holds_bytes,
        )
    {
        return decision;
    }
    job(
        item,
        source,
        version,
        body,
        examined,
        id,
        row,
        Action::Upload,
    )
}

#[allow(clippy::too_many_arguments)]
fn job(
    item: Item,
    source: &SourceId,
    version: Version,
    body: Body,
    examined: Examined,
    id: Option<String>,
    row: Option<&Row>,
    action: Action,
) -> Decision {
    let resume = row.is_some_and(|r| r.state == State::Uploading);
    let earlier_intent = row
        .filter(|_| resume)
        .and_then(|r| chrono::DateTime::parse_from_rfc3339(&r.updated_at).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let previous = row.and_then(|r| r.image_id.clone());
    let abandoned = row
        .filter(|_| resume)
        .and_then(|r| r.planned_id.clone())
        .filter(|p| Some(p) != id.as_ref() && Some(p) != previous.as_ref());
    let stamp = Stamp::new(source, &item.key, version.sha256.as_deref());
    Decision::Do(Box::new(Job {
        lookup_first: resume || row.is_some_and(|r| r.check_after.is_some()),
        item,
        source: source.clone(),
        version,
        body,
        held: examined.held.filter(|_| action == Action::Upload),
        action,
        stamp,
        format: examined.format,
        id,
        previous,
        abandoned,
        resume,
        earlier_intent,
        unrecorded: row.is_none(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::SourceKind;

    fn src() -> SourceId {
        SourceId::new(SourceKind::Dir, "/s")
    }

    fn item(key: &str, size: u64, mtime: i64) -> Item {
        Item::file(key.into(), "/nonexistent".into(), size, mtime)
    }

    fn row(state: State, sha: &str, id: Option<&str>) -> Row {
        Row {
            source_id: 1,
            source: "dir:/s".into(),
            key: "k".into(),
            size: 3,
            mtime_ns: 1,
            etag: None,
            options: None,
            sha256: Some(sha.into()),
            stamp: None,
            image_id: id.map(Into::into),
            url: None,
            planned_id: None,
            state,
            attempts: 1,
            last_error: Some("why".into()),
            retry_local: false,
            check_after: None,
            updated_at: String::new(),
            uploaded_at: None,
            replaced_at: None,
        }
    }

    fn examined(sha: &str) -> Examined {
        Examined {
            sha256: Some(sha.into()),
            size: Some(3),
            format: Some(ImageFormat::Png),
            problem: None,
            held: None,
            read_as: None,
        }
    }

    fn body() -> Body {
        Body::file("/nonexistent".into())
    }

    fn policy(id_mode: IdMode, prefix: &str) -> Policy {
        Policy {
            id_mode,
            id_prefix: prefix.into(),
            require_signed_urls: false,
            follow_content: false,
        }
    }

    fn decide_(p: &Policy, it: Item, ex: Examined, r: Option<&Row>) -> Decision {
        decide(p, it, &src(), 1, body(), ex, r, |_| None)
    }

    #[test]
    fn quick_check_skips_only_unchanged_rows() {
        let it = item("a.png", 3, 9);
        let q = |state, size, mtime_ns| QuickRow {
            size,
            mtime_ns,
            etag: None,
            options: None,
            state,
            retry_local: false,
            check_pending: false,
            retry_due: false,
        };
        let check = |r: QuickRow, retry| quick_check(Some(&r), &it, retry);
        assert_eq!(
            check(q(State::Uploaded, 3, 9), Retry::Local),
            Quick::Unchanged
        );
        assert_eq!(
            check(q(State::Uploaded, 3, 8), Retry::Local),
            Quick::Examine
        );
        assert_eq!(
            check(q(State::Uploaded, 4, 9), Retry::Local),
            Quick::Examine
        );
        assert_eq!(
            check(q(State::Uploading, 3, 9), Retry::Local),
            Quick::Examine
        );
        assert_eq!(
            check(q(State::Rejected, 3, 9), Retry::Always),
            Quick::StillRejected
        );
        assert_eq!(
            check(q(State::Rejected, 3, 1), Retry::Local),
            Quick::Examine
        );
        assert_eq!(
            check(q(State::Failed, 3, 9), Retry::Local),
            Quick::StillFailed
        );
        assert_eq!(check(q(State::Failed, 3, 9), Retry::Always), Quick::Examine);
        let local = QuickRow {
            retry_local: true,
            ..q(State::Failed, 3, 9)
        };
        assert_eq!(
            check(local.clone(), Retry::Local),
            Quick::Examine,
            "local failures retry"
        );
        // A watched folder waits out each failure's delay, local or not.
        assert_eq!(check(local, Retry::WhenDue), Quick::StillFailed);
        let due = QuickRow {
            retry_due: true,
            ..q(State::Failed, 3, 9)
        };
        assert_eq!(check(due, Retry::WhenDue), Quick::Examine);
        assert!(
            matches!(quick_check(None, &item("e", 0, 1), Retry::Local), Quick::Reject(r) if r.contains("empty"))
        );
        assert!(
            matches!(quick_check(None, &item("big", MAX_FILE_BYTES + 1, 1), Retry::Local), Quick::Reject(r) if r.contains("10 MB"))
        );
    }

    #[test]
    fn decides_touch_replace_share_and_reject() {
        let path = policy(IdMode::Path, "p/");
        let up = row(State::Uploaded, "s1", Some("p/a.png"));
        assert!(matches!(
            decide_(&path, item("a.png", 3, 2), examined("s1"), Some(&up)),
            Decision::Touch
        ));
        match decide_(&path, item("a.png", 3, 2), examined("s2"), Some(&up)) {
            Decision::Do(job) => {
                assert_eq!(job.id.as_deref(), Some("p/a.png"));
                assert_eq!(job.previous.as_deref(), Some("p/a.png"));
                assert_eq!(job.action, Action::Upload);
                assert!(!job.resume);
            }
            other => panic!("{other:?}"),
        }
        let hash = policy(IdMode::Hash, "");
        let holder = row(State::Uploaded, "s3", Some("s3.png"));
        assert!(matches!(
            decide(&hash, item("b.png", 3, 2), &src(), 1, body(), examined("s3"), None, |id| (id == "s3.png").then(|| holder.clone())),
            Decision::Share { image_id, .. } if image_id == "s3.png"
        ));
        let not_image = Examined {
            format: None,
            ..examined("s4")
        };
        assert!(
            matches!(decide_(&path, item("x.png", 3, 2), not_image, None), Decision::Reject(r) if r.contains("not an accepted image type"))
        );
        assert!(
            matches!(decide_(&path, item("notes.txt", 3, 2), examined("s5"), None), Decision::Reject(r) if r.contains(".txt"))
        );
        let refused = Examined {
            problem: Some("over the limits".into()),
            ..examined("s7")
        };
        assert!(
            matches!(decide_(&path, item("w.png", 3, 2), refused, None), Decision::Reject(r) if r.contains("over the limits"))
        );
        let auto = policy(IdMode::Auto, "");
        let leftover = row(State::Uploading, "s6", None);
        assert!(
            matches!(decide_(&auto, item("c.png", 3, 2), examined("s6"), Some(&leftover)), Decision::Do(j) if j.resume && j.lookup_first && j.id.is_none())
        );
    }

    #[test]
    fn a_path_id_held_by_another_source_is_refused_unless_the_content_is_the_same() {
        let path = policy(IdMode::Path, "");
        let mut other = row(State::Uploaded, "theirs", Some("a.png"));
        other.source = "dir:/other".into();
        other.source_id = 2;
        other.key = "a.png".into();
        let d = decide(
            &path,
            item("a.png", 3, 2),
            &src(),
            1,
            body(),
            examined("mine"),
            None,
            |_| Some(other.clone()),
        );
        assert!(
            matches!(&d, Decision::Reject(r) if r.contains("dir:/other") && r.contains("--id-prefix")),
            "{d:?}"
        );
        let d = decide(
            &path,
            item("a.png", 3, 2),
            &src(),
            1,
            body(),
            examined("theirs"),
            None,
            |_| Some(other.clone()),
        );
        assert!(matches!(d, Decision::Share { .. }), "{d:?}");
    }

    #[test]
    fn a_resumed_upload_abandons_the_id_it_was_writing() {
        let hash = policy(IdMode::Hash, "");
        let mut r = row(State::Uploading, "old", Some("held.png"));
        r.planned_id = Some("old.png".into());
        match decide_(&hash, item("a.png", 3, 2), examined("new"), Some(&r)) {
            Decision::Do(job) => {
                assert_eq!(job.id.as_deref(), Some("new.png"));
                assert_eq!(job.previous.as_deref(), Some("held.png"));
                assert_eq!(job.abandoned.as_deref(), Some("old.png"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn examine_hashes_and_sniffs() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"\x89PNG\r\n\x1a\nrest").unwrap();
        let e = examine(&Body::file(p), None).unwrap();
        assert_eq!(e.format, Some(ImageFormat::Png));
        assert_eq!(e.size, Some(12));
        assert_eq!(
            e.sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"\x89PNG\r\n\x1a\nrest")).as_str())
        );
    }

    #[test]
    fn a_wrong_size_hint_costs_reads_never_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let bytes = b"\x89PNG\r\n\x1a\nrest of a file that grew";
        std::fs::write(&p, bytes).unwrap();
        let hash = hex::encode(Sha256::digest(bytes));
        for hint in [0, 3, 12, 10_000] {
            let e = examine(&Body::file(p.clone()), Some(hint)).unwrap();
            assert_eq!(e.size, Some(bytes.len() as u64), "hint {hint}");
            assert_eq!(e.sha256.as_deref(), Some(hash.as_str()), "hint {hint}");
            // Held bytes are only ever the whole file, read in one go.
            if let Some(held) = &e.held {
                assert_eq!(&held[..], &bytes[..], "hint {hint}");
            }
        }
        let read_whole = examine(&Body::file(p), Some(10_000)).unwrap();
        assert!(read_whole.held.is_some());
    }
}
