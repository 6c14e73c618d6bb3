//! The `Vmm` trait: what every VMM driver (QEMU, Cloud Hypervisor) offers the host agent.
//!
//! A driver turns a [`VmSpec`] into a running [`Vm`]: one VMM process per sandbox, plus its helper
//! daemons (vhost-device-vsock, virtiofsd), all rooted in the sandbox's own directory. The host agent
//! never knows which driver it talks to, and drivers never know about sandboxes, templates or users.
//!
//! Lifecycle of a `Vm`: `boot`/`restore` -> running <-> paused (`pause`/`resume`); `snapshot` needs
//! paused; `shutdown` (graceful, bounded) or `kill` ends it, after which [`Vm::wait_exit`] resolves.
//! Dropping a `Vm` does not stop it: the owner calls `kill` (idempotent) to tear it down.
//!
//! - [`qemu`]: the portable driver (`-M microvm`, KVM or TCG).
//! - [`cloud_hypervisor`]: the production driver (Cloud Hypervisor over its REST API, KVM only).
//! - [`select`]: which of the two this host runs, and why.
//! - [`spec`]: validation of a [`VmSpec`] shared by both drivers.
//! - [`manifest`]: the `vm.json` both drivers write into their snapshots.
//! - `exit`: the host-requested flag both drivers put into a [`VmExit`].

pub mod cloud_hypervisor;
pub(crate) mod exit;
pub mod manifest;
pub mod qemu;
pub mod select;
pub mod spec;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// Which VMM runs a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmmKind {
    /// QEMU (`-M microvm`).
    Qemu,
    /// Cloud Hypervisor.
    CloudHypervisor,
}

/// How guest instructions execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Accel {
    /// Hardware virtualization.
    Kvm,
    /// QEMU's software emulation.
    Tcg,
}

/// Which guest transport carries the agent protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TransportKind {
    /// A virtio-serial port (QEMU; migratable, so snapshots work).
    #[default]
    VirtioSerial,
    /// virtio-vsock behind a hybrid `CONNECT <port>` Unix socket (Cloud Hypervisor, or QEMU with
    /// vhost-device-vsock).
    Vsock,
}

/// Disk image format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiskFormat {
    /// Raw image (a reflink clone or a copy).
    Raw,
    /// qcow2 overlay over a raw base or another qcow2 (a disk layer).
    Qcow2,
}

/// A block device for the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Stable device id (`rootfs`, `vol0`, ...); kept across snapshot and restore.
    pub id: String,
    /// Image file.
    pub path: PathBuf,
    /// Its format.
    pub format: DiskFormat,
    /// Attach read-only.
    pub readonly: bool,
    /// `Some(slot)` for a volume: an image that lives outside the sandbox's directory and
    /// outlives it, attached and detached while the VM runs, at a slot (0..[`MAX_VOLUMES`])
    /// that stays its own until it is detached, so a restore rebuilds the same bus address. The
    /// guest finds a volume by its serial, which is its id. QEMU puts volumes on the machine's
    /// virtio-scsi bus (SCSI target = slot; the only bus `-M microvm` can hot-plug on); Cloud
    /// Hypervisor hot-adds them as virtio-blk PCI devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_slot: Option<u32>,
}

/// How many volumes one VM can have attached.
pub const MAX_VOLUMES: u32 = 16;

impl DiskSpec {
    /// Its line in [`VmInfo::devices`], e.g. `virtio-blk rootfs (Raw): /path/to/disk`.
    pub fn describe(&self) -> String {
        let ro = if self.readonly { ", read-only" } else { "" };
        let kind = match self.volume_slot {
            Some(_) => "volume",
            None => "virtio-blk",
        };
        format!(
            "{kind} {} ({:?}{ro}): {}",
            self.id,
            self.format,
            self.path.display()
        )
    }
}

