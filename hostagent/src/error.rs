//! The host agent's error type. Every variant names the step that failed; the engine maps them to
//! its stable error codes.

use std::path::PathBuf;

/// Result alias for the host agent.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Failures of the host agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem or process operation failed.
    #[error("{context}")]
    Io {
        /// What was being done, with the path.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A required program is not installed.
    #[error("required program `{program}` not found: {hint}")]
    MissingProgram {
        /// Program name.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// The VMM process could not be started or died during start.
    #[error("VMM failed to start: {0}")]
    VmmStart(String),
    /// The VMM's control API (QMP, CH REST) refused or failed a request.
    #[error("VMM control request `{request}` failed: {message}")]
    VmmControl {
        /// The request.
        request: String,
        /// What the VMM said.
        message: String,
    },
    /// The operation needs the VM in another state.
    #[error("VM is {actual}, operation needs {expected}")]
    VmState {
        /// State required.
        expected: String,
        /// State found.
        actual: String,
    },
    /// The VMM process is gone.
    #[error("VMM exited: {0}")]
    VmmExited(String),
    /// The guest agent did not answer.
    #[error("guest agent unreachable: {0}")]
    GuestUnreachable(String),
    /// The guest agent answered with an error.
    #[error(transparent)]
    Guest(#[from] platinum_protocol::GuestError),
    /// A file operation in a sandbox's host share failed (classified like the guest's own file
    /// errors).
    #[error("share: {0}")]
    Share(platinum_protocol::GuestError),
    /// A file operation in a volume's image, done by the host, failed (classified like the
    /// guest's own file errors; see [`crate::volume_files`]).
    #[error("volume: {0}")]
    Volume(platinum_protocol::GuestError),
    /// The guest connection broke mid-request.
    #[error(transparent)]
    Transport(#[from] platinum_protocol::MuxError),
    /// The guest speaks a protocol version this host does not.
    #[error("guest agent speaks protocol {guest}, host speaks {host}")]
    ProtocolMismatch {
        /// Guest version.
        guest: u32,
        /// Host version.
        host: u32,
    },
    /// Something took longer than its deadline.
    #[error("timed out after {seconds}s: {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        seconds: u64,
    },
    /// Building or validating a guest image failed.
    #[error("image build failed at {step}: {message}")]
    Image {
        /// Build step.
        step: String,
        /// Detail.
        message: String,
    },
    /// Pulling an image from its registry failed (not found, refused, unreachable, an image
    /// this host cannot use).
    #[error("pulling {image}: {message}")]
    Registry {
        /// The image's full reference.
        image: String,
        /// What went wrong.
        message: String,
    },
    /// Setting up host networking (bridge, TAP, nftables) failed.
    #[error("network setup failed at {step}: {message}")]
    Network {
        /// Setup step.
        step: String,
        /// Detail.
        message: String,
    },
    /// The object store that archives go to failed or could not be reached.
    #[error("object store: {operation} failed: {message}")]
    ObjectStore {
        /// What was asked, of which store.
        operation: String,
        /// What went wrong.
        message: String,
    },
    /// An archive cannot be restored: a chunk is missing or does not match its hash, or the
    /// archive's own list is malformed. Nothing of it was started.
    #[error("archive corrupt: {0}")]
    ArchiveCorrupt(String),
    /// A request is malformed or refers to something impossible on this host.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// This driver or host cannot do that.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A path escapes the directory it must stay in.
    #[error("path {0} escapes its root")]
    PathEscape(PathBuf),
}

impl Error {
    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Adds context to `std::io::Result`s.
pub trait IoContext<T> {
    /// Wraps the error with a description of the step.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
