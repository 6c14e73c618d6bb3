//! `/process/pty`: interactive terminals over WebSocket, on the engine's PTY processes.
//!
//! - `GET /process/pty/create-connect?id&cols&rows[&cwd]` (WebSocket; current SDKs): starts a
//!   login shell on a PTY and attaches to it in one step. `POST /process/pty` + `GET
//!   /process/pty/{id}/connect` (older SDKs) does the same in two; `connect` also re-attaches to a
//!   running PTY after a disconnect.
//! - The server echoes `X-Daytona-Pty-Exit-Control` when it is offered (the TypeScript SDK's
//!   WebSocket refuses a handshake without an echo), reads env vars from an offered
//!   `X-Daytona-Pty-Envs~<base64url JSON>`, sends `{"type":"control","status":"connected"}`, then
//!   the terminal's output as binary frames; keystrokes come back as binary (or text) frames. When
//!   the shell exits: `{"type":"control","status":"exited","exitCode":N}` (with exit control),
//!   then a close frame 1000 whose reason is `{"exitCode":N}`.
//! - A dropped WebSocket detaches; the shell keeps running until it exits or `DELETE`.
//!
//! The processes are the engine's (tagged `daytona-pty:<id>`); this module only remembers the
//! Daytona-side details (id, size, cwd, envs) per sandbox boot.

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Extension, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use platinum_engine::PtySize;
use platinum_engine::model::{CommandLine, ExecRequest, Sandbox};
use platinum_engine::{ExecEvent, ExecStream, StreamOptions};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::auth::{ToolboxSandbox, query_param};
use crate::error::{DJson, DPath, DResult, DaytonaError};
use crate::toolbox::sessions::{offered_protocols, upgrade, wants_websocket};

/// The subprotocol asking for exit notifications.
pub const EXIT_CONTROL: &str = "X-Daytona-Pty-Exit-Control";
/// Prefix of the subprotocol carrying env vars.
const ENVS_PREFIX: &str = "X-Daytona-Pty-Envs~";
const SIGKILL: i32 = 9;

/// What is remembered about one PTY.
#[derive(Debug, Clone)]
struct PtyEntry {
    pid: u32,
    boot: u32,
    cwd: String,
    envs: BTreeMap<String, String>,
    size: PtySize,
    created_at: OffsetDateTime,
    lazy_start: bool,
    /// Attached at least once (later attaches do not replay old output).
    attached: bool,
}

/// PTYs by (sandbox id, PTY id).
#[derive(Default)]
pub struct PtyRegistry {
    map: Mutex<HashMap<(String, String), PtyEntry>>,
}

impl PtyRegistry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), PtyEntry>> {
        self.map.lock().expect("pty registry")
    }

    /// Entries of the sandbox's current boot (older ones are dropped).
    fn of(&self, s: &Sandbox) -> Vec<(String, PtyEntry)> {
        let boot = s.runtime.as_ref().map(|r| r.pid);
        let mut map = self.lock();
        map.retain(|(sid, _), e| sid != &s.id || Some(e.boot) == boot);
        let mut list: Vec<_> = map
            .iter()
            .filter(|((sid, _), _)| sid == &s.id)
            .map(|((_, id), e)| (id.clone(), e.clone()))
            .collect();
        list.sort_by_key(|(_, e)| e.created_at);
        list
    }

    /// Forgets every PTY of a sandbox (it was deleted).
    pub fn forget(&self, sandbox: &str) {
        self.lock().retain(|(sid, _), _| sid != sandbox);
    }

    fn get(&self, s: &Sandbox, id: &str) -> DResult<PtyEntry> {
        self.of(s)
            .into_iter()
            .find(|(pid, _)| pid == id)
            .map(|(_, e)| e)
            .ok_or_else(|| DaytonaError::not_found(format!("PTY session {id} not found")))
    }
}

/// Which PTY processes are running, by pid.
async fn running_pids(ctx: &Ctx, id: &str) -> DResult<Vec<u32>> {
    Ok(ctx
        .engine
        .list_processes(id)
        .await?
        .into_iter()
        .filter(|p| p.running)
        .map(|p| p.pid)
        .collect())
}

fn info_json(id: &str, e: &PtyEntry, active: bool) -> Value {
    json!({
        "id": id,
        "cwd": e.cwd,
        "envs": e.envs,
        "cols": e.size.cols,
        "rows": e.size.rows,
        "createdAt": e.created_at.format(&Rfc3339).unwrap_or_default(),
        "active": active,
        "lazyStart": e.lazy_start,
    })
}

