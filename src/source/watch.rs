//! A watched folder: the same source as a migrated folder (same identity, same rules, same
//! keys), listed forever. A start-up scan catches up with what changed while the daemon was
//! down; inotify events (one non-recursive watch per folder) bring new and changed files
//! within seconds; a jittered periodic rescan is the safety net, and the only way on network
//! file systems or past the inotify watch limit.
//!
//! A file is handed to the pipeline once it is stable (size and mtime unchanged for the
//! settle time, or the maximum wait has passed), with a [`Ticket`]: until the ticket comes
//! back no second copy of that key is handed over, so two events never make two concurrent
//! uploads. When it comes back the file is looked at again, and settled anew if it changed
//! meanwhile (the pipeline's own check after hashing records such a file as failed locally).
//!
//! A file still changing when the maximum wait is over goes only if it is a complete image
//! (the local check of [`crate::image_check`]); an incomplete one is held back, with a log
//! line, until it changes again.
//!
//! Files that left the folder: under `keep` their images stay; under `delete` they are
//! removed in passes, each refused as a whole past the `max_delete` cap (a reload looks at a
//! refused pass again, under the new cap).
//!
//! The folder itself is watched too (a watch on its parent for its name, its own delete and
//! move events, and its (device, inode) compared every [`ROOT_CHECK_EVERY`]): while it is
//! gone (a mount point that is bare again counts as gone: an empty mount point is not the
//! folder) nothing is uploaded or deleted and the status says why; when a folder is at its path
//! again (recreated, moved back, remounted, or a symbolic link to a folder, which is followed)
//! it is watched and scanned again within seconds. A vanished folder never turns into
//! deletes: pending deletes are dropped when it goes, and the scan after it comes back does
//! not look for files that left (the next periodic rescan does, under the cap).

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use notify::event::{CreateKind, ModifyKind, RenameMode};
use notify::{EventKind, RecursiveMode, Watcher};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use walkdir::WalkDir;

use super::walk::Walk;
use super::{Found, Recount};
use crate::error::Result;
use crate::image_check::{self, ImageProblem};
use crate::item::{Body, Item, Locator, SourceId, Ticket};
use crate::layer::{raw_section, secs};
use crate::rules;

/// What `watch` does when a file leaves the folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnDelete {
    /// Leave the image (and its ledger row) in place.
    #[default]
    Keep,
    /// Delete the image too (unless another item holds it), within `max_delete` per pass.
    Delete,
}

/// A cap on deletes per pass: a number of files, or a share of the source's items.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MaxDelete {
    /// At most this many.
    Count(u64),
    /// At most this percentage of the items recorded for the source.
    Percent(f64),
}

impl MaxDelete {
    /// Deletes allowed in a pass over a source with `items` recorded items.
    pub fn allowed(self, items: u64) -> u64 {
        match self {
            MaxDelete::Count(n) => n,
            MaxDelete::Percent(p) => (items as f64 * p / 100.0).floor() as u64,
        }
    }
}

impl std::str::FromStr for MaxDelete {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<MaxDelete, String> {
        let bad = || format!("{s:?} is neither a number of files (100) nor a percentage (5%)");
        match s.trim().strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(MaxDelete::Percent(p)),
                _ => Err(bad()),
            },
            None => s.trim().parse().map(MaxDelete::Count).map_err(|_| bad()),
        }
    }
}

impl std::fmt::Display for MaxDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxDelete::Count(n) => write!(f, "{n}"),
            MaxDelete::Percent(p) => write!(f, "{p}%"),
        }
    }
}

raw_section! {
/// `[watch]` as written.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    /// Seconds a file's size and mtime must stay unchanged before it is uploaded.
    pub settle_secs: Option<f64>,
    /// Longest wait for a file that never stops changing.
    pub max_settle_secs: Option<f64>,
    /// Seconds between full rescans (the safety net under events), jittered.
    pub rescan_interval_secs: Option<f64>,
    /// `keep` or `delete`.
    pub on_delete: Option<OnDelete>,
    /// Most deletes per pass: a number (`100`) or a percentage of the folder (`5%`).
    pub max_delete: Option<String>,
    /// First delay before a failed item is retried (doubling up to 6 hours).
    pub retry_base_secs: Option<f64>,
}
}

/// Checked `[watch]` settings.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Quiet time that makes a file stable.
    pub settle: Duration,
    /// Longest wait for stability.
    pub max_settle: Duration,
    /// Time between full rescans.
    pub rescan_interval: Duration,
    /// What a deleted file does to its image.
    pub on_delete: OnDelete,
    /// Cap on deletes per pass.
    pub max_delete: MaxDelete,
    /// First delay before a failed item is retried.
    pub retry_base: Duration,
}

/// `[watch]`: the durations, the delete cap, and a longest wait no shorter than the quiet time.
pub fn validate_watch(wr: RawWatch, problems: &mut Vec<String>) -> WatchConfig {
    let watch = WatchConfig {
        settle: secs("watch.settle_secs", wr.settle_secs, 2.0, problems),
        max_settle: secs("watch.max_settle_secs", wr.max_settle_secs, 60.0, problems),
        rescan_interval: secs(
            "watch.rescan_interval_secs",
            wr.rescan_interval_secs,
            3600.0,
            problems,
        ),
        on_delete: wr.on_delete.unwrap_or_default(),
        max_delete: match wr.max_delete.as_deref().map(str::parse::<MaxDelete>) {
            None => MaxDelete::Percent(5.0),
            Some(Ok(m)) => m,
            Some(Err(why)) => {
                problems.push(format!("`watch.max_delete` (--max-delete) {why}"));
                MaxDelete::Count(0)
            }
        },
        retry_base: secs("watch.retry_base_secs", wr.retry_base_secs, 60.0, problems),
    };
    if watch.max_settle < watch.settle {
        problems.push(format!(
            "`watch.max_settle_secs` (--max-settle) is {} s, shorter than `watch.settle_secs` (--settle) {} s: make it longer",
            watch.max_settle.as_secs_f64(),
            watch.settle.as_secs_f64()
        ));
    }
    watch
}

/// Events waiting for the watch loop; past this the notify thread waits, and the kernel's
/// own queue overflows into a rescan rather than into memory.
const EVENT_QUEUE: usize = 16_384;
/// Items ready for the pipeline that the loop holds before it stops taking scan results.
const READY_QUEUE: usize = 1024;
/// Keys read per ledger page while looking for files that left.
const KEY_PAGE: u32 = 1000;
/// Failed items re-queued per look at the ledger.
const DUE_BATCH: u32 = 256;
/// The longest pause between looks for failed items whose retry delay has passed.
const DUE_EVERY: Duration = Duration::from_secs(30);
/// Rescan interval on file systems without events, or past the watch limit.
const POLL_EVERY: Duration = Duration::from_secs(15);
/// How often the folder's own (device, inode) is compared with the one watched: the safety
/// net under the events that say it went or came back.
const ROOT_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Where Linux says how many inotify watches one user may hold.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";

