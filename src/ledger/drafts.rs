//! Direct-upload drafts: the SQL of the `drafts` table. The drafts of an account are one
//! source of the ledger (kind `drafts`). They are written without the ledger's run lock: no
//! migration ever plans them, and SQLite serialises the few writes `serve`, `direct-upload`
//! and a migration make at once (WAL, busy timeout).

use std::path::Path;
use std::sync::OnceLock;

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::{Destination, Ledger, now, timestamp};
use crate::error::{Error, Result};
use crate::item::{SourceId, SourceKind};

/// Where a draft stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DraftState {
    /// Minted; its upload has not been seen yet.
    Pending,
    /// The image arrived.
    Completed,
    /// Cloudflare reported the upload as failed (e.g. not an image).
    Failed,
    /// Its URL expired unused.
    Expired,
}

impl DraftState {
    /// The name stored in the ledger and shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            DraftState::Pending => "pending",
            DraftState::Completed => "completed",
            DraftState::Failed => "failed",
            DraftState::Expired => "expired",
        }
    }

    fn parse(s: &str) -> DraftState {
        match s {
            "completed" => DraftState::Completed,
            "failed" => DraftState::Failed,
            "expired" => DraftState::Expired,
            _ => DraftState::Pending,
        }
    }
}

/// A draft about to be recorded, right after Cloudflare minted it.
#[derive(Debug, Clone)]
pub struct NewDraft {
    /// The image id.
    pub image_id: String,
    /// Who minted it: an app key's name, or `cli`.
    pub app: String,
    /// Creator tag.
    pub creator: Option<String>,
    /// Metadata JSON text.
    pub metadata: Option<String>,
    /// Private image.
    pub private: bool,
    /// When its URL stops working.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// One row of `drafts`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Draft {
    /// The image id.
    pub id: String,
    /// Where it stands.
    pub state: DraftState,
    /// Who minted it.
    pub app: String,
    /// Creator tag.
    pub creator: Option<String>,
    /// Metadata JSON text.
    pub metadata: Option<String>,
    /// Private image.
    pub private: bool,
    /// When its URL stops working (RFC 3339).
    pub expires_at: String,
    /// A delivery URL, once completed.
    pub url: Option<String>,
    /// The uploaded file's name, when known.
    pub filename: Option<String>,
    /// Why it failed.
    pub last_error: Option<String>,
    /// Webhook deliveries received for it.
    pub notices: u32,
    /// Minted at.
    pub created_at: String,
    /// Completed at.
    pub completed_at: Option<String>,
}

/// What a notification or a lookup did to a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The draft moved to the new state.
    Changed,
    /// It was in that state already (a repeated delivery).
    Unchanged,
    /// No such draft in this ledger.
    Unknown,
}

/// The drafts of one destination in one ledger.
#[derive(Debug)]
pub struct DraftBook {
    ledger: Ledger,
    destination: Destination,
    /// The drafts source's row, registered with the first draft.
    source_id: OnceLock<i64>,
}

const COLUMNS: &str = "image_id, state, app, creator, metadata, private, expires_at, url, filename, last_error, notices, created_at, completed_at";

fn read_draft(r: &rusqlite::Row<'_>) -> rusqlite::Result<Draft> {
    Ok(Draft {
        id: r.get(0)?,
        state: DraftState::parse(&r.get::<_, String>(1)?),
        app: r.get(2)?,
        creator: r.get(3)?,
        metadata: r.get(4)?,
        private: r.get::<_, i64>(5)? != 0,
        expires_at: r.get(6)?,
        url: r.get(7)?,
        filename: r.get(8)?,
        last_error: r.get(9)?,
        notices: r.get::<_, i64>(10)?.try_into().unwrap_or(u32::MAX),
        created_at: r.get(11)?,
        completed_at: r.get(12)?,
    })
}

impl DraftBook {
    /// Opens (creating and migrating if needed) the ledger at `path` for the drafts of
    /// `destination`, refusing a ledger that belongs to another one. The destination is
    /// recorded with the first draft, not here: a mistyped account id, refused by
    /// Cloudflare, must not bind the ledger to itself for good.
    pub fn open(path: &Path, destination: &Destination) -> Result<DraftBook> {
        let ledger = Ledger::open(path)?;
        Self::refuse_other(&ledger, destination)?;
        Ok(DraftBook {
            ledger,
            destination: destination.clone(),
            source_id: OnceLock::new(),
        })
    }

    /// Opens an existing ledger read-only for the drafts of `destination`: nothing is
    /// created or written, so the drafts can be read where the ledger cannot be written.
    pub fn open_existing(path: &Path, destination: &Destination) -> Result<DraftBook> {
        let ledger = Ledger::open_existing(path)?;
        Self::refuse_other(&ledger, destination)?;
        Ok(DraftBook {
            ledger,
            destination: destination.clone(),
            source_id: OnceLock::new(),
        })
    }

