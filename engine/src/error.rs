//! The engine's error type: every failure a front end can see, each with one stable machine code
//! and one HTTP status. Front ends translate these; they never invent their own failure paths.

use platinum_hostagent::Error as HostError;
use platinum_protocol::{GuestError, GuestErrorCode, MuxError};

/// Result alias for the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every machine-readable failure code a front end can see. Front ends map failures by matching
/// this enum exhaustively, so a new code that a front end does not map fails to compile there
/// instead of becoming a silent 500.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No sandbox with that id.
    SandboxNotFound,
    /// No template with that name.
    TemplateNotFound,
    /// The request is malformed (also the guest's "invalid argument").
    InvalidRequest,
    /// The sandbox is not in a state that allows this.
    InvalidState,
    /// Missing or wrong API key.
    Unauthorized,
    /// The upload is larger than allowed.
    PayloadTooLarge,
    /// The host has no room for another sandbox.
    CapacityExhausted,
    /// A command ran past its timeout.
    ExecTimeout,
    /// Guest: no such file or directory.
    FileNotFound,
    /// Guest: the path exists already.
    AlreadyExists,
    /// Guest: permission denied.
    PermissionDenied,
    /// Guest: a path component is not a directory.
    NotADirectory,
    /// Guest: the path is a directory.
    IsADirectory,
    /// Guest: the directory is not empty.
    DirectoryNotEmpty,
    /// Guest: no such user.
    UserNotFound,
    /// Guest: the program could not be started.
    SpawnFailed,
    /// Guest: no such process.
    ProcessNotFound,
    /// Guest: no space left on the device.
    NoSpace,
    /// Guest: read-only file system.
    ReadOnly,
    /// Guest: nothing listens on that port.
    PortNotOpen,
    /// Guest: another I/O error.
    GuestIoError,
    /// The guest agent did not answer or its connection broke.
    GuestUnreachable,
    /// The VM failed to boot or died.
    VmError,
    /// This host, driver or guest cannot do that.
    Unsupported,
    /// A conflicting operation is in progress or the resource exists.
    Conflict,
    /// No background shell session with that id.
    SessionNotFound,
    /// No command with that id in the session.
    CommandNotFound,
    /// The session's shell has exited.
    SessionEnded,
    /// The command has already finished.
    CommandFinished,
    /// No code context with that id.
    CodeContextNotFound,
    /// No API key with that id.
    ApiKeyNotFound,
    /// No edge signing key with that id.
    EdgeKeyNotFound,
    /// The sandbox does not expose that port at the edge.
    PortNotExposed,
    /// No snapshot or checkpoint with that id or name.
    SnapshotNotFound,
    /// No warm pool with that id.
    PoolNotFound,
    /// No volume with that id or name.
    VolumeNotFound,
    /// No secret with that id or name.
    SecretNotFound,
    /// No template build with that id.
    BuildNotFound,
    /// A snapshot's signature does not verify (altered manifest or signature, or none).
    SnapshotSignatureInvalid,
    /// A snapshot's file is missing, truncated or altered.
    SnapshotCorrupt,
    /// A snapshot was signed by a key this server does not know or has retired.
    SnapshotKeyUnknown,
    /// A snapshot was taken where this host cannot restore it (VMM, version, accelerator, CPU).
    SnapshotIncompatible,
    /// The object store archives go to failed or could not be reached.
    ObjectStoreUnavailable,
    /// An archive cannot be restored: a chunk is missing or altered.
    ArchiveCorrupt,
    /// Storage failed.
    StoreError,
    /// A bug or a host problem.
    Internal,
}

