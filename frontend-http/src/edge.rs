//! The product's edge proxy over HTTP: a sandbox's port at `<port>-<id>.<domain>` (Host form)
//! or `/edge/<id>/<port>/<path>` (path form), outside the API-key check.
//!
//! **Access.** A request gets through with an edge token (minted by `POST
//! /v1/sandboxes/{id}/ports/{port}/tokens`, verified by the engine: key, signature in constant
//! time, target, expiry, revocation) in [`TOKEN_HEADER`], in the [`TOKEN_PARAM`] query
//! parameter or in the [`COOKIE`] cookie, or without one when the port is exposed publicly.
//! A token in the query parameter of a `GET`/`HEAD` is turned into the cookie (HttpOnly,
//! SameSite=Lax, Secure when the request came over HTTPS, host-only and `Path=/` in the Host
//! form, `Path=/edge/<id>/<port>` in the path form, expiring with the token) and the browser is
//! redirected to the same URL without it, so the token leaves the address bar and history.
//! A path form without the slash after the port (`/edge/<id>/<port>`, `...?<query>`) is
//! redirected (308, query kept) to `/edge/<id>/<port>/`, so the service's relative links resolve
//! under its prefix.
//!
//! **Protocols.** Clients may speak HTTP/1.1 or HTTP/2 (h2c, prior knowledge) to the main
//! listener; in HTTP/2 the Host form is read from `:authority` (see
//! [`crate::origin::host_from_authority`]). The service is spoken to in HTTP/1.1 whatever the
//! client spoke; bodies stream both ways and WebSocket upgrades (HTTP/1.1) pass through.
//!
//! **Host form and E2B.** This middleware runs in front of E2B's routing, which reads the same
//! Host shape: a Host-form request is the product's when it carries a product credential (token
//! header, query parameter or a valid edge cookie) or its port is public; any other falls
//! through to E2B, whose own tokens keep their meaning. A token header or parameter that does not
//! verify is refused here (401), not handed on.
//!
//! **Waking.** A paused or suspended sandbox is resumed first ([`Engine::wake_for_edge`]: once
//! for concurrent hits; the response then carries [`RESUMED_HEADER`], milliseconds); a stopped or
//! archived one is `invalid_state` (409).
//!
//! **The guest is hostile.** The relay ([`crate::relay`]) strips every product credential
//! (the header, the parameter and `platinum*` cookies are on its lists) before anything reaches
//! the service, and drops `Set-Cookie` of `platinum*` cookies; here the service may further not
//! set cookies for other hosts: a `Set-Cookie` with a `Domain` attribute is kept only in the Host
//! form and only when it names exactly the sandbox's own host ([`scrub_cookie_domains`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header::{self, HOST, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use platinum_engine::ids::is_valid_id;
use platinum_engine::{Engine, Error};

use crate::relay;

/// Request header carrying an edge token.
pub const TOKEN_HEADER: &str = "x-platinum-edge-token";
/// Query parameter carrying an edge token (turned into [`COOKIE`]).
pub const TOKEN_PARAM: &str = "platinum_token";
/// The cookie that keeps a browser's access (its value is the token).
pub const COOKIE: &str = "platinum_edge";
/// Response header saying how long waking the sandbox took (ms), when this request did.
pub const RESUMED_HEADER: &str = "x-platinum-edge-resumed-ms";
/// Where the path form starts.
pub const PATH_PREFIX: &str = "/edge/";

/// How a request named its sandbox port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Form {
    /// `<port>-<id>.<domain>`; the host name (no port) is the cookie's and `Set-Cookie`'s scope.
    Host(String),
    /// `/edge/<id>/<port>`; this prefix is the cookie's `Path`.
    Path(String),
}

/// A sandbox port an edge request is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Sandbox id.
    pub sandbox: String,
    /// Port inside it.
    pub port: u16,
    /// How the request named it.
    pub form: Form,
    /// What the service is asked for (path and query).
    pub upstream: String,
    /// The path form without the slash after the port: answered with a redirect to it.
    pub bare: bool,
}

