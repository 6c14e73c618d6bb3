//! The host agent's face to the engine: the [`HostAgent`] trait.
//!
//! The engine asks a host for VMs by sandbox id and never learns which VMM runs them. On a single
//! host the implementation is in-process ([`local::LocalHost`]), and that is the only
//! implementation today. Multi-host mode, where a remote implementation would forward the same
//! calls to a host agent on another machine, is planned, not yet written.

pub mod cpu;
pub mod local;
pub mod memory;
pub mod snapshot;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use tokio::sync::broadcast;

use crate::archive::{Archive, ArchiveDir, Archived, Restored};
use crate::error::Result;
use crate::guest::GuestClient;
use crate::image::oci::{ImportImage, ImportedImage};
use crate::net::EgressRules;
use crate::share::{ByteStream, ShareEntry};
use crate::vmm::{Accel, TransportKind, VmExit, VmmKind};
use crate::volume_files::{VolumeAttrs, VolumeEntry};
use snapshot::{AfterSave, RestoreVm, SaveReport};

/// What a host is and how it runs VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host id.
    pub id: String,
    /// VMM driver in use.
    pub vmm: VmmKind,
    /// Accelerator in use.
    pub accel: Accel,
    /// Why this VMM and accelerator were chosen.
    pub reason: String,
    /// Default guest transport.
    pub transport: TransportKind,
    /// Sandbox networking: `None` when available, else why not.
    pub network_unavailable: Option<String>,
    /// The VMM's version (`10.0.2`, `53.0.0`): snapshots restore only into the same one.
    pub vmm_version: String,
    /// The host CPU's model name (`/proc/cpuinfo`).
    pub cpu_model: String,
    /// The host CPU's feature flags, sorted: a KVM snapshot may use any of them, so it restores
    /// only where all are present.
    pub cpu_flags: Vec<String>,
    /// Whether guest RAM lives in a file in each sandbox's directory ([`memory`]), and why.
    pub memory: String,
}

/// Parameters of a new VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateVm {
    /// Sandbox id (validated by the caller: lowercase alphanumerics).
    pub id: String,
    /// Template (image) name: a built-in template, whose kernel and initramfs the VM boots.
    pub template: String,
    /// A disk layer ([`HostAgent::commit_layer`]) whose disk the VM's root disk is made from
    /// instead of the template's root filesystem (a custom template).
    pub layer: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Environment variables for every process in the guest.
    pub env: BTreeMap<String, String>,
    /// Transport override (else the host default).
    pub transport: Option<TransportKind>,
    /// Internet access: `None` = on when the host has a sandbox network (else no network),
    /// `Some(true)` = required (fails where the host has none), `Some(false)` = a network
    /// interface without access beyond the host.
    pub internet: Option<bool>,
    /// What it may reach beyond the host, by address (in force before the guest runs).
    pub egress: EgressRules,
}

/// A VM as the host sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// Sandbox id.
    pub id: String,
    /// VMM.
    pub vmm: VmmKind,
    /// Accelerator.
    pub accel: Accel,
    /// VMM process id.
    pub pid: u32,
    /// Guest transport.
    pub transport: TransportKind,
    /// How the root disk was made: `reflink`, `qcow2` or `copy`.
    pub disk_clone: String,
    /// Guest agent version.
    pub agent_version: String,
    /// Guest kernel release.
    pub kernel: String,
    /// Milliseconds from VMM start to the agent's first answer.
    pub boot_ms: u64,
    /// Guest address on the sandbox network, if it has one.
    pub ip: Option<std::net::Ipv4Addr>,
    /// Whether its traffic may leave the host.
    pub internet: bool,
}

/// Something that happened to a VM without the engine asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostEvent {
    /// The VMM process ended unexpectedly (crash, kill from outside, guest power-off).
    VmExited {
        /// Sandbox id.
        id: String,
        /// How it ended.
        exit: VmExit,
        /// Last lines of the guest console.
        console_tail: String,
    },
    /// The guest agent stopped answering health checks; the host killed its VM (the disk and
    /// the network lease stay, so `start` boots it again).
    GuestUnresponsive {
        /// Sandbox id.
        id: String,
        /// What failed.
        reason: String,
        /// Last lines of the guest console.
        console_tail: String,
    },
    /// The guest agent broke the protocol (a flood, a stream it may not open, bad credit); the
    /// host closed the connection and killed its VM (the disk and the lease stay).
    GuestViolation {
        /// Sandbox id.
        id: String,
        /// The violation (starts with `protocol violation: `).
        reason: String,
        /// Last lines of the guest console.
        console_tail: String,
    },
}

