//! [`CloudHypervisorVm`]: one running `cloud-hypervisor` process behind the [`Vm`] trait.
//!
//! Ownership: the VM owns its [`ChildProcess`] and an [`ApiClient`] for its socket. A reaper task
//! waits for the VMM to exit, however that happens, and removes its runtime files, so a crashed
//! VM leaves no stale sockets behind. `requested` is set before the host stops the VM on purpose,
//! which is how [`Vm::wait_exit`] tells host-requested ends from crashes and guest power-offs (CH
//! exits by itself when the guest powers off).
//!
//! The VM also tracks what was hot-plugged (disks into its spec, virtio-fs shares into
//! `shares`), so a snapshot's manifest describes the device tree CH writes into `config.json`.
//!
//! Ending a VM:
//! - [`Vm::shutdown`]: `vm.power-button` (ACPI; the guest decides), wait up to the grace period,
//!   then `vm.shutdown` + `vmm.shutdown` (CH stops the VM and exits cleanly), then kill if it is
//!   still there after [`VMM_EXIT_WAIT`];
//! - [`Vm::kill`]: SIGTERM to the process group (CH exits cleanly on it), SIGKILL after
//!   [`KILL_GRACE`].

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::process::ChildProcess;
use crate::vmm::exit::EndRequest;
use crate::vmm::{
    DiskSpec, FsSpec, Vm, VmExit, VmInfo, VmRunState, VmSpec, VmmKind, manifest, spec,
};

use super::api::{ApiClient, ChVmState};
use super::config;
use super::paths::ChPaths;
use super::snapshot;

/// SIGTERM grace in `kill`.
pub const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long `shutdown` waits for the VMM to exit after `vmm.shutdown` before killing it.
pub const VMM_EXIT_WAIT: Duration = Duration::from_secs(5);
/// How long `state` waits for the exit status when the API fails, before reporting the error.
const EXIT_SETTLE: Duration = Duration::from_millis(200);

/// A running Cloud Hypervisor VM.
#[derive(Debug)]
pub struct CloudHypervisorVm {
    info: VmInfo,
    spec: Mutex<VmSpec>,
    shares: Mutex<Vec<FsSpec>>,
    paths: ChPaths,
    process: Arc<ChildProcess>,
    api: ApiClient,
    shared_memory: bool,
    requested: EndRequest,
    snapshot_timeout: Duration,
}

/// The pieces a started VM is made of (see `driver.rs`).
pub(super) struct Parts {
    pub info: VmInfo,
    pub spec: VmSpec,
    pub shares: Vec<FsSpec>,
    pub paths: ChPaths,
    pub process: Arc<ChildProcess>,
    pub api: ApiClient,
    pub shared_memory: bool,
    pub snapshot_timeout: Duration,
}

impl CloudHypervisorVm {
    /// Wraps started parts and spawns the reaper.
    pub(super) fn new(parts: Parts) -> Arc<CloudHypervisorVm> {
        let vm = Arc::new(CloudHypervisorVm {
            info: parts.info,
            spec: Mutex::new(parts.spec),
            shares: Mutex::new(parts.shares),
            paths: parts.paths,
            process: parts.process,
            api: parts.api,
            shared_memory: parts.shared_memory,
            requested: EndRequest::default(),
            snapshot_timeout: parts.snapshot_timeout,
        });
        let (process, paths, id) = (vm.process.clone(), vm.paths.clone(), vm.spec().id);
        tokio::spawn(async move {
            let exit = process.wait().await;
            info!(vm = %id, status = %exit.describe(), "cloud-hypervisor exited");
            paths.remove_runtime_files();
        });
        vm
    }

    /// The spec the VM runs with, hot-added disks included.
    pub fn spec(&self) -> VmSpec {
        self.spec.lock().expect("VM spec").clone()
    }

    /// The virtio-fs shares attached now.
    pub fn shares(&self) -> Vec<FsSpec> {
        self.shares.lock().expect("VM shares").clone()
    }

    /// The runtime layout of its directory.
    pub fn paths(&self) -> &ChPaths {
        &self.paths
    }

    /// The API client of this VM's VMM.
    pub fn api(&self) -> &ApiClient {
        &self.api
    }

    async fn expect_state(&self, expected: VmRunState) -> Result<()> {
        self.state().await?.require(expected)
    }

    /// `vm.shutdown` then `vmm.shutdown`; kills the VMM if it has not exited after
    /// [`VMM_EXIT_WAIT`].
    async fn stop_vmm(&self) -> Result<VmExit> {
        if let Err(e) = self.api.shutdown_vm().await {
            warn!(vm = %self.id(), error = %e, "vm.shutdown failed");
        }
        if let Err(e) = self.api.shutdown_vmm().await {
            warn!(vm = %self.id(), error = %e, "vmm.shutdown failed");
        }
        match self.process.wait_timeout(VMM_EXIT_WAIT).await {
            Some(exit) => {
                self.paths.remove_runtime_files();
                Ok(self.requested.vm_exit(exit))
            }
            None => {
                warn!(vm = %self.id(), "cloud-hypervisor did not exit after vmm.shutdown, killing");
                self.kill().await
            }
        }
    }

