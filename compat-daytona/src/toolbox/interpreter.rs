//! `/process/interpreter`: Daytona's stateful code interpreter (`sandbox.code_interpreter`) on
//! the engine's code contexts (`platinum_engine::commands::code`), the same ones the E2B code
//! interpreter uses.
//!
//! - `POST /process/interpreter/context` `{cwd?, language?}` → `{id, cwd, createdAt, active,
//!   language}`; `GET` lists them as `{contexts}`; `DELETE .../context/{id}` → `{}`.
//! - `GET /process/interpreter/execute` (WebSocket): the client sends one text frame
//!   `{code, contextId?, envs?, timeout?}`; the server streams `{"type":"stdout"|"stderr","text"}`
//!   and at most one `{"type":"error","name","value","traceback"}`, then
//!   `{"type":"control","text":"completed"}` and a close with 1000. A run past its `timeout`
//!   (seconds) is interrupted and the socket closes with 4008. Without `contextId` the code runs
//!   in the shared default Python context, whose state persists across calls. A client that goes
//!   away interrupts its run.

use axum::Json;
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{Extension, Request, State};
use platinum_engine::commands::code::{CodeEvent, CodeLanguage, CodeTarget, RunCode};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::auth::ToolboxSandbox;
use crate::error::{DJson, DPath, DResult, DaytonaError};
use crate::toolbox::sessions::{offered_protocols, upgrade, wants_websocket};

/// Close code the SDKs read as "the run timed out".
const TIMEOUT_CLOSE: u16 = 4008;
/// How long a connected client has to send its request.
const REQUEST_WAIT: Duration = Duration::from_secs(30);

fn context_json(c: &platinum_engine::commands::code::CodeContext) -> Value {
    json!({
        "id": c.id,
        "cwd": c.cwd,
        "language": c.language.as_str(),
        "active": true,
        // The engine does not record when a context started; this is when it was reported.
        "createdAt": OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default(),
    })
}

/// `CreateContextRequest`.
#[derive(Debug, Deserialize)]
pub struct CreateContext {
    cwd: Option<String>,
    language: Option<String>,
}

/// `POST /process/interpreter/context`.
pub async fn create_context(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DJson(req): DJson<CreateContext>,
) -> DResult<Json<Value>> {
    let language = CodeLanguage::parse(req.language.as_deref())?;
    let c = ctx
        .engine
        .create_code_context(&s.id, language, req.cwd)
        .await?;
    Ok(Json(context_json(&c)))
}

/// `GET /process/interpreter/context` → `{contexts}`.
pub async fn list_contexts(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
) -> DResult<Json<Value>> {
    let list = ctx.engine.list_code_contexts(&s.id).await?;
    Ok(Json(
        json!({ "contexts": list.iter().map(context_json).collect::<Vec<_>>() }),
    ))
}

/// `DELETE /process/interpreter/context/{id}` → `{}`.
pub async fn delete_context(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    DPath((_, id)): DPath<(String, String)>,
) -> DResult<Json<Value>> {
    ctx.engine.remove_code_context(&s.id, &id).await?;
    Ok(Json(json!({})))
}

/// The request frame of an execute.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ExecuteFrame {
    code: String,
    context_id: Option<String>,
    envs: Option<BTreeMap<String, String>>,
    timeout: Option<u64>,
}

/// `GET /process/interpreter/execute` (WebSocket).
pub async fn execute(
    State(ctx): State<Ctx>,
    Extension(ToolboxSandbox(s)): Extension<ToolboxSandbox>,
    req: Request,
) -> DResult<axum::response::Response> {
    if !wants_websocket(&req) {
        return Err(DaytonaError::bad_request(
            "interpreter/execute needs a WebSocket upgrade",
        ));
    }
    let echo = offered_protocols(&req).into_iter().next();
    let ws = upgrade(req, echo).await?;
    Ok(ws.on_upgrade(move |socket| serve(socket, ctx, s.id)))
}

async fn close(socket: &mut WebSocket, code: u16, reason: &str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn send(socket: &mut WebSocket, v: Value) -> bool {
    socket
        .send(Message::Text(v.to_string().into()))
        .await
        .is_ok()
}

/// What the run task forwards.
enum Out {
    Event(CodeEvent),
    Done,
    Timeout,
    Failed(DaytonaError),
}

async fn serve(mut socket: WebSocket, ctx: Ctx, sandbox: String) {
    let frame = match tokio::time::timeout(REQUEST_WAIT, socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => serde_json::from_str::<ExecuteFrame>(t.as_str()),
        Ok(Some(Ok(Message::Binary(b)))) => serde_json::from_slice::<ExecuteFrame>(&b),
        _ => {
            close(&mut socket, 1008, "expected one JSON request frame").await;
            return;
        }
    };
    let frame = match frame {
        Ok(f) => f,
        Err(e) => {
            close(&mut socket, 1007, &format!("invalid request: {e}")).await;
            return;
        }
    };
    let env = frame.envs.unwrap_or_default();
    if let Err(e) = platinum_engine::env::check_env(&env) {
        close(&mut socket, 1007, &e.to_string()).await;
        return;
    }
    let run = RunCode {
        code: frame.code,
        target: match frame.context_id.filter(|c| !c.is_empty()) {
            Some(id) => CodeTarget::Context(id),
            None => CodeTarget::Language(CodeLanguage::Python),
        },
        env,
        timeout: frame.timeout.filter(|t| *t > 0).map(Duration::from_secs),
    };
    // The run is read by a task of its own, so no read of it is cancelled half-way; aborting the
    // task drops the run, which interrupts it.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Out>(64);
    let engine = ctx.engine.clone();
    let task = tokio::spawn(async move {
        let mut run = match engine.run_code(&sandbox, run).await {
            Ok(r) => r,
            Err(e) => {
                let _ = tx.send(Out::Failed(e.into())).await;
                return;
            }
        };
        loop {
            let out = match run.next().await {
                Ok(Some(ev)) => Out::Event(ev),
                Ok(None) => Out::Done,
                Err(e) if e.code() == platinum_engine::ErrorCode::ExecTimeout => Out::Timeout,
                Err(e) => Out::Failed(e.into()),
            };
            let last = !matches!(out, Out::Event(_));
            if tx.send(out).await.is_err() || last {
                return;
            }
        }
    });
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Event(CodeEvent::Stdout(text))) => {
                    if !send(&mut socket, json!({"type": "stdout", "text": text})).await { break; }
                }
                Some(Out::Event(CodeEvent::Stderr(text))) => {
                    if !send(&mut socket, json!({"type": "stderr", "text": text})).await { break; }
                }
                Some(Out::Event(CodeEvent::Error(e))) => {
                    let msg = json!({"type": "error", "name": e.name, "value": e.value, "traceback": e.traceback});
                    if !send(&mut socket, msg).await { break; }
                }
                // Daytona's interpreter has no rich results or execution counts.
                Some(Out::Event(_)) => {}
                Some(Out::Done) => {
                    let _ = send(&mut socket, json!({"type": "control", "text": "completed"})).await;
                    close(&mut socket, 1000, "completed").await;
                    break;
                }
                Some(Out::Timeout) => {
                    // No "interrupted" control frame first: clients treat it as success and
                    // would never see the timeout close.
                    close(&mut socket, TIMEOUT_CLOSE, "execution timed out").await;
                    break;
                }
                Some(Out::Failed(e)) => {
                    close(&mut socket, 1011, &e.message).await;
                    break;
                }
                None => break,
            },
            msg = socket.recv() => match msg {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    task.abort();
}
