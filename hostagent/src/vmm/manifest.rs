//! `vm.json`: the manifest every driver writes next to its snapshot files.
//!
//! A snapshot directory holds the VMM's own files (QEMU: `vmstate`; Cloud Hypervisor:
//! `config.json`, `state.json`, `memory-ranges`) plus this manifest, written last, so a directory
//! with a manifest is a finished snapshot. The manifest records which VMM wrote the snapshot, the
//! [`VmSpec`] the VM ran with and the virtio-fs shares attached at the time. Restore reads it
//! back ([`read_manifest`]) and compares the new spec's device layout with it ([`check_layout`]):
//! paths may change, devices may not, because both VMMs rebuild the device tree from the layout
//! and load each device's state into the device at the same position.
//!
//! Format history: 1 = `{format, vmm, spec}`, with `fs` added as an optional list (an absent list
//! reads as empty, so format-1 manifests written before it still read).

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::vmm::{FsSpec, TransportKind, VmSpec, VmmKind};

/// File holding the manifest.
pub const MANIFEST_FILE: &str = "vm.json";
/// Manifest format written by this build.
pub const MANIFEST_FORMAT: u32 = 1;

/// What `vm.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Manifest format ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The VMM that wrote the snapshot; only it can restore it.
    pub vmm: VmmKind,
    /// The spec of the VM the snapshot was taken from (hot-added disks included).
    pub spec: VmSpec,
    /// virtio-fs shares attached when the snapshot was taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fs: Vec<FsSpec>,
}

