//! Reaching a live supervisor on PostgreSQL (`crate::supervisor`): one row
//! of `supervisor` per host that runs one (docs/POSTGRES.md, "Reaching a
//! supervisor"): its record, and the asks left for it (a JSON array that
//! an ask appends to and the supervisor empties, each in one statement).
//! A row counts while its host's supervisor lock (an advisory lock) is held.

use super::{PgQueue, json};
use crate::error::Result;
use crate::supervisor::{SupAsk, Supervisor, gone};
use serde_json::Value;

impl PgQueue {
    pub(super) fn sup_list(&self) -> Result<Vec<Supervisor>> {
        let rows = self.rows("SELECT host, rec FROM {s}.supervisor WHERE queue = $1 ORDER BY host", &[&self.t.queue])?;
        Ok(rows
            .iter()
            .filter(|r| self.advisory_held(self.supervisor_key(r.get(0))))
            .filter_map(|r| serde_json::from_value(r.get::<_, Value>(1)).ok())
            .collect())
    }

    pub(super) fn sup_publish(&self, s: &Supervisor) -> Result<()> {
        self.exec(
            "INSERT INTO {s}.supervisor (queue, host, rec) VALUES ($1, $2, $3)
             ON CONFLICT (queue, host) DO UPDATE SET rec = EXCLUDED.rec,
               asks = CASE WHEN {s}.supervisor.rec->>'id' = EXCLUDED.rec->>'id' THEN {s}.supervisor.asks ELSE '[]' END",
            &[&self.t.queue, &s.holder.host, &json(s)],
        )?;
        Ok(())
    }

    pub(super) fn sup_unpublish(&self, id: &str) -> Result<()> {
        self.exec("DELETE FROM {s}.supervisor WHERE queue = $1 AND rec->>'id' = $2", &[&self.t.queue, &id])?;
        Ok(())
    }

    pub(super) fn sup_ask(&self, a: &SupAsk) -> Result<()> {
        let live = self.sup_list()?;
        let Some(s) = live.iter().find(|s| s.id == a.to) else { return Err(gone(&a.to)) };
        let n = self.exec(
            "UPDATE {s}.supervisor SET asks = asks || jsonb_build_array($3::jsonb) WHERE queue = $1 AND host = $2 AND rec->>'id' = $4",
            &[&self.t.queue, &s.holder.host, &json(a), &a.to],
        )?;
        if n == 0 {
            return Err(gone(&a.to));
        }
        Ok(())
    }

    pub(super) fn sup_take(&self, id: &str) -> Result<Vec<SupAsk>> {
        let row = self.row(
            "WITH old AS (SELECT host, asks FROM {s}.supervisor WHERE queue = $1 AND rec->>'id' = $2 FOR UPDATE)
             UPDATE {s}.supervisor s SET asks = '[]' FROM old WHERE s.queue = $1 AND s.host = old.host AND old.asks <> '[]'
             RETURNING old.asks",
            &[&self.t.queue, &id],
        )?;
        let asks: Vec<SupAsk> = row.and_then(|r| serde_json::from_value(r.get::<_, Value>(0)).ok()).unwrap_or_default();
        Ok(asks.into_iter().filter(|a| a.to == id).collect())
    }
}
