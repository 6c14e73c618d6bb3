//! `/v1/sandboxes`: create, list, get, delete, pause, resume, timeout, metrics, console, events.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platinum_engine::model::ListQuery;
use platinum_engine::model::{CreateSandbox, PauseRequest, Sandbox, SandboxMetrics, SandboxState};
use platinum_engine::{Engine, Error};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::SandboxPath;
use crate::error::{ApiError, ApiJson, ApiJsonOrDefault, ApiQuery, ApiResult, ErrorBody};

/// A page of sandboxes.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxList {
    /// Newest first.
    pub sandboxes: Vec<Sandbox>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for listing.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Comma-separated states (default: every state but `deleted`).
    pub state: Option<String>,
    /// Metadata filter as a URL-encoded query string, e.g. `team%3Dml%26env%3Ddev`.
    pub metadata: Option<String>,
    /// Page size, 1-1000 (default 100).
    pub limit: Option<u32>,
    /// Cursor from the previous page.
    pub cursor: Option<String>,
}

/// New timeout for a sandbox.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetTimeout {
    /// Seconds from now until the sandbox expires; 0 = never.
    pub timeout_secs: u64,
}

/// Console log query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleParams {
    /// Number of lines from the end (default 200).
    pub lines: Option<usize>,
}

/// Console log of a sandbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConsoleLog {
    /// The last lines of the guest's serial console.
    pub text: String,
}

/// One audit event.
#[derive(Debug, Serialize, ToSchema)]
pub struct SandboxEvent {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub at: OffsetDateTime,
    /// What: the state entered (`creating`, `running`, `error`, ...).
    pub kind: String,
    /// Details (reasons, boot time).
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

/// Create a sandbox.
///
/// Boots a microVM from the template and returns once its guest agent answers. Every field is
/// optional: `{}` gives the `base` template with 2 vCPUs, 1024 MiB and a 300 s timeout. With
/// `snapshot`, the sandbox is restored from that snapshot instead (its memory, processes and
/// disk), after its signature and every file's hash are checked.
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes", operation_id = "createSandbox",
    request_body = CreateSandbox,
    responses(
        (status = 201, description = "Created and running", body = Sandbox),
        (status = 400, description = "Invalid parameters", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "Unknown template or snapshot", body = ErrorBody),
        (status = 409, description = "The snapshot was taken where this host cannot restore it (`snapshot_incompatible`)", body = ErrorBody),
        (status = 422, description = "The snapshot failed its checks (`snapshot_signature_invalid`, `snapshot_corrupt`, `snapshot_key_unknown`)", body = ErrorBody),
        (status = 502, description = "The VM failed to boot", body = ErrorBody),
        (status = 503, description = "No capacity", body = ErrorBody)))]
pub async fn create_sandbox(
    State(engine): State<Arc<Engine>>,
    ApiJson(req): ApiJson<CreateSandbox>,
) -> ApiResult<(StatusCode, Json<Sandbox>)> {
    Ok((StatusCode::CREATED, Json(engine.create_sandbox(req).await?)))
}

/// List sandboxes.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes", operation_id = "listSandboxes",
    params(ListParams),
    responses(
        (status = 200, description = "A page of sandboxes", body = SandboxList),
        (status = 400, description = "Invalid filter or cursor", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_sandboxes(
    State(engine): State<Arc<Engine>>,
    ApiQuery(p): ApiQuery<ListParams>,
) -> ApiResult<Json<SandboxList>> {
    let states = match p.state.as_deref().filter(|s| !s.is_empty()) {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|s| {
                SandboxState::parse(s.trim())
                    .ok_or_else(|| Error::InvalidRequest(format!("unknown state {s:?}")))
            })
            .collect::<Result<_, _>>()?,
    };
    let metadata = match p.metadata.as_deref() {
        None => Vec::new(),
        Some(q) => parse_pairs(q)?,
    };
    let limit = p.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(Error::InvalidRequest("limit must be 1..=1000".into()).into());
    }
    let page = engine
        .list_sandboxes(ListQuery {
            states,
            metadata,
            limit,
            cursor: p.cursor,
            ..Default::default()
        })
        .await?;
    Ok(Json(SandboxList {
        sandboxes: page.items,
        next_cursor: page.next_cursor,
    }))
}

/// Parses `k=v&k2=v2` (already URL-decoded once by the query extractor).
fn parse_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    if let Some(bad) = q.split('&').find(|p| !p.is_empty() && !p.contains('=')) {
        return Err(
            Error::InvalidRequest(format!("metadata filter {bad:?} is not key=value")).into(),
        );
    }
    Ok(form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect())
}

/// Get one sandbox.
#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes", operation_id = "getSandbox",
    params(SandboxPath),
    responses(
        (status = 200, description = "The sandbox", body = Sandbox),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn get_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(engine.get_sandbox(&p.id).await?))
}

/// Delete a sandbox: its VM, disk and directory are removed.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes", operation_id = "deleteSandbox",
    params(SandboxPath, DeleteParams),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn delete_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiQuery(q): ApiQuery<DeleteParams>,
) -> ApiResult<StatusCode> {
    engine
        .kill_sandbox_with_snapshots(&p.id, q.delete_snapshots.unwrap_or(false))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Options of a delete.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeleteParams {
    /// Also delete the sandbox's named snapshots (default `false`: they stay restorable). Its
    /// checkpoints always go with it.
    pub delete_snapshots: Option<bool>,
}

/// Pause a sandbox.
///
/// Without a body (or `{}`): the vCPUs stop and the VM stays in memory (`paused`; resume is
/// instant). `{"memory": true}`: pause to disk: memory, processes and disk go into a signed
/// snapshot and the VM process exits, freeing its RAM (`suspended`); resume restores it with the
/// same id and address, processes where they were. `{"memory": false}`: only the disk is kept and
/// resume boots it again.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/pause", tag = "sandboxes", operation_id = "pauseSandbox",
    params(SandboxPath),
    request_body(content = Option<PauseRequest>, description = "How to pause (optional)"),
    responses(
        (status = 200, description = "Paused", body = Sandbox),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody),
        (status = 507, description = "No space left on the host for the snapshot", body = ErrorBody)))]
