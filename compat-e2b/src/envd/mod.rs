//! envd, E2B's in-sandbox daemon (port 49983), implemented on the host over the engine's
//! commands: nothing of E2B runs inside the VM.
//!
//! - [`process`]: `process.Process` (Start, Connect, List, SendInput, StreamInput, SendSignal,
//!   Update, CloseStdin) over `exec_stream`, `attach` and the process commands.
//! - [`filesystem`]: `filesystem.Filesystem` (Stat, MakeDir, Move, ListDir, Remove, WatchDir and
//!   the polled watchers) over the file commands and `watch_dir`.
//! - [`files`]: plain HTTP `GET`/`POST /files` (download, multipart and octet-stream upload).
//! - `/health` (204), `/envs` (the sandbox's environment), `/metrics`.
//!
//! Users: `Authorization: Basic` names the Linux user (default `user`). Like envd, which runs
//! as root and hands new files to the user, file operations on absolute paths run as root and
//! what they create is then owned by the user; relative paths resolve in the user's home and
//! run as the user. Processes always run as the user.

pub mod files;
pub mod filesystem;
pub mod process;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Extension, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platinum_engine::{CreateAs, Error};
use serde::Serialize;
use serde_json::json;

use crate::error::{ConnectCode, ConnectError, HttpError};
use crate::routing::SandboxId;
use crate::{Ctx, auth};

/// The user requests act as when they name none (E2B's default user).
pub use platinum_engine::env::DEFAULT_USER;
/// The user file operations on absolute paths run as.
const ROOT: &str = "root";

/// The envd routes of one sandbox (the sandbox comes as a [`SandboxId`] extension).
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/envs", get(envs))
        .route("/metrics", get(metrics))
        .route("/files", get(files::download).post(files::upload))
        .route("/process.Process/{method}", post(process::rpc))
        .route("/filesystem.Filesystem/{method}", post(filesystem::rpc))
        .fallback(not_found)
        .layer(DefaultBodyLimit::disable())
        .with_state(ctx)
}

async fn not_found() -> HttpError {
    HttpError::new(404, "no such envd endpoint")
}

async fn health() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// The sandbox's access token.
pub fn token(ctx: &Ctx, id: &str) -> String {
    auth::access_token(&ctx.config.secret, id)
}

/// Requires `X-Access-Token` (RPCs and the routes other than `/health` and `/files`).
pub fn require_token(ctx: &Ctx, id: &str, headers: &HeaderMap) -> Result<(), ConnectError> {
    if auth::has_token(headers, &token(ctx, id)) {
        Ok(())
    } else {
        Err(ConnectError::new(
            ConnectCode::Unauthenticated,
            "missing or invalid X-Access-Token",
        ))
    }
}

/// The user named by `Authorization: Basic`, if any.
pub fn request_user(headers: &HeaderMap) -> Result<Option<String>, ConnectError> {
    auth::basic_user(headers).map_err(|m| ConnectError::new(ConnectCode::Unauthenticated, m))
}

/// The checks every RPC starts with: the access token, then the user the request acts as.
pub fn authorize(ctx: &Ctx, id: &str, headers: &HeaderMap) -> Result<Option<String>, ConnectError> {
    require_token(ctx, id, headers)?;
    request_user(headers)
}

/// Who a file operation on `path` runs as: root for absolute paths (envd's semantics), else the
/// user (relative paths resolve in the user's home).
pub fn acting_user(user: &Option<String>, path: &str) -> Option<String> {
    if path.starts_with('/') {
        Some(ROOT.into())
    } else {
        user.clone()
    }
}

/// How a write or a `make_dir` of `path` for `user` runs, as envd does it: an absolute path as
/// root, with what is created (and every parent created for it) handed to the user in the same
/// request; a relative one as the user.
pub fn create_as(user: &Option<String>, path: &str) -> CreateAs {
    let owner = (path.starts_with('/') && user.as_deref() != Some(ROOT))
        .then(|| user.clone().unwrap_or_else(|| DEFAULT_USER.into()));
    CreateAs {
        user: acting_user(user, path),
        mode: None,
        owner,
        metadata: Default::default(),
    }
}