impl ErrorCode {
    /// Every code, once.
    pub const ALL: [ErrorCode; 46] = [
        ErrorCode::SandboxNotFound,
        ErrorCode::TemplateNotFound,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidState,
        ErrorCode::Unauthorized,
        ErrorCode::PayloadTooLarge,
        ErrorCode::CapacityExhausted,
        ErrorCode::ExecTimeout,
        ErrorCode::FileNotFound,
        ErrorCode::AlreadyExists,
        ErrorCode::PermissionDenied,
        ErrorCode::NotADirectory,
        ErrorCode::IsADirectory,
        ErrorCode::DirectoryNotEmpty,
        ErrorCode::UserNotFound,
        ErrorCode::SpawnFailed,
        ErrorCode::ProcessNotFound,
        ErrorCode::NoSpace,
        ErrorCode::ReadOnly,
        ErrorCode::PortNotOpen,
        ErrorCode::GuestIoError,
        ErrorCode::GuestUnreachable,
        ErrorCode::VmError,
        ErrorCode::Unsupported,
        ErrorCode::Conflict,
        ErrorCode::SessionNotFound,
        ErrorCode::CommandNotFound,
        ErrorCode::SessionEnded,
        ErrorCode::CommandFinished,
        ErrorCode::CodeContextNotFound,
        ErrorCode::ApiKeyNotFound,
        ErrorCode::EdgeKeyNotFound,
        ErrorCode::PortNotExposed,
        ErrorCode::SnapshotNotFound,
        ErrorCode::PoolNotFound,
        ErrorCode::VolumeNotFound,
        ErrorCode::SecretNotFound,
        ErrorCode::BuildNotFound,
        ErrorCode::SnapshotSignatureInvalid,
        ErrorCode::SnapshotCorrupt,
        ErrorCode::SnapshotKeyUnknown,
        ErrorCode::SnapshotIncompatible,
        ErrorCode::ObjectStoreUnavailable,
        ErrorCode::ArchiveCorrupt,
        ErrorCode::StoreError,
        ErrorCode::Internal,
    ];

