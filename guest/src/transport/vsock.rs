//! `AF_VSOCK` on guest port [`VSOCK_PORT`], any CID. Every accepted connection is one session.

use crate::agent::Agent;
use crate::transport::{serve_connection, wait_for};
use platinum_protocol::VSOCK_PORT;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio_vsock::{VMADDR_CID_ANY, VsockAddr, VsockListener};
use tracing::{debug, error, info, warn};

/// The device node the vsock core module creates.
const VSOCK_DEVICE: &str = "/dev/vsock";

/// Pause after a failed `accept` (for example out of file descriptors), so it is not retried hot.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Waits for `/dev/vsock`, then serves forever. Returns only if the port cannot be bound.
pub async fn serve_when_available(agent: Arc<Agent>) {
    wait_for(VSOCK_DEVICE, || {
        Path::new(VSOCK_DEVICE).exists().then_some(())
    })
    .await;
    if let Err(e) = serve(agent).await {
        error!(port = VSOCK_PORT, error = %e, "cannot listen on vsock");
    }
}

/// Binds the port and serves every connection. Returns only if binding fails.
pub async fn serve(agent: Arc<Agent>) -> std::io::Result<()> {
    let listener = VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, VSOCK_PORT))?;
    info!(port = VSOCK_PORT, "listening on vsock");
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                debug!(%peer, "vsock connection");
                let (reader, writer) = stream.into_split();
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(agent, reader, writer).await {
                        debug!(%peer, error = %e, "vsock connection ended before a session");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "vsock accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
