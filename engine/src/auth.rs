//! API keys: generation, strength rules, the first-start key, and verification.
//!
//! Only SHA-256 hashes of keys are stored, with a short public id, a name, the key's first
//! characters for display, and the times it was created, last used and revoked. On first start the
//! server generates a key, prints it once and writes it to `<data-dir>/api-key` (0600, atomically)
//! so the CLI on the same machine can use it; `PLATINUM_API_KEY` replaces that with a key of the
//! operator's choosing, and when it changes, the previous environment key is revoked.
//!
//! Keys come in two [`KeyFormat`]s: `pt_` + 40 letters and digits (about 238 bits), and `e2b_` +
//! 40 lowercase hex digits (160 bits), the only form E2B's SDKs accept. Keys an operator supplies
//! must pass [`check_strength`]. [`ApiKeys`] is the in-memory verification set: revocations take
//! effect in it at once.

use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use time::OffsetDateTime;

use crate::error::{Error, Result};
use crate::store::{ApiKeyRecord, Store};

/// Prefix of generated keys, so they are recognisable in configs and secret scanners.
pub const KEY_PREFIX: &str = "pt_";

/// Prefix of keys in E2B's form.
pub const E2B_KEY_PREFIX: &str = "e2b_";

/// File in the data dir holding the first-start key.
pub const KEY_FILE: &str = "api-key";

/// Name given to the key that comes from the `PLATINUM_API_KEY` environment variable; when that
/// variable holds a different key at the next start, live keys with this name are revoked.
pub const ENV_KEY_NAME: &str = "PLATINUM_API_KEY";

/// Name of the key the server generates on first start.
pub const DEFAULT_KEY_NAME: &str = "default";

/// Shortest operator-supplied key, in characters.
pub const MIN_KEY_LEN: usize = 32;

/// Longest accepted key, in characters.
pub const MAX_KEY_LEN: usize = 256;

/// Fewest distinct characters an operator-supplied key must contain.
pub const MIN_DISTINCT_CHARS: usize = 10;

/// Least estimated strength of an operator-supplied key, in bits.
pub const MIN_KEY_BITS: f64 = 128.0;

/// How many leading characters of a key are kept for display.
pub const DISPLAY_PREFIX_LEN: usize = 8;

/// Length of the random part of generated keys.
const KEY_BODY_LEN: usize = 40;

/// The form of a generated key.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum KeyFormat {
    /// `pt_` followed by 40 ASCII letters and digits.
    #[default]
    Platinum,
    /// `e2b_` followed by 40 lowercase hex digits: accepted by E2B's SDKs, which refuse any other
    /// form before sending a request.
    E2b,
}

impl KeyFormat {
    /// The format a key is in, judged by its prefix (operator-supplied keys count as Platinum's).
    pub fn of(key_or_prefix: &str) -> KeyFormat {
        if key_or_prefix.starts_with(E2B_KEY_PREFIX) {
            KeyFormat::E2b
        } else {
            KeyFormat::Platinum
        }
    }
}

/// A new random key in Platinum's form (`pt_` + 40 letters and digits).
pub fn generate_key() -> String {
    generate(KeyFormat::Platinum)
}

/// A new random key in `format`.
pub fn generate(format: KeyFormat) -> String {
    let (prefix, alphabet): (&str, &[u8]) = match format {
        KeyFormat::Platinum => (
            KEY_PREFIX,
            b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        ),
        KeyFormat::E2b => (E2B_KEY_PREFIX, b"0123456789abcdef"),
    };
    let mut rng = rand::rng();
    let body: String = (0..KEY_BODY_LEN)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect();
    format!("{prefix}{body}")
}

