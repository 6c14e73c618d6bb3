//! `/v1/sandboxes/{id}/files`: streamed upload and download, list, stat, mkdir, remove, move,
//! chmod, chown. Guest paths are absolute or relative to the user's home (`/home/user` for the
//! default user).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{StreamExt, TryStreamExt};
use platinum_engine::model::FileInfo;
use platinum_engine::{CreateAs, Engine, Error};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use super::SandboxPath;
use crate::error::{ApiJson, ApiQuery, ApiResult, ErrorBody};

/// A path, and the user it is accessed as.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PathParams {
    /// Absolute, or relative to the user's home.
    pub path: String,
    /// User whose permissions apply (default `user`).
    pub user: Option<String>,
}

/// Upload options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadParams {
    /// Destination; parent directories are created.
    pub path: String,
    /// User who will own the file (default `user`).
    pub user: Option<String>,
    /// Permission bits in octal, e.g. `755` (default `644`, or the replaced file's).
    pub mode: Option<String>,
}

/// Listing options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Directory.
    pub path: String,
    /// Levels to descend, 1-32 (default 1).
    pub depth: Option<u32>,
    /// User whose permissions apply.
    pub user: Option<String>,
}

/// Removal options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveParams {
    /// Path to remove.
    pub path: String,
    /// Remove a non-empty directory and everything in it.
    pub recursive: Option<bool>,
    /// User whose permissions apply.
    pub user: Option<String>,
}

/// A directory to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MakeDirRequest {
    /// Directory; parents are created as needed.
    pub path: String,
    /// User who will own it.
    #[serde(default)]
    pub user: Option<String>,
}

/// Result of mkdir.
#[derive(Debug, Serialize, ToSchema)]
pub struct MakeDirResult {
    /// The directory.
    pub entry: FileInfo,
    /// False when it existed already.
    pub created: bool,
}

/// A move or rename.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// Source.
    pub from: String,
    /// Destination.
    pub to: String,
    /// Replace an existing destination.
    #[serde(default)]
    pub overwrite: bool,
    /// User whose permissions apply.
    #[serde(default)]
    pub user: Option<String>,
}

/// A permission change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChmodRequest {
    /// Path.
    pub path: String,
    /// New permission bits as an octal string, e.g. `"755"`.
    pub mode: String,
    /// User whose permissions apply.
    #[serde(default)]
    pub user: Option<String>,
}

/// An ownership change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChownRequest {
    /// Path.
    pub path: String,
    /// New owner (user name).
    #[serde(default)]
    pub owner: Option<String>,
    /// New group name.
    #[serde(default)]
    pub group: Option<String>,
    /// User whose permissions apply (changing ownership needs `root`).
    #[serde(default)]
    pub user: Option<String>,
}

fn octal(mode: &str) -> Result<u32, Error> {
    let digits = mode.trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            Error::InvalidRequest(format!("mode {mode:?} is not an octal permission like 644"))
        })
}

/// Download a file (streamed).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files", tag = "files", operation_id = "downloadFile",
    params(SandboxPath, PathParams),
    responses(
        (status = 200, description = "File contents", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 400, description = "Path is a directory or invalid", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody)))]
pub async fn download(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiQuery(q): ApiQuery<PathParams>,
) -> ApiResult<Response> {
    let dl = engine.read_file(&p.id, &q.path, q.user).await?;
    let size = dl.entry.size;
    let body = Body::from_stream(
        dl.into_stream()
            .map_err(|e| std::io::Error::other(e.to_string())),
    );
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response())
}

/// Upload a file (streamed, atomic).
///
/// The body is the raw content. The file is written to a temporary name and renamed into place,
/// so readers never see a partial file; a failed or oversized upload leaves the old content.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files", tag = "files", operation_id = "uploadFile",
    params(SandboxPath, UploadParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "File contents"),
    responses(
        (status = 200, description = "Written", body = FileInfo),
        (status = 400, description = "Invalid path or mode", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody),
        (status = 507, description = "Disk full", body = ErrorBody)))]
