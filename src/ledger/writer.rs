//! The one writer: a thread that owns the only read-write connection and applies records
//! in batched transactions. A commit is the acknowledgement that an intent or an outcome is
//! durable; every stage sends its outcomes here and nowhere else.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::lock::lock_exclusively;
use super::shelf::Shelf;
use super::{Destination, Ledger, RunCounts, State, Version, now};
pub use crate::error::Failure;
use crate::error::{Error, Result};
use crate::item::SourceId;

/// Most records the writer commits in one transaction.
const MAX_BATCH: usize = 1024;

/// The first delay before a failed item is retried by `watch`.
pub const DEFAULT_RETRY_BASE: Duration = Duration::from_secs(60);

/// The longest delay between retries of a failed item: minutes to hours, never forgotten.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(6 * 3600);

/// An older image that `--keep-replaced` leaves in place.
#[derive(Debug, Clone)]
pub struct Superseded {
    /// The older image.
    pub image_id: String,
    /// Its content hash.
    pub sha256: Option<String>,
    /// Its delivery URL.
    pub url: Option<String>,
}

/// What the writer is asked to record.
#[derive(Debug)]
pub enum Record {
    /// An upload of `version` is about to start (with `planned_id` for custom ids).
    Intent {
        /// The version being uploaded.
        version: Version,
        /// The custom id, if any.
        planned_id: Option<String>,
        /// The stamp the upload carries.
        stamp: String,
    },
    /// An intent recorded ahead of the workers for an item the ledger held no row of was
    /// never acted on (the run stopped first): the row goes, as if never written.
    Withdrawn {
        /// The item's source.
        source_id: i64,
        /// The item's key in it.
        key: String,
        /// The stamp that upload would have carried.
        stamp: String,
    },
    /// `version` is now held by `image_id`.
    Uploaded {
        /// The version uploaded.
        version: Version,
        /// Its image.
        image_id: String,
        /// A delivery URL.
        url: Option<String>,
        /// Requests spent.
        attempts: u32,
        /// Whether it replaced an earlier image of the same item.
        replaced: bool,
        /// The stamp its image carries (`None`: keep the recorded one).
        stamp: Option<String>,
        /// An answer was ambiguous: look for duplicates after this time.
        check_after: Option<String>,
        /// The older image, kept in place by `--keep-replaced`.
        superseded: Option<Superseded>,
    },
    /// `version` failed, was rejected, or was passed over.
    Failed {
        /// The version that failed.
        version: Version,
        /// Why.
        reason: String,
        /// Requests spent.
        attempts: u32,
        /// How it ended.
        failure: Failure,
        /// The image the row pointed to is gone (deleted, and putting it back failed).
        image_gone: bool,
        /// An answer was ambiguous: look for duplicates after this time.
        check_after: Option<String>,
    },
    /// Passed over deliberately, with the reason.
    Ignored {
        /// The entry.
        version: Version,
        /// Why.
        reason: String,
    },
    /// The content did not change, only the quick-check fields: refresh them.
    Touch {
        /// The version now at the source.
        version: Version,
    },
    /// The duplicate check after an ambiguous answer is done.
    Checked {
        /// The source's number.
        source_id: i64,
        /// The item.
        key: String,
    },
    /// The item left its source: its row goes, and a tombstone says what became of its image.
    Removed {
        /// The item as it was.
        version: Version,
        /// The image it held, if any.
        image_id: Option<String>,
        /// What became of that image.
        outcome: String,
    },
    /// Forget tombstones older than `before` and all but the newest `keep_runs` runs, so a
    /// daemon's ledger does not grow without bound.
    Prune {
        /// Timestamp: older tombstones go.
        before: String,
        /// Runs kept.
        keep_runs: u32,
    },
    /// Counters of a run that is still going (a daemon's), so `status` shows them.
    RunProgress {
        /// Run number.
        run_id: i64,
        /// Its counters so far.
        counts: RunCounts,
    },
    /// A run ended.
    RunFinished {
        /// Run number.
        run_id: i64,
        /// Its counters.
        counts: RunCounts,
        /// How it ended.
        outcome: String,
    },
}

/// A question the writer answers from inside its transaction.
#[derive(Debug)]
enum Ask {
    /// Nothing: answered once everything sent before it is committed.
    Flush,
    RunStarted {
        command: String,
        source: String,
    },
    Source(SourceId),
    /// Refuses another destination than the recorded one; with `record`, records it if none is.
    Destination {
        destination: Destination,
        record: bool,
    },
}

// Records are the bulk of the traffic; boxing the rare questions would not shrink them.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(Record, Option<Waiter>),
    Ask(Ask, oneshot::Sender<Result<i64, Unanswered>>),
    /// Something is on the shelf.
    Nudge,
}

impl std::fmt::Debug for Msg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Msg::Record(r, _) => r.fmt(f),
            Msg::Ask(a, _) => a.fmt(f),
            Msg::Nudge => f.write_str("Nudge"),
        }
    }
}

/// Somebody waiting for a record to be durable.
struct Waiter {
    ack: oneshot::Sender<Result<(), String>>,
    /// Not needed before this (the request it guards waits its turn until then): the
    /// batch may wait for company up to it. `None`: needed at once.
    by: Option<Instant>,
}

/// A record handed to the writer that its sender waits for.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<Result<(), String>>);

impl Durable {
    /// Waits until the record is committed.
    pub async fn wait(self) -> Result<()> {
        self.settled().await.map_err(Error::LedgerWrite)
    }

    /// [`Durable::wait`], failing with the message of an [`Error::LedgerWrite`].
    pub async fn settled(self) -> std::result::Result<(), String> {
        self.0.await.unwrap_or_else(|_| Err(WRITER_GONE.into()))
    }
}

