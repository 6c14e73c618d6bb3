//! Revoked tokens: front ends that hand out self-contained signed tokens (Daytona's signed
//! preview links) revoke them here, so a revocation holds after a restart.
//!
//! Only a SHA-256 of each token is kept (in the store, and in memory for the per-request check),
//! with the token's own expiry: once that passes the token is refused anyway and its entry is
//! pruned. The front end verifies a token's signature before revoking it, so forged or unknown
//! tokens never take a place. The list is bounded: [`MAX_REVOKED_TOKENS`] live entries, after
//! which a revocation fails with `capacity_exhausted` rather than growing without end.

use std::collections::HashMap;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::store::Store;

/// Most revoked tokens kept at once (entries whose token has not expired yet).
pub const MAX_REVOKED_TOKENS: usize = 10_000;

/// The hex SHA-256 of a token, the form revocations are kept and looked up in.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The in-memory copy of the store's revoked tokens (hash -> expiry, Unix seconds).
#[derive(Default)]
pub(crate) struct RevokedTokens {
    entries: Mutex<HashMap<String, i64>>,
    /// Serialises revocations, so the capacity check and the insert are one step.
    writer: tokio::sync::Mutex<()>,
}

impl RevokedTokens {
    /// Loads the live revocations from the store (pruning expired ones there).
    pub(crate) async fn load(store: &dyn Store) -> Result<Self> {
        let entries = store.revoked_tokens(now_unix()).await?;
        Ok(RevokedTokens {
            entries: Mutex::new(entries.into_iter().collect()),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// Whether `hash` needs recording until `expires_at`: false when it is revoked that long
    /// already; `capacity_exhausted` when `cap` unexpired tokens are revoked. Prunes expired
    /// entries first.
    fn admit(&self, hash: &str, expires_at: i64, now: i64, cap: usize) -> Result<bool> {
        let mut entries = self.entries();
        entries.retain(|_, exp| *exp > now);
        match entries.get(hash) {
            Some(exp) if *exp >= expires_at => Ok(false),
            Some(_) => Ok(true),
            None if entries.len() >= cap => Err(Error::CapacityExhausted(format!(
                "{cap} unexpired tokens are revoked already; revoke more once some have \
                 expired, or rotate the signing secret"
            ))),
            None => Ok(true),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        // A panic while holding this lock cannot leave the map half-changed: recover it.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn valid_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Engine {
    /// Revokes a token, given as [`token_hash`], until `expires_at` (Unix seconds; the token's own
    /// expiry). `kind` says what it is (e.g. `daytona-signed-preview`). The caller must have
    /// verified the token is genuine. A token that has already expired needs no entry. Fails with
    /// `capacity_exhausted` when [`MAX_REVOKED_TOKENS`] unexpired tokens are revoked already.
    pub async fn revoke_token(&self, kind: &str, token_hash: &str, expires_at: i64) -> Result<()> {
        if !valid_hash(token_hash) {
            return Err(Error::InvalidRequest(
                "a token hash is 64 lowercase hex digits".into(),
            ));
        }
        let now = now_unix();
        if expires_at <= now {
            return Ok(());
        }
        let _writer = self.revoked_tokens.writer.lock().await;
        if !self
            .revoked_tokens
            .admit(token_hash, expires_at, now, MAX_REVOKED_TOKENS)?
        {
            return Ok(());
        }
        self.store
            .insert_revoked_token(token_hash, kind, expires_at)
            .await?;
        self.revoked_tokens
            .entries()
            .insert(token_hash.to_string(), expires_at);
        tracing::info!(kind, expires_at, "token revoked");
        Ok(())
    }

    /// Whether the token with this [`token_hash`] was revoked and has not expired yet.
    pub fn is_token_revoked(&self, token_hash: &str) -> bool {
        self.revoked_tokens
            .entries()
            .get(token_hash)
            .is_some_and(|exp| *exp > now_unix())
    }

    /// How many unexpired revocations are kept.
    pub fn revoked_token_count(&self) -> usize {
        let now = now_unix();
        self.revoked_tokens
            .entries()
            .values()
            .filter(|exp| **exp > now)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::store::sqlite::SqliteStore;

    #[tokio::test]
    async fn revocations_are_kept_by_hash_pruned_when_expired_and_reloaded() {
        let store = SqliteStore::in_memory().await.unwrap();
        let now = now_unix();
        let live = token_hash("live");
        store
            .insert_revoked_token(&live, "t", now + 60)
            .await
            .unwrap();
        store
            .insert_revoked_token(&token_hash("old"), "t", now - 1)
            .await
            .unwrap();
        let loaded = RevokedTokens::load(&store).await.unwrap();
        assert_eq!(loaded.entries().len(), 1, "the expired one is pruned");
        assert_eq!(loaded.entries().get(&live), Some(&(now + 60)));
        assert!(store.revoked_tokens(now).await.unwrap().len() == 1);
        assert!(valid_hash(&live) && !valid_hash("LIVE") && !valid_hash(&live[1..]));
    }

    #[test]
    fn the_list_is_bounded_and_expired_entries_make_room() {
        let r = RevokedTokens::default();
        let now = 1_000;
        r.entries().insert(token_hash("a"), now + 10);
        r.entries().insert(token_hash("b"), now + 20);
        // Full of live entries: a new one is refused with a typed error.
        let full = r.admit(&token_hash("c"), now + 30, now, 2).unwrap_err();
        assert_eq!(full.code(), ErrorCode::CapacityExhausted);
        // Known ones are not new entries: nothing to do, or a later expiry to record.
        assert!(!r.admit(&token_hash("a"), now + 5, now, 2).unwrap());
        assert!(r.admit(&token_hash("a"), now + 50, now, 2).unwrap());
        // Once "a" has expired it is pruned, and "c" fits.
        assert!(r.admit(&token_hash("c"), now + 30, now + 10, 2).unwrap());
        assert_eq!(r.entries().len(), 1);
    }
}
