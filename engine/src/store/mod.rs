//! The state store: the single source of truth for sandboxes, API keys and the audit trail.
//!
//! [`Store`] is what the engine needs; [`sqlite::SqliteStore`] (embedded) is the only
//! implementation today. A PostgreSQL implementation for multi-host deployments is planned, not yet
//! written; it would implement the same trait, so keep SQL that is specific to one database inside
//! its implementation.

pub mod sqlite;

use async_trait::async_trait;

use crate::builds::model::{BuildLogEntry, BuildStatus, CustomTemplate, TemplateBuild};
use crate::error::Result;
use crate::model::{
    BackupPolicy, EgressPolicy, ListQuery, Page, Pool, Sandbox, SandboxState, Secret, Snapshot,
    SnapshotKind, Volume,
};
use crate::snapshots::archive::SignedArchive;

/// A stored API key (only its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Key id (not secret).
    pub id: String,
    /// Human label.
    pub name: String,
    /// Hex SHA-256 of the key.
    pub hash: String,
    /// The key's first characters, for display (empty for keys stored before prefixes existed).
    pub prefix: String,
    /// When it was created (millisecond precision).
    pub created_at: time::OffsetDateTime,
    /// When it was last used, as far as the store knows.
    pub last_used_at: Option<time::OffsetDateTime>,
    /// When it was revoked; `None` while it is live.
    pub revoked_at: Option<time::OffsetDateTime>,
}

/// A sandbox holds secret `secret_id`'s placeholder in variable `env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretGrant {
    /// The sandbox.
    pub sandbox_id: String,
    /// The environment variable holding the placeholder.
    pub env: String,
    /// The secret.
    pub secret_id: String,
}

/// Persistence the engine needs.
#[async_trait]
pub trait Store: Send + Sync {
    /// Inserts a new sandbox.
    async fn insert_sandbox(&self, sandbox: &Sandbox) -> Result<()>;
    /// Replaces a sandbox's row.
    async fn update_sandbox(&self, sandbox: &Sandbox) -> Result<()>;
    /// Records activity without touching anything else of the row.
    async fn touch_sandbox(&self, id: &str, at_unix_ms: i64) -> Result<()>;
    /// One sandbox, whatever its state.
    async fn get_sandbox(&self, id: &str) -> Result<Option<Sandbox>>;
    /// The sandbox that is not deleted and carries this name.
    async fn get_sandbox_by_name(&self, name: &str) -> Result<Option<Sandbox>>;
    /// A page of sandboxes.
    async fn list_sandboxes(&self, query: &ListQuery) -> Result<Page>;
    /// Sandboxes in any of these states (for lifecycle sweeps and reconciliation).
    async fn sandboxes_in_states(&self, states: &[SandboxState]) -> Result<Vec<Sandbox>>;
    /// Appends to a sandbox's audit trail.
    async fn append_event(
        &self,
        sandbox_id: &str,
        kind: &str,
        detail: &serde_json::Value,
    ) -> Result<()>;
    /// A sandbox's audit trail, oldest first: (unix ms, kind, detail).
    async fn events(&self, sandbox_id: &str) -> Result<Vec<(i64, String, serde_json::Value)>>;
    /// Records a revoked token by its hex SHA-256 until `expires_at` (Unix seconds); recording
    /// one again keeps the later expiry.
    async fn insert_revoked_token(&self, hash: &str, kind: &str, expires_at: i64) -> Result<()>;
    /// Deletes revoked tokens that expired at or before `now` (Unix seconds) and returns the
    /// others as (hash, expires_at).
    async fn revoked_tokens(&self, now: i64) -> Result<Vec<(String, i64)>>;
    /// Stores an API key hash.
    async fn insert_api_key(&self, key: &ApiKeyRecord) -> Result<()>;
    /// All API keys, revoked ones included, oldest first.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>>;
    /// Marks a live key revoked; false when there is no such live key.
    async fn revoke_api_key(&self, id: &str, at: time::OffsetDateTime) -> Result<bool>;
    /// In one transaction: revokes the live key `old_id` and stores `new` (a rotation). False,
    /// with nothing changed, when `old_id` is not a live key.
    async fn replace_api_key(
        &self,
        old_id: &str,
        new: &ApiKeyRecord,
        at: time::OffsetDateTime,
    ) -> Result<bool>;
    /// Records a key's last use (never moves it backwards).
    async fn touch_api_key(&self, id: &str, at: time::OffsetDateTime) -> Result<()>;

