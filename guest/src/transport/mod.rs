//! The byte streams the agent serves the protocol on, and what happens on each connection.
//!
//! Every transport hands its connections to [`serve_connection`]: the guest side of the magic
//! handshake, then one [`Mux`] session whose requests are served concurrently until the connection
//! closes. All sessions share the agent (and so one process table): a process started on one
//! connection can be attached from another, and outlives both.

pub mod serial;
pub mod unix;
pub mod vsock;

use crate::agent::Agent;
use crate::session;
use bytes::BytesMut;
use platinum_protocol::handshake::guest_handshake;
use platinum_protocol::{Mux, Role};
use std::io::Cursor;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tracing::{debug, info};

/// Runs one session on a connected byte stream: waits for the host's magic, answers it, then
/// serves requests until the stream closes or breaks the framing. Fails only if the stream ends
/// or errs before the handshake completes.
pub async fn serve_connection<R, W>(
    agent: Arc<Agent>,
    mut reader: R,
    mut writer: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let mut early = BytesMut::new();
    guest_handshake(&mut reader, &mut writer, &mut early).await?;
    // Bytes read past the magic already belong to the first frames.
    run_session(agent, Cursor::new(early.freeze()).chain(reader), writer).await;
    Ok(())
}

/// Serves requests on a stream positioned just past the handshake, until it closes or breaks the
/// framing.
pub(crate) async fn run_session<R, W>(agent: Arc<Agent>, reader: R, writer: W)
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (mux, incoming) = Mux::new(reader, writer, Role::Guest);
    info!("host session started");
    session::serve(agent, incoming).await;
    info!(
        reason = mux.close_reason().as_deref().unwrap_or("closed"),
        "host session ended"
    );
}

/// Polls `probe` until it yields: every [`FAST_POLL`] for [`FAST_PHASE`], then every
/// [`SLOW_POLL`]. For devices that appear some time after their driver loaded.
pub(crate) async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let fast_until = tokio::time::Instant::now() + FAST_PHASE;
    let mut announced = false;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        let interval = if tokio::time::Instant::now() < fast_until {
            FAST_POLL
        } else {
            if !announced {
                info!(what, "still waiting; checking every {SLOW_POLL:?}");
                announced = true;
            }
            SLOW_POLL
        };
        debug!(what, "not there yet");
        tokio::time::sleep(interval).await;
    }
}

const FAST_POLL: Duration = Duration::from_millis(50);
const FAST_PHASE: Duration = Duration::from_secs(10);
const SLOW_POLL: Duration = Duration::from_secs(2);
