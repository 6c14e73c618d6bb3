//! The edge proxy's rows in SQLite: signing keys (`edge_keys`, secrets hex-encoded) and exposed
//! ports (`edge_exposures`).

use sqlx::Row;

use super::{SqliteStore, from_ms, ms};
use crate::edge::Exposure;
use crate::edge::keys::EdgeKeyRecord;
use crate::error::{Error, Result};

impl SqliteStore {
    pub(super) async fn edge_key_rows(&self) -> Result<Vec<EdgeKeyRecord>> {
        let rows =
            sqlx::query("SELECT kid, secret, created_at FROM edge_keys ORDER BY created_at, kid")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| {
                let secret: String = r.try_get("secret")?;
                Ok(EdgeKeyRecord {
                    kid: r.try_get("kid")?,
                    secret: hex::decode(secret)
                        .map_err(|e| Error::Store(format!("corrupt edge_keys.secret: {e}")))?,
                    created_at: from_ms(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub(super) async fn insert_edge_key_row(&self, key: &EdgeKeyRecord) -> Result<()> {
        sqlx::query("INSERT INTO edge_keys (kid, secret, created_at) VALUES (?, ?, ?)")
            .bind(&key.kid)
            .bind(hex::encode(&key.secret))
            .bind(ms(key.created_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub(super) async fn delete_edge_key_row(&self, kid: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM edge_keys WHERE kid = ?")
            .bind(kid)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn edge_exposure_rows(&self) -> Result<Vec<Exposure>> {
        let rows = sqlx::query("SELECT sandbox_id, port, public, created_at FROM edge_exposures")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let port: i64 = r.try_get("port")?;
                Ok(Exposure {
                    sandbox_id: r.try_get("sandbox_id")?,
                    port: u16::try_from(port)
                        .map_err(|_| Error::Store(format!("corrupt edge_exposures.port {port}")))?,
                    public: r.try_get::<i64, _>("public")? != 0,
                    created_at: from_ms(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub(super) async fn put_edge_exposure_row(&self, e: &Exposure) -> Result<()> {
        sqlx::query(
            "INSERT INTO edge_exposures (sandbox_id, port, public, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (sandbox_id, port) DO UPDATE SET public = excluded.public, \
             created_at = excluded.created_at",
        )
        .bind(&e.sandbox_id)
        .bind(i64::from(e.port))
        .bind(i64::from(e.public))
        .bind(ms(e.created_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub(super) async fn delete_edge_exposure_row(
        &self,
        sandbox_id: &str,
        port: u16,
    ) -> Result<bool> {
        let done = sqlx::query("DELETE FROM edge_exposures WHERE sandbox_id = ? AND port = ?")
            .bind(sandbox_id)
            .bind(i64::from(port))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub(super) async fn delete_edge_exposure_rows(&self, sandbox_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM edge_exposures WHERE sandbox_id = ?")
            .bind(sandbox_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