    /// Inserts a snapshot; `ready = false` while its directory is being written.
    async fn insert_snapshot(&self, snapshot: &Snapshot, ready: bool) -> Result<()>;

    /// Marks a snapshot ready, with its final size and timings.
    async fn finish_snapshot(&self, snapshot: &Snapshot) -> Result<()>;

    /// A ready snapshot by id or, failing that, by name.
    async fn get_snapshot(&self, id_or_name: &str) -> Result<Option<Snapshot>>;

    /// Ready snapshots, oldest first, optionally of one sandbox and of one kind.
    async fn list_snapshots(
        &self,
        sandbox_id: Option<&str>,
        kind: Option<SnapshotKind>,
    ) -> Result<Vec<Snapshot>>;

    /// Snapshots whose directory was never finished (the server died while writing them).
    async fn unready_snapshots(&self) -> Result<Vec<Snapshot>>;

    /// Removes a snapshot's row.
    async fn delete_snapshot(&self, id: &str) -> Result<()>;

    /// Inserts a warm pool (`ready`, `starting` and `error` are the engine's, not stored).
    async fn insert_pool(&self, pool: &Pool) -> Result<()>;

    /// Changes a pool's size; false when there is no such pool.
    async fn resize_pool(&self, id: &str, size: u32) -> Result<bool>;

    /// Removes a pool's row (its sandboxes are the engine's to delete); false when none.
    async fn delete_pool(&self, id: &str) -> Result<bool>;

    /// Every pool, oldest first.
    async fn list_pools(&self) -> Result<Vec<Pool>>;

    /// Inserts a sandbox that waits in pool `pool_id`: not listed to callers until claimed.
    async fn insert_pooled_sandbox(&self, sandbox: &Sandbox, pool_id: &str) -> Result<()>;

    /// The sandboxes waiting in pool `pool_id`, in any state but `deleted`, oldest first.
    async fn pooled_sandboxes(&self, pool_id: &str) -> Result<Vec<Sandbox>>;