/// A plain-HTTP route that needs the access token (401 without it): `answer`'s JSON, or its
/// engine error.
async fn token_json<T: Serialize>(
    ctx: &Ctx,
    id: &str,
    headers: &HeaderMap,
    answer: impl AsyncFnOnce() -> Result<T, Error>,
) -> Response {
    if let Err(e) = require_token(ctx, id, headers) {
        return HttpError::new(401, e.message).into_response();
    }
    match answer().await {
        Ok(v) => Json(v).into_response(),
        Err(e) => HttpError::from(e).into_response(),
    }
}

async fn envs(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    headers: HeaderMap,
) -> Response {
    token_json(&ctx, &id, &headers, async || {
        Ok(ctx.engine.get_sandbox(&id).await?.env)
    })
    .await
}

async fn metrics(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    headers: HeaderMap,
) -> Response {
    token_json(&ctx, &id, &headers, async || {
        let m = ctx.engine.sandbox_metrics(&id).await?;
        Ok(json!({
            "ts": time::OffsetDateTime::now_utc().unix_timestamp(),
            "cpu_count": m.cpu_count,
            "cpu_used_pct": m.cpu_used_pct,
            "mem_total": m.mem_total,
            "mem_used": m.mem_used,
            "mem_cache": m.mem_cache,
            "mem_total_mib": m.mem_total >> 20,
            "mem_used_mib": m.mem_used >> 20,
            "disk_used": m.disk_used,
            "disk_total": m.disk_total,
        }))
    })
    .await
}

/// How long a broken stream waits for the sandbox's state to show why (a kill destroys the VM
/// first and records the deletion after).
const SETTLE: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether the sandbox stopped running, waiting up to [`SETTLE`] for a kill or pause in progress
/// to be recorded.
pub async fn sandbox_gone(ctx: &Ctx, id: &str) -> bool {
    let until = tokio::time::Instant::now() + SETTLE;
    loop {
        match ctx.engine.get_sandbox(id).await {
            Ok(s) if s.state == platinum_engine::model::SandboxState::Running => {}
            _ => return true,
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The error that ends a stream broken by `e`: it says "was not found" when the sandbox is gone,
/// so the SDK reports it as killed; otherwise a message that makes the SDK probe the sandbox.
pub async fn stream_broken(ctx: &Ctx, id: &str, e: Error) -> ConnectError {
    let lost = matches!(e, Error::GuestUnreachable(_) | Error::Vm(_));
    if !lost {
        return e.into();
    }
    if sandbox_gone(ctx, id).await {
        ConnectError::new(
            ConnectCode::Unavailable,
            format!("sandbox {id} {}", crate::error::not_running()),
        )
    } else {
        ConnectError::new(
            ConnectCode::Unavailable,
            format!("the connection to sandbox {id} ended before the stream completed: {e}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_run_as_root_and_are_handed_over() {
        let user = Some("user".to_string());
        assert_eq!(acting_user(&user, "/etc/x").as_deref(), Some("root"));
        assert_eq!(acting_user(&user, "notes.txt").as_deref(), Some("user"));
        assert_eq!(acting_user(&None, "~/x"), None);
        let owner = |u: &Option<String>, p: &str| create_as(u, p).owner;
        assert_eq!(owner(&user, "/opt/x").as_deref(), Some("user"));
        assert_eq!(owner(&None, "/opt/x").as_deref(), Some("user"));
        assert_eq!(owner(&Some("root".into()), "/opt/x"), None);
        assert_eq!(owner(&user, "x"), None);
        assert_eq!(create_as(&user, "/opt/x").user.as_deref(), Some("root"));
    }
}
