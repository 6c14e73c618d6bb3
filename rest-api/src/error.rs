//! Errors on the wire: every failure is `{"code": "...", "message": "..."}` with the status the
//! engine assigns to its code. Malformed JSON bodies and query strings get the same shape (400
//! `invalid_request`) instead of axum's plain-text rejections.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use platinum_engine::Error;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// Body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `sandbox_not_found`, `invalid_request`, `unauthorized`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// An engine error on its way to becoming a response.
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!(code = %self.0.code(), error = %self.0, "request failed");
        } else {
            tracing::debug!(code = %self.0.code(), error = %self.0, "request refused");
        }
        let body = ErrorBody {
            code: self.0.code().to_string(),
            message: self.0.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

/// Result type of handlers.
pub type ApiResult<T> = Result<T, ApiError>;

/// Largest JSON request body (axum's default extractor limit).
pub const JSON_BODY_LIMIT: usize = 2 * 1024 * 1024;

/// `Json<T>` whose rejections are typed API errors.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(r) if r.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError(Error::PayloadTooLarge {
                    limit: JSON_BODY_LIMIT as u64,
                }))
            }
            Err(r) => Err(ApiError(Error::InvalidRequest(json_message(&r)))),
        }
    }
}

fn json_message(r: &JsonRejection) -> String {
    match r {
        JsonRejection::MissingJsonContentType(_) => {
            "expected Content-Type: application/json".into()
        }
        other => format!("invalid JSON body: {}", other.body_text()),
    }
}

/// A JSON body that may be left out: no body (or an empty one) is `T::default()`.
pub struct ApiJsonOrDefault<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for ApiJsonOrDefault<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| {
                ApiError(Error::PayloadTooLarge {
                    limit: JSON_BODY_LIMIT as u64,
                })
            })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(ApiJsonOrDefault(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(ApiJsonOrDefault)
            .map_err(|e| ApiError(Error::InvalidRequest(format!("invalid JSON body: {e}"))))
    }
}

/// `Query<T>` whose rejections are typed API errors.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(v)) => Ok(ApiQuery(v)),
            Err(r) => Err(ApiError(Error::InvalidRequest(query_message(&r)))),
        }
    }
}

fn query_message(r: &QueryRejection) -> String {
    format!("invalid query string: {}", r.body_text())
}

/// The fallback for unknown routes: a typed 404.
pub async fn not_found() -> Response {
    let body = ErrorBody {
        code: "route_not_found".into(),
        message: "no such endpoint".into(),
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

/// The fallback for a known path with the wrong method: a typed 405.
pub async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        code: "method_not_allowed".into(),
        message: "this endpoint does not accept that HTTP method".into(),
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}
