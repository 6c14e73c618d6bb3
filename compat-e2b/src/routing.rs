//! Which requests are sandbox traffic, and where they go.
//!
//! A request is for a sandbox's port when it carries `E2b-Sandbox-Id` (then `E2b-Sandbox-Port`
//! is required too), or, failing that, when its Host's first label reads `{port}-{sandboxId}`
//! (extra `-parts` after the id are ignored, as in E2B's legacy `49983-<id>-<client>.<domain>`;
//! hosts that are IP literals or `localhost` never route this way), or, failing both, when it is
//! a signed envd `/files` URL: the SDKs build `download_url()`/`upload_url()` on `E2B_SANDBOX_URL`
//! without the sandbox id, and the running sandbox whose access token made the signature is the
//! one it is for ([`crate::envd::files::signer`]). Everything else falls through to the rest of
//! the server, so `/health` without the headers stays the server's own.
//!
//! The sandbox must be running, else the answer is E2B's proxy 502 "The sandbox was not found"
//! (paused, stopped and failed sandboxes included: the SDK then reports it as gone). Port 49983
//! is envd, 49999 the code interpreter, and any other port is forwarded to the service inside
//! the sandbox (502 "port is not open" when nothing listens). Those service ports need the
//! sandbox's traffic access token or envd access token unless the sandbox was created public
//! ([`crate::auth::may_reach_port`], [`crate::control::is_public`]); without one the answer is
//! the proxy's 401, whichever front end created the sandbox. The relay removes those tokens (and
//! every other Platinum credential) before the request reaches the service.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use platinum_engine::Error;
use platinum_engine::ids::is_valid_id;
use platinum_engine::model::SandboxState;
use tower::ServiceExt;

use crate::error::{HttpError, PORT_NOT_OPEN, SANDBOX_NOT_FOUND, proxy_error, proxy_unauthorized};
use crate::{Ctx, ENVD_PORT, INTERPRETER_PORT};

/// Header naming the sandbox.
pub const SANDBOX_ID_HEADER: &str = "e2b-sandbox-id";
/// Header naming the port inside the sandbox.
pub const SANDBOX_PORT_HEADER: &str = "e2b-sandbox-port";

/// Where a sandbox request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Sandbox id.
    pub sandbox: String,
    /// Port inside it.
    pub port: u16,
}

/// The sandbox a routed request is for (a request extension for the envd and interpreter
/// routers).
#[derive(Debug, Clone)]
pub struct SandboxId(pub String);

/// Decides whether a request is sandbox traffic. `Err` is a malformed routing header.
pub fn target(headers: &HeaderMap, uri_host: Option<&str>) -> Result<Option<Target>, HttpError> {
    if let Some(id) = headers.get(SANDBOX_ID_HEADER) {
        let id = id
            .to_str()
            .map_err(|_| HttpError::new(400, "invalid E2b-Sandbox-Id header"))?
            .trim()
            .to_string();
        let port = headers
            .get(SANDBOX_PORT_HEADER)
            .ok_or_else(|| {
                HttpError::new(400, "E2b-Sandbox-Id needs an E2b-Sandbox-Port header too")
            })?
            .to_str()
            .ok()
            .and_then(|p| p.trim().parse::<u16>().ok())
            .filter(|p| *p > 0)
            .ok_or_else(|| HttpError::new(400, "invalid E2b-Sandbox-Port header"))?;
        return Ok(Some(Target { sandbox: id, port }));
    }
    if headers.contains_key(SANDBOX_PORT_HEADER) {
        return Err(HttpError::new(
            400,
            "E2b-Sandbox-Port needs an E2b-Sandbox-Id header too",
        ));
    }
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or(uri_host);
    Ok(host.and_then(host_target))
}

/// Reads `{port}-{id}[-...].{domain}` from a Host value.
pub fn host_target(host: &str) -> Option<Target> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    };
    if name.eq_ignore_ascii_case("localhost")
        || name.starts_with('[')
        || name.parse::<std::net::IpAddr>().is_ok()
    {
        return None;
    }
    let (label, rest) = name.split_once('.')?;
    if rest.is_empty() {
        return None;
    }
    let mut parts = label.split('-');
    let port = parts.next()?.parse::<u16>().ok().filter(|p| *p > 0)?;
    let sandbox = parts.next()?.to_string();
    is_valid_id(&sandbox).then_some(Target { sandbox, port })
}