/// Hex SHA-256 of a key.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// The estimated strength of `key` in bits: its length times log2 of the alphabet formed by the
/// character classes it uses (lowercase 26, uppercase 26, digits 10, other printable ASCII 32).
pub fn estimated_bits(key: &str) -> f64 {
    let has = |f: fn(&u8) -> bool| key.as_bytes().iter().any(f);
    let pool = [
        (has(u8::is_ascii_lowercase), 26),
        (has(u8::is_ascii_uppercase), 26),
        (has(u8::is_ascii_digit), 10),
        (has(u8::is_ascii_punctuation), 32),
    ]
    .iter()
    .filter(|(present, _)| *present)
    .map(|(_, n)| n)
    .sum::<u32>();
    if pool == 0 {
        return 0.0;
    }
    key.len() as f64 * f64::from(pool).log2()
}

/// Checks an operator-supplied key (from `PLATINUM_API_KEY`, the key file or the API). The rule:
/// printable ASCII without spaces (it travels in HTTP headers), 32 to 256 characters, at least 10
/// distinct characters, and at least 128 bits by [`estimated_bits`]. `what` names the key in
/// the error, which never contains the key itself.
pub fn check_strength(key: &str, what: &str) -> Result<()> {
    let refuse = |why: String| {
        Err(Error::InvalidRequest(format!(
            "{what} is too weak: {why}; use a random key, e.g. `openssl rand -hex 32` \
             (at least {MIN_KEY_LEN} characters, {MIN_DISTINCT_CHARS} distinct, \
             {MIN_KEY_BITS} bits estimated from length x log2 of the character classes used)"
        )))
    };
    if !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(Error::InvalidRequest(format!(
            "{what} must be printable ASCII without spaces"
        )));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(Error::InvalidRequest(format!(
            "{what} is longer than {MAX_KEY_LEN} characters"
        )));
    }
    if key.len() < MIN_KEY_LEN {
        return refuse(format!("it has {} characters", key.len()));
    }
    let mut distinct: Vec<u8> = key.bytes().collect();
    distinct.sort_unstable();
    distinct.dedup();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return refuse(format!(
            "it has only {} distinct characters",
            distinct.len()
        ));
    }
    let bits = estimated_bits(key);
    if bits < MIN_KEY_BITS {
        return refuse(format!("it has about {bits:.0} bits"));
    }
    Ok(())
}

/// The characters of `key` kept for display.
pub fn display_prefix(key: &str) -> String {
    key.chars().take(DISPLAY_PREFIX_LEN).collect()
}

/// Now, to the millisecond (what the store keeps), so callers see the times the store will hold.
fn now_ms() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now - time::Duration::nanoseconds(i64::from(now.nanosecond() % 1_000_000))
}

/// A new record for `key` (not yet stored).
pub(crate) fn new_record(name: &str, key: &str) -> ApiKeyRecord {
    let id: String = {
        let mut rng = rand::rng();
        (0..12)
            .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
            .collect()
    };
    ApiKeyRecord {
        id,
        name: name.into(),
        hash: hash_key(key),
        prefix: display_prefix(key),
        created_at: now_ms(),
        last_used_at: None,
        revoked_at: None,
    }
}

/// Verifies API keys against the stored hashes of live keys.
pub struct ApiKeys {
    /// Hash -> id of every live key.
    live: RwLock<HashMap<String, String>>,
    /// Id -> last use not yet written to the store.
    used: Mutex<HashMap<String, OffsetDateTime>>,
}

/// The key the server starts with and whether it was just created.
pub struct InitialKey {
    /// The key itself.
    pub key: String,
    /// True when this start generated it (print it once).
    pub generated: bool,
}

impl ApiKeys {
    /// Loads the hashes of the live keys.
    pub async fn load(store: &dyn Store) -> Result<Self> {
        let live = store
            .api_keys()
            .await?
            .into_iter()
            .filter(|k| k.revoked_at.is_none())
            .map(|k| (k.hash, k.id))
            .collect();
        Ok(ApiKeys {
            live: RwLock::new(live),
            used: Mutex::new(HashMap::new()),
        })
    }