fn host_name(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// Reads `<port>-<id>.<domain>` from a Host value (the first label exactly `<port>-<id>`).
pub fn host_target(host: &str) -> Option<(u16, String, String)> {
    let name = host_name(host);
    if name.eq_ignore_ascii_case("localhost") || name.starts_with('[') {
        return None;
    }
    let (label, rest) = name.split_once('.')?;
    if rest.is_empty() || name.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    let (port, id) = label.split_once('-')?;
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let port = port.parse::<u16>().ok().filter(|p| digits && *p > 0)?;
    is_valid_id(id).then(|| (port, id.to_string(), name.to_ascii_lowercase()))
}

/// Reads `/edge/<id>/<port>[/<rest>]` from a path and query. `Err` for a path under
/// [`PATH_PREFIX`] that names no sandbox port.
pub fn path_target(path_and_query: &str) -> Option<Result<Target, Error>> {
    let rest = path_and_query.strip_prefix(PATH_PREFIX)?;
    let bad = || {
        Some(Err(Error::InvalidRequest(
            "edge paths are /edge/<sandbox id>/<port>/<path>".into(),
        )))
    };
    let Some((id, rest)) = rest.split_once('/') else {
        return bad();
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (port, tail) = rest.split_at(end);
    let digits = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let Some(port) = port.parse::<u16>().ok().filter(|p| digits && *p > 0) else {
        return bad();
    };
    if !is_valid_id(id) {
        return Some(Err(Error::SandboxNotFound(id.to_string())));
    }
    let bare = !tail.starts_with('/');
    let upstream = if bare {
        format!("/{tail}")
    } else {
        tail.to_string()
    };
    Some(Ok(Target {
        sandbox: id.to_string(),
        port,
        form: Form::Path(format!("{PATH_PREFIX}{id}/{port}")),
        upstream,
        bare,
    }))
}

/// The credentials a request carries, by where they came from.
#[derive(Debug, Default)]
struct Credentials {
    header: Option<String>,
    param: Option<String>,
    cookies: Vec<String>,
}

impl Credentials {
    fn of(headers: &HeaderMap, query: Option<&str>) -> Credentials {
        let header = headers
            .get(TOKEN_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim().to_string());
        let param = query.and_then(|q| {
            form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == TOKEN_PARAM)
                .map(|(_, v)| v.into_owned())
        });
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(k, _)| *k == COOKIE)
            .map(|(_, v)| v.trim().to_string())
            .collect();
        Credentials {
            header,
            param,
            cookies,
        }
    }

    /// Whether a token was presented explicitly (header or parameter).
    fn explicit(&self) -> bool {
        self.header.is_some() || self.param.is_some()
    }

    /// The first presented token that verifies, with whether it came from the parameter;
    /// otherwise the refusal of the first explicit one (for the log and the message).
    fn check(&self, engine: &Engine, t: &Target) -> Result<(String, bool), String> {
        let mut first_refusal = None;
        let candidates = self
            .param
            .iter()
            .map(|p| (p, true))
            .chain(self.header.iter().map(|h| (h, false)))
            .chain(self.cookies.iter().map(|c| (c, false)));
        for (token, from_param) in candidates {
            match engine.verify_edge_token(token, &t.sandbox, t.port) {
                Ok(_) => return Ok((token.clone(), from_param)),
                Err(r) => {
                    first_refusal.get_or_insert(r.as_str());
                }
            }
        }
        Err(first_refusal
            .unwrap_or(
                "no edge token (header, query parameter or cookie) and the port is not public",
            )
            .to_string())
    }
}

/// An engine error as the edge answers it: the status of its code and `{code, message}`.
pub fn error_response(e: Error) -> Response {
    let status = StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if status.is_server_error() {
        tracing::warn!(code = %e.code(), error = %e, "edge request failed");
    } else {
        tracing::debug!(code = %e.code(), error = %e, "edge request refused");
    }
    let body = serde_json::json!({ "code": e.code().as_str(), "message": e.to_string() });
    (status, Json(body)).into_response()
}

fn is_https(headers: &HeaderMap, req_scheme: Option<&str>) -> bool {
    let forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"));
    forwarded || req_scheme == Some("https")
}

/// The `Set-Cookie` value that keeps `token` for target `t`, for `max_age` seconds.
pub fn access_cookie(t: &Target, token: &str, max_age: i64, secure: bool) -> String {
    let path = match &t.form {
        Form::Host(_) => "/",
        Form::Path(prefix) => prefix,
    };
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path={path}; Max-Age={}; HttpOnly; SameSite=Lax{secure}",
        max_age.max(0)
    )
}

