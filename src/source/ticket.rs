//! A ticket travels with an item through every stage and into the ledger writer's records.
//! When the last holder drops it (after the record that ends the item is committed, or when
//! a stage passes the item over) its source hears that the item is done. The watch source
//! uses this to keep one item in one worker at a time, and to look at a file again once the
//! pipeline has finished with it; sources that list once carry no ticket.

use std::sync::Arc;

use tokio::sync::mpsc;

/// Held by everything that still works on one item.
#[derive(Clone, Default)]
pub struct Ticket(Option<Arc<Handback>>);

struct Handback {
    key: String,
    done: mpsc::UnboundedSender<String>,
}

impl Drop for Handback {
    fn drop(&mut self) {
        // The source may already be gone (the run is ending): nobody is left to tell.
        let _ = self.done.send(std::mem::take(&mut self.key));
    }
}

impl Ticket {
    /// A ticket that sends `key` to `done` when the item is finished.
    pub fn new(key: String, done: mpsc::UnboundedSender<String>) -> Ticket {
        Ticket(Some(Arc::new(Handback { key, done })))
    }

    /// Whether a source is waiting for this item.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.is_held() { "Ticket" } else { "-" })
    }
}

// A ticket says who waits, not what the item is: two items never differ by their tickets.
impl PartialEq for Ticket {
    fn eq(&self, _: &Ticket) -> bool {
        true
    }
}

impl Eq for Ticket {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_back_once_the_last_clone_is_dropped() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t = Ticket::new("a.png".into(), tx);
        let copy = t.clone();
        drop(t);
        assert!(rx.try_recv().is_err());
        drop(copy);
        assert_eq!(rx.try_recv().ok().as_deref(), Some("a.png"));
    }
}
