//! A Unix socket (development and tests): each connection is served like a vsock connection.

use crate::agent::Agent;
use crate::transport::serve_connection;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UnixListener;
use tracing::{debug, warn};

/// Pause after a failed `accept`, so it is not retried hot.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Binds `path`, replacing a stale socket left there by an earlier run (but nothing else).
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    if let Ok(md) = std::fs::symlink_metadata(path)
        && md.file_type().is_socket()
    {
        std::fs::remove_file(path)?;
    }
    UnixListener::bind(path)
}

/// Serves every connection on `listener`, forever.
pub async fn serve(agent: Arc<Agent>, listener: UnixListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let (reader, writer) = stream.into_split();
                let agent = agent.clone();
                tokio::spawn(async move {
                    if let Err(e) = serve_connection(agent, reader, writer).await {
                        debug!(error = %e, "unix connection ended before a session");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "unix accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
}
