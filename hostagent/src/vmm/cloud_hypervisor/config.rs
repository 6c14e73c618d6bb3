//! The request bodies the driver sends to Cloud Hypervisor, built from a [`VmSpec`] by pure
//! functions, so every field is unit-tested and every body is contract-tested against CH's
//! OpenAPI schema (`hostagent/tests/cloud_hypervisor_contract.rs`).
//!
//! The types mirror the schema's components (`VmConfig`, `DiskConfig`, `FsConfig`, …) but carry
//! only the fields this driver sets; CH fills in its defaults for the rest. The choices:
//! - payload: the PVH `vmlinux` + initramfs + command line, no firmware;
//! - cpus: `boot_vcpus = max_vcpus`, nested virtualization off (a sandbox has no use for it);
//! - memory: `shared` when virtio-fs shares may be hot-added (vhost-user needs guest RAM a
//!   backend can map: CH refuses `--fs` otherwise with `VhostUserRequiresSharedMemory`);
//! - disks: in spec order with the spec's ids, an explicit `image_type` (auto-detection is
//!   deprecated), `backing_files` for qcow2 overlays (CH opens backing files only when asked),
//!   and `serial` = the id, so the guest-visible disk serial does not change when a clone's disk
//!   lives at another path (CH derives it from the path otherwise);
//! - net: the pre-created TAP as `net0`; no IP (CH configures none since v49);
//! - rng from `/dev/urandom`, the vsock device `vsock0` with its hybrid socket, the serial port
//!   to the console log file (`console=ttyS0`), and the virtio console off.
//!
//! Every device has an explicit id, because restore and hot-unplug key on ids and CH's
//! generated ones (`_disk0`) depend on creation order.
//!
//! The command line is only `--api-socket path=<socket> --seccomp true -v`: everything else
//! goes through `vm.create` / `vm.restore`.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::vmm::{DiskFormat, DiskSpec, FsSpec, VmSpec};

use super::paths::ChPaths;

/// Id of the virtio-net device.
pub const NET_ID: &str = "net0";
/// Id of the vsock device.
pub const VSOCK_ID: &str = "vsock0";
/// Entropy source of the virtio-rng device.
pub const RNG_SOURCE: &str = "/dev/urandom";
/// virtio-fs request queues per share.
pub const FS_NUM_QUEUES: u32 = 1;
/// virtio-fs queue depth.
pub const FS_QUEUE_SIZE: u32 = 1024;

/// `VmConfig`: the body of `vm.create` (and the shape of a snapshot's `config.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmConfig {
    /// What to boot.
    pub payload: PayloadConfig,
    /// vCPUs.
    pub cpus: CpusConfig,
    /// Guest RAM.
    pub memory: MemoryConfig,
    /// Block devices, root first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskConfig>,
    /// Network devices.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<NetConfig>,
    /// virtio-rng.
    pub rng: RngConfig,
    /// virtio-vsock.
    pub vsock: VsockConfig,
    /// The 8250 serial port.
    pub serial: SerialConfig,
    /// The virtio console.
    pub console: ConsoleConfig,
}

/// `PayloadConfig`: direct kernel boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadConfig {
    /// PVH `vmlinux` (or bzImage).
    pub kernel: String,
    /// Initramfs.
    pub initramfs: String,
    /// Kernel command line.
    pub cmdline: String,
}

/// `CpusConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpusConfig {
    /// vCPUs at boot.
    pub boot_vcpus: u32,
    /// vCPU hot-plug ceiling (= boot: no CPU hot-plug).
    pub max_vcpus: u32,
    /// Expose nested virtualization to the guest.
    pub nested: bool,
}

/// `MemoryConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryConfig {
    /// Bytes.
    pub size: u64,
    /// `MAP_SHARED` guest RAM, which vhost-user devices (virtio-fs) need.
    pub shared: bool,
}

/// `ImageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageType {
    /// Raw image.
    Raw,
    /// qcow2 image.
    Qcow2,
}

