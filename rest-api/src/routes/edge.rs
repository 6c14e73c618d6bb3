//! The edge proxy's control: exposed ports (`/v1/sandboxes/{id}/expose`), edge tokens
//! (`/v1/sandboxes/{id}/ports/{port}/tokens`, `/v1/edge/tokens/revoke`) and their signing keys
//! (`/v1/edge/keys`). The edge itself (`<port>-<id>.<domain>`, `/edge/<id>/<port>/`) is served
//! by `platinum_frontend_http::edge`, outside the API-key check.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use platinum_engine::edge::keys::EdgeKeyInfo;
use platinum_engine::edge::{EdgeToken, Exposure};
use platinum_engine::{Engine, Error};
use platinum_frontend_http::edge::{PATH_PREFIX, TOKEN_PARAM};
use platinum_frontend_http::origin::request_base_url;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use utoipa::{IntoParams, ToSchema};

use super::SandboxPath;
use crate::error::{ApiJson, ApiResult, ErrorBody};

/// Default lifetime of a minted token (1 hour).
const DEFAULT_TTL_SECS: u64 = 3600;

/// Body of `exposePort`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExposeRequest {
    /// TCP port inside the sandbox (1-65535).
    pub port: u16,
    /// Reachable by anyone with the URL, without a token (default false: a token is needed).
    #[serde(default)]
    pub public: bool,
}

/// The ports a sandbox exposes.
#[derive(Debug, Serialize, ToSchema)]
pub struct ExposureList {
    /// By port.
    pub exposures: Vec<Exposure>,
}

/// The `{id}` and `{port}` path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SandboxPortPath {
    /// Sandbox id.
    pub id: String,
    /// TCP port inside the sandbox.
    pub port: u16,
}

/// Body of `createEdgeToken`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEdgeToken {
    /// Lifetime in seconds (1 to 2592000, 30 days; default 3600).
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A minted edge token and the URLs that use it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedEdgeToken {
    /// The token and what it grants.
    #[serde(flatten)]
    pub token: EdgeToken,
    /// The path form with the token as a query parameter: opened in a browser, the edge sets
    /// a cookie and redirects to the same URL without it.
    pub url: String,
    /// The Host form (`<port>-<id>.<host>`), for servers reached by a DNS name whose wildcard
    /// subdomains point at them; absent when this request named the server by address.
    pub host_url: Option<String>,
}

/// Body of `revokeEdgeToken`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeEdgeToken {
    /// The token to refuse from now on (until its own expiry).
    pub token: String,
}

/// The edge signing keys, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeKeyList {
    /// The keys (never their secrets); the `active` one signs.
    pub keys: Vec<EdgeKeyInfo>,
}

/// The `{kid}` path parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct EdgeKeyPath {
    /// Edge key id.
    pub kid: String,
}

