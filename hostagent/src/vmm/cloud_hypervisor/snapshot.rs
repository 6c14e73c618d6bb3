//! Cloud Hypervisor snapshots, and restoring one under a new identity (clone, fork, resume on
//! another host).
//!
//! A snapshot directory, as `vm.snapshot` (`file://<dir>`, VM paused) writes it, plus the
//! driver's manifest:
//! - `config.json`: the VM's `VmConfig`, hot-plugged devices included;
//! - `state.json`: vCPU and device state;
//! - `memory-ranges`: guest RAM;
//! - `vm.json`: the shared [`crate::vmm::manifest`] (spec and virtio-fs shares), written last.
//!
//! Restoring reads `config.json` and opens every file named there: the disks, the vsock socket
//! (bound afresh), the serial file (truncated), the virtio-fs sockets, the TAP. CH has no API to
//! change them, so a clone that must not touch its parent's files gets a rewritten config:
//! [`prepare_restore_source`] builds `<new vm dir>/restore-source/` with a rewritten
//! `config.json` ([`rewrite_config`]) and symlinks to the snapshot's other files, and
//! `vm.restore` reads that directory. The snapshot itself is never modified, so one snapshot can
//! seed any number of clones, and it may live on read-only storage.
//!
//! [`rewrite_config`] changes paths only, in place: the order of devices, their ids and every
//! other field stay as CH wrote them, because CH rebuilds the device tree from this list and
//! loads each device's saved state by id. What it rewrites: `payload.kernel`/`initramfs`,
//! `disks[].path` (matched by id), `net[].tap`, `vsock.socket`, a `File` serial's `file` (the new
//! console log) and a `File` virtio console's `file`, `fs[].socket` (matched by id). Devices it
//! cannot re-home (pmem, VFIO, vDPA, vhost-user user devices, socket-backed consoles) make it
//! refuse, rather than let a clone share a host resource with its parent. The MAC addresses stay:
//! the guest keeps its MAC in RAM.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

use crate::error::{Error, IoContext, Result};
use crate::vmm::manifest::MANIFEST_FILE;
use crate::vmm::{FsSpec, VmSpec};

/// The VM configuration in a snapshot.
pub const CONFIG_FILE: &str = "config.json";
/// Device and vCPU state in a snapshot.
pub const STATE_FILE: &str = "state.json";
/// Guest RAM in a snapshot.
pub const MEMORY_FILE: &str = "memory-ranges";
/// A virtio console writing to a file is re-homed to this file in the new VM directory.
pub const VIRTIO_CONSOLE_LOG: &str = "virtio-console.log";

/// Config sections naming host resources this driver cannot re-home.
const UNMOVABLE: &[&str] = &[
    "pmem",
    "devices",
    "vdpa",
    "user_devices",
    "generic-vhost-user",
];

/// What a restored VM is called on this host: the paths its config must name.
#[derive(Debug, Clone, Copy)]
pub struct RestoreIdentity<'a> {
    /// The new VM's spec (its directory, kernel, disks, console log, TAP).
    pub spec: &'a VmSpec,
    /// The new hybrid vsock socket.
    pub vsock: &'a Path,
    /// The new virtio-fs shares (ids as in the snapshot, sockets of freshly started virtiofsds).
    pub fs: &'a [FsSpec],
}