/// The handle async code uses to send records to the writer thread.
#[derive(Clone, Debug)]
pub struct LedgerWriter {
    tx: mpsc::Sender<Msg>,
    /// Records that reach the writer without waking it.
    shelf: Arc<Shelf<Msg>>,
    /// Transactions committed so far.
    commits: Arc<AtomicU64>,
}

impl LedgerWriter {
    /// Opens the ledger and starts its writer thread. The thread ends when every handle
    /// is dropped; join it to know every record is committed.
    pub fn spawn(path: &Path) -> Result<(LedgerWriter, thread::JoinHandle<Result<()>>)> {
        Self::spawn_with(path, DEFAULT_RETRY_BASE)
    }

    /// [`LedgerWriter::spawn`], with the first delay before a failed item is retried
    /// (doubling with each failure in a row, up to [`MAX_RETRY_DELAY`]).
    pub fn spawn_with(
        path: &Path,
        retry_base: Duration,
    ) -> Result<(LedgerWriter, thread::JoinHandle<Result<()>>)> {
        let (writer, opening, handle) = Self::start(path, retry_base)?;
        opening.wait()?;
        Ok((writer, handle))
    }

    /// Takes the ledger's lock and starts the writer thread, which opens the ledger (and
    /// checks an existing one page by page) while the caller goes on: wait for the
    /// [`Opening`] before anything that may write. Records sent before that wait in the queue.
    pub fn start(
        path: &Path,
        retry_base: Duration,
    ) -> Result<(LedgerWriter, Opening, thread::JoinHandle<Result<()>>)> {
        let lock = lock_exclusively(path)?;
        let (tx, rx) = mpsc::channel(4096);
        let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(1);
        let owned = path.to_path_buf();
        let commits = Arc::new(AtomicU64::new(0));
        let counted = commits.clone();
        let shelf = Arc::new(Shelf::new(MAX_BATCH));
        let shelved = shelf.clone();
        let handle = thread::Builder::new()
            .name("ledger-writer".into())
            .spawn(move || {
                // The lock lives as long as the writer: one run per ledger at a time.
                let _lock = lock;
                // Whoever waits for a shelved record hears, when the thread ends however it
                // ends, that it will not be written.
                let _closing = shelved.closing();
                match Ledger::open(&owned) {
                    Ok(ledger) => {
                        let _ = opened_tx.send(Ok(()));
                        let queue = Queue {
                            rx,
                            shelf: &shelved,
                        };
                        write_loop(ledger, queue, retry_base.as_secs_f64(), &counted)
                    }
                    // The error goes to whoever waits for the opening; the queue closes.
                    Err(e) => {
                        let _ = opened_tx.send(Err(e));
                        Ok(())
                    }
                }
            })
            .map_err(|source| Error::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok((
            LedgerWriter { tx, shelf, commits },
            Opening(opened_rx),
            handle,
        ))
    }

    /// Transactions committed so far: each is one fsync, shared by every record in it.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Records and waits until the record is durable.
    pub async fn commit(&self, record: Record) -> Result<()> {
        self.commit_within(record, Duration::ZERO).await
    }

    /// [`LedgerWriter::commit`] for a record not needed before `within` has passed (an
    /// intent whose request waits that long for its turn anyway): its commit may wait that
    /// long for others to share it, one fsync for many.
    pub async fn commit_within(&self, record: Record, within: Duration) -> Result<()> {
        self.submit_within(record, within).await?.wait().await
    }

    /// Hands over a record not needed before `within` has passed and returns what tells
    /// when it is durable, so that the caller can overlap that wait with its own (an
    /// intent's commit with its upload's turn in the limiter).
    pub async fn submit_within(&self, record: Record, within: Duration) -> Result<Durable> {
        let (ack, done) = oneshot::channel();
        let by = (!within.is_zero()).then(|| Instant::now() + within);
        let msg = Msg::Record(record, Some(Waiter { ack, by }));
        let unshelved = match by {
            Some(by) => self.shelf.lay_if_due_by(msg, by).err(),
            None => Some(msg),
        };
        if let Some(msg) = unshelved {
            self.tx.send(msg).await.map_err(|_| writer_gone())?;
        }
        Ok(Durable(done))
    }

    /// Queues a record; it is durable once a later [`LedgerWriter::commit`] returns or the
    /// writer thread has been joined.
    pub async fn record(&self, record: Record) -> Result<()> {
        match self.shelf.lay(Msg::Record(record, None)) {
            Ok(false) => Ok(()),
            Ok(true) => self.tx.send(Msg::Nudge).await.map_err(|_| writer_gone()),
            Err(_) => Err(writer_gone()),
        }
    }

    /// Queues a record from a blocking thread.
    pub fn record_blocking(&self, record: Record) -> Result<()> {
        match self.shelf.lay(Msg::Record(record, None)) {
            Ok(false) => Ok(()),
            Ok(true) => self.tx.blocking_send(Msg::Nudge).map_err(|_| writer_gone()),
            Err(_) => Err(writer_gone()),
        }
    }

    async fn ask(&self, ask: Ask) -> Result<i64> {
        let (reply, done) = oneshot::channel();
        self.tx
            .send(Msg::Ask(ask, reply))
            .await
            .map_err(|_| writer_gone())?;
        done.await
            .map_err(|_| writer_gone())?
            .map_err(Unanswered::into_error)
    }

    /// Waits until every record sent before is committed (readers then see it).
    pub async fn flush(&self) -> Result<()> {
        self.ask(Ask::Flush).await.map(|_| ())
    }

    /// Records the start of a run and returns its number.
    pub async fn run_started(&self, command: &str, source: &str) -> Result<i64> {
        self.ask(Ask::RunStarted {
            command: command.into(),
            source: source.into(),
        })
        .await
    }

    /// The number of a source in this ledger, registering it on first use.
    pub async fn source(&self, source: &SourceId) -> Result<i64> {
        self.ask(Ask::Source(source.clone())).await
    }

    /// Refuses a destination other than the one recorded, recording nothing: asked before
    /// the start-up request, which may still show the account id to be wrong.
    pub async fn check_destination(&self, destination: &Destination) -> Result<()> {
        self.ask(Ask::Destination {
            destination: destination.clone(),
            record: false,
        })
        .await
        .map(|_| ())
    }

    /// Records the destination on first use (once the start-up request has proved it);
    /// refuses another one.
    pub async fn claim_destination(&self, destination: &Destination) -> Result<()> {
        self.ask(Ask::Destination {
            destination: destination.clone(),
            record: true,
        })
        .await
        .map(|_| ())
    }
}

/// The writer thread's opening of the ledger, still under way.
pub struct Opening(std::sync::mpsc::Receiver<Result<()>>);

impl Opening {
    /// Blocks until the ledger is open and checked, or says why it could not be.
    pub fn wait(self) -> Result<()> {
        self.0.recv().unwrap_or_else(|_| Err(writer_gone()))
    }