/// Expose a port at the edge.
///
/// `public: true` makes `/edge/{id}/{port}/` and `{port}-{id}.<domain>` reachable without any
/// credential; otherwise the port is listed as exposed and needs an edge token. Exposing an
/// exposed port again changes its `public` flag.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/expose", tag = "edge", operation_id = "exposePort",
    params(SandboxPath),
    request_body = ExposeRequest,
    responses(
        (status = 200, description = "Exposed", body = Exposure),
        (status = 400, description = "Port 0, or too many exposed ports", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn expose_port(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
    ApiJson(body): ApiJson<ExposeRequest>,
) -> ApiResult<Json<Exposure>> {
    Ok(Json(
        engine.expose_port(&p.id, body.port, body.public).await?,
    ))
}

/// List the ports a sandbox exposes at the edge.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/expose", tag = "edge", operation_id = "listExposedPorts",
    params(SandboxPath),
    responses(
        (status = 200, description = "Exposed ports", body = ExposureList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn list_exposures(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPath>,
) -> ApiResult<Json<ExposureList>> {
    Ok(Json(ExposureList {
        exposures: engine.exposures_of(&p.id).await?,
    }))
}

/// Stop exposing a port (tokens for it keep working; only public access ends).
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/expose/{port}", tag = "edge", operation_id = "unexposePort",
    params(SandboxPortPath),
    responses(
        (status = 204, description = "No longer exposed"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox, or the port is not exposed (`port_not_exposed`)", body = ErrorBody)))]
pub async fn unexpose_port(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPortPath>,
) -> ApiResult<StatusCode> {
    engine.unexpose_port(&p.id, p.port).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Mint an edge token for one port of one sandbox.
///
/// Signed (HMAC-SHA256) by the active edge key; valid until `expires_at`, until revoked
/// (`revokeEdgeToken`) or until its key is deleted. Present it as `X-Platinum-Edge-Token`, or
/// once as `?platinum_token=` (the edge answers with a cookie and a redirect). It never
/// reaches the sandbox. The body is optional (default lifetime: one hour).
#[utoipa::path(post, path = "/v1/sandboxes/{id}/ports/{port}/tokens", tag = "edge", operation_id = "createEdgeToken",
    params(SandboxPortPath),
    request_body = CreateEdgeToken,
    responses(
        (status = 200, description = "The token", body = CreatedEdgeToken),
        (status = 400, description = "Port 0 or a TTL out of range", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such sandbox", body = ErrorBody)))]
pub async fn create_token(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<SandboxPortPath>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> ApiResult<Json<CreatedEdgeToken>> {
    // The body is optional: none (or `{}`) takes the default lifetime.
    let body: CreateEdgeToken = if body.iter().all(u8::is_ascii_whitespace) {
        CreateEdgeToken::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| Error::InvalidRequest(format!("invalid JSON body: {e}")))?
    };
    let ttl = body.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    let token = engine.mint_edge_token(&p.id, p.port, ttl).await?;
    let base = request_base_url(&headers);
    let query = format!("?{TOKEN_PARAM}={}", token.token);
    let url = format!(
        "{base}{PATH_PREFIX}{}/{}/{query}",
        token.sandbox_id, token.port
    );
    let host_url = base.split_once("://").and_then(|(scheme, host)| {
        let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
        let by_name = !name.eq_ignore_ascii_case("localhost")
            && !name.starts_with('[')
            && name.parse::<std::net::IpAddr>().is_err();
        by_name.then(|| {
            format!(
                "{scheme}://{}-{}.{host}/{query}",
                token.port, token.sandbox_id
            )
        })
    });
    Ok(Json(CreatedEdgeToken {
        token,
        url,
        host_url,
    }))
}

/// Revoke one edge token before its expiry (others of the same key stay valid).
#[utoipa::path(post, path = "/v1/edge/tokens/revoke", tag = "edge", operation_id = "revokeEdgeToken",
    request_body = RevokeEdgeToken,
    responses(
        (status = 204, description = "Refused from now on"),
        (status = 400, description = "Not a token signed by a key of this server", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 503, description = "Too many unexpired revocations (`capacity_exhausted`)", body = ErrorBody)))]
pub async fn revoke_token(
    State(engine): State<Arc<Engine>>,
    ApiJson(body): ApiJson<RevokeEdgeToken>,
) -> ApiResult<StatusCode> {
    engine.revoke_edge_token(&body.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// List the edge signing keys (never their secrets).
#[utoipa::path(get, path = "/v1/edge/keys", tag = "edge", operation_id = "listEdgeKeys",
    responses(
        (status = 200, description = "The keys, oldest first", body = EdgeKeyList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_keys(State(engine): State<Arc<Engine>>) -> Json<EdgeKeyList> {
    Json(EdgeKeyList {
        keys: engine.edge_keys(),
    })
}

/// Rotate: a new key signs new tokens; tokens of older keys stay valid until those keys are
/// deleted.
#[utoipa::path(post, path = "/v1/edge/keys/rotate", tag = "edge", operation_id = "rotateEdgeKey",
    responses(
        (status = 200, description = "The new active key", body = EdgeKeyInfo),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn rotate_key(State(engine): State<Arc<Engine>>) -> ApiResult<Json<EdgeKeyInfo>> {
    Ok(Json(engine.rotate_edge_key().await?))
}

/// Delete an edge key: every token it signed is refused from now on.
#[utoipa::path(delete, path = "/v1/edge/keys/{kid}", tag = "edge", operation_id = "deleteEdgeKey",
    params(EdgeKeyPath),
    responses(
        (status = 204, description = "Deleted; its tokens are revoked"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such key (`edge_key_not_found`)", body = ErrorBody)))]
pub async fn delete_key(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<EdgeKeyPath>,
) -> ApiResult<StatusCode> {
    engine.delete_edge_key(&p.kid).await?;
    Ok(StatusCode::NO_CONTENT)
}
