//! Templates: `/v1/templates` (list, get, build, delete), `/v1/template-builds/{id}` (status
//! and log, followed live as NDJSON), `/v1/template-files/{sha256}` (the archives `copy` steps
//! unpack, uploaded once by content hash).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use platinum_engine::Engine;
use platinum_engine::builds::model::{
    BuildLogs, BuildStatus, TemplateBuild, TemplateBuildRequest, TemplateList, TemplateSummary,
    UploadedFiles,
};
use platinum_frontend_http::ndjson::line;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;
use utoipa::IntoParams;

use crate::error::{ApiJson, ApiQuery, ApiResult, ErrorBody};

/// Most log lines one page returns.
const MAX_PAGE: usize = 1000;
/// How long a follower waits for new lines before it checks again.
const FOLLOW_POLL: Duration = Duration::from_secs(15);

/// The `{name}` of a template.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TemplatePath {
    /// Template name (or a custom template's id).
    pub name: String,
}

/// The `{id}` of a build.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct BuildPath {
    /// Build id.
    pub id: String,
}

/// The `{sha256}` of uploaded files.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct FilesPath {
    /// SHA-256 of the archive, 64 lowercase hex digits.
    pub sha256: String,
}

/// Which lines of a build's log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogParams {
    /// First line (0-based).
    #[serde(default)]
    pub offset: usize,
    /// Most lines (default and maximum 1000).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Stream NDJSON (`BuildLogEntry` lines, then the build) until the build ends.
    #[serde(default)]
    pub follow: bool,
}

/// List templates.
#[utoipa::path(get, path = "/v1/templates", tag = "templates", operation_id = "listTemplates",
    responses(
        (status = 200, description = "Built-in templates, then custom ones", body = TemplateList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_templates(State(engine): State<Arc<Engine>>) -> Json<TemplateList> {
    Json(TemplateList {
        templates: engine.list_templates(),
    })
}

/// Get a template.
#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates", operation_id = "getTemplate",
    params(TemplatePath),
    responses(
        (status = 200, description = "The template", body = TemplateSummary),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody)))]
pub async fn get_template(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<TemplatePath>,
) -> ApiResult<Json<TemplateSummary>> {
    Ok(Json(engine.get_template(&p.name)?))
}

/// Build a template.
///
/// Runs the steps in order in a builder VM started from the base (`from_image`, e.g.
/// `python:3.11`, or `from_template`), keeping a layer after each step that changes the disk:
/// a later build whose first steps are unchanged starts from the newest layer it shares. Then
/// the start command is started and its ready command awaited, the VM is saved as the
/// template's ready snapshot, and the template is recorded (replacing one of that name).
/// Returns at once; follow the build at `/v1/template-builds/{id}`. Files for `copy` steps are
/// uploaded first to `/v1/template-files/{sha256}`.
#[utoipa::path(post, path = "/v1/templates", tag = "templates", operation_id = "buildTemplate",
    request_body = TemplateBuildRequest,
    responses(
        (status = 202, description = "Building", body = TemplateBuild),
        (status = 400, description = "Invalid name, base, step, size or timeout; files not uploaded", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "`from_template` names no template", body = ErrorBody),
        (status = 409, description = "The template is being built already", body = ErrorBody)))]
pub async fn build_template(
    State(engine): State<Arc<Engine>>,
    ApiJson(req): ApiJson<TemplateBuildRequest>,
) -> ApiResult<(StatusCode, Json<TemplateBuild>)> {
    Ok((
        StatusCode::ACCEPTED,
        Json(engine.build_template(req).await?),
    ))
}

/// Delete a custom template.
///
/// Refused while sandboxes (pooled ones included), pools or a build use it. Its ready
/// snapshots are removed; its cached layers stay for later builds.
#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates", operation_id = "deleteTemplate",
    params(TemplatePath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "A built-in template", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such template", body = ErrorBody),
        (status = 409, description = "In use by sandboxes, pools or a build", body = ErrorBody)))]
