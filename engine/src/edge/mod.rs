//! The product's edge proxy, engine side: who may reach a sandbox port from outside, and
//! waking the sandbox for it. The HTTP part (host and path routing, cookies, the relay) is
//! `frontend-http/src/edge.rs`; the commands are in [`crate::commands::edge`].
//!
//! - [`token`]: the signed token format (HMAC-SHA256, key id, sandbox, port, expiry).
//! - [`keys`]: the key ring (in the store, sealed by the vault; the newest signs, all verify;
//!   rotate, delete).
//! - Exposures: ports opened per sandbox (`public` ones need no token), kept in the store
//!   (`edge_exposures`) and mirrored in memory for the per-request check.

pub mod keys;
pub mod token;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::error::Result;
use crate::store::Store;

/// A port of a sandbox opened at the edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Exposure {
    /// The sandbox.
    pub sandbox_id: String,
    /// The port inside it.
    pub port: u16,
    /// Reachable without a token (anyone who knows the URL); otherwise a token is needed.
    pub public: bool,
    /// When it was exposed (or last changed).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
}

/// A freshly minted edge token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EdgeToken {
    /// The token: send it as `X-Platinum-Edge-Token`, or once as `?platinum_token=` (the edge
    /// then sets a cookie and redirects).
    pub token: String,
    /// The key that signed it.
    pub kid: String,
    /// The sandbox it reaches.
    pub sandbox_id: String,
    /// The port inside that sandbox.
    pub port: u16,
    /// When it stops working.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: OffsetDateTime,
}

/// The edge's state in the engine.
#[derive(Default)]
pub(crate) struct Edge {
    pub(crate) keys: keys::KeyRing,
    /// (sandbox, port) -> public, mirrored from `edge_exposures`.
    pub(crate) exposures: RwLock<HashMap<(String, u16), Exposure>>,
    /// Sandboxes a request is waking right now: later requests wait on the same lock and find
    /// the sandbox running, so concurrent hits resume it once.
    pub(crate) waking: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises exposure changes (store, then memory).
    pub(crate) writer: tokio::sync::Mutex<()>,
}

impl Edge {
    /// Loads keys (opened with `vault`) and exposures from the store.
    pub(crate) async fn load(store: &dyn Store, vault: &crate::vault::Vault) -> Result<Edge> {
        let keys = keys::KeyRing::load(store, vault).await?;
        let exposures = store
            .edge_exposures()
            .await?
            .into_iter()
            .map(|e| ((e.sandbox_id.clone(), e.port), e))
            .collect();
        Ok(Edge {
            keys,
            exposures: RwLock::new(exposures),
            ..Default::default()
        })
    }

    pub(crate) fn exposures_read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<(String, u16), Exposure>> {
        self.exposures.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn exposures_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<(String, u16), Exposure>> {
        self.exposures.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock that serialises waking sandbox `id`.
    pub(crate) fn wake_lock(&self, id: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.waking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(id.to_string())
            .or_default()
            .clone()
    }

    /// Drops wake locks nobody holds or waits on.
    pub(crate) fn forget_idle_wakes(&self) {
        self.waking
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, m| Arc::strong_count(m) > 1);
    }
}
