//! The emulator's state (images, variants, signing keys, config) and its optional
//! persistence: content-addressed blob files plus an append-only JSON-lines journal.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::util::sha256_hex;
use crate::api::types::{SigningKey, Variant, VariantOptions};
use crate::rules::sniff_format;

/// Stored bytes of an image; the sha256 is computed on first need, off the upload path.
#[derive(Clone)]
pub struct Blob {
    /// The bytes as uploaded.
    pub bytes: Bytes,
    /// MIME type sniffed at upload.
    pub mime: &'static str,
    sha256: Arc<OnceLock<String>>,
}

impl Blob {
    /// Wraps uploaded bytes.
    pub fn new(bytes: Bytes, mime: &'static str) -> Self {
        Blob {
            bytes,
            mime,
            sha256: Arc::new(OnceLock::new()),
        }
    }

    /// Hex sha256 of the bytes.
    pub fn sha256(&self) -> &str {
        self.sha256.get_or_init(|| sha256_hex(&self.bytes))
    }
}

/// One image record (a draft until its direct upload arrives).
#[derive(Clone)]
pub struct ImageRec {
    /// Image id.
    pub id: String,
    /// File name given at upload.
    pub filename: Option<String>,
    /// User metadata.
    pub meta: Map<String, Value>,
    /// Creator tag.
    pub creator: Option<String>,
    /// Whether delivery needs a signed URL.
    pub require_signed_urls: bool,
    /// Upload (or draft creation) time.
    pub uploaded: DateTime<Utc>,
    /// When the bytes arrived, on tokio's clock (so paused test time drives list lag);
    /// `None` for drafts and for images replayed from the journal, which lists show at once.
    pub arrived: Option<tokio::time::Instant>,
    /// Position in upload order; lists sort and page by it.
    pub seq: u64,
    /// Whether the id was chosen by the client.
    pub custom_id: bool,
    /// `Some(expiry)` while this is a direct-upload draft.
    pub draft_expiry: Option<DateTime<Utc>>,
    /// The bytes; `None` for drafts.
    pub blob: Option<Blob>,
}

/// Why a draft could not take its upload.
#[derive(Debug, PartialEq, Eq)]
pub enum DraftError {
    /// No such draft.
    NotFound,
    /// The one-time URL was used already.
    AlreadyUploaded,
    /// The URL's expiry has passed.
    Expired,
}

/// One journal line.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Entry {
    Put { image: StoredImage },
    Delete { id: String },
    Variant { variant: Variant },
    DeleteVariant { id: String },
    Keys { keys: Vec<SigningKey> },
    Config { flexible_variants: bool },
}

#[derive(Serialize, Deserialize)]
struct StoredImage {
    id: String,
    filename: Option<String>,
    meta: Map<String, Value>,
    creator: Option<String>,
    require_signed_urls: bool,
    uploaded: DateTime<Utc>,
    seq: u64,
    custom_id: bool,
    draft_expiry: Option<DateTime<Utc>>,
    sha256: Option<String>,
}

/// Everything behind the store's one lock.
pub struct State {
    /// Images by id.
    pub images: HashMap<String, Arc<ImageRec>>,
    /// Image ids by upload order.
    pub order: BTreeMap<u64, String>,
    next_seq: u64,
    /// Variant definitions by name.
    pub variants: BTreeMap<String, Variant>,
    /// Signing keys.
    pub keys: Vec<SigningKey>,
    /// Whether flexible variants are enabled.
    pub flexible_variants: bool,
}

/// The state plus its journal.
pub struct Store {
    state: Mutex<State>,
    dir: Option<PathBuf>,
    journal: Option<Mutex<File>>,
}