    /// [`Opening::wait`] from async code.
    pub async fn opened(self) -> Result<()> {
        tokio::task::spawn_blocking(move || self.wait())
            .await
            .unwrap_or_else(|_| Err(writer_gone()))
    }
}

/// Why a question got no answer. Sent across threads, so it carries messages, not errors.
#[derive(Debug, Clone)]
enum Unanswered {
    /// The ledger belongs to another account or API host: the user gives another
    /// `--ledger` (the message says which destination it holds).
    OtherDestination(String),
    /// The batch's transaction failed, or no answer was found for the question.
    Failed(String),
}

impl Unanswered {
    /// The error the asker returns: a configuration problem, or a failed ledger write.
    fn into_error(self) -> Error {
        match self {
            Unanswered::OtherDestination(why) => Error::Config(vec![why]),
            Unanswered::Failed(why) => Error::LedgerWrite(why),
        }
    }
}

const WRITER_GONE: &str = "the writer thread stopped";

fn writer_gone() -> Error {
    Error::LedgerWrite(WRITER_GONE.into())
}

/// How long a batch holding only records nobody waits for (outcomes) waits for one that
/// somebody does, to share its commit: such records are durable once a later commit is,
/// and a run's end or a flush commits at once.
const LINGER_UNACKED: Duration = Duration::from_millis(100);
/// How long a batch with an acknowledged record (an intent, whose worker waits) waits for
/// others: workers of a busy run commit their intents a few milliseconds apart, and each
/// commit is an fsync, while each of them then waits far longer for its turn to send.
const LINGER_ACKED: Duration = Duration::from_millis(8);
/// The longest a batch waits for company when every waiter said when it needs its record
/// ([`LedgerWriter::commit_within`]): past this, fewer commits save little. Intents
/// recorded ahead of the workers need theirs a queue's time later (a few hundred ms).
const LINGER_MAX: Duration = Duration::from_millis(250);
/// After a wait for company that brought none (one worker, or a quiet daemon), this many
/// batches commit at once before waiting is tried again.
const LINGER_BACKOFF: u32 = 16;

/// Decides how long the next batch waits for more records before it commits (group commit).
#[derive(Debug, Default)]
struct Linger {
    /// Batches left to commit without waiting.
    skip: u32,
}

/// How long a batch may still wait for more records.
#[derive(Debug, PartialEq)]
enum Wait {
    /// Commit now.
    Not,
    /// Until this, from the batch's first record: a guess that company comes, which the
    /// backoff judges by what it brought.
    Company(Duration),
    /// Until this: every waiter needs its record no sooner, so waiting costs nobody.
    Free(Duration),
}

impl Linger {
    /// The longest the batch opened at `opened` may wait, given what it holds now.
    fn budget(&self, batch: &[Msg], opened: Instant) -> Wait {
        if batch.len() >= MAX_BATCH || batch.iter().any(|m| matches!(m, Msg::Ask(..))) {
            return Wait::Not;
        }
        let mut acked = false;
        // The earliest time a waiter needs its record; `None` once one needs it at once.
        let mut needed: Option<Instant> = None;
        let mut at_once = false;
        for m in batch {
            if let Msg::Record(_, Some(w)) = m {
                acked = true;
                match w.by {
                    Some(by) => needed = Some(needed.map_or(by, |n| n.min(by))),
                    None => at_once = true,
                }
            }
        }
        match (acked, at_once, needed) {
            (false, _, _) => Wait::Company(LINGER_UNACKED),
            (true, false, Some(by)) => Wait::Free(
                by.saturating_duration_since(opened)
                    .clamp(LINGER_ACKED, LINGER_MAX),
            ),
            _ if self.skip == 0 => Wait::Company(LINGER_ACKED),
            _ => Wait::Not,
        }
    }

    /// What a wait for company brought: nothing means waiting is not worth it for a while.
    fn waited(&mut self, brought: usize, acked: bool) {
        if acked && brought == 0 {
            self.skip = LINGER_BACKOFF;
        }
    }

    fn committed(&mut self) {
        self.skip = self.skip.saturating_sub(1);
    }
}

/// The writer's two inboxes: the channel (which wakes it) and the shelf (which does not).
struct Queue<'a> {
    rx: mpsc::Receiver<Msg>,
    shelf: &'a Shelf<Msg>,
}

