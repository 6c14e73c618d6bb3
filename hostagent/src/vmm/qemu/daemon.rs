//! A helper daemon a QEMU VM needs (vhost-device-vsock, virtiofsd): started before QEMU, ready
//! once its vhost-user socket accepts connections, killed together with the VM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tracing::info;

use crate::console;
use crate::error::{Error, Result};
use crate::process::{ChildProcess, ExitInfo, ProcessSpec};

/// Poll interval while waiting for the socket.
const POLL: Duration = Duration::from_millis(20);

/// A running helper daemon.
#[derive(Debug)]
pub struct SocketDaemon {
    name: String,
    process: ChildProcess,
}

impl SocketDaemon {
    /// Starts `spec` with a listening socket at `socket` made here and handed over as a
    /// descriptor (for daemons that accept one connection only, which a readiness probe would
    /// use up): ready at once, QEMU's connection waits in the backlog until the daemon accepts.
    /// `flag` is the daemon's option taking the descriptor's number (`--fd=`).
    pub fn start_listening(
        mut spec: ProcessSpec,
        socket: &Path,
        flag: &str,
    ) -> Result<SocketDaemon> {
        remove_if_present(socket)?;
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .map_err(|e| Error::io(format!("binding {}", socket.display()), e))?;
        let fd = std::sync::Arc::new(std::os::fd::OwnedFd::from(listener));
        spec.args
            .push(format!("{flag}{}", std::os::fd::AsRawFd::as_raw_fd(&*fd)));
        spec.inherit.push(fd);
        let process = ChildProcess::spawn(&spec)?;
        info!(daemon = %spec.name, pid = process.pid(), socket = %socket.display(), "helper daemon started");
        Ok(SocketDaemon {
            name: spec.name,
            process,
        })
    }

    /// Starts `spec` (its log in `spec.log`) and waits up to `timeout` until `socket` accepts
    /// connections. Stale `sockets` are removed first.
    pub async fn start(
        spec: ProcessSpec,
        socket: &Path,
        stale: &[&Path],
        timeout: Duration,
    ) -> Result<SocketDaemon> {
        for path in stale {
            remove_if_present(path)?;
        }
        let log: PathBuf = spec.log.clone();
        let process = ChildProcess::spawn(&spec)?;
        let daemon = SocketDaemon {
            name: spec.name,
            process,
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = daemon.process.try_exit() {
                return Err(Error::VmmStart(format!(
                    "{} exited during start ({}):\n{}",
                    daemon.name,
                    exit.describe(),
                    console::tail(&log, 20).unwrap_or_default()
                )));
            }
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                info!(daemon = %daemon.name, pid = daemon.process.pid(), socket = %socket.display(), "helper daemon ready");
                return Ok(daemon);
            }
            if Instant::now() >= deadline {
                // Best effort: the caller gets the timeout, the daemon must not outlive it.
                let _ = daemon.kill().await;
                return Err(Error::VmmStart(format!(
                    "{} did not open {} within {timeout:?}:\n{}",
                    daemon.name,
                    socket.display(),
                    console::tail(&log, 20).unwrap_or_default()
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Stops the daemon (SIGTERM, then SIGKILL). Idempotent.
    pub async fn kill(&self) -> Result<ExitInfo> {
        self.process.kill(Duration::from_secs(2)).await
    }
}

/// The helper daemons of one VM.
#[derive(Debug, Default)]
pub struct Helpers {
    /// vhost-device-vsock, for the vsock transport.
    pub vsock: Option<SocketDaemon>,
    /// virtiofsd, for the host share.
    pub virtiofsd: Option<SocketDaemon>,
}

impl Helpers {
    /// Stops every daemon; failures are logged. Safe to run more than once.
    pub async fn kill_all(&self) {
        for daemon in [&self.vsock, &self.virtiofsd].into_iter().flatten() {
            if let Err(e) = daemon.kill().await {
                tracing::warn!(daemon = %daemon.name, error = %e, "stopping a helper daemon failed");
            }
        }
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(
            format!("removing stale socket {}", path.display()),
            e,
        )),
    }
}