    /// True if `key` is a live key; notes its use (see [`ApiKeys::last_used`]).
    pub fn verify(&self, key: &str) -> bool {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return false;
        }
        let id = self
            .live
            .read()
            .expect("api key lock")
            .get(&hash_key(key))
            .cloned();
        match id {
            Some(id) => {
                self.used
                    .lock()
                    .expect("api key use lock")
                    .insert(id, now_ms());
                true
            }
            None => false,
        }
    }

    /// Uses noted since the last [`ApiKeys::flush_usage`] (id -> time).
    pub fn last_used(&self) -> HashMap<String, OffsetDateTime> {
        self.used.lock().expect("api key use lock").clone()
    }

    /// Writes the noted uses to the store (cheap: one row per key used since the last flush).
    pub async fn flush_usage(&self, store: &dyn Store) -> Result<()> {
        let used = std::mem::take(&mut *self.used.lock().expect("api key use lock"));
        for (id, at) in &used {
            if let Err(e) = store.touch_api_key(id, *at).await {
                // Keep them for the next flush.
                let mut pending = self.used.lock().expect("api key use lock");
                for (id, at) in used {
                    let slot = pending.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Stores `record` and makes its key valid at once.
    pub(crate) async fn insert(&self, store: &dyn Store, record: &ApiKeyRecord) -> Result<()> {
        store.insert_api_key(record).await?;
        self.live
            .write()
            .expect("api key lock")
            .insert(record.hash.clone(), record.id.clone());
        Ok(())
    }

    /// Revokes the live key `id` in the store and stops accepting it at once; false when it is
    /// not a live key.
    pub(crate) async fn revoke(&self, store: &dyn Store, id: &str) -> Result<bool> {
        let done = store.revoke_api_key(id, OffsetDateTime::now_utc()).await?;
        self.forget(id);
        Ok(done)
    }

    /// Rotation: revokes `old_id` and stores `new` in one transaction; false (nothing changed)
    /// when `old_id` is not a live key.
    pub(crate) async fn replace(
        &self,
        store: &dyn Store,
        old_id: &str,
        new: &ApiKeyRecord,
    ) -> Result<bool> {
        if !store
            .replace_api_key(old_id, new, OffsetDateTime::now_utc())
            .await?
        {
            return Ok(false);
        }
        let mut live = self.live.write().expect("api key lock");
        live.retain(|_, id| id != old_id);
        live.insert(new.hash.clone(), new.id.clone());
        Ok(true)
    }

    fn forget(&self, id: &str) {
        self.live
            .write()
            .expect("api key lock")
            .retain(|_, live_id| live_id != id);
    }

    /// The key to start with: `from_env` if given, else the one in `<data_dir>/api-key`, else a new
    /// one (stored and written to that file).
    ///
    /// - An environment key must pass [`check_strength`]; it is stored under [`ENV_KEY_NAME`], and
    ///   every other live key of that name (a previous environment key) is revoked. An environment
    ///   key that was revoked is refused: revocation is final.
    /// - A key file whose key was revoked is replaced by a new generated key.
    pub async fn initial(
        &self,
        store: &dyn Store,
        data_dir: &Path,
        from_env: Option<String>,
    ) -> Result<InitialKey> {
        if let Some(key) = from_env.filter(|k| !k.trim().is_empty()) {
            let key = key.trim().to_string();
            self.adopt(store, ENV_KEY_NAME, &key, ENV_KEY_NAME).await?;
            for old in store.api_keys().await? {
                if old.name == ENV_KEY_NAME
                    && old.revoked_at.is_none()
                    && old.hash != hash_key(&key)
                {
                    self.revoke(store, &old.id).await?;
                    tracing::warn!(id = %old.id, "revoked the previous PLATINUM_API_KEY");
                }
            }
            return Ok(InitialKey {
                key,
                generated: false,
            });
        }
        let path = data_dir.join(KEY_FILE);
        if let Ok(existing) = std::fs::read_to_string(&path) {
            let key = existing.trim().to_string();
            if !key.is_empty() {
                let stored = store
                    .api_keys()
                    .await?
                    .into_iter()
                    .find(|k| k.hash == hash_key(&key));
                match stored {
                    Some(k) if k.revoked_at.is_some() => {
                        tracing::warn!(
                            id = %k.id,
                            "the key in {} was revoked; generating a new one",
                            path.display()
                        );
                    }
                    _ => {
                        let what = format!("the key in {}", path.display());
                        self.adopt(store, DEFAULT_KEY_NAME, &key, &what).await?;
                        return Ok(InitialKey {
                            key,
                            generated: false,
                        });
                    }
                }
            }
        }
        let key = generate_key();
        self.insert(store, &new_record(DEFAULT_KEY_NAME, &key))
            .await?;
        platinum_hostagent::private_file::write(&path, format!("{key}\n").as_bytes())
            .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))?;
        Ok(InitialKey {
            key,
            generated: true,
        })
    }

    /// Makes sure `key` is a stored live key: accepted as is when it is already stored and live,
    /// refused when it was revoked, else checked for strength and stored under `name`.
    async fn adopt(&self, store: &dyn Store, name: &str, key: &str, what: &str) -> Result<()> {
        let hash = hash_key(key);
        let stored = store.api_keys().await?.into_iter().find(|k| k.hash == hash);
        match stored {
            Some(k) if k.revoked_at.is_some() => Err(Error::InvalidRequest(format!(
                "{what} (API key {}) was revoked; set a new key",
                k.id
            ))),
            Some(_) => Ok(()),
            None => {
                check_strength(key, what)?;
                self.insert(store, &new_record(name, key)).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::store::sqlite::SqliteStore;

    const ENV_KEY_A: &str = "env-key-A-0123456789abcdefghijklmnop";
    const ENV_KEY_B: &str = "env-key-B-qrstuvwxyz9876543210ABCDEF";

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
        assert_eq!(store.api_keys().await.unwrap().len(), 1);

        // A fresh process sees the same keys through the store.
        let reloaded = ApiKeys::load(&store).await.unwrap();
        assert!(reloaded.verify(&first.key));
    }

    #[tokio::test]
    async fn a_revoked_key_file_is_replaced_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::in_memory().await.unwrap();
        let keys = ApiKeys::load(&store).await.unwrap();
        let first = keys.initial(&store, dir.path(), None).await.unwrap();
        let id = store.api_keys().await.unwrap()[0].id.clone();
        assert!(keys.revoke(&store, &id).await.unwrap());
        assert!(!keys.verify(&first.key), "revocation is seen at once");
        let next = keys.initial(&store, dir.path(), None).await.unwrap();
        assert!(next.generated && next.key != first.key);
        assert!(keys.verify(&next.key) && !keys.verify(&first.key));
        let file = std::fs::read_to_string(dir.path().join(KEY_FILE)).unwrap();
        assert_eq!(file.trim(), next.key);
    }

    #[tokio::test]
    async fn env_key_is_accepted_and_a_changed_env_key_revokes_the_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::in_memory().await.unwrap();
        let keys = ApiKeys::load(&store).await.unwrap();
        let k = keys
            .initial(&store, dir.path(), Some(format!(" {ENV_KEY_A}\n")))
            .await
            .unwrap();
        assert!(!k.generated && k.key == ENV_KEY_A);
        assert!(keys.verify(ENV_KEY_A));
        assert!(!dir.path().join(KEY_FILE).exists());
        // The same key again: nothing changes.
        keys.initial(&store, dir.path(), Some(ENV_KEY_A.into()))
            .await
            .unwrap();
        assert_eq!(store.api_keys().await.unwrap().len(), 1);

        // A restart with another key: the old one stops working, in memory and in the store.
        let keys = ApiKeys::load(&store).await.unwrap();
        keys.initial(&store, dir.path(), Some(ENV_KEY_B.into()))
            .await
            .unwrap();
        assert!(keys.verify(ENV_KEY_B) && !keys.verify(ENV_KEY_A));
        let reloaded = ApiKeys::load(&store).await.unwrap();
        assert!(reloaded.verify(ENV_KEY_B) && !reloaded.verify(ENV_KEY_A));
        let stored = store.api_keys().await.unwrap();
        assert_eq!(stored.len(), 2);
        assert!(stored.iter().all(|k| k.name == ENV_KEY_NAME));
        assert_eq!(stored.iter().filter(|k| k.revoked_at.is_none()).count(), 1);

        // Going back to the revoked key is refused: revocation is final.
        let err = reloaded
            .initial(&store, dir.path(), Some(ENV_KEY_A.into()))
            .await
            .err()
            .expect("a revoked env key is refused");
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        assert!(err.to_string().contains("revoked"), "{err}");
        assert!(!err.to_string().contains(ENV_KEY_A), "{err}");
    }

    #[tokio::test]
    async fn weak_env_keys_are_refused_at_start() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::in_memory().await.unwrap();
        let keys = ApiKeys::load(&store).await.unwrap();
        for weak in ["my-secret", "test-key-from-env", &"a".repeat(64)] {
            let err = keys
                .initial(&store, dir.path(), Some(weak.into()))
                .await
                .err()
                .expect("weak key refused");
            assert_eq!(err.code(), ErrorCode::InvalidRequest);
            assert!(
                err.to_string().contains("PLATINUM_API_KEY is too weak"),
                "{err}"
            );
            assert!(!keys.verify(weak));
        }
        assert!(store.api_keys().await.unwrap().is_empty());
    }

    #[test]
    fn strength_rule() {
        // Too short, too few distinct characters, too little entropy, bad characters.
        assert!(check_strength("Ab1!Ab1!Ab1!", "k").is_err());
        assert!(check_strength(&"ab".repeat(20), "k").is_err());
        assert!(check_strength("0123456789012345678901234567890123", "k").is_err());
        assert!(check_strength("abcdefghij abcdefghij abcdefghijkl", "k").is_err());
        assert!(check_strength("abcdefghijklmnopqrstuvwxyzéabcdefgh", "k").is_err());
        assert!(check_strength(&"abcdefghij".repeat(30), "k").is_err());
        // 39 digits: 39 x log2(10) = 129.6 bits.
        assert!(check_strength("012345678901234567890123456789012345678", "k").is_ok());
        // A UUID without dashes, `openssl rand -hex 32`, and both generated forms pass.
        assert!(check_strength("3f2b9c0e8d7a41e6b5c4d3e2f1a09b8c", "k").is_ok());
        assert!(check_strength(&generate(KeyFormat::Platinum), "k").is_ok());
        assert!(check_strength(&generate(KeyFormat::E2b), "k").is_ok());
        assert!((estimated_bits("aA1!") - 4.0 * 94f64.log2()).abs() < 1e-9);
        assert_eq!(estimated_bits(""), 0.0);
    }

    #[test]
    fn generated_keys_have_their_form() {
        let e2b = generate(KeyFormat::E2b);
        let body = e2b.strip_prefix("e2b_").expect("e2b_ prefix");
        assert_eq!(body.len(), 40);
        assert!(body.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        assert_eq!(KeyFormat::of(&e2b), KeyFormat::E2b);
        let pt = generate_key();
        let body = pt.strip_prefix("pt_").expect("pt_ prefix");
        assert_eq!(body.len(), 40);
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(KeyFormat::of(&pt), KeyFormat::Platinum);
        assert_ne!(generate_key(), pt);
        assert_eq!(display_prefix(&pt), &pt[..8]);
    }
}
