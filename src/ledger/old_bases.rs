//! The old public bases stored per source (`cfimg source set-old-base`): where a source's
//! items were served before the move, read by `cfimg redirects` and `cfimg rewrite`.

use rusqlite::params;

use super::{Ledger, timestamp};
use crate::error::Result;

impl Ledger {
    /// Every stored old base: (source number, base), by source then base.
    pub fn old_bases(&self) -> Result<Vec<(i64, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT source_id, base FROM old_bases ORDER BY source_id, base")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    }

    /// Replaces the old bases of one source with `bases` (none: forgets them), in one
    /// transaction. The caller validated them (`old_url::parse_base`).
    pub fn set_old_bases(&mut self, source_id: i64, bases: &[String]) -> Result<()> {
        let now = timestamp(chrono::Utc::now());
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM old_bases WHERE source_id = ?1", [source_id])?;
        for base in bases {
            tx.execute(
                "INSERT OR IGNORE INTO old_bases (source_id, base, created_at) VALUES (?1, ?2, ?3)",
                params![source_id, base, now],
            )?;
        }
        tx.commit()?;
        Ok(())
    }
}