/// What the daemon's loop shows the service manager and the metrics endpoint.
#[derive(Debug, Default)]
pub struct WatchStatus {
    /// Files changing, waiting to be stable.
    pub settling: AtomicU64,
    /// Items handed to the pipeline and not yet finished.
    pub in_flight: AtomicU64,
    /// Whether the folder is scanned periodically instead of watched.
    pub polling: AtomicBool,
    /// Full scans finished.
    pub scans: AtomicU64,
    /// Rescans asked for by an overflowed event queue.
    pub overflows: AtomicU64,
    /// Deletes refused by the cap.
    pub deletes_refused: AtomicU64,
    /// Files past the maximum wait held back because they are not complete images yet.
    pub held_back: AtomicU64,
    /// Why the watched folder is not there, while it is not.
    folder_missing: Mutex<Option<String>>,
    /// Cancelled once the start-up scan is queued: the service is ready.
    pub ready: CancellationToken,
    /// When the watch loop last turned (ms after [`epoch`]): the watchdog's evidence.
    heartbeat_ms: AtomicU64,
}

/// The instant heartbeats count from.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl WatchStatus {
    /// The loop turned.
    fn beat(&self) {
        let ms = Instant::now().duration_since(epoch()).as_millis() as u64;
        self.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Why the watched folder is missing, while it is (nothing is uploaded or deleted then).
    pub fn folder_missing(&self) -> Option<String> {
        self.folder_missing
            .lock()
            .map_or_else(|p| p.into_inner().clone(), |g| g.clone())
    }

    fn set_folder_missing(&self, why: Option<String>) {
        match self.folder_missing.lock() {
            Ok(mut g) => *g = why,
            Err(p) => *p.into_inner() = why,
        }
    }

    /// Time since the loop last turned.
    pub fn since_heartbeat(&self) -> Duration {
        let now = Instant::now().duration_since(epoch()).as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)))
    }
}

/// The ledger as a watched folder sees it, handed in by the command: a source never opens
/// the ledger itself. Each thread that reads (the watch loop, a scan) opens its own reader.
pub trait LedgerView: Send + Sync + std::fmt::Debug {
    /// A reader, `None` while there is no ledger yet (or it cannot be read now).
    fn open(&self) -> Option<Box<dyn LedgerReads>>;
}

/// The reads a watched folder makes in the ledger.
pub trait LedgerReads: Send {
    /// The ledger's number of a source, `None` until a run recorded it.
    fn source_number(&self, source: &SourceId) -> Result<Option<i64>>;
    /// Failed items of a source whose retry delay has passed, oldest due first.
    fn failed_due(&self, source_id: i64, limit: u32) -> Result<Vec<String>>;
    /// Items recorded for a source, and how many of them are failed.
    fn item_counts(&self, source_id: i64) -> Result<(u64, u64)>;
    /// A page of a source's keys after `after`, in key order, with whether each holds an image.
    fn keys_after(&self, source_id: i64, after: &str, limit: u32) -> Result<Vec<(String, bool)>>;
}

/// A folder kept in sync.
#[derive(Debug)]
pub struct Watch {
    walk: Walk,
    cfg: tokio::sync::watch::Receiver<WatchConfig>,
    ledger: Arc<dyn LedgerView>,
    status: Arc<WatchStatus>,
}

/// A file changing, waiting to be stable.
#[derive(Debug)]
struct Settling {
    first_seen: Instant,
    last_change: Instant,
    size: u64,
    mtime_ns: i64,
    /// The (size, mtime) at which it failed the completeness check past the maximum wait:
    /// it waits for a change.
    held: Option<(u64, i64)>,
    /// A completeness check is running.
    checking: bool,
}

/// What a completeness check found: the key, the (size, mtime) checked, and the problem.
type Checked = (String, (u64, i64), Option<String>);

/// An item in the pipeline.
#[derive(Debug, Clone, Copy)]
struct Flight {
    /// The (size, mtime) handed over; `None` for a removal.
    stamp: Option<(u64, i64)>,
    /// An event came meanwhile: look again when it is done.
    dirty: bool,
    /// When the file first changed (or was handed over).
    since: Instant,
}

/// What a scan thread reports.
enum Scanned {
    /// An entry, as the walk rules see it.
    Entry(Found),
    /// A folder to watch.
    Folder(PathBuf),
    /// A recorded key whose file is not there, whether it holds an image, and the folder's
    /// generation the scan saw (a scan of a folder since gone or replaced is not believed).
    Missing(String, bool, u64),
    /// The scan is over.
    Finished { full: bool },
}

impl Watch {
    /// A watched folder with live settings (a reload sends new ones), the ledger it reads
    /// its failed items and recorded keys from, and the status it keeps up to date.
    pub fn new(
        walk: Walk,
        cfg: tokio::sync::watch::Receiver<WatchConfig>,
        ledger: Arc<dyn LedgerView>,
        status: Arc<WatchStatus>,
    ) -> Watch {
        Watch {
            walk,
            cfg,
            ledger,
            status,
        }
    }

    /// The source's identity: the folder's, as `migrate` records it.
    pub fn id(&self) -> &SourceId {
        self.walk.id()
    }

    /// The file to upload: a watched folder's items are files.
    pub async fn body(&self, item: &Item) -> Result<Body> {
        self.walk.body(item).await
    }

    /// A folder is cheap to list again.
    pub fn recount(&self) -> Recount {
        Recount::Cheap
    }

    /// Hands items to `out` until `stop` is cancelled.
    pub async fn run(
        self: Arc<Self>,
        out: mpsc::Sender<Found>,
        stop: CancellationToken,
    ) -> Result<()> {
        let (events_tx, mut events) = mpsc::channel(EVENT_QUEUE);
        let (done_tx, mut done) = mpsc::unbounded_channel();
        let (scan_tx, mut scans) = mpsc::channel(READY_QUEUE);
        let (checks_tx, mut checks) = mpsc::unbounded_channel();
        let mut lp = Loop::new(self.clone(), done_tx);
        lp.checks_tx = Some(checks_tx);
        lp.start_watching(events_tx).await;
        lp.start_scan(&scan_tx, true);
        let mut tick = tokio::time::interval(lp.tick_every());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut cfg = self.cfg.clone();
        loop {
            let room = lp.ready.len() < READY_QUEUE;
            tokio::select! {
                // Biased, so the stop comes first; the tick next, so that a storm of events
                // can never keep settled files from being handed over.
                biased;
                _ = stop.cancelled() => break,
                _ = tick.tick() => lp.tick(&scan_tx),
                Some(key) = done.recv() => lp.done(key),
                Some(checked) = checks.recv() => lp.checked(checked),
                permit = out.reserve(), if !lp.ready.is_empty() => {
                    let Ok(permit) = permit else { break };
                    if let Some(found) = lp.ready.pop_front() {
                        permit.send(found);
                    }
                }
                Some(event) = events.recv() => lp.event(event),
                Some(scanned) = scans.recv(), if room => lp.scanned(scanned),
                Ok(()) = cfg.changed() => {
                    tick = tokio::time::interval(lp.tick_every());
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    lp.reschedule();
                    lp.reloaded();
                }
            }
            lp.publish();
        }
        Ok(())
    }
}

