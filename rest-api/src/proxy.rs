//! HTTP (and WebSocket) forwarding to a port inside a sandbox, over `Engine::connect_port`.
//!
//! One upstream connection per request: the request is sent with hyper's HTTP/1 client over the
//! relayed byte stream, and the response streams back unbuffered. Upgrades (WebSocket) are
//! forwarded by completing the upgrade on both sides and copying bytes both ways. Every front end
//! that exposes sandbox ports (native `/v1/.../proxy`, E2B port routing, Daytona previews) uses
//! [`forward`].

use axum::body::Body;
use axum::http::header::{CONNECTION, HOST, UPGRADE};
use axum::http::{HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use platinum_engine::{Engine, Error};
use std::sync::Arc;

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1), except `Upgrade`
/// and `Connection: upgrade`, which an upgrade needs.
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Forwards `req` to `port` in sandbox `id`; `path_and_query` replaces the request's URI.
pub async fn forward(
    engine: &Arc<Engine>,
    id: &str,
    port: u16,
    path_and_query: &str,
    mut req: Request<Body>,
) -> Result<Response<Body>, Error> {
    let stream = engine.connect_port(id, port).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| Error::GuestUnreachable(format!("HTTP handshake with port {port}: {e}")))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "sandbox port connection ended");
        }
    });

    let wants_upgrade = req.headers().contains_key(UPGRADE);
    let client_upgrade = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    parts.uri = path_and_query
        .parse()
        .map_err(|_| Error::InvalidRequest(format!("bad path {path_and_query:?}")))?;
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    if !wants_upgrade {
        parts.headers.remove(CONNECTION);
    }
    parts.headers.insert(
        HOST,
        HeaderValue::from_str(&format!("localhost:{port}"))
            .map_err(|e| Error::Internal(e.to_string()))?,
    );
    parts.version = axum::http::Version::HTTP_11;
    let upstream = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| Error::GuestUnreachable(format!("request to port {port}: {e}")))?;

    if upstream.status() == StatusCode::SWITCHING_PROTOCOLS
        && let Some(client_upgrade) = client_upgrade
    {
        let (parts, _) = upstream.into_parts();
        let mut upstream_resp = Response::from_parts(parts.clone(), ());
        let upstream_upgrade = hyper::upgrade::on(&mut upstream_resp);
        tokio::spawn(async move {
            match (client_upgrade.await, upstream_upgrade.await) {
                (Ok(client), Ok(server)) => {
                    let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                        tracing::debug!(error = %e, "upgraded sandbox connection ended");
                    }
                }
                (c, s) => tracing::debug!(client = ?c.err(), server = ?s.err(), "upgrade failed"),
            }
        });
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = upstream.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(*h);
    }
    Ok(Response::from_parts(parts, Body::new(body)))
}