    /// The stable wire name (`sandbox_not_found`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::SandboxNotFound => "sandbox_not_found",
            ErrorCode::TemplateNotFound => "template_not_found",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidState => "invalid_state",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::CapacityExhausted => "capacity_exhausted",
            ErrorCode::ExecTimeout => "exec_timeout",
            ErrorCode::FileNotFound => "file_not_found",
            ErrorCode::AlreadyExists => "already_exists",
            ErrorCode::PermissionDenied => "permission_denied",
            ErrorCode::NotADirectory => "not_a_directory",
            ErrorCode::IsADirectory => "is_a_directory",
            ErrorCode::DirectoryNotEmpty => "directory_not_empty",
            ErrorCode::UserNotFound => "user_not_found",
            ErrorCode::SpawnFailed => "spawn_failed",
            ErrorCode::ProcessNotFound => "process_not_found",
            ErrorCode::NoSpace => "no_space",
            ErrorCode::ReadOnly => "read_only",
            ErrorCode::PortNotOpen => "port_not_open",
            ErrorCode::GuestIoError => "guest_io_error",
            ErrorCode::GuestUnreachable => "guest_unreachable",
            ErrorCode::VmError => "vm_error",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Conflict => "conflict",
            ErrorCode::SessionNotFound => "session_not_found",
            ErrorCode::CommandNotFound => "command_not_found",
            ErrorCode::SessionEnded => "session_ended",
            ErrorCode::CommandFinished => "command_finished",
            ErrorCode::CodeContextNotFound => "code_context_not_found",
            ErrorCode::ApiKeyNotFound => "api_key_not_found",
            ErrorCode::EdgeKeyNotFound => "edge_key_not_found",
            ErrorCode::PortNotExposed => "port_not_exposed",
            ErrorCode::SnapshotNotFound => "snapshot_not_found",
            ErrorCode::PoolNotFound => "pool_not_found",
            ErrorCode::VolumeNotFound => "volume_not_found",
            ErrorCode::SecretNotFound => "secret_not_found",
            ErrorCode::BuildNotFound => "build_not_found",
            ErrorCode::SnapshotSignatureInvalid => "snapshot_signature_invalid",
            ErrorCode::SnapshotCorrupt => "snapshot_corrupt",
            ErrorCode::SnapshotKeyUnknown => "snapshot_key_unknown",
            ErrorCode::SnapshotIncompatible => "snapshot_incompatible",
            ErrorCode::ObjectStoreUnavailable => "object_store_unavailable",
            ErrorCode::ArchiveCorrupt => "archive_corrupt",
            ErrorCode::StoreError => "store_error",
            ErrorCode::Internal => "internal",
        }
    }

    /// HTTP status for the native API (compat front ends map codes to their own statuses).
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::SandboxNotFound
            | ErrorCode::TemplateNotFound
            | ErrorCode::SessionNotFound
            | ErrorCode::CommandNotFound
            | ErrorCode::CodeContextNotFound
            | ErrorCode::ApiKeyNotFound
            | ErrorCode::EdgeKeyNotFound
            | ErrorCode::PortNotExposed
            | ErrorCode::SnapshotNotFound
            | ErrorCode::PoolNotFound
            | ErrorCode::VolumeNotFound
            | ErrorCode::SecretNotFound
            | ErrorCode::BuildNotFound
            | ErrorCode::FileNotFound
            | ErrorCode::ProcessNotFound => 404,
            ErrorCode::SessionEnded | ErrorCode::CommandFinished => 410,
            ErrorCode::SnapshotSignatureInvalid
            | ErrorCode::SnapshotCorrupt
            | ErrorCode::SnapshotKeyUnknown
            | ErrorCode::ArchiveCorrupt => 422,
            ErrorCode::InvalidRequest
            | ErrorCode::NotADirectory
            | ErrorCode::IsADirectory
            | ErrorCode::UserNotFound
            | ErrorCode::SpawnFailed => 400,
            ErrorCode::InvalidState
            | ErrorCode::Conflict
            | ErrorCode::SnapshotIncompatible
            | ErrorCode::AlreadyExists
            | ErrorCode::DirectoryNotEmpty => 409,
            ErrorCode::Unauthorized => 401,
            ErrorCode::PermissionDenied | ErrorCode::ReadOnly => 403,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::CapacityExhausted => 503,
            ErrorCode::ExecTimeout => 408,
            ErrorCode::NoSpace => 507,
            ErrorCode::PortNotOpen
            | ErrorCode::GuestUnreachable
            | ErrorCode::VmError
            | ErrorCode::ObjectStoreUnavailable => 502,
            ErrorCode::Unsupported => 501,
            ErrorCode::GuestIoError | ErrorCode::StoreError | ErrorCode::Internal => 500,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<GuestErrorCode> for ErrorCode {
    fn from(code: GuestErrorCode) -> Self {
        match code {
            GuestErrorCode::NotFound => ErrorCode::FileNotFound,
            GuestErrorCode::AlreadyExists => ErrorCode::AlreadyExists,
            GuestErrorCode::PermissionDenied => ErrorCode::PermissionDenied,
            GuestErrorCode::NotADirectory => ErrorCode::NotADirectory,
            GuestErrorCode::IsADirectory => ErrorCode::IsADirectory,
            GuestErrorCode::DirectoryNotEmpty => ErrorCode::DirectoryNotEmpty,
            GuestErrorCode::InvalidArgument => ErrorCode::InvalidRequest,
            GuestErrorCode::UserNotFound => ErrorCode::UserNotFound,
            GuestErrorCode::SpawnFailed => ErrorCode::SpawnFailed,
            GuestErrorCode::NoSuchProcess => ErrorCode::ProcessNotFound,
            GuestErrorCode::NoSpace => ErrorCode::NoSpace,
            GuestErrorCode::ReadOnly => ErrorCode::ReadOnly,
            GuestErrorCode::Unsupported => ErrorCode::Unsupported,
            GuestErrorCode::ConnectionRefused => ErrorCode::PortNotOpen,
            GuestErrorCode::Io => ErrorCode::GuestIoError,
        }
    }
}

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
    #[error("command exceeded its timeout of {0} ms")]
    ExecTimeout(u64),
    /// The guest reported a failure (file not found, permission denied, ...).
    #[error("{message}")]
    Guest {
        /// What failed, as one of the guest codes ([`ErrorCode::FileNotFound`], ...).
        code: ErrorCode,
        /// The guest's message.
        message: String,
    },
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
    /// No edge signing key with that id.
    #[error("edge key {0} not found")]
    EdgeKeyNotFound(String),
    /// The sandbox does not expose that port (`sandbox:port`).
    #[error("port {0} is not exposed")]
    PortNotExposed(String),
    /// Edge traffic without a valid token or cookie for a port that is not public (the reason).
    #[error("edge access refused: {0}")]
    EdgeUnauthorized(String),
    /// No snapshot or checkpoint with that id or name.
    #[error("snapshot {0} not found")]
    SnapshotNotFound(String),
    /// No warm pool with that id.
    #[error("pool {0} not found")]
    PoolNotFound(String),
    /// No volume with that id or name.
    #[error("volume {0} not found")]
    VolumeNotFound(String),
    /// No secret with that id or name.
    #[error("secret {0} not found")]
    SecretNotFound(String),
    /// No template build with that id.
    #[error("template build {0} not found")]
    BuildNotFound(String),
    /// A snapshot may not be used (signature, hashes, key, compatibility), or storing one failed.
    #[error(transparent)]
    Snapshot(#[from] crate::snapshots::SnapshotError),
    /// The object store archives go to failed or could not be reached; the sandbox is as it was.
    #[error("object store unavailable: {0}")]
    ObjectStore(String),
    /// An archive cannot be restored (a chunk missing or altered); nothing was started.
    #[error("archive corrupt: {0}")]
    ArchiveCorrupt(String),
    /// The host's data directory is full.
    #[error("no space left on the host: {0}")]
    NoSpace(String),
    /// Storage failed.
    #[error("state store: {0}")]
    Store(String),
    /// Anything else; a bug or a host problem.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The machine-readable code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::SandboxNotFound(_) => ErrorCode::SandboxNotFound,
            Error::TemplateNotFound(_) => ErrorCode::TemplateNotFound,
            Error::InvalidRequest(_) => ErrorCode::InvalidRequest,
            Error::InvalidState { .. } => ErrorCode::InvalidState,
            Error::Unauthorized | Error::EdgeUnauthorized(_) => ErrorCode::Unauthorized,
            Error::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Error::CapacityExhausted(_) => ErrorCode::CapacityExhausted,
            Error::ExecTimeout(_) => ErrorCode::ExecTimeout,
            Error::Guest { code, .. } => *code,
            Error::GuestUnreachable(_) => ErrorCode::GuestUnreachable,
            Error::Vm(_) => ErrorCode::VmError,
            Error::Unsupported(_) => ErrorCode::Unsupported,
            Error::Conflict(_) => ErrorCode::Conflict,
            Error::SessionNotFound(_) => ErrorCode::SessionNotFound,
            Error::CommandNotFound(_) => ErrorCode::CommandNotFound,
            Error::SessionEnded(_) => ErrorCode::SessionEnded,
            Error::CommandFinished(_) => ErrorCode::CommandFinished,
            Error::CodeContextNotFound(_) => ErrorCode::CodeContextNotFound,
            Error::ApiKeyNotFound(_) => ErrorCode::ApiKeyNotFound,
            Error::EdgeKeyNotFound(_) => ErrorCode::EdgeKeyNotFound,
            Error::PortNotExposed(_) => ErrorCode::PortNotExposed,
            Error::SnapshotNotFound(_) => ErrorCode::SnapshotNotFound,
            Error::PoolNotFound(_) => ErrorCode::PoolNotFound,
            Error::VolumeNotFound(_) => ErrorCode::VolumeNotFound,
            Error::SecretNotFound(_) => ErrorCode::SecretNotFound,
            Error::BuildNotFound(_) => ErrorCode::BuildNotFound,
            Error::Snapshot(e) => e.error_code(),
            Error::ObjectStore(_) => ErrorCode::ObjectStoreUnavailable,
            Error::ArchiveCorrupt(_) => ErrorCode::ArchiveCorrupt,
            Error::NoSpace(_) => ErrorCode::NoSpace,
            Error::Store(_) => ErrorCode::StoreError,
            Error::Internal(_) => ErrorCode::Internal,
        }
    }

    /// HTTP status for the native API (compat front ends map codes to their own statuses).
    pub fn http_status(&self) -> u16 {
        self.code().http_status()
    }

    /// A failure the guest would report with `code`.
    pub fn guest(code: ErrorCode, message: impl Into<String>) -> Self {
        Error::Guest {
            code,
            message: message.into(),
        }
    }
}

