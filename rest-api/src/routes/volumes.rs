//! Volumes: `/v1/volumes`. A volume is a named ext4 filesystem that outlives sandboxes; it is
//! attached and mounted at create (`volumes` in the create body) or while a sandbox runs.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platinum_engine::Engine;
use platinum_engine::model::{AttachVolume, CreateVolume, DetachVolume, Volume, VolumeList};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

use crate::error::{ApiJson, ApiResult, ErrorBody};

/// The `{id}` of a volume.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct VolumePath {
    /// Volume id or name.
    pub id: String,
}

/// Create a volume.
///
/// An empty ext4 filesystem of `size_mib` (sparse on the host), its root owned by the
/// templates' `user` account.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", operation_id = "createVolume",
    request_body = CreateVolume,
    responses(
        (status = 201, description = "Created", body = Volume),
        (status = 400, description = "Invalid name or size", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 409, description = "A volume of that name exists", body = ErrorBody)))]
pub async fn create_volume(
    State(engine): State<Arc<Engine>>,
    ApiJson(req): ApiJson<CreateVolume>,
) -> ApiResult<(StatusCode, Json<Volume>)> {
    Ok((StatusCode::CREATED, Json(engine.create_volume(req).await?)))
}

/// List volumes.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", operation_id = "listVolumes",
    responses(
        (status = 200, description = "Volumes, oldest first, with their attachments", body = VolumeList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_volumes(State(engine): State<Arc<Engine>>) -> ApiResult<Json<VolumeList>> {
    Ok(Json(VolumeList {
        volumes: engine.list_volumes().await?,
    }))
}

/// Get a volume.
#[utoipa::path(get, path = "/v1/volumes/{id}", tag = "volumes", operation_id = "getVolume",
    params(VolumePath),
    responses(
        (status = 200, description = "The volume", body = Volume),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody)))]
pub async fn get_volume(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<VolumePath>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(engine.get_volume(&p.id).await?))
}

/// Delete a volume and its data.
#[utoipa::path(delete, path = "/v1/volumes/{id}", tag = "volumes", operation_id = "deleteVolume",
    params(VolumePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 409, description = "Attached to a sandbox", body = ErrorBody)))]
pub async fn delete_volume(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<VolumePath>,
) -> ApiResult<StatusCode> {
    engine.delete_volume(&p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attach a volume to a sandbox.
///
/// A running sandbox gets the disk hot-added and mounted at `path` (created if missing) before
/// this returns; a stopped one mounts it at its next start. A volume attached read-write is
/// attached nowhere else; read-only attachments may share one. Snapshots, forks and archives of
/// a sandbox are refused while it has volumes (pause to disk keeps them).
#[utoipa::path(post, path = "/v1/volumes/{id}/attach", tag = "volumes", operation_id = "attachVolume",
    params(VolumePath),
    request_body = AttachVolume,
    responses(
        (status = 200, description = "Attached (and mounted when the sandbox runs)", body = Volume),
        (status = 400, description = "Invalid mount path", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such volume or sandbox", body = ErrorBody),
        (status = 409, description = "Attached elsewhere, the path is taken, the sandbox is neither running nor stopped, or the mount failed", body = ErrorBody)))]
pub async fn attach_volume(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<VolumePath>,
    ApiJson(req): ApiJson<AttachVolume>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(engine.attach_volume(&p.id, req).await?))
}

/// Detach a volume from a sandbox.
///
/// A running sandbox has it flushed, unmounted and hot-removed (refused while a process keeps
/// the mount busy); a stopped one loses it from its disks.
#[utoipa::path(post, path = "/v1/volumes/{id}/detach", tag = "volumes", operation_id = "detachVolume",
    params(VolumePath),
    request_body = DetachVolume,
    responses(
        (status = 200, description = "Detached", body = Volume),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such volume", body = ErrorBody),
        (status = 409, description = "Not attached there, busy, or the sandbox is neither running nor stopped", body = ErrorBody)))]
pub async fn detach_volume(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<VolumePath>,
    ApiJson(req): ApiJson<DetachVolume>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(engine.detach_volume(&p.id, &req.sandbox_id).await?))
}
