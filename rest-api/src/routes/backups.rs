//! Continuous backup: a sandbox's schedule (`/v1/sandboxes/{id}/backup`), a backup taken now
//! (`/v1/sandboxes/{id}/backups`) and the backups themselves (`/v1/backups`), which outlive
//! their sandbox and restore as new sandboxes.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platinum_engine::Engine;
use platinum_engine::model::{
    Backup, BackupList, BackupPolicy, BackupStatus, CreateSandbox, Sandbox,
};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

use super::SandboxPath;
use crate::error::{ApiJson, ApiJsonOrDefault, ApiQuery, ApiResult, ErrorBody};

/// The `{id}` of a backup.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BackupPath {
    /// Backup id (`bkup…`).
    pub id: String,
}

/// Filters of the backup list.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct BackupFilter {
    /// Only this sandbox's backups (also after it was deleted).
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

/// A sandbox's backup schedule and its backups.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/backup", tag = "backups", operation_id = "getBackupStatus",
    params(SandboxPath),
    responses(
        (status = 200, description = "Schedule and backups", body = BackupStatus),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn backup_status(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<BackupStatus>> {
    Ok(Json(engine.backup_status(&p.id).await?))
}

/// Set a sandbox's continuous backup.
///
/// While the sandbox runs, a backup every `interval_secs` (the first at once unless a backup
/// is younger than that); the newest `keep` are kept.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/backup", tag = "backups", operation_id = "setBackupPolicy",
    params(SandboxPath),
    request_body = BackupPolicy,
    responses(
        (status = 200, description = "The schedule is set", body = BackupStatus),
        (status = 400, description = "Interval or count out of bounds", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "The sandbox is deleted", body = ErrorBody)))]
pub async fn set_backup_policy(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(policy): ApiJson<BackupPolicy>,
) -> ApiResult<Json<BackupStatus>> {
    Ok(Json(engine.set_backup_policy(&p.id, Some(policy)).await?))
}

/// End a sandbox's continuous backup (its backups stay).
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/backup", tag = "backups", operation_id = "clearBackupPolicy",
    params(SandboxPath),
    responses(
        (status = 200, description = "No schedule any more", body = BackupStatus),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn clear_backup_policy(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<BackupStatus>> {
    Ok(Json(engine.set_backup_policy(&p.id, None).await?))
}

/// Back a sandbox up now.
///
/// Its vCPUs stop only while memory, device state and disks are saved (`timings.paused_ms`);
/// then what the object store lacks is uploaded while it runs on.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/backups", tag = "backups", operation_id = "createBackup",
    params(SandboxPath),
    responses(
        (status = 201, description = "Backed up", body = Backup),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running or paused, or volumes attached", body = ErrorBody),
        (status = 502, description = "The object store is unreachable (`object_store_unavailable`)", body = ErrorBody),
        (status = 507, description = "No room for the snapshot", body = ErrorBody)))]
pub async fn create_backup(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<(StatusCode, Json<Backup>)> {
    Ok((
        StatusCode::CREATED,
        Json(engine.backup_sandbox(&p.id).await?),
    ))
}

/// List backups.
#[utoipa::path(get, path = "/v1/backups", tag = "backups", operation_id = "listBackups",
    params(BackupFilter),
    responses(
        (status = 200, description = "Backups, oldest first", body = BackupList),
        (status = 400, description = "Unknown query parameter", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_backups(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<BackupFilter>,
) -> ApiResult<Json<BackupList>> {
    Ok(Json(BackupList {
        backups: engine.list_backups(q.sandbox_id.as_deref()).await?,
    }))
}

/// Get a backup.
#[utoipa::path(get, path = "/v1/backups/{id}", tag = "backups", operation_id = "getBackup",
    params(BackupPath),
    responses(
        (status = 200, description = "The backup", body = Backup),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody)))]
pub async fn get_backup(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<BackupPath>,
) -> ApiResult<Json<Backup>> {
    Ok(Json(engine.get_backup(&p.id).await?))
}

/// Delete a backup.
#[utoipa::path(delete, path = "/v1/backups/{id}", tag = "backups", operation_id = "deleteBackup",
    params(BackupPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody)))]
pub async fn delete_backup(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<BackupPath>,
) -> ApiResult<StatusCode> {
    engine.delete_backup(&p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Restore a backup as a new sandbox.
///
/// The backup is fetched from the object store (every chunk checked, then the snapshot's signed
/// manifest), restored with its memory, processes and disk, and its fetched copy removed. The
/// body is optional and as for a create (name, metadata, timeout…; `vcpus`/`memory_mib` must be
/// the backup's when given). The same as a create whose `snapshot` is the backup.
#[utoipa::path(post, path = "/v1/backups/{id}/restore", tag = "backups", operation_id = "restoreBackup",
    params(BackupPath),
    request_body(content = Option<CreateSandbox>, description = "Create parameters (optional)"),
    responses(
        (status = 201, description = "Restored and running", body = Sandbox),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such backup", body = ErrorBody),
        (status = 422, description = "A chunk or the snapshot failed its checks (`archive_corrupt`, `snapshot_corrupt`, `snapshot_signature_invalid`)", body = ErrorBody),
        (status = 502, description = "The object store is unreachable, or the VM failed", body = ErrorBody),
        (status = 503, description = "No capacity", body = ErrorBody)))]
pub async fn restore_backup(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<BackupPath>,
    ApiJsonOrDefault(req): ApiJsonOrDefault<CreateSandbox>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    Ok((
        StatusCode::CREATED,
        Json(engine.restore_backup(&p.id, req).await?),
    ))
}