/// Everything a driver needs to start one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Sandbox id; used in process names and logs.
    pub id: String,
    /// Per-VM runtime directory (exists, owned by the VM): sockets, pid file, logs, state.
    pub dir: PathBuf,
    /// Kernel (PVH `vmlinux`).
    pub kernel: PathBuf,
    /// Initramfs.
    pub initramfs: PathBuf,
    /// Kernel command line.
    pub cmdline: String,
    /// Disks, root first (`/dev/vda`).
    pub disks: Vec<DiskSpec>,
    /// vCPUs.
    pub vcpus: u32,
    /// Guest RAM, MiB.
    pub memory_mib: u32,
    /// Guest RAM backed by this file in [`VmSpec::dir`] (`memory-backend-file,share=on`)
    /// instead of anonymous shared memory. The file *is* the RAM: a snapshot saves device state
    /// only and clones the file (a reflink where the filesystem has them), and a restore maps a
    /// clone of the snapshot's. QEMU only; `None` = anonymous RAM, streamed into snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_file: Option<PathBuf>,
    /// Guest agent transport.
    pub transport: TransportKind,
    /// Guest vsock CID (>= 3) when the transport is vsock.
    pub vsock_cid: u32,
    /// File the guest's serial console is written to.
    pub console_log: PathBuf,
    /// Optional network attachment.
    pub net: Option<NetSpec>,
    /// A host directory shared with the guest over virtio-fs, tag [`SHARE_TAG`] (QEMU runs a
    /// virtiofsd for it; the guest mounts it at `/mnt/dnah-share`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share: Option<PathBuf>,
}

/// The virtio-fs tag of a VM's host share ([`VmSpec::share`]).
pub const SHARE_TAG: &str = "dnah-share";

/// A virtio-net device on a pre-created TAP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetSpec {
    /// Host TAP interface name.
    pub tap: String,
    /// Guest MAC address.
    pub mac: String,
}

/// A virtio-fs share: a virtiofsd the caller runs, exposed to the guest under a mount tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsSpec {
    /// Stable device id (`fs0`, ...); kept across snapshot and restore.
    pub id: String,
    /// Mount tag the guest uses (`mount -t virtiofs <tag> <dir>`).
    pub tag: String,
    /// virtiofsd's vhost-user socket.
    pub socket: PathBuf,
}

/// Where the host reaches the guest agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GuestEndpoint {
    /// Connect to this Unix socket (QEMU's chardev for the virtio-serial port).
    VirtioSerial {
        /// Socket path.
        socket: PathBuf,
    },
    /// Connect to this hybrid-vsock Unix socket and send `CONNECT <port>\n`.
    HybridVsock {
        /// Socket path.
        socket: PathBuf,
        /// Guest port.
        port: u32,
    },
}

/// What a running VM is, for the sandbox's info and for `platinum doctor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmInfo {
    /// The VMM.
    pub vmm: VmmKind,
    /// The accelerator it uses.
    pub accel: Accel,
    /// VMM process id.
    pub pid: u32,
    /// How to reach the guest agent.
    pub guest: GuestEndpoint,
    /// Human-readable device list (for logs and `info`).
    pub devices: Vec<String>,
}

/// Why a VMM process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmExit {
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if one killed it.
    pub signal: Option<i32>,
    /// True when the host asked for it (shutdown/kill); false for crashes and guest power-off.
    pub requested: bool,
}

/// Run state of a VM as the VMM reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VmRunState {
    /// vCPUs running.
    Running,
    /// vCPUs stopped.
    Paused,
    /// The VMM process is gone.
    Exited,
}

impl VmRunState {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            VmRunState::Running => "running",
            VmRunState::Paused => "paused",
            VmRunState::Exited => "exited",
        }
    }

    /// `Ok` when the VM is in the `expected` state, else [`Error::VmState`].
    pub fn require(self, expected: VmRunState) -> Result<()> {
        if self == expected {
            Ok(())
        } else {
            Err(Error::VmState {
                expected: expected.as_str().to_string(),
                actual: self.as_str().to_string(),
            })
        }
    }
}

