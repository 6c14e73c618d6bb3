//! Reaching TCP ports inside the guest: `connect_port` relayed over the agent connection and
//! handed to callers as an ordinary in-memory duplex byte stream.

use platinum_protocol::{GuestEvent, GuestMessage, Inbound, Request, channel};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::client::{GuestClient, outcome, protocol};
use crate::error::Result;

/// Buffer between the caller's end and the relay task.
const PIPE_BYTES: usize = 256 * 1024;

impl GuestClient {
    /// Connects to `port` inside the guest. Returns once the guest connected; the stream is the
    /// connection (reads are the service's bytes, writes go to it, shutdown half-closes).
    pub async fn connect_port(&self, port: u16) -> Result<DuplexStream> {
        let (tx, mut rx, first) = self.open_streaming(&Request::ConnectPort { port }).await?;
        match first {
            GuestMessage::Event(GuestEvent::Connected) => {}
            GuestMessage::Outcome(o) => {
                outcome(o)?;
                return Err(protocol("connect_port ended before it connected"));
            }
            GuestMessage::Event(e) => return Err(protocol(&format!("unexpected event {e:?}"))),
        }
        let (caller, relay) = tokio::io::duplex(PIPE_BYTES);
        let (mut relay_read, mut relay_write) = tokio::io::split(relay);
        tokio::spawn(async move {
            let to_guest = async {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match relay_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => tx.send_data(channel::STDIN, &buf[..n]).await?,
                    }
                }
                tx.send_eof(channel::STDIN)?;
                Ok::<_, platinum_protocol::MuxError>(tx)
            };
            let from_guest = async {
                loop {
                    match rx.recv().await? {
                        Some(Inbound::Data { bytes, .. }) => {
                            if relay_write.write_all(&bytes).await.is_err() {
                                break;
                            }
                        }
                        Some(Inbound::Eof {
                            channel: channel::STDOUT,
                        }) => {
                            let _ = relay_write.shutdown().await;
                        }
                        Some(_) => {}
                        None => break,
                    }
                }
                Ok::<_, platinum_protocol::MuxError>(())
            };
            match tokio::try_join!(to_guest, from_guest) {
                // Both directions finished; the guest has closed its side.
                Ok((tx, ())) => drop(tx),
                Err(e) => tracing::debug!(port, error = %e, "port relay ended"),
            }
        });
        Ok(caller)
    }
}
