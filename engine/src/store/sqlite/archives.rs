//! Signed archive manifests in SQLite, one per archived sandbox.

use sqlx::Row;

use super::{SqliteStore, parse_json};
use crate::error::{Error, Result};
use crate::snapshots::archive::SignedArchive;

impl SqliteStore {
    pub(super) async fn put_archive_row(&self, archive: &SignedArchive) -> Result<()> {
        let body = serde_json::to_string(archive).map_err(|e| Error::Store(e.to_string()))?;
        sqlx::query(
            "INSERT INTO archives (sandbox_id, body, created_at) VALUES (?, ?, ?) \
             ON CONFLICT (sandbox_id) DO UPDATE SET body = excluded.body, \
             created_at = excluded.created_at",
        )
        .bind(&archive.manifest.sandbox_id)
        .bind(body)
        .bind(time::OffsetDateTime::now_utc().unix_timestamp())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn archive_row(&self, sandbox_id: &str) -> Result<Option<SignedArchive>> {
        let row = sqlx::query("SELECT body FROM archives WHERE sandbox_id = ?")
            .bind(sandbox_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse_json(&r.try_get::<String, _>("body")?, "archives.body"))
            .transpose()
    }

    pub(super) async fn delete_archive_row(&self, sandbox_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM archives WHERE sandbox_id = ?")
            .bind(sandbox_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
