//! [`QemuVm`]: one running QEMU process (plus its vhost-device-vsock, if any) behind the [`Vm`]
//! trait.
//!
//! Ownership: the VM owns its [`ChildProcess`]es and its QMP connection. A reaper task waits for
//! QEMU to exit, however that happens, and then stops the vsock daemon and removes the sockets,
//! so a crashed VM leaves nothing running. `kill` does the same eagerly and is idempotent.
//! `requested` is set before the host stops the VM on purpose, which is how [`Vm::wait_exit`]
//! tells host-requested ends from crashes and guest power-offs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::process::ChildProcess;
use crate::vmm::exit::EndRequest;
use crate::vmm::{TransportKind, Vm, VmExit, VmInfo, VmRunState, VmSpec, VmmKind, manifest};

use super::paths::VmPaths;
use super::qmp::Qmp;
use super::snapshot;
use super::vsock_daemon::VsockDaemon;

/// SIGTERM grace for QEMU in `kill`.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// How long `state` waits for the exit status when QMP fails, before reporting the QMP error.
const EXIT_SETTLE: Duration = Duration::from_millis(200);

/// A running QEMU VM.
#[derive(Debug)]
pub struct QemuVm {
    info: VmInfo,
    spec: VmSpec,
    paths: VmPaths,
    qemu: Arc<ChildProcess>,
    vsock: Option<Arc<VsockDaemon>>,
    qmp: Qmp,
    requested: EndRequest,
    snapshot_timeout: Duration,
}

/// The pieces a started VM is made of (see `driver.rs`).
pub(super) struct Parts {
    pub info: VmInfo,
    pub spec: VmSpec,
    pub paths: VmPaths,
    pub qemu: Arc<ChildProcess>,
    pub vsock: Option<Arc<VsockDaemon>>,
    pub qmp: Qmp,
    pub snapshot_timeout: Duration,
}

impl QemuVm {
    /// Wraps started parts and spawns the reaper.
    pub(super) fn new(parts: Parts) -> Arc<QemuVm> {
        let vm = Arc::new(QemuVm {
            info: parts.info,
            spec: parts.spec,
            paths: parts.paths,
            qemu: parts.qemu,
            vsock: parts.vsock,
            qmp: parts.qmp,
            requested: EndRequest::default(),
            snapshot_timeout: parts.snapshot_timeout,
        });
        let (qemu, vsock, paths, id) = (
            vm.qemu.clone(),
            vm.vsock.clone(),
            vm.paths.clone(),
            vm.spec.id.clone(),
        );
        tokio::spawn(async move {
            let exit = qemu.wait().await;
            info!(vm = %id, status = %exit.describe(), "QEMU exited");
            release_helpers(vsock.as_deref(), &paths).await;
        });
        vm
    }

    /// The spec the VM runs with.
    pub fn spec(&self) -> &VmSpec {
        &self.spec
    }

    /// The runtime layout of its directory.
    pub fn paths(&self) -> &VmPaths {
        &self.paths
    }

    /// vhost-device-vsock's pid, for the vsock transport.
    pub fn vsock_daemon_pid(&self) -> Option<u32> {
        self.vsock.as_ref().map(|d| d.pid())
    }

    /// Snapshot with timings (the trait's [`Vm::snapshot`] discards them).
    pub async fn snapshot_with_stats(&self, dir: &Path) -> Result<snapshot::MigrationStats> {
        if self.spec.transport == TransportKind::Vsock {
            return Err(Error::Unsupported(
                "a QEMU VM with the vsock transport cannot be snapshotted: QEMU marks vhost-user-vsock unmigratable; \
                 use the virtio-serial transport for snapshot-capable VMs"
                    .to_string(),
            ));
        }
        snapshot::check_dir(dir)?;
        if !dir.is_dir() {
            return Err(Error::Invalid(format!(
                "snapshot directory {} does not exist",
                dir.display()
            )));
        }
        self.expect_state(VmRunState::Paused).await?;
        let stats = snapshot::save(
            &self.qmp,
            dir,
            self.spec.memory_file.as_deref(),
            self.snapshot_timeout,
        )
        .await?;
        manifest::write_manifest(dir, VmmKind::Qemu, &self.spec, &[])?;
        Ok(stats)
    }

    async fn expect_state(&self, expected: VmRunState) -> Result<()> {
        self.state().await?.require(expected)
    }

    /// After the host ended the VM: helpers, sockets, and the memory file (the RAM of a VM that
    /// is gone; a snapshot has its own clone). Not done by the reaper for exits nobody asked
    /// for, which could race a restore placing the next VM's memory file.
    async fn release(&self) {
        release_helpers(self.vsock.as_deref(), &self.paths).await;
        if let Some(memory) = &self.spec.memory_file
            && let Err(e) = snapshot::remove_memory(memory)
        {
            warn!(vm = %self.spec.id, error = %e, "removing the memory file of an ended VM");
        }
    }
}

/// Stops the vsock daemon and removes sockets and the pid file. Safe to run more than once.
async fn release_helpers(vsock: Option<&VsockDaemon>, paths: &VmPaths) {
    if let Some(daemon) = vsock
        && let Err(e) = daemon.kill().await
    {
        warn!(error = %e, "stopping vhost-device-vsock failed");
    }
    paths.remove_runtime_files();
}

#[async_trait]
impl Vm for QemuVm {
    fn info(&self) -> &VmInfo {
        &self.info
    }

    async fn state(&self) -> Result<VmRunState> {
        if self.qemu.try_exit().is_some() {
            return Ok(VmRunState::Exited);
        }
        match self.qmp.query_status().await {
            Ok(status) if status.running => Ok(VmRunState::Running),
            // paused, postmigrate, inmigrate, internal-error, …: the vCPUs are not running.
            Ok(_) => Ok(VmRunState::Paused),
            Err(e) => match self.qemu.wait_timeout(EXIT_SETTLE).await {
                Some(_) => Ok(VmRunState::Exited),
                None => Err(e),
            },
        }
    }

    async fn pause(&self) -> Result<()> {
        self.expect_state(VmRunState::Running).await?;
        self.qmp.run("stop", None).await
    }

    async fn resume(&self) -> Result<()> {
        self.expect_state(VmRunState::Paused).await?;
        self.qmp.run("cont", None).await
    }

    async fn snapshot(&self, dir: &Path) -> Result<()> {
        self.snapshot_with_stats(dir).await.map(|_| ())
    }

    async fn prepare_snapshot(&self) -> Result<()> {
        match &self.spec.memory_file {
            Some(memory) => snapshot::flush_memory(memory).await,
            None => Ok(()),
        }
    }

    async fn shutdown(&self, grace: Duration) -> Result<VmExit> {
        self.requested.mark(&self.qemu);
        if self.qemu.try_exit().is_none()
            && let Err(e) = self.qmp.run("system_powerdown", None).await
        {
            warn!(vm = %self.spec.id, error = %e, "system_powerdown failed, killing");
        }
        match self.qemu.wait_timeout(grace).await {
            Some(exit) => {
                self.release().await;
                Ok(self.requested.vm_exit(exit))
            }
            None => {
                info!(vm = %self.spec.id, ?grace, "guest did not power off in time, killing");
                self.kill().await
            }
        }
    }

    async fn kill(&self) -> Result<VmExit> {
        self.requested.mark(&self.qemu);
        let exit = self.qemu.kill(KILL_GRACE).await?;
        self.release().await;
        Ok(self.requested.vm_exit(exit))
    }

    async fn wait_exit(&self) -> VmExit {
        let exit = self.qemu.wait().await;
        self.requested.vm_exit(exit)
    }
}