/// Writes `<dir>/vm.json` atomically (temp file, fsync, rename).
pub fn write_manifest(dir: &Path, vmm: VmmKind, spec: &VmSpec, fs: &[FsSpec]) -> Result<()> {
    let manifest = SnapshotManifest {
        format: MANIFEST_FORMAT,
        vmm,
        spec: spec.clone(),
        fs: fs.to_vec(),
    };
    let text = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::io("encoding snapshot manifest", std::io::Error::other(e)))?;
    let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
    let path = dir.join(MANIFEST_FILE);
    {
        use std::io::Write;
        let mut file = std::fs::File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        file.write_all(&text)
            .ctx(|| format!("writing {}", tmp.display()))?;
        file.sync_all()
            .ctx(|| format!("syncing {}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).ctx(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

/// Reads `<dir>/vm.json` and checks that `expected` wrote it.
pub fn read_manifest(dir: &Path, expected: VmmKind) -> Result<SnapshotManifest> {
    let path = dir.join(MANIFEST_FILE);
    let text =
        std::fs::read(&path).ctx(|| format!("reading snapshot manifest {}", path.display()))?;
    let manifest: SnapshotManifest = serde_json::from_slice(&text).map_err(|e| {
        Error::Invalid(format!(
            "snapshot manifest {} is malformed: {e}",
            path.display()
        ))
    })?;
    if manifest.format != MANIFEST_FORMAT || manifest.vmm != expected {
        return Err(Error::Invalid(format!(
            "snapshot manifest {} is format {} of {:?}, this driver reads format {MANIFEST_FORMAT} of {expected:?}",
            path.display(),
            manifest.format,
            manifest.vmm,
        )));
    }
    Ok(manifest)
}

/// Checks that `new` has the device layout of `old`: same disks (ids, order, formats,
/// read-only), memory, vCPUs, transport and NIC presence. Paths may differ.
pub fn check_layout(old: &VmSpec, new: &VmSpec) -> Result<()> {
    let mut diffs = Vec::new();
    if old.memory_mib != new.memory_mib {
        diffs.push(format!(
            "memory {} MiB vs {} MiB",
            old.memory_mib, new.memory_mib
        ));
    }
    if old.vcpus != new.vcpus {
        diffs.push(format!("vcpus {} vs {}", old.vcpus, new.vcpus));
    }
    if old.transport != new.transport {
        diffs.push(format!(
            "transport {:?} vs {:?}",
            old.transport, new.transport
        ));
    }
    if old.transport == TransportKind::Vsock && old.vsock_cid != new.vsock_cid {
        diffs.push(format!("vsock CID {} vs {}", old.vsock_cid, new.vsock_cid));
    }
    let layout = |spec: &VmSpec| -> Vec<String> {
        spec.disks
            .iter()
            .map(|d| {
                format!(
                    "{}:{:?}:{}{}",
                    d.id,
                    d.format,
                    if d.readonly { "ro" } else { "rw" },
                    d.volume_slot.map(|s| format!("@{s}")).unwrap_or_default()
                )
            })
            .collect()
    };
    if layout(old) != layout(new) {
        diffs.push(format!(
            "disks [{}] vs [{}]",
            layout(old).join(", "),
            layout(new).join(", ")
        ));
    }
    if old.share.is_some() != new.share.is_some() {
        let has = |spec: &VmSpec| {
            if spec.share.is_some() {
                "a share"
            } else {
                "no share"
            }
        };
        diffs.push(format!("{} vs {}", has(old), has(new)));
    }
    if old.memory_file.is_some() != new.memory_file.is_some() {
        let backing = |spec: &VmSpec| match spec.memory_file {
            Some(_) => "a memory file",
            None => "anonymous memory",
        };
        diffs.push(format!("RAM in {} vs {}", backing(old), backing(new)));
    }
    if old.net.is_some() != new.net.is_some() {
        diffs.push(format!(
            "network {} vs {}",
            on_off(old.net.is_some()),
            on_off(new.net.is_some())
        ));
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "restore spec does not match the snapshot: {}",
            diffs.join("; ")
        )))
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::spec::tests::spec;
    use crate::vmm::{DiskFormat, NetSpec};
    use std::path::PathBuf;

    #[test]
    fn layout_allows_new_paths() {
        let old = spec();
        let mut new = spec();
        new.dir = PathBuf::from("/run/platinum/sbx2");
        new.id = "sbx2".to_string();
        new.disks[0].path = PathBuf::from("/run/platinum/sbx2/rootfs.raw");
        new.console_log = PathBuf::from("/run/platinum/sbx2/console.log");
        check_layout(&old, &new).expect("same layout");
    }

    #[test]
    fn layout_rejects_device_changes() {
        let old = spec();
        type Change = Box<dyn Fn(&mut VmSpec)>;
        let cases: Vec<(&str, Change)> = vec![
            ("memory", Box::new(|s| s.memory_mib = 1024)),
            ("vcpus", Box::new(|s| s.vcpus = 1)),
            (
                "transport",
                Box::new(|s| s.transport = TransportKind::Vsock),
            ),
            ("disks", Box::new(|s| s.disks[0].format = DiskFormat::Qcow2)),
            ("disks", Box::new(|s| s.disks[0].id = "root".to_string())),
            ("disks", Box::new(|s| s.disks.clear())),
            (
                "network",
                Box::new(|s| {
                    s.net = Some(NetSpec {
                        tap: "t".to_string(),
                        mac: "52:54:00:00:00:01".to_string(),
                    })
                }),
            ),
        ];
        for (what, change) in cases {
            let mut new = spec();
            change(&mut new);
            match check_layout(&old, &new) {
                Err(Error::Invalid(msg)) => assert!(msg.contains(what), "{what}: {msg}"),
                other => panic!("{what}: expected Invalid, got {other:?}"),
            }
        }
    }

    #[test]
    fn manifest_round_trips_and_rejects_other_formats_and_vmms() {
        let dir = tempfile::tempdir().expect("tempdir");
        let share = FsSpec {
            id: "fs0".to_string(),
            tag: "work".to_string(),
            socket: PathBuf::from("/run/platinum/sbx1/virtiofsd.sock"),
        };
        write_manifest(
            dir.path(),
            VmmKind::CloudHypervisor,
            &spec(),
            std::slice::from_ref(&share),
        )
        .expect("write");
        let read = read_manifest(dir.path(), VmmKind::CloudHypervisor).expect("read");
        assert_eq!((read.spec, read.fs), (spec(), vec![share]));
        assert!(!dir.path().join("vm.json.tmp").exists());
        assert!(matches!(
            read_manifest(dir.path(), VmmKind::Qemu),
            Err(Error::Invalid(msg)) if msg.contains("CloudHypervisor")
        ));

        let mut manifest = read_manifest(dir.path(), VmmKind::CloudHypervisor).expect("read");
        manifest.format = 99;
        std::fs::write(
            dir.path().join(MANIFEST_FILE),
            serde_json::to_vec(&manifest).expect("json"),
        )
        .expect("write");
        assert!(matches!(
            read_manifest(dir.path(), VmmKind::CloudHypervisor),
            Err(Error::Invalid(_))
        ));
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{").expect("write");
        assert!(matches!(
            read_manifest(dir.path(), VmmKind::CloudHypervisor),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn manifests_written_before_the_fs_list_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = serde_json::json!({"format": 1, "vmm": "qemu", "spec": spec()});
        std::fs::write(dir.path().join(MANIFEST_FILE), old.to_string()).expect("write");
        let read = read_manifest(dir.path(), VmmKind::Qemu).expect("read");
        assert!(read.fs.is_empty());
        assert_eq!(read.spec, spec());
    }
}