    fn id(&self) -> String {
        self.spec.lock().expect("VM spec").id.clone()
    }
}

#[async_trait]
impl Vm for CloudHypervisorVm {
    fn info(&self) -> &VmInfo {
        &self.info
    }

    async fn state(&self) -> Result<VmRunState> {
        if self.process.try_exit().is_some() {
            return Ok(VmRunState::Exited);
        }
        match self.api.info().await {
            Ok(info) => Ok(match info.state {
                ChVmState::Running => VmRunState::Running,
                // Created, Shutdown, Paused, BreakPoint: the vCPUs are not running.
                _ => VmRunState::Paused,
            }),
            Err(e) => match self.process.wait_timeout(EXIT_SETTLE).await {
                Some(_) => Ok(VmRunState::Exited),
                None => Err(e),
            },
        }
    }

    async fn pause(&self) -> Result<()> {
        self.expect_state(VmRunState::Running).await?;
        self.api.pause().await
    }

    async fn resume(&self) -> Result<()> {
        self.expect_state(VmRunState::Paused).await?;
        self.api.resume().await
    }

    async fn snapshot(&self, dir: &Path) -> Result<()> {
        snapshot::check_dir(dir)?;
        self.expect_state(VmRunState::Paused).await?;
        self.api
            .snapshot(&config::snapshot_config(dir), self.snapshot_timeout)
            .await?;
        manifest::write_manifest(dir, VmmKind::CloudHypervisor, &self.spec(), &self.shares())?;
        info!(vm = %self.id(), dir = %dir.display(), "snapshot written");
        Ok(())
    }

    async fn shutdown(&self, grace: Duration) -> Result<VmExit> {
        self.requested.mark(&self.process);
        if self.process.try_exit().is_none()
            && let Err(e) = self.api.power_button().await
        {
            warn!(vm = %self.id(), error = %e, "vm.power-button failed");
        }
        match self.process.wait_timeout(grace).await {
            Some(exit) => {
                self.paths.remove_runtime_files();
                Ok(self.requested.vm_exit(exit))
            }
            None => {
                info!(vm = %self.id(), ?grace, "guest did not power off in time, shutting the VMM down");
                self.stop_vmm().await
            }
        }
    }

    async fn kill(&self) -> Result<VmExit> {
        self.requested.mark(&self.process);
        let exit = self.process.kill(KILL_GRACE).await?;
        self.paths.remove_runtime_files();
        Ok(self.requested.vm_exit(exit))
    }

    async fn wait_exit(&self) -> VmExit {
        let exit = self.process.wait().await;
        self.requested.vm_exit(exit)
    }

    async fn add_disk(&self, disk: &DiskSpec) -> Result<()> {
        spec::check_name("disk id", &disk.id)?;
        spec::check_path(&format!("disk {}", disk.id), &disk.path)?;
        if !disk.path.is_file() {
            return Err(Error::Invalid(format!(
                "disk {} does not exist or is not a file",
                disk.path.display()
            )));
        }
        if self.spec().disks.iter().any(|d| d.id == disk.id) {
            return Err(Error::Invalid(format!(
                "disk id {} is already attached",
                disk.id
            )));
        }
        let attached = self.api.add_disk(&config::disk_config(disk)).await?;
        info!(vm = %self.id(), disk = %disk.id, pci = ?attached.map(|d| d.bdf), "disk hot-added");
        self.spec.lock().expect("VM spec").disks.push(disk.clone());
        Ok(())
    }

    async fn remove_disk(&self, id: &str) -> Result<()> {
        if !self.spec().disks.iter().any(|d| d.id == id) {
            return Err(Error::Invalid(format!("disk {id} is not attached")));
        }
        self.api.remove_device(id).await?;
        info!(vm = %self.id(), disk = %id, "disk hot-removed");
        self.spec
            .lock()
            .expect("VM spec")
            .disks
            .retain(|d| d.id != id);
        Ok(())
    }

    async fn add_fs(&self, fs: &FsSpec) -> Result<()> {
        if !self.shared_memory {
            return Err(Error::Unsupported(format!(
                "virtio-fs share {} cannot be added: this VM was booted without shared guest memory (hotplug_fs off)",
                fs.id
            )));
        }
        spec::check_name("virtio-fs share id", &fs.id)?;
        spec::check_path(&format!("virtio-fs share {}", fs.id), &fs.socket)?;
        if fs.tag.is_empty() || fs.tag.len() > 36 {
            return Err(Error::Invalid(format!(
                "virtio-fs tag {:?} must be 1-36 bytes",
                fs.tag
            )));
        }
        if self
            .shares()
            .iter()
            .any(|s| s.id == fs.id || s.tag == fs.tag)
        {
            return Err(Error::Invalid(format!(
                "virtio-fs share {} (tag {}) clashes with an attached share",
                fs.id, fs.tag
            )));
        }
        let attached = self.api.add_fs(&config::fs_config(fs)).await?;
        info!(vm = %self.id(), share = %fs.id, tag = %fs.tag, pci = ?attached.map(|d| d.bdf), "virtio-fs share hot-added");
        self.shares.lock().expect("VM shares").push(fs.clone());
        Ok(())
    }
}