    /// Claims a running sandbox of pool `pool_id` for a caller: in one transaction it leaves the
    /// pool and gets what `claim` sets (the caller's name, environment, metadata, timeout,
    /// lifecycle). `None` when the pool has no running sandbox. On PostgreSQL this is a
    /// `SELECT … FOR UPDATE SKIP LOCKED` and an `UPDATE` in one transaction.
    async fn claim_pooled(
        &self,
        pool_id: &str,
        claim: &(dyn for<'s> Fn(&'s mut Sandbox) + Send + Sync),
    ) -> Result<Option<Sandbox>>;

    /// Inserts or replaces (by name) a custom template.
    async fn put_template(&self, template: &CustomTemplate) -> Result<()>;

    /// Every custom template, by name.
    async fn custom_templates(&self) -> Result<Vec<CustomTemplate>>;

    /// Removes a custom template's row; false when there is none.
    async fn delete_template(&self, name: &str) -> Result<bool>;

    /// Inserts or replaces (by id) a template build, with its log once it ended.
    async fn put_build(&self, build: &TemplateBuild, log: &[BuildLogEntry]) -> Result<()>;

    /// A template build and its stored log.
    async fn get_build(&self, id: &str) -> Result<Option<(TemplateBuild, Vec<BuildLogEntry>)>>;

    /// Template builds in one status, oldest first.
    async fn builds_in(&self, status: BuildStatus) -> Result<Vec<TemplateBuild>>;

    /// Inserts or replaces the signed archive manifest of a sandbox.
    async fn put_archive(&self, archive: &SignedArchive) -> Result<()>;

    /// A sandbox's signed archive manifest, if it has one.
    async fn get_archive(&self, sandbox_id: &str) -> Result<Option<SignedArchive>>;

    /// Removes a sandbox's archive manifest (none is fine).
    async fn delete_archive(&self, sandbox_id: &str) -> Result<()>;

    /// Keeps a backup's signed chunk list (its snapshot is `manifest.backup_snapshot`).
    async fn put_backup(&self, archive: &SignedArchive) -> Result<()>;

    /// A backup's signed chunk list, if its upload finished.
    async fn get_backup(&self, snapshot_id: &str) -> Result<Option<SignedArchive>>;

    /// Removes a backup's chunk list (none is fine).
    async fn delete_backup(&self, snapshot_id: &str) -> Result<()>;

    /// Sets (`Some`) or clears sandbox `sandbox_id`'s backup schedule.
    async fn set_backup_policy(&self, sandbox_id: &str, policy: Option<BackupPolicy>)
    -> Result<()>;

    /// Sandbox `sandbox_id`'s backup schedule.
    async fn get_backup_policy(&self, sandbox_id: &str) -> Result<Option<BackupPolicy>>;

    /// Every backup schedule, by sandbox.
    async fn backup_policies(&self) -> Result<Vec<(String, BackupPolicy)>>;

    /// Every edge signing key, its secret as stored (sealed, or in clear from an older version).
    async fn edge_keys(&self) -> Result<Vec<crate::edge::keys::StoredEdgeKey>>;

    /// Adds edge signing key `kid`, its secret `sealed` by the vault.
    async fn insert_edge_key(
        &self,
        kid: &str,
        sealed: &[u8],
        created_at: time::OffsetDateTime,
    ) -> Result<()>;

    /// Replaces the clear secret of edge key `kid` with its `sealed` form, wiping the clear
    /// bytes from the database file.
    async fn seal_edge_key(&self, kid: &str, sealed: &[u8]) -> Result<()>;

    /// Deletes edge key `kid`; false when there was none.
    async fn delete_edge_key(&self, kid: &str) -> Result<bool>;

    /// Every exposed port of every sandbox.
    async fn edge_exposures(&self) -> Result<Vec<crate::edge::Exposure>>;

    /// Adds or replaces the exposure of (sandbox, port).
    async fn put_edge_exposure(&self, exposure: &crate::edge::Exposure) -> Result<()>;

    /// Removes the exposure of (sandbox, port); false when there was none.
    async fn delete_edge_exposure(&self, sandbox_id: &str, port: u16) -> Result<bool>;

    /// Removes every exposure of a sandbox.
    async fn delete_edge_exposures(&self, sandbox_id: &str) -> Result<()>;

    /// Sets (`Some`) or removes sandbox `sandbox_id`'s egress policy.
    async fn set_egress_policy(
        &self,
        sandbox_id: &str,
        policy: Option<&EgressPolicy>,
    ) -> Result<()>;

    /// Sandbox `sandbox_id`'s egress policy, if one was set.
    async fn get_egress_policy(&self, sandbox_id: &str) -> Result<Option<EgressPolicy>>;

    /// Every egress policy set, with its sandbox's id.
    async fn egress_policies(&self) -> Result<Vec<(String, EgressPolicy)>>;

    /// Inserts a new volume; a taken name is [`crate::Error::Conflict`].
    async fn insert_volume(&self, volume: &Volume) -> Result<()>;

    /// Replaces a volume's record (by id).
    async fn update_volume(&self, volume: &Volume) -> Result<()>;

    /// A volume by id or name.
    async fn get_volume(&self, id_or_name: &str) -> Result<Option<Volume>>;

    /// Every volume, oldest first.
    async fn list_volumes(&self) -> Result<Vec<Volume>>;

    /// Removes a volume's record; false when there is none.
    async fn delete_volume(&self, id: &str) -> Result<bool>;

    /// Inserts a secret with its sealed value; a taken name is [`crate::Error::Conflict`].
    async fn insert_secret(&self, secret: &Secret, sealed: &[u8]) -> Result<()>;

    /// Replaces a secret's record, and its sealed value when one is given.
    async fn update_secret(&self, secret: &Secret, sealed: Option<&[u8]>) -> Result<()>;

    /// A secret by id or name, with its sealed value.
    async fn get_secret(&self, id_or_name: &str) -> Result<Option<(Secret, Vec<u8>)>>;

    /// Every secret, oldest first.
    async fn list_secrets(&self) -> Result<Vec<Secret>>;

    /// Removes a secret's row; false when there is none.
    async fn delete_secret(&self, id: &str) -> Result<bool>;

    /// Replaces sandbox `sandbox_id`'s grants (variable → secret id) in one transaction.
    async fn set_sandbox_secrets(
        &self,
        sandbox_id: &str,
        grants: &std::collections::BTreeMap<String, String>,
    ) -> Result<()>;

    /// Grants, of one sandbox and/or of one secret (`None`: any).
    async fn secret_grants(
        &self,
        sandbox_id: Option<&str>,
        secret_id: Option<&str>,
    ) -> Result<Vec<SecretGrant>>;
}
