//! HTTP (and WebSocket) forwarding to a port inside a sandbox, over `Engine::connect_port`.
//!
//! One upstream connection per request: the request is sent with hyper's HTTP/1 client over the
//! relayed byte stream, and the response streams back unbuffered; request bodies stream up the
//! same way. Clients may speak HTTP/1.1 or HTTP/2 (h2c) to the server: upstream is HTTP/1.1
//! either way, and the headers that describe one hop ([`strip_hop_by_hop`]: `Connection`, what it
//! names, `Keep-Alive`, `Transfer-Encoding`, `Upgrade`, ...) are removed in both directions, so
//! a service's HTTP/1.1 response is also a legal HTTP/2 one. Upgrades (WebSocket, HTTP/1.1) are
//! forwarded by completing the upgrade on both sides and copying bytes both ways; a `101` the
//! client did not ask for is refused, and so is `CONNECT` (HTTP/2's extended CONNECT for
//! WebSockets is not relayed: `unsupported`). Every front end
//! that exposes sandbox ports (native `/v1/.../ports`, E2B port routing, Daytona previews) uses
//! [`forward`], so the rules below hold for all of them.
//!
//! **Credentials never reach the sandbox.** The service behind a port is untrusted code, so
//! before any byte goes to it [`scrub_request`] removes every Platinum credential a client may
//! have sent to get through: the headers in [`CREDENTIAL_HEADERS`] (API keys, E2B access and
//! traffic tokens, Daytona preview tokens), the query parameters in [`CREDENTIAL_QUERY_PARAMS`]
//! (preview tokens, signatures) and the cookies named by [`is_platinum_cookie`] (other cookies
//! stay). Callers that accepted extra tokens rely on this one list rather than removing their own.
//! Responses may not set a Platinum cookie either ([`scrub_response`] drops such `Set-Cookie`).
//!
//! **Sandbox content is sandboxed in the browser.** Proxied pages are served from the API's own
//! origin (Daytona path previews under `/preview/{id}/{port}`, `/v1/.../ports/...`): a separate
//! origin per sandbox would need wildcard DNS and certificates, which the self-hosted default does
//! not have. So every proxied response carries [`SANDBOX_CSP`], a `Content-Security-Policy:
//! sandbox ...` without `allow-same-origin`: the browser runs the page in an opaque origin, so its
//! scripts cannot read the API origin's storage or cookies, nor call the API with them. A CSP the
//! service sends itself is kept as a second header (browsers enforce every policy they get).

use axum::body::Body;
use axum::http::header::{CONNECTION, CONTENT_SECURITY_POLICY, COOKIE, HOST, SET_COOKIE, UPGRADE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use platinum_engine::{Engine, Error};
use std::sync::Arc;

/// Headers that describe one hop and must not be forwarded (RFC 9110 §7.6.1; with `Connection`
/// and `Upgrade`, which [`strip_hop_by_hop`] handles, also those HTTP/2 forbids, RFC 9113
/// §8.2.2).
const HOP_BY_HOP: &[&str] = &[
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Request headers that carry Platinum credentials (lower case): the API key (`Authorization`,
/// `X-API-Key`), E2B's envd access token and traffic access token, Daytona's preview token and
/// the edge token (`X-Platinum-Edge-Token`).
pub const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "x-api-key",
    "x-access-token",
    "e2b-traffic-access-token",
    "x-daytona-preview-token",
    "proxy-authorization",
    "x-platinum-edge-token",
];

/// Query parameters that carry Platinum credentials (compared ASCII case-insensitively): every
/// name a front end reads a token from (Daytona's `DAYTONA_SANDBOX_AUTH_KEY` preview token of
/// browser clients, the `signature`/`signature_expiration` of signed URLs), `preview_token` and
/// the edge's `platinum_token`.
/// A generic `token` is not on the list: no front end reads a credential from it, and services
/// in sandboxes use it for their own (Jupyter's `?token=`).
pub const CREDENTIAL_QUERY_PARAMS: &[&str] = &[
    "DAYTONA_SANDBOX_AUTH_KEY",
    "signature",
    "signature_expiration",
    "preview_token",
    "platinum_token",
];

/// Cookie name prefixes that belong to Platinum (compared ASCII case-insensitively): its own
/// `platinum*` cookies (the edge's `platinum_edge` among them) and Daytona's preview-auth cookie (`daytona-sandbox-auth-<id>`).
pub const CREDENTIAL_COOKIE_PREFIXES: &[&str] = &["platinum", "daytona-sandbox-auth"];

/// The policy on every proxied response: scripts, forms, popups, modals and downloads work, but
/// the page runs in an opaque origin (no `allow-same-origin`), away from the API's storage.
pub const SANDBOX_CSP: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-modals allow-downloads";

/// Whether a cookie name is one of Platinum's (see [`CREDENTIAL_COOKIE_PREFIXES`]).
pub fn is_platinum_cookie(name: &str) -> bool {
    let name = name.trim().as_bytes();
    CREDENTIAL_COOKIE_PREFIXES
        .iter()
        .any(|p| name.len() >= p.len() && name[..p.len()].eq_ignore_ascii_case(p.as_bytes()))
}

/// Whether a query parameter name carries a credential (see [`CREDENTIAL_QUERY_PARAMS`]).
pub fn is_credential_param(name: &str) -> bool {
    CREDENTIAL_QUERY_PARAMS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// `path_and_query` without credential query parameters; the other parameters are kept byte for
/// byte (their encoding and order unchanged).
pub fn scrub_path_and_query(path_and_query: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            // Decode the name as a server would (`+`, `%XX`), so an encoded name is caught too.
            !form_urlencoded::parse(pair.as_bytes())
                .next()
                .is_some_and(|(name, _)| is_credential_param(&name))
        })
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Removes the headers that describe one hop (RFC 9110 §7.6.1): the fixed [`HOP_BY_HOP`] list,
/// every header `Connection` names, and `Connection` and `Upgrade` themselves, unless `upgrade`
/// (an HTTP/1.1 upgrade being relayed), which leaves `Upgrade` and sets `Connection: upgrade`.
/// What is left may go out over HTTP/2.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !(upgrade && name == UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for h in HOP_BY_HOP {
        headers.remove(*h);
    }
    if upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(CONNECTION);
        headers.remove(UPGRADE);
    }
}

