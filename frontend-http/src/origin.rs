//! The URL a request reached this server at, for URLs handed back to clients (upload links,
//! build-log links, previews).

use axum::http::HeaderMap;

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
