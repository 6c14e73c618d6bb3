//! `/process/session`: Daytona background shells on the engine's sessions
//! (`platinum_engine::commands::sessions`).
//!
//! - `POST /process/session` `{sessionId}` → 201; 409 when it exists.
//! - `POST /process/session/{sid}/exec` `{command, runAsync}`: sync → 200
//!   `{cmdId, output, stdout, stderr, exitCode}`; async → 202 `{cmdId}`.
//! - `GET .../command/{cid}` → `{id, command, exitCode}` (`null` while running).
//! - `GET .../command/{cid}/logs` → `{output, stdout, stderr}`; with `?follow=true` over a
//!   WebSocket: binary frames of the marked log (`01 01 01` before stdout lines, `02 02 02`
//!   before stderr lines) as it grows, then a close with code 1000 once the command ended. A
//!   plain HTTP request with `follow=true` gets the same bytes as a chunked `text/plain` body.
//! - `POST .../command/{cid}/input` `{data}` → 204; 410 once the command ended.
//! - `DELETE /process/session/{sid}` → 204 (kills the shell and what it started).
//!
//! `output` carries the markers (as Daytona's daemon returns it to current SDKs); `stdout` and
//! `stderr` are the plain streams.

use axum::Json;
use axum::body::Body;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, FromRequestParts, Request, State};
use axum::http::header::{CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL, UPGRADE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use platinum_engine::commands::sessions::{SessionInfo, SessionLogs};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Ctx;
use crate::auth::{ToolboxSandbox, query_param};
use crate::error::{DJson, DPath, DResult, DaytonaError};

/// `{sessionId}` path.
#[derive(Debug, Deserialize)]
pub struct SessionPath {
    #[serde(rename = "sessionId")]
    session_id: String,
}

/// `{sessionId}/command/{commandId}` path.
#[derive(Debug, Deserialize)]
pub struct CommandPath {
    #[serde(rename = "sessionId")]
    session_id: String,
    #[serde(rename = "commandId")]
    command_id: String,
}

/// `CreateSessionRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    session_id: String,
}

/// `SessionExecuteRequest`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionExecute {
    command: String,
    #[serde(default)]
    run_async: Option<bool>,
    /// Deprecated alias of `runAsync`.
    #[serde(default, rename = "async")]
    async_alias: Option<bool>,
    /// Input is never echoed into logs here, so this changes nothing.
    #[serde(default)]
    #[allow(dead_code)]
    suppress_input_echo: Option<bool>,
}

/// `SessionSendInputRequest`.
#[derive(Debug, Deserialize)]
pub struct SendInput {
    data: String,
}

