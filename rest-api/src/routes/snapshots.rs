//! Snapshots, checkpoints and fork: `/v1/sandboxes/{id}/snapshots|checkpoints|rollback|fork`,
//! `/v1/snapshots`, and the snapshot signing keys at `/.well-known/jwks.json`.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platinum_engine::Engine;
use platinum_engine::model::{
    CreateSnapshot, ForkRequest, ForkResult, RollbackRequest, Sandbox, Snapshot,
};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use super::SandboxPath;
use crate::error::{ApiJson, ApiJsonOrDefault, ApiQuery, ApiResult, ErrorBody};

/// The `{id}` of a snapshot.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SnapshotPath {
    /// Snapshot id or name.
    pub id: String,
}

/// Filter for listing snapshots.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SnapshotListParams {
    /// Only snapshots of this sandbox.
    pub sandbox_id: Option<String>,
}

/// Snapshots, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct SnapshotList {
    /// The snapshots.
    pub snapshots: Vec<Snapshot>,
}

/// Take a snapshot.
///
/// A named, immutable snapshot of a running or paused sandbox: memory, device state and disk,
/// with a signed manifest (Ed25519) of every file's BLAKE3 hash. The sandbox keeps running; its
/// vCPUs stop while the state is written (`timings.paused_ms`). Restore it with
/// `POST /v1/sandboxes {"snapshot": "<id or name>"}`.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/snapshots", tag = "snapshots", operation_id = "createSnapshot",
    params(SandboxPath),
    request_body(content = Option<CreateSnapshot>, description = "Name (optional)"),
    responses(
        (status = 201, description = "Taken", body = Snapshot),
        (status = 400, description = "Invalid name", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running or paused, or the name is taken", body = ErrorBody),
        (status = 507, description = "No space left on the host (nothing of the snapshot is kept)", body = ErrorBody)))]
pub async fn create_snapshot(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJsonOrDefault(req): ApiJsonOrDefault<CreateSnapshot>,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    Ok((
        StatusCode::CREATED,
        Json(engine.create_snapshot(&p.id, req).await?),
    ))
}

/// List snapshots.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", operation_id = "listSnapshots",
    params(SnapshotListParams),
    responses(
        (status = 200, description = "Snapshots, oldest first", body = SnapshotList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_snapshots(
    State(engine): State<Arc<Engine>>,
    ApiQuery(q): ApiQuery<SnapshotListParams>,
) -> ApiResult<Json<SnapshotList>> {
    Ok(Json(SnapshotList {
        snapshots: engine.list_snapshots(q.sandbox_id.as_deref()).await?,
    }))
}

/// Get a snapshot or checkpoint.
#[utoipa::path(get, path = "/v1/snapshots/{id}", tag = "snapshots", operation_id = "getSnapshot",
    params(SnapshotPath),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such snapshot", body = ErrorBody)))]
pub async fn get_snapshot(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SnapshotPath>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(engine.get_snapshot(&p.id).await?))
}

/// Delete a snapshot or checkpoint.
#[utoipa::path(delete, path = "/v1/snapshots/{id}", tag = "snapshots", operation_id = "deleteSnapshot",
    params(SnapshotPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such snapshot", body = ErrorBody)))]
pub async fn delete_snapshot(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SnapshotPath>,
) -> ApiResult<StatusCode> {
    engine.delete_snapshot(&p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Fork a sandbox.
///
/// `count` (1-20) new running sandboxes, each with the source's memory, processes and disk at
/// this instant, then on their own (own id, hostname, address and MAC; reseeded RNG). The source
/// keeps running; `source_paused_ms` is how long its vCPUs were stopped. All or nothing.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/fork", tag = "snapshots", operation_id = "forkSandbox",
    params(SandboxPath),
    request_body(content = Option<ForkRequest>, description = "How many copies (default 1)"),
    responses(
        (status = 201, description = "The copies", body = ForkResult),
        (status = 400, description = "count outside 1-20", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running or paused", body = ErrorBody),
        (status = 503, description = "No capacity for that many copies", body = ErrorBody)))]
pub async fn fork_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJsonOrDefault(req): ApiJsonOrDefault<ForkRequest>,
) -> ApiResult<(StatusCode, Json<ForkResult>)> {
    Ok((
        StatusCode::CREATED,
        Json(engine.fork_sandbox(&p.id, req).await?),
    ))
}

/// Checkpoints of a sandbox, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CheckpointList {
    /// The checkpoints.
    pub checkpoints: Vec<Snapshot>,
}

/// Take a checkpoint.
///
/// Returns the checkpoint in the same call; `POST /v1/sandboxes/{id}/rollback` puts this same
/// sandbox back to it. Cheap enough to take before every agent turn (see `timings`).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/checkpoints", tag = "snapshots", operation_id = "createCheckpoint",
    params(SandboxPath),
    responses(
        (status = 201, description = "Taken", body = Snapshot),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running or paused", body = ErrorBody),
        (status = 507, description = "No space left on the host", body = ErrorBody)))]