    fn refuse_other(ledger: &Ledger, destination: &Destination) -> Result<()> {
        match ledger.destination()? {
            Some(d) if d != *destination => Err(Error::Config(vec![format!(
                "this ledger belongs to account {} at {}, not account {} at {}: give another --ledger",
                d.account_id, d.api_base, destination.account_id, destination.api_base
            )])),
            _ => Ok(()),
        }
    }

    /// Binds the ledger to this destination (the account has just answered a mint) and
    /// registers the drafts source, once.
    fn claim(&self) -> Result<i64> {
        if let Some(id) = self.source_id.get() {
            return Ok(*id);
        }
        let destination = &self.destination;
        self.ledger.conn.execute(
            "INSERT INTO destination (id, account_id, api_base, created_at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO NOTHING",
            params![destination.account_id, destination.api_base, now()],
        )?;
        // Another command may have bound it since the open.
        Self::refuse_other(&self.ledger, destination)?;
        let source = SourceId::new(SourceKind::Drafts, destination.account_id.clone());
        self.ledger.conn.execute(
            "INSERT INTO sources (kind, location, created_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (kind, location) DO NOTHING",
            params![source.kind.as_str(), source.location, now()],
        )?;
        let id = self.ledger.conn.query_row(
            "SELECT id FROM sources WHERE kind = ?1 AND location = ?2",
            params![source.kind.as_str(), source.location],
            |r| r.get(0),
        )?;
        Ok(*self.source_id.get_or_init(|| id))
    }