/// The watch loop's state; only the loop touches it.
struct Loop {
    watch: Arc<Watch>,
    done_tx: mpsc::UnboundedSender<String>,
    watcher: Option<notify::RecommendedWatcher>,
    watched: HashSet<PathBuf>,
    settling: HashMap<String, Settling>,
    /// Keys in the pipeline.
    in_flight: HashMap<String, Flight>,
    ready: VecDeque<Found>,
    /// Folders that appeared, to watch and scan at the next tick.
    pending_subscans: Vec<PathBuf>,
    deleting: Vec<String>,
    deleting_since: Option<Instant>,
    scanning: bool,
    rescan_wanted: bool,
    next_rescan: Instant,
    next_due: Instant,
    /// Missing files of failed rows kept under `keep`: not looked at again.
    due_skipped: HashSet<String>,
    source_id: Option<i64>,
    reader: Option<Box<dyn LedgerReads>>,
    /// The last pass of deletes the cap refused: looked at again after a reload.
    refused: Vec<String>,
    /// Where completeness checks report (none in unit tests: they check in place).
    checks_tx: Option<mpsc::UnboundedSender<Checked>>,
    /// The watched folder's (device, inode) when it was last attached.
    root_id: Option<(u64, u64)>,
    /// Whether the folder was a mount point when attached: its path on its parent's device
    /// later means it was unmounted (an empty mount point is not the folder).
    root_mount: bool,
    /// Whether the folder is gone (nothing is uploaded or deleted meanwhile).
    root_gone: bool,
    /// Bumped each time the folder goes or is replaced: older scans' findings are stale.
    generation: u64,
    /// The next scan comes right after the folder came back: it does not look for files
    /// that left.
    reattached: bool,
    /// An event named the folder itself: look at it at the next tick.
    root_check_wanted: bool,
    next_root_check: Instant,
    /// The folder's parent, watched for the folder's own name.
    parent: Option<PathBuf>,
}

impl Loop {
    fn new(watch: Arc<Watch>, done_tx: mpsc::UnboundedSender<String>) -> Loop {
        let now = Instant::now();
        let mut lp = Loop {
            watch,
            done_tx,
            watcher: None,
            watched: HashSet::new(),
            settling: HashMap::new(),
            in_flight: HashMap::new(),
            ready: VecDeque::new(),
            pending_subscans: Vec::new(),
            deleting: Vec::new(),
            deleting_since: None,
            scanning: false,
            rescan_wanted: false,
            next_rescan: now,
            next_due: now,
            due_skipped: HashSet::new(),
            source_id: None,
            reader: None,
            refused: Vec::new(),
            checks_tx: None,
            root_id: None,
            root_mount: false,
            root_gone: false,
            generation: 0,
            reattached: false,
            root_check_wanted: false,
            next_root_check: now + ROOT_CHECK_EVERY,
            parent: None,
        };
        lp.root_id = root_identity(lp.watch.walk.root()).ok();
        lp.root_mount = lp
            .root_id
            .is_some_and(|id| lp.on_parent_device(id) == Some(false));
        lp.reschedule();
        lp
    }

    fn cfg(&self) -> WatchConfig {
        self.watch.cfg.borrow().clone()
    }

    fn polling(&self) -> bool {
        self.watch.status.polling.load(Ordering::Relaxed)
    }

    /// How often settling files are looked at: a quarter of the settle time, within reason.
    fn tick_every(&self) -> Duration {
        (self.cfg().settle / 4).clamp(Duration::from_millis(50), Duration::from_millis(500))
    }

    /// Schedules the next rescan (jittered by up to a tenth, so that many daemons on one
    /// host do not scan in step) and the next look for due retries.
    fn reschedule(&mut self) {
        let cfg = self.cfg();
        let every = if self.polling() {
            cfg.rescan_interval.min(POLL_EVERY)
        } else {
            cfg.rescan_interval
        };
        let jitter = every.mul_f64(fastrand::f64() * 0.1);
        self.next_rescan = Instant::now() + every - jitter;
        self.next_due = Instant::now() + cfg.retry_base.min(DUE_EVERY);
    }