/// Drops `Set-Cookie` headers the service may not send: in the Host form those whose `Domain`
/// is not exactly the sandbox's host (`own_host`), in the path form every one with a `Domain`
/// (the path form shares the API's host). Host-only cookies stay; `platinum*` cookies are the
/// relay's to drop.
pub fn scrub_cookie_domains(headers: &mut HeaderMap, form: &Form) {
    let all: Vec<HeaderValue> = headers.get_all(SET_COOKIE).iter().cloned().collect();
    if all.is_empty() {
        return;
    }
    headers.remove(SET_COOKIE);
    for value in all {
        let Ok(text) = value.to_str() else { continue };
        let domain = text
            .split(';')
            .skip(1)
            .filter_map(|attr| attr.trim().split_once('='))
            .filter(|(k, _)| k.trim().eq_ignore_ascii_case("domain"))
            .map(|(_, v)| v.trim().trim_start_matches('.'))
            .filter(|v| !v.is_empty())
            .last();
        let allowed = match (domain, form) {
            (None, _) => true,
            (Some(d), Form::Host(own)) => d.eq_ignore_ascii_case(own),
            (Some(_), Form::Path(_)) => false,
        };
        if allowed {
            headers.append(SET_COOKIE, value);
        } else {
            tracing::debug!(domain = ?domain, "dropped a Set-Cookie for another domain from a sandbox service");
        }
    }
}

/// Middleware in front of the whole server (and of E2B's routing): serves edge requests,
/// passes the rest on.
pub async fn middleware(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    if let Some(target) = path_target(&path_and_query) {
        return match target {
            Ok(t) => {
                let creds = Credentials::of(req.headers(), req.uri().query());
                match creds.check(&engine, &t) {
                    Ok((token, from_param)) => {
                        serve(&engine, t, req, Some((token, from_param))).await
                    }
                    Err(_) if engine.is_port_public(&t.sandbox, t.port) => {
                        serve(&engine, t, req, None).await
                    }
                    Err(why) => error_response(Error::EdgeUnauthorized(why)),
                }
            }
            Err(e) => error_response(e),
        };
    }
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or(req.uri().host())
        .and_then(host_target);
    let Some((port, sandbox, own_host)) = host else {
        return next.run(req).await;
    };
    let t = Target {
        sandbox,
        port,
        form: Form::Host(own_host),
        upstream: path_and_query,
        bare: false,
    };
    let creds = Credentials::of(req.headers(), req.uri().query());
    match creds.check(&engine, &t) {
        Ok((token, from_param)) => serve(&engine, t, req, Some((token, from_param))).await,
        Err(_) if engine.is_port_public(&t.sandbox, t.port) => serve(&engine, t, req, None).await,
        Err(why) if creds.explicit() => error_response(Error::EdgeUnauthorized(why)),
        // Not the product's: E2B's routing (or the rest of the server) decides.
        Err(_) => next.run(req).await,
    }
}

