//! The edge proxy's rows in SQLite: signing keys (`edge_keys`, secrets sealed by the vault;
//! `legacy_secret` holds the hex of a key from before 0016 until the engine seals it) and exposed
//! ports (`edge_exposures`).

use sqlx::Row;
use time::OffsetDateTime;

use super::{SqliteStore, from_ms, ms};
use crate::edge::Exposure;
use crate::edge::keys::{StoredEdgeKey, StoredSecret};
use crate::error::{Error, Result};

impl SqliteStore {
    pub(super) async fn edge_key_rows(&self) -> Result<Vec<StoredEdgeKey>> {
        let rows = sqlx::query(
            "SELECT kid, sealed, legacy_secret, created_at FROM edge_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let sealed: Option<Vec<u8>> = r.try_get("sealed")?;
                let legacy: Option<String> = r.try_get("legacy_secret")?;
                let secret = match (sealed, legacy) {
                    (Some(sealed), _) => StoredSecret::Sealed(sealed),
                    (None, Some(hex)) => StoredSecret::Clear(hex::decode(hex).map_err(|e| {
                        Error::Store(format!("corrupt edge_keys.legacy_secret: {e}"))
                    })?),
                    (None, None) => return Err(Error::Store("edge key without a secret".into())),
                };
                Ok(StoredEdgeKey {
                    kid: r.try_get("kid")?,
                    secret,
                    created_at: from_ms(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub(super) async fn insert_edge_key_row(
        &self,
        kid: &str,
        sealed: &[u8],
        created_at: OffsetDateTime,
    ) -> Result<()> {
        sqlx::query("INSERT INTO edge_keys (kid, sealed, created_at) VALUES (?, ?, ?)")
            .bind(kid)
            .bind(sealed)
            .bind(ms(created_at))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Seals a key kept in clear: the update runs with secure delete on (the freed cell is
    /// zeroed), then the WAL is checkpointed and truncated so no frame keeps the old page.
    pub(super) async fn seal_edge_key_row(&self, kid: &str, sealed: &[u8]) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query("PRAGMA secure_delete = ON")
            .execute(&mut *conn)
            .await?;
        let done = sqlx::query(
            "UPDATE edge_keys SET sealed = ?, legacy_secret = NULL \
             WHERE kid = ? AND legacy_secret IS NOT NULL",
        )
        .bind(sealed)
        .bind(kid)
        .execute(&mut *conn)
        .await;
        sqlx::query("PRAGMA secure_delete = OFF")
            .execute(&mut *conn)
            .await?;
        done?;
        // Best effort: readers holding an older snapshot make it stop short; the WAL's frames
        // are overwritten as it wraps anyway.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut *conn)
            .await
        {
            tracing::debug!(error = %e, "checkpoint after sealing an edge key");
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Engine;
    use crate::model::SandboxState;
    use crate::store::Store;
    use std::path::Path;
    use std::sync::Arc;

    async fn engine(db: &Path, data_dir: &Path) -> crate::error::Result<Arc<Engine>> {
        let store = Arc::new(SqliteStore::open(db).await?);
        let config = crate::config::EngineConfig {
            data_dir: Some(data_dir.to_path_buf()),
            ..Default::default()
        };
        Engine::new(config, store, Arc::new(crate::testing::NoVms)).await
    }

    /// Every byte of the database's files (main, WAL, shared memory).
    fn db_bytes(db: &Path) -> Vec<u8> {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| std::fs::read(format!("{}{suffix}", db.display())).ok())
            .flatten()
            .collect()
    }

    fn holds(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[tokio::test]
    async fn edge_keys_are_sealed_at_rest_and_a_clear_one_is_sealed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("platinum.db");
        // Keys an older version kept in clear (several: where a sealed row lands on its page
        // decides whether it covers the old cell; the freed cells left are what secure delete
        // wipes).
        let legacy = [(); 6].map(|_| crate::edge::keys::EdgeKeyRecord::generate());
        {
            let store = SqliteStore::open(&db).await.unwrap();
            for (at, key) in legacy.iter().enumerate() {
                sqlx::query(
                    "INSERT INTO edge_keys (kid, legacy_secret, created_at) VALUES (?, ?, ?)",
                )
                .bind(&key.kid)
                .bind(hex::encode(&key.secret))
                .bind(at as i64)
                .execute(&store.pool)
                .await
                .unwrap();
            }
            store
                .insert_sandbox(&crate::testing::sandbox("edgesbx1", SandboxState::Running))
                .await
                .unwrap();
            store.pool.close().await;
        }
        for key in &legacy {
            assert!(holds(&db_bytes(&db), hex::encode(&key.secret).as_bytes()));
        }

        let e = engine(&db, dir.path()).await.unwrap();
        let old = e.mint_edge_token("edgesbx1", 8000, 600).await.unwrap();
        assert_eq!(
            old.kid, legacy[5].kid,
            "the newest clear key signs, sealed now"
        );
        let rotated = e.rotate_edge_key().await.unwrap();
        let new = e.mint_edge_token("edgesbx1", 8000, 600).await.unwrap();
        assert_eq!(new.kid, rotated.kid);
        let fresh = e.edge.keys.secret(&rotated.kid).unwrap();
        let bytes = db_bytes(&db);
        for secret in legacy.iter().map(|k| &k.secret).chain([&fresh]) {
            assert!(!holds(&bytes, secret), "a key's bytes in the database");
            assert!(
                !holds(&bytes, hex::encode(secret).as_bytes()),
                "a key's hex"
            );
        }
        let rows = e.store.edge_keys().await.unwrap();
        assert_eq!(rows.len(), legacy.len() + 1);
        assert!(
            rows.iter()
                .all(|r| matches!(r.secret, StoredSecret::Sealed(_)))
        );
        drop(e);

        // After a restart both tokens verify; under another data directory's key the sealed
        // keys do not open, and the engine says so rather than starting without them.
        let again = engine(&db, dir.path()).await.unwrap();
        for t in [&old, &new] {
            assert!(again.verify_edge_token(&t.token, "edgesbx1", 8000).is_ok());
        }
        drop(again);
        let elsewhere = tempfile::tempdir().unwrap();
        let err = engine(&db, elsewhere.path()).await.err().unwrap();
        assert_eq!(err.code(), crate::error::ErrorCode::Internal);
    }
}