/// Checks that `dir` can be a snapshot directory: absolute, UTF-8 and existing.
pub fn check_dir(dir: &Path) -> Result<()> {
    if !dir.is_absolute() || dir.to_str().is_none() {
        return Err(Error::Invalid(format!(
            "snapshot directory {} must be an absolute UTF-8 path",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(Error::Invalid(format!(
            "snapshot directory {} does not exist",
            dir.display()
        )));
    }
    Ok(())
}

/// Rewrites a snapshot's `config.json` for `new`, in place; returns what changed, one line per
/// field, for the logs.
pub fn rewrite_config(config: &mut Value, new: &RestoreIdentity<'_>) -> Result<Vec<String>> {
    let config = config
        .as_object_mut()
        .ok_or_else(|| invalid("is not a JSON object"))?;
    let mut changes = Vec::new();
    let mut set = |entry: &mut Value, what: String, key: &str, value: &str| {
        let old = entry.get(key).and_then(Value::as_str).unwrap_or("");
        if old != value {
            changes.push(format!("{what}.{key}: {old} -> {value}"));
        }
        entry[key] = Value::String(value.to_string());
    };

    for section in UNMOVABLE {
        if config.get(*section).is_some_and(|v| !is_empty(v)) {
            return Err(invalid(&format!(
                "has `{section}` devices, which a restore under a new identity cannot re-home"
            )));
        }
    }

    if let Some(payload) = config.get_mut("payload").filter(|p| p.is_object()) {
        if payload.get("kernel").is_some() {
            set(payload, "payload".into(), "kernel", &text(&new.spec.kernel));
        }
        if payload.get("initramfs").is_some() {
            set(
                payload,
                "payload".into(),
                "initramfs",
                &text(&new.spec.initramfs),
            );
        }
    }

    let mut seen = BTreeSet::new();
    for (index, disk) in entries(config, "disks")?.iter_mut().enumerate() {
        let id = device_id(disk, "disks", index)?;
        let target = new
            .spec
            .disks
            .iter()
            .find(|d| d.id == id)
            .ok_or_else(|| invalid(&format!("has disk {id}, which the restore spec lacks")))?;
        set(disk, format!("disks[{id}]"), "path", &text(&target.path));
        seen.insert(id);
    }
    if let Some(missing) = new.spec.disks.iter().find(|d| !seen.contains(&d.id)) {
        return Err(invalid(&format!(
            "has no disk {}, which the restore spec names",
            missing.id
        )));
    }

    let nets = entries(config, "net")?;
    match (&new.spec.net, nets.is_empty()) {
        (Some(net), false) => {
            for (index, entry) in nets.iter_mut().enumerate() {
                let id = device_id(entry, "net", index)?;
                set(entry, format!("net[{id}]"), "tap", &net.tap);
            }
        }
        (None, true) => {}
        (Some(_), true) => return Err(invalid("has no network device; the restore spec has one")),
        (None, false) => return Err(invalid("has a network device; the restore spec has none")),
    }

    match config.get_mut("vsock").filter(|v| v.is_object()) {
        Some(vsock) => set(vsock, "vsock".into(), "socket", &text(new.vsock)),
        None => {
            return Err(invalid(
                "has no vsock device, so the guest agent would be unreachable",
            ));
        }
    }

    for (section, file) in [
        ("serial", text(&new.spec.console_log)),
        ("console", text(&new.spec.dir.join(VIRTIO_CONSOLE_LOG))),
    ] {
        let Some(entry) = config.get_mut(section).filter(|v| v.is_object()) else {
            continue;
        };
        match entry.get("mode").and_then(Value::as_str) {
            Some("File") => set(entry, section.into(), "file", &file),
            Some("Socket") => {
                return Err(invalid(&format!(
                    "has a socket-backed {section}, which a restore under a new identity cannot re-home"
                )));
            }
            _ => {}
        }
    }

    let mut seen = BTreeSet::new();
    for (index, share) in entries(config, "fs")?.iter_mut().enumerate() {
        let id = device_id(share, "fs", index)?;
        let target = new.fs.iter().find(|f| f.id == id).ok_or_else(|| {
            invalid(&format!(
                "has virtio-fs share {id}; the restore needs a new virtiofsd socket for it"
            ))
        })?;
        set(share, format!("fs[{id}]"), "socket", &text(&target.socket));
        seen.insert(id);
    }
    if let Some(extra) = new.fs.iter().find(|f| !seen.contains(&f.id)) {
        return Err(invalid(&format!(
            "has no virtio-fs share {}, which the restore names",
            extra.id
        )));
    }
    Ok(changes)
}

/// Builds `source` (removed first if present) from the snapshot in `snapshot`: a rewritten
/// `config.json` and symlinks to every other file except the manifest.
pub fn prepare_restore_source(
    snapshot: &Path,
    source: &Path,
    new: &RestoreIdentity<'_>,
) -> Result<Vec<String>> {
    check_dir(snapshot)?;
    for required in [CONFIG_FILE, STATE_FILE] {
        if !snapshot.join(required).is_file() {
            return Err(Error::Invalid(format!(
                "snapshot {} has no {required}",
                snapshot.display()
            )));
        }
    }
    let config_path = snapshot.join(CONFIG_FILE);
    let raw = std::fs::read(&config_path).ctx(|| format!("reading {}", config_path.display()))?;
    let mut config: Value = serde_json::from_slice(&raw)
        .map_err(|e| Error::Invalid(format!("{} is not JSON: {e}", config_path.display())))?;
    let changes = rewrite_config(&mut config, new)?;

    remove_source(source)?;
    std::fs::create_dir(source).ctx(|| format!("creating {}", source.display()))?;
    let rewritten = serde_json::to_vec_pretty(&config)
        .map_err(|e| Error::io("encoding config.json", std::io::Error::other(e)))?;
    let target = source.join(CONFIG_FILE);
    std::fs::write(&target, rewritten).ctx(|| format!("writing {}", target.display()))?;
    let entries = std::fs::read_dir(snapshot).ctx(|| format!("listing {}", snapshot.display()))?;
    for entry in entries {
        let entry = entry.ctx(|| format!("listing {}", snapshot.display()))?;
        let name = entry.file_name();
        if name == CONFIG_FILE || name == MANIFEST_FILE {
            continue;
        }
        let link = source.join(&name);
        std::os::unix::fs::symlink(entry.path(), &link)
            .ctx(|| format!("linking {} to {}", link.display(), entry.path().display()))?;
    }
    Ok(changes)
}

/// Removes a restore source directory; absent is fine.
pub fn remove_source(source: &Path) -> Result<()> {
    match std::fs::remove_dir_all(source) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", source.display()), e)),
    }
}

/// The device list of a config section; absent or `null` reads as empty.
fn entries<'a>(
    config: &'a mut serde_json::Map<String, Value>,
    section: &str,
) -> Result<&'a mut [Value]> {
    match config.get_mut(section) {
        None | Some(Value::Null) => Ok(&mut []),
        Some(Value::Array(items)) => Ok(items.as_mut_slice()),
        Some(_) => Err(invalid(&format!("has a `{section}` that is not a list"))),
    }
}