impl Store {
    /// Opens the store: in memory, or replayed from `dir` (created if missing).
    pub fn open(dir: Option<&Path>) -> io::Result<Store> {
        let mut state = State {
            images: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 1,
            variants: BTreeMap::new(),
            keys: Vec::new(),
            flexible_variants: false,
        };
        let mut fresh = true;
        let journal = match dir {
            None => None,
            Some(dir) => {
                fs::create_dir_all(dir.join("blobs"))?;
                let path = dir.join("journal.jsonl");
                if path.exists() {
                    fresh = replay(&path, dir, &mut state)? == 0;
                }
                Some(Mutex::new(
                    OpenOptions::new().create(true).append(true).open(&path)?,
                ))
            }
        };
        let store = Store {
            state: Mutex::new(state),
            dir: dir.map(Path::to_path_buf),
            journal,
        };
        if fresh {
            let mut st = store.lock();
            let public = Variant {
                id: "public".into(),
                options: VariantOptions {
                    fit: "scale-down".into(),
                    metadata: "none".into(),
                    width: Some(1366),
                    height: Some(768),
                },
                never_require_signed_urls: Some(false),
            };
            store.journal(&Entry::Variant {
                variant: public.clone(),
            })?;
            st.variants.insert(public.id.clone(), public);
            st.keys.push(SigningKey {
                name: "default".into(),
                value: new_key_value(),
            });
            store.journal(&Entry::Keys {
                keys: st.keys.clone(),
            })?;
        }
        Ok(store)
    }

