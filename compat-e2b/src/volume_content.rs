//! E2B's volume content API (`/volumecontent/{volumeID}/...`): what the SDKs'
//! `volume.list(path)`, `get_info(path)`, `exists`, `read_file`, `write_file`, `make_dir`,
//! `update_metadata` and `remove` call, over the engine's volume file commands (which reach the
//! files through the sandbox that has the volume mounted, or in its image when none runs).
//!
//! | E2B | engine |
//! |---|---|
//! | `GET dir?path&depth` (200 `[VolumeEntryStat]`) | `volume_list` (depth default 1) |
//! | `POST dir?path&uid&gid&mode&force` (201 `VolumeEntryStat`) | `volume_make_dir` (`force`: parents too) |
//! | `GET path?path` (200 `VolumeEntryStat`) | `volume_stat` |
//! | `PATCH path?path` `{uid, gid, mode}` (200 `VolumeEntryStat`) | `volume_set_attrs` |
//! | `DELETE path?path` (204) | `volume_remove` (a directory with its contents) |
//! | `GET file?path` (200 octet-stream) | `volume_read` |
//! | `PUT file?path&uid&gid&mode&force` octet-stream (201 `VolumeEntryStat`) | `volume_write` (parents created, replaced whole) |
//!
//! Authentication: the volume's `token` as `Authorization: Bearer` (see [`crate::auth`]), or an
//! API key. The SDKs send these requests to `E2B_VOLUME_API_URL` (else `https://api.<domain>`),
//! which is this server. Errors are the control plane's `{code, message}`; a missing volume or
//! path is 404, which the SDKs raise as a path-not-found error.

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, extract::Request};
use platinum_engine::commands::volume_files::VolumeAttrs;
use platinum_engine::model::{Volume, VolumeFileEntry};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::Ctx;
use crate::auth;
use crate::control::Body as JsonBody;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// The content routes. They check their own credentials (the volume token or an API key), so
/// they sit outside the API-key layer.
pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/volumecontent/{id}/dir", get(list).post(make_dir))
        .route(
            "/volumecontent/{id}/path",
            get(stat).patch(update).delete(remove),
        )
        .route("/volumecontent/{id}/file", get(read).put(write))
}

/// The volume `id` names, when the request may use it: it carries the volume's token or a valid
/// API key (401 otherwise; a missing volume is 404 only for a valid API key).
async fn authorize(ctx: &Ctx, headers: &HeaderMap, id: &str) -> ApiResult<Volume> {
    let key_ok = auth::api_key(headers).is_some_and(|k| ctx.engine.api_keys().verify(k));
    let found = ctx.engine.get_volume(id).await;
    match found {
        Ok(v) if key_ok || auth::has_volume_token(headers, &ctx.config.secret, &v.id) => Ok(v),
        Err(e) if key_ok => Err(e.into()),
        _ => Err(ApiError {
            status: 401,
            message: "Invalid or missing volume token (Authorization: Bearer <token>)".into(),
        }),
    }
}

/// Query parameters, or a 400 in E2B's shape.
fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::bad_request(e.body_text()))
}

/// `?path`.
#[derive(Debug, Deserialize)]
struct PathQuery {
    path: String,
}

/// `?path&depth` of a listing.
#[derive(Debug, Deserialize)]
struct ListQuery {
    path: String,
    depth: Option<u32>,
}

/// `?path&uid&gid&mode&force` of a write or a `make_dir`.
#[derive(Debug, Deserialize)]
struct CreateQuery {
    path: String,
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
    force: Option<bool>,
}

impl CreateQuery {
    fn attrs(&self) -> VolumeAttrs {
        VolumeAttrs {
            uid: self.uid,
            gid: self.gid,
            mode: self.mode,
        }
    }
}

/// Body of `PATCH path` (`PatchVolumecontentVolumeIDPathBody`).
#[derive(Debug, Default, Deserialize)]
struct Patch {
    uid: Option<u32>,
    gid: Option<u32>,
    mode: Option<u32>,
}

