//! `/v1/sandboxes/{id}/processes`: list, re-attach, signal, stdin.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures::StreamExt;
use platinum_engine::model::ProcessInfo;
use platinum_engine::{Engine, Error};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use super::{ProcessPath, SandboxPath};
use crate::error::{ApiJson, ApiQuery, ApiResult, ErrorBody};
use crate::ndjson::{self, ExecStreamEvent};

/// Largest stdin write accepted in one request.
const MAX_STDIN: usize = 16 << 20;

/// Re-attach options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachParams {
    /// Replay the output the guest buffered before this attach (default true).
    pub replay: Option<bool>,
}

/// A signal to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// Signal number (15 = SIGTERM, 9 = SIGKILL, 2 = SIGINT).
    pub signal: i32,
}

/// Stdin options.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StdinParams {
    /// Close stdin after writing the body.
    pub close: Option<bool>,
}

/// List processes started in the sandbox (running and recently ended).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes", tag = "processes", operation_id = "listProcesses",
    params(SandboxPath),
    responses(
        (status = 200, description = "Processes", body = Vec<ProcessInfo>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Sandbox not running", body = ErrorBody)))]
pub async fn list_processes(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<Vec<ProcessInfo>>> {
    Ok(Json(engine.list_processes(&p.id).await?))
}

/// Re-attach to a process and stream its output (NDJSON, like `exec/stream`).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/processes/{pid}/output", tag = "processes", operation_id = "attachProcess",
    params(ProcessPath, AttachParams),
    responses(
        (status = 200, description = "NDJSON event stream", content_type = "application/x-ndjson", body = ExecStreamEvent),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
        (status = 409, description = "Sandbox not running", body = ErrorBody)))]
pub async fn attach(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<ProcessPath>,
    ApiQuery(q): ApiQuery<AttachParams>,
) -> ApiResult<Response> {
    let stream = engine
        .attach(&p.id, p.pid, q.replay.unwrap_or(true))
        .await?;
    Ok(ndjson::response(stream))
}

/// Send a signal to a process (and its process group).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/signal", tag = "processes", operation_id = "signalProcess",
    params(ProcessPath), request_body = SignalRequest,
    responses(
        (status = 204, description = "Sent"),
        (status = 400, description = "Invalid signal", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox or process", body = ErrorBody)))]
pub async fn signal(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<ProcessPath>,
    ApiJson(req): ApiJson<SignalRequest>,
) -> ApiResult<StatusCode> {
    engine.signal_process(&p.id, p.pid, req.signal).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Write the request body to a process's stdin (and optionally close it).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/processes/{pid}/stdin", tag = "processes", operation_id = "writeStdin",
    params(ProcessPath, StdinParams),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "Bytes for stdin"),
    responses(
        (status = 204, description = "Written"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox or process", body = ErrorBody),
        (status = 413, description = "Body over 16 MiB", body = ErrorBody)))]
pub async fn stdin(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<ProcessPath>,
    ApiQuery(q): ApiQuery<StdinParams>,
    body: Body,
) -> ApiResult<StatusCode> {
    let mut data = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| Error::InvalidRequest(format!("reading body: {e}")))?;
        if data.len() + chunk.len() > MAX_STDIN {
            return Err(Error::PayloadTooLarge {
                limit: MAX_STDIN as u64,
            }
            .into());
        }
        data.extend_from_slice(&chunk);
    }
    if !data.is_empty() {
        engine.write_stdin(&p.id, p.pid, data.into()).await?;
    }
    if q.close.unwrap_or(false) {
        engine.close_stdin(&p.id, p.pid).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}