    /// Locks the state. Never hold the guard across an `.await`.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("emulator store poisoned")
    }

    /// Appends one mutation to the journal (a no-op in memory mode). Callers hold the
    /// state lock, which keeps journal order equal to the order of the changes.
    fn journal(&self, entry: &Entry) -> io::Result<()> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let mut line = serde_json::to_vec(entry).map_err(io::Error::other)?;
        line.push(b'\n');
        journal
            .lock()
            .expect("emulator journal poisoned")
            .write_all(&line)
    }

    /// Writes the blob file first, so a journal line never names a missing blob.
    fn persist_blob(&self, blob: &Blob) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        let path = dir.join("blobs").join(blob.sha256());
        if !path.exists() {
            let tmp = path.with_extension(format!("tmp{}", fastrand::u64(..)));
            fs::write(&tmp, &blob.bytes)?;
            fs::rename(&tmp, &path)?;
        }
        Ok(())
    }

    /// Inserts a new image (or draft) unless the id exists (an expired, never-used draft
    /// gives its id up); assigns its upload order. `Ok(None)` means the id is taken.
    pub fn insert(&self, mut rec: ImageRec) -> io::Result<Option<Arc<ImageRec>>> {
        if let Some(blob) = &rec.blob {
            self.persist_blob(blob)?;
        }
        let mut st = self.lock();
        if let Some(old) = st.images.get(&rec.id) {
            // A draft whose URL expired unused no longer holds its id (2026 behaviour).
            let expired_draft = old.draft_expiry.is_some_and(|e| e <= Utc::now());
            if !expired_draft {
                return Ok(None);
            }
            let old_seq = old.seq;
            st.order.remove(&old_seq);
        }
        rec.seq = st.next_seq;
        st.next_seq += 1;
        self.journal(&Entry::Put {
            image: stored(&rec, self.dir.is_some()),
        })?;
        let rec = Arc::new(rec);
        st.order.insert(rec.seq, rec.id.clone());
        st.images.insert(rec.id.clone(), rec.clone());
        Ok(Some(rec))
    }

    /// The image with this id.
    pub fn get(&self, id: &str) -> Option<Arc<ImageRec>> {
        self.lock().images.get(id).cloned()
    }

    /// Applies `change` to an existing image; `Ok(None)` when there is none.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut ImageRec),
    ) -> io::Result<Option<Arc<ImageRec>>> {
        let mut st = self.lock();
        let Some(old) = st.images.get(id) else {
            return Ok(None);
        };
        let mut rec = ImageRec::clone(old);
        change(&mut rec);
        self.journal(&Entry::Put {
            image: stored(&rec, self.dir.is_some()),
        })?;
        let rec = Arc::new(rec);
        st.images.insert(rec.id.clone(), rec.clone());
        Ok(Some(rec))
    }

    /// Moves an image to `new_id` (same list position) with `change` applied; `Ok(None)`
    /// when there is no image `old_id` or `new_id` is taken.
    pub fn rename(
        &self,
        old_id: &str,
        new_id: &str,
        change: impl FnOnce(&mut ImageRec),
    ) -> io::Result<Option<Arc<ImageRec>>> {
        let mut st = self.lock();
        if st.images.contains_key(new_id) {
            return Ok(None);
        }
        let Some(old) = st.images.get(old_id) else {
            return Ok(None);
        };
        let mut rec = ImageRec::clone(old);
        rec.id = new_id.to_owned();
        change(&mut rec);
        self.journal(&Entry::Delete {
            id: old_id.to_owned(),
        })?;
        self.journal(&Entry::Put {
            image: stored(&rec, self.dir.is_some()),
        })?;
        st.images.remove(old_id);
        let rec = Arc::new(rec);
        st.order.insert(rec.seq, rec.id.clone());
        st.images.insert(rec.id.clone(), rec.clone());
        Ok(Some(rec))
    }

    /// Deletes an image; false when there was none.
    pub fn delete(&self, id: &str) -> io::Result<bool> {
        let mut st = self.lock();
        let Some(seq) = st.images.get(id).map(|r| r.seq) else {
            return Ok(false);
        };
        self.journal(&Entry::Delete { id: id.to_owned() })?;
        st.images.remove(id);
        st.order.remove(&seq);
        Ok(true)
    }

    /// Turns a draft into an image with `blob`: once, before its expiry. The upload time
    /// and list position become those of the upload, not of the draft's creation.
    pub fn complete_draft(
        &self,
        id: &str,
        blob: Blob,
        filename: Option<String>,
        now: DateTime<Utc>,
    ) -> io::Result<Result<Arc<ImageRec>, DraftError>> {
        self.persist_blob(&blob)?;
        let mut st = self.lock();
        let Some(old) = st.images.get(id) else {
            return Ok(Err(DraftError::NotFound));
        };
        let Some(expiry) = old.draft_expiry else {
            return Ok(Err(DraftError::AlreadyUploaded));
        };
        if expiry <= now {
            return Ok(Err(DraftError::Expired));
        }
        let mut rec = ImageRec::clone(old);
        let old_seq = rec.seq;
        rec.seq = st.next_seq;
        st.next_seq += 1;
        rec.draft_expiry = None;
        rec.blob = Some(blob);
        rec.filename = filename;
        rec.uploaded = now;
        rec.arrived = Some(tokio::time::Instant::now());
        self.journal(&Entry::Put {
            image: stored(&rec, self.dir.is_some()),
        })?;
        st.order.remove(&old_seq);
        st.order.insert(rec.seq, rec.id.clone());
        let rec = Arc::new(rec);
        st.images.insert(rec.id.clone(), rec.clone());
        Ok(Ok(rec))
    }

    /// Adds or replaces a variant.
    pub fn put_variant(&self, st: &mut State, variant: Variant) -> io::Result<()> {
        self.journal(&Entry::Variant {
            variant: variant.clone(),
        })?;
        st.variants.insert(variant.id.clone(), variant);
        Ok(())
    }

    /// Removes a variant; false when there was none.
    pub fn delete_variant(&self, st: &mut State, id: &str) -> io::Result<bool> {
        if !st.variants.contains_key(id) {
            return Ok(false);
        }
        self.journal(&Entry::DeleteVariant { id: id.to_owned() })?;
        st.variants.remove(id);
        Ok(true)
    }

    /// Replaces the signing keys.
    pub fn set_keys(&self, st: &mut State, keys: Vec<SigningKey>) -> io::Result<()> {
        self.journal(&Entry::Keys { keys: keys.clone() })?;
        st.keys = keys;
        Ok(())
    }

    /// Sets the flexible-variants switch.
    pub fn set_flexible(&self, st: &mut State, on: bool) -> io::Result<()> {
        self.journal(&Entry::Config {
            flexible_variants: on,
        })?;
        st.flexible_variants = on;
        Ok(())
    }
}

/// A fresh random signing-key value (64 hex characters, like the service's).
pub fn new_key_value() -> String {
    format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    )
}

fn stored(rec: &ImageRec, with_sha: bool) -> StoredImage {
    StoredImage {
        id: rec.id.clone(),
        filename: rec.filename.clone(),
        meta: rec.meta.clone(),
        creator: rec.creator.clone(),
        require_signed_urls: rec.require_signed_urls,
        uploaded: rec.uploaded,
        seq: rec.seq,
        custom_id: rec.custom_id,
        draft_expiry: rec.draft_expiry,
        sha256: rec
            .blob
            .as_ref()
            .filter(|_| with_sha)
            .map(|b| b.sha256().to_owned()),
    }
}

