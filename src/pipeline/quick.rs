//! Stage 1: the quick check of every listed item against the ledger, on a blocking thread
//! with its own batched reader; what it cannot decide goes on as a candidate.

use tokio::sync::mpsc;

use super::run::Run;
use super::seen_lines::SeenLines;
use crate::error::Result;
use crate::item::{Item, SourceKind, Ticket};
use crate::ledger::{BatchedReader, Failure, FolderRows, QuickRow, Record, Row, State};
use crate::outcome::Outcome;
use crate::plan::{self, Examined, Quick, Retry};
use crate::progress::Stats;
use crate::remove::Removal;
use crate::source::Found;
use crate::source::walk::Settled;

/// The quick check's most common verdict, given in the walk's own thread: a file uploaded
/// before with the same size and modification time is counted there as unchanged (what
/// [`plan::quick_check`] says of it), so a rerun over a million such files builds, sends
/// and checks no item for them. Anything else goes on to [`check`] as before.
pub(super) struct Unchanged {
    run: Run,
    reader: BatchedReader,
    /// The rows of the folder being walked and of its parents (the walk is depth first,
    /// and may come back to a parent's files after a subfolder), each read at once when
    /// the walk enters it; `None` for a folder too large to hold (looked up file by file).
    folders: Vec<(String, Option<FolderRows>)>,
    /// Files settled since the read snapshot was last released.
    since_pause: usize,
}

/// Files settled under one read snapshot at most: a folder's rows are read in one
/// transaction, which must not stay open for the rest of the walk (the WAL could not be
/// checkpointed meanwhile).
const SNAPSHOT_FILES: usize = 4096;

/// Rows of one folder held at most (about 100 bytes each): past it, one lookup per file.
const FOLDER_ROWS: usize = 100_000;

impl Unchanged {
    /// For a folder source's walk, with its own read connection.
    pub fn new(run: Run, reader: BatchedReader) -> Unchanged {
        Unchanged {
            run,
            reader,
            folders: Vec::new(),
            since_pause: 0,
        }
    }

    /// Whether `key` was uploaded, without per-item settings, at this size and mtime.
    fn unchanged(&mut self, key: &str, size: u64, mtime_ns: i64) -> Result<bool> {
        let (prefix, name) = key.split_at(key.rfind('/').map_or(0, |i| i + 1));
        // Leave the folders the walk is done with: those that are not this one's parents.
        while let Some((p, _)) = self.folders.last()
            && !prefix.starts_with(p.as_str())
        {
            self.folders.pop();
        }
        if self.folders.last().map(|(p, _)| p.as_str()) != Some(prefix) {
            let source_id = self.run.source_id;
            let rows = self
                .reader
                .uploaded_in_folder(source_id, prefix, FOLDER_ROWS)?;
            self.folders.push((prefix.to_string(), rows));
        }
        if let Some((_, Some(rows))) = self.folders.last() {
            // The folder's read keeps only rows `unchanged_file` could say yes to.
            return Ok(rows.get(name) == Some(&(size, mtime_ns)));
        }
        let row = self.reader.quick(self.run.source_id, key)?;
        Ok(row.is_some_and(|row| unchanged_file(&row, size, mtime_ns)))
    }
}

impl Settled for Unchanged {
    fn settled(&mut self, key: &str, size: u64, mtime_ns: i64) -> Result<bool> {
        if self.run.shutdown.intake.is_cancelled() {
            return Ok(false);
        }
        self.since_pause += 1;
        if self.since_pause >= SNAPSHOT_FILES {
            self.reader.pause()?;
            self.since_pause = 0;
        }
        // Another shard's file is passed over without a count, as `check` does.
        if let Some(shard) = &self.run.shard
            && !shard.owns(&self.run.source, key)
        {
            return Ok(true);
        }
        let unchanged = self.unchanged(key, size, mtime_ns)?;
        let run = &self.run;
        if unchanged {
            Stats::bump(&run.stats.discovered);
            run.end_blocking(Outcome::Unchanged)?;
        }
        Ok(unchanged)
    }

    fn pause(&mut self) -> Result<()> {
        self.reader.pause()
    }
}

/// [`plan::quick_check`]'s `Unchanged` for a walked file (a size and modification time,
/// no per-item settings), without building the item.
fn unchanged_file(row: &QuickRow, size: u64, mtime_ns: i64) -> bool {
    row.state == State::Uploaded
        && row.size == size
        && row.mtime_ns == mtime_ns
        && row.options.is_none()
}

/// An item the quick check could not decide.
pub(super) struct Candidate {
    /// The item.
    pub item: Item,
    /// Its row in the ledger, if any.
    pub row: Option<Row>,
}

