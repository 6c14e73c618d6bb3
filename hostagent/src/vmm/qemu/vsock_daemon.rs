//! vhost-device-vsock: the userspace vsock backend QEMU talks to over vhost-user.
//!
//! One daemon per VM, started before QEMU:
//! `vhost-device-vsock --vm guest-cid=<cid>,socket=<dir>/vhost-vsock.sock,uds-path=<dir>/vsock.sock,groups=<group>`.
//! `socket` is the vhost-user socket QEMU connects to; `uds-path` is the hybrid vsock socket
//! host code connects to (see [`crate::transport::hybrid_vsock`]). Each VM gets its own
//! `groups` name so sibling VMs cannot reach each other through the daemon.
//!
//! The daemon keeps serving its vhost-user socket after QEMU disconnects, so it never exits by
//! itself: whoever owns the VM kills it together with QEMU.

use std::path::Path;
use std::time::{Duration, Instant};

use tracing::info;

use crate::console;
use crate::error::{Error, Result};
use crate::process::{ChildProcess, ExitInfo, ProcessSpec};

use super::paths::VmPaths;

/// Poll interval while waiting for the vhost-user socket.
const POLL: Duration = Duration::from_millis(20);

/// A running vhost-device-vsock for one VM.
#[derive(Debug)]
pub struct VsockDaemon {
    process: ChildProcess,
}

impl VsockDaemon {
    /// Starts the daemon for VM `id` with guest `cid`, and waits (up to `timeout`) until its
    /// vhost-user socket accepts connections.
    pub async fn start(
        program: &Path,
        id: &str,
        cid: u32,
        paths: &VmPaths,
        timeout: Duration,
    ) -> Result<VsockDaemon> {
        for stale in [&paths.vhost_vsock, &paths.vsock] {
            remove_if_present(stale)?;
        }
        let spec = ProcessSpec {
            name: "vhost-device-vsock".to_string(),
            program: program.to_path_buf(),
            args: vec![
                "--vm".to_string(),
                format!(
                    "guest-cid={cid},socket={},uds-path={},groups=platinum-{id}",
                    paths.vhost_vsock.display(),
                    paths.vsock.display()
                ),
            ],
            log: paths.vsock_log.clone(),
            inherit: Vec::new(),
        };
        let process = ChildProcess::spawn(&spec)?;
        let daemon = VsockDaemon { process };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = daemon.process.try_exit() {
                return Err(Error::VmmStart(format!(
                    "vhost-device-vsock exited during start ({}):\n{}",
                    exit.describe(),
                    console::tail(&paths.vsock_log, 20).unwrap_or_default()
                )));
            }
            if std::os::unix::net::UnixStream::connect(&paths.vhost_vsock).is_ok() {
                info!(pid = daemon.process.pid(), socket = %paths.vhost_vsock.display(), "vhost-device-vsock ready");
                return Ok(daemon);
            }
            if Instant::now() >= deadline {
                // Best effort: the caller gets the timeout, the daemon must not outlive it.
                let _ = daemon.kill().await;
                return Err(Error::VmmStart(format!(
                    "vhost-device-vsock did not open {} within {timeout:?}:\n{}",
                    paths.vhost_vsock.display(),
                    console::tail(&paths.vsock_log, 20).unwrap_or_default()
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
