//! The volume tools: persistent volumes an agent mounts into running sandboxes at a path of its
//! choosing (created on first use), so data outlives any one sandbox. Each maps to one
//! engine command; failures are tool results.

use platinum_engine::model::{AttachVolume, CreateVolume, Volume, VolumeAttachment};
use rmcp::{Json, tool, tool_router};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::PlatinumMcp;
use crate::error::ToolError;
use crate::tools::{Parameters, rfc3339};

/// Arguments of `attach_volume`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolumeArgs {
    /// Volume id or name.
    pub volume: String,
    /// Sandbox id (running).
    pub sandbox_id: String,
    /// Absolute mount path in the sandbox, e.g. /data.
    pub path: String,
    /// Mount read-only (several sandboxes may share a volume read-only).
    #[serde(default)]
    pub readonly: bool,
    /// Size in MiB when the volume does not exist yet and is created (16-1048576; default
    /// 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub size_mib: Option<u64>,
}

/// Arguments of `detach_volume`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachVolumeArgs {
    /// Volume id or name.
    pub volume: String,
    /// Sandbox id.
    pub sandbox_id: String,
}

/// A volume, as the tools report it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VolumeInfo {
    /// Id.
    pub id: String,
    /// Name; pass it (or the id) as `volume`.
    pub name: String,
    /// Size, MiB.
    pub size_mib: u64,
    /// Sandboxes it is mounted in.
    pub attachments: Vec<VolumeAttachmentInfo>,
    /// When it was created (RFC 3339).
    pub created_at: String,
}

/// Where a volume is mounted.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VolumeAttachmentInfo {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Mount path.
    pub path: String,
    /// Mounted read-only.
    pub readonly: bool,
}

impl From<VolumeAttachment> for VolumeAttachmentInfo {
    fn from(a: VolumeAttachment) -> Self {
        VolumeAttachmentInfo {
            sandbox_id: a.sandbox_id,
            path: a.path,
            readonly: a.readonly,
        }
    }
}

impl From<Volume> for VolumeInfo {
    fn from(v: Volume) -> Self {
        VolumeInfo {
            id: v.id,
            name: v.name,
            size_mib: v.size_mib,
            attachments: v.attachments.into_iter().map(Into::into).collect(),
            created_at: rfc3339(v.created_at),
        }
    }
}

/// Result of `list_volumes`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct VolumeList {
    /// Oldest first.
    pub volumes: Vec<VolumeInfo>,
}

#[tool_router(router = volume_router, vis = "pub(crate)")]
impl PlatinumMcp {
    /// List volumes and where they are mounted.
    #[tool(annotations(read_only_hint = true, open_world_hint = false))]
    async fn list_volumes(&self) -> Result<Json<VolumeList>, ToolError> {
        let volumes = self.engine.list_volumes().await?;
        Ok(Json(VolumeList {
            volumes: volumes.into_iter().map(Into::into).collect(),
        }))
    }

    /// Mount a persistent volume (created on first use) in a running sandbox at a path. Its
    /// files outlive the sandbox; attach it to the next one to get them back.
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn attach_volume(
        &self,
        args: Parameters<AttachVolumeArgs>,
    ) -> Result<Json<VolumeInfo>, ToolError> {
        let a = args.get()?;
        match self.engine.get_volume(&a.volume).await {
            Ok(_) => {}
            Err(platinum_engine::Error::VolumeNotFound(_)) => {
                self.engine
                    .create_volume(CreateVolume {
                        name: a.volume.clone(),
                        size_mib: a.size_mib,
                    })
                    .await?;
            }
            Err(e) => return Err(e.into()),
        }
        let volume = self
            .engine
            .attach_volume(
                &a.volume,
                AttachVolume {
                    sandbox_id: a.sandbox_id,
                    path: a.path,
                    readonly: a.readonly,
                },
            )
            .await?;
        Ok(Json(volume.into()))
    }

    /// Unmount a volume from a sandbox (its data stays in the volume).
    #[tool(annotations(destructive_hint = false, open_world_hint = false))]
    async fn detach_volume(
        &self,
        args: Parameters<DetachVolumeArgs>,
    ) -> Result<Json<VolumeInfo>, ToolError> {
        let a = args.get()?;
        let volume = self.engine.detach_volume(&a.volume, &a.sandbox_id).await?;
        Ok(Json(volume.into()))
    }
}