/// Removes every Platinum credential from request headers: the [`CREDENTIAL_HEADERS`], and
/// Platinum's cookies from each `Cookie` header (other cookies are kept; a header left empty is
/// dropped).
pub fn scrub_request(headers: &mut HeaderMap) {
    for h in CREDENTIAL_HEADERS {
        headers.remove(*h);
    }
    let cookies: Vec<HeaderValue> = headers.get_all(COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return;
    }
    headers.remove(COOKIE);
    for value in cookies {
        // A value that is not text cannot be split safely; it is dropped whole.
        let Ok(text) = value.to_str() else { continue };
        let kept: Vec<&str> = text
            .split(';')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .filter(|pair| !is_platinum_cookie(pair.split('=').next().unwrap_or(pair)))
            .collect();
        if !kept.is_empty()
            && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
        {
            headers.append(COOKIE, v);
        }
    }
}

/// Applies the relay's rules to response headers: hop-by-hop headers go ([`strip_hop_by_hop`];
/// `upgrade` for the `101` of a relayed upgrade), `Set-Cookie` headers that would set a Platinum
/// cookie go, and [`SANDBOX_CSP`] is added (after any policy of the service's own, which stays).
pub fn scrub_response(headers: &mut HeaderMap, upgrade: bool) {
    strip_hop_by_hop(headers, upgrade);
    let set_cookies: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
    if !set_cookies.is_empty() {
        headers.remove(SET_COOKIE);
        for value in set_cookies {
            let name = value
                .to_str()
                .ok()
                .map(|t| t.split(';').next().unwrap_or_default())
                .map(|pair| pair.split('=').next().unwrap_or_default());
            match name {
                Some(name) if !is_platinum_cookie(name) => {
                    headers.append(SET_COOKIE, value);
                }
                _ => tracing::debug!("dropped a Set-Cookie from a sandbox service"),
            }
        }
    }
    headers.append(
        CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(SANDBOX_CSP),
    );
}

/// Forwards `req` to `port` in sandbox `id`; `path_and_query` replaces the request's URI.
/// Credentials are removed from both ([`scrub_request`], [`scrub_path_and_query`]) before
/// anything is sent, and the response gets [`scrub_response`]. The service sees
/// `Host: localhost:<port>`.
pub async fn forward(
    engine: &Arc<Engine>,
    id: &str,
    port: u16,
    path_and_query: &str,
    req: Request<Body>,
) -> Result<Response<Body>, Error> {
    forward_as(engine, id, port, path_and_query, req, None).await
}

