//! `connect_port`: relays one TCP connection to a port inside the guest over a request stream.
//!
//! The host uses this to reach services in the sandbox (preview URLs, SDK port routing) without
//! any network path between host and guest. The connection goes to 127.0.0.1, then ::1, so
//! services bound to loopback only are reachable too. Each direction ends independently: host
//! `EOF` shuts the socket's write side, socket EOF sends `EOF` on the stdout channel; the request
//! ends once both directions are done, or with the stream if the host resets it.

use crate::session::HandlerError;
use platinum_protocol::{GuestError, GuestEvent, Inbound, StreamReceiver, StreamSender, channel};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const READ_CHUNK: usize = 64 * 1024;

/// Connects to `port` and relays until both directions are closed.
pub async fn connect_port(
    port: u16,
    tx: &StreamSender,
    mut rx: StreamReceiver,
) -> Result<Value, HandlerError> {
    let socket = match TcpStream::connect(("127.0.0.1", port)).await {
        Ok(s) => s,
        Err(first) => TcpStream::connect(("::1", port))
            .await
            .map_err(|_| GuestError::from_io(&first, format_args!("connect to port {port}")))?,
    };
    let _ = socket.set_nodelay(true);
    tx.send_json(&GuestEvent::Connected)?;
    let (mut read_half, mut write_half) = socket.into_split();

    let to_host = async {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            let n = match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            tx.send_data(channel::STDOUT, &buf[..n]).await?;
        }
        tx.send_eof(channel::STDOUT)?;
        Ok::<(), HandlerError>(())
    };
    let to_guest = async {
        loop {
            match rx.recv().await? {
                Some(Inbound::Data {
                    channel: channel::STDIN,
                    bytes,
                }) => {
                    if write_half.write_all(&bytes).await.is_err() {
                        // The service closed its side; keep draining so the host's sender never stalls.
                        continue;
                    }
                }
                Some(Inbound::Eof {
                    channel: channel::STDIN,
                })
                | None => break,
                Some(_) => continue,
            }
        }
        let _ = write_half.shutdown().await;
        Ok::<(), HandlerError>(())
    };
    tokio::try_join!(to_host, to_guest)?;
    Ok(Value::Null)
}
