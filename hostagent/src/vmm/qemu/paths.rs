//! The runtime layout of one QEMU VM inside its directory, and the QEMU-specific part of
//! validating a [`VmSpec`] before anything is started.
//!
//! Every socket, the pid file and the logs live directly in `spec.dir` under fixed names, so a
//! directory fully describes a VM's footprint and cleanup is "remove these names". The checks
//! every driver shares (paths, ids, sizes, devices) are in [`crate::vmm::spec`]; this module adds
//! the socket paths of its layout, which must fit in `sun_path`.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::vmm::{VmSpec, spec};

/// Fixed file names inside a VM directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPaths {
    /// The VM directory.
    pub dir: PathBuf,
    /// QMP control socket.
    pub qmp: PathBuf,
    /// Chardev socket of the agent's virtio-serial port.
    pub agent: PathBuf,
    /// vhost-user socket between QEMU and vhost-device-vsock.
    pub vhost_vsock: PathBuf,
    /// Hybrid vsock socket for host applications.
    pub vsock: PathBuf,
    /// QEMU's pid file.
    pub pid_file: PathBuf,
    /// QEMU's stdout/stderr.
    pub qemu_log: PathBuf,
    /// vhost-device-vsock's stdout/stderr.
    pub vsock_log: PathBuf,
    /// vhost-user socket between QEMU and virtiofsd (the host share).
    pub virtiofsd: PathBuf,
    /// virtiofsd's stdout/stderr.
    pub virtiofsd_log: PathBuf,
}

impl VmPaths {
    /// The layout for directory `dir`.
    pub fn new(dir: &Path) -> VmPaths {
        VmPaths {
            dir: dir.to_path_buf(),
            qmp: dir.join("qmp.sock"),
            agent: dir.join("agent.sock"),
            vhost_vsock: dir.join("vhost-vsock.sock"),
            vsock: dir.join("vsock.sock"),
            pid_file: dir.join("vmm.pid"),
            qemu_log: dir.join("qemu.log"),
            vsock_log: dir.join("vhost-device-vsock.log"),
            virtiofsd: dir.join("virtiofsd.sock"),
            virtiofsd_log: dir.join("virtiofsd.log"),
        }
    }

    /// Every socket and the pid file: what a dead VM leaves behind.
    pub fn runtime_files(&self) -> [&Path; 6] {
        [
            &self.qmp,
            &self.agent,
            &self.vhost_vsock,
            &self.vsock,
            &self.virtiofsd,
            &self.pid_file,
        ]
    }

    /// Removes the sockets and the pid file; missing ones are fine.
    pub fn remove_runtime_files(&self) {
        crate::vmm::remove_runtime_files(&self.runtime_files());
    }
}

/// Checks `spec` and returns its runtime layout.
pub fn validate(spec: &VmSpec) -> Result<VmPaths> {
    spec::validate(spec)?;
    let paths = VmPaths::new(&spec.dir);
    spec::check_sockets(&[
        &paths.qmp,
        &paths.agent,
        &paths.vhost_vsock,
        &paths.vsock,
        &paths.virtiofsd,
    ])?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::vmm::spec::tests::spec;

    #[test]
    fn valid_spec_gives_the_layout() {
        let paths = validate(&spec()).expect("valid");
        assert_eq!(paths.qmp, PathBuf::from("/run/platinum/sbx1/qmp.sock"));
        assert_eq!(paths.vsock, PathBuf::from("/run/platinum/sbx1/vsock.sock"));
        assert_eq!(paths.pid_file, PathBuf::from("/run/platinum/sbx1/vmm.pid"));
    }

    #[test]
    fn shared_checks_apply() {
        let mut s = spec();
        s.vcpus = 0;
        assert!(matches!(validate(&s), Err(Error::Invalid(msg)) if msg.contains("vcpus")));
    }

    #[test]
    fn overlong_socket_paths_are_rejected() {
        let mut s = spec();
        s.dir = PathBuf::from(format!("/run/{}", "d".repeat(100)));
        match validate(&s) {
            Err(Error::Invalid(msg)) => assert!(msg.contains("shorter VM directory"), "{msg}"),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }
}
