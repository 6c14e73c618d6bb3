//! The code interpreter (port 49999): `/execute` and `/contexts` over the engine's code contexts.
//!
//! - `POST /execute` `{code, context_id?, language?, env_vars?}` (not both context and
//!   language: 400; unknown context: 404) streams NDJSON: `number_of_executions`, `stdout` /
//!   `stderr` (with a timestamp), `result` (the MIME bundle as E2B's fields: `text`, `html`,
//!   `png`, ..., the rest in `extra`, plus `is_main_result`), `error{name, value, traceback}` and
//!   `end_of_execution`. A kernel that dies mid-run gives an `UnexpectedEndOfExecution` error and
//!   `unexpected_end_of_execution`; a sandbox that goes away cuts the response, so the SDK checks
//!   and reports the sandbox as killed. A client that disconnects interrupts its run. Needs the
//!   envd access token (`X-Access-Token`), as E2B's SDKs send it.
//! - `POST /contexts` `{language?, cwd?}`, `GET /contexts`, `DELETE /contexts/{id}`,
//!   `POST /contexts/{id}/restart`. Errors are plain text, as E2B's FastAPI server sends them.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use platinum_engine::Error;
use platinum_engine::commands::code::{
    CodeContext, CodeEvent, CodeLanguage, CodeResult, CodeTarget, RunCode,
};
use platinum_frontend_http::ndjson;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use time::format_description::well_known::Rfc3339;
use tokio::sync::mpsc;

use crate::routing::SandboxId;
use crate::{Ctx, auth, envd};

/// MIME types E2B's `Result` has a field for.
const RESULT_FIELDS: &[(&str, &str)] = &[
    ("text/plain", "text"),
    ("text/html", "html"),
    ("text/markdown", "markdown"),
    ("image/svg+xml", "svg"),
    ("image/png", "png"),
    ("image/jpeg", "jpeg"),
    ("application/pdf", "pdf"),
    ("text/latex", "latex"),
    ("application/json", "json"),
    ("application/javascript", "javascript"),
    ("e2b/data", "data"),
    ("e2b/chart", "chart"),
];

/// The interpreter routes of one sandbox (the sandbox comes as a [`SandboxId`] extension).
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/health", get(|| async { Json("OK") }))
        .route("/execute", post(execute))
        .route("/contexts", post(create).get(list))
        .route("/contexts/{context}", delete(remove))
        .route("/contexts/{context}/restart", post(restart))
        .fallback(|| async { text(StatusCode::NOT_FOUND, "Not Found") })
        .with_state(ctx)
}

fn text(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// An engine error as E2B's server answers it.
fn failure(e: Error) -> Response {
    match &e {
        Error::CodeContextNotFound(c) => {
            text(StatusCode::NOT_FOUND, format!("Context {c} not found"))
        }
        Error::SandboxNotFound(_) | Error::InvalidState { .. } => {
            crate::error::HttpError::from(e).into_response()
        }
        Error::InvalidRequest(m) => text(StatusCode::BAD_REQUEST, m.clone()),
        _ => {
            tracing::error!(error = %e, "code interpreter request failed");
            text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
        }
    }
}

/// Parses a JSON body (empty is `{}`); the error is FastAPI's 422.
fn parse<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Box<Response>> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        &b"{}"[..]
    } else {
        &body[..]
    };
    serde_json::from_slice(body).map_err(|e| {
        Box::new(text(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid body: {e}"),
        ))
    })
}

fn context_json(c: &CodeContext) -> Value {
    json!({ "id": c.id, "language": c.language.as_str(), "cwd": c.cwd })
}

#[derive(Debug, Default, Deserialize)]
struct ExecuteRequest {
    #[serde(default)]
    code: String,
    context_id: Option<String>,
    language: Option<String>,
    env_vars: Option<BTreeMap<String, String>>,
}

