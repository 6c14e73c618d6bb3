//! A sandbox's host share: `/v1/sandboxes/{id}/share/{path}`. The directory the guest sees at
//! `/mnt/dnah-share`, read and written on the host (no guest round trip), whether the sandbox
//! runs, is paused or is stopped. Paths never leave the share and never pass through a symbolic
//! link, whoever planted it. The `{path}` routes take slashes, which the `routes!` macro cannot
//! express: they are documented here and registered by hand ([`SHARE_ROUTE`]).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use platinum_engine::Engine;
use platinum_engine::model::{ShareEntry, ShareListing};
use serde::Deserialize;
use std::sync::Arc;
use tokio_util::io::ReaderStream;
use utoipa::IntoParams;

use super::SandboxPath;
use crate::error::{ApiQuery, ApiResult, ErrorBody};

/// The axum route of the `{path}` handlers.
pub const SHARE_ROUTE: &str = "/v1/sandboxes/{id}/share/{*path}";

/// The `{id}` and `{path}` path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SharePath {
    /// Sandbox id.
    pub id: String,
    /// Path in the share, relative to its root (slashes allowed).
    pub path: String,
}

/// Options of a delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveParams {
    /// Remove a directory with everything in it.
    #[serde(default)]
    pub recursive: bool,
}

async fn listing(engine: &Engine, id: &str, path: &str) -> ApiResult<Response> {
    let entries = engine.share_list(id, path).await?;
    Ok(Json(ShareListing {
        path: path.to_string(),
        entries,
    })
    .into_response())
}

/// List the share's root.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/share", tag = "share", operation_id = "listShare",
    params(SandboxPath),
    responses(
        (status = 200, description = "The root's entries", body = ShareListing),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Archived: not on this host", body = ErrorBody)))]
pub async fn share_root(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Response> {
    listing(&engine, &p.id, "").await
}

/// Read a file (streamed) or list a directory of the share.
///
/// A file comes back as `application/octet-stream`; a directory as a JSON listing.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/share/{path}", tag = "share", operation_id = "readShare",
    params(SharePath),
    responses(
        (status = 200, description = "File contents, or a directory's listing (JSON)", content(
            (Vec<u8> = "application/octet-stream"),
            (ShareListing = "application/json"))),
        (status = 400, description = "Invalid path, or not a regular file", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "The path passes through a symbolic link", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody)))]
pub async fn share_get(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SharePath>,
) -> ApiResult<Response> {
    if engine.share_stat(&p.id, &p.path).await?.kind == "dir" {
        return listing(&engine, &p.id, &p.path).await;
    }
    let (file, size) = engine.share_read(&p.id, &p.path).await?;
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, size.to_string()),
        ],
        Body::from_stream(ReaderStream::new(file)),
    )
        .into_response())
}

/// Write a file of the share (streamed; parents created; the file appears whole).
#[utoipa::path(put, path = "/v1/sandboxes/{id}/share/{path}", tag = "share", operation_id = "writeShare",
    params(SharePath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "File contents"),
    responses(
        (status = 201, description = "Written", body = ShareEntry),
        (status = 400, description = "Invalid path, or a directory of that name", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 403, description = "The path passes through a symbolic link", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 507, description = "The share is full", body = ErrorBody)))]
pub async fn share_put(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SharePath>,
    body: Body,
) -> ApiResult<(StatusCode, Json<ShareEntry>)> {
    let body = super::LentBody::new(body);
    match engine.share_write(&p.id, &p.path, body.stream()).await {
        Ok(entry) => Ok((StatusCode::CREATED, Json(entry))),
        Err(e) => {
            body.drain().await;
            Err(e.into())
        }
    }
}

/// Remove a file, a symbolic link (never what it points to) or a directory of the share.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/share/{path}", tag = "share", operation_id = "removeShare",
    params(SharePath, RemoveParams),
    responses(
        (status = 204, description = "Removed"),
        (status = 400, description = "Invalid path, or a directory that is not empty", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox or file", body = ErrorBody)))]
pub async fn share_delete(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SharePath>,
    ApiQuery(q): ApiQuery<RemoveParams>,
) -> ApiResult<StatusCode> {
    engine.share_remove(&p.id, &p.path, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}