/// Middleware in front of the whole server: routes sandbox traffic, passes the rest on.
pub async fn dispatch(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    match target(req.headers(), req.uri().host()) {
        Ok(None) => {
            // Owned copies: the request body is not `Sync`, so no borrow of it crosses an await.
            let (method, uri) = (req.method().clone(), req.uri().clone());
            match crate::envd::files::signer(&ctx, &method, &uri).await {
                Some(sandbox) => {
                    let t = Target {
                        sandbox,
                        port: ENVD_PORT,
                    };
                    serve(ctx, t, req).await
                }
                None => next.run(req).await,
            }
        }
        Ok(Some(t)) => serve(ctx, t, req).await,
        Err(e) => e.into_response(),
    }
}

async fn serve(ctx: Ctx, t: Target, mut req: Request) -> Response {
    // A sandbox created with autoResume wakes for its traffic.
    let host = match ctx.engine.sandbox_for_traffic(&t.sandbox).await {
        Ok(s) if s.state == SandboxState::Running => {
            let service_port = !matches!(t.port, ENVD_PORT | INTERPRETER_PORT);
            if service_port
                && !crate::control::is_public(&s)
                && !crate::auth::may_reach_port(req.headers(), &ctx.config.secret, &s.id)
            {
                tracing::debug!(sandbox = %s.id, port = t.port, "port request without a token");
                return proxy_unauthorized(&s.id);
            }
            crate::control::request_host(&s, t.port)
        }
        Ok(s) => {
            tracing::debug!(sandbox = %t.sandbox, state = %s.state, port = t.port, "traffic for a sandbox that is not running");
            return proxy_error(&t.sandbox, SANDBOX_NOT_FOUND);
        }
        Err(Error::SandboxNotFound(_)) => return proxy_error(&t.sandbox, SANDBOX_NOT_FOUND),
        Err(e) => return HttpError::from(e).into_response(),
    };
    match t.port {
        ENVD_PORT | INTERPRETER_PORT => {
            req.extensions_mut().insert(SandboxId(t.sandbox.clone()));
            let router = if t.port == ENVD_PORT {
                crate::envd::router(ctx)
            } else {
                crate::interpreter::router(ctx)
            };
            match router.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
        port => {
            let path = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let relayed = platinum_frontend_http::relay::forward_as(
                &ctx.engine,
                &t.sandbox,
                port,
                &path,
                req,
                host.as_deref(),
            );
            match relayed.await {
                Ok(response) => response,
                Err(e) if e.code() == platinum_engine::ErrorCode::PortNotOpen => {
                    proxy_error(&t.sandbox, PORT_NOT_OPEN)
                }
                Err(e) => HttpError::from(e).into_response(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn headers_route_before_hosts() {
        let h = headers(&[
            ("e2b-sandbox-id", "abc123"),
            ("e2b-sandbox-port", "49983"),
            ("host", "127.0.0.1:7070"),
        ]);
        assert_eq!(
            target(&h, None).unwrap(),
            Some(Target {
                sandbox: "abc123".into(),
                port: 49983
            })
        );
        assert!(target(&headers(&[("e2b-sandbox-id", "abc")]), None).is_err());
        assert!(target(&headers(&[("e2b-sandbox-port", "1")]), None).is_err());
        assert_eq!(
            target(&headers(&[("host", "127.0.0.1:7070")]), None).unwrap(),
            None
        );
    }

    #[test]
    fn hosts_name_port_and_sandbox() {
        let t = |h: &str| host_target(h).map(|t| (t.port, t.sandbox));
        assert_eq!(t("49983-abc123.e2b.local"), Some((49983, "abc123".into())));
        assert_eq!(
            t("8080-abc123-client.example.com:443"),
            Some((8080, "abc123".into()))
        );
        assert_eq!(t("localhost:7070"), None);
        assert_eq!(t("10.0.0.1"), None);
        assert_eq!(t("platinum.example.com"), None);
        assert_eq!(t("49983-ABC.example.com"), None);
        assert_eq!(t("49983-abc"), None);
        assert_eq!(t("99999-abc.example.com"), None);
    }
}