    /// Watches every folder, unless the file system sends no events or the folders
    /// outnumber the watches this user may hold: then periodic scans do the work.
    async fn start_watching(&mut self, events: mpsc::Sender<notify::Result<notify::Event>>) {
        let root = self.watch.walk.root().to_path_buf();
        if let Some(fs) = network_fs(&root) {
            tracing::warn!(
                folder = %root.display(), fs,
                interval_secs = POLL_EVERY.as_secs(),
                "the folder is on a network file system, where inotify sees no changes made by other machines: scanning it periodically instead"
            );
            self.fall_back();
            return;
        }
        let walk_root = self.watch.clone();
        let folders =
            tokio::task::spawn_blocking(move || walk_root.walk.folders().collect::<Vec<_>>())
                .await
                .unwrap_or_default();
        let limit = max_user_watches();
        if let Some(limit) = limit
            && folders.len() as u64 >= limit
        {
            self.watch_limit(folders.len() as u64, Some(limit));
            return;
        }
        let handler = move |event: notify::Result<notify::Event>| {
            // The receiver is gone only when the daemon stops.
            let _ = events.blocking_send(event);
        };
        let watcher = match notify::recommended_watcher(handler) {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start watching the folder: scanning it periodically instead");
                self.fall_back();
                return;
            }
        };
        self.watcher = Some(watcher);
        self.watch_parent();
        for folder in folders {
            self.add_watch(folder);
            if self.watcher.is_none() {
                return;
            }
        }
        tracing::info!(folders = self.watched.len(), "watching");
    }

    /// Watches the folder's parent, for events that name the folder itself (deleted,
    /// created, moved away or back); without it the periodic check still notices.
    fn watch_parent(&mut self) {
        let Some(parent) = self.watch.walk.root().parent().map(Path::to_path_buf) else {
            return;
        };
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        if parent.as_os_str().is_empty() || self.parent.is_some() {
            return;
        }
        match w.watch(&parent, RecursiveMode::NonRecursive) {
            Ok(()) => self.parent = Some(parent),
            Err(e) => {
                tracing::debug!(folder = %parent.display(), error = %e, "cannot watch the folder's parent; the periodic check notices the folder going and coming back");
            }
        }
    }

    fn add_watch(&mut self, folder: PathBuf) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        if self.watched.contains(&folder) {
            return;
        }
        match w.watch(&folder, RecursiveMode::NonRecursive) {
            Ok(()) => {
                self.watched.insert(folder);
            }
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                self.watch_limit(self.watched.len() as u64 + 1, max_user_watches());
            }
            // Gone already: its parent's event or the next scan tells the rest.
            Err(e) if matches!(e.kind, notify::ErrorKind::PathNotFound) => {}
            Err(e) => {
                tracing::warn!(folder = %folder.display(), error = %e, "cannot watch this folder; the periodic rescan covers it");
            }
        }
    }

    /// Warns once and falls back to periodic scans: never a retry loop against the limit.
    fn watch_limit(&mut self, folders: u64, limit: Option<u64>) {
        tracing::warn!(
            folders,
            max_user_watches = limit,
            interval_secs = POLL_EVERY.as_secs(),
            "too many folders for inotify watches: scanning periodically instead; to watch them, raise the limit with `sysctl fs.inotify.max_user_watches={}` (and in /etc/sysctl.d/ to keep it)",
            (folders * 2).max(524_288)
        );
        self.fall_back();
    }

    fn fall_back(&mut self) {
        self.watcher = None;
        self.watched.clear();
        self.parent = None;
        self.watch.status.polling.store(true, Ordering::Relaxed);
        self.reschedule();
    }

    /// Starts a scan on a blocking thread: the whole tree (with files that left, when
    /// anything is to be done about them) or, for a folder that just appeared, its subtree.
    fn start_scan(&mut self, out: &mpsc::Sender<Scanned>, full: bool) {
        self.start_scan_at(out, None, full);
    }

    fn start_scan_at(&mut self, out: &mpsc::Sender<Scanned>, at: Option<PathBuf>, full: bool) {
        if full {
            if self.scanning {
                self.rescan_wanted = true;
                return;
            }
            self.scanning = true;
            self.rescan_wanted = false;
        }
        let watch = self.watch.clone();
        let out = out.clone();
        let watching = self.watcher.is_some();
        // The first scan after the folder came back does not look for files that left: a
        // folder recreated empty, or an empty mount point, is not a reason to delete.
        let missing = full && !std::mem::take(&mut self.reattached);
        let source_id = self.source_id().filter(|_| missing);
        let root = (self.root_id, self.generation);
        tokio::task::spawn_blocking(move || {
            scan(&watch, &out, at, watching, source_id, root);
            if full {
                let _ = out.blocking_send(Scanned::Finished { full });
            }
        });
    }

    fn source_id(&mut self) -> Option<i64> {
        let watch = self.watch.clone();
        if self.source_id.is_none()
            && let Some(reader) = self.reader()
        {
            self.source_id = reader.source_number(watch.id()).ok().flatten();
        }
        self.source_id
    }

    fn reader(&mut self) -> Option<&dyn LedgerReads> {
        if self.reader.is_none() {
            self.reader = self.watch.ledger.open();
        }
        self.reader.as_deref()
    }

    fn scanned(&mut self, scanned: Scanned) {
        match scanned {
            Scanned::Entry(Found::Item(item)) => {
                let Some((size, mtime_ns)) = file_stamp(&item) else {
                    return;
                };
                let quiet = self.cfg().settle;
                if modified_within(mtime_ns, quiet) {
                    self.changed(item.key, size, mtime_ns);
                } else {
                    self.hand_over(item.key, size, mtime_ns);
                }
            }
            Scanned::Entry(other) => self.ready.push_back(other),
            Scanned::Folder(folder) => self.add_watch(folder),
            Scanned::Missing(key, holds_image, generation) => {
                if generation == self.generation && !self.root_gone {
                    self.missing(key, holds_image);
                }
            }
            Scanned::Finished { full } => {
                if full {
                    self.scanning = false;
                    let n = self.watch.status.scans.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::debug!(scans = n, "scan finished");
                    self.watch.status.ready.cancel();
                }
            }
        }
    }

    /// A file changed (an event, or a scan saw a recent mtime): it settles.
    fn changed(&mut self, key: String, size: u64, mtime_ns: i64) {
        if let Some(f) = self.in_flight.get_mut(&key) {
            f.dirty = true;
            return;
        }
        let now = Instant::now();
        let s = self.settling.entry(key).or_insert(Settling {
            first_seen: now,
            last_change: now,
            size,
            mtime_ns,
            held: None,
            checking: false,
        });
        if (s.size, s.mtime_ns) != (size, mtime_ns) {
            s.size = size;
            s.mtime_ns = mtime_ns;
        }
        s.last_change = now;
    }

    /// Hands a stable file to the pipeline, with a ticket that comes back when it is done.
    fn hand_over(&mut self, key: String, size: u64, mtime_ns: i64) {
        if let Some(f) = self.in_flight.get_mut(&key) {
            f.dirty = true;
            return;
        }
        let since = self
            .settling
            .remove(&key)
            .map_or_else(Instant::now, |s| s.first_seen);
        let path = self.watch.walk.path_of(&key);
        let mut item = Item::file(key.clone(), path, size, mtime_ns);
        item.ticket = Ticket::new(key.clone(), self.done_tx.clone());
        self.in_flight.insert(
            key,
            Flight {
                stamp: Some((size, mtime_ns)),
                dirty: false,
                since,
            },
        );
        self.ready.push_back(Found::Item(item));
    }

    /// The pipeline is done with `key`: look at the file again if it changed meanwhile.
    fn done(&mut self, key: String) {
        let Some(flight) = self.in_flight.remove(&key) else {
            return;
        };
        let path = self.watch.walk.path_of(&key);
        match self.watch.walk.entry(&path) {
            Some(Found::Item(item)) => {
                if let Some(now) = file_stamp(&item)
                    && (flight.dirty || flight.stamp != Some(now))
                {
                    self.changed(key, now.0, now.1);
                }
            }
            Some(_) => {}
            // A removal is done; a file that left while it was uploading goes now.
            None if flight.stamp.is_some()
                && !self.root_gone
                && !path.exists()
                && self.cfg().on_delete == OnDelete::Delete =>
            {
                self.queue_delete(key);
            }
            None => {}
        }
    }

    fn event(&mut self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(e) => e,
            Err(e) if matches!(e.kind, notify::ErrorKind::MaxFilesWatch) => {
                self.watch_limit(self.watched.len() as u64, max_user_watches());
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "the folder watch reported an error: rescanning");
                self.rescan_wanted = true;
                return;
            }
        };
        tracing::trace!(kind = ?event.kind, paths = ?event.paths, "folder event");
        // The kernel's queue overflowed: events were lost, and this one names no path.
        if event.need_rescan() {
            self.watch.status.overflows.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "the kernel dropped folder events (its queue overflowed): rescanning the folder"
            );
            self.rescan_wanted = true;
            return;
        }
        // The parent's events matter only when they name the folder itself; the folder's own
        // delete and move events name it too.
        let root = self.watch.walk.root().to_path_buf();
        if event.paths.iter().any(|p| p == &root) {
            self.root_check_wanted = true;
        }
        if self.root_gone {
            return;
        }
        if let EventKind::Modify(ModifyKind::Name(RenameMode::Both)) = event.kind
            && let [from, to] = event.paths.as_slice()
        {
            let inside = |p: &Path| p != root && p.starts_with(&root);
            if inside(from) {
                self.path_left(from);
            }
            if inside(to) {
                self.path_changed(to);
            }
            return;
        }
        let mut event = event;
        event.paths.retain(|p| p != &root && p.starts_with(&root));
        if event.paths.is_empty() {
            return;
        }
        match event.kind {
            EventKind::Create(CreateKind::Folder)
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
                if event.paths.first().is_some_and(|p| p.is_dir()) =>
            {
                // A folder arrived with whatever it holds: watch it and scan it.
                for p in event.paths {
                    self.new_folder(p);
                }
            }
            EventKind::Create(_)
            | EventKind::Modify(ModifyKind::Data(_))
            | EventKind::Modify(ModifyKind::Any)
            | EventKind::Modify(ModifyKind::Metadata(_))
            | EventKind::Modify(ModifyKind::Name(RenameMode::To))
            | EventKind::Access(notify::event::AccessKind::Close(
                notify::event::AccessMode::Write,
            )) => {
                for p in &event.paths {
                    self.path_changed(p);
                }
            }
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                if let [from, to] = event.paths.as_slice() {
                    self.path_left(from);
                    self.path_changed(to);
                }
            }
            EventKind::Modify(ModifyKind::Name(_)) | EventKind::Remove(_) => {
                for p in &event.paths {
                    self.path_left(p);
                }
            }
            _ => {}
        }
    }

    fn new_folder(&mut self, folder: PathBuf) {
        self.pending_subscans.push(folder);
    }

    fn path_changed(&mut self, path: &Path) {
        match self.watch.walk.entry(path) {
            Some(Found::Item(item)) => {
                if let Some((size, mtime_ns)) = file_stamp(&item) {
                    self.changed(item.key, size, mtime_ns);
                }
            }
            Some(other) => self.ready.push_back(other),
            None => {}
        }
    }

    /// A path was deleted or moved away: a file, or a whole folder (whose files left with
    /// it, without events of their own: a rescan finds them).
    fn path_left(&mut self, path: &Path) {
        if self.watched.remove(path) {
            if let Some(w) = self.watcher.as_mut() {
                let _ = w.unwatch(path);
            }
            if self.cfg().on_delete == OnDelete::Delete {
                self.rescan_wanted = true;
            }
            return;
        }
        let Some(key) = self.key_of(path) else { return };
        self.settling.remove(&key);
        if path.exists() {
            return;
        }
        if let Some(f) = self.in_flight.get_mut(&key) {
            f.dirty = true;
            return;
        }
        if self.cfg().on_delete == OnDelete::Delete {
            self.queue_delete(key);
        }
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(self.watch.walk.root()).ok()?;
        let key = rel.to_str()?.replace(std::path::MAIN_SEPARATOR, "/");
        (!key.is_empty()).then_some(key)
    }

    /// A recorded key whose file is not there (found by a scan).
    fn missing(&mut self, key: String, holds_image: bool) {
        if self.in_flight.contains_key(&key) || self.settling.contains_key(&key) {
            return;
        }
        match self.cfg().on_delete {
            OnDelete::Delete => self.queue_delete(key),
            // Its image stays; a row that never held one (a failure) has nothing to keep.
            OnDelete::Keep if !holds_image => self.gone(key),
            OnDelete::Keep => {}
        }
    }

    fn queue_delete(&mut self, key: String) {
        if self.root_gone {
            return;
        }
        self.deleting_since.get_or_insert_with(Instant::now);
        self.deleting.push(key);
    }

    /// Hands over a removal (its ticket comes back once the tombstone is committed).
    fn gone(&mut self, key: String) {
        if self.in_flight.contains_key(&key) {
            return;
        }
        let ticket = Ticket::new(key.clone(), self.done_tx.clone());
        self.in_flight.insert(
            key.clone(),
            Flight {
                stamp: None,
                dirty: false,
                since: Instant::now(),
            },
        );
        self.ready.push_back(Found::Gone { key, ticket });
    }

    /// Whether a file that changed before `limit` is still settling or uploading. A rename
    /// is a delete and a create at once: the delete must wait until the new path's record
    /// (which may share the old path's image) is committed, or it would delete an image
    /// the new path is about to hold.
    fn uploading_since(&self, limit: Instant) -> bool {
        self.settling.values().any(|s| s.first_seen <= limit)
            || self
                .in_flight
                .values()
                .any(|f| f.stamp.is_some() && f.since <= limit)
    }

    /// One pass of deletes: all of it, or none of it when it is over the cap.
    fn decide_deletes(&mut self) {
        self.deleting_since = None;
        let mut keys = std::mem::take(&mut self.deleting);
        keys.sort();
        keys.dedup();
        // The folder is not the one the files left (gone, or another one at its path): no
        // file left it, whatever is missing. The next check says what happened to it.
        if root_identity(self.watch.walk.root()).ok() != self.root_id {
            self.root_check_wanted = true;
            return;
        }
        // Back already (a rename round trip, an editor's save): not a delete.
        keys.retain(|k| !self.watch.walk.path_of(k).exists());
        if keys.is_empty() {
            return;
        }
        let cfg = self.cfg();
        let recorded = self
            .source_id()
            .and_then(|id| self.reader().and_then(|r| r.item_counts(id).ok()))
            .map_or(0, |(all, _)| all);
        let allowed = cfg.max_delete.allowed(recorded);
        if keys.len() as u64 > allowed {
            self.watch
                .status
                .deletes_refused
                .fetch_add(keys.len() as u64, Ordering::Relaxed);
            tracing::error!(
                files = keys.len(),
                recorded,
                max_delete = %cfg.max_delete,
                first = %keys[0],
                "REFUSED to delete the images of files that left the folder: more than --max-delete in one pass. Nothing was deleted; their images stay. If the files are really gone, raise --max-delete (or watch.max_delete) and reload; if not, put them back"
            );
            self.refused = keys;
            return;
        }
        self.refused.clear();
        for key in keys {
            self.gone(key);
        }
    }

    /// The settings were reloaded: a pass of deletes the cap refused is looked at again,
    /// under the new cap (files that came back meanwhile are left out then).
    fn reloaded(&mut self) {
        if self.refused.is_empty() {
            return;
        }
        let keys = std::mem::take(&mut self.refused);
        tracing::info!(
            files = keys.len(),
            max_delete = %self.cfg().max_delete,
            "looking again at the deletes the cap refused, under the reloaded settings"
        );
        for key in keys {
            self.queue_delete(key);
        }
    }

    /// Compares the folder at the root's path with the one watched: notices it going,
    /// coming back and being replaced.
    fn check_root(&mut self, scans: &mpsc::Sender<Scanned>) {
        self.root_check_wanted = false;
        self.next_root_check = Instant::now() + ROOT_CHECK_EVERY;
        match root_identity(self.watch.walk.root()) {
            Ok(id) if !self.root_gone && Some(id) == self.root_id => {}
            Ok(id) if self.root_mount && self.on_parent_device(id) == Some(true) => {
                if !self.root_gone {
                    self.root_lost(
                        "it was unmounted (its path is the bare mount point now)".into(),
                    );
                }
            }
            Ok(id) => self.root_back(id, scans),
            Err(_) if self.root_gone => {}
            Err(why) => self.root_lost(why),
        }
    }

    /// Whether a folder with this identity at the root's path is on its parent's device
    /// (`None` without a parent to compare with).
    fn on_parent_device(&self, (dev, _): (u64, u64)) -> Option<bool> {
        let parent = self.watch.walk.root().parent()?;
        std::fs::metadata(parent).ok().map(|m| m.dev() == dev)
    }

    /// The folder is gone: nothing is uploaded or deleted until it is back.
    fn root_lost(&mut self, why: String) {
        let root = self.watch.walk.root().to_path_buf();
        tracing::error!(
            folder = %root.display(),
            reason = %why,
            check_every_secs = ROOT_CHECK_EVERY.as_secs_f64(),
            "the watched folder is gone: nothing is uploaded or deleted until a folder is at its path again (recreate it, move it back or mount it; it is watched again within seconds)"
        );
        self.root_gone = true;
        self.generation += 1;
        self.watch
            .status
            .set_folder_missing(Some(format!("{}: {why}", root.display())));
        self.forget_folder();
    }

    /// A folder is at the root's path again (or another one replaced it): watch it and scan it.
    fn root_back(&mut self, id: (u64, u64), scans: &mpsc::Sender<Scanned>) {
        let root = self.watch.walk.root().to_path_buf();
        let link = std::fs::symlink_metadata(&root).is_ok_and(|m| m.file_type().is_symlink());
        if self.root_gone {
            tracing::info!(folder = %root.display(), symlink = link, "the watched folder is back: watching it again and rescanning");
        } else {
            tracing::warn!(folder = %root.display(), symlink = link, "the watched folder was replaced (another folder is at its path now): watching that one and rescanning");
            self.generation += 1;
            self.forget_folder();
        }
        self.root_gone = false;
        self.root_id = Some(id);
        if !self.root_mount {
            self.root_mount = self.on_parent_device(id) == Some(false);
        }
        self.watch.status.set_folder_missing(None);
        if self.watcher.is_some() {
            self.add_watch(root);
        }
        self.reattached = true;
        if self.scanning {
            // The scan under way saw the old folder; the next one is the first of this one.
            self.rescan_wanted = true;
        } else {
            self.start_scan(scans, true);
        }
    }

    /// Drops what was known about the folder's content: its watches, settling files and
    /// pending deletes (none of which may act on a folder that is not there).
    fn forget_folder(&mut self) {
        if let Some(w) = self.watcher.as_mut() {
            for folder in self.watched.drain() {
                let _ = w.unwatch(&folder);
            }
        }
        self.watched.clear();
        self.settling.clear();
        self.pending_subscans.clear();
        self.deleting.clear();
        self.deleting_since = None;
    }

    /// Starts the completeness check of a file past the maximum wait (on a blocking thread;
    /// in place when there is no loop to report to).
    fn check_complete(&mut self, key: String, stamp: (u64, i64)) {
        let path = self.watch.walk.path_of(&key);
        match &self.checks_tx {
            Some(tx) => {
                if let Some(s) = self.settling.get_mut(&key) {
                    s.checking = true;
                }
                let tx = tx.clone();
                tokio::task::spawn_blocking(move || {
                    let _ = tx.send((key, stamp, incomplete(&path)));
                });
            }
            None => {
                let problem = incomplete(&path);
                self.checked((key, stamp, problem));
            }
        }
    }

    /// A completeness check is back: a complete file goes; an incomplete one waits for its
    /// next change.
    fn checked(&mut self, (key, stamp, problem): Checked) {
        let cfg = self.cfg();
        let Some(s) = self.settling.get_mut(&key) else {
            return;
        };
        s.checking = false;
        if (s.size, s.mtime_ns) != stamp {
            // It changed while being checked: the next tick looks again.
            return;
        }
        match problem {
            None => {
                tracing::warn!(%key, waited_secs = cfg.max_settle.as_secs_f64(), "uploading a file that has not stopped changing (--max-settle): it is a complete image");
                self.hand_over(key, stamp.0, stamp.1);
            }
            Some(why) => {
                let first = s.held.is_none();
                s.held = Some(stamp);
                self.watch.status.held_back.fetch_add(1, Ordering::Relaxed);
                if first {
                    tracing::warn!(%key, size = stamp.0, waited_secs = cfg.max_settle.as_secs_f64(), problem = %why, "holding back a file that is still changing past --max-settle and is not a complete image yet: it waits for its next change");
                } else {
                    tracing::debug!(%key, size = stamp.0, problem = %why, "still incomplete: held back");
                }
            }
        }
    }

    fn tick(&mut self, scans: &mpsc::Sender<Scanned>) {
        let now = Instant::now();
        if self.root_check_wanted || now >= self.next_root_check {
            self.check_root(scans);
        }
        if self.root_gone {
            return;
        }
        let cfg = self.cfg();
        // Stable files go; files whose quiet time is over are stat'ed first, since a
        // writer may not make events (mmap, another machine).
        let ripe: Vec<String> = self
            .settling
            .iter()
            .filter(|(_, s)| {
                now.duration_since(s.last_change) >= cfg.settle
                    || now.duration_since(s.first_seen) >= cfg.max_settle
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in ripe {
            let path = self.watch.walk.path_of(&key);
            let current = match self.watch.walk.entry(&path) {
                Some(Found::Item(item)) => file_stamp(&item),
                _ => None,
            };
            let Some(s) = self.settling.get_mut(&key) else {
                continue;
            };
            match current {
                None => {
                    self.settling.remove(&key);
                }
                // Checked already, or being checked: it waits for a change, or the answer.
                Some(stamp) if s.checking || s.held == Some(stamp) => {}
                Some(stamp)
                    if stamp != (s.size, s.mtime_ns)
                        && now.duration_since(s.first_seen) < cfg.max_settle =>
                {
                    s.size = stamp.0;
                    s.mtime_ns = stamp.1;
                    s.last_change = now;
                }
                Some(stamp) => {
                    let changing = stamp != (s.size, s.mtime_ns)
                        || now.duration_since(s.last_change) < cfg.settle;
                    s.size = stamp.0;
                    s.mtime_ns = stamp.1;
                    if changing {
                        // Past the maximum wait and still changing: it goes only if it is a
                        // complete image already.
                        self.check_complete(key, stamp);
                    } else {
                        self.hand_over(key, stamp.0, stamp.1);
                    }
                }
            }
        }
        for folder in std::mem::take(&mut self.pending_subscans) {
            self.add_watch(folder.clone());
            self.start_scan_at(scans, Some(folder), false);
        }
        if let Some(t) = self.deleting_since
            && now.duration_since(t) >= cfg.settle
            && !self.scanning
            && !self.uploading_since(t + cfg.settle)
        {
            self.decide_deletes();
        }
        if now >= self.next_rescan || self.rescan_wanted {
            if now >= self.next_rescan {
                self.reschedule();
            }
            self.start_scan(scans, true);
        }
        if now >= self.next_due {
            self.next_due = now + cfg.retry_base.min(DUE_EVERY);
            self.retry_due();
        }
    }

    /// Failed items whose delay has passed go again (the ledger keeps the delays, so a
    /// restart neither resets nor forgets them).
    fn retry_due(&mut self) {
        let Some(source_id) = self.source_id() else {
            return;
        };
        let due = match self.reader().map(|r| r.failed_due(source_id, DUE_BATCH)) {
            Some(Ok(keys)) => keys,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "cannot read the failed items from the ledger; trying again later");
                return;
            }
            None => return,
        };
        for key in due {
            if self.in_flight.contains_key(&key)
                || self.settling.contains_key(&key)
                || self.due_skipped.contains(&key)
            {
                continue;
            }
            let path = self.watch.walk.path_of(&key);
            match self.watch.walk.entry(&path) {
                Some(Found::Item(item)) => {
                    if let Some((size, mtime_ns)) = file_stamp(&item) {
                        tracing::info!(%key, "retrying a failed file");
                        self.hand_over(key, size, mtime_ns);
                    }
                }
                _ if path.exists() => {
                    self.due_skipped.insert(key);
                }
                _ => match self.cfg().on_delete {
                    OnDelete::Delete => self.queue_delete(key),
                    OnDelete::Keep => {
                        self.due_skipped.insert(key.clone());
                        self.missing(key, true);
                    }
                },
            }
        }
    }

    fn publish(&self) {
        let s = &self.watch.status;
        s.beat();
        s.settling
            .store(self.settling.len() as u64, Ordering::Relaxed);
        s.in_flight
            .store(self.in_flight.len() as u64, Ordering::Relaxed);
    }
}

