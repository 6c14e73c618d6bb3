//! API keys: generation, the first-start key, and verification.
//!
//! Only SHA-256 hashes of keys are stored. On first start the server generates a key, prints it
//! once and writes it to `<data-dir>/api-key` (mode 0600) so the CLI on the same machine can use it;
//! `PLATINUM_API_KEY` replaces that with a key of the operator's choosing.

use rand::Rng;
use sha2::{Digest, Sha256};
use std::collections::HashSet;
use std::path::Path;
use std::sync::RwLock;

use crate::error::{Error, Result};
use crate::store::{ApiKeyRecord, Store};

/// Prefix of generated keys, so they are recognisable in configs and secret scanners.
pub const KEY_PREFIX: &str = "pt_";

/// File in the data dir holding the first-start key.
pub const KEY_FILE: &str = "api-key";

/// Verifies API keys against the stored hashes.
pub struct ApiKeys {
    hashes: RwLock<HashSet<String>>,
}

/// The key the server starts with and whether it was just created.
pub struct InitialKey {
    /// The key itself.
    pub key: String,
    /// True when this start generated it (print it once).
    pub generated: bool,
}

/// A new random key.
pub fn generate_key() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    let body: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{KEY_PREFIX}{body}")
}

/// Hex SHA-256 of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Loads the stored hashes.
    pub async fn load(store: &dyn Store) -> Result<Self> {
        let hashes = store
            .api_keys()
            .await?
            .into_iter()
            .map(|k| k.hash)
            .collect();
        Ok(ApiKeys {
            hashes: RwLock::new(hashes),
        })
    }

    /// True if `key` is valid.
    pub fn verify(&self, key: &str) -> bool {
        !key.is_empty()
            && self
                .hashes
                .read()
                .expect("api key lock")
                .contains(&hash_key(key))
    }

    /// Stores a key (idempotent).
    pub async fn add(&self, store: &dyn Store, name: &str, key: &str) -> Result<()> {
        let hash = hash_key(key);
        if self.hashes.read().expect("api key lock").contains(&hash) {
            return Ok(());
        }
        let id = hash[..12].to_string();
        store
            .insert_api_key(&ApiKeyRecord {
                id,
                name: name.into(),
                hash: hash.clone(),
            })
            .await?;
        self.hashes.write().expect("api key lock").insert(hash);
        Ok(())
    }

    /// The key to start with: `from_env` if given, else the one in `<data_dir>/api-key`, else a new
    /// one (stored and written to that file).
    pub async fn initial(
        &self,
        store: &dyn Store,
        data_dir: &Path,
        from_env: Option<String>,
    ) -> Result<InitialKey> {
        if let Some(key) = from_env.filter(|k| !k.trim().is_empty()) {
            let key = key.trim().to_string();
            self.add(store, "PLATINUM_API_KEY", &key).await?;
            return Ok(InitialKey {
                key,
                generated: false,
            });
        }
        let path = data_dir.join(KEY_FILE);
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let key = existing.trim().to_string();
            if !key.is_empty() {
                self.add(store, "default", &key).await?;
                return Ok(InitialKey {
                    key,
                    generated: false,
                });
            }
        }
        let key = generate_key();
        self.add(store, "default", &key).await?;
        write_private(&path, &key)
            .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))?;
        Ok(InitialKey {
            key,
            generated: true,
        })
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn first_start_generates_persists_and_reuses_a_key() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::in_memory().await.unwrap();
        let keys = ApiKeys::load(&store).await.unwrap();
        let first = keys.initial(&store, dir.path(), None).await.unwrap();
        assert!(first.generated && first.key.starts_with(KEY_PREFIX));
        assert!(keys.verify(&first.key));
        assert!(!keys.verify("pt_wrong") && !keys.verify(""));
        let again = keys.initial(&store, dir.path(), None).await.unwrap();
        assert!(!again.generated);
        assert_eq!(again.key, first.key);
        let mode = std::fs::metadata(dir.path().join(KEY_FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);

        // A fresh process sees the same keys through the store.
        let reloaded = ApiKeys::load(&store).await.unwrap();
        assert!(reloaded.verify(&first.key));
    }

    #[tokio::test]
    async fn env_key_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::in_memory().await.unwrap();
        let keys = ApiKeys::load(&store).await.unwrap();
        let k = keys
            .initial(&store, dir.path(), Some("my-secret".into()))
            .await
            .unwrap();
        assert!(!k.generated);
        assert!(keys.verify("my-secret"));
        assert!(!dir.path().join(KEY_FILE).exists());
    }
}
