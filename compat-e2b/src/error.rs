//! Every failure in E2B's shapes, mapped from [`platinum_engine::Error`] in one place.
//!
//! The SDKs parse four shapes, depending on who E2B says answered:
//! - the control plane ([`ApiError`]): `{"code": <http status>, "message"}`; 401 means a bad key,
//!   404 a missing sandbox or template, 429 capacity;
//! - envd's Connect RPCs ([`ConnectError`]): `{"code": "<connect code>", "message"}` with the
//!   status Connect assigns to the code (or inside an end-of-stream envelope);
//! - envd's plain HTTP routes and the code interpreter ([`HttpError`]): `{"code": <status>,
//!   "message"}` or plain text;
//! - E2B's proxy, for a sandbox that is gone or a port nobody listens on ([`proxy_error`]): 502
//!   `{"sandboxId", "message", "code": 502}` whose message contains `was not found` or
//!   `port is not open`, the substrings the SDKs look for; and its 401 ([`proxy_unauthorized`])
//!   for a service port of a sandbox that is not public, asked for without a token.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use platinum_engine::{Error, ErrorCode};
use serde_json::json;

/// Message of the proxy's answer for a sandbox that does not run (the SDK's "was not found").
pub const SANDBOX_NOT_FOUND: &str = "The sandbox was not found";
/// Message of the proxy's answer for a port nothing listens on (the SDK's "port is not open").
pub const PORT_NOT_OPEN: &str = "The sandbox is running but port is not open";
/// Message of the proxy's 401 for a service port asked for without a valid token.
pub const TRAFFIC_TOKEN_REQUIRED: &str = "Invalid or missing traffic access token: send the sandbox's trafficAccessToken as E2B-Traffic-Access-Token (or its envdAccessToken as X-Access-Token)";

fn log(status: u16, e: &Error) {
    if status >= 500 {
        tracing::error!(code = %e.code(), error = %e, "E2B request failed");
    } else {
        tracing::debug!(code = %e.code(), error = %e, "E2B request refused");
    }
}

/// A control-plane error.
#[derive(Debug)]
pub struct ApiError {
    /// HTTP status (also the body's `code`).
    pub status: u16,
    /// The body's `message`.
    pub message: String,
}

impl ApiError {
    /// A 400 with a message.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError {
            status: 400,
            message: message.into(),
        }
    }

    /// A 404 for a sandbox id.
    pub fn sandbox_not_found(id: &str) -> Self {
        ApiError {
            status: 404,
            message: format!("sandbox \"{id}\" doesn't exist or you don't have access to it"),
        }
    }
}

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        match &e {
            Error::SandboxNotFound(id) => return ApiError::sandbox_not_found(id),
            Error::TemplateNotFound(t) => {
                return ApiError {
                    status: 404,
                    message: format!("template '{t}' not found"),
                };
            }
            _ => {}
        }
        let status = api_status(e.code());
        log(status, &e);
        ApiError {
            status,
            message: e.to_string(),
        }
    }
}

/// The control plane's status for a code: capacity is E2B's 429, a broken VM its 500, the rest
/// as the native API answers.
fn api_status(code: ErrorCode) -> u16 {
    use ErrorCode as C;
    match code {
        C::CapacityExhausted => 429,
        C::VmError | C::GuestUnreachable => 500,
        C::SandboxNotFound
        | C::TemplateNotFound
        | C::InvalidRequest
        | C::InvalidState
        | C::Conflict
        | C::Unauthorized
        | C::PayloadTooLarge
        | C::ExecTimeout
        | C::FileNotFound
        | C::AlreadyExists
        | C::PermissionDenied
        | C::NotADirectory
        | C::IsADirectory
        | C::DirectoryNotEmpty
        | C::UserNotFound
        | C::SpawnFailed
        | C::ProcessNotFound
        | C::NoSpace
        | C::ReadOnly
        | C::PortNotOpen
        | C::GuestIoError
        | C::Unsupported
        | C::SessionNotFound
        | C::CommandNotFound
        | C::SessionEnded
        | C::CommandFinished
        | C::CodeContextNotFound
        | C::ApiKeyNotFound
        | C::EdgeKeyNotFound
        | C::PortNotExposed
        | C::SnapshotNotFound
        | C::PoolNotFound
        | C::VolumeNotFound
        | C::SecretNotFound
        | C::BuildNotFound
        | C::SnapshotSignatureInvalid
        | C::SnapshotCorrupt
        | C::SnapshotKeyUnknown
        | C::SnapshotIncompatible
        | C::ObjectStoreUnavailable
        | C::ArchiveCorrupt
        | C::StoreError
        | C::Internal => code.http_status(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({ "code": self.status, "message": self.message })),
        )
            .into_response()
    }
}