/// Stage 1: the quick check of every listed item against the ledger, on a blocking thread
/// with its own reader; what it cannot decide goes on as a candidate.
pub(super) fn check(
    run: &Run,
    mut found: mpsc::Receiver<Found>,
    mut reader: Option<BatchedReader>,
    retry: Retry,
    out: &mpsc::Sender<Candidate>,
    gone: &mpsc::Sender<Removal>,
) -> Result<()> {
    // A manifest's bad lines are keyed by content: once a whole, unsharded pass has been
    // read, the line records it did not meet again (fixed or deleted lines) are stale.
    // The keys met are held on disk: a manifest may repeat a line millions of times.
    let mut line_keys =
        (run.source.kind == SourceKind::Manifest && run.shard.is_none() && run.writer().is_some())
            .then(SeenLines::default);
    loop {
        let next = match found.try_recv() {
            Ok(f) => Some(f),
            Err(mpsc::error::TryRecvError::Empty) => {
                // Hold no read snapshot while waiting, so the WAL can be checkpointed.
                if let Some(r) = reader.as_mut() {
                    r.pause()?;
                }
                found.blocking_recv()
            }
            Err(mpsc::error::TryRecvError::Disconnected) => None,
        };
        let Some(found) = next else {
            if let (Some(seen), Some(r)) = (line_keys.as_ref(), reader.as_mut()) {
                forget_stale_lines(run, r, seen)?;
            }
            break;
        };
        if run.shutdown.intake.is_cancelled() {
            break;
        }
        if let (Some(seen), Found::Bad { key, .. } | Found::Ignored { key, .. }) =
            (line_keys.as_mut(), &found)
        {
            seen.insert(key)?;
        }
        if let Some(shard) = &run.shard {
            let key = match &found {
                Found::Item(item) => &item.key,
                Found::Bad { key, .. } | Found::Ignored { key, .. } | Found::Gone { key, .. } => {
                    key
                }
            };
            if !shard.owns(&run.source, key) {
                continue;
            }
        }
        let go_on = match found {
            Found::Gone { key, ticket } => send_gone(run, reader.as_mut(), gone, key, ticket)?,
            Found::Item(item) => {
                Stats::bump(&run.stats.discovered);
                quick_check(run, reader.as_mut(), item, retry, out)?
            }
            Found::Bad { key, reason } => {
                Stats::bump(&run.stats.discovered);
                run.reject_blocking(run.version(key), reason, Failure::Local)?;
                true
            }
            Found::Ignored { key, reason } => {
                Stats::bump(&run.stats.discovered);
                passed_over(run, reader.as_mut(), key, reason)?;
                true
            }
        };
        if !go_on {
            break;
        }
    }
    Ok(())
}

/// One listed item against its record: counted when nothing is to be done, rejected, or
/// sent on as a candidate. False once the next stage has gone.
fn quick_check(
    run: &Run,
    mut reader: Option<&mut BatchedReader>,
    item: Item,
    retry: Retry,
    out: &mpsc::Sender<Candidate>,
) -> Result<bool> {
    let quick = match reader.as_deref_mut() {
        Some(r) => {
            // An item a source may hand over again (a watched file) must see the outcome
            // of its previous pass: a fresh snapshot, not the batch's.
            if item.ticket.is_held() {
                r.pause()?;
            }
            r.quick(run.source_id, &item.key)?
        }
        None => None,
    };
    match plan::quick_check(quick.as_ref(), &item, retry) {
        Quick::Unchanged => run.end_blocking(Outcome::Unchanged)?,
        Quick::StillRejected => run.end_blocking(Outcome::StillFailed { rejected: true })?,
        Quick::StillFailed => run.end_blocking(Outcome::StillFailed { rejected: false })?,
        Quick::Reject(reason) => {
            let v = plan::version(run.source_id, &item, &Examined::remote());
            run.reject_blocking(v, reason, Failure::Rejected)?;
        }
        Quick::Examine => {
            let row = match (quick, reader.as_deref_mut()) {
                (Some(_), Some(r)) => r.lookup(run.source_id, &item.key)?,
                _ => None,
            };
            return Ok(send_unpinned(out, Candidate { item, row }, reader).is_ok());
        }
    }
    Ok(true)
}

