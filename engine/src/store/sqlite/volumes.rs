//! Volumes in SQLite: whole records as JSON, looked up by id or by (unique) name.

use sqlx::Row;

use super::{SqliteStore, ms, parse_json};
use crate::error::{Error, Result};
use crate::model::Volume;

impl SqliteStore {
    pub(super) async fn insert_volume_row(&self, v: &Volume) -> Result<()> {
        let body = serde_json::to_string(v).map_err(|e| Error::Store(e.to_string()))?;
        sqlx::query("INSERT INTO volumes (id, name, body, created_at) VALUES (?, ?, ?, ?)")
            .bind(&v.id)
            .bind(&v.name)
            .bind(body)
            .bind(ms(v.created_at))
            .execute(&self.pool)
            .await
            .map_err(|e| match e.as_database_error() {
                Some(db) if db.is_unique_violation() => {
                    Error::Conflict(format!("a volume named {:?} already exists", v.name))
                }
                _ => e.into(),
            })?;
        Ok(())
    }

    pub(super) async fn update_volume_row(&self, v: &Volume) -> Result<()> {
        let body = serde_json::to_string(v).map_err(|e| Error::Store(e.to_string()))?;
        let done = sqlx::query("UPDATE volumes SET body = ? WHERE id = ?")
            .bind(body)
            .bind(&v.id)
            .execute(&self.pool)
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::VolumeNotFound(v.id.clone()));
        }
        Ok(())
    }

    pub(super) async fn volume_row(&self, id_or_name: &str) -> Result<Option<Volume>> {
        let row = sqlx::query("SELECT body FROM volumes WHERE id = ? OR name = ?")
            .bind(id_or_name)
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse_json(&r.try_get::<String, _>("body")?, "volumes.body"))
            .transpose()
    }

    pub(super) async fn volume_rows(&self) -> Result<Vec<Volume>> {
        let rows = sqlx::query("SELECT body FROM volumes ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse_json(&r.try_get::<String, _>("body")?, "volumes.body"))
            .collect()
    }

    pub(super) async fn delete_volume_row(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM volumes WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