impl Queue<'_> {
    /// Puts a received message into the batch; a wake-up only says the shelf holds some.
    fn receive(&self, m: Msg, batch: &mut Vec<Msg>) {
        match m {
            Msg::Nudge => self.shelf.woken(),
            m => batch.push(m),
        }
    }
}

/// Takes what is queued into `batch`, then waits for more while [`Linger`] allows, and
/// takes the shelf. Returns false once every sender is gone (after the last records).
fn gather(
    queue: &mut Queue<'_>,
    batch: &mut Vec<Msg>,
    linger: &mut Linger,
    clock: &tokio::runtime::Runtime,
) -> bool {
    let opened = Instant::now();
    let mut waited_acked = None;
    let mut open = true;
    loop {
        while batch.len() < MAX_BATCH {
            match queue.rx.try_recv() {
                Ok(m) => queue.receive(m, batch),
                Err(_) => break,
            }
        }
        let budget = match linger.budget(batch, opened) {
            Wait::Not => break,
            Wait::Company(budget) => {
                if budget == LINGER_ACKED {
                    waited_acked.get_or_insert(batch.len());
                }
                budget
            }
            Wait::Free(budget) => budget,
        };
        let (deadline, full) = queue.shelf.gathering(opened + budget);
        if full {
            break;
        }
        let next =
            clock.block_on(async { tokio::time::timeout_at(deadline, queue.rx.recv()).await });
        match next {
            Ok(Some(m)) => queue.receive(m, batch),
            Ok(None) => {
                open = false;
                break;
            }
            Err(_) => break,
        }
    }
    // Shelved first: a sender's records shelved before it sent a message came first.
    let mut shelved = Vec::new();
    queue.shelf.take(&mut shelved);
    // What the shelf brought counts as company (some of it may have come before the wait).
    batch.splice(0..0, shelved);
    if let Some(before) = waited_acked {
        linger.waited(batch.len() - before, true);
    }
    open
}

fn write_loop(
    mut ledger: Ledger,
    mut queue: Queue<'_>,
    retry_base: f64,
    commits: &AtomicU64,
) -> Result<()> {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut trimmed = std::time::Instant::now();
    // Only a timer, for waiting on the queue with a deadline.
    let clock = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|source| Error::Io {
            path: ledger.path().to_path_buf(),
            source,
        })?;
    let mut linger = Linger::default();
    let mut open = true;
    while open {
        match queue.rx.blocking_recv() {
            Some(first) => queue.receive(first, &mut batch),
            // Every sender is gone: what they shelved last is all that is left.
            None => {
                queue.shelf.take(&mut batch);
                open = false;
            }
        }
        if open {
            open = gather(&mut queue, &mut batch, &mut linger, &clock);
        }
        if batch.is_empty() {
            continue;
        }
        linger.committed();
        let result = apply_batch(&mut ledger.conn, &batch, retry_base);
        commits.fetch_add(1, Ordering::Relaxed);
        let shared = result.as_ref().map_err(|e| e.to_string());
        for (i, msg) in batch.drain(..).enumerate() {
            match (msg, &shared) {
                (Msg::Record(_, Some(w)), r) => {
                    let _ = w.ack.send(r.as_ref().map(|_| ()).map_err(Clone::clone));
                }
                (Msg::Record(_, None) | Msg::Nudge, _) => {}
                (Msg::Ask(_, reply), Ok(answers)) => {
                    let answer = answers
                        .iter()
                        .find(|(at, _)| *at == i)
                        .map(|(_, a)| a.clone())
                        .unwrap_or_else(|| Err(Unanswered::Failed("no answer".into())));
                    let _ = reply.send(answer);
                }
                (Msg::Ask(_, reply), Err(e)) => {
                    let _ = reply.send(Err(Unanswered::Failed(e.clone())));
                }
            }
        }
        result?;
        trim_wal(&ledger, &mut trimmed);
    }
    // The last connection to close would do this, unless a reader outlives the writer.
    let _ = ledger
        .conn
        .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
    Ok(())
}

/// WAL size past which the writer truncates it after a batch, when readers allow.
const WAL_LIMIT: u64 = 64 * 1024 * 1024;

/// Readers that always hold some snapshot keep SQLite's automatic checkpoints from ever
/// restarting the WAL, which then grows by every commit (gigabytes over a 100,000-file
/// run). A truncating checkpoint between batches, that waits for readers only briefly,
/// keeps it bounded; a busy answer just means the next try comes after a later batch.
fn trim_wal(ledger: &Ledger, last: &mut std::time::Instant) {
    if last.elapsed() < Duration::from_secs(1) {
        return;
    }
    *last = std::time::Instant::now();
    let mut wal = ledger.path().as_os_str().to_os_string();
    wal.push("-wal");
    if std::fs::metadata(&wal).map_or(0, |m| m.len()) <= WAL_LIMIT {
        return;
    }
    let conn = &ledger.conn;
    if conn.busy_timeout(Duration::from_millis(200)).is_ok() {
        let busy = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
            r.get::<_, i64>(0)
        });
        match busy {
            Ok(busy) => tracing::debug!(busy, "truncating checkpoint of the ledger's WAL"),
            Err(e) => tracing::debug!(error = %e, "truncating checkpoint of the ledger's WAL"),
        }
    }
    let _ = conn.busy_timeout(Duration::from_secs(10));
}

type Answers = Vec<(usize, Result<i64, Unanswered>)>;