/// `DiskConfig`: the body of `vm.add-disk` and an entry of `VmConfig.disks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskConfig {
    /// Image file.
    pub path: String,
    /// Attach read-only.
    pub readonly: bool,
    /// Image format.
    pub image_type: ImageType,
    /// Open qcow2 backing files (only sent for qcow2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing_files: Option<bool>,
    /// Device id.
    pub id: String,
    /// Serial number the guest sees.
    pub serial: String,
}

/// `NetConfig`: a TAP-backed virtio-net device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetConfig {
    /// Host TAP interface.
    pub tap: String,
    /// Guest MAC.
    pub mac: String,
    /// Device id.
    pub id: String,
}

/// `RngConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RngConfig {
    /// Entropy source on the host.
    pub src: String,
}

/// `VsockConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VsockConfig {
    /// Guest CID.
    pub cid: u32,
    /// Hybrid vsock Unix socket on the host.
    pub socket: String,
    /// Device id.
    pub id: String,
}

/// `ConsoleMode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsoleMode {
    /// No device.
    Off,
    /// Output appended to a file.
    File,
}

/// `SerialConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SerialConfig {
    /// Where output goes.
    pub mode: ConsoleMode,
    /// The file, for [`ConsoleMode::File`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

/// `ConsoleConfig` (the virtio console).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfig {
    /// Where output goes.
    pub mode: ConsoleMode,
}

/// `FsConfig`: the body of `vm.add-fs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsConfig {
    /// Mount tag.
    pub tag: String,
    /// virtiofsd's socket.
    pub socket: String,
    /// Request queues.
    pub num_queues: u32,
    /// Queue depth.
    pub queue_size: u32,
    /// Device id.
    pub id: String,
}

/// `VmSnapshotConfig`: the body of `vm.snapshot`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSnapshotConfig {
    /// `file:///<existing directory>`.
    pub destination_url: String,
}

/// `MemoryRestoreMode`: how `vm.restore` brings guest RAM back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum MemoryRestoreMode {
    /// Read `memory-ranges` into guest RAM before the VM runs.
    #[default]
    Copy,
    /// Serve guest page faults from `memory-ranges` with userfaultfd; needs `/dev/userfaultfd`
    /// access or `vm.unprivileged_userfaultfd=1`, and fails the restore without it.
    OnDemand,
}

impl fmt::Display for MemoryRestoreMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MemoryRestoreMode::Copy => "copy",
            MemoryRestoreMode::OnDemand => "ondemand",
        })
    }
}

impl FromStr for MemoryRestoreMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "copy" => Ok(MemoryRestoreMode::Copy),
            "ondemand" | "on-demand" => Ok(MemoryRestoreMode::OnDemand),
            other => Err(format!(
                "memory restore mode {other:?}: expected `copy` or `ondemand`"
            )),
        }
    }
}

/// `RestoreConfig`: the body of `vm.restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreConfig {
    /// `file:///<snapshot directory>`.
    pub source_url: String,
    /// Pre-populate guest RAM (`copy` only).
    pub prefault: bool,
    /// How guest RAM comes back.
    pub memory_restore_mode: MemoryRestoreMode,
    /// Run the VM right after the restore (the driver resumes explicitly).
    pub resume: bool,
}

/// Cloud Hypervisor's arguments for a VMM that waits for its API (`vm.create` or `vm.restore`).
pub fn command_line(paths: &ChPaths) -> Vec<String> {
    vec![
        "--api-socket".to_string(),
        format!("path={}", paths.api.display()),
        "--seccomp".to_string(),
        "true".to_string(),
        "-v".to_string(),
    ]
}