/// Replays the journal into `state`; returns the number of entries applied. A torn last
/// line (a crash mid-write) is skipped rather than refusing to start.
fn replay(path: &Path, dir: &Path, state: &mut State) -> io::Result<usize> {
    let mut applied = 0;
    for line in BufReader::new(File::open(path)?).lines() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let entry: Entry = match serde_json::from_str(&line) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("emulator journal: skipping unreadable line: {e}");
                continue;
            }
        };
        applied += 1;
        match entry {
            Entry::Put { image } => {
                let blob = match &image.sha256 {
                    Some(sha) => {
                        let bytes = Bytes::from(fs::read(dir.join("blobs").join(sha))?);
                        let mime =
                            sniff_format(&bytes).map_or("application/octet-stream", |f| f.mime());
                        Some(Blob::new(bytes, mime))
                    }
                    None => None,
                };
                if let Some(old) = state.images.get(&image.id) {
                    let old_seq = old.seq;
                    state.order.remove(&old_seq);
                }
                state.next_seq = state.next_seq.max(image.seq + 1);
                state.order.insert(image.seq, image.id.clone());
                state.images.insert(
                    image.id.clone(),
                    Arc::new(ImageRec {
                        id: image.id,
                        filename: image.filename,
                        meta: image.meta,
                        creator: image.creator,
                        require_signed_urls: image.require_signed_urls,
                        uploaded: image.uploaded,
                        arrived: None,
                        seq: image.seq,
                        custom_id: image.custom_id,
                        draft_expiry: image.draft_expiry,
                        blob,
                    }),
                );
            }
            Entry::Delete { id } => {
                if let Some(old) = state.images.remove(&id) {
                    state.order.remove(&old.seq);
                }
            }
            Entry::Variant { variant } => {
                state.variants.insert(variant.id.clone(), variant);
            }
            Entry::DeleteVariant { id } => {
                state.variants.remove(&id);
            }
            Entry::Keys { keys } => state.keys = keys,
            Entry::Config { flexible_variants } => state.flexible_variants = flexible_variants,
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(id: &str, expiry: DateTime<Utc>) -> ImageRec {
        ImageRec {
            id: id.into(),
            filename: None,
            meta: Map::new(),
            creator: None,
            require_signed_urls: false,
            uploaded: Utc::now(),
            arrived: None,
            seq: 0,
            custom_id: true,
            draft_expiry: Some(expiry),
            blob: None,
        }
    }

    #[test]
    fn an_expired_unused_draft_frees_its_id() {
        let store = Store::open(None).expect("memory store");
        let now = Utc::now();
        store
            .insert(draft("d", now + chrono::Duration::minutes(5)))
            .expect("insert");
        assert!(
            store.insert(draft("d", now)).expect("insert").is_none(),
            "a live draft holds its id"
        );
        store
            .update("d", |r| {
                r.draft_expiry = Some(now - chrono::Duration::seconds(1))
            })
            .expect("update");
        let again = store.insert(draft("d", now + chrono::Duration::minutes(5)));
        assert!(
            again.expect("insert").is_some(),
            "the expired draft's id is free"
        );
        assert_eq!(store.lock().order.len(), 1);
    }

    #[test]
    fn a_draft_takes_one_upload_before_its_expiry() {
        let store = Store::open(None).expect("memory store");
        let now = Utc::now();
        let expiry = now + chrono::Duration::minutes(5);
        store.insert(draft("d", expiry)).expect("insert");
        let blob = || Blob::new(Bytes::from_static(b"GIF89a"), "image/gif");
        let late = expiry + chrono::Duration::seconds(1);
        assert!(matches!(
            store.complete_draft("d", blob(), None, late),
            Ok(Err(DraftError::Expired))
        ));
        assert!(
            store
                .complete_draft("d", blob(), None, now)
                .expect("io")
                .is_ok()
        );
        assert!(matches!(
            store.complete_draft("d", blob(), None, now),
            Ok(Err(DraftError::AlreadyUploaded))
        ));
        assert!(matches!(
            store.complete_draft("x", blob(), None, now),
            Ok(Err(DraftError::NotFound))
        ));
    }
}