/// What the engine needs from a host.
#[async_trait]
pub trait HostAgent: Send + Sync {
    /// Host description.
    fn info(&self) -> HostInfo;

    /// Replaces the environment a running VM's new processes get (a warm sandbox handed to a
    /// caller with its own `env`): one request to the agent, remembered for reconnects and
    /// restarts.
    async fn set_env(&self, id: &str, env: BTreeMap<String, String>) -> Result<()>;

    /// Makes sure a template's image is built and cached (may take minutes the first time);
    /// returns the image's content id (kernel, initramfs with the guest agent, root filesystem):
    /// equal ids, identical bytes.
    async fn prepare_template(&self, template: &str) -> Result<String>;

    /// Templates this host can boot.
    fn templates(&self) -> Vec<String>;

    /// Keeps the root disk of running VM `id`, as it is now, as disk layer `key` that VMs can
    /// start from ([`CreateVm::layer`]). The vCPUs stop for the copy; the caller has the guest
    /// sync its file systems first. Keeping a layer that exists changes nothing. Returns the
    /// bytes the layer takes.
    async fn commit_layer(&self, id: &str, key: &str) -> Result<u64>;

    /// Whether disk layer `key` exists.
    fn has_layer(&self, key: &str) -> bool;

    /// Pulls an image from its OCI registry and makes its file system a disk layer that VMs of
    /// `req.template` can start from ([`crate::image::oci`]). An image imported before (same
    /// digest) is not downloaded again. `report` gets a line per step (pull, layers, unpack,
    /// disk).
    async fn import_image(
        &self,
        req: ImportImage,
        report: &(dyn Fn(String) + Send + Sync),
    ) -> Result<ImportedImage>;

    /// Creates the VM's disk, boots it and waits for its guest agent.
    async fn create(&self, req: CreateVm) -> Result<VmStatus>;

    /// Boots a stopped VM again from its disk.
    async fn start(&self, id: &str) -> Result<VmStatus>;

    /// Shuts a VM down, keeping its disk.
    async fn stop(&self, id: &str) -> Result<()>;

    /// Stops the vCPUs.
    async fn pause(&self, id: &str) -> Result<()>;

    /// Restarts the vCPUs and re-syncs the guest clock.
    async fn resume(&self, id: &str) -> Result<()>;

    /// Replaces what sandbox `id` may reach beyond the host: kept in its record (every later
    /// boot and restore has it) and, while it holds a network lease, in force from the next
    /// packet on.
    async fn set_egress(&self, id: &str, rules: EgressRules) -> Result<()>;

    /// Replaces what the egress broker may put into sandbox `id`'s HTTPS requests: secrets in
    /// place of their placeholders, and headers set for given hosts (empty forgets them). Held
    /// in memory only, never written to the sandbox's record or any other file; the engine
    /// gives them again after a restart.
    async fn set_secrets(&self, id: &str, egress: crate::broker::BrokeredEgress) -> Result<()>;

    /// Writes the VM's full state (device state, memory, disks, [`snapshot::HOST_FILE`]) into
    /// `dir`, which exists and is empty, then lets it go on or exit ([`AfterSave`]).
    async fn save(&self, id: &str, dir: &Path, then: AfterSave) -> Result<SaveReport>;

    /// Boots a VM from a directory [`HostAgent::save`] wrote and waits for its guest agent. The
    /// caller has checked the directory (signature, hashes, compatibility): the host reads it as
    /// it is.
    async fn restore(&self, req: RestoreVm) -> Result<VmStatus>;

    /// Removes everything of the VM: processes, sockets, disks, directory. Idempotent.
    async fn destroy(&self, id: &str) -> Result<()>;

    /// Uploads what stopped sandbox `id` needs to run again (its record and disks, flattened to
    /// raw) and the files of each `extra` directory to this host's object store. The local copy
    /// stays until [`HostAgent::destroy`].
    async fn archive(&self, id: &str, extra: &[ArchiveDir]) -> Result<Archived>;

    /// Writes archived sandbox `id` back onto this host (its directory, which must hold no
    /// running VM, and each extra set into the directory `extra` names for it), checking every
    /// chunk. Nothing is left behind when it fails.
    async fn restore_archive(
        &self,
        id: &str,
        archive: &Archive,
        extra: &[ArchiveDir],
    ) -> Result<Restored>;

    /// Uploads the files of snapshot directory `dir` (which [`HostAgent::save`] wrote) to this
    /// host's object store as one set, disks flattened to raw. The directory stays.
    async fn upload_snapshot(&self, dir: &Path) -> Result<Archived>;

