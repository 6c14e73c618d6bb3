//! The engine's error type: every failure a front end can see, each with one stable machine code
//! and one HTTP status. Front ends translate these; they never invent their own failure paths.

use platinum_hostagent::Error as HostError;
use platinum_protocol::{GuestError, GuestErrorCode, MuxError};

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No sandbox with that id (or it was deleted).
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    /// No template with that name.
    #[error("template {0:?} not found")]
    TemplateNotFound(String),
    /// The request is malformed.
    #[error("{0}")]
    InvalidRequest(String),
    /// The sandbox is not in a state that allows this.
    #[error("sandbox {id} is {state}; {action} needs it {needed}")]
    InvalidState {
        /// Sandbox id.
        id: String,
        /// Its state.
        state: String,
        /// What was attempted.
        action: String,
        /// Which state(s) would allow it.
        needed: String,
    },
    /// Missing or wrong API key.
    #[error("missing or invalid API key")]
    Unauthorized,
    /// The upload is larger than allowed.
    #[error("payload exceeds the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The host has no room for another sandbox.
    #[error("capacity exhausted: {0}")]
    CapacityExhausted(String),
    /// A command ran past its timeout.
    #[error("command timed out after {0} ms")]
    ExecTimeout(u64),
    /// The guest reported a failure (file not found, permission denied, ...).
    #[error(transparent)]
    Guest(GuestError),
    /// The guest agent did not answer or its connection broke.
    #[error("guest agent unreachable: {0}")]
    GuestUnreachable(String),
    /// The VM failed to boot or died.
    #[error("VM error: {0}")]
    Vm(String),
    /// This host or driver cannot do that.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A conflicting operation is in progress or the resource exists.
    #[error("{0}")]
    Conflict(String),
    /// No background shell session with that id in the sandbox.
    #[error("session {0} not found")]
    SessionNotFound(String),
    /// No command with that id in the session.
    #[error("command {0} not found")]
    CommandNotFound(String),
    /// The session's shell has exited (or was deleted); it runs no more commands.
    #[error("session {0} has ended")]
    SessionEnded(String),
    /// The command has already finished, so it takes no more input.
    #[error("command {0} has already finished")]
    CommandFinished(String),
    /// No code context with that id in the sandbox.
    #[error("code context {0} not found")]
    CodeContextNotFound(String),
    /// No API key with that id.
    #[error("API key {0} not found")]
    ApiKeyNotFound(String),
    /// Storage failed.
    #[error("state store: {0}")]
    Store(String),
    /// Anything else; a bug or a host problem.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::SandboxNotFound(_) => "sandbox_not_found",
            Error::TemplateNotFound(_) => "template_not_found",
            Error::InvalidRequest(_) => "invalid_request",
            Error::InvalidState { .. } => "invalid_state",
            Error::Unauthorized => "unauthorized",
            Error::PayloadTooLarge { .. } => "payload_too_large",
            Error::CapacityExhausted(_) => "capacity_exhausted",
            Error::ExecTimeout(_) => "exec_timeout",
            Error::Guest(g) => guest_code(g.code),
            Error::GuestUnreachable(_) => "guest_unreachable",
            Error::Vm(_) => "vm_error",
            Error::Unsupported(_) => "unsupported",
            Error::Conflict(_) => "conflict",
            Error::SessionNotFound(_) => "session_not_found",
            Error::CommandNotFound(_) => "command_not_found",
            Error::SessionEnded(_) => "session_ended",
            Error::CommandFinished(_) => "command_finished",
            Error::CodeContextNotFound(_) => "code_context_not_found",
            Error::ApiKeyNotFound(_) => "api_key_not_found",
            Error::Store(_) => "store_error",
            Error::Internal(_) => "internal",
        }
    }

    /// HTTP status for the native API (compat front ends map codes to their own statuses).
    pub fn http_status(&self) -> u16 {
        match self {
            Error::SandboxNotFound(_)
            | Error::TemplateNotFound(_)
            | Error::SessionNotFound(_)
            | Error::CommandNotFound(_)
            | Error::CodeContextNotFound(_)
            | Error::ApiKeyNotFound(_) => 404,
            Error::SessionEnded(_) | Error::CommandFinished(_) => 410,
            Error::InvalidRequest(_) => 400,
            Error::InvalidState { .. } | Error::Conflict(_) => 409,
            Error::Unauthorized => 401,
            Error::PayloadTooLarge { .. } => 413,
            Error::CapacityExhausted(_) => 503,
            Error::ExecTimeout(_) => 408,
            Error::Guest(g) => match g.code {
                GuestErrorCode::NotFound | GuestErrorCode::NoSuchProcess => 404,
                GuestErrorCode::PermissionDenied | GuestErrorCode::ReadOnly => 403,
                GuestErrorCode::AlreadyExists | GuestErrorCode::DirectoryNotEmpty => 409,
                GuestErrorCode::NoSpace => 507,
                GuestErrorCode::ConnectionRefused => 502,
                GuestErrorCode::Io => 500,
                GuestErrorCode::Unsupported => 501,
                _ => 400,
            },
            Error::GuestUnreachable(_) | Error::Vm(_) => 502,
            Error::Unsupported(_) => 501,
            Error::Store(_) | Error::Internal(_) => 500,
        }
    }
}