fn device_id(entry: &Value, section: &str, index: usize) -> Result<String> {
    entry
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            invalid(&format!(
                "has {section}[{index}] without an id, so it cannot be matched"
            ))
        })
}

fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

fn invalid(what: &str) -> Error {
    Error::Invalid(format!("the snapshot's {CONFIG_FILE} {what}"))
}

fn text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::spec::tests::spec;
    use crate::vmm::{DiskFormat, DiskSpec, NetSpec};
    use serde_json::json;
    use std::path::PathBuf;

    fn snapshot_config() -> Value {
        json!({
            "payload": {"kernel": "/img/vmlinux", "initramfs": "/img/initrd", "cmdline": "console=ttyS0"},
            "cpus": {"boot_vcpus": 2, "max_vcpus": 2},
            "memory": {"size": 536870912u64, "shared": true},
            "disks": [
                {"path": "/old/rootfs.raw", "id": "rootfs", "image_type": "Raw"},
                {"path": "/old/vol0.qcow2", "id": "vol0", "image_type": "Qcow2"}
            ],
            "net": [{"tap": "sbxold", "mac": "52:54:00:00:00:01", "id": "net0"}],
            "vsock": {"cid": 3, "socket": "/old/vsock.sock", "id": "vsock0"},
            "serial": {"mode": "File", "file": "/old/console.log"},
            "console": {"mode": "Off"},
            "fs": [{"tag": "work", "socket": "/old/fs.sock", "num_queues": 1, "queue_size": 1024, "id": "fs0"}],
            "pmem": null
        })
    }

    fn new_spec() -> VmSpec {
        let mut s = spec();
        s.dir = PathBuf::from("/new");
        s.kernel = PathBuf::from("/img2/vmlinux");
        s.initramfs = PathBuf::from("/img2/initrd");
        s.console_log = PathBuf::from("/new/console.log");
        s.disks = vec![
            DiskSpec {
                id: "rootfs".into(),
                path: "/new/rootfs.raw".into(),
                format: DiskFormat::Raw,
                readonly: false,
                volume_slot: None,
            },
            DiskSpec {
                id: "vol0".into(),
                path: "/new/vol0.qcow2".into(),
                format: DiskFormat::Qcow2,
                readonly: false,
                volume_slot: None,
            },
        ];
        s.net = Some(NetSpec {
            tap: "sbxnew".into(),
            mac: "52:54:00:00:00:02".into(),
        });
        s
    }

    fn shares() -> Vec<FsSpec> {
        vec![FsSpec {
            id: "fs0".into(),
            tag: "work".into(),
            socket: "/new/fs.sock".into(),
        }]
    }

    /// The restore identity of `spec` with `fs`, its vsock socket moved to `/new/vsock.sock`.
    fn new_identity<'a>(spec: &'a VmSpec, fs: &'a [FsSpec]) -> RestoreIdentity<'a> {
        RestoreIdentity {
            spec,
            vsock: Path::new("/new/vsock.sock"),
            fs,
        }
    }

    #[test]
    fn paths_change_and_nothing_else() {
        let (spec, fs) = (new_spec(), shares());
        let identity = new_identity(&spec, &fs);
        let mut config = snapshot_config();
        let changes = rewrite_config(&mut config, &identity).expect("rewrite");
        let mut expected = snapshot_config();
        expected["payload"]["kernel"] = json!("/img2/vmlinux");
        expected["payload"]["initramfs"] = json!("/img2/initrd");
        expected["disks"][0]["path"] = json!("/new/rootfs.raw");
        expected["disks"][1]["path"] = json!("/new/vol0.qcow2");
        expected["net"][0]["tap"] = json!("sbxnew");
        expected["vsock"]["socket"] = json!("/new/vsock.sock");
        expected["serial"]["file"] = json!("/new/console.log");
        expected["fs"][0]["socket"] = json!("/new/fs.sock");
        assert_eq!(config, expected);
        assert_eq!(changes.len(), 8, "{changes:?}");
        assert!(
            changes.contains(&"disks[vol0].path: /old/vol0.qcow2 -> /new/vol0.qcow2".to_string())
        );
    }

    #[test]
    fn mismatched_devices_are_refused() {
        let spec = new_spec();
        let fs = shares();
        let run = |config: Value, spec: &VmSpec, fs: &[FsSpec]| {
            let mut config = config;
            match rewrite_config(&mut config, &new_identity(spec, fs)) {
                Err(Error::Invalid(msg)) => msg,
                other => panic!("expected Invalid, got {other:?}"),
            }
        };
        let mut unknown_disk = spec.clone();
        unknown_disk.disks[1].id = "vol9".into();
        assert!(run(snapshot_config(), &unknown_disk, &fs).contains("disk vol0"));
        let mut extra_disk = spec.clone();
        extra_disk.disks.push(DiskSpec {
            id: "vol1".into(),
            path: "/new/vol1.raw".into(),
            format: DiskFormat::Raw,
            readonly: false,
            volume_slot: None,
        });
        assert!(run(snapshot_config(), &extra_disk, &fs).contains("no disk vol1"));
        assert!(run(snapshot_config(), &spec, &[]).contains("virtio-fs share fs0"));
        let mut no_net = spec.clone();
        no_net.net = None;
        assert!(run(snapshot_config(), &no_net, &fs).contains("network"));
        let mut no_vsock = snapshot_config();
        no_vsock.as_object_mut().expect("object").remove("vsock");
        assert!(run(no_vsock, &spec, &fs).contains("vsock"));
        let mut pmem = snapshot_config();
        pmem["pmem"] = json!([{"file": "/old/pmem"}]);
        assert!(run(pmem, &spec, &fs).contains("pmem"));
        let mut anonymous = snapshot_config();
        anonymous["disks"][0]
            .as_object_mut()
            .expect("object")
            .remove("id");
        assert!(run(anonymous, &spec, &fs).contains("without an id"));
        let mut socket_serial = snapshot_config();
        socket_serial["serial"] = json!({"mode": "Socket", "socket": "/old/serial.sock"});
        assert!(run(socket_serial, &spec, &fs).contains("socket-backed serial"));
        assert!(run(json!([]), &spec, &fs).contains("not a JSON object"));
    }

    #[test]
    fn restore_source_links_everything_but_config_and_manifest() {
        let work = tempfile::tempdir().expect("tempdir");
        let snap = work.path().join("snap");
        std::fs::create_dir(&snap).expect("snap");
        std::fs::write(snap.join(CONFIG_FILE), snapshot_config().to_string()).expect("config");
        std::fs::write(snap.join(STATE_FILE), b"{}").expect("state");
        std::fs::write(snap.join(MEMORY_FILE), b"ram").expect("memory");
        std::fs::write(snap.join(MANIFEST_FILE), b"{}").expect("manifest");
        let (spec, fs) = (new_spec(), shares());
        let identity = new_identity(&spec, &fs);
        let source = work.path().join("restore-source");
        std::fs::create_dir(&source).expect("stale source");
        std::fs::write(source.join("stale"), b"x").expect("stale file");
        prepare_restore_source(&snap, &source, &identity).expect("prepare");
        let config: Value =
            serde_json::from_slice(&std::fs::read(source.join(CONFIG_FILE)).expect("read"))
                .expect("json");
        assert_eq!(config["vsock"]["socket"], json!("/new/vsock.sock"));
        assert_eq!(
            std::fs::read_link(source.join(MEMORY_FILE)).expect("link"),
            snap.join(MEMORY_FILE)
        );
        assert_eq!(
            std::fs::read(source.join(STATE_FILE)).expect("state"),
            b"{}"
        );
        assert!(!source.join(MANIFEST_FILE).exists());
        assert!(!source.join("stale").exists());
        let original: Value =
            serde_json::from_slice(&std::fs::read(snap.join(CONFIG_FILE)).expect("read"))
                .expect("json");
        assert_eq!(
            original,
            snapshot_config(),
            "the snapshot is never modified"
        );

        std::fs::remove_file(snap.join(STATE_FILE)).expect("remove state");
        assert!(matches!(
            prepare_restore_source(&snap, &source, &identity),
            Err(Error::Invalid(msg)) if msg.contains(STATE_FILE)
        ));
        remove_source(&source).expect("remove");
        remove_source(&source).expect("absent is fine");
    }
}