/// The `vm.create` body for `spec`. `paths` must come from validating `spec` (every path is then
/// UTF-8); `shared_memory` is set when virtio-fs shares may be attached.
pub fn vm_config(spec: &VmSpec, paths: &ChPaths, shared_memory: bool) -> VmConfig {
    VmConfig {
        payload: PayloadConfig {
            kernel: text(&spec.kernel),
            initramfs: text(&spec.initramfs),
            cmdline: spec.cmdline.clone(),
        },
        cpus: CpusConfig {
            boot_vcpus: spec.vcpus,
            max_vcpus: spec.vcpus,
            nested: false,
        },
        memory: MemoryConfig {
            size: u64::from(spec.memory_mib) << 20,
            shared: shared_memory,
        },
        disks: spec.disks.iter().map(disk_config).collect(),
        net: spec
            .net
            .iter()
            .map(|net| NetConfig {
                tap: net.tap.clone(),
                mac: net.mac.clone(),
                id: NET_ID.to_string(),
            })
            .collect(),
        rng: RngConfig {
            src: RNG_SOURCE.to_string(),
        },
        vsock: VsockConfig {
            cid: spec.vsock_cid,
            socket: text(&paths.vsock),
            id: VSOCK_ID.to_string(),
        },
        serial: SerialConfig {
            mode: ConsoleMode::File,
            file: Some(text(&spec.console_log)),
        },
        console: ConsoleConfig {
            mode: ConsoleMode::Off,
        },
    }
}

/// A disk as `VmConfig.disks[i]` or the body of `vm.add-disk`.
pub fn disk_config(disk: &DiskSpec) -> DiskConfig {
    let (image_type, backing_files) = match disk.format {
        DiskFormat::Raw => (ImageType::Raw, None),
        DiskFormat::Qcow2 => (ImageType::Qcow2, Some(true)),
    };
    DiskConfig {
        path: text(&disk.path),
        readonly: disk.readonly,
        image_type,
        backing_files,
        id: disk.id.clone(),
        serial: disk.id.clone(),
    }
}

/// The body of `vm.add-fs`.
pub fn fs_config(fs: &FsSpec) -> FsConfig {
    FsConfig {
        tag: fs.tag.clone(),
        socket: text(&fs.socket),
        num_queues: FS_NUM_QUEUES,
        queue_size: FS_QUEUE_SIZE,
        id: fs.id.clone(),
    }
}

/// The body of `vm.snapshot` into `dir`.
pub fn snapshot_config(dir: &Path) -> VmSnapshotConfig {
    VmSnapshotConfig {
        destination_url: file_url(dir),
    }
}

/// The body of `vm.restore` from `dir`; the VM comes back paused.
pub fn restore_config(dir: &Path, mode: MemoryRestoreMode) -> RestoreConfig {
    RestoreConfig {
        source_url: file_url(dir),
        prefault: false,
        memory_restore_mode: mode,
        resume: false,
    }
}

/// `file://` + an absolute path, the only URL scheme CH snapshots to and restores from.
pub fn file_url(dir: &Path) -> String {
    format!("file://{}", dir.display())
}

/// The device list for [`crate::vmm::VmInfo::devices`].
pub fn describe_devices(spec: &VmSpec, paths: &ChPaths, shared_memory: bool) -> Vec<String> {
    let mut devices: Vec<String> = spec.disks.iter().map(DiskSpec::describe).collect();
    if let Some(net) = &spec.net {
        devices.push(format!("virtio-net {NET_ID} {} tap {}", net.mac, net.tap));
    }
    devices.push(format!("virtio-rng: {RNG_SOURCE}"));
    devices.push(format!(
        "virtio-vsock {VSOCK_ID} cid {}: {}",
        spec.vsock_cid,
        paths.vsock.display()
    ));
    devices.push(format!("serial console: {}", spec.console_log.display()));
    devices.push(format!(
        "guest memory {} MiB{}",
        spec.memory_mib,
        if shared_memory {
            ", shared (virtio-fs hot-add possible)"
        } else {
            ""
        }
    ));
    devices
}