fn check_id(id: &str) -> DResult<()> {
    if id.is_empty() || id.len() > 256 || id.chars().any(|c| c.is_control() || c == '/') {
        return Err(DaytonaError::bad_request(format!(
            "invalid PTY session id {id:?}"
        )));
    }
    Ok(())
}

fn check_size(cols: u16, rows: u16) -> DResult<PtySize> {
    if !(1..=1000).contains(&cols) || !(1..=1000).contains(&rows) {
        return Err(DaytonaError::bad_request("cols and rows must be 1-1000"));
    }
    Ok(PtySize { cols, rows })
}

/// Starts a shell on a PTY and records it; returns its output stream.
async fn start(
    ctx: &Ctx,
    s: &Sandbox,
    id: &str,
    cwd: Option<String>,
    envs: BTreeMap<String, String>,
    size: PtySize,
    lazy_start: bool,
) -> DResult<ExecStream> {
    check_id(id)?;
    platinum_engine::env::check_env(&envs)?;
    if let Ok(existing) = ctx.ptys.get(s, id)
        && running_pids(ctx, &s.id).await?.contains(&existing.pid)
    {
        return Err(DaytonaError::new(
            StatusCode::CONFLICT,
            "CONFLICT",
            format!("PTY session {id} already exists"),
        ));
    }
    let req = ExecRequest {
        command: CommandLine::Argv(vec!["/bin/bash".into(), "-l".into()]),
        env: envs.clone(),
        cwd: cwd.clone().filter(|c| !c.is_empty()),
        user: None,
        timeout_ms: None,
        stdin: None,
        background: false,
    };
    let opts = StreamOptions {
        stdin: true,
        pty: Some(size),
        tag: Some(format!("daytona-pty:{id}")),
    };
    let stream = ctx.engine.exec_stream(&s.id, req, opts).await?;
    // exec_stream required the sandbox running, so it has a boot now.
    let boot = ctx
        .engine
        .get_sandbox(&s.id)
        .await?
        .runtime
        .map(|r| r.pid)
        .unwrap_or_default();
    let entry = PtyEntry {
        pid: stream.pid(),
        boot,
        cwd: cwd.unwrap_or_else(|| "~".into()),
        envs,
        size,
        created_at: OffsetDateTime::now_utc(),
        lazy_start,
        attached: false,
    };
    tracing::info!(sandbox = %s.id, pty = %id, pid = entry.pid, "pty started");
    ctx.ptys
        .lock()
        .insert((s.id.clone(), id.to_string()), entry);
    Ok(stream)
}

/// `PtyCreateRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    id: String,
    cwd: Option<String>,
    envs: Option<BTreeMap<String, String>>,
    cols: Option<u16>,
    rows: Option<u16>,
    lazy_start: Option<bool>,
}

/// `POST /process/pty`: 201 `{sessionId}`; the shell runs until attached with `connect`.
pub async fn create(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CreateRequest>,
) -> DResult<Response> {
    let size = check_size(req.cols.unwrap_or(80), req.rows.unwrap_or(24))?;
    // Dropping the stream detaches; `connect` re-attaches and replays what it wrote meanwhile.
    drop(
        start(
            &ctx,
            &s,
            &req.id,
            req.cwd,
            req.envs.unwrap_or_default(),
            size,
            req.lazy_start.unwrap_or(false),
        )
        .await?,
    );
    Ok((StatusCode::CREATED, Json(json!({ "sessionId": req.id }))).into_response())
}