fn guest_code(code: GuestErrorCode) -> &'static str {
    match code {
        GuestErrorCode::NotFound => "file_not_found",
        GuestErrorCode::AlreadyExists => "already_exists",
        GuestErrorCode::PermissionDenied => "permission_denied",
        GuestErrorCode::NotADirectory => "not_a_directory",
        GuestErrorCode::IsADirectory => "is_a_directory",
        GuestErrorCode::DirectoryNotEmpty => "directory_not_empty",
        GuestErrorCode::InvalidArgument => "invalid_request",
        GuestErrorCode::UserNotFound => "user_not_found",
        GuestErrorCode::SpawnFailed => "spawn_failed",
        GuestErrorCode::NoSuchProcess => "process_not_found",
        GuestErrorCode::NoSpace => "no_space",
        GuestErrorCode::ReadOnly => "read_only",
        GuestErrorCode::Unsupported => "unsupported",
        GuestErrorCode::ConnectionRefused => "port_not_open",
        GuestErrorCode::Io => "guest_io_error",
    }
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Guest(g) => Error::Guest(g),
            HostError::Transport(m) => Error::GuestUnreachable(m.to_string()),
            HostError::GuestUnreachable(m) => Error::GuestUnreachable(m),
            HostError::ProtocolMismatch { .. } => Error::GuestUnreachable(e.to_string()),
            HostError::Timeout { .. } => Error::GuestUnreachable(e.to_string()),
            HostError::VmState { .. } => Error::Conflict(e.to_string()),
            HostError::Invalid(m) => Error::InvalidRequest(m),
            HostError::PathEscape(_) => Error::InvalidRequest(e.to_string()),
            HostError::Unsupported(m) => Error::Unsupported(m),
            HostError::VmmStart(_) | HostError::VmmControl { .. } | HostError::VmmExited(_) => {
                Error::Vm(e.to_string())
            }
            HostError::Image { .. }
            | HostError::Network { .. }
            | HostError::MissingProgram { .. }
            | HostError::Io { .. } => Error::Internal(chain(&e)),
        }
    }
}

impl From<MuxError> for Error {
    fn from(e: MuxError) -> Self {
        Error::GuestUnreachable(e.to_string())
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Store(e.to_string())
    }
}

/// Flattens an error and its sources into one line.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_has_a_code_and_status() {
        let cases = [
            (Error::SandboxNotFound("x".into()), "sandbox_not_found", 404),
            (Error::InvalidRequest("x".into()), "invalid_request", 400),
            (Error::Unauthorized, "unauthorized", 401),
            (
                Error::PayloadTooLarge { limit: 1 },
                "payload_too_large",
                413,
            ),
            (Error::ExecTimeout(5), "exec_timeout", 408),
            (Error::SessionNotFound("s".into()), "session_not_found", 404),
            (Error::SessionEnded("s".into()), "session_ended", 410),
            (Error::ApiKeyNotFound("k".into()), "api_key_not_found", 404),
            (
                Error::CodeContextNotFound("c".into()),
                "code_context_not_found",
                404,
            ),
            (
                Error::Guest(GuestError::new(GuestErrorCode::NotFound, "x")),
                "file_not_found",
                404,
            ),
            (
                Error::Guest(GuestError::new(GuestErrorCode::PermissionDenied, "x")),
                "permission_denied",
                403,
            ),
            (
                Error::GuestUnreachable("x".into()),
                "guest_unreachable",
                502,
            ),
        ];
        for (e, code, status) in cases {
            assert_eq!((e.code(), e.http_status()), (code, status), "{e}");
        }
    }
}