/// Walks `at` (or the whole folder) under the walk's rules, reporting entries and folders;
/// with a source number, also the recorded keys whose files are gone.
fn scan(
    watch: &Watch,
    out: &mpsc::Sender<Scanned>,
    at: Option<PathBuf>,
    watching: bool,
    missing_of: Option<i64>,
    (root_id, generation): (Option<(u64, u64)>, u64),
) {
    // A folder that is not the one watched is not scanned: the loop's check re-attaches it.
    if root_identity(watch.walk.root()).ok() != root_id {
        return;
    }
    let root = at.unwrap_or_else(|| watch.walk.root().to_path_buf());
    let walk = &watch.walk;
    let entries = WalkDir::new(&root)
        .follow_links(walk.follows_symlinks())
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || walk.includes_hidden()
                || !e.file_name().to_string_lossy().starts_with('.')
        });
    for entry in entries {
        let sent = match entry {
            Ok(e) if e.file_type().is_dir() => {
                if watching {
                    out.blocking_send(Scanned::Folder(e.into_path()))
                } else {
                    Ok(())
                }
            }
            Ok(e) => match walk.entry(e.path()) {
                Some(found) => out.blocking_send(Scanned::Entry(found)),
                None => Ok(()),
            },
            Err(e) => {
                tracing::warn!(error = %e, "cannot read part of the watched folder; the next rescan tries again");
                Ok(())
            }
        };
        if sent.is_err() {
            return;
        }
    }
    let Some(source_id) = missing_of else { return };
    let Some(ledger) = watch.ledger.open() else {
        return;
    };
    let mut after = String::new();
    loop {
        // One short read per page: no snapshot is held while the loop works.
        let page = match ledger.keys_after(source_id, &after, KEY_PAGE) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the recorded keys; files that left are looked for at the next rescan");
                return;
            }
        };
        let Some((last, _)) = page.last() else { return };
        after = last.clone();
        // Every file is missing from a folder that went: that is not files leaving it.
        if root_identity(watch.walk.root()).ok() != root_id {
            return;
        }
        for (key, holds_image) in page {
            let path = walk.path_of(&key);
            if matches!(std::fs::symlink_metadata(&path), Err(e) if e.kind() == std::io::ErrorKind::NotFound)
                && out
                    .blocking_send(Scanned::Missing(key, holds_image, generation))
                    .is_err()
            {
                return;
            }
        }
    }
}