fn session_json(s: &SessionInfo) -> Value {
    json!({
        "sessionId": s.id,
        "commands": s.commands.iter().map(|c| json!({
            "id": c.id,
            "command": c.command,
            "exitCode": c.exit_code,
        })).collect::<Vec<_>>(),
    })
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn logs_json(l: &SessionLogs) -> Value {
    json!({ "output": text(&l.output), "stdout": text(&l.stdout), "stderr": text(&l.stderr) })
}

/// `POST /process/session`: 201, no body.
pub async fn create(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CreateSession>,
) -> DResult<StatusCode> {
    ctx.engine.create_session(&s.id, &req.session_id).await?;
    Ok(StatusCode::CREATED)
}

/// `GET /process/session`.
pub async fn list(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
) -> DResult<Json<Value>> {
    let sessions = ctx.engine.list_sessions(&s.id).await?;
    Ok(Json(Value::Array(
        sessions.iter().map(session_json).collect(),
    )))
}

/// `GET /process/session/{sessionId}`.
pub async fn get(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<SessionPath>,
) -> DResult<Json<Value>> {
    Ok(Json(session_json(
        &ctx.engine.get_session(&s.id, &p.session_id).await?,
    )))
}

/// `DELETE /process/session/{sessionId}`: 204.
pub async fn delete(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<SessionPath>,
) -> DResult<StatusCode> {
    ctx.engine.delete_session(&s.id, &p.session_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /process/session/{sessionId}/exec`.
pub async fn exec(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<SessionPath>,
    DJson(req): DJson<SessionExecute>,
) -> DResult<Response> {
    let cid = ctx
        .engine
        .session_exec(&s.id, &p.session_id, &req.command)
        .await?;
    if req.run_async.or(req.async_alias).unwrap_or(false) {
        return Ok((StatusCode::ACCEPTED, Json(json!({ "cmdId": cid }))).into_response());
    }
    let logs = ctx.engine.session_wait(&s.id, &p.session_id, &cid).await?;
    let mut body = logs_json(&logs);
    body["cmdId"] = json!(cid);
    body["exitCode"] = json!(logs.exit_code);
    Ok(Json(body).into_response())
}

/// `GET /process/session/{sessionId}/command/{commandId}`.
pub async fn command(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<CommandPath>,
) -> DResult<Json<Value>> {
    let c = ctx
        .engine
        .session_command(&s.id, &p.session_id, &p.command_id)
        .await?;
    Ok(Json(
        json!({ "id": c.id, "command": c.command, "exitCode": c.exit_code }),
    ))
}

/// Whether a request asks for a WebSocket.
pub fn wants_websocket(req: &Request) -> bool {
    req.headers()
        .get(UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// The subprotocols a WebSocket request offers.
pub fn offered_protocols(req: &Request) -> Vec<String> {
    req.headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Completes a WebSocket upgrade, echoing the first offered subprotocol (clients that offer one
/// refuse a handshake that echoes none).
pub async fn upgrade(req: Request, echo: Option<String>) -> DResult<WebSocketUpgrade> {
    let (mut parts, _) = req.into_parts();
    let mut ws = WebSocketUpgrade::from_request_parts(&mut parts, &())
        .await
        .map_err(|r| DaytonaError::bad_request(format!("WebSocket upgrade: {}", r.body_text())))?;
    if let Some(p) = echo.and_then(|p| HeaderValue::from_str(&p).ok()) {
        ws.set_selected_protocol(p);
    }
    Ok(ws)
}

/// `GET .../command/{commandId}/logs[?follow=true]`.
pub async fn logs(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<CommandPath>,
    req: Request,
) -> DResult<Response> {
    let follow = query_param(&req, "follow").is_some_and(|v| v == "true" || v == "1");
    if !follow {
        let logs = ctx
            .engine
            .session_logs(&s.id, &p.session_id, &p.command_id)
            .await?;
        return Ok(Json(logs_json(&logs)).into_response());
    }
    let stream = ctx
        .engine
        .follow_session_logs(&s.id, &p.session_id, &p.command_id)
        .await?;
    if !wants_websocket(&req) {
        let body = Body::from_stream(stream.map(Ok::<_, std::convert::Infallible>));
        return Ok(([(CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response());
    }
    let echo = offered_protocols(&req).into_iter().next();
    let ws = upgrade(req, echo).await?;
    let command = p.command_id.clone();
    Ok(ws.on_upgrade(move |socket| follow_logs(socket, Box::pin(stream), command)))
}

async fn follow_logs(
    mut socket: WebSocket,
    mut stream: std::pin::Pin<Box<dyn futures::Stream<Item = bytes::Bytes> + Send>>,
    command: String,
) {
    loop {
        tokio::select! {
            chunk = stream.next() => match chunk {
                Some(bytes) => {
                    if socket.send(Message::Binary(bytes)).await.is_err() {
                        return;
                    }
                }
                None => {
                    let close = CloseFrame { code: 1000, reason: "command finished".into() };
                    let _ = socket.send(Message::Close(Some(close))).await;
                    tracing::debug!(%command, "log follow finished");
                    return;
                }
            },
            msg = socket.recv() => match msg {
                // Pings are answered by the WebSocket layer; input is not expected here.
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// `POST .../command/{commandId}/input`: 204.
pub async fn input(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath(p): DPath<CommandPath>,
    DJson(req): DJson<SendInput>,
) -> DResult<StatusCode> {
    ctx.engine
        .session_input(&s.id, &p.session_id, &p.command_id, &req.data)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /process/session/entrypoint[/logs]`: sandboxes here start from templates, which have
/// no entrypoint.
pub async fn entrypoint() -> DaytonaError {
    DaytonaError::not_found(
        "this sandbox has no entrypoint session: Platinum templates start no entrypoint process",
    )
}
