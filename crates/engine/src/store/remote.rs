//! The mirror of other hosts' overlay endpoints (written by the overlay agent only).

use anyhow::Result;
use rusqlite::params;

use super::{RemoteEndpoint, Tx};

impl Tx<'_> {
    pub fn remote_endpoints(&self) -> Result<Vec<RemoteEndpoint>> {
        let mut st = self.0.prepare_cached("SELECT record FROM remote_endpoints ORDER BY network_id, id")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        Ok(rows.filter_map(|r| serde_json::from_str(&r.ok()?).ok()).collect())
    }

    /// Replaces the whole mirror (one transaction: DNS never sees half of it).
    pub fn set_remote_endpoints(&self, eps: &[RemoteEndpoint]) -> Result<()> {
        self.0.execute("DELETE FROM remote_endpoints", [])?;
        let mut st =
            self.0.prepare_cached("INSERT INTO remote_endpoints (id, network_id, record) VALUES (?1, ?2, ?3)")?;
        for e in eps {
            st.execute(params![e.id, e.network_id, serde_json::to_string(e)?])?;
        }
        Ok(())
    }

    pub fn upsert_remote_endpoint(&self, e: &RemoteEndpoint) -> Result<()> {
        self.0
            .prepare_cached("INSERT OR REPLACE INTO remote_endpoints (id, network_id, record) VALUES (?1, ?2, ?3)")?
            .execute(params![e.id, e.network_id, serde_json::to_string(e)?])?;
        Ok(())
    }

    pub fn delete_remote_endpoint(&self, id: &str) -> Result<()> {
        self.0.prepare_cached("DELETE FROM remote_endpoints WHERE id = ?1")?.execute([id])?;
        Ok(())
    }
}