/// The (device, inode) of the folder at `root` (following a symbolic link), or why there is
/// no folder there.
fn root_identity(root: &Path) -> std::result::Result<(u64, u64), String> {
    match std::fs::metadata(root) {
        Ok(m) if m.is_dir() => Ok((m.dev(), m.ino())),
        Ok(_) => Err("its path is no longer a folder".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err("it was deleted or moved away".into())
        }
        Err(e) => Err(format!("it cannot be read: {e}")),
    }
}

/// Why the file at `path` is not a complete image yet, if it is not. A file that is not an
/// image the local check knows, or is over the size limit, is left to the pipeline.
fn incomplete(path: &Path) -> Option<String> {
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return Some(format!("cannot read it: {e}")),
    };
    let mut head = Vec::with_capacity(rules::SNIFF_BYTES);
    if let Err(e) = (&mut file)
        .take(rules::SNIFF_BYTES as u64)
        .read_to_end(&mut head)
    {
        return Some(format!("cannot read it: {e}"));
    }
    let format = rules::sniff_format(&head)?;
    if file
        .metadata()
        .map_or(true, |m| m.len() > rules::MAX_FILE_BYTES)
    {
        return None;
    }
    match image_check::check(format, file) {
        Err(ImageProblem::Undecodable(why)) => Some(why),
        Ok(_) | Err(ImageProblem::TooLarge(_)) => None,
    }
}