/// Applies a batch in one transaction; returns the answers to the questions in it.
fn apply_batch(conn: &mut Connection, batch: &[Msg], retry_base: f64) -> Result<Answers> {
    let tx = conn.transaction()?;
    let ts = now();
    let mut answers = Vec::new();
    for (i, msg) in batch.iter().enumerate() {
        match msg {
            Msg::Record(record, _) => apply(&tx, record, &ts, retry_base)?,
            Msg::Ask(ask, _) => answers.push((i, answer(&tx, ask, &ts)?)),
            Msg::Nudge => {}
        }
    }
    tx.commit()?;
    Ok(answers)
}

/// Answers a question; the inner `Err` is a refusal for the asker, not a failed transaction.
fn answer(tx: &Transaction<'_>, ask: &Ask, ts: &str) -> Result<Result<i64, Unanswered>> {
    match ask {
        Ask::Flush => Ok(Ok(0)),
        Ask::RunStarted { command, source } => {
            tx.execute(
                "INSERT INTO runs (command, source, started_at) VALUES (?1, ?2, ?3)",
                params![command, source, ts],
            )?;
            Ok(Ok(tx.last_insert_rowid()))
        }
        Ask::Source(s) => {
            tx.execute(
                "INSERT INTO sources (kind, location, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (kind, location) DO NOTHING",
                params![s.kind.as_str(), s.location, ts],
            )?;
            let id = tx.query_row(
                "SELECT id FROM sources WHERE kind = ?1 AND location = ?2",
                params![s.kind.as_str(), s.location],
                |r| r.get(0),
            )?;
            Ok(Ok(id))
        }
        Ask::Destination {
            destination: d,
            record,
        } => {
            let recorded: Option<(String, String)> = tx
                .query_row(
                    "SELECT account_id, api_base FROM destination WHERE id = 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match recorded {
                None if !*record => Ok(Ok(1)),
                None => {
                    tx.execute(
                        "INSERT INTO destination (id, account_id, api_base, created_at) VALUES (1, ?1, ?2, ?3)",
                        params![d.account_id, d.api_base, ts],
                    )?;
                    Ok(Ok(1))
                }
                Some((account, base)) if account == d.account_id && base == d.api_base => Ok(Ok(1)),
                Some((account_id, api_base)) => Ok(Err(Unanswered::OtherDestination(
                    super::destination_mismatch(
                        &Destination {
                            account_id,
                            api_base,
                        },
                        d,
                    ),
                ))),
            }
        }
    }
}

/// Applies one record inside the batch's transaction: one function per kind of record.
fn apply(tx: &Transaction<'_>, record: &Record, ts: &str, retry_base: f64) -> Result<()> {
    match record {
        Record::Intent {
            version,
            planned_id,
            stamp,
        } => record_intent(tx, version, planned_id.as_deref(), stamp, ts),
        Record::Withdrawn {
            source_id,
            key,
            stamp,
        } => {
            tx.prepare_cached(
                "DELETE FROM items WHERE source_id = ?1 AND key = ?2 AND state = 'uploading'
                   AND stamp = ?3 AND image_id IS NULL",
            )?
            .execute(params![source_id, key, stamp])?;
            Ok(())
        }
        Record::Uploaded {
            version,
            image_id,
            url,
            attempts,
            replaced,
            stamp,
            check_after,
            superseded,
        } => {
            if let Some(old) = superseded {
                record_superseded(tx, version, old, ts)?;
            }
            let uploaded = Stored {
                image_id,
                url: url.as_deref(),
                attempts: *attempts,
                replaced: *replaced,
                stamp: stamp.as_deref(),
                check_after: check_after.as_deref(),
            };
            record_uploaded(tx, version, &uploaded, ts)
        }
        Record::Failed {
            version,
            reason,
            attempts,
            failure,
            image_gone,
            check_after,
        } => {
            let why = NotMade {
                state: match failure {
                    Failure::Rejected => State::Rejected,
                    Failure::Deferred | Failure::Local => State::Failed,
                },
                reason,
                attempts: *attempts,
                retry_local: *failure == Failure::Local,
                image_gone: *image_gone,
                check_after: check_after.as_deref(),
            };
            fail(tx, version, &why, ts, retry_base)
        }
        Record::Ignored { version, reason } => {
            let why = NotMade {
                state: State::Ignored,
                reason,
                attempts: 0,
                retry_local: false,
                image_gone: false,
                check_after: None,
            };
            fail(tx, version, &why, ts, retry_base)
        }
        Record::Touch { version } => record_touch(tx, version, ts),
        Record::Checked { source_id, key } => {
            tx.prepare_cached(
                "UPDATE items SET check_after = NULL WHERE source_id = ?1 AND key = ?2",
            )?
            .execute(params![source_id, key])?;
            Ok(())
        }
        Record::Removed {
            version,
            image_id,
            outcome,
        } => record_removed(tx, version, image_id.as_deref(), outcome, ts),
        Record::Prune { before, keep_runs } => prune(tx, before, *keep_runs),
        Record::RunProgress { run_id, counts } => record_counts(tx, *run_id, counts, None, ts),
        Record::RunFinished {
            run_id,
            counts,
            outcome,
        } => record_counts(tx, *run_id, counts, Some(outcome), ts),
    }
}

/// An upload of `v` is about to start: the row says `uploading`, with its planned id.
fn record_intent(
    tx: &Transaction<'_>,
    v: &Version,
    planned_id: Option<&str>,
    stamp: &str,
    ts: &str,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO items (source_id, key, size, mtime_ns, etag, options, sha256, stamp, planned_id,
           state, attempts, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 'uploading', 0, ?10, ?10)
         ON CONFLICT (source_id, key) DO UPDATE SET size = excluded.size,
           mtime_ns = excluded.mtime_ns, etag = excluded.etag, options = excluded.options,
           sha256 = excluded.sha256, stamp = excluded.stamp, planned_id = excluded.planned_id,
           state = 'uploading', updated_at = excluded.updated_at",
    )?
    .execute(params![
        v.source_id, v.key, v.size as i64, v.mtime_ns, v.etag, v.options, v.sha256, stamp, planned_id, ts
    ])?;
    Ok(())
}