pub async fn delete_template(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<TemplatePath>,
) -> ApiResult<StatusCode> {
    engine.delete_template(&p.name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Get a template build.
#[utoipa::path(get, path = "/v1/template-builds/{id}", tag = "templates", operation_id = "getTemplateBuild",
    params(BuildPath),
    responses(
        (status = 200, description = "The build: status, cached and run steps, failure", body = TemplateBuild),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody)))]
pub async fn get_build(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<BuildPath>,
) -> ApiResult<Json<TemplateBuild>> {
    Ok(Json(engine.template_build(&p.id).await?))
}

/// A template build's log.
///
/// A page of lines from `offset`, or with `follow=true` an NDJSON stream: every line from
/// `offset` as it is written, then one last line with the build (`{"build": …}`) once it ended.
#[utoipa::path(get, path = "/v1/template-builds/{id}/logs", tag = "templates", operation_id = "getTemplateBuildLogs",
    params(BuildPath, LogParams),
    responses(
        (status = 200, description = "Lines (JSON), or with `follow` NDJSON `BuildLogEntry` lines and the build last", body = BuildLogs),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such build", body = ErrorBody)))]
pub async fn build_logs(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<BuildPath>,
    ApiQuery(q): ApiQuery<LogParams>,
) -> ApiResult<Response> {
    let limit = q.limit.unwrap_or(MAX_PAGE).min(MAX_PAGE);
    let first = engine.template_build_logs(&p.id, q.offset, limit).await?;
    if !q.follow {
        return Ok(Json(first).into_response());
    }
    let id = p.id;
    let lines =
        futures::stream::unfold((engine, Some(first), false), move |(engine, page, done)| {
            let id = id.clone();
            async move {
                if done {
                    return None;
                }
                let page = match page {
                    Some(page) => page,
                    None => return None,
                };
                let ended = page.build.status != BuildStatus::Building;
                let mut out: Vec<bytes::Bytes> = page.entries.iter().map(line).collect();
                if ended && page.entries.is_empty() {
                    out.push(line(&serde_json::json!({ "build": page.build })));
                    return Some((out, (engine, None, true)));
                }
                let offset = page.next_offset as usize;
                if !ended {
                    engine.wait_template_build(&id, offset, FOLLOW_POLL).await;
                }
                let next = engine.template_build_logs(&id, offset, MAX_PAGE).await;
                match next {
                    Ok(next) => Some((out, (engine, Some(next), false))),
                    Err(e) => {
                        out.push(line(&serde_json::json!({ "error": e.to_string() })));
                        Some((out, (engine, None, true)))
                    }
                }
            }
        })
        .flat_map(|chunk| futures::stream::iter(chunk.into_iter().map(Ok::<_, std::io::Error>)));
    Ok((
        [(CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}

/// Upload files for `copy` steps.
///
/// The body is a tar archive (gzip or not), at most the server's upload limit; the path names
/// its SHA-256, which is checked. Uploading an archive that is there already is harmless;
/// `HEAD` tells whether it is.
#[utoipa::path(put, path = "/v1/template-files/{sha256}", tag = "templates", operation_id = "uploadTemplateFiles",
    params(FilesPath),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "A tar archive"),
    responses(
        (status = 201, description = "Stored", body = UploadedFiles),
        (status = 400, description = "The body's SHA-256 is not the one named", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 413, description = "Larger than the upload limit", body = ErrorBody)))]
pub async fn upload_files(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<FilesPath>,
    body: Body,
) -> ApiResult<(StatusCode, Json<UploadedFiles>)> {
    let mut stream = body.into_data_stream();
    let size = match engine
        .upload_template_files(&p.sha256, stream.by_ref(), true)
        .await
    {
        Ok(size) => size,
        Err(e) => {
            super::drain_refused(&mut stream).await;
            return Err(e.into());
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(UploadedFiles {
            key: p.sha256,
            size,
        }),
    ))
}

/// Whether files were uploaded.
#[utoipa::path(head, path = "/v1/template-files/{sha256}", tag = "templates", operation_id = "templateFilesExist",
    params(FilesPath),
    responses(
        (status = 200, description = "Uploaded"),
        (status = 400, description = "Not a SHA-256", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Not uploaded")))]
pub async fn files_exist(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<FilesPath>,
) -> ApiResult<StatusCode> {
    Ok(if engine.has_template_files(&p.sha256)? {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    })
}
