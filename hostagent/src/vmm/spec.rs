//! Validation of a [`VmSpec`] before any driver starts anything, shared by every VMM driver.
//!
//! [`validate`] rejects what would otherwise fail obscurely inside a VMM: relative paths, `.` or
//! `..` in the VM directory, commas (both QEMU's and Cloud Hypervisor's command-line option
//! separator), non-UTF-8 paths, duplicate disk ids, out-of-range vCPU and memory sizes, reserved
//! vsock CIDs, malformed TAP names and MACs. [`check_inputs`] then checks that every file the VMM
//! will open exists, because the VMM's own error for a missing file is less clear.
//!
//! Socket path lengths depend on each driver's file layout and are checked by the drivers.

use std::collections::HashSet;
use std::path::{Component, Path};

use crate::error::{Error, Result};
use crate::transport::check_socket_path;
use crate::vmm::{TransportKind, VmSpec};

/// Smallest guest RAM accepted, MiB.
pub const MIN_MEMORY_MIB: u32 = 64;
/// Most vCPUs accepted.
pub const MAX_VCPUS: u32 = 255;

/// Checks the fields of `spec` that do not depend on the driver.
pub fn validate(spec: &VmSpec) -> Result<()> {
    check_name("VM id", &spec.id)?;
    check_path("VM directory", &spec.dir)?;
    if spec
        .dir
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(Error::Invalid(format!(
            "VM directory {} must not contain `.` or `..`",
            spec.dir.display()
        )));
    }
    check_path("kernel", &spec.kernel)?;
    check_path("initramfs", &spec.initramfs)?;
    check_path("console log", &spec.console_log)?;
    if let Some(share) = &spec.share {
        check_path("share", share)?;
    }
    if spec.vcpus == 0 || spec.vcpus > MAX_VCPUS {
        return Err(Error::Invalid(format!(
            "vcpus = {}, must be 1..={MAX_VCPUS}",
            spec.vcpus
        )));
    }
    if spec.memory_mib < MIN_MEMORY_MIB {
        return Err(Error::Invalid(format!(
            "memory {} MiB, must be at least {MIN_MEMORY_MIB} MiB",
            spec.memory_mib
        )));
    }
    if spec.transport == TransportKind::Vsock {
        check_cid(spec.vsock_cid)?;
    }
    if let Some(memory) = &spec.memory_file {
        check_path("memory file", memory)?;
        if memory.parent() != Some(spec.dir.as_path()) {
            return Err(Error::Invalid(format!(
                "memory file {} must be directly in the VM directory {}",
                memory.display(),
                spec.dir.display()
            )));
        }
    }
    let mut ids = HashSet::new();
    for disk in &spec.disks {
        check_name("disk id", &disk.id)?;
        check_path(&format!("disk {}", disk.id), &disk.path)?;
        if !ids.insert(disk.id.as_str()) {
            return Err(Error::Invalid(format!("disk id {} is used twice", disk.id)));
        }
    }
    if let Some(net) = &spec.net {
        let tap_ok = !net.tap.is_empty()
            && net.tap.len() <= 15
            && net
                .tap
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !tap_ok {
            return Err(Error::Invalid(format!(
                "TAP name {:?} must be 1-15 of [A-Za-z0-9._-]",
                net.tap
            )));
        }
        if !is_mac(&net.mac) {
            return Err(Error::Invalid(format!(
                "MAC address {:?} must look like 52:54:00:12:34:56",
                net.mac
            )));
        }
    }
    Ok(())
}

/// Checks that a driver's Unix socket paths under the VM directory are usable (absolute, short
/// enough for `sun_path`).
pub fn check_sockets(sockets: &[&Path]) -> Result<()> {
    for socket in sockets {
        check_socket_path(socket)
            .map_err(|e| Error::Invalid(format!("{e}; use a shorter VM directory")))?;
    }
    Ok(())
}

/// A guest CID must be 3 or above (0-2 are the hypervisor, local and host) and not `u32::MAX`.
pub fn check_cid(cid: u32) -> Result<()> {
    if cid < 3 || cid == u32::MAX {
        return Err(Error::Invalid(format!(
            "vsock CID {cid} is reserved, use 3 or above"
        )));
    }
    Ok(())
}

/// Ids end up in VMM option strings, JSON device ids and file names: keep them to a safe alphabet.
pub fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "{what} {name:?} must be 1-64 of [A-Za-z0-9_-]"
        )))
    }
}

/// A path a VMM is given: absolute, UTF-8, and free of the option separator `,`.
pub fn check_path(what: &str, path: &Path) -> Result<()> {
    if !path.is_absolute() {
        return Err(Error::Invalid(format!(
            "{what} path {} must be absolute",
            path.display()
        )));
    }
    let Some(text) = path.to_str() else {
        return Err(Error::Invalid(format!(
            "{what} path {} is not UTF-8",
            path.display()
        )));
    };
    if text.contains(',') {
        return Err(Error::Invalid(format!(
            "{what} path {text} must not contain `,` (the VMM's option separator)"
        )));
    }
    Ok(())
}

