//! The key ring that signs and verifies edge tokens.
//!
//! Keys live in the store (`edge_keys`), so tokens outlive a restart. The newest key signs; every
//! key in the ring verifies, so a rotation leaves tokens already handed out valid until their
//! key is deleted, which revokes every token it signed at once. Secrets are 32 random bytes and
//! are never answered by the API (only [`EdgeKeyInfo`]).
//!
//! **At rest** a secret is sealed with the data directory's vault ([`crate::vault`], the key of
//! secrets; associated data `edge-key:<kid>`, so a sealed key moved onto another row does not
//! open): the store never holds it in clear. A key stored in clear by an older version
//! ([`StoredSecret::Clear`]) is sealed when the ring loads, and its clear bytes wiped.

use std::sync::RwLock;

use rand::Rng;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::{Error, Result};
use crate::store::Store;
use crate::vault::Vault;

/// One signing key as the store keeps it.
#[derive(Clone)]
pub struct EdgeKeyRecord {
    /// Key id (`ek` + 12 lowercase alphanumerics), carried in every token it signs.
    pub kid: String,
    /// The HMAC secret.
    pub secret: Vec<u8>,
    /// When it was made; the newest key signs.
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for EdgeKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeKeyRecord")
            .field("kid", &self.kid)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl EdgeKeyRecord {
    /// A fresh random key made now.
    pub fn generate() -> EdgeKeyRecord {
        let mut rng = rand::rng();
        let kid: String = (0..12)
            .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
            .collect();
        let mut secret = vec![0u8; 32];
        rng.fill(&mut secret[..]);
        EdgeKeyRecord {
            kid: format!("ek{kid}"),
            secret,
            created_at: OffsetDateTime::now_utc(),
        }
    }
}

/// A key's secret as the store holds it.
pub enum StoredSecret {
    /// Sealed by the vault (see [`seal`]).
    Sealed(Vec<u8>),
    /// In clear: written before keys were sealed; sealed at the next load.
    Clear(Vec<u8>),
}

/// One signing key as the store holds it.
pub struct StoredEdgeKey {
    /// Key id.
    pub kid: String,
    /// Its secret, sealed (or not yet).
    pub secret: StoredSecret,
    /// When it was made.
    pub created_at: OffsetDateTime,
}

/// The associated data a key's secret is sealed with.
fn aad(kid: &str) -> String {
    format!("edge-key:{kid}")
}

/// `key`'s secret sealed for the store.
pub fn seal(vault: &Vault, key: &EdgeKeyRecord) -> Result<Vec<u8>> {
    vault.seal(
        &aad(&key.kid),
        &zeroize::Zeroizing::new(hex::encode(&key.secret)),
    )
}

/// The key a stored row holds, opened with `vault`.
fn open(vault: &Vault, kid: &str, sealed: &[u8]) -> Result<Vec<u8>> {
    let text = vault.open_value(&aad(kid), sealed)?;
    hex::decode(text.as_str()).map_err(|_| Error::Store(format!("edge key {kid} opens to no key")))
}

/// A signing key as the API shows it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EdgeKeyInfo {
    /// Key id, carried in every token it signs.
    pub kid: String,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Whether it signs new tokens (the newest key); the others only verify.
    pub active: bool,
}

/// The keys in memory, oldest first, mirrored from the store.
#[derive(Default)]
pub(crate) struct KeyRing {
    keys: RwLock<Vec<EdgeKeyRecord>>,
    /// Serialises changes (store write, then memory), so the two never disagree.
    pub(crate) writer: tokio::sync::Mutex<()>,
}

impl KeyRing {
    /// Loads the ring from the store, opening each secret with `vault`; a key found in clear
    /// is sealed in the store first.
    pub(crate) async fn load(store: &dyn Store, vault: &Vault) -> Result<KeyRing> {
        let mut keys = Vec::new();
        let mut sealed_now = 0;
        for row in store.edge_keys().await? {
            let (secret, in_clear) = match row.secret {
                StoredSecret::Sealed(sealed) => (open(vault, &row.kid, &sealed)?, false),
                StoredSecret::Clear(secret) => (secret, true),
            };
            let key = EdgeKeyRecord {
                kid: row.kid,
                secret,
                created_at: row.created_at,
            };
            if in_clear {
                store.seal_edge_key(&key.kid, &seal(vault, &key)?).await?;
                sealed_now += 1;
            }
            keys.push(key);
        }
        if sealed_now > 0 {
            tracing::info!(keys = sealed_now, "edge keys kept in clear were sealed");
        }
        keys.sort_by_key(|k| k.created_at);
        Ok(KeyRing {
            keys: RwLock::new(keys),
            writer: Default::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<EdgeKeyRecord>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<EdgeKeyRecord>> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The key that signs (the newest), if there is one.
    pub(crate) fn signer(&self) -> Option<EdgeKeyRecord> {
        self.read().last().cloned()
    }

    /// The secret of key `kid`, if the ring has it.
    pub(crate) fn secret(&self, kid: &str) -> Option<Vec<u8>> {
        self.read()
            .iter()
            .find(|k| k.kid == kid)
            .map(|k| k.secret.clone())
    }

    /// Every key, oldest first, as the API shows them.
    pub(crate) fn infos(&self) -> Vec<EdgeKeyInfo> {
        let keys = self.read();
        let last = keys.len().saturating_sub(1);
        keys.iter()
            .enumerate()
            .map(|(i, k)| EdgeKeyInfo {
                kid: k.kid.clone(),
                created_at: k.created_at,
                active: i == last,
            })
            .collect()
    }

    /// Stores a new key (sealed with `vault`) and makes it the signer. Hold `writer`.
    pub(crate) async fn add(
        &self,
        store: &dyn Store,
        vault: &Vault,
        key: EdgeKeyRecord,
    ) -> Result<EdgeKeyInfo> {
        store
            .insert_edge_key(&key.kid, &seal(vault, &key)?, key.created_at)
            .await?;
        let info = EdgeKeyInfo {
            kid: key.kid.clone(),
            created_at: key.created_at,
            active: true,
        };
        self.write().push(key);
        Ok(info)
    }

    /// Deletes key `kid` from the store and the ring. Hold `writer`.
    pub(crate) async fn remove(&self, store: &dyn Store, kid: &str) -> Result<()> {
        if !store.delete_edge_key(kid).await? {
            return Err(Error::EdgeKeyNotFound(kid.to_string()));
        }
        self.write().retain(|k| k.kid != kid);
        Ok(())
    }
}
