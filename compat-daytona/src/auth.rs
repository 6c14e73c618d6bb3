//! Who may call what.
//!
//! - Control plane (`/api`): `Authorization: Bearer <key>` where the key is a Platinum API key
//!   (it is what teams put in `DAYTONA_API_KEY`). Anything else: a Daytona-shaped 401.
//! - Toolbox (`/toolbox/{sandboxId}`): the same key; or, for `files/download` and
//!   `files/upload-v2`, a valid signed-URL signature; or, only on the WebSocket upgrades browser
//!   runtimes (which cannot set headers) make, `?DAYTONA_SANDBOX_AUTH_KEY=<preview token>`, where
//!   the token must be the sandbox's token of port [`TOOLBOX_TOKEN_PORT`] (what the SDK asks
//!   for). The upgrades are PTY connects, session log follows and interpreter runs
//!   ([`is_toolbox_websocket`]). A preview link for an app's port, shared with someone, opens
//!   that port's previews and never the toolbox: any other route (`process/execute`, files, ...)
//!   with only a preview token is a 401. The middleware
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
use crate::tokens::TOOLBOX_TOKEN_PORT;

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
        || preview_key.is_some_and(|t| {
            is_toolbox_websocket(&req)
                && ctx
                    .tokens
                    .check_preview_token(&sandbox.id, TOOLBOX_TOKEN_PORT, &t)
        })
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

/// Whether `req` is a WebSocket upgrade (`GET` with `Upgrade: websocket`) of one of the toolbox
/// routes that are WebSockets: `process/pty/create-connect`, `process/pty/{id}/connect`,
/// `process/session/{sid}/command/{cid}/logs`, `process/session/entrypoint/logs` and
/// `process/interpreter/execute`.
pub fn is_toolbox_websocket(req: &Request) -> bool {
    let upgrade = req.method() == axum::http::Method::GET
        && req
            .headers()
            .get(axum::http::header::UPGRADE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return false;
    }
    let route: Vec<&str> = req.uri().path().split('/').skip(3).collect();
    matches!(
        route.as_slice(),
        ["process", "pty", "create-connect"]
            | ["process", "pty", _, "connect"]
            | ["process", "session", _, "command", _, "logs"]
            | ["process", "session", "entrypoint", "logs"]
            | ["process", "interpreter", "execute"]
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    fn req(method: &str, path: &str, upgrade: Option<&str>) -> Request {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(u) = upgrade {
            b = b.header("upgrade", u).header("connection", "upgrade");
        }
        b.body(Body::empty()).unwrap()
    }

    #[test]
    fn only_websocket_upgrades_of_websocket_routes_take_a_preview_token() {
        let ws = |path: &str| is_toolbox_websocket(&req("GET", path, Some("websocket")));
        assert!(ws("/toolbox/sbx/process/pty/create-connect?id=a"));
        assert!(ws("/toolbox/sbx/process/pty/p1/connect"));
        assert!(ws(
            "/toolbox/sbx/process/session/s/command/c/logs?follow=true"
        ));
        assert!(ws(
            "/toolbox/sbx/process/session/entrypoint/logs?follow=true"
        ));
        assert!(ws("/toolbox/sbx/process/interpreter/execute"));
        assert!(!ws("/toolbox/sbx/process/execute"));
        assert!(!ws("/toolbox/sbx/files/download?path=/etc/passwd"));
        assert!(!ws("/toolbox/sbx/process/pty/p1/resize"));
        assert!(!ws("/toolbox/sbx/process/pty/p1/connect/extra"));
        // Not an upgrade: the same paths as plain requests do not qualify.
        let plain = |m: &str, path: &str| is_toolbox_websocket(&req(m, path, None));
        assert!(!plain("GET", "/toolbox/sbx/process/pty/p1/connect"));
        assert!(!plain(
            "GET",
            "/toolbox/sbx/process/session/s/command/c/logs"
        ));
        assert!(!is_toolbox_websocket(&req(
            "POST",
            "/toolbox/sbx/process/interpreter/execute",
            Some("websocket")
        )));
        assert!(!is_toolbox_websocket(&req(
            "GET",
            "/toolbox/sbx/process/pty/p1/connect",
            Some("h2c")
        )));
    }
}