/// An older image of `v` that `--keep-replaced` leaves in place.
fn record_superseded(tx: &Transaction<'_>, v: &Version, old: &Superseded, ts: &str) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO superseded (image_id, source_id, key, sha256, url, superseded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (image_id) DO NOTHING",
    )?
    .execute(params![
        old.image_id,
        v.source_id,
        v.key,
        old.sha256,
        old.url,
        ts
    ])?;
    Ok(())
}

/// What a [`Record::Uploaded`] says about the image now holding a version.
struct Stored<'a> {
    image_id: &'a str,
    url: Option<&'a str>,
    attempts: u32,
    replaced: bool,
    stamp: Option<&'a str>,
    check_after: Option<&'a str>,
}

/// `v` is now held by an image: the row says `uploaded` and forgets its failures.
fn record_uploaded(tx: &Transaction<'_>, v: &Version, up: &Stored<'_>, ts: &str) -> Result<()> {
    if set_uploaded(tx, v, up, ts)? == 0 {
        // No row yet (content shared without an upload), or one holding other content:
        // give it this content first, the rare case that writes the content index.
        tx.prepare_cached(
            "INSERT INTO items (source_id, key, size, mtime_ns, sha256, state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'uploaded', ?6, ?6)
             ON CONFLICT (source_id, key) DO UPDATE SET sha256 = excluded.sha256",
        )?
        .execute(params![
            v.source_id,
            v.key,
            v.size as i64,
            v.mtime_ns,
            v.sha256,
            ts
        ])?;
        set_uploaded(tx, v, up, ts)?;
    }
    Ok(())
}

/// Marks the row of `v` uploaded if it holds `v`'s content; returns the rows changed (0
/// or 1). It does not assign the content hash: assigning it, even unchanged, deletes and
/// re-inserts the hash's entry in the content index, a page at a random place written
/// again by every outcome, where the row its intent wrote already holds it.
fn set_uploaded(tx: &Transaction<'_>, v: &Version, up: &Stored<'_>, ts: &str) -> Result<usize> {
    Ok(tx
        .prepare_cached(
            "UPDATE items SET size = ?3, mtime_ns = ?4, etag = ?5, options = ?6,
               stamp = COALESCE(?7, stamp), image_id = ?8, url = ?9, planned_id = NULL,
               state = 'uploaded', attempts = ?10, last_error = NULL, retry_local = 0,
               failures = 0, retry_at = NULL, check_after = COALESCE(?11, check_after),
               updated_at = ?12, uploaded_at = ?12,
               replaced_at = COALESCE(CASE WHEN ?13 THEN ?12 END, replaced_at)
             WHERE source_id = ?1 AND key = ?2 AND sha256 IS ?14",
        )?
        .execute(params![
            v.source_id,
            v.key,
            v.size as i64,
            v.mtime_ns,
            v.etag,
            v.options,
            up.stamp,
            up.image_id,
            up.url,
            i64::from(up.attempts),
            up.check_after,
            ts,
            up.replaced,
            v.sha256
        ])?)
}

/// Only the quick-check fields of `v` changed: refresh them.
fn record_touch(tx: &Transaction<'_>, v: &Version, ts: &str) -> Result<()> {
    tx.prepare_cached(
        "UPDATE items SET size = ?3, mtime_ns = ?4, etag = ?5, updated_at = ?6
         WHERE source_id = ?1 AND key = ?2",
    )?
    .execute(params![
        v.source_id,
        v.key,
        v.size as i64,
        v.mtime_ns,
        v.etag,
        ts
    ])?;
    Ok(())
}

/// `v` left its source: its row goes, a tombstone says what became of its image.
fn record_removed(
    tx: &Transaction<'_>,
    v: &Version,
    image_id: Option<&str>,
    outcome: &str,
    ts: &str,
) -> Result<()> {
    tx.prepare_cached("DELETE FROM items WHERE source_id = ?1 AND key = ?2")?
        .execute(params![v.source_id, v.key])?;
    tx.prepare_cached(
        "INSERT INTO tombstones (source_id, key, image_id, sha256, outcome, removed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![v.source_id, v.key, image_id, v.sha256, outcome, ts])?;
    Ok(())
}

/// Forgets tombstones older than `before` and all but the last `keep_runs` runs.
fn prune(tx: &Transaction<'_>, before: &str, keep_runs: u32) -> Result<()> {
    tx.execute("DELETE FROM tombstones WHERE removed_at < ?1", [before])?;
    tx.execute(
        "DELETE FROM runs WHERE id <= (SELECT id FROM runs ORDER BY id DESC LIMIT 1 OFFSET ?1)",
        [keep_runs],
    )?;
    Ok(())
}

/// Writes a run's counters; with an outcome, the run is finished.
fn record_counts(
    tx: &Transaction<'_>,
    run_id: i64,
    c: &RunCounts,
    outcome: Option<&String>,
    ts: &str,
) -> Result<()> {
    tx.execute(
        "UPDATE runs SET finished_at = CASE WHEN ?13 IS NULL THEN NULL ELSE ?2 END, uploaded = ?3,
           replaced = ?4, deduplicated = ?5, skipped = ?6, failed = ?7, rejected = ?8, ignored = ?9,
           bytes = ?10, requests = ?11, throttled = ?12, outcome = ?13, updated = ?14,
           failed_earlier = ?15, rejected_earlier = ?16, duplicates_deleted = ?17 WHERE id = ?1",
        params![
            run_id,
            ts,
            c.uploaded as i64,
            c.replaced as i64,
            c.deduplicated as i64,
            c.skipped as i64,
            c.failed as i64,
            c.rejected as i64,
            c.ignored as i64,
            c.bytes as i64,
            c.requests as i64,
            c.throttled as i64,
            outcome,
            c.updated as i64,
            c.failed_earlier as i64,
            c.rejected_earlier as i64,
            c.duplicates_deleted as i64
        ],
    )?;
    Ok(())
}

/// What a [`Record::Failed`] or [`Record::Ignored`] says about an item that did not make it.
struct NotMade<'a> {
    state: State,
    reason: &'a str,
    attempts: u32,
    /// A local failure (I/O, a changing file): the next run tries again.
    retry_local: bool,
    /// The image the row pointed to is gone.
    image_gone: bool,
    check_after: Option<&'a str>,
}