/// `GET /process/pty` → `{sessions}`.
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
) -> DResult<Json<Value>> {
    let entries = ctx.ptys.of(&s);
    let running = if entries.is_empty() {
        Vec::new()
    } else {
        running_pids(&ctx, &s.id).await?
    };
    let sessions: Vec<Value> = entries
        .iter()
        .map(|(id, e)| info_json(id, e, running.contains(&e.pid)))
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

/// `{sessionId}` path.
#[derive(Debug, Deserialize)]
pub struct PtyPath {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// `GET /process/pty/{sessionId}`.
pub async fn get(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<PtyPath>,
) -> DResult<Json<Value>> {
    let e = ctx.ptys.get(&s, &p.session_id)?;
    let active = running_pids(&ctx, &s.id).await?.contains(&e.pid);
    Ok(Json(info_json(&p.session_id, &e, active)))
}

/// `DELETE /process/pty/{sessionId}` → `{}`: kills the shell and what it started.
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<PtyPath>,
) -> DResult<Json<Value>> {
    let e = ctx.ptys.get(&s, &p.session_id)?;
    ctx.ptys
        .lock()
        .remove(&(s.id.clone(), p.session_id.clone()));
    if running_pids(&ctx, &s.id).await?.contains(&e.pid) {
        ctx.engine.signal_process(&s.id, e.pid, SIGKILL).await?;
    }
    tracing::info!(sandbox = %s.id, pty = %p.session_id, "pty deleted");
    Ok(Json(json!({})))
}

/// `{cols, rows}` of resize.
#[derive(Debug, Deserialize)]
pub struct ResizeRequest {
    cols: u16,
    rows: u16,
}

/// `POST /process/pty/{sessionId}/resize` → the session; 410 once it ended.
pub async fn resize(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<PtyPath>,
    DJson(req): DJson<ResizeRequest>,
) -> DResult<Json<Value>> {
    let size = check_size(req.cols, req.rows)?;
    let e = ctx.ptys.get(&s, &p.session_id)?;
    if !running_pids(&ctx, &s.id).await?.contains(&e.pid) {
        return Err(DaytonaError::new(
            StatusCode::GONE,
            "GONE",
            format!("PTY session {} has ended", p.session_id),
        ));
    }
    ctx.engine.resize_pty(&s.id, e.pid, size).await?;
    let mut map = ctx.ptys.lock();
    let entry = map
        .get_mut(&(s.id.clone(), p.session_id.clone()))
        .ok_or_else(|| {
            DaytonaError::not_found(format!("PTY session {} not found", p.session_id))
        })?;
    entry.size = size;
    Ok(Json(info_json(&p.session_id, entry, true)))
}

/// The subprotocol to echo: exit control when offered, else the first one offered.
fn echo_protocol(offered: &[String]) -> Option<String> {
    offered
        .iter()
        .find(|p| p.as_str() == EXIT_CONTROL)
        .or_else(|| offered.first())
        .cloned()
}

/// Env vars from an offered `X-Daytona-Pty-Envs~<base64url(JSON)>`.
fn envs_from(offered: &[String]) -> DResult<BTreeMap<String, String>> {
    let Some(b64) = offered.iter().find_map(|p| p.strip_prefix(ENVS_PREFIX)) else {
        return Ok(BTreeMap::new());
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .map_err(|_| DaytonaError::bad_request("PTY envs subprotocol is not base64url"))?;
    serde_json::from_slice(&raw).map_err(|_| {
        DaytonaError::bad_request("PTY envs subprotocol is not a JSON object of strings")
    })
}

/// `GET /process/pty/create-connect?id&cols&rows[&cwd]` (WebSocket).
pub async fn create_connect(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    req: Request,
) -> DResult<Response> {
    if !wants_websocket(&req) {
        return Err(DaytonaError::bad_request(
            "create-connect needs a WebSocket upgrade",
        ));
    }
    let id = query_param(&req, "id").ok_or_else(|| DaytonaError::bad_request("id is required"))?;
    let num = |value: Option<String>, name: &str, default: u16| -> DResult<u16> {
        value.map_or(Ok(default), |v| {
            v.parse()
                .map_err(|_| DaytonaError::bad_request(format!("{name} must be a number")))
        })
    };
    let size = check_size(
        num(query_param(&req, "cols"), "cols", 80)?,
        num(query_param(&req, "rows"), "rows", 24)?,
    )?;
    let cwd = query_param(&req, "cwd");
    let offered = offered_protocols(&req);
    let envs = envs_from(&offered)?;
    let exit_control = offered.iter().any(|p| p == EXIT_CONTROL);
    let ws = upgrade(req, echo_protocol(&offered)).await?;
    let stream = start(&ctx, &s, &id, cwd, envs, size, false).await?;
    mark_attached(&ctx, &s.id, &id);
    let sandbox = s.id.clone();
    Ok(ws.on_upgrade(move |socket| serve(socket, sandbox, id, stream, exit_control)))
}

fn mark_attached(ctx: &Ctx, sandbox: &str, id: &str) -> bool {
    let mut map = ctx.ptys.lock();
    match map.get_mut(&(sandbox.to_string(), id.to_string())) {
        Some(e) => !std::mem::replace(&mut e.attached, true),
        None => false,
    }
}

/// `GET /process/pty/{sessionId}/connect` (WebSocket).
pub async fn connect(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<PtyPath>,
    req: Request,
) -> DResult<Response> {
    if !wants_websocket(&req) {
        return Err(DaytonaError::bad_request(
            "connect needs a WebSocket upgrade",
        ));
    }
    let e = ctx.ptys.get(&s, &p.session_id)?;
    let offered = offered_protocols(&req);
    let exit_control = offered.iter().any(|p| p == EXIT_CONTROL);
    let ws = upgrade(req, echo_protocol(&offered)).await?;
    // The first attach (after `POST /process/pty`) replays what the shell wrote meanwhile.
    let first = mark_attached(&ctx, &s.id, &p.session_id);
    let stream = ctx.engine.attach(&s.id, e.pid, first).await?;
    let sandbox = s.id.clone();
    let id = p.session_id.clone();
    Ok(ws.on_upgrade(move |socket| serve(socket, sandbox, id, stream, exit_control)))
}

/// What the reader task forwards.
enum Out {
    Data(bytes::Bytes),
    Exit(i32, Option<String>),
    Failed(String),
}

/// Pumps one attached PTY between the WebSocket and the process.
async fn serve(
    mut socket: WebSocket,
    sandbox: String,
    id: String,
    mut stream: ExecStream,
    exit_control: bool,
) {
    let connected = json!({"type": "control", "status": "connected"}).to_string();
    if socket.send(Message::Text(connected.into())).await.is_err() {
        return;
    }
    let stdin = stream.stdin();
    // A task of its own reads the process, so no read is ever cancelled half-way.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Out>(64);
    let reader = tokio::spawn(async move {
        loop {
            let out = match stream.next().await {
                Ok(Some(ExecEvent::Stdout(b) | ExecEvent::Stderr(b))) => Out::Data(b),
                Ok(Some(ExecEvent::Lost(_))) => continue,
                Ok(Some(ExecEvent::Exited(st))) => {
                    let reason = st.signal.map(|sig| format!("killed by signal {sig}"));
                    Out::Exit(st.shell_code(), reason)
                }
                Ok(None) => return,
                Err(e) => Out::Failed(e.to_string()),
            };
            let last = !matches!(out, Out::Data(_));
            if tx.send(out).await.is_err() || last {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Data(b)) => {
                    if socket.send(Message::Binary(b)).await.is_err() {
                        break;
                    }
                }
                Some(Out::Exit(code, reason)) => {
                    if exit_control {
                        let mut msg = json!({"type": "control", "status": "exited", "exitCode": code});
                        if let Some(r) = &reason {
                            msg["exitReason"] = json!(r);
                        }
                        let _ = socket.send(Message::Text(msg.to_string().into())).await;
                    }
                    let mut why = json!({"exitCode": code});
                    if let Some(r) = reason {
                        why["exitReason"] = json!(r);
                    }
                    let close = CloseFrame { code: 1000, reason: why.to_string().into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    tracing::info!(%sandbox, pty = %id, code, "pty exited");
                    break;
                }
                Some(Out::Failed(error)) => {
                    let msg = json!({"type": "control", "status": "error", "error": error});
                    let _ = socket.send(Message::Text(msg.to_string().into())).await;
                    let close = CloseFrame { code: 1011, reason: json!({"error": error}).to_string().into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    if let Err(e) = stdin.write(&b).await {
                        tracing::debug!(%sandbox, pty = %id, error = %e, "pty input failed");
                    }
                }
                Some(Ok(Message::Text(t))) => {
                    if let Err(e) = stdin.write(t.as_bytes()).await {
                        tracing::debug!(%sandbox, pty = %id, error = %e, "pty input failed");
                    }
                }
                Some(Ok(_)) => {}
                // The client went away: detach; the shell keeps running.
                Some(Err(_)) | None => break,
            },
        }
    }
    reader.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subprotocols_echo_and_envs() {
        let envs = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"A":"1"}"#);
        let offered = vec![format!("{ENVS_PREFIX}{envs}"), EXIT_CONTROL.to_string()];
        assert_eq!(echo_protocol(&offered).as_deref(), Some(EXIT_CONTROL));
        assert_eq!(envs_from(&offered).unwrap()["A"], "1");
        assert_eq!(
            echo_protocol(&["X-Daytona-SDK-Version~1".into()]).as_deref(),
            Some("X-Daytona-SDK-Version~1")
        );
        assert_eq!(echo_protocol(&[]), None);
        assert!(envs_from(&[format!("{ENVS_PREFIX}!!")]).is_err());
        assert!(envs_from(&[]).unwrap().is_empty());
    }

    #[test]
    fn sizes_are_bounded() {
        assert!(check_size(80, 24).is_ok());
        assert!(check_size(0, 24).is_err());
        assert!(check_size(80, 1001).is_err());
    }
}