/// A validated path as JSON text (validation guarantees UTF-8).
fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::spec::tests::spec;
    use crate::vmm::{NetSpec, TransportKind};
    use serde_json::json;
    use std::path::PathBuf;

    fn paths() -> ChPaths {
        ChPaths::new(Path::new("/run/platinum/sbx1"))
    }

    #[test]
    fn vm_config_carries_every_device_with_ids() {
        let mut s = spec();
        s.transport = TransportKind::Vsock;
        s.net = Some(NetSpec {
            tap: "sbx1".to_string(),
            mac: "52:54:00:00:00:2a".to_string(),
        });
        let config = serde_json::to_value(vm_config(&s, &paths(), true)).expect("json");
        assert_eq!(
            config,
            json!({
                "payload": {
                    "kernel": "/var/lib/platinum/images/vmlinux",
                    "initramfs": "/var/lib/platinum/images/initrd.img",
                    "cmdline": "console=ttyS0 quiet"
                },
                "cpus": {"boot_vcpus": 2, "max_vcpus": 2, "nested": false},
                "memory": {"size": 536870912u64, "shared": true},
                "disks": [{
                    "path": "/run/platinum/sbx1/rootfs.raw",
                    "readonly": false,
                    "image_type": "Raw",
                    "id": "rootfs",
                    "serial": "rootfs"
                }],
                "net": [{"tap": "sbx1", "mac": "52:54:00:00:00:2a", "id": "net0"}],
                "rng": {"src": "/dev/urandom"},
                "vsock": {"cid": 3, "socket": "/run/platinum/sbx1/vsock.sock", "id": "vsock0"},
                "serial": {"mode": "File", "file": "/run/platinum/sbx1/console.log"},
                "console": {"mode": "Off"}
            })
        );
    }

    #[test]
    fn private_memory_without_fs_and_no_net_list_without_a_nic() {
        let config = serde_json::to_value(vm_config(&spec(), &paths(), false)).expect("json");
        assert_eq!(config["memory"]["shared"], json!(false));
        assert!(config.get("net").is_none());
    }

    #[test]
    fn qcow2_disks_open_their_backing_files() {
        let disk = DiskSpec {
            id: "vol0".to_string(),
            path: PathBuf::from("/data/vol0.qcow2"),
            format: DiskFormat::Qcow2,
            readonly: true,
            volume_slot: None,
        };
        assert_eq!(
            serde_json::to_value(disk_config(&disk)).expect("json"),
            json!({
                "path": "/data/vol0.qcow2", "readonly": true, "image_type": "Qcow2",
                "backing_files": true, "id": "vol0", "serial": "vol0"
            })
        );
    }

    #[test]
    fn snapshot_restore_and_fs_bodies() {
        assert_eq!(
            snapshot_config(Path::new("/snap/1")).destination_url,
            "file:///snap/1"
        );
        let restore = serde_json::to_value(restore_config(
            Path::new("/snap/1"),
            MemoryRestoreMode::OnDemand,
        ))
        .expect("json");
        assert_eq!(
            restore,
            json!({"source_url": "file:///snap/1", "prefault": false,
                   "memory_restore_mode": "OnDemand", "resume": false})
        );
        let fs = fs_config(&FsSpec {
            id: "fs0".to_string(),
            tag: "work".to_string(),
            socket: PathBuf::from("/run/v.sock"),
        });
        assert_eq!(
            serde_json::to_value(fs).expect("json"),
            json!({"tag": "work", "socket": "/run/v.sock", "num_queues": 1, "queue_size": 1024, "id": "fs0"})
        );
    }

    #[test]
    fn restore_modes_parse() {
        assert_eq!("copy".parse(), Ok(MemoryRestoreMode::Copy));
        assert_eq!(" OnDemand ".parse(), Ok(MemoryRestoreMode::OnDemand));
        assert!("lazy".parse::<MemoryRestoreMode>().is_err());
        assert_eq!(MemoryRestoreMode::OnDemand.to_string(), "ondemand");
    }

    #[test]
    fn command_line_only_names_the_api_socket_and_seccomp() {
        assert_eq!(
            command_line(&paths()),
            [
                "--api-socket",
                "path=/run/platinum/sbx1/ch-api.sock",
                "--seccomp",
                "true",
                "-v"
            ]
        );
    }
}
