//! `/v1/sandboxes/{id}/exec`: run a command, buffered or streamed.

use axum::Json;
use axum::extract::{Path, State};
use axum::response::Response;
use platinum_engine::model::{ExecRequest, ExecResult};
use platinum_engine::{Engine, StreamOptions};
use std::sync::Arc;

use super::SandboxPath;
use crate::error::{ApiJson, ApiResult, ErrorBody};
use crate::ndjson::{self, ExecStreamEvent};

/// Run a command and wait for it.
///
/// Returns its exit code and output (each stream capped at 10 MiB; `truncated` says when output
/// was dropped). A command that runs past `timeout_ms` (default 60 s) is killed and returned with
/// `timed_out: true`. With `background: true` the call returns at once with the pid.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec", operation_id = "exec",
    params(SandboxPath), request_body = ExecRequest,
    responses(
        (status = 200, description = "The command ended (or started, for background)", body = ExecResult),
        (status = 400, description = "Invalid command, cwd, user or env", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Sandbox not running", body = ErrorBody),
        (status = 502, description = "Guest unreachable", body = ErrorBody)))]
pub async fn exec(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Json<ExecResult>> {
    Ok(Json(engine.exec(&p.id, req).await?))
}

/// Run a command and stream its output.
///
/// The response is NDJSON: `started`, then `stdout`/`stderr` lines as the process writes, then
/// `exit` (or `error` if the sandbox went away). Disconnecting detaches; the process keeps
/// running and can be re-attached with its pid.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec/stream", tag = "exec", operation_id = "execStream",
    params(SandboxPath), request_body = ExecRequest,
    responses(
        (status = 200, description = "NDJSON event stream", content_type = "application/x-ndjson", body = ExecStreamEvent),
        (status = 400, description = "Invalid command", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Sandbox not running", body = ErrorBody)))]
pub async fn exec_stream(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(req): ApiJson<ExecRequest>,
) -> ApiResult<Response> {
    let stream = engine
        .exec_stream(&p.id, req, StreamOptions::default())
        .await?;
    Ok(ndjson::response(stream))
}