/// The (size, mtime) of a file item.
fn file_stamp(item: &Item) -> Option<(u64, i64)> {
    match (&item.locator, &item.fingerprint) {
        (Locator::File(_), Some(crate::item::Fingerprint::SizeMtime { size, mtime_ns })) => {
            Some((*size, *mtime_ns))
        }
        _ => None,
    }
}

/// Whether a modification time is less than `quiet` ago (or in the future).
fn modified_within(mtime_ns: i64, quiet: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().min(i64::MAX as u128) as i64);
    now.saturating_sub(mtime_ns) < quiet.as_nanos().min(i64::MAX as u128) as i64
}

/// How many inotify watches this user may hold (`CFIMG_MAX_USER_WATCHES` overrides the
/// kernel's figure, to test the fallback without root).
fn max_user_watches() -> Option<u64> {
    if let Some(v) = std::env::var("CFIMG_MAX_USER_WATCHES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(v);
    }
    std::fs::read_to_string(MAX_USER_WATCHES)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The kind of network file system `path` is on, if it is one: inotify sees local changes
/// only, and on these most changes are made elsewhere.
#[cfg(target_os = "linux")]
fn network_fs(path: &Path) -> Option<&'static str> {
    if std::env::var_os("CFIMG_ASSUME_NETWORK_FS").is_some() {
        return Some("assumed (CFIMG_ASSUME_NETWORK_FS)");
    }
    let fs = nix::sys::statfs::statfs(path).ok()?;
    // The magic numbers of linux/magic.h.
    Some(match fs.filesystem_type().0 as i64 {
        0x6969 => "nfs",
        0x517b => "smb",
        0xff53_4d42 => "cifs",
        0xfe53_4d42 => "smb2",
        0x6573_5546 => "fuse",
        0x00c3_6400 => "ceph",
        0x0102_1997 => "9p",
        0x5346_414f => "afs",
        0x0bd0_0bd0 => "lustre",
        0x4750_4653 => "gpfs",
        _ => return None,
    })
}

