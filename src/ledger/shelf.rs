//! Messages handed to the ledger writer without waking its thread. While the writer gathers
//! a batch it will commit at a known time, a record nobody waits for, or one not needed
//! before that time, is laid on the shelf, and the writer takes the shelf into the batch
//! when it commits: one wake-up per batch rather than one per record (at a few hundred
//! uploads a second, those wake-ups cost more CPU than the records' SQL).

use std::sync::{Mutex, MutexGuard};

use tokio::time::Instant;

/// Messages waiting for the batch being gathered.
pub(super) struct Shelf<T> {
    inner: Mutex<Inner<T>>,
    /// Past this many messages the writer is woken whatever it is doing.
    full: usize,
}

struct Inner<T> {
    items: Vec<T>,
    /// When the batch being gathered commits; `None` while the writer is not gathering
    /// (it waits for a message, or is committing).
    commit_at: Option<Instant>,
    /// The earliest time a shelved message is needed by.
    needed_by: Option<Instant>,
    /// A wake-up is on its way to the writer.
    nudged: bool,
    /// The writer has stopped: nothing more is taken.
    closed: bool,
}

impl<T> std::fmt::Debug for Shelf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shelf")
            .field("len", &self.lock().items.len())
            .finish()
    }
}

impl<T> Shelf<T> {
    /// An empty shelf that wakes the writer once it holds `full` messages.
    pub(super) fn new(full: usize) -> Shelf<T> {
        Shelf {
            inner: Mutex::new(Inner {
                items: Vec::new(),
                commit_at: None,
                needed_by: None,
                nudged: false,
                closed: false,
            }),
            full,
        }
    }

    // Nothing panics while holding the lock; a poisoned one still holds consistent data.
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lays a message nobody waits for on the shelf. `Ok(true)`: wake the writer (it is not
    /// gathering a batch and no wake-up is on its way, or the shelf is full). `Err`: the
    /// writer has stopped; the message is given back.
    pub(super) fn lay(&self, item: T) -> Result<bool, T> {
        let mut s = self.lock();
        if s.closed {
            return Err(item);
        }
        s.items.push(item);
        let wake = (s.commit_at.is_none() && !s.nudged) || s.items.len() >= self.full;
        s.nudged |= wake;
        Ok(wake)
    }

    /// Lays a message needed by `by` on the shelf if the batch being gathered commits no
    /// later; otherwise gives it back, to be sent (which wakes the writer).
    pub(super) fn lay_if_due_by(&self, item: T, by: Instant) -> Result<(), T> {
        let mut s = self.lock();
        let due = s.commit_at.is_some_and(|at| at <= by);
        if s.closed || !due || s.items.len() >= self.full {
            return Err(item);
        }
        s.items.push(item);
        s.needed_by = Some(s.needed_by.map_or(by, |n| n.min(by)));
        Ok(())
    }

    /// The writer gathers a batch to commit at `at`, or sooner if something shelved is
    /// needed sooner; says when, and whether the shelf is full (commit now).
    pub(super) fn gathering(&self, at: Instant) -> (Instant, bool) {
        let mut s = self.lock();
        let at = s.needed_by.map_or(at, |n| n.min(at));
        s.commit_at = Some(at);
        (at, s.items.len() >= self.full)
    }

    /// The writer has received a wake-up.
    pub(super) fn woken(&self) {
        self.lock().nudged = false;
    }

    /// The writer takes everything shelved into its batch and stops gathering.
    pub(super) fn take(&self, into: &mut Vec<T>) {
        let mut s = self.lock();
        into.append(&mut s.items);
        s.commit_at = None;
        s.needed_by = None;
    }

    /// The writer has stopped: what is shelved is handed back (to be dropped, which tells
    /// anyone waiting for it) and nothing more is taken.
    pub(super) fn close(&self) -> Vec<T> {
        let mut s = self.lock();
        s.closed = true;
        std::mem::take(&mut s.items)
    }
}

/// Closes its shelf when dropped, also when the writer thread unwinds from a panic: nobody
/// waits forever for a shelved record.
pub(super) struct Closing<'a, T>(&'a Shelf<T>);

impl<T> Shelf<T> {
    /// A guard that closes the shelf (dropping what it holds) when it goes.
    pub(super) fn closing(&self) -> Closing<'_, T> {
        Closing(self)
    }
}

impl<T> Drop for Closing<'_, T> {
    fn drop(&mut self) {
        drop(self.0.close());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_writer_is_woken_once_per_batch_and_only_for_what_cannot_wait() {
        let shelf = Shelf::new(4);
        // The writer waits for a message: the first record wakes it, the next ones do not.
        assert_eq!(shelf.lay(1), Ok(true));
        assert_eq!(shelf.lay(2), Ok(false));
        shelf.woken();
        let now = Instant::now();
        let at = now + Duration::from_millis(50);
        assert_eq!(shelf.gathering(at), (at, false));
        assert_eq!(shelf.lay(3), Ok(false));
        // Needed after the commit: shelved; needed before it: sent.
        assert_eq!(
            shelf.lay_if_due_by(4, at + Duration::from_millis(1)),
            Ok(())
        );
        assert_eq!(
            shelf.lay_if_due_by(5, at - Duration::from_millis(1)),
            Err(5)
        );
        // Full: the writer is woken even while it gathers.
        assert_eq!(shelf.lay(6), Ok(true));
        let mut batch = vec![];
        shelf.take(&mut batch);
        assert_eq!(batch, [1, 2, 3, 4, 6]);
        // Not gathering: a record needed later is sent, not shelved.
        assert_eq!(shelf.lay_if_due_by(7, at), Err(7));
        shelf.woken();
        assert_eq!(shelf.lay(8), Ok(true));
        assert_eq!(shelf.close(), [8]);
        assert_eq!(shelf.lay(9), Err(9));
    }

    #[test]
    fn a_writer_that_panics_still_closes_its_shelf() {
        let shelf = std::sync::Arc::new(Shelf::new(4));
        let (ack, done) = tokio::sync::oneshot::channel::<()>();
        assert_eq!(shelf.lay(ack).map_err(drop), Ok(true));
        let writer = shelf.clone();
        let ended = std::thread::spawn(move || {
            let _closing = writer.closing();
            panic!("the writer thread failed");
        })
        .join();
        assert!(ended.is_err());
        // The waiter hears that its record will not be written, instead of waiting forever.
        assert!(done.blocking_recv().is_err());
        assert!(shelf.lay(tokio::sync::oneshot::channel().0).is_err());
    }

    #[test]
    fn a_batch_commits_by_the_time_a_shelved_message_is_needed() {
        let shelf = Shelf::new(100);
        let now = Instant::now();
        let ms = Duration::from_millis;
        shelf.gathering(now + ms(50));
        assert_eq!(shelf.lay_if_due_by(1, now + ms(60)), Ok(()));
        // The batch was to wait longer now (company came): not past what is shelved.
        assert_eq!(shelf.gathering(now + ms(90)).0, now + ms(60));
    }
}