/// Whether `mac` is six colon-separated hex octets.
pub fn is_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Every file the VMM will open must exist before it starts: the VMM's own error is less clear.
pub fn check_inputs(spec: &VmSpec) -> Result<()> {
    if !spec.dir.is_dir() {
        return Err(Error::Invalid(format!(
            "VM directory {} does not exist",
            spec.dir.display()
        )));
    }
    let mut files = vec![("kernel", &spec.kernel), ("initramfs", &spec.initramfs)];
    files.extend(spec.disks.iter().map(|d| ("disk", &d.path)));
    for (what, path) in files {
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "{what} {} does not exist or is not a file",
                path.display()
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::vmm::{DiskFormat, DiskSpec, NetSpec};
    use std::path::PathBuf;

    /// A valid spec rooted at `/run/platinum/sbx1`.
    pub(crate) fn spec() -> VmSpec {
        VmSpec {
            id: "sbx1".to_string(),
            dir: PathBuf::from("/run/platinum/sbx1"),
            kernel: PathBuf::from("/var/lib/platinum/images/vmlinux"),
            initramfs: PathBuf::from("/var/lib/platinum/images/initrd.img"),
            cmdline: "console=ttyS0 quiet".to_string(),
            disks: vec![DiskSpec {
                id: "rootfs".to_string(),
                path: PathBuf::from("/run/platinum/sbx1/rootfs.raw"),
                format: DiskFormat::Raw,
                readonly: false,
                volume_slot: None,
            }],
            vcpus: 2,
            memory_mib: 512,
            memory_file: None,
            transport: TransportKind::VirtioSerial,
            vsock_cid: 3,
            console_log: PathBuf::from("/run/platinum/sbx1/console.log"),
            net: None,
            share: None,
        }
    }

    fn invalid(spec: &VmSpec) -> String {
        match validate(spec) {
            Err(Error::Invalid(msg)) => msg,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn the_example_spec_is_valid() {
        validate(&spec()).expect("valid");
    }

    #[test]
    fn relative_and_escaping_paths_are_rejected() {
        let mut s = spec();
        s.dir = PathBuf::from("run/sbx1");
        assert!(invalid(&s).contains("absolute"));
        let mut s = spec();
        s.dir = PathBuf::from("/run/platinum/../etc");
        assert!(invalid(&s).contains(".."));
        let mut s = spec();
        s.kernel = PathBuf::from("vmlinux");
        assert!(invalid(&s).contains("kernel"));
        let mut s = spec();
        s.disks[0].path = PathBuf::from("/run/a,b.raw");
        assert!(invalid(&s).contains("`,`"));
    }

    #[test]
    fn bad_devices_are_rejected() {
        let mut s = spec();
        s.disks.push(s.disks[0].clone());
        assert!(invalid(&s).contains("twice"));
        let mut s = spec();
        s.disks[0].id = "root fs".to_string();
        assert!(invalid(&s).contains("disk id"));
        let mut s = spec();
        s.transport = TransportKind::Vsock;
        s.vsock_cid = 2;
        assert!(invalid(&s).contains("CID"));
        let mut s = spec();
        s.vcpus = 0;
        assert!(invalid(&s).contains("vcpus"));
        let mut s = spec();
        s.memory_mib = 16;
        assert!(invalid(&s).contains("memory"));
        let mut s = spec();
        s.memory_file = Some(PathBuf::from("/elsewhere/memory"));
        assert!(invalid(&s).contains("directly in the VM directory"));
        let mut s = spec();
        s.memory_file = Some(s.dir.join("memory"));
        assert!(validate(&s).is_ok());
        let mut s = spec();
        s.net = Some(NetSpec {
            tap: "tap-with-a-very-long-name".to_string(),
            mac: "52:54:00:00:00:01".to_string(),
        });
        assert!(invalid(&s).contains("TAP"));
        let mut s = spec();
        s.net = Some(NetSpec {
            tap: "sbx1".to_string(),
            mac: "52:54:00:00:00".to_string(),
        });
        assert!(invalid(&s).contains("MAC"));
        let mut s = spec();
        s.id = "a,b".to_string();
        assert!(invalid(&s).contains("VM id"));
    }

    #[test]
    fn missing_inputs_are_invalid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = spec();
        spec.dir = dir.path().to_path_buf();
        spec.kernel = dir.path().join("vmlinux");
        match check_inputs(&spec) {
            Err(Error::Invalid(msg)) => assert!(msg.contains("kernel"), "{msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
        spec.dir = dir.path().join("absent");
        assert!(
            matches!(check_inputs(&spec), Err(Error::Invalid(msg)) if msg.contains("directory"))
        );
    }
}
