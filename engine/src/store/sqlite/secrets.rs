//! Secrets in SQLite: the answered record as JSON beside the sealed value (`secrets`), and
//! which sandbox holds which secret's placeholder in which variable (`sandbox_secrets`).

use sqlx::Row;
use std::collections::BTreeMap;

use super::{SqliteStore, ms, parse_json};
use crate::error::{Error, Result};
use crate::model::Secret;
use crate::store::SecretGrant;

impl SqliteStore {
    pub(super) async fn insert_secret_row(&self, s: &Secret, sealed: &[u8]) -> Result<()> {
        let body = serde_json::to_string(s).map_err(|e| Error::Store(e.to_string()))?;
        sqlx::query(
            "INSERT INTO secrets (id, name, body, sealed, created_at) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(&s.id)
        .bind(&s.name)
        .bind(body)
        .bind(sealed)
        .bind(ms(s.created_at))
        .execute(&self.pool)
        .await
        .map_err(|e| match e.as_database_error() {
            Some(db) if db.is_unique_violation() => {
                Error::Conflict(format!("a secret named {:?} already exists", s.name))
            }
            _ => e.into(),
        })?;
        Ok(())
    }

    pub(super) async fn update_secret_row(&self, s: &Secret, sealed: Option<&[u8]>) -> Result<()> {
        let body = serde_json::to_string(s).map_err(|e| Error::Store(e.to_string()))?;
        let done =
            sqlx::query("UPDATE secrets SET body = ?, sealed = COALESCE(?, sealed) WHERE id = ?")
                .bind(body)
                .bind(sealed)
                .bind(&s.id)
                .execute(&self.pool)
                .await?;
        if done.rows_affected() == 0 {
            return Err(Error::SecretNotFound(s.id.clone()));
        }
        Ok(())
    }

    pub(super) async fn secret_row(&self, id_or_name: &str) -> Result<Option<(Secret, Vec<u8>)>> {
        let row = sqlx::query("SELECT body, sealed FROM secrets WHERE id = ? OR name = ?")
            .bind(id_or_name)
            .bind(id_or_name)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let secret = parse_json(&r.try_get::<String, _>("body")?, "secrets.body")?;
            Ok((secret, r.try_get::<Vec<u8>, _>("sealed")?))
        })
        .transpose()
    }

    pub(super) async fn secret_rows(&self) -> Result<Vec<Secret>> {
        let rows = sqlx::query("SELECT body FROM secrets ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse_json(&r.try_get::<String, _>("body")?, "secrets.body"))
            .collect()
    }

    pub(super) async fn delete_secret_row(&self, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM secrets WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn set_sandbox_secret_rows(
        &self,
        sandbox_id: &str,
        grants: &BTreeMap<String, String>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM sandbox_secrets WHERE sandbox_id = ?")
            .bind(sandbox_id)
            .execute(&mut *tx)
            .await?;
        for (env, secret_id) in grants {
            sqlx::query(
                "INSERT INTO sandbox_secrets (sandbox_id, env, secret_id) VALUES (?, ?, ?)",
            )
            .bind(sandbox_id)
            .bind(env)
            .bind(secret_id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn secret_grant_rows(
        &self,
        sandbox_id: Option<&str>,
        secret_id: Option<&str>,
    ) -> Result<Vec<SecretGrant>> {
        let rows = sqlx::query(
            "SELECT sandbox_id, env, secret_id FROM sandbox_secrets \
             WHERE (?1 IS NULL OR sandbox_id = ?1) AND (?2 IS NULL OR secret_id = ?2) \
             ORDER BY sandbox_id, env",
        )
        .bind(sandbox_id)
        .bind(secret_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(SecretGrant {
                    sandbox_id: r.try_get("sandbox_id")?,
                    env: r.try_get("env")?,
                    secret_id: r.try_get("secret_id")?,
                })
            })
            .collect()
    }
}
