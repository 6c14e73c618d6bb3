//! Daytona-shaped errors. Every failure leaves as
//! `{"statusCode", "message", "error", "code", "source", "path", "method", "timestamp"}` (the
//! toolbox's `ErrorResponse` requires `statusCode`, `message`, `path` and `timestamp`; the SDKs
//! read `message`, and pick an exception class from `source` + `code` (`DAYTONA_DAEMON` +
//! `GIT_BRANCH_NOT_FOUND` is `DaytonaGitBranchNotFoundError`), else from the status).
//!
//! [`DaytonaError::from`] an engine error is the one place engine codes become Daytona statuses
//! and codes. Front-end refusals (an image Platinum cannot build, a git failure, a malformed
//! body) are built with [`DaytonaError::new`] and friends. Extractor rejections come out in the
//! same shape through [`DJson`], [`DQuery`] and [`DPath`].

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use platinum_engine::Error as EngineError;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// A Daytona error response on its way out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaytonaError {
    /// HTTP status.
    pub status: StatusCode,
    /// Daytona's machine code (`FILE_NOT_FOUND`, `SESSION_ENDED`, ...).
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

/// Result of handlers.
pub type DResult<T> = Result<T, DaytonaError>;

impl DaytonaError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        DaytonaError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 `BAD_REQUEST`.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", message)
    }

    /// 404 `NOT_FOUND`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 501: a Daytona feature Platinum does not offer.
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "NOT_IMPLEMENTED", message)
    }

    /// 401 `UNAUTHORIZED`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid API key: send Authorization: Bearer <Platinum API key>",
        )
    }

    /// 500 `INTERNAL_SERVER_ERROR`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL_SERVER_ERROR",
            message,
        )
    }
}

impl From<EngineError> for DaytonaError {
    /// The one mapping of engine codes to Daytona statuses and codes.
    fn from(e: EngineError) -> Self {
        use StatusCode as S;
        use platinum_engine::ErrorCode as C;
        let (status, code) = match e.code() {
            C::SandboxNotFound
            | C::TemplateNotFound
            | C::SnapshotNotFound
            | C::PoolNotFound
            | C::VolumeNotFound
            | C::SecretNotFound
            | C::BuildNotFound => (S::NOT_FOUND, "NOT_FOUND"),
            C::SnapshotSignatureInvalid | C::SnapshotCorrupt | C::SnapshotKeyUnknown => {
                (S::UNPROCESSABLE_ENTITY, "SNAPSHOT_INVALID")
            }
            C::SnapshotIncompatible => (S::CONFLICT, "SNAPSHOT_INCOMPATIBLE"),
            C::SessionNotFound
            | C::CommandNotFound
            | C::CodeContextNotFound
            | C::ApiKeyNotFound
            | C::EdgeKeyNotFound
            | C::PortNotExposed => (S::NOT_FOUND, "NOT_FOUND"),
            C::ProcessNotFound => (S::NOT_FOUND, "PROCESS_NOT_FOUND"),
            C::FileNotFound => (S::NOT_FOUND, "FILE_NOT_FOUND"),
            C::PermissionDenied | C::ReadOnly => (S::FORBIDDEN, "FILE_ACCESS_DENIED"),
            C::NotADirectory | C::IsADirectory => (S::BAD_REQUEST, "INVALID_FILE_PATH"),
            C::AlreadyExists | C::DirectoryNotEmpty | C::Conflict | C::InvalidState => {
                (S::CONFLICT, "CONFLICT")
            }
            C::InvalidRequest | C::UserNotFound | C::SpawnFailed => (S::BAD_REQUEST, "BAD_REQUEST"),
            C::Unauthorized => (S::UNAUTHORIZED, "UNAUTHORIZED"),
            C::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            C::ExecTimeout => (S::REQUEST_TIMEOUT, "PROCESS_EXECUTION_TIMEOUT"),
            C::SessionEnded => (S::GONE, "SESSION_ENDED"),
            C::CommandFinished => (S::GONE, "COMMAND_ALREADY_COMPLETED"),
            C::CapacityExhausted => (S::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE"),
            C::PortNotOpen | C::GuestUnreachable | C::VmError | C::ObjectStoreUnavailable => {
                (S::BAD_GATEWAY, "BAD_GATEWAY")
            }
            C::ArchiveCorrupt => (S::UNPROCESSABLE_ENTITY, "ARCHIVE_CORRUPT"),
            C::Unsupported => (S::NOT_IMPLEMENTED, "NOT_IMPLEMENTED"),
            C::GuestIoError | C::NoSpace => (S::INTERNAL_SERVER_ERROR, "FILE_READ_FAILED"),
            C::StoreError | C::Internal => (S::INTERNAL_SERVER_ERROR, "INTERNAL_SERVER_ERROR"),
        };
        let message = match &e {
            EngineError::SandboxNotFound(id) => {
                format!("Sandbox with ID or name {id} not found")
            }
            other => other.to_string(),
        };
        DaytonaError {
            status,
            code,
            message,
        }
    }
}

/// The request an error answers, for the body's `path` and `method`.
#[derive(Debug, Clone)]
pub struct RequestInfo {
    /// Request path.
    pub path: String,
    /// Request method.
    pub method: String,
}

tokio::task_local! {
    static REQUEST: RequestInfo;
}

/// Middleware: makes the request's path and method available to error bodies.
pub async fn with_request_info(req: Request, next: Next) -> Response {
    let info = RequestInfo {
        path: req.uri().path().to_string(),
        method: req.method().to_string(),
    };
    REQUEST.scope(info, next.run(req)).await
}

/// The request being served, when called within [`with_request_info`] (capture it before
/// handing work to another task).
pub fn current_request() -> Option<RequestInfo> {
    REQUEST.try_with(|r| r.clone()).ok()
}

impl DaytonaError {
    /// The JSON body, for the request being served.
    pub fn body(&self) -> serde_json::Value {
        self.body_for(current_request().as_ref())
    }

