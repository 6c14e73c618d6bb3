//! Session start: both sides skip stale bytes until they see the other side's magic.
//!
//! The host writes [`HOST_MAGIC`] once and waits for [`GUEST_MAGIC`]. If the answer does not come in
//! time, the host drops the connection and connects again: on virtio-serial the guest then sees the
//! port close and goes back to scanning, on vsock every connection is fresh anyway. The guest never
//! times out; it scans until the magic arrives.

use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{GUEST_MAGIC, HOST_MAGIC};

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The byte stream failed or closed.
    #[error("transport closed during handshake")]
    Io(#[from] std::io::Error),
    /// The peer did not answer in time.
    #[error("no handshake from the peer within {0:?}")]
    Timeout(Duration),
}

/// Reads from `reader` into `buf` until `magic` has been seen. On return `buf` holds only the bytes
/// that followed the magic.
pub async fn scan_for<R: AsyncRead + Unpin>(
    reader: &mut R,
    magic: &[u8],
    buf: &mut BytesMut,
) -> std::io::Result<()> {
    loop {
        if let Some(pos) = buf.windows(magic.len()).position(|w| w == magic) {
            let _ = buf.split_to(pos + magic.len());
            return Ok(());
        }
        // Keep only a possible magic prefix at the tail, so memory stays bounded while skipping.
        let keep = magic.len().saturating_sub(1).min(buf.len());
        let drop = buf.len() - keep;
        let _ = buf.split_to(drop);
        buf.reserve(4096);
        if reader.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Host side: announce a session and wait for the guest's answer. Returns the bytes read past the
/// guest's magic, which belong to the first frames.
pub async fn host_handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    timeout: Duration,
) -> Result<BytesMut, HandshakeError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    writer.write_all(HOST_MAGIC).await?;
    writer.flush().await?;
    let mut buf = BytesMut::new();
    tokio::time::timeout(timeout, scan_for(reader, GUEST_MAGIC, &mut buf))
        .await
        .map_err(|_| HandshakeError::Timeout(timeout))??;
    Ok(buf)
}

/// Guest side: wait (without a deadline) for the host's magic in `buf` + `reader`, then answer.
/// On return `buf` holds the bytes read past the host's magic.
pub async fn guest_handshake<R, W>(
    reader: &mut R,
    writer: &mut W,
    buf: &mut BytesMut,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    scan_for(reader, HOST_MAGIC, buf).await?;
    writer.write_all(GUEST_MAGIC).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_sides_skip_stale_bytes() {
        let (host, guest) = tokio::io::duplex(1024);
        let (mut hr, mut hw) = tokio::io::split(host);
        let (mut gr, mut gw) = tokio::io::split(guest);
        // Stale output from an earlier session sits in front of the guest's answer.
        gw.write_all(b"\x00\x00\x00\x09garbage-from-before")
            .await
            .unwrap();
        // And a half-written frame from an earlier host sits in front of the host's magic.
        hw.write_all(b"\x00\x00\x10").await.unwrap();
        let guest_task = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            guest_handshake(&mut gr, &mut gw, &mut buf).await.unwrap();
            gw.write_all(b"first-frame").await.unwrap();
            buf
        });
        let rest = host_handshake(&mut hr, &mut hw, Duration::from_secs(5))
            .await
            .unwrap();
        let guest_rest = guest_task.await.unwrap();
        assert!(guest_rest.is_empty());
        let mut got = rest.to_vec();
        while got.len() < b"first-frame".len() {
            let mut more = [0u8; 64];
            let n = hr.read(&mut more).await.unwrap();
            got.extend_from_slice(&more[..n]);
        }
        assert_eq!(got, b"first-frame");
    }

    #[tokio::test]
    async fn host_times_out_on_a_silent_guest() {
        let (host, _guest) = tokio::io::duplex(1024);
        let (mut hr, mut hw) = tokio::io::split(host);
        let err = host_handshake(&mut hr, &mut hw, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert!(matches!(err, HandshakeError::Timeout(_)));
    }
}