/// Connect error codes (the subset envd uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    /// Cancelled.
    Canceled,
    /// Unknown failure.
    Unknown,
    /// Bad request.
    InvalidArgument,
    /// A deadline passed.
    DeadlineExceeded,
    /// No such file or process.
    NotFound,
    /// Exists already.
    AlreadyExists,
    /// Not allowed.
    PermissionDenied,
    /// Out of something (space, capacity).
    ResourceExhausted,
    /// Wrong state.
    FailedPrecondition,
    /// Not implemented.
    Unimplemented,
    /// Internal failure.
    Internal,
    /// The sandbox cannot be reached.
    Unavailable,
    /// Bad or missing token or user.
    Unauthenticated,
}

impl ConnectCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectCode::Canceled => "canceled",
            ConnectCode::Unknown => "unknown",
            ConnectCode::InvalidArgument => "invalid_argument",
            ConnectCode::DeadlineExceeded => "deadline_exceeded",
            ConnectCode::NotFound => "not_found",
            ConnectCode::AlreadyExists => "already_exists",
            ConnectCode::PermissionDenied => "permission_denied",
            ConnectCode::ResourceExhausted => "resource_exhausted",
            ConnectCode::FailedPrecondition => "failed_precondition",
            ConnectCode::Unimplemented => "unimplemented",
            ConnectCode::Internal => "internal",
            ConnectCode::Unavailable => "unavailable",
            ConnectCode::Unauthenticated => "unauthenticated",
        }
    }

    /// The HTTP status of a unary error with this code.
    pub fn http_status(self) -> u16 {
        match self {
            ConnectCode::Canceled => 499,
            ConnectCode::Unknown | ConnectCode::Internal => 500,
            ConnectCode::InvalidArgument | ConnectCode::FailedPrecondition => 400,
            ConnectCode::DeadlineExceeded => 504,
            ConnectCode::NotFound => 404,
            ConnectCode::AlreadyExists => 409,
            ConnectCode::PermissionDenied => 403,
            ConnectCode::ResourceExhausted => 429,
            ConnectCode::Unimplemented => 501,
            ConnectCode::Unavailable => 503,
            ConnectCode::Unauthenticated => 401,
        }
    }
}

/// An envd RPC error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectError {
    /// Code.
    pub code: ConnectCode,
    /// Message.
    pub message: String,
}

impl ConnectError {
    /// A new error.
    pub fn new(code: ConnectCode, message: impl Into<String>) -> Self {
        ConnectError {
            code,
            message: message.into(),
        }
    }

    /// `invalid_argument`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ConnectCode::InvalidArgument, message)
    }

    /// The JSON of the error (`{"code", "message"}`).
    pub fn body(&self) -> serde_json::Value {
        json!({ "code": self.code.as_str(), "message": self.message })
    }
}

impl From<Error> for ConnectError {
    fn from(e: Error) -> Self {
        match &e {
            Error::SandboxNotFound(id) => {
                return ConnectError::new(
                    ConnectCode::Unavailable,
                    format!("sandbox {id} {}", not_running()),
                );
            }
            Error::InvalidState { id, state, .. } => {
                return ConnectError::new(
                    ConnectCode::Unavailable,
                    format!("sandbox {id} {} (it is {state})", not_running()),
                );
            }
            _ => {}
        }
        let code = connect_code(e.code());
        log(code.http_status(), &e);
        ConnectError::new(code, e.to_string())
    }
}

/// The Connect code envd would answer with.
fn connect_code(code: ErrorCode) -> ConnectCode {
    use ConnectCode as C;
    use ErrorCode as E;
    match code {
        E::SandboxNotFound
        | E::InvalidState
        | E::GuestUnreachable
        | E::VmError
        | E::PortNotOpen
        | E::ObjectStoreUnavailable => C::Unavailable,
        E::InvalidRequest | E::NotADirectory | E::IsADirectory | E::SpawnFailed => {
            C::InvalidArgument
        }
        E::Unauthorized | E::UserNotFound => C::Unauthenticated,
        E::PayloadTooLarge | E::CapacityExhausted | E::NoSpace => C::ResourceExhausted,
        E::ExecTimeout => C::DeadlineExceeded,
        E::FileNotFound
        | E::ProcessNotFound
        | E::CodeContextNotFound
        | E::ApiKeyNotFound
        | E::EdgeKeyNotFound
        | E::PortNotExposed
        | E::SessionNotFound
        | E::CommandNotFound
        | E::SnapshotNotFound
        | E::PoolNotFound
        | E::VolumeNotFound
        | E::SecretNotFound
        | E::BuildNotFound
        | E::TemplateNotFound => C::NotFound,
        E::AlreadyExists => C::AlreadyExists,
        E::PermissionDenied | E::ReadOnly => C::PermissionDenied,
        E::DirectoryNotEmpty
        | E::Conflict
        | E::SessionEnded
        | E::CommandFinished
        | E::SnapshotIncompatible
        | E::SnapshotSignatureInvalid
        | E::SnapshotCorrupt
        | E::SnapshotKeyUnknown
        | E::ArchiveCorrupt => C::FailedPrecondition,
        E::Unsupported => C::Unimplemented,
        E::GuestIoError | E::StoreError | E::Internal => C::Internal,
    }
}

