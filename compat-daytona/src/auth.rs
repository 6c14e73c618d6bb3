//! Who may call what.
//!
//! - Control plane (`/api`): `Authorization: Bearer <key>` where the key is a Platinum API key
//!   (it is what teams put in `DAYTONA_API_KEY`). Anything else: a Daytona-shaped 401.
//! - Toolbox (`/toolbox/{sandboxId}`): the same key; or, for WebSocket upgrades from browser
//!   runtimes that cannot set headers, `?DAYTONA_SANDBOX_AUTH_KEY=<that sandbox's preview token>`;
//!   or, for `files/download` and `files/upload-v2`, a valid signed-URL signature. The middleware
//!   also resolves the sandbox (id or name) and records the request as activity, which drives
//!   auto-stop.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use platinum_engine::model::Sandbox;

use crate::Ctx;
use crate::error::DaytonaError;

/// The sandbox a toolbox request is about (a request extension set by [`toolbox_access`]).
#[derive(Debug, Clone)]
pub struct ToolboxSandbox(pub Sandbox);

/// The bearer token a request presents, if any.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| key.trim())
}

/// Whether the request carries a valid Platinum API key.
pub fn has_api_key(ctx: &Ctx, headers: &HeaderMap) -> bool {
    bearer(headers).is_some_and(|k| ctx.engine.api_keys().verify(k))
}

/// Middleware for `/api`: a valid API key or 401.
pub async fn require_api_key(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    if has_api_key(&ctx, req.headers()) {
        next.run(req).await
    } else {
        DaytonaError::unauthorized().into_response()
    }
}

/// A query parameter's value (first occurrence), percent-decoded.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    form_urlencoded::parse(q.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Middleware for `/toolbox/{sandboxId}/...`: authenticates, resolves the sandbox, records
/// activity, and hands the sandbox to the handler as [`ToolboxSandbox`].
pub async fn toolbox_access(State(ctx): State<Ctx>, mut req: Request, next: Next) -> Response {
    let Some(id_or_name) = req.uri().path().split('/').nth(2).map(str::to_owned) else {
        return DaytonaError::not_found("no sandbox in the toolbox path").into_response();
    };
    let key_ok = has_api_key(&ctx, req.headers());
    // Resolving before authenticating would tell strangers which sandboxes exist.
    let preview_key = query_param(&req, "DAYTONA_SANDBOX_AUTH_KEY");
    let signature = query_param(&req, "signature");
    if !key_ok && preview_key.is_none() && signature.is_none() {
        return DaytonaError::unauthorized().into_response();
    }
    let sandbox = match ctx.engine.find_sandbox(&id_or_name).await {
        Ok(s) => s,
        Err(e) if key_ok => return DaytonaError::from(e).into_response(),
        Err(_) => return DaytonaError::unauthorized().into_response(),
    };
    let authorized = key_ok
        || preview_key.is_some_and(|t| ctx.tokens.check_preview_token(&sandbox.id, &t))
        || signature.is_some_and(|sig| signed_file_url_ok(&ctx, &sandbox, &req, &sig));
    if !authorized {
        return DaytonaError::unauthorized().into_response();
    }
    if let Err(e) = ctx.engine.record_activity(&sandbox.id).await {
        tracing::debug!(sandbox = %sandbox.id, error = %e, "recording toolbox activity");
    }
    req.extensions_mut().insert(ToolboxSandbox(sandbox));
    next.run(req).await
}

/// Whether a `files/download` / `files/upload-v2` request carries a valid signature for its
/// method, path and expiry.
fn signed_file_url_ok(ctx: &Ctx, sandbox: &Sandbox, req: &Request, signature: &str) -> bool {
    let route = req
        .uri()
        .path()
        .split('/')
        .skip(3)
        .collect::<Vec<_>>()
        .join("/");
    let method = match route.as_str() {
        "files/download" => "GET",
        "files/upload-v2" => "POST",
        _ => return false,
    };
    if req.method().as_str() != method {
        return false;
    }
    let (Some(path), Some(expires)) = (
        query_param(req, "path"),
        query_param(req, "expires").and_then(|e| e.parse::<i64>().ok()),
    ) else {
        return false;
    };
    let key = ctx.tokens.signing_key(
        &sandbox.id,
        crate::api::sandbox::signing_generation(sandbox),
    );
    crate::tokens::verify_file_signature(&key, method, &path, expires, signature)
}
