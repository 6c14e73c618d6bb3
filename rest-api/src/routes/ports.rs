//! `/v1/sandboxes/{id}/ports/{port}/{path}`: HTTP and WebSocket to a service inside a sandbox.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use platinum_engine::{Engine, Error};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::{IntoParams, IntoResponses};

use crate::error::{ApiResult, ErrorBody};

/// The `{id}`, `{port}` and `{path}` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PortPath {
    /// Sandbox id.
    pub id: String,
    /// TCP port inside the sandbox (the service may listen on 127.0.0.1 only).
    pub port: u16,
    /// Path on the service, may contain slashes (empty for `/`).
    #[serde(default)]
    pub path: String,
}

/// What both proxy routes answer, for their OpenAPI description (never built: the responses
/// themselves come from the service or from [`crate::error`]).
#[derive(IntoResponses)]
#[allow(dead_code)]
enum ProxyResponses {
    #[response(
        status = 200,
        description = "The service's response (any status it sends)"
    )]
    Forwarded,
    #[response(status = 401, description = "Missing or invalid API key")]
    Unauthorized(ErrorBody),
    #[response(status = 404, description = "No such sandbox")]
    NotFound(ErrorBody),
    #[response(status = 409, description = "Sandbox not running")]
    NotRunning(ErrorBody),
    #[response(
        status = 502,
        description = "Nothing listens on the port (`port_not_open`)"
    )]
    PortNotOpen(ErrorBody),
}

/// Forward a request to a port inside the sandbox.
///
/// Any method; the body streams both ways; WebSocket upgrades are forwarded. The service sees
/// `Host: localhost:{port}` and never Platinum's credentials: `Authorization`, `X-API-Key`,
/// access and preview token headers, token query parameters and Platinum cookies are removed.
/// Responses carry `Content-Security-Policy: sandbox ...` (no `allow-same-origin`), so pages from
/// the sandbox cannot read this origin's storage. No network path to the sandbox is needed: the
/// connection is relayed by the guest agent.
#[utoipa::path(
    get,
    path = "/v1/sandboxes/{id}/ports/{port}/{path}",
    tag = "ports",
    operation_id = "proxyPort",
    params(PortPath),
    responses(ProxyResponses)
)]
pub async fn proxy(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<PortPath>,
    req: Request,
) -> ApiResult<Response<Body>> {
    if p.port == 0 {
        return Err(Error::InvalidRequest("port must be 1-65535".into()).into());
    }
    let query = req
        .uri()
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let target = format!("/{}{query}", p.path);
    Ok(platinum_frontend_http::relay::forward(&engine, &p.id, p.port, &target, req).await?)
}

/// Forward a request to the root (`/`) of a port inside the sandbox.
///
/// Same as `proxyPort` with an empty path; also served at `/v1/sandboxes/{id}/ports/{port}/`.
#[utoipa::path(get, path = "/v1/sandboxes/{id}/ports/{port}", tag = "ports", operation_id = "proxyPortRoot",
    params(
        ("id" = String, Path, description = "Sandbox id."),
        ("port" = u16, Path, description = "TCP port inside the sandbox.")),
    responses(ProxyResponses))]
pub async fn proxy_root(
    State(engine): State<Arc<Engine>>,
    Path((id, port)): Path<(String, u16)>,
    req: Request,
) -> ApiResult<Response<Body>> {
    proxy(
        State(engine),
        Path(PortPath {
            id,
            port,
            path: String::new(),
        }),
        req,
    )
    .await
}

/// The proxy for `{path}` = `tokens` with a method other than `POST` (which mints edge tokens).
pub async fn proxy_tokens(
    State(engine): State<Arc<Engine>>,
    Path((id, port)): Path<(String, u16)>,
    req: Request,
) -> ApiResult<Response<Body>> {
    proxy(
        State(engine),
        Path(PortPath {
            id,
            port,
            path: "tokens".into(),
        }),
        req,
    )
    .await
}
