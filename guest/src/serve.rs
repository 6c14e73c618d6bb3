//! Serve mode: the agent as an ordinary process (development and tests), on Unix sockets, vsock
//! and/or the virtio-serial port, until `SIGINT` or `SIGTERM`.
//!
//! Once every Unix socket is bound, one line `listening unix:<path>` per socket goes to stdout:
//! that is the readiness signal for whoever started the agent. On a stop signal the agent kills
//! the process groups it started and removes its sockets.

use crate::agent::Agent;
use crate::transport::{serial, unix, vsock};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

/// What to serve.
#[derive(Debug, Clone, Default)]
pub struct Transports {
    /// Unix socket paths.
    pub unix: Vec<PathBuf>,
    /// `AF_VSOCK` on the protocol's port.
    pub vsock: bool,
    /// The protocol's virtio-serial port.
    pub serial: bool,
}

/// Serves until a stop signal. Fails if a socket cannot be bound or the signals cannot be caught.
pub async fn run(agent: Arc<Agent>, transports: Transports) -> std::io::Result<()> {
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut ready = Vec::new();
    for path in &transports.unix {
        let listener = unix::bind(path)?;
        tokio::spawn(unix::serve(agent.clone(), listener));
        ready.push(format!("listening unix:{}", path.display()));
    }
    if transports.vsock {
        tokio::spawn(vsock::serve_when_available(agent.clone()));
    }
    if transports.serial {
        tokio::spawn(serial::serve_when_available(agent.clone()));
    }
    let mut stdout = std::io::stdout().lock();
    for line in &ready {
        writeln!(stdout, "{line}")?;
    }
    stdout.flush()?;
    drop(stdout);
    tokio::select! {
        _ = sigterm.recv() => info!("SIGTERM"),
        _ = sigint.recv() => info!("SIGINT"),
    }
    agent.processes().kill_running();
    for path in &transports.unix {
        if let Err(e) = std::fs::remove_file(path) {
            warn!(path = %path.display(), error = %e, "cannot remove the socket");
        }
    }
    Ok(())
}