pub async fn upload(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiQuery(q): ApiQuery<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<FileInfo>> {
    let mode = q.mode.as_deref().map(octal).transpose()?;
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let mut stream = body.into_data_stream();
    match engine
        .write_file(
            &p.id,
            &q.path,
            CreateAs {
                mode,
                ..CreateAs::user(q.user)
            },
            declared,
            stream.by_ref(),
        )
        .await
    {
        Ok(info) => Ok(Json(info)),
        Err(e) => {
            super::drain_refused(&mut stream).await;
            Err(e.into())
        }
    }
}

/// List a directory.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/list", tag = "files", operation_id = "listFiles",
    params(SandboxPath, ListParams),
    responses(
        (status = 200, description = "Entries", body = Vec<FileInfo>),
        (status = 400, description = "Not a directory, or bad depth", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox or directory", body = ErrorBody)))]
pub async fn list(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiQuery(q): ApiQuery<ListParams>,
) -> ApiResult<Json<Vec<FileInfo>>> {
    Ok(Json(
        engine
            .list_dir(&p.id, &q.path, q.depth.unwrap_or(1), q.user)
            .await?,
    ))
}

/// Describe a path (symlinks are not followed).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/stat", tag = "files", operation_id = "statFile",
    params(SandboxPath, PathParams),
    responses(
        (status = 200, description = "The entry", body = FileInfo),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox or path", body = ErrorBody)))]
pub async fn stat(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiQuery(q): ApiQuery<PathParams>,
) -> ApiResult<Json<FileInfo>> {
    Ok(Json(engine.stat(&p.id, &q.path, q.user).await?))
}

/// Remove a file, or a directory with `recursive=true`.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files", tag = "files", operation_id = "removeFile",
    params(SandboxPath, RemoveParams),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or path", body = ErrorBody),
        (status = 409, description = "Directory not empty", body = ErrorBody)))]
pub async fn remove(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiQuery(q): ApiQuery<RemoveParams>,
) -> ApiResult<StatusCode> {
    engine
        .remove(&p.id, &q.path, q.recursive.unwrap_or(false), q.user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Create a directory and its parents.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/mkdir", tag = "files", operation_id = "makeDir",
    params(SandboxPath), request_body = MakeDirRequest,
    responses(
        (status = 200, description = "The directory", body = MakeDirResult),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "A file is in the way", body = ErrorBody)))]
pub async fn mkdir(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(req): ApiJson<MakeDirRequest>,
) -> ApiResult<Json<MakeDirResult>> {
    let (entry, created) = engine
        .make_dir(&p.id, &req.path, CreateAs::user(req.user))
        .await?;
    Ok(Json(MakeDirResult { entry, created }))
}

/// Move or rename a path.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/move", tag = "files", operation_id = "moveFile",
    params(SandboxPath), request_body = MoveRequest,
    responses(
        (status = 200, description = "The entry at its new path", body = FileInfo),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox or source", body = ErrorBody),
        (status = 409, description = "Destination exists", body = ErrorBody)))]
pub async fn move_path(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(req): ApiJson<MoveRequest>,
) -> ApiResult<Json<FileInfo>> {
    Ok(Json(
        engine
            .rename(&p.id, &req.from, &req.to, req.overwrite, req.user)
            .await?,
    ))
}

/// Change permission bits.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/chmod", tag = "files", operation_id = "chmodFile",
    params(SandboxPath), request_body = ChmodRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Invalid mode", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or path", body = ErrorBody)))]
pub async fn chmod(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(req): ApiJson<ChmodRequest>,
) -> ApiResult<StatusCode> {
    engine
        .chmod(&p.id, &req.path, octal(&req.mode)?, req.user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Change owner and/or group.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/files/chown", tag = "files", operation_id = "chownFile",
    params(SandboxPath), request_body = ChownRequest,
    responses(
        (status = 204, description = "Changed"),
        (status = 400, description = "Unknown user or group", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "Permission denied", body = ErrorBody),
        (status = 404, description = "No such sandbox or path", body = ErrorBody)))]
pub async fn chown(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(req): ApiJson<ChownRequest>,
) -> ApiResult<StatusCode> {
    engine
        .chown(&p.id, &req.path, req.owner, req.group, req.user)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal() {
        assert_eq!(octal("644").unwrap(), 0o644);
        assert_eq!(octal("0755").unwrap(), 0o755);
        assert_eq!(octal("0o600").unwrap(), 0o600);
        assert!(octal("999").is_err() && octal("77777").is_err() && octal("").is_err());
    }
}