/// A VMM driver.
#[async_trait]
pub trait Vmm: Send + Sync {
    /// Which VMM this is.
    fn kind(&self) -> VmmKind;

    /// The accelerator VMs of this driver get on this host.
    fn accel(&self) -> Accel;

    /// The VMM's version (`10.0.2`): a snapshot restores only into the version that wrote it.
    fn version(&self) -> String;

    /// Whether VMs of this driver can have a host share ([`VmSpec::share`]); drivers that
    /// cannot keep this default and refuse specs with one.
    fn serves_shares(&self) -> bool {
        false
    }

    /// Starts a VM and returns once the VMM reports it running (not once the guest has booted).
    async fn boot(&self, spec: &VmSpec) -> Result<Arc<dyn Vm>>;

    /// Starts a VM from a snapshot directory written by [`Vm::snapshot`]. `spec` gives the new
    /// identity (directory, sockets, disks, console); devices must match the snapshot's. The VM
    /// comes back running.
    async fn restore(&self, spec: &VmSpec, snapshot_dir: &Path) -> Result<Arc<dyn Vm>>;
}

/// One running VM.
#[async_trait]
pub trait Vm: Send + Sync {
    /// What it is and how to reach it.
    fn info(&self) -> &VmInfo;

    /// Current run state.
    async fn state(&self) -> Result<VmRunState>;

    /// Stops the vCPUs; memory stays.
    async fn pause(&self) -> Result<()>;

    /// Restarts the vCPUs.
    async fn resume(&self) -> Result<()>;

    /// Writes device state and memory into `dir` (which exists). The VM must be paused and stays
    /// paused.
    async fn snapshot(&self, dir: &Path) -> Result<()>;

    /// Work a snapshot needs that can be done while the vCPUs still run, to shorten the pause
    /// window that follows (QEMU with a memory file writes the dirty RAM back first, so the
    /// clone taken while paused only flushes what changed since). VMMs that stream their RAM
    /// into the snapshot have nothing to do ahead and keep this default.
    async fn prepare_snapshot(&self) -> Result<()> {
        Ok(())
    }

    /// Asks the guest to power off and waits up to `grace`, then kills the VMM.
    async fn shutdown(&self, grace: Duration) -> Result<VmExit>;

    /// Kills the VMM and its helper daemons now. Idempotent.
    async fn kill(&self) -> Result<VmExit>;

    /// Resolves when the VMM process has exited, for whatever reason.
    async fn wait_exit(&self) -> VmExit;

    /// Hot-adds a disk to the running VM; it stays attached until the VM ends and is part of
    /// later snapshots. Drivers whose machine cannot hot-plug keep this default, which refuses.
    async fn add_disk(&self, disk: &DiskSpec) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{:?} VMs cannot hot-add disk {}",
            self.info().vmm,
            disk.id
        )))
    }

    /// Hot-removes a disk [`Vm::add_disk`] added (or one the VM started with): the guest must
    /// no longer use it. Drivers whose machine cannot hot-unplug keep this default, which
    /// refuses.
    async fn remove_disk(&self, id: &str) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{:?} VMs cannot hot-remove disk {id}",
            self.info().vmm
        )))
    }

    /// Hot-adds a virtio-fs share served by a running virtiofsd. Drivers whose machine cannot
    /// hot-plug keep this default, which refuses.
    async fn add_fs(&self, fs: &FsSpec) -> Result<()> {
        Err(Error::Unsupported(format!(
            "{:?} VMs cannot hot-add virtio-fs share {}",
            self.info().vmm,
            fs.id
        )))
    }
}

/// Removes a dead VM's runtime files (sockets, locks, pid file); missing ones are fine, other
/// failures are logged: cleanup never fails the operation it follows.
pub(crate) fn remove_runtime_files(paths: &[&Path]) {
    for path in paths {
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove runtime file")
            }
        }
    }
}