/// An engine result as E2B's `Result` line.
fn result_json(r: &CodeResult) -> Value {
    let mut rest: Map<String, Value> = r.data.clone();
    let mut out = Map::new();
    out.insert("type".into(), json!("result"));
    for (mime, field) in RESULT_FIELDS {
        if let Some(mut v) = rest.remove(*mime) {
            // E2B shows strings without the quotes their repr adds.
            if *field == "text"
                && let Some(s) = v.as_str()
                && s.len() >= 2
                && ((s.starts_with('\'') && s.ends_with('\''))
                    || (s.starts_with('"') && s.ends_with('"')))
            {
                v = json!(s[1..s.len() - 1]);
            }
            out.insert((*field).into(), v);
        }
    }
    if !rest.is_empty() {
        out.insert("extra".into(), Value::Object(rest));
    }
    out.insert("is_main_result".into(), json!(r.is_main));
    Value::Object(out)
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

fn event_json(e: &CodeEvent) -> Value {
    match e {
        CodeEvent::ExecutionCount(n) => {
            json!({ "type": "number_of_executions", "execution_count": n })
        }
        CodeEvent::Stdout(t) => json!({ "type": "stdout", "text": t, "timestamp": now() }),
        CodeEvent::Stderr(t) => json!({ "type": "stderr", "text": t, "timestamp": now() }),
        CodeEvent::Result(r) => result_json(r),
        CodeEvent::Error(err) => json!({
            "type": "error", "name": err.name, "value": err.value, "traceback": err.traceback,
        }),
    }
}

async fn execute(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !auth::has_token(&headers, &envd::token(&ctx, &id)) {
        return text(
            StatusCode::UNAUTHORIZED,
            "missing or invalid X-Access-Token",
        );
    }
    let req: ExecuteRequest = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let target = match (req.context_id, req.language) {
        (Some(_), Some(_)) => {
            return text(
                StatusCode::BAD_REQUEST,
                "Only one of context_id or language can be provided",
            );
        }
        (Some(c), None) => CodeTarget::Context(c),
        (None, language) => match CodeLanguage::parse(language.as_deref()) {
            Ok(l) => CodeTarget::Language(l),
            Err(e) => return failure(e),
        },
    };
    let run = RunCode {
        code: req.code,
        target,
        env: req.env_vars.unwrap_or_default(),
        timeout: None,
    };
    let mut run = match ctx.engine.run_code(&id, run).await {
        Ok(r) => r,
        Err(e) => return failure(e),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    tokio::spawn(async move {
        let line = |v: Value| Ok(ndjson::line(&v));
        loop {
            let next = tokio::select! {
                next = run.next() => next,
                // The client left: dropping the run interrupts it.
                _ = tx.closed() => return,
            };
            let out = match next {
                Ok(Some(event)) => line(event_json(&event)),
                Ok(None) => {
                    let _ = tx.send(line(json!({ "type": "end_of_execution" }))).await;
                    return;
                }
                Err(e) => {
                    let lost = matches!(e, Error::GuestUnreachable(_) | Error::Vm(_));
                    if lost && envd::sandbox_gone(&ctx, &id).await {
                        // Cut the response; the SDK asks whether the sandbox still runs.
                        let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                        return;
                    }
                    let _ = tx
                        .send(line(json!({
                            "type": "error", "name": "UnexpectedEndOfExecution",
                            "value": e.to_string(), "traceback": "",
                        })))
                        .await;
                    let _ = tx
                        .send(line(json!({ "type": "unexpected_end_of_execution" })))
                        .await;
                    return;
                }
            };
            if tx.send(out).await.is_err() {
                return;
            }
        }
    });
    ndjson::channel_response(rx)
}

#[derive(Debug, Default, Deserialize)]
struct CreateContext {
    language: Option<String>,
    cwd: Option<String>,
}

async fn create(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    body: Bytes,
) -> Response {
    let req: CreateContext = match parse(&body) {
        Ok(r) => r,
        Err(r) => return *r,
    };
    let language = match CodeLanguage::parse(req.language.as_deref()) {
        Ok(l) => l,
        Err(e) => return failure(e),
    };
    match ctx.engine.create_code_context(&id, language, req.cwd).await {
        Ok(c) => Json(context_json(&c)).into_response(),
        Err(e) => failure(e),
    }
}

async fn list(State(ctx): State<Ctx>, Extension(SandboxId(id)): Extension<SandboxId>) -> Response {
    match ctx.engine.list_code_contexts(&id).await {
        Ok(list) => Json(list.iter().map(context_json).collect::<Vec<_>>()).into_response(),
        Err(e) => failure(e),
    }
}

async fn remove(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    Path(context): Path<String>,
) -> Response {
    match ctx.engine.remove_code_context(&id, &context).await {
        Ok(()) => Json(Value::Null).into_response(),
        Err(e) => failure(e),
    }
}

async fn restart(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    Path(context): Path<String>,
) -> Response {
    match ctx.engine.restart_code_context(&id, &context).await {
        Ok(_) => Json(Value::Null).into_response(),
        Err(e) => failure(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_use_e2b_field_names() {
        let mut data = Map::new();
        data.insert("text/plain".into(), json!("'hello'"));
        data.insert("image/png".into(), json!("iVBOR"));
        data.insert("application/x-custom".into(), json!("x"));
        let v = result_json(&CodeResult {
            data,
            is_main: true,
        });
        assert_eq!(v["type"], "result");
        assert_eq!(v["text"], "hello");
        assert_eq!(v["png"], "iVBOR");
        assert_eq!(v["extra"]["application/x-custom"], "x");
        assert_eq!(v["is_main_result"], true);
        let plain = result_json(&CodeResult {
            data: [("text/plain".to_string(), json!("42"))]
                .into_iter()
                .collect(),
            is_main: false,
        });
        assert!(plain.get("extra").is_none());
        assert_eq!(plain["text"], "42");
    }

    #[test]
    fn events_become_ndjson_lines() {
        assert_eq!(
            event_json(&CodeEvent::ExecutionCount(3)),
            json!({"type": "number_of_executions", "execution_count": 3})
        );
        let out = event_json(&CodeEvent::Stdout("hi\n".into()));
        assert_eq!(
            (out["type"].as_str(), out["text"].as_str()),
            (Some("stdout"), Some("hi\n"))
        );
        assert!(out["timestamp"].as_str().is_some_and(|t| t.contains('T')));
    }
}