pub async fn pause_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJsonOrDefault(req): ApiJsonOrDefault<PauseRequest>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(match req.memory {
        None => engine.pause_sandbox(&p.id).await?,
        Some(memory) => engine.suspend_sandbox(&p.id, memory).await?,
    }))
}

/// Resume a paused sandbox (restoring it from disk when it was paused to disk, after its
/// snapshot's signature and hashes are checked; a refused snapshot leaves it `suspended`).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes", operation_id = "resumeSandbox",
    params(SandboxPath),
    responses(
        (status = 200, description = "Running again", body = Sandbox),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not paused, or its snapshot is incompatible with this host", body = ErrorBody),
        (status = 422, description = "Its snapshot failed its checks", body = ErrorBody)))]
pub async fn resume_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(engine.resume_sandbox(&p.id).await?))
}

/// Stop a sandbox: the VM shuts down, the disk is kept.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/stop", tag = "sandboxes", operation_id = "stopSandbox",
    params(SandboxPath),
    responses(
        (status = 200, description = "Stopped", body = Sandbox),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running or paused", body = ErrorBody)))]
pub async fn stop_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(engine.stop_sandbox(&p.id).await?))
}

/// Archive a stopped or paused sandbox to the object store: its disk (and, when paused, its
/// memory and processes) leave the host, content-addressed, so chunks stored before are not sent
/// again. `start` brings it back, onto any host sharing the store and database. The transfer
/// (chunks sent and reused, bytes, time) is in the sandbox's `archived` event.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/archive", tag = "sandboxes", operation_id = "archiveSandbox",
    params(SandboxPath),
    responses(
        (status = 200, description = "Archived", body = Sandbox),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not stopped or paused", body = ErrorBody),
        (status = 502, description = "The object store failed or is unreachable (`object_store_unavailable`); the sandbox stays on this host as it was", body = ErrorBody)))]
pub async fn archive_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(engine.archive_sandbox(&p.id).await?))
}

/// Start a stopped, failed, paused-to-disk or archived sandbox again (an archived one is
/// brought back from the object store first).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/start", tag = "sandboxes", operation_id = "startSandbox",
    params(SandboxPath),
    responses(
        (status = 200, description = "Running", body = Sandbox),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not stopped", body = ErrorBody),
        (status = 422, description = "Its archive cannot be restored: a chunk is missing or altered (`archive_corrupt`), or its signature fails; nothing was started", body = ErrorBody),
        (status = 502, description = "The VM failed to boot, or the object store failed (`object_store_unavailable`)", body = ErrorBody)))]
pub async fn start_sandbox(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(engine.start_sandbox(&p.id).await?))
}

/// Set when the sandbox expires.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes", operation_id = "setSandboxTimeout",
    params(SandboxPath), request_body = SetTimeout,
    responses(
        (status = 200, description = "Updated", body = Sandbox),
        (status = 400, description = "Invalid timeout", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn set_timeout(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(body): ApiJson<SetTimeout>,
) -> ApiResult<Json<Sandbox>> {
    Ok(Json(engine.set_timeout(&p.id, body.timeout_secs).await?))
}

/// CPU, memory and disk usage, measured inside the guest.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/metrics", tag = "sandboxes", operation_id = "getSandboxMetrics",
    params(SandboxPath),
    responses(
        (status = 200, description = "Current usage", body = SandboxMetrics),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody),
        (status = 409, description = "Not running", body = ErrorBody)))]
pub async fn metrics(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<SandboxMetrics>> {
    Ok(Json(engine.sandbox_metrics(&p.id).await?))
}

/// The last lines of the guest's serial console (kernel messages, agent log).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/console", tag = "sandboxes", operation_id = "getSandboxConsole",
    params(SandboxPath, ConsoleParams),
    responses(
        (status = 200, description = "Console tail", body = ConsoleLog),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn console(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiQuery(q): ApiQuery<ConsoleParams>,
) -> ApiResult<Json<ConsoleLog>> {
    Ok(Json(ConsoleLog {
        text: engine.console_log(&p.id, q.lines.unwrap_or(200)).await?,
    }))
}

/// The sandbox's audit trail: every state change with its reason.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/events", tag = "sandboxes", operation_id = "listSandboxEvents",
    params(SandboxPath),
    responses(
        (status = 200, description = "Events, oldest first", body = Vec<SandboxEvent>),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn events(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<Vec<SandboxEvent>>> {
    let events = engine.sandbox_events(&p.id).await?;
    Ok(Json(
        events
            .into_iter()
            .map(|(at, kind, detail)| SandboxEvent { at, kind, detail })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_filters_parse() {
        let pairs = parse_pairs("team=ml&env=dev%20x").unwrap();
        assert_eq!(
            pairs,
            vec![("team".into(), "ml".into()), ("env".into(), "dev x".into())]
        );
        assert!(parse_pairs("novalue").is_err());
    }
}
