//! The URL a request reached this server at, for URLs handed back to clients (upload links,
//! build-log links, previews), and the `Host` of requests that named their host only in the URI
//! (HTTP/2).

use axum::extract::Request;
use axum::http::header::HOST;
use axum::http::{HeaderMap, HeaderValue};

/// Middleware (`axum::middleware::map_request`) that gives a request naming its host only in
/// its URI a `Host` header from it: HTTP/2 carries the host as `:authority`, which hyper puts in
/// the URI, not in `Host`. Every front end (E2B's Host routing, the edge's Host form, URLs handed
/// back) then finds it where HTTP/1.1 puts it. A `Host` the request has is kept.
pub async fn host_from_authority(mut req: Request) -> Request {
    if !req.headers().contains_key(HOST)
        && let Some(v) = req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        req.headers_mut().insert(HOST, v);
    }
    req
}

/// `http://<Host>`, or the scheme and host a reverse proxy forwarded (`X-Forwarded-Proto`,
/// `X-Forwarded-Host`; the first value of a list). `127.0.0.1` when the request named no host.
pub fn request_base_url(headers: &HeaderMap) -> String {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    };
    let host = header("x-forwarded-host")
        .or_else(|| header("host"))
        .unwrap_or_else(|| "127.0.0.1".into());
    let scheme = header("x-forwarded-proto").unwrap_or_else(|| "http".into());
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_authority_becomes_the_missing_host() {
        let req = |uri: &str| {
            Request::builder()
                .uri(uri)
                .body(Default::default())
                .unwrap()
        };
        let h2 = host_from_authority(req("http://8000-abc.edge.test:7070/x")).await;
        assert_eq!(h2.headers()[HOST], "8000-abc.edge.test:7070");
        let mut both = req("http://other.test/x");
        both.headers_mut()
            .insert(HOST, HeaderValue::from_static("kept.test"));
        assert_eq!(host_from_authority(both).await.headers()[HOST], "kept.test");
        assert!(
            !host_from_authority(req("/x"))
                .await
                .headers()
                .contains_key(HOST)
        );
    }

    #[test]
    fn forwarded_headers_win_over_host() {
        let mut h = HeaderMap::new();
        assert_eq!(request_base_url(&h), "http://127.0.0.1");
        h.insert("host", "127.0.0.1:7070".parse().unwrap());
        assert_eq!(request_base_url(&h), "http://127.0.0.1:7070");
        h.insert(
            "x-forwarded-host",
            "api.example.com, proxy".parse().unwrap(),
        );
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        assert_eq!(request_base_url(&h), "https://api.example.com");
    }
}
