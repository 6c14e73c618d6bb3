//! Egress policies in SQLite (`egress_policies`, one JSON row per sandbox that has one).

use sqlx::Row;

use super::{SqliteStore, parse_json};
use crate::error::{Error, Result};
use crate::model::EgressPolicy;

impl SqliteStore {
    pub(super) async fn set_egress_policy_row(
        &self,
        sandbox_id: &str,
        policy: Option<&EgressPolicy>,
    ) -> Result<()> {
        match policy {
            Some(p) => {
                let body = serde_json::to_string(p).map_err(|e| Error::Store(e.to_string()))?;
                sqlx::query(
                    "INSERT INTO egress_policies (sandbox_id, body) VALUES (?, ?) \
                     ON CONFLICT (sandbox_id) DO UPDATE SET body = excluded.body",
                )
                .bind(sandbox_id)
                .bind(body)
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM egress_policies WHERE sandbox_id = ?")
                    .bind(sandbox_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn egress_policy_row(&self, sandbox_id: &str) -> Result<Option<EgressPolicy>> {
        let row = sqlx::query("SELECT body FROM egress_policies WHERE sandbox_id = ?")
            .bind(sandbox_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse_json(&r.try_get::<String, _>("body")?, "egress_policies.body"))
            .transpose()
    }

    pub(super) async fn egress_policy_rows(&self) -> Result<Vec<(String, EgressPolicy)>> {
        let rows = sqlx::query("SELECT sandbox_id, body FROM egress_policies ORDER BY sandbox_id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get("body")?;
                Ok((
                    r.try_get("sandbox_id")?,
                    parse_json(&body, "egress_policies.body")?,
                ))
            })
            .collect()
    }
}
