//! `/api/volumes`: Daytona volumes over the engine's named persistent volumes (an ext4
//! filesystem on the host that outlives the sandboxes mounting it).
//!
//! | Daytona | engine |
//! |---|---|
//! | `POST /volumes` `{name}` (200 `VolumeDto`; 409 for a name in use) | `create_volume` (the engine's default size) |
//! | `GET /volumes` (200 `[VolumeDto]`) | `list_volumes`, oldest first |
//! | `GET /volumes/{volumeId}`, `GET /volumes/by-name/{name}` (200, 404) | `get_volume` (either takes an id or a name) |
//! | `DELETE /volumes/{volumeId}` (200; 409 while a sandbox has it mounted) | `delete_volume` |
//! | `volumes: [{volumeId, mountPath}]` of `POST /sandbox` | `CreateSandbox.volumes`, read-write |
//!
//! `volume.get(name, create=True)` is a get by name and, on its 404, a create. A volume is
//! `ready` as soon as it exists (the create returns once its filesystem is made), so the SDKs
//! never wait on `pending_create`. A volume is attached read-write to one sandbox at a time:
//! mounting one another sandbox still has is a 409 (delete that sandbox first; its volumes are
//! detached as it goes). `subpath` (mounting one S3 prefix of a Daytona volume) is refused:
//! Platinum mounts the whole filesystem.

use axum::Json;
use axum::extract::State;
use platinum_engine::model::{CreateVolume, Volume, VolumeMount};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::error::{DJson, DPath, DResult, DaytonaError};

/// The `VolumeDto` object.
#[derive(Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct VolumeDto {
    id: String,
    name: String,
    organization_id: &'static str,
    state: &'static str,
    created_at: String,
    updated_at: String,
    /// Not tracked: always null.
    last_used_at: Option<String>,
    /// Required by the SDKs, nullable: a volume that exists has no error.
    error_reason: Option<String>,
}

/// Renders a volume (its only change after creation is where it is attached, so it was last
/// updated when it was created).
fn dto(v: &Volume) -> VolumeDto {
    let created = v.created_at.format(&Rfc3339).unwrap_or_default();
    VolumeDto {
        id: v.id.clone(),
        name: v.name.clone(),
        organization_id: "local",
        state: "ready",
        created_at: created.clone(),
        updated_at: created,
        last_used_at: None,
        error_reason: None,
    }
}

/// Body of `POST /volumes` (`CreateVolume`).
#[derive(Debug, Deserialize)]
pub struct CreateVolumeRequest {
    name: String,
}

/// `GET /volumes`.
pub async fn list_volumes(State(ctx): State<Ctx>) -> DResult<Json<Vec<VolumeDto>>> {
    let all = ctx.engine.list_volumes().await?;
    Ok(Json(all.iter().map(dto).collect()))
}

/// `POST /volumes`: 200 with the volume, `ready`.
pub async fn create_volume(
    State(ctx): State<Ctx>,
    DJson(req): DJson<CreateVolumeRequest>,
) -> DResult<Json<VolumeDto>> {
    let volume = ctx
        .engine
        .create_volume(CreateVolume {
            name: req.name,
            size_mib: None,
        })
        .await?;
    tracing::info!(volume = %volume.id, name = %volume.name, "daytona volume created");
    Ok(Json(dto(&volume)))
}

/// `GET /volumes/{volumeId}` and `GET /volumes/by-name/{name}`.
pub async fn get_volume(
    State(ctx): State<Ctx>,
    DPath(id_or_name): DPath<String>,
) -> DResult<Json<VolumeDto>> {
    Ok(Json(dto(&ctx.engine.get_volume(&id_or_name).await?)))
}

/// `DELETE /volumes/{volumeId}`: 200, no body.
pub async fn delete_volume(State(ctx): State<Ctx>, DPath(id): DPath<String>) -> DResult<()> {
    ctx.engine.delete_volume(&id).await?;
    tracing::info!(volume = %id, "daytona volume deleted");
    Ok(())
}

/// One entry of a sandbox create's `volumes` (`SandboxVolume`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxVolume {
    /// The volume's id or name.
    volume_id: String,
    /// Where it is mounted in the sandbox.
    mount_path: String,
    /// One S3 prefix of the volume: not supported.
    #[serde(default)]
    subpath: Option<String>,
}

