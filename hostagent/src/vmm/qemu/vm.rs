//! [`QemuVm`]: one running QEMU process (plus its helper daemons, if any) behind the [`Vm`]
//! trait.
//!
//! Ownership: the VM owns its [`ChildProcess`]es and its QMP connection. A reaper task waits for
//! QEMU to exit, however that happens, and then stops the helper daemons and removes the sockets,
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
use crate::vmm::{
    DiskSpec, TransportKind, Vm, VmExit, VmInfo, VmRunState, VmSpec, VmmKind, manifest, spec,
};

use super::daemon::Helpers;
use super::hotplug;
use super::paths::VmPaths;
use super::qmp::Qmp;
use super::snapshot;

/// SIGTERM grace for QEMU in `kill`.
const KILL_GRACE: Duration = Duration::from_secs(3);

/// How long `state` waits for the exit status when QMP fails, before reporting the QMP error.
const EXIT_SETTLE: Duration = Duration::from_millis(200);

/// A running QEMU VM.
#[derive(Debug)]
pub struct QemuVm {
    info: VmInfo,
    /// The spec it started with; its disks are [`QemuVm::disks`].
    spec: VmSpec,
    /// Its disks now: the spec's, plus volumes added, less those removed since.
    disks: std::sync::Mutex<Vec<DiskSpec>>,
    paths: VmPaths,
    qemu: Arc<ChildProcess>,
    helpers: Arc<Helpers>,
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
    pub helpers: Arc<Helpers>,
    pub qmp: Qmp,
    pub snapshot_timeout: Duration,
}

impl QemuVm {
    /// Wraps started parts and spawns the reaper.
    pub(super) fn new(parts: Parts) -> Arc<QemuVm> {
        let vm = Arc::new(QemuVm {
            info: parts.info,
            disks: std::sync::Mutex::new(parts.spec.disks.clone()),
            spec: parts.spec,
            paths: parts.paths,
            qemu: parts.qemu,
            helpers: parts.helpers,
            qmp: parts.qmp,
            requested: EndRequest::default(),
            snapshot_timeout: parts.snapshot_timeout,
        });
        let (qemu, helpers, paths, id) = (
            vm.qemu.clone(),
            vm.helpers.clone(),
            vm.paths.clone(),
            vm.spec.id.clone(),
        );
        tokio::spawn(async move {
            let exit = qemu.wait().await;
            info!(vm = %id, status = %exit.describe(), "QEMU exited");
            release_helpers(&helpers, &paths).await;
        });
        vm
    }

    /// The spec the VM runs with, its disks as they are now.
    pub fn spec(&self) -> VmSpec {
        VmSpec {
            disks: self.disks.lock().expect("VM disks").clone(),
            ..self.spec.clone()
        }
    }

    /// The runtime layout of its directory.
    pub fn paths(&self) -> &VmPaths {
        &self.paths
    }

    /// vhost-device-vsock's pid, for the vsock transport.
    pub fn vsock_daemon_pid(&self) -> Option<u32> {
        self.helpers.vsock.as_ref().map(|d| d.pid())
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
        manifest::write_manifest(dir, VmmKind::Qemu, &self.spec(), &[])?;
        Ok(stats)
    }

    async fn expect_state(&self, expected: VmRunState) -> Result<()> {
        self.state().await?.require(expected)
    }

    /// After the host ended the VM: helpers, sockets, and the memory file (the RAM of a VM that
    /// is gone; a snapshot has its own clone). Not done by the reaper for exits nobody asked
    /// for, which could race a restore placing the next VM's memory file.
    async fn release(&self) {
        release_helpers(&self.helpers, &self.paths).await;
        if let Some(memory) = &self.spec.memory_file
            && let Err(e) = snapshot::remove_memory(memory)
        {
            warn!(vm = %self.spec.id, error = %e, "removing the memory file of an ended VM");
        }
    }
}

/// Stops the helper daemons and removes sockets and the pid file. Safe to run more than once.
async fn release_helpers(helpers: &Helpers, paths: &VmPaths) {
    helpers.kill_all().await;
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

    async fn add_disk(&self, disk: &DiskSpec) -> Result<()> {
        spec::check_name("disk id", &disk.id)?;
        spec::check_path(&format!("disk {}", disk.id), &disk.path)?;
        {
            let disks = self.disks.lock().expect("VM disks");
            if let Some(d) = disks.iter().find(|d| {
                d.id == disk.id || (d.volume_slot.is_some() && d.volume_slot == disk.volume_slot)
            }) {
                return Err(Error::Invalid(format!(
                    "disk {} is attached already (or holds slot {:?})",
                    d.id, d.volume_slot
                )));
            }
        }
        hotplug::add_volume(&self.qmp, disk).await?;
        info!(vm = %self.spec.id, disk = %disk.id, slot = ?disk.volume_slot, "volume hot-added");
        self.disks.lock().expect("VM disks").push(disk.clone());
        Ok(())
    }

    async fn remove_disk(&self, id: &str) -> Result<()> {
        let known = self
            .disks
            .lock()
            .expect("VM disks")
            .iter()
            .find(|d| d.id == id)
            .map(|d| d.volume_slot.is_some());
        match known {
            None => return Err(Error::Invalid(format!("disk {id} is not attached"))),
            Some(false) => {
                return Err(Error::Invalid(format!(
                    "disk {id} is not a volume: only volumes can be removed from a running VM"
                )));
            }
            Some(true) => {}
        }
        hotplug::remove_volume(&self.qmp, id).await?;
        info!(vm = %self.spec.id, disk = %id, "volume hot-removed");
        self.disks.lock().expect("VM disks").retain(|d| d.id != id);
        Ok(())
    }
}
