//! Byte streams to the guest agent: the virtio-serial chardev socket and the hybrid vsock socket.
//!
//! Both transports end in a plain connected [`UnixStream`] that carries the agent protocol
//! (`platinum_protocol`): everything VMM-specific happens before [`connect`] returns. The code is
//! VMM-agnostic, so the QEMU and Cloud Hypervisor drivers share it:
//! - [`virtio_serial`]: QEMU's `-chardev socket,server=on` behind a `virtserialport`; connecting
//!   is all there is.
//! - [`hybrid_vsock`]: the Firecracker-style `CONNECT <port>\n` / `OK <n>\n` exchange spoken by
//!   Cloud Hypervisor and vhost-device-vsock.
//!
//! Failures are a [`ConnectError`]; [`ConnectError::is_retryable`] tells a caller polling a
//! booting guest whether trying again can help.

pub mod hybrid_vsock;
pub mod virtio_serial;

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::net::UnixStream;

use crate::error::Error;
use crate::vmm::GuestEndpoint;

/// Longest socket path a `sockaddr_un` holds (108 bytes including the terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Why a connection to the guest agent could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The socket does not exist or nobody accepts on it yet (VMM still starting).
    #[error("socket {path} is not accepting connections: {source}")]
    NotListening {
        /// Socket path.
        path: PathBuf,
        /// What `connect` said.
        #[source]
        source: std::io::Error,
    },
    /// The VMM accepted the connection but nothing listens on the guest port yet (the VMM reset
    /// or closed the connection in answer to `CONNECT`).
    #[error("guest port {port} refused the connection (nobody listening in the guest yet)")]
    Refused {
        /// Guest port.
        port: u32,
    },
    /// The VMM answered something that is not the hybrid vsock protocol.
    #[error("unexpected hybrid vsock reply on {path}: {reply:?}")]
    Protocol {
        /// Socket path.
        path: PathBuf,
        /// What came back (lossy, truncated).
        reply: String,
    },
    /// The deadline passed.
    #[error("connecting to {path} timed out after {timeout:?}")]
    Timeout {
        /// Socket path.
        path: PathBuf,
        /// The deadline.
        timeout: Duration,
    },
    /// The socket path cannot be used (too long for `sun_path`, relative).
    #[error("unusable socket path {path}: {reason}")]
    BadPath {
        /// Socket path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Any other I/O failure.
    #[error("I/O error on {path}: {source}")]
    Io {
        /// Socket path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ConnectError {
    /// True when the same connect may succeed later (VMM or guest agent still starting).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectError::NotListening { .. }
                | ConnectError::Refused { .. }
                | ConnectError::Timeout { .. }
        )
    }
}

impl From<ConnectError> for Error {
    fn from(e: ConnectError) -> Self {
        Error::GuestUnreachable(e.to_string())
    }
}

/// Connects to the guest agent behind `endpoint`, all within `timeout`.
pub async fn connect(
    endpoint: &GuestEndpoint,
    timeout: Duration,
) -> Result<UnixStream, ConnectError> {
    match endpoint {
        GuestEndpoint::VirtioSerial { socket } => virtio_serial::connect(socket, timeout).await,
        GuestEndpoint::HybridVsock { socket, port } => {
            hybrid_vsock::connect(socket, *port, timeout).await
        }
    }
}

/// Checks that `path` is absolute and fits in `sun_path`.
pub fn check_socket_path(path: &Path) -> Result<(), ConnectError> {
    if !path.is_absolute() {
        return Err(ConnectError::BadPath {
            path: path.to_path_buf(),
            reason: "not absolute".to_string(),
        });
    }
    let len = path.as_os_str().len();
    if len > MAX_SOCKET_PATH {
        return Err(ConnectError::BadPath {
            path: path.to_path_buf(),
            reason: format!("{len} bytes, a Unix socket path holds at most {MAX_SOCKET_PATH}"),
        });
    }
    Ok(())
}

/// Opens a Unix stream to `path`, mapping "no such socket" and "nobody accepting" to
/// [`ConnectError::NotListening`].
async fn open(path: &Path, timeout: Duration) -> Result<UnixStream, ConnectError> {
    check_socket_path(path)?;
    match tokio::time::timeout(timeout, UnixStream::connect(path)).await {
        Err(_) => Err(ConnectError::Timeout {
            path: path.to_path_buf(),
            timeout,
        }),
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => match e.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => {
                Err(ConnectError::NotListening {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
            _ => Err(ConnectError::Io {
                path: path.to_path_buf(),
                source: e,
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_checked() {
        assert!(check_socket_path(Path::new("/run/x.sock")).is_ok());
        assert!(matches!(
            check_socket_path(Path::new("x.sock")),
            Err(ConnectError::BadPath { .. })
        ));
        let long = format!("/{}", "a".repeat(MAX_SOCKET_PATH));
        assert!(matches!(
            check_socket_path(Path::new(&long)),
            Err(ConnectError::BadPath { .. })
        ));
        let fits = format!("/{}", "a".repeat(MAX_SOCKET_PATH - 1));
        assert!(check_socket_path(Path::new(&fits)).is_ok());
    }

    #[tokio::test]
    async fn missing_socket_is_retryable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let endpoint = GuestEndpoint::VirtioSerial {
            socket: dir.path().join("absent.sock"),
        };
        let err = connect(&endpoint, Duration::from_secs(1))
            .await
            .expect_err("no socket");
        assert!(matches!(err, ConnectError::NotListening { .. }), "{err}");
        assert!(err.is_retryable());
        assert!(matches!(Error::from(err), Error::GuestUnreachable(_)));
    }
}
