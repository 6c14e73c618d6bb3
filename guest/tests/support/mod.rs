//! The host end of a session, shared by the test suites (`agent/` over a Unix socket,
//! `serial.rs` over FIFOs): the handshake, then a multiplexer in the host role.

use platinum_protocol::handshake::host_handshake;
use platinum_protocol::{Mux, Role};
use std::io::Cursor;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

/// Handshakes as the host over `reader`/`writer` (failing the test after `patience`) and starts
/// a session; bytes the guest sent right after its handshake are not lost.
pub async fn host_session<R, W>(mut reader: R, mut writer: W, patience: Duration) -> Mux
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let early = host_handshake(&mut reader, &mut writer, patience)
        .await
        .expect("handshake");
    let (mux, _incoming) = Mux::new(
        Cursor::new(early.freeze()).chain(reader),
        writer,
        Role::Host,
    );
    mux
}