    /// The JSON body, for `info`'s request.
    pub fn body_for(&self, info: Option<&RequestInfo>) -> serde_json::Value {
        let timestamp = OffsetDateTime::now_utc()
            .format(&Rfc3339)
            .unwrap_or_default();
        // The SDKs pick the precise exception class by (source, code).
        let source = match info.map(|i| i.path.as_str()) {
            Some(p) if p.starts_with("/toolbox/") => "DAYTONA_DAEMON",
            Some(p) if p.starts_with("/preview/") => "DAYTONA_PROXY",
            _ => "DAYTONA_API",
        };
        serde_json::json!({
            "statusCode": self.status.as_u16(),
            "source": source,
            "message": self.message,
            "error": self.status.canonical_reason().unwrap_or("Error"),
            "code": self.code,
            "path": info.map(|i| i.path.as_str()).unwrap_or(""),
            "method": info.map(|i| i.method.as_str()).unwrap_or(""),
            "timestamp": timestamp,
        })
    }
}

impl IntoResponse for DaytonaError {
    fn into_response(self) -> Response {
        if self.status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(status = %self.status, code = self.code, message = %self.message, "daytona request failed");
        } else if self.status.is_server_error() {
            // A sandbox that is unreachable or a port nothing listens on: worth seeing, not a bug.
            tracing::warn!(status = %self.status, code = self.code, message = %self.message, "daytona request failed");
        } else {
            tracing::debug!(status = %self.status, code = self.code, message = %self.message, "daytona request refused");
        }
        (self.status, Json(self.body())).into_response()
    }
}

/// `Json<T>` whose rejections are Daytona 400s.
pub struct DJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for DJson<T> {
    type Rejection = DaytonaError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(DJson(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(DaytonaError::bad_request(
                "expected Content-Type: application/json",
            )),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(DaytonaError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "request body too large",
            )),
            Err(r) => Err(DaytonaError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_REQUEST_BODY",
                format!("invalid JSON body: {}", r.body_text()),
            )),
        }
    }
}

/// `Query<T>` whose rejections are Daytona 400s.
pub struct DQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for DQuery<T> {
    type Rejection = DaytonaError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| DQuery(q.0))
            .map_err(|r: QueryRejection| {
                DaytonaError::bad_request(format!("invalid query string: {}", r.body_text()))
            })
    }
}

/// `Path<T>` whose rejections are Daytona 400s.
pub struct DPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for DPath<T> {
    type Rejection = DaytonaError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| DPath(p.0))
            .map_err(|r: PathRejection| {
                DaytonaError::bad_request(format!("invalid path parameter: {}", r.body_text()))
            })
    }
}

/// Catch-all for unknown paths under the Daytona prefixes (this includes `/api/socket.io/`,
/// which the SDKs try and then fall back to polling).
pub async fn route_not_found(req: Request) -> DaytonaError {
    DaytonaError::not_found(format!(
        "no such Daytona endpoint: {} {}",
        req.method(),
        req.uri().path()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use platinum_engine::ErrorCode;

    #[test]
    fn engine_errors_map_to_the_statuses_and_codes_the_sdks_expect() {
        let cases = [
            (EngineError::SandboxNotFound("x".into()), 404, "NOT_FOUND"),
            (
                EngineError::ExecTimeout(5),
                408,
                "PROCESS_EXECUTION_TIMEOUT",
            ),
            (EngineError::SessionEnded("s".into()), 410, "SESSION_ENDED"),
            (
                EngineError::CommandFinished("c".into()),
                410,
                "COMMAND_ALREADY_COMPLETED",
            ),
            (
                EngineError::guest(ErrorCode::FileNotFound, "x"),
                404,
                "FILE_NOT_FOUND",
            ),
            (
                EngineError::guest(ErrorCode::ReadOnly, "x"),
                403,
                "FILE_ACCESS_DENIED",
            ),
            (EngineError::Unauthorized, 401, "UNAUTHORIZED"),
            (EngineError::Conflict("x".into()), 409, "CONFLICT"),
            (
                EngineError::Internal("x".into()),
                500,
                "INTERNAL_SERVER_ERROR",
            ),
        ];
        for (e, status, code) in cases {
            let d = DaytonaError::from(e);
            assert_eq!((d.status.as_u16(), d.code), (status, code), "{}", d.message);
        }
    }

    #[test]
    fn bodies_carry_every_required_field() {
        let b = DaytonaError::bad_request("nope").body();
        for k in [
            "statusCode",
            "message",
            "error",
            "code",
            "path",
            "timestamp",
        ] {
            assert!(b.get(k).is_some(), "{k} missing in {b}");
        }
        assert_eq!(b["statusCode"], 400);
        assert_eq!(b["error"], "Bad Request");
    }
}
