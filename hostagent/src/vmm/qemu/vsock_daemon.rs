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
use std::time::Duration;

use crate::error::Result;
use crate::process::ProcessSpec;

use super::daemon::SocketDaemon;
use super::paths::VmPaths;

/// Starts the daemon for VM `id` with guest `cid`, and waits (up to `timeout`) until its
/// vhost-user socket accepts connections.
pub async fn start(
    program: &Path,
    id: &str,
    cid: u32,
    paths: &VmPaths,
    timeout: Duration,
) -> Result<SocketDaemon> {
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
    SocketDaemon::start(
        spec,
        &paths.vhost_vsock,
        &[&paths.vhost_vsock, &paths.vsock],
        timeout,
    )
    .await
}