    /// Records a freshly minted draft (a re-minted id starts over as pending).
    pub fn insert(&self, d: &NewDraft) -> Result<()> {
        let source_id = self.claim()?;
        let ts = now();
        self.ledger.conn.execute(
            "INSERT INTO drafts (image_id, source_id, app, creator, metadata, private, expires_at,
                                 state, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?8)
             ON CONFLICT (image_id) DO UPDATE SET app = excluded.app, creator = excluded.creator,
                 metadata = excluded.metadata, private = excluded.private,
                 expires_at = excluded.expires_at, state = 'pending', url = NULL, filename = NULL,
                 last_error = NULL, notices = 0, updated_at = excluded.updated_at,
                 completed_at = NULL",
            params![
                d.image_id,
                source_id,
                d.app,
                d.creator,
                d.metadata,
                d.private,
                timestamp(d.expires_at),
                ts
            ],
        )?;
        Ok(())
    }

    /// One draft.
    pub fn get(&self, id: &str) -> Result<Option<Draft>> {
        Ok(self
            .ledger
            .conn
            .prepare_cached(&format!("SELECT {COLUMNS} FROM drafts WHERE image_id = ?1"))?
            .query_row([id], read_draft)
            .optional()?)
    }

    /// The draft `id` if `app` minted it: another app's draft reads as absent, so that an
    /// app key can neither read it nor learn that it exists.
    pub fn get_owned(&self, id: &str, app: &str) -> Result<Option<Draft>> {
        Ok(self
            .ledger
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM drafts WHERE image_id = ?1 AND app = ?2"
            ))?
            .query_row([id, app], read_draft)
            .optional()?)
    }

    /// Every draft, newest first; only those in `state` when given.
    pub fn list(&self, state: Option<DraftState>) -> Result<Vec<Draft>> {
        let mut stmt = self.ledger.conn.prepare_cached(&format!(
            "SELECT {COLUMNS} FROM drafts WHERE ?1 IS NULL OR state = ?1
             ORDER BY created_at DESC, image_id"
        ))?;
        let rows = stmt
            .query_map([state.map(DraftState::as_str)], read_draft)?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Marks a draft completed with its delivery URL. A completed draft stays as it is.
    pub fn complete(&self, id: &str, url: Option<&str>, filename: Option<&str>) -> Result<Change> {
        self.settle(id, DraftState::Completed, url, filename, None)
    }

    /// Marks a pending draft failed with its reason.
    pub fn fail(&self, id: &str, reason: &str) -> Result<Change> {
        self.settle(id, DraftState::Failed, None, None, Some(reason))
    }

    /// Marks a pending draft expired unused.
    pub fn expire(&self, id: &str) -> Result<Change> {
        self.settle(id, DraftState::Expired, None, None, None)
    }

    fn settle(
        &self,
        id: &str,
        to: DraftState,
        url: Option<&str>,
        filename: Option<&str>,
        reason: Option<&str>,
    ) -> Result<Change> {
        let Some(current) = self.get(id)? else {
            return Ok(Change::Unknown);
        };
        // A completion is final; anything else may still be overtaken by a completion
        // (an expired or failed draft whose upload did arrive after all). A completion
        // recorded from a notice alone gets its delivery URL from a later lookup.
        let movable = (current.state != to
            && (current.state == DraftState::Pending || to == DraftState::Completed))
            || (to == DraftState::Completed && current.url.is_none() && url.is_some());
        if !movable {
            return Ok(Change::Unchanged);
        }
        let ts = now();
        self.ledger.conn.execute(
            "UPDATE drafts SET state = ?2, url = COALESCE(?3, url), filename = COALESCE(?4, filename),
                 last_error = ?5, updated_at = ?6,
                 completed_at = CASE WHEN ?2 = 'completed' THEN ?6 ELSE completed_at END
             WHERE image_id = ?1",
            params![id, to.as_str(), url, filename, reason, ts],
        )?;
        Ok(Change::Changed)
    }

    /// Counts one webhook delivery about a draft.
    pub fn count_notice(&self, id: &str) -> Result<()> {
        self.ledger.conn.execute(
            "UPDATE drafts SET notices = notices + 1 WHERE image_id = ?1",
            [id],
        )?;
        Ok(())
    }

    /// The ids among `candidates` that are drafts of this ledger.
    pub fn known(&self, candidates: &[String]) -> Result<Vec<String>> {
        let mut found = Vec::new();
        for c in candidates {
            if self.get(c)?.is_some() && !found.contains(c) {
                found.push(c.clone());
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(dir: &Path) -> DraftBook {
        DraftBook::open(
            &dir.join("l.sqlite"),
            &Destination {
                account_id: "acc".into(),
                api_base: "emulator".into(),
            },
        )
        .unwrap()
    }

    fn new(id: &str) -> NewDraft {
        NewDraft {
            image_id: id.into(),
            app: "web".into(),
            creator: Some("c".into()),
            metadata: None,
            private: false,
            expires_at: chrono::Utc::now() + chrono::Duration::minutes(30),
        }
    }

    #[test]
    fn a_draft_completes_once_and_repeats_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let b = book(dir.path());
        b.insert(&new("a")).unwrap();
        assert_eq!(b.get("a").unwrap().unwrap().state, DraftState::Pending);
        assert_eq!(b.complete("a", Some("u"), None).unwrap(), Change::Changed);
        assert_eq!(b.complete("a", Some("u"), None).unwrap(), Change::Unchanged);
        assert_eq!(b.fail("a", "late failure").unwrap(), Change::Unchanged);
        assert_eq!(b.expire("a").unwrap(), Change::Unchanged);
        assert_eq!(b.complete("zz", None, None).unwrap(), Change::Unknown);
        let a = b.get("a").unwrap().unwrap();
        assert_eq!(
            (a.state, a.url.as_deref()),
            (DraftState::Completed, Some("u"))
        );
        b.insert(&new("b")).unwrap();
        assert_eq!(b.expire("b").unwrap(), Change::Changed);
        // An upload seen after the expiry was recorded still wins.
        assert_eq!(b.complete("b", None, None).unwrap(), Change::Changed);
        assert_eq!(b.list(Some(DraftState::Completed)).unwrap().len(), 2);
        // A completion without its URL takes it from a later lookup, once.
        assert_eq!(b.complete("b", Some("ub"), None).unwrap(), Change::Changed);
        assert_eq!(
            b.complete("b", Some("other"), None).unwrap(),
            Change::Unchanged
        );
        assert_eq!(b.get("b").unwrap().unwrap().url.as_deref(), Some("ub"));
    }

    #[test]
    fn a_draft_is_read_only_by_the_app_that_minted_it() {
        let dir = tempfile::tempdir().unwrap();
        let b = book(dir.path());
        b.insert(&new("a")).unwrap();
        assert_eq!(b.get_owned("a", "web").unwrap().unwrap().id, "a");
        assert_eq!(b.get_owned("a", "ios").unwrap(), None);
        assert_eq!(b.get_owned("zz", "web").unwrap(), None);
    }

    #[test]
    fn a_ledger_of_another_destination_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        book(dir.path()).insert(&new("a")).unwrap();
        let err = DraftBook::open(
            &dir.path().join("l.sqlite"),
            &Destination {
                account_id: "other".into(),
                api_base: "emulator".into(),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("another --ledger"), "{err}");
    }

    #[test]
    fn opening_binds_nothing_until_the_first_draft_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        drop(book(dir.path()));
        let other = Destination {
            account_id: "other".into(),
            api_base: "emulator".into(),
        };
        let b = DraftBook::open(&dir.path().join("l.sqlite"), &other).unwrap();
        b.insert(&new("a")).unwrap();
        assert_eq!(b.ledger.destination().unwrap(), Some(other));
    }
}