#[cfg(not(target_os = "linux"))]
fn network_fs(_: &Path) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::walk::WalkConfig;

    /// No ledger yet: nothing recorded, nothing failed.
    #[derive(Debug)]
    struct NoLedger;

    impl LedgerView for NoLedger {
        fn open(&self) -> Option<Box<dyn LedgerReads>> {
            None
        }
    }

    fn settings() -> WatchConfig {
        WatchConfig {
            settle: Duration::from_millis(100),
            max_settle: Duration::from_secs(1),
            rescan_interval: Duration::from_secs(3600),
            on_delete: OnDelete::Keep,
            max_delete: MaxDelete::Count(1),
            retry_base: Duration::from_secs(60),
        }
    }

    #[tokio::test]
    async fn an_overflow_event_without_paths_starts_a_full_rescan() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        let walk = Walk::new(dir.path(), &WalkConfig::default()).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(settings());
        let watch = Arc::new(Watch::new(walk, rx, Arc::new(NoLedger), Arc::default()));
        let (done, _) = mpsc::unbounded_channel();
        let mut lp = Loop::new(watch.clone(), done);
        let overflow = notify::Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan);
        assert!(overflow.paths.is_empty());
        lp.event(Ok(overflow));
        assert_eq!(watch.status.overflows.load(Ordering::Relaxed), 1);
        let (scans, mut scanned) = mpsc::channel(16);
        lp.tick(&scans);
        assert!(lp.scanning, "the overflow started a scan at the next tick");
        let mut keys = Vec::new();
        while let Some(s) = scanned.recv().await {
            match s {
                Scanned::Entry(Found::Item(i)) => keys.push(i.key),
                Scanned::Finished { full } => {
                    assert!(full);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(keys, ["a.png"]);
    }

    #[tokio::test]
    async fn a_folder_that_went_never_turns_into_deletes() {
        let parent = tempfile::tempdir().unwrap();
        let root = parent.path().join("watched");
        std::fs::create_dir(&root).unwrap();
        let walk = Walk::new(&root, &WalkConfig::default()).unwrap();
        let (_tx, rx) = tokio::sync::watch::channel(WatchConfig {
            on_delete: OnDelete::Delete,
            max_delete: MaxDelete::Count(100),
            ..settings()
        });
        let watch = Arc::new(Watch::new(walk, rx, Arc::new(NoLedger), Arc::default()));
        let (done, _) = mpsc::unbounded_channel();
        let mut lp = Loop::new(watch.clone(), done);
        // Files left (their delete events came), then the folder itself went.
        lp.queue_delete("a.png".into());
        std::fs::remove_dir(&root).unwrap();
        lp.decide_deletes();
        assert!(lp.ready.is_empty(), "a delete was handed over");
        let (scans, _scanned) = mpsc::channel(16);
        lp.check_root(&scans);
        assert!(watch.status.folder_missing().is_some());
        lp.queue_delete("b.png".into());
        lp.scanned(Scanned::Missing("c.png".into(), true, lp.generation));
        assert!(
            lp.deleting.is_empty(),
            "deletes queued while the folder is gone"
        );
        // Back: a scan from before it went is not believed.
        std::fs::create_dir(&root).unwrap();
        let stale = lp.generation;
        lp.check_root(&scans);
        assert!(watch.status.folder_missing().is_none());
        assert!(lp.reattached || lp.scanning);
        lp.scanned(Scanned::Missing("d.png".into(), true, stale - 1));
        assert!(
            lp.deleting.is_empty(),
            "a stale scan's finding was believed"
        );
    }

    #[test]
    fn the_delete_cap_is_a_count_or_a_share() {
        assert_eq!("3".parse::<MaxDelete>().unwrap().allowed(1000), 3);
        assert_eq!("5%".parse::<MaxDelete>().unwrap().allowed(1000), 50);
        assert_eq!("5%".parse::<MaxDelete>().unwrap().allowed(10), 0);
        assert!("lots".parse::<MaxDelete>().is_err());
        assert!("150%".parse::<MaxDelete>().is_err());
    }
}