/// E2B's `VolumeEntryStat`.
fn stat_json(e: &VolumeFileEntry) -> Value {
    let kind = match e.kind.as_str() {
        "file" => "file",
        "dir" => "directory",
        "symlink" => "symlink",
        _ => "unknown",
    };
    let time = |t: &time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let mut v = json!({
        "name": e.name,
        "type": kind,
        "path": e.path,
        "size": e.size,
        "mode": e.mode,
        "uid": e.uid,
        "gid": e.gid,
        "atime": time(&e.atime),
        "mtime": time(&e.mtime),
        "ctime": time(&e.ctime),
    });
    if let Some(target) = &e.symlink_target {
        v["target"] = json!(target);
    }
    v
}

async fn list(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let v = authorize(&ctx, &headers, &id).await?;
    let entries = ctx
        .engine
        .volume_list(&v.id, &q.path, q.depth.unwrap_or(1))
        .await?;
    Ok(Json(Value::Array(entries.iter().map(stat_json).collect())))
}

async fn make_dir(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<CreateQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let v = authorize(&ctx, &headers, &id).await?;
    let parents = q.force.unwrap_or(false);
    let (entry, _) = ctx
        .engine
        .volume_make_dir(&v.id, &q.path, parents, q.attrs())
        .await?;
    Ok((StatusCode::CREATED, Json(stat_json(&entry))).into_response())
}

async fn stat(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let v = authorize(&ctx, &headers, &id).await?;
    let entry = ctx.engine.volume_stat(&v.id, &q.path).await?;
    Ok(Json(stat_json(&entry)))
}

async fn update(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, QueryRejection>,
    JsonBody(patch): JsonBody<Patch>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let v = authorize(&ctx, &headers, &id).await?;
    let attrs = VolumeAttrs {
        uid: patch.uid,
        gid: patch.gid,
        mode: patch.mode,
    };
    let entry = ctx.engine.volume_set_attrs(&v.id, &q.path, attrs).await?;
    Ok(Json(stat_json(&entry)))
}

async fn remove(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> ApiResult<StatusCode> {
    let q = query(q)?;
    let v = authorize(&ctx, &headers, &id).await?;
    ctx.engine.volume_remove(&v.id, &q.path).await?;
    tracing::info!(volume = %v.id, path = %q.path, "E2B volume entry removed");
    Ok(StatusCode::NO_CONTENT)
}

async fn read(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    headers: HeaderMap,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> ApiResult<Response> {
    let q = query(q)?;
    let v = authorize(&ctx, &headers, &id).await?;
    let dl = ctx.engine.volume_read(&v.id, &q.path).await?;
    Ok((
        [
            (CONTENT_TYPE, "application/octet-stream".to_string()),
            (CONTENT_LENGTH, dl.size.to_string()),
        ],
        Body::from_stream(dl.body),
    )
        .into_response())
}

/// `force` is accepted and changes nothing: a write always replaces the file (the SDKs'
/// documented behaviour).
async fn write(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    q: Result<Query<CreateQuery>, QueryRejection>,
    req: Request,
) -> ApiResult<Response> {
    let q = query(q)?;
    let v = authorize(&ctx, req.headers(), &id).await?;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = req.into_body().into_data_stream();
    let entry = ctx
        .engine
        .volume_write(&v.id, &q.path, q.attrs(), declared, body)
        .await?;
    Ok((StatusCode::CREATED, Json(stat_json(&entry))).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_render_as_volume_entry_stats() {
        let t = time::OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let mut e = VolumeFileEntry {
            name: "a b".into(),
            path: "/d/a b".into(),
            kind: "dir".into(),
            size: 4096,
            mode: 0o755,
            uid: 1000,
            gid: 1000,
            atime: t,
            mtime: t,
            ctime: t,
            symlink_target: None,
        };
        assert_eq!(
            stat_json(&e),
            json!({"name": "a b", "type": "directory", "path": "/d/a b", "size": 4096,
                   "mode": 493, "uid": 1000, "gid": 1000, "atime": "2023-11-14T22:13:20Z",
                   "mtime": "2023-11-14T22:13:20Z", "ctime": "2023-11-14T22:13:20Z"})
        );
        e.kind = "symlink".into();
        e.symlink_target = Some("/x".into());
        assert_eq!(stat_json(&e)["type"], "symlink");
        assert_eq!(stat_json(&e)["target"], "/x");
        e.kind = "other".into();
        assert_eq!(stat_json(&e)["type"], "unknown");
    }
}