/// The tail of messages about a sandbox that is gone: contains the SDK's `was not found`.
pub fn not_running() -> &'static str {
    "was not found: it was killed, paused or reached its timeout"
}

impl IntoResponse for ConnectError {
    /// A unary RPC's error response.
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.code.http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            [(CONTENT_TYPE, "application/json")],
            self.body().to_string(),
        )
            .into_response()
    }
}

/// An error of envd's plain HTTP routes: `{"code": <status>, "message"}`.
#[derive(Debug)]
pub struct HttpError {
    /// Status.
    pub status: u16,
    /// Message.
    pub message: String,
}

impl HttpError {
    /// A new error.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        HttpError {
            status,
            message: message.into(),
        }
    }
}

impl From<Error> for HttpError {
    fn from(e: Error) -> Self {
        let status = http_status(e.code());
        if status == 502
            && matches!(
                e.code(),
                ErrorCode::SandboxNotFound | ErrorCode::InvalidState
            )
        {
            return HttpError::new(502, format!("{SANDBOX_NOT_FOUND}: {e}"));
        }
        log(status, &e);
        HttpError::new(status, e.to_string())
    }
}

/// The status envd's plain HTTP routes answer with (a sandbox that does not run: the proxy's
/// 502; an unknown user: 401).
fn http_status(code: ErrorCode) -> u16 {
    use ErrorCode as C;
    match code {
        C::SandboxNotFound | C::InvalidState | C::GuestUnreachable | C::VmError => 502,
        C::InvalidRequest
        | C::AlreadyExists
        | C::NotADirectory
        | C::IsADirectory
        | C::DirectoryNotEmpty
        | C::SpawnFailed
        | C::ProcessNotFound
        | C::PortNotOpen => 400,
        C::Unauthorized | C::UserNotFound => 401,
        C::PermissionDenied | C::ReadOnly => 403,
        C::FileNotFound => 404,
        C::PayloadTooLarge => 413,
        C::NoSpace => 507,
        C::GuestIoError => 500,
        C::TemplateNotFound
        | C::CapacityExhausted
        | C::ExecTimeout
        | C::Unsupported
        | C::Conflict
        | C::SessionNotFound
        | C::CommandNotFound
        | C::SessionEnded
        | C::CommandFinished
        | C::CodeContextNotFound
        | C::ApiKeyNotFound
        | C::EdgeKeyNotFound
        | C::PortNotExposed
        | C::SnapshotNotFound
        | C::PoolNotFound
        | C::VolumeNotFound
        | C::SecretNotFound
        | C::BuildNotFound
        | C::SnapshotSignatureInvalid
        | C::SnapshotCorrupt
        | C::SnapshotKeyUnknown
        | C::SnapshotIncompatible
        | C::ObjectStoreUnavailable
        | C::ArchiveCorrupt
        | C::StoreError
        | C::Internal => code.http_status(),
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (
            status,
            Json(json!({ "code": self.status, "message": self.message })),
        )
            .into_response()
    }
}

/// The proxy's 502 for a sandbox: `message` is [`SANDBOX_NOT_FOUND`] or [`PORT_NOT_OPEN`].
pub fn proxy_error(sandbox_id: &str, message: &str) -> Response {
    (
        StatusCode::BAD_GATEWAY,
        Json(json!({ "sandboxId": sandbox_id, "message": message, "code": 502 })),
    )
        .into_response()
}

/// The proxy's 401 for a sandbox's service port: `{"sandboxId", "message", "code": 401}`.
pub fn proxy_unauthorized(sandbox_id: &str) -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "sandboxId": sandbox_id, "message": TRAFFIC_TOKEN_REQUIRED, "code": 401 })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_errors_map_to_each_shape() {
        let gone = || Error::SandboxNotFound("abc".into());
        assert_eq!(ApiError::from(gone()).status, 404);
        assert_eq!(
            ApiError::from(Error::CapacityExhausted("full".into())).status,
            429
        );
        let c = ConnectError::from(gone());
        assert_eq!(c.code, ConnectCode::Unavailable);
        assert!(c.message.contains("was not found"), "{}", c.message);
        let missing = || Error::guest(ErrorCode::FileNotFound, "no file");
        assert_eq!(ConnectError::from(missing()).code, ConnectCode::NotFound);
        assert_eq!(HttpError::from(missing()).status, 404);
        let full = Error::guest(ErrorCode::NoSpace, "disk full");
        assert_eq!(HttpError::from(full).status, 507);
        let nobody = Error::guest(ErrorCode::UserNotFound, "x");
        assert_eq!(
            ConnectError::from(nobody).code,
            ConnectCode::Unauthenticated
        );
        assert_eq!(HttpError::from(gone()).status, 502);
        assert_eq!(ConnectCode::Unauthenticated.http_status(), 401);
        // Every code maps in every shape (the matches are exhaustive; this checks the values).
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&api_status(code)), "{code}");
            assert!((400..600).contains(&http_status(code)), "{code}");
            assert!(
                (400..600).contains(&connect_code(code).http_status()),
                "{code}"
            );
        }
    }
}
