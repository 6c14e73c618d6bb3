//! Preview links: Daytona's way to reach a port served inside a sandbox.
//!
//! - `GET /api/sandbox/{idOrName}/ports/{port}/preview-url` → `{sandboxId, url, token}` with
//!   `url = {base}/preview/{sandboxId}/{port}`. Requests to it need the token, which is that
//!   port's only (`X-Daytona-Preview-Token` header or `?DAYTONA_SANDBOX_AUTH_KEY=`), or the API
//!   key as `Authorization: Bearer`, unless the sandbox is public.
//! - `GET .../signed-preview-url?expiresInSeconds=N` → a link that carries its own expiring
//!   token: `{base}/preview/s/{token}`; `POST .../signed-preview-url/{token}/expire` revokes it
//!   (for good: the revocation is kept by the engine across restarts).
//!
//! The proxy forwards HTTP and WebSocket to the port through the guest agent
//! (`Engine::connect_port`, via the shared `platinum_frontend_http::relay::forward`), so it works whether
//! or not the sandbox has a network. Credentials used to reach the proxy (the token header and
//! query parameter, the API key, Platinum cookies) are removed by that relay before the request
//! goes to the sandbox, and responses get its sandboxing CSP; the service sees
//! `Host: localhost:{port}`. Daytona links are
//! host-based (`https://{port}-{id}.domain`); these are path-based, so an app that builds absolute
//! links from `/` needs its base path set to the link's path.

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::Response;
use axum::response::IntoResponse;
use axum::routing::any;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Ctx;
use crate::api::sandbox::{BaseUrl, is_public};
use crate::auth::{has_api_key, query_param};
use crate::error::{DPath, DQuery, DResult, DaytonaError};

/// Header carrying a preview token.
pub const PREVIEW_TOKEN_HEADER: &str = "x-daytona-preview-token";
/// Query parameter carrying a preview token (browser WebSockets cannot set headers).
pub const PREVIEW_TOKEN_QUERY: &str = "DAYTONA_SANDBOX_AUTH_KEY";
/// Signed links live this long unless asked otherwise.
const DEFAULT_SIGNED_SECS: u64 = 60;

/// The proxy routes (they authenticate per request: token, key, or public sandbox).
pub fn routes() -> Router<Ctx> {
    Router::new()
        .route("/preview/s/{token}", any(signed_root))
        .route("/preview/s/{token}/", any(signed_root))
        .route("/preview/s/{token}/{*path}", any(signed))
        .route("/preview/{id}/{port}", any(by_id_root))
        .route("/preview/{id}/{port}/", any(by_id_root))
        .route("/preview/{id}/{port}/{*path}", any(by_id))
}

fn check_port(port: u16) -> DResult<u16> {
    if port == 0 {
        return Err(DaytonaError::bad_request("port must be 1-65535"));
    }
    Ok(port)
}

/// `GET /sandbox/{idOrName}/ports/{port}/preview-url`.
pub async fn preview_url(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, port)): DPath<(String, u16)>,
) -> DResult<Json<Value>> {
    let port = check_port(port)?;
    let s = ctx.engine.find_sandbox(&id).await?;
    Ok(Json(json!({
        "sandboxId": s.id,
        "url": format!("{}/preview/{}/{port}", base.0, s.id),
        "token": ctx.tokens.preview_token(&s.id, port),
    })))
}

/// Query of the signed-link request.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SignedParams {
    expires_in_seconds: Option<u64>,
}

/// `GET /sandbox/{idOrName}/ports/{port}/signed-preview-url?expiresInSeconds=N`.
pub async fn signed_preview_url(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, port)): DPath<(String, u16)>,
    DQuery(q): DQuery<SignedParams>,
) -> DResult<Json<Value>> {
    let port = check_port(port)?;
    let secs = q.expires_in_seconds.unwrap_or(DEFAULT_SIGNED_SECS);
    if secs == 0 || secs > crate::tokens::MAX_SIGNED_PREVIEW_SECS {
        return Err(DaytonaError::bad_request(format!(
            "expiresInSeconds must be 1-{}",
            crate::tokens::MAX_SIGNED_PREVIEW_SECS
        )));
    }
    let s = ctx.engine.find_sandbox(&id).await?;
    let token = ctx.tokens.sign_preview(&s.id, port, secs);
    Ok(Json(json!({
        "sandboxId": s.id,
        "port": port,
        "token": token,
        "url": format!("{}/preview/s/{token}", base.0),
    })))
}

