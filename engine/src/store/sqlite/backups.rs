//! Backups in SQLite: each finished backup's signed chunk list (`backups`) and each sandbox's
//! backup schedule (`backup_policies`). The backup's other facts are its snapshot row.

use sqlx::Row;

use super::{SqliteStore, parse_json};
use crate::error::{Error, Result};
use crate::model::BackupPolicy;
use crate::snapshots::archive::SignedArchive;

impl SqliteStore {
    pub(super) async fn put_backup_row(&self, archive: &SignedArchive) -> Result<()> {
        let snapshot = archive.manifest.backup_snapshot.as_deref().ok_or_else(|| {
            Error::Internal("a backup's chunk list must name its snapshot".into())
        })?;
        let body = serde_json::to_string(archive).map_err(|e| Error::Store(e.to_string()))?;
        sqlx::query(
            "INSERT INTO backups (snapshot_id, sandbox_id, body, created_at) VALUES (?, ?, ?, ?)",
        )
        .bind(snapshot)
        .bind(&archive.manifest.sandbox_id)
        .bind(body)
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn backup_row(&self, snapshot_id: &str) -> Result<Option<SignedArchive>> {
        let row = sqlx::query("SELECT body FROM backups WHERE snapshot_id = ?")
            .bind(snapshot_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse_json(&r.try_get::<String, _>("body")?, "backups.body"))
            .transpose()
    }

    pub(super) async fn delete_backup_row(&self, snapshot_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM backups WHERE snapshot_id = ?")
            .bind(snapshot_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn set_backup_policy_row(
        &self,
        sandbox_id: &str,
        policy: Option<BackupPolicy>,
    ) -> Result<()> {
        match policy {
            Some(p) => {
                sqlx::query(
                    "INSERT INTO backup_policies (sandbox_id, interval_secs, keep) VALUES (?, ?, ?) \
                     ON CONFLICT (sandbox_id) DO UPDATE SET interval_secs = excluded.interval_secs, \
                     keep = excluded.keep",
                )
                .bind(sandbox_id)
                .bind(i64::try_from(p.interval_secs).unwrap_or(i64::MAX))
                .bind(i64::from(p.keep))
                .execute(&self.pool)
                .await?;
            }
            None => {
                sqlx::query("DELETE FROM backup_policies WHERE sandbox_id = ?")
                    .bind(sandbox_id)
                    .execute(&self.pool)
                    .await?;
            }
        }
        Ok(())
    }

    pub(super) async fn backup_policy_row(&self, sandbox_id: &str) -> Result<Option<BackupPolicy>> {
        let row = sqlx::query(
            "SELECT sandbox_id, interval_secs, keep FROM backup_policies WHERE sandbox_id = ?",
        )
        .bind(sandbox_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| policy(&r).map(|(_, p)| p)).transpose()
    }

    pub(super) async fn backup_policy_rows(&self) -> Result<Vec<(String, BackupPolicy)>> {
        sqlx::query("SELECT sandbox_id, interval_secs, keep FROM backup_policies")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(policy)
            .collect()
    }
}

fn policy(row: &sqlx::sqlite::SqliteRow) -> Result<(String, BackupPolicy)> {
    let interval: i64 = row.try_get("interval_secs")?;
    let keep: i64 = row.try_get("keep")?;
    Ok((
        row.try_get("sandbox_id")?,
        BackupPolicy {
            interval_secs: u64::try_from(interval).unwrap_or(0),
            keep: u32::try_from(keep).unwrap_or(1),
        },
    ))
}