impl From<GuestError> for Error {
    fn from(g: GuestError) -> Self {
        Error::Guest {
            code: g.code.into(),
            message: g.message,
        }
    }
}

impl From<HostError> for Error {
    fn from(e: HostError) -> Self {
        match e {
            HostError::Guest(g) | HostError::Share(g) | HostError::Volume(g) => g.into(),
            HostError::Transport(m) => Error::GuestUnreachable(m.to_string()),
            HostError::GuestUnreachable(m) => Error::GuestUnreachable(m),
            HostError::ProtocolMismatch { .. } => Error::GuestUnreachable(e.to_string()),
            HostError::Timeout { .. } => Error::GuestUnreachable(e.to_string()),
            HostError::VmState { .. } => Error::Conflict(e.to_string()),
            HostError::Invalid(m) => Error::InvalidRequest(m),
            HostError::PathEscape(_) | HostError::Registry { .. } => {
                Error::InvalidRequest(e.to_string())
            }
            HostError::Unsupported(m) => Error::Unsupported(m),
            HostError::ObjectStore { .. } => Error::ObjectStore(e.to_string()),
            HostError::ArchiveCorrupt(m) => Error::ArchiveCorrupt(m),
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
    use std::collections::HashSet;

    #[test]
    fn every_variant_has_a_code_and_status() {
        let s = || "x".to_string();
        let cases = [
            (Error::SandboxNotFound(s()), "sandbox_not_found", 404),
            (Error::TemplateNotFound(s()), "template_not_found", 404),
            (Error::InvalidRequest(s()), "invalid_request", 400),
            (
                Error::InvalidState {
                    id: s(),
                    state: s(),
                    action: s(),
                    needed: s(),
                },
                "invalid_state",
                409,
            ),
            (Error::Unauthorized, "unauthorized", 401),
            (
                Error::PayloadTooLarge { limit: 1 },
                "payload_too_large",
                413,
            ),
            (Error::CapacityExhausted(s()), "capacity_exhausted", 503),
            (Error::ExecTimeout(5), "exec_timeout", 408),
            (
                Error::guest(ErrorCode::FileNotFound, "x"),
                "file_not_found",
                404,
            ),
            (Error::GuestUnreachable(s()), "guest_unreachable", 502),
            (Error::Vm(s()), "vm_error", 502),
            (Error::Unsupported(s()), "unsupported", 501),
            (Error::Conflict(s()), "conflict", 409),
            (Error::SessionNotFound(s()), "session_not_found", 404),
            (Error::CommandNotFound(s()), "command_not_found", 404),
            (Error::SessionEnded(s()), "session_ended", 410),
            (Error::CommandFinished(s()), "command_finished", 410),
            (
                Error::CodeContextNotFound(s()),
                "code_context_not_found",
                404,
            ),
            (Error::ApiKeyNotFound(s()), "api_key_not_found", 404),
            (Error::EdgeKeyNotFound(s()), "edge_key_not_found", 404),
            (Error::PortNotExposed(s()), "port_not_exposed", 404),
            (Error::SnapshotNotFound(s()), "snapshot_not_found", 404),
            (Error::PoolNotFound(s()), "pool_not_found", 404),
            (Error::VolumeNotFound(s()), "volume_not_found", 404),
            (Error::SecretNotFound(s()), "secret_not_found", 404),
            (Error::BuildNotFound(s()), "build_not_found", 404),
            (
                Error::Snapshot(crate::snapshots::SnapshotError::Incompatible(s())),
                "snapshot_incompatible",
                409,
            ),
            (Error::NoSpace(s()), "no_space", 507),
            (Error::Store(s()), "store_error", 500),
            (Error::Internal(s()), "internal", 500),
        ];
        for (e, code, status) in &cases {
            assert_eq!(
                (e.code().as_str(), e.http_status()),
                (*code, *status),
                "{e}"
            );
        }
        // Edge refusals are the same code as a bad API key, with their own message.
        let edge = Error::EdgeUnauthorized(s());
        assert_eq!(
            (edge.code(), edge.http_status()),
            (ErrorCode::Unauthorized, 401)
        );
        // One case per variant: the codes above are all different variants' codes.
        let seen: HashSet<&str> = cases.iter().map(|(_, c, _)| *c).collect();
        assert_eq!(seen.len(), cases.len());
    }

    #[test]
    fn every_code_has_a_unique_name_and_an_error_status() {
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        for code in ErrorCode::ALL {
            assert!((400..600).contains(&code.http_status()), "{code}");
        }
    }

    #[test]
    fn every_guest_code_maps_to_an_engine_code() {
        use GuestErrorCode as G;
        let all = [
            G::NotFound,
            G::AlreadyExists,
            G::PermissionDenied,
            G::NotADirectory,
            G::IsADirectory,
            G::DirectoryNotEmpty,
            G::InvalidArgument,
            G::UserNotFound,
            G::SpawnFailed,
            G::NoSuchProcess,
            G::NoSpace,
            G::ReadOnly,
            G::Unsupported,
            G::ConnectionRefused,
            G::Io,
        ];
        for g in all {
            let e = Error::from(GuestError::new(g, "m"));
            assert_eq!(e.to_string(), "m");
            assert!(ErrorCode::ALL.contains(&e.code()));
        }
        let e = Error::from(GuestError::new(G::PermissionDenied, "no"));
        assert_eq!(
            (e.code(), e.http_status()),
            (ErrorCode::PermissionDenied, 403)
        );
    }
}