    /// Downloads the snapshot directory [`HostAgent::upload_snapshot`] uploaded into `dir`
    /// (which must not exist), checking every chunk; `dir` appears whole or not at all.
    async fn download_snapshot(&self, archive: &Archive, dir: &Path) -> Result<Restored>;

    /// Creates volume `id`: an image of `size_mib` holding an empty ext4 filesystem.
    async fn create_volume(&self, id: &str, size_mib: u64) -> Result<()>;

    /// Deletes volume `id`'s image (the caller made sure nothing has it attached).
    async fn delete_volume(&self, id: &str) -> Result<()>;

    /// Attaches volume `volume` to sandbox `id`, read-only or not, and returns its slot. Every
    /// later boot and restore of the sandbox has it; when its VM runs it is hot-added now (the
    /// guest sees a new disk whose serial is the volume's id).
    async fn attach_volume(&self, id: &str, volume: &str, readonly: bool) -> Result<u32>;

    /// Detaches volume `volume` from sandbox `id` (hot-removed when its VM runs: the guest
    /// must have unmounted it).
    async fn detach_volume(&self, id: &str, volume: &str) -> Result<()>;

    /// What `path` is in volume `volume`'s image, read by the host without mounting it
    /// ([`crate::volume_files`]). The caller makes sure no running guest has the volume
    /// mounted while the host changes its image.
    async fn volume_stat(&self, volume: &str, path: &str) -> Result<VolumeEntry>;

    /// The entries of directory `path` in volume `volume`'s image, `depth` levels deep.
    async fn volume_list(&self, volume: &str, path: &str, depth: u32) -> Result<Vec<VolumeEntry>>;

    /// Copies regular file `path` out of volume `volume`'s image: the copy, open, and its size.
    async fn volume_read(&self, volume: &str, path: &str) -> Result<(std::fs::File, u64)>;

    /// Writes file `path` of volume `volume`'s image from `body` (parents created, replaced
    /// whole, at most `limit` bytes).
    async fn volume_write(
        &self,
        volume: &str,
        path: &str,
        body: ByteStream,
        attrs: VolumeAttrs,
        limit: u64,
    ) -> Result<VolumeEntry>;

    /// Creates directory `path` in volume `volume`'s image (`parents`: missing parents too);
    /// returns it and whether it was created.
    async fn volume_make_dir(
        &self,
        volume: &str,
        path: &str,
        parents: bool,
        attrs: VolumeAttrs,
    ) -> Result<(VolumeEntry, bool)>;

    /// Removes `path` (a directory with its contents) from volume `volume`'s image.
    async fn volume_remove(&self, volume: &str, path: &str) -> Result<()>;

    /// Changes the owner, group and/or mode of `path` in volume `volume`'s image.
    async fn volume_set_attrs(
        &self,
        volume: &str,
        path: &str,
        attrs: VolumeAttrs,
    ) -> Result<VolumeEntry>;

    /// What `path` (relative) is in sandbox `id`'s host share. The share's file operations
    /// work whatever the VM's state, never follow a symlink and never leave the share
    /// ([`crate::share`]).
    async fn share_stat(&self, id: &str, path: &str) -> Result<ShareEntry>;

    /// The entries of directory `path` in sandbox `id`'s host share, by name.
    async fn share_list(&self, id: &str, path: &str) -> Result<Vec<ShareEntry>>;

    /// Opens regular file `path` of sandbox `id`'s host share: the file and its size.
    async fn share_read(&self, id: &str, path: &str) -> Result<(std::fs::File, u64)>;

    /// Writes file `path` of sandbox `id`'s host share from `body` (parents created, replaced
    /// whole); returns the bytes written.
    async fn share_write(&self, id: &str, path: &str, body: ByteStream) -> Result<u64>;

    /// Removes `path` from sandbox `id`'s host share (a directory's contents too with
    /// `recursive`).
    async fn share_remove(&self, id: &str, path: &str, recursive: bool) -> Result<()>;

    /// The guest agent session of a running VM (reconnecting if the connection dropped).
    async fn guest(&self, id: &str) -> Result<GuestClient>;

    /// Last lines of the VM's console log.
    async fn console_tail(&self, id: &str, lines: usize) -> Result<String>;

    /// Ids of VMs this host is running.
    async fn running(&self) -> Vec<String>;

    /// Unsolicited events (VM exits, unresponsive agents).
    fn subscribe(&self) -> broadcast::Receiver<HostEvent>;

    /// Free bytes on the file system that holds the sandboxes' disks, when known.
    fn disk_free_bytes(&self) -> Option<u64>;
}