pub async fn create_checkpoint(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    Ok((StatusCode::CREATED, Json(engine.checkpoint(&p.id).await?)))
}

/// List a sandbox's checkpoints.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/checkpoints", tag = "snapshots", operation_id = "listCheckpoints",
    params(SandboxPath),
    responses(
        (status = 200, description = "Checkpoints, oldest first", body = CheckpointList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn list_checkpoints(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<CheckpointList>> {
    Ok(Json(CheckpointList {
        checkpoints: engine.list_checkpoints(&p.id).await?,
    }))
}

/// Roll back to a checkpoint.
///
/// Puts the same sandbox (same id, same address) back to the checkpoint: memory, processes and
/// disk. The checkpoint is checked first (signature, hashes); a refused one changes nothing.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/rollback", tag = "snapshots", operation_id = "rollbackSandbox",
    params(SandboxPath),
    request_body = RollbackRequest,
    responses(
        (status = 200, description = "Rolled back and running", body = Sandbox),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox, or no such checkpoint of it", body = ErrorBody),
        (status = 409, description = "Not running or paused", body = ErrorBody),
        (status = 422, description = "The checkpoint failed its checks", body = ErrorBody)))]
pub async fn rollback(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(req): ApiJson<RollbackRequest>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(engine.rollback(&p.id, &req.checkpoint).await?))
}

/// Snapshot signing keys (no API key needed).
///
/// The Ed25519 public keys (JWKS, RFC 8037: `kty: OKP`, `crv: Ed25519`) that verify snapshot
/// manifests, current and rotated ones; a snapshot's `key_id` is a `kid` here.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "snapshots", operation_id = "snapshotKeys", security(()),
    responses(
        (status = 200, description = "JWKS", body = Object),
        (status = 501, description = "This server keeps no snapshots", body = ErrorBody)))]
pub async fn jwks(State(engine): State<Arc<Engine>>) -> ApiResult<Json<serde_json::Value>> {
    Ok(Json(engine.snapshot_jwks()?))
}

/// A new snapshot signing key.
#[derive(Debug, Serialize, ToSchema)]
pub struct RotatedKey {
    /// The new current key's id.
    pub kid: String,
    /// Every key that verifies snapshots now (JWKS).
    #[schema(value_type = Object)]
    pub jwks: serde_json::Value,
}

/// Rotate the snapshot signing key.
///
/// A new key signs every snapshot from now on; earlier keys keep verifying the snapshots they
/// signed. `platinum keys rotate` (without a key id) calls this.
#[utoipa::path(post, path = "/v1/snapshot-keys/rotate", tag = "snapshots", operation_id = "rotateSnapshotKey",
    responses(
        (status = 200, description = "Rotated", body = RotatedKey),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 501, description = "This server keeps no snapshots", body = ErrorBody)))]
pub async fn rotate_snapshot_key(State(engine): State<Arc<Engine>>) -> ApiResult<Json<RotatedKey>> {
    let kid = engine.rotate_snapshot_key()?;
    Ok(Json(RotatedKey {
        kid,
        jwks: engine.snapshot_jwks()?,
    }))
}