/// [`forward`], the service seeing `host` as the request's `Host` when one is given (E2B's
/// `maskRequestHost`).
pub async fn forward_as(
    engine: &Arc<Engine>,
    id: &str,
    port: u16,
    path_and_query: &str,
    mut req: Request<Body>,
    host: Option<&str>,
) -> Result<Response<Body>, Error> {
    if req.method() == axum::http::Method::CONNECT {
        return Err(Error::Unsupported(
            "CONNECT is not relayed to sandbox ports (WebSockets: use an HTTP/1.1 upgrade)".into(),
        ));
    }
    let uri = scrub_path_and_query(path_and_query)
        .parse()
        .map_err(|_| Error::InvalidRequest(format!("bad path {path_and_query:?}")))?;
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
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers, wants_upgrade);
    scrub_request(&mut parts.headers);
    let host = host.map_or_else(|| format!("localhost:{port}"), str::to_owned);
    parts.headers.insert(
        HOST,
        HeaderValue::from_str(&host)
            .map_err(|_| Error::InvalidRequest(format!("{host:?} cannot be a Host header")))?,
    );
    parts.version = axum::http::Version::HTTP_11;
    let upstream = sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map_err(|e| Error::GuestUnreachable(format!("request to port {port}: {e}")))?;

    if upstream.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(Error::GuestUnreachable(format!(
                "the service on port {port} switched protocols unasked"
            )));
        };
        let (mut parts, _) = upstream.into_parts();
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
        scrub_response(&mut parts.headers, true);
        return Ok(Response::from_parts(parts, Body::empty()));
    }
    let (mut parts, body) = upstream.into_parts();
    scrub_response(&mut parts.headers, false);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_lose_every_platinum_credential_and_keep_the_rest() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer pk_master"),
            ("x-api-key", "pk_master"),
            ("x-access-token", "envd-token"),
            ("e2b-traffic-access-token", "traffic-token"),
            ("x-daytona-preview-token", "preview-token"),
            ("proxy-authorization", "Basic eDp5"),
            ("x-platinum-edge-token", "pte1.edge"),
            ("accept", "text/html"),
            ("x-custom", "kept"),
        ] {
            h.insert(k, v.parse().unwrap());
        }
        h.append(
            COOKIE,
            "theme=dark; platinum_session=s1; daytona-sandbox-auth-abc=t; PLATINUM=x; platinum_edge=e"
                .parse()
                .unwrap(),
        );
        h.append(COOKIE, "platinum_only=1".parse().unwrap());
        h.append(COOKIE, "lang=en".parse().unwrap());
        scrub_request(&mut h);
        for name in CREDENTIAL_HEADERS {
            assert!(!h.contains_key(*name), "{name} must not reach the guest");
        }
        assert_eq!(h["accept"], "text/html");
        assert_eq!(h["x-custom"], "kept");
        let cookies: Vec<&str> = h
            .get_all(COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(cookies, ["theme=dark", "lang=en"]);
    }

    #[test]
    fn credential_query_parameters_are_dropped_byte_exactly() {
        assert_eq!(scrub_path_and_query("/a/b"), "/a/b");
        assert_eq!(
            scrub_path_and_query("/x?DAYTONA_SANDBOX_AUTH_KEY=tok&q=a%20b&signature=v1_s"),
            "/x?q=a%20b"
        );
        assert_eq!(scrub_path_and_query("/x?daytona_sandbox_auth_key=t"), "/x");
        // An encoded name is caught; other parameters keep their encoding and order.
        assert_eq!(
            scrub_path_and_query("/x?b=2&preview%5Ftoken=t&a=1&&token=jupyter"),
            "/x?b=2&a=1&&token=jupyter"
        );
        assert_eq!(
            scrub_path_and_query("/?signature_expiration=1&signature=x"),
            "/"
        );
        assert_eq!(
            scrub_path_and_query("/p?platinum_token=pte1.x&q=2"),
            "/p?q=2"
        );
    }

    #[test]
    fn responses_get_the_sandbox_policy_and_cannot_set_platinum_cookies() {
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_SECURITY_POLICY,
            "default-src 'self'".parse().unwrap(),
        );
        h.append(SET_COOKIE, "app=1; Path=/".parse().unwrap());
        h.append(
            SET_COOKIE,
            "platinum_session=stolen; Path=/; HttpOnly".parse().unwrap(),
        );
        h.append(SET_COOKIE, "Daytona-Sandbox-Auth-x=1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        scrub_response(&mut h, false);
        let csp: Vec<&str> = h
            .get_all(CONTENT_SECURITY_POLICY)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(csp, ["default-src 'self'", SANDBOX_CSP]);
        assert!(!SANDBOX_CSP.contains("allow-same-origin"));
        let set: Vec<&str> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(set, ["app=1; Path=/"]);
        assert!(!h.contains_key("keep-alive"));

        let mut plain = HeaderMap::new();
        scrub_response(&mut plain, false);
        assert_eq!(plain[CONTENT_SECURITY_POLICY], SANDBOX_CSP);
    }

    #[test]
    fn hop_by_hop_headers_go_and_only_an_upgrade_keeps_its_own() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "close, X-Hop"),
            ("connection", "keep-alive, Upgrade"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("te", "gzip"),
            ("trailer", "x-t"),
            ("content-type", "text/plain"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        let mut upgrade = h.clone();
        // What is left is legal in an HTTP/2 response (RFC 9113 §8.2.2).
        scrub_response(&mut h, false);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["content-security-policy", "content-type"]);

        strip_hop_by_hop(&mut upgrade, true);
        assert_eq!(upgrade[CONNECTION], "upgrade");
        assert_eq!(upgrade[UPGRADE], "websocket");
        assert_eq!(upgrade.get_all(CONNECTION).iter().count(), 1);
        assert!(!upgrade.contains_key("x-hop") && !upgrade.contains_key("keep-alive"));
    }
}