/// An item that left its source: its row, if it has one, goes to the removal stage.
/// False once that stage has gone.
fn send_gone(
    run: &Run,
    mut reader: Option<&mut BatchedReader>,
    gone: &mpsc::Sender<Removal>,
    key: String,
    ticket: Ticket,
) -> Result<bool> {
    let row = match reader.as_deref_mut() {
        Some(r) => {
            r.pause()?;
            r.lookup(run.source_id, &key)?
        }
        None => None,
    };
    Ok(match row {
        Some(row) => send_unpinned(gone, Removal::of(row, ticket), reader).is_ok(),
        None => true,
    })
}

/// An entry passed over with a reason: counted, logged, and recorded once.
fn passed_over(
    run: &Run,
    reader: Option<&mut BatchedReader>,
    key: String,
    reason: String,
) -> Result<()> {
    let known = match reader {
        Some(r) => r
            .quick(run.source_id, &key)?
            .is_some_and(|q| q.state == crate::ledger::State::Ignored),
        None => false,
    };
    run.end_blocking(Outcome::PassedOver {
        version: run.version(key),
        hidden: crate::source::walk::is_hidden_or_temporary(&reason),
        reason,
        known,
    })
}

/// Removes the records of manifest lines (bad rows, passed-over duplicates) that a complete
/// pass over the manifest did not meet again: their line was fixed or deleted, and they
/// would stay in `failures` for ever.
fn forget_stale_lines(run: &Run, reader: &mut BatchedReader, seen: &SeenLines) -> Result<()> {
    let Some(w) = run.writer() else {
        return Ok(());
    };
    for prefix in [crate::source::manifest::BAD_LINE_PREFIX, "line "] {
        let mut after = prefix.to_string();
        loop {
            let page = reader.keys_after(run.source_id, &after, 1000)?;
            let Some((last, _)) = page.last() else { break };
            after = last.clone();
            let mut done = false;
            for (key, holds_image) in page {
                if !key.starts_with(prefix) {
                    done = true;
                    break;
                }
                if holds_image
                    || !crate::source::manifest::is_line_key(&key)
                    || seen.contains(&key)?
                {
                    continue;
                }
                tracing::info!(%key, "a manifest line recorded earlier is gone (fixed or deleted): its record is dropped");
                w.record_blocking(Record::Removed {
                    version: run.version(key),
                    image_id: None,
                    outcome: "the line is no longer in the manifest (fixed or deleted)".into(),
                })?;
            }
            if done {
                break;
            }
        }
    }
    Ok(())
}

/// Sends from the quick check's thread; when the next stage is full (uploads are the
/// bottleneck of a first run), the read snapshot is released before waiting, or SQLite
/// could never restart the WAL and it would grow by every commit of the run.
fn send_unpinned<T>(
    out: &mpsc::Sender<T>,
    value: T,
    reader: Option<&mut BatchedReader>,
) -> std::result::Result<(), ()> {
    match out.try_send(value) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
        Err(mpsc::error::TrySendError::Full(value)) => {
            if let Some(r) = reader {
                r.pause().map_err(|_| ())?;
            }
            // Wait for room for a quarter of the queue, not for each slot as it frees: the
            // next stage then takes many values per wake-up of this thread.
            let room = (out.max_capacity() / 4).max(1);
            let Ok(runtime) = tokio::runtime::Handle::try_current() else {
                return out.blocking_send(value).map_err(|_| ());
            };
            let mut permits = runtime.block_on(out.reserve_many(room)).map_err(|_| ())?;
            match permits.next() {
                Some(permit) => {
                    permit.send(value);
                    Ok(())
                }
                None => out.blocking_send(value).map_err(|_| ()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The walk's verdict is the quick check's, for every state and every difference a
    /// walked file can show; `--retry-failed` changes nothing for uploaded rows.
    #[test]
    fn the_walks_unchanged_is_exactly_the_quick_checks() {
        let states = [
            State::Uploading,
            State::Uploaded,
            State::Failed,
            State::Rejected,
            State::Ignored,
        ];
        let file = crate::item::Item::file("a/b.png".into(), "/x/a/b.png".into(), 10, 7);
        for state in states {
            for (size, mtime_ns, options) in [
                (10, 7, None),
                (11, 7, None),
                (10, 8, None),
                (10, 7, Some("digest".to_string())),
            ] {
                let row = QuickRow {
                    size,
                    mtime_ns,
                    etag: None,
                    options,
                    state,
                    retry_local: true,
                    check_pending: false,
                    retry_due: true,
                };
                for retry in [Retry::Local, Retry::Always, Retry::WhenDue] {
                    let quick = plan::quick_check(Some(&row), &file, retry);
                    assert_eq!(
                        unchanged_file(&row, 10, 7),
                        quick == Quick::Unchanged,
                        "{row:?} {retry:?}: {quick:?}"
                    );
                }
            }
        }
    }
}
