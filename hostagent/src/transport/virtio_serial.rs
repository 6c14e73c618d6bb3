//! The virtio-serial transport: QEMU exposes the guest's `virtserialport` as a listening Unix
//! socket (`-chardev socket,server=on,wait=off`), and connecting to it is the whole handshake.
//!
//! The port has no connection semantics inside the guest: bytes from an earlier host session can
//! still be queued in either direction. The agent protocol's magic-based sync
//! (`platinum_protocol::handshake`) takes care of that, not this module. QEMU accepts one client
//! per chardev at a time; a second connection waits until the first one closes.

use std::path::Path;
use std::time::Duration;

use tokio::net::UnixStream;

use super::{ConnectError, open};

/// Connects to QEMU's chardev socket for the agent port.
pub async fn connect(socket: &Path, timeout: Duration) -> Result<UnixStream, ConnectError> {
    open(socket, timeout).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn connects_to_a_listening_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.sock");
        let listener = tokio::net::UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            conn.write_all(b"hi").await.expect("write");
        });
        let mut stream = connect(&path, Duration::from_secs(2))
            .await
            .expect("connect");
        let mut buf = [0u8; 2];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hi");
        server.await.expect("server");
    }
}
