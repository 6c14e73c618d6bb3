//! The snapshot tools: take and list snapshots, restore one into a new sandbox, fork a sandbox,
//! and checkpoints an agent can roll the same sandbox back to (take one before a risky step,
//! roll back if it went wrong). Each maps to one engine command; failures are tool results.

use platinum_engine::model::{CreateSandbox, CreateSnapshot, ForkRequest, Sandbox, Snapshot};
use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PlatinumMcp;
use crate::error::ToolError;
use crate::tools::{Parameters, SandboxArgs, rfc3339};

/// Arguments of `snapshot_sandbox`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnapshotArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Unique name to restore it by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub name: Option<String>,
}

/// Arguments of `list_snapshots`.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListSnapshotsArgs {
    /// Only snapshots of this sandbox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub sandbox_id: Option<String>,
}

/// Arguments of `restore_snapshot`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreArgs {
    /// Snapshot id or name.
    pub snapshot: String,
    /// Seconds until the new sandbox is deleted (default 300; 0 = never).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub timeout_secs: Option<u64>,
}

/// Arguments of `fork_sandbox`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Copies, 1-20 (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub count: Option<u32>,
}

/// Arguments of `rollback`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Checkpoint id (from `checkpoint`).
    pub checkpoint: String,
}

/// A snapshot or checkpoint, as the tools report it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotInfo {
    /// Id; pass it as `snapshot` or `checkpoint`.
    pub id: String,
    /// Name, if given.
    pub name: Option<String>,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    /// When (RFC 3339).
    pub created_at: String,
    /// Bytes on disk.
    pub size_bytes: u64,
    /// How long the sandbox was paused to take it, ms.
    pub paused_ms: u64,
}

impl From<Snapshot> for SnapshotInfo {
    fn from(s: Snapshot) -> Self {
        SnapshotInfo {
            id: s.id,
            name: s.name,
            sandbox_id: s.sandbox_id,
            created_at: rfc3339(s.created_at),
            size_bytes: s.size_bytes,
            paused_ms: s.timings.paused_ms,
        }
    }
}

/// Result of `list_snapshots`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SnapshotList {
    /// Oldest first.
    pub snapshots: Vec<SnapshotInfo>,
}

/// A sandbox a snapshot tool made or changed (get_sandbox has the rest).
#[derive(Debug, Serialize, JsonSchema)]
pub struct SandboxRef {
    /// Id; pass it as `sandbox_id`.
    pub id: String,
    /// State (`running`).
    pub state: String,
}

impl From<Sandbox> for SandboxRef {
    fn from(s: Sandbox) -> Self {
        SandboxRef {
            id: s.id,
            state: s.state.to_string(),
        }
    }
}

/// Result of `fork_sandbox`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Forked {
    /// The copies, running.
    pub sandboxes: Vec<SandboxRef>,
    /// How long the source was paused, ms.
    pub source_paused_ms: u64,
}

#[tool_router(router = snapshot_router, vis = "pub(crate)")]
impl PlatinumMcp {
    /// Snapshot a sandbox (memory, processes, disk; signed). It keeps running. Restore with
    /// restore_snapshot.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn snapshot_sandbox(
        &self,
        args: Parameters<SnapshotArgs>,
    ) -> Result<Json<SnapshotInfo>, ToolError> {
        let a = args.get()?;
        let snap = self
            .engine
            .create_snapshot(&a.sandbox_id, CreateSnapshot { name: a.name })
            .await?;
        Ok(Json(snap.into()))
    }

    /// List snapshots, oldest first.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_snapshots(
        &self,
        args: Parameters<ListSnapshotsArgs>,
    ) -> Result<Json<SnapshotList>, ToolError> {
        let a = args.get()?;
        let list = self.engine.list_snapshots(a.sandbox_id.as_deref()).await?;
        Ok(Json(SnapshotList {
            snapshots: list.into_iter().map(Into::into).collect(),
        }))
    }

    /// Create a new sandbox from a snapshot: its processes continue where they were.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn restore_snapshot(
        &self,
        args: Parameters<RestoreArgs>,
    ) -> Result<Json<SandboxRef>, ToolError> {
        let a = args.get()?;
        let sandbox = self
            .engine
            .create_sandbox(CreateSandbox {
                snapshot: Some(a.snapshot),
                timeout_secs: a.timeout_secs,
                ..Default::default()
            })
            .await?;
        Ok(Json(sandbox.into()))
    }

    /// Copy a running sandbox (count 1-20): each copy has its memory and disk as of now.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn fork_sandbox(&self, args: Parameters<ForkArgs>) -> Result<Json<Forked>, ToolError> {
        let a = args.get()?;
        let count = a.count.unwrap_or(1);
        let forked = self
            .engine
            .fork_sandbox(&a.sandbox_id, ForkRequest { count, name: None })
            .await?;
        Ok(Json(Forked {
            sandboxes: forked.sandboxes.into_iter().map(Into::into).collect(),
            source_paused_ms: forked.source_paused_ms,
        }))
    }

    /// Checkpoint a sandbox before a risky step; rollback undoes everything after it.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn checkpoint(
        &self,
        args: Parameters<SandboxArgs>,
    ) -> Result<Json<SnapshotInfo>, ToolError> {
        let a = args.get()?;
        Ok(Json(self.engine.checkpoint(&a.sandbox_id).await?.into()))
    }

    /// Put a sandbox back to a checkpoint: memory, processes and files as they were.
    #[tool(annotations(destructive_hint = true, open_world_hint = false))]
    async fn rollback(
        &self,
        args: Parameters<RollbackArgs>,
    ) -> Result<Json<SandboxRef>, ToolError> {
        let a = args.get()?;
        let sandbox = self.engine.rollback(&a.sandbox_id, &a.checkpoint).await?;
        Ok(Json(sandbox.into()))
    }
}