/// `POST /sandbox/{idOrName}/ports/{port}/signed-preview-url/{token}/expire`: 200, no body.
/// Only a genuine token of this sandbox and port is recorded (forged or foreign tokens are
/// ignored, so they cannot fill the revocation list); an expired one needs no record.
pub async fn expire_signed_preview_url(
    State(ctx): State<Ctx>,
    DPath((id, port, token)): DPath<(String, u16, String)>,
) -> DResult<()> {
    let s = ctx.engine.find_sandbox(&id).await?;
    let Some(grant) = ctx.tokens.verify_signed_preview(&token) else {
        tracing::debug!(sandbox = %s.id, "ignored the revocation of a token that is not genuine");
        return Ok(());
    };
    if grant.sandbox_id != s.id || grant.port != port {
        tracing::debug!(sandbox = %s.id, "ignored the revocation of another link's token");
        return Ok(());
    }
    ctx.engine
        .revoke_token(
            crate::tokens::SIGNED_PREVIEW_KIND,
            &grant.hash,
            grant.expires_at,
        )
        .await?;
    Ok(())
}

/// Path and query for the service: the request's raw path after `/preview/{a}/{b}` (kept
/// percent-encoded as sent) and its query (the relay removes token parameters).
fn target(req: &Request) -> String {
    let rest = req.uri().path().splitn(5, '/').nth(4).unwrap_or_default();
    match req.uri().query() {
        Some(q) if !q.is_empty() => format!("/{rest}?{q}"),
        _ => format!("/{rest}"),
    }
}

async fn forward(ctx: &Ctx, id: &str, port: u16, req: Request) -> DResult<Response<Body>> {
    let target = target(&req);
    platinum_frontend_http::relay::forward(&ctx.engine, id, port, &target, req)
        .await
        .map_err(DaytonaError::from)
}

async fn by_id_inner(ctx: Ctx, id: String, port: u16, req: Request) -> DResult<Response<Body>> {
    let port = check_port(port)?;
    let token = req
        .headers()
        .get(PREVIEW_TOKEN_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| query_param(&req, PREVIEW_TOKEN_QUERY));
    let key_ok = has_api_key(&ctx, req.headers());
    if !key_ok && token.is_none() {
        // Public sandboxes need nothing; look it up only then.
        let s = ctx
            .engine
            .find_sandbox(&id)
            .await
            .map_err(|_| DaytonaError::unauthorized())?;
        if !is_public(&s) {
            return Err(DaytonaError::unauthorized());
        }
        return forward(&ctx, &s.id, port, req).await;
    }
    let token_ok = token.is_some_and(|t| ctx.tokens.check_preview_token(&id, port, &t));
    if !key_ok && !token_ok {
        return Err(DaytonaError::unauthorized());
    }
    forward(&ctx, &id, port, req).await
}

/// `/preview/{id}/{port}/{*path}`.
pub async fn by_id(
    State(ctx): State<Ctx>,
    DPath((id, port, _path)): DPath<(String, u16, String)>,
    req: Request,
) -> axum::response::Response {
    by_id_inner(ctx, id, port, req).await.into_response()
}

/// `/preview/{id}/{port}` (the service's root).
pub async fn by_id_root(
    State(ctx): State<Ctx>,
    DPath((id, port)): DPath<(String, u16)>,
    req: Request,
) -> axum::response::Response {
    by_id_inner(ctx, id, port, req).await.into_response()
}

async fn signed_inner(ctx: Ctx, token: String, req: Request) -> DResult<Response<Body>> {
    let grant = ctx
        .tokens
        .open_signed_preview(&token)
        .filter(|g| !ctx.engine.is_token_revoked(&g.hash))
        .ok_or_else(DaytonaError::unauthorized)?;
    forward(&ctx, &grant.sandbox_id, grant.port, req).await
}

/// `/preview/s/{token}/{*path}`.
pub async fn signed(
    State(ctx): State<Ctx>,
    DPath((token, _path)): DPath<(String, String)>,
    req: Request,
) -> axum::response::Response {
    signed_inner(ctx, token, req).await.into_response()
}

/// `/preview/s/{token}` (the service's root).
pub async fn signed_root(
    State(ctx): State<Ctx>,
    DPath(token): DPath<String>,
    req: Request,
) -> axum::response::Response {
    signed_inner(ctx, token, req).await.into_response()
}