/// `volumes` of a sandbox create as the engine's mounts, every volume read-write; a
/// `subpath` is refused. Ids, names and paths are checked by the engine.
pub(crate) fn mounts(requested: &[SandboxVolume]) -> DResult<Vec<VolumeMount>> {
    requested
        .iter()
        .map(|m| {
            if m.subpath.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(DaytonaError::bad_request(format!(
                    "volume {}: subpath is not supported by Platinum (a volume is mounted whole)",
                    m.volume_id
                )));
            }
            Ok(VolumeMount {
                volume: m.volume_id.clone(),
                path: m.mount_path.clone(),
                readonly: false,
            })
        })
        .collect()
}

/// The `volumes` of a sandbox's DTO: `[{volumeId, mountPath}]` of what is attached to it.
pub(crate) async fn attached(ctx: &Ctx, sandbox_id: &str) -> DResult<Vec<Value>> {
    Ok(attached_of(&ctx.engine.list_volumes().await?, sandbox_id))
}

fn attached_of(volumes: &[Volume], sandbox_id: &str) -> Vec<Value> {
    volumes
        .iter()
        .flat_map(|v| {
            v.attachments
                .iter()
                .filter(|a| a.sandbox_id == sandbox_id)
                .map(|a| json!({ "volumeId": v.id, "mountPath": a.path }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;
    use platinum_engine::model::VolumeAttachment;

    fn volume(id: &str, name: &str, attached: &[(&str, &str)]) -> Volume {
        Volume {
            id: id.into(),
            name: name.into(),
            size_mib: 1024,
            attachments: attached
                .iter()
                .map(|(sandbox, path)| VolumeAttachment {
                    sandbox_id: (*sandbox).into(),
                    path: (*path).into(),
                    readonly: false,
                })
                .collect(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn volumes_render_every_field_the_sdks_require() {
        let v = volume("vol0123456789abcdef", "data", &[]);
        assert_eq!(
            serde_json::to_value(dto(&v)).unwrap(),
            json!({
                "id": "vol0123456789abcdef",
                "name": "data",
                "organizationId": "local",
                "state": "ready",
                "createdAt": "1970-01-01T00:00:00Z",
                "updatedAt": "1970-01-01T00:00:00Z",
                "lastUsedAt": null,
                // Required (nullable) by the Python client.
                "errorReason": null,
            })
        );
    }

    #[test]
    fn sandbox_volumes_become_read_write_engine_mounts() {
        // What `CreateSandboxFromSnapshotParams(volumes=[VolumeMount(...)])` sends.
        let requested: Vec<SandboxVolume> = serde_json::from_value(json!([
            {"volumeId": "vol0123456789abcdef", "mountPath": "/data"},
            {"volumeId": "cache", "mountPath": "/cache", "subpath": ""},
        ]))
        .unwrap();
        assert_eq!(
            mounts(&requested).unwrap(),
            vec![
                VolumeMount {
                    volume: "vol0123456789abcdef".into(),
                    path: "/data".into(),
                    readonly: false,
                },
                VolumeMount {
                    volume: "cache".into(),
                    path: "/cache".into(),
                    readonly: false,
                },
            ]
        );
        assert!(mounts(&[]).unwrap().is_empty());
    }

    #[test]
    fn subpaths_are_refused() {
        let requested: Vec<SandboxVolume> = serde_json::from_value(json!([
            {"volumeId": "data", "mountPath": "/data", "subpath": "users/alice"},
        ]))
        .unwrap();
        let e = mounts(&requested).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(e.message.contains("subpath"), "{}", e.message);
    }

    #[test]
    fn a_sandboxs_attachments_are_its_volumes() {
        let all = [
            volume("vol1", "data", &[("sb1", "/data")]),
            volume("vol2", "logs", &[("sb2", "/logs")]),
        ];
        assert_eq!(
            attached_of(&all, "sb1"),
            vec![json!({"volumeId": "vol1", "mountPath": "/data"})]
        );
        assert!(attached_of(&all, "sb3").is_empty());
    }
}
