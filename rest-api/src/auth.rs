//! Bearer API key check for `/v1`: `Authorization: Bearer <key>` (or `X-API-Key: <key>`).
//! Anything else is a typed 401.

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use platinum_engine::{Engine, Error};
use std::sync::Arc;

use crate::error::ApiError;

/// The key a request presents, if any.
pub fn presented_key(req: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(v) = req.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let mut parts = v.splitn(2, ' ');
        let (scheme, key) = (parts.next()?, parts.next()?);
        return scheme.eq_ignore_ascii_case("bearer").then_some(key.trim());
    }
    req.get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Middleware rejecting requests without a valid key.
pub async fn require_key(State(engine): State<Arc<Engine>>, req: Request, next: Next) -> Response {
    match presented_key(req.headers()) {
        Some(key) if engine.api_keys().verify(key) => next.run(req).await,
        _ => ApiError(Error::Unauthorized).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    #[test]
    fn reads_bearer_and_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(presented_key(&h), Some("abc"));
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(presented_key(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k".parse().unwrap());
        assert_eq!(presented_key(&h), Some("k"));
        assert_eq!(presented_key(&HeaderMap::new()), None);
    }
}