/// Records an item that did not make it; the image it pointed at stays recorded unless it
/// is gone.
fn fail(
    tx: &Transaction<'_>,
    v: &Version,
    why: &NotMade<'_>,
    ts: &str,
    retry_base: f64,
) -> Result<()> {
    let NotMade {
        state,
        reason,
        attempts,
        retry_local,
        image_gone,
        check_after,
    } = *why;
    // Failures in a row, and the delay they earn: base, 2 x base, 4 x base, ... capped.
    let failures: i64 = if state == State::Failed {
        tx.prepare_cached("SELECT failures FROM items WHERE source_id = ?1 AND key = ?2")?
            .query_row(params![v.source_id, v.key], |r| r.get(0))
            .optional()?
            .unwrap_or(0)
            + 1
    } else {
        0
    };
    let retry_at = (state == State::Failed).then(|| {
        let delay = (retry_base * 2f64.powi((failures - 1).clamp(0, 30) as i32))
            .min(MAX_RETRY_DELAY.as_secs_f64());
        super::timestamp(
            chrono::Utc::now() + chrono::Duration::milliseconds((delay * 1000.0) as i64),
        )
    });
    tx.prepare_cached(
        "INSERT INTO items (source_id, key, size, mtime_ns, etag, options, sha256, state, attempts, last_error,
           retry_local, check_after, created_at, updated_at, failures, retry_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?13, ?15, ?16)
         ON CONFLICT (source_id, key) DO UPDATE SET size = excluded.size,
           mtime_ns = excluded.mtime_ns, etag = excluded.etag, options = excluded.options,
           sha256 = excluded.sha256, planned_id = NULL,
           state = excluded.state, attempts = excluded.attempts, last_error = excluded.last_error,
           retry_local = excluded.retry_local, failures = excluded.failures,
           retry_at = excluded.retry_at,
           check_after = COALESCE(excluded.check_after, items.check_after),
           updated_at = excluded.updated_at,
           image_id = CASE WHEN ?14 THEN NULL ELSE items.image_id END,
           url = CASE WHEN ?14 THEN NULL ELSE items.url END",
    )?
    .execute(params![
        v.source_id,
        v.key,
        v.size as i64,
        v.mtime_ns,
        v.etag,
        v.options,
        v.sha256,
        state.as_str(),
        attempts as i64,
        reason,
        retry_local,
        check_after,
        ts,
        image_gone,
        failures,
        retry_at
    ])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(account_id: &str) -> Destination {
        Destination {
            account_id: account_id.into(),
            api_base: "https://api.example/client/v4".into(),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn another_destination_is_a_configuration_error_and_a_failed_write_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (writer, opening, thread) =
            LedgerWriter::start(&dir.path().join("l.sqlite"), DEFAULT_RETRY_BASE).unwrap();
        opening.opened().await.unwrap();
        writer.claim_destination(&destination("a")).await.unwrap();
        writer.check_destination(&destination("a")).await.unwrap();
        for refused in [
            writer.check_destination(&destination("b")).await,
            writer.claim_destination(&destination("b")).await,
        ] {
            match refused {
                Err(Error::Config(why)) => {
                    assert!(why[0].contains("belongs to account a"), "{why:?}");
                    assert!(why[0].contains("--ledger"), "{why:?}");
                }
                other => panic!("{other:?}"),
            }
        }
        let failed = Unanswered::Failed("this ledger belongs to nobody: disk full".into());
        assert!(matches!(failed.into_error(), Error::LedgerWrite(_)));
        drop(writer);
        thread.join().unwrap().unwrap();
    }

    fn version(source_id: i64, key: &str) -> Version {
        crate::ledger::tests::version(source_id, key, "s")
    }

    /// The outcome of the row its intent wrote, of a row whose content changed since, and
    /// of a row with no intent at all (content shared without an upload) each leave the
    /// whole row, and the content index, saying what the image holds.
    #[tokio::test]
    async fn an_outcome_is_recorded_whole_with_or_without_the_intent_of_its_content() {
        let (_dir, path, writer, thread, sources) = crate::ledger::tests::fresh(&["/a"]).await;
        let a = sources[0];
        let reader = Ledger::open_read_only(&path).unwrap().unwrap();
        let v = |sha: &str| crate::ledger::tests::version(a, "k.png", sha);
        let uploaded = |sha: &str, id: &str, replaced: bool| Record::Uploaded {
            version: v(sha),
            image_id: id.into(),
            url: Some(format!("https://img/{id}")),
            attempts: 2,
            replaced,
            stamp: Some(format!("stamp-{sha}")),
            check_after: None,
            superseded: None,
        };
        let intent = |sha: &str| Record::Intent {
            version: v(sha),
            planned_id: Some("k.png".into()),
            stamp: format!("stamp-{sha}"),
        };
        let steps: [(Option<Record>, Record, &str, &str); 3] = [
            (None, uploaded("one", "id-1", false), "one", "id-1"),
            (
                Some(intent("two")),
                uploaded("two", "id-2", true),
                "two",
                "id-2",
            ),
            (None, uploaded("three", "id-3", true), "three", "id-3"),
        ];
        for (before, outcome, sha, id) in steps {
            if let Some(before) = before {
                writer.commit(before).await.unwrap();
            }
            writer.record(outcome).await.unwrap();
            writer.flush().await.unwrap();
            let row = reader.lookup(a, "k.png").unwrap().unwrap();
            assert_eq!(row.state, State::Uploaded, "{sha}");
            assert_eq!(row.sha256.as_deref(), Some(sha));
            assert_eq!(row.image_id.as_deref(), Some(id));
            assert_eq!(
                row.url.as_deref(),
                Some(format!("https://img/{id}").as_str())
            );
            assert_eq!(row.stamp.as_deref(), Some(format!("stamp-{sha}").as_str()));
            assert_eq!(row.planned_id, None);
            assert_eq!(row.attempts, 2);
            let by_content = reader.uploaded_with_content(a, sha, "other.png").unwrap();
            assert_eq!(by_content.map(|r| r.key).as_deref(), Some("k.png"), "{sha}");
        }
        for gone in ["one", "two"] {
            assert!(
                reader
                    .uploaded_with_content(a, gone, "other.png")
                    .unwrap()
                    .is_none()
            );
        }
        drop(writer);
        thread.join().unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outcome_shares_the_commit_of_the_next_intent_and_each_intent_is_durable_when_acknowledged()
     {
        let (_dir, path, writer, thread, sources) = crate::ledger::tests::fresh(&["/a"]).await;
        let a = sources[0];
        let reader = Ledger::open_read_only(&path).unwrap().unwrap();
        let uploaded = |key: &str| Record::Uploaded {
            version: version(a, key),
            image_id: key.into(),
            url: None,
            attempts: 1,
            replaced: false,
            stamp: None,
            check_after: None,
            superseded: None,
        };
        let intent = |key: &str| Record::Intent {
            version: version(a, key),
            planned_id: None,
            stamp: "st".into(),
        };
        writer.commit(intent("0")).await.unwrap();
        let before = writer.commits();
        // A worker's loop: the outcome of its last upload, then the intent of the next.
        let pairs = 20;
        for k in 1..=pairs {
            writer.record(uploaded(&(k - 1).to_string())).await.unwrap();
            // The next job's intent comes a moment later (its file is read and hashed).
            tokio::time::sleep(Duration::from_millis(2)).await;
            writer.commit(intent(&k.to_string())).await.unwrap();
            // Acknowledged means committed: a reader sees it at once.
            let row = reader.lookup(a, &k.to_string()).unwrap().unwrap();
            assert_eq!(row.state, State::Uploading);
            assert_eq!(
                reader
                    .lookup(a, &(k - 1).to_string())
                    .unwrap()
                    .unwrap()
                    .state,
                State::Uploaded
            );
        }
        let commits = writer.commits() - before;
        assert!(
            commits <= pairs + pairs / 4,
            "{commits} commits for {pairs} intents"
        );
        // An outcome nobody waits for is committed by a flush, or when the writer ends.
        writer.record(uploaded(&pairs.to_string())).await.unwrap();
        writer.flush().await.unwrap();
        let last = pairs.to_string();
        assert_eq!(
            reader.lookup(a, &last).unwrap().unwrap().state,
            State::Uploaded
        );
        writer.record(uploaded("0")).await.unwrap();
        drop(writer);
        thread.join().unwrap().unwrap();
    }

    fn waiting(by: Option<Instant>) -> Msg {
        let (ack, _) = oneshot::channel();
        Msg::Record(
            Record::Intent {
                version: version(1, "k"),
                planned_id: None,
                stamp: "st".into(),
            },
            Some(Waiter { ack, by }),
        )
    }

    #[test]
    fn a_batch_waits_for_company_as_long_as_its_waiters_can_spare() {
        let linger = Linger::default();
        let opened = Instant::now();
        let ms = Duration::from_millis;
        let by = |d| Some(opened + d);
        // Intents whose requests wait their turn anyway: until the first is needed...
        let spare = [waiting(by(ms(60))), waiting(by(ms(90)))];
        assert_eq!(linger.budget(&spare, opened), Wait::Free(ms(60)));
        // ...at least as long as any acknowledged record, at most LINGER_MAX.
        assert_eq!(
            linger.budget(&[waiting(by(ms(1)))], opened),
            Wait::Free(LINGER_ACKED)
        );
        assert_eq!(
            linger.budget(&[waiting(by(ms(9_000)))], opened),
            Wait::Free(LINGER_MAX)
        );
        // One record needed at once: the short guess, as before.
        let urgent = [waiting(by(ms(60))), waiting(None)];
        assert_eq!(linger.budget(&urgent, opened), Wait::Company(LINGER_ACKED));
        let mut backed_off = Linger::default();
        backed_off.waited(0, true);
        assert_eq!(backed_off.budget(&urgent, opened), Wait::Not);
        // Waiting for a record needed later costs nobody: the backoff does not apply.
        assert_eq!(backed_off.budget(&spare, opened), Wait::Free(ms(60)));
    }
}