/// Serves an admitted request: the query token becomes a cookie (and a redirect for GET/HEAD),
/// a bare path form is redirected to its slash, the sandbox is woken, the request relayed and
/// the response's cookies checked.
async fn serve(
    engine: &Arc<Engine>,
    t: Target,
    req: Request,
    granted: Option<(String, bool)>,
) -> Response {
    let secure = is_https(req.headers(), req.uri().scheme_str());
    let cookie = match &granted {
        Some((token, true)) => engine
            .verify_edge_token(token, &t.sandbox, t.port)
            .ok()
            .map(|claims| {
                let max_age = claims.expires_at - time_now();
                access_cookie(&t, token, max_age, secure)
            }),
        _ => None,
    };
    if let Some(cookie) = &cookie
        && matches!(*req.method(), Method::GET | Method::HEAD)
    {
        let location = match &t.form {
            Form::Host(_) => relay::scrub_path_and_query(&t.upstream),
            Form::Path(prefix) => relay::scrub_path_and_query(&format!("{prefix}{}", t.upstream)),
        };
        return redirect(StatusCode::SEE_OTHER, &location, Some(cookie));
    }
    if t.bare
        && let Form::Path(prefix) = &t.form
    {
        // `upstream` is `/` and the query as sent (a token parameter of a non-GET included, so
        // the redirected request is admitted the same way).
        return redirect(
            StatusCode::PERMANENT_REDIRECT,
            &format!("{prefix}{}", t.upstream),
            cookie.as_deref(),
        );
    }
    let woken = match engine.wake_for_edge(&t.sandbox).await {
        Ok(w) => w,
        Err(e) => return error_response(e),
    };
    let mut response = match relay::forward(engine, &t.sandbox, t.port, &t.upstream, req).await {
        Ok(r) => r,
        Err(e) => return error_response(e),
    };
    scrub_cookie_domains(response.headers_mut(), &t.form);
    if let Some(took) = woken.resumed_in
        && let Ok(v) = HeaderValue::from_str(&took.as_millis().to_string())
    {
        response.headers_mut().insert(RESUMED_HEADER, v);
    }
    if let Some(cookie) = cookie
        && let Ok(v) = HeaderValue::from_str(&cookie)
    {
        response.headers_mut().append(SET_COOKIE, v);
    }
    response
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn redirect(status: StatusCode, location: &str, cookie: Option<&str>) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(LOCATION, v);
    }
    if let Some(Ok(v)) = cookie.map(HeaderValue::from_str) {
        r.headers_mut().insert(SET_COOKIE, v);
    }
    r.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_paths_name_a_sandbox_port() {
        assert_eq!(
            host_target("8000-abc123.edge.example.com:7070"),
            Some((8000, "abc123".into(), "8000-abc123.edge.example.com".into()))
        );
        for h in [
            "localhost:7070",
            "127.0.0.1",
            "8000-abc",
            "8000-ABC.x.com",
            "0-abc.x.com",
            "+80-abc.x.com",
            "x-abc.x.com",
        ] {
            assert_eq!(host_target(h), None, "{h}");
        }
        let t = path_target("/edge/abc123/8000/a/b?q=1").unwrap().unwrap();
        assert_eq!(
            (t.sandbox.as_str(), t.port, t.upstream.as_str()),
            ("abc123", 8000, "/a/b?q=1")
        );
        assert_eq!(t.form, Form::Path("/edge/abc123/8000".into()));
        assert!(!t.bare);
        let slash = path_target("/edge/abc123/8000/?x=1").unwrap().unwrap();
        assert_eq!((slash.upstream.as_str(), slash.bare), ("/?x=1", false));
        let bare = path_target("/edge/abc123/8000").unwrap().unwrap();
        assert_eq!((bare.upstream.as_str(), bare.bare), ("/", true));
        let bare = path_target("/edge/abc123/8000?x=1").unwrap().unwrap();
        assert_eq!((bare.upstream.as_str(), bare.bare), ("/?x=1", true));
        assert!(path_target("/v1/sandboxes").is_none());
        for bad in [
            "/edge/abc123",
            "/edge/abc123/0/",
            "/edge/abc123/port/",
            "/edge/ABC/80/",
        ] {
            assert!(path_target(bad).unwrap().is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_read_from_header_parameter_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert(TOKEN_HEADER, " hdr ".parse().unwrap());
        h.append(header::COOKIE, "a=1; platinum_edge=c1".parse().unwrap());
        h.append(header::COOKIE, "platinum_edge=c2".parse().unwrap());
        let c = Credentials::of(&h, Some("x=1&platinum_token=p%2Ex"));
        assert_eq!(c.header.as_deref(), Some("hdr"));
        assert_eq!(c.param.as_deref(), Some("p.x"));
        assert_eq!(c.cookies, ["c1", "c2"]);
        assert!(c.explicit());
        assert!(!Credentials::of(&HeaderMap::new(), None).explicit());
    }

    #[test]
    fn services_cannot_set_cookies_for_other_domains() {
        let mut h = HeaderMap::new();
        for v in [
            "a=1; Path=/",
            "b=2; Domain=example.com",
            "c=3; domain=.8000-abc.edge.example.com; Path=/",
            "d=4; Domain=other-abc.edge.example.com",
            "e=5; Domain=",
        ] {
            h.append(SET_COOKIE, v.parse().unwrap());
        }
        let mut host = h.clone();
        scrub_cookie_domains(&mut host, &Form::Host("8000-abc.edge.example.com".into()));
        let kept: Vec<&str> = host
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(
            kept,
            [
                "a=1; Path=/",
                "c=3; domain=.8000-abc.edge.example.com; Path=/",
                "e=5; Domain="
            ]
        );
        scrub_cookie_domains(&mut h, &Form::Path("/edge/abc/8000".into()));
        let kept: Vec<&str> = h
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(kept, ["a=1; Path=/", "e=5; Domain="]);
    }

    #[test]
    fn the_access_cookie_is_http_only_and_scoped() {
        let t = path_target("/edge/abc/8000/x").unwrap().unwrap();
        assert_eq!(
            access_cookie(&t, "tok", 60, false),
            "platinum_edge=tok; Path=/edge/abc/8000; Max-Age=60; HttpOnly; SameSite=Lax"
        );
        let host = Target {
            form: Form::Host("8000-abc.example.com".into()),
            ..t
        };
        assert!(
            access_cookie(&host, "tok", 60, true)
                .ends_with("; Path=/; Max-Age=60; HttpOnly; SameSite=Lax; Secure")
        );
        assert!(
            relay::is_platinum_cookie(COOKIE),
            "the relay strips the edge cookie"
        );
        assert!(
            relay::is_credential_param(TOKEN_PARAM),
            "the relay strips the token parameter"
        );
        assert!(
            relay::CREDENTIAL_HEADERS.contains(&TOKEN_HEADER),
            "the relay strips the token header"
        );
    }
}
