//! The runtime layout of one Cloud Hypervisor VM inside its directory.
//!
//! ```text
//! <dir>/ch-api.sock        the VMM's REST API (`--api-socket path=…`)
//!       ch-api.sock.lock   CH (v53+) flocks it and leaves it behind on exit
//!       vsock.sock         the hybrid vsock socket CH binds (`vsock.socket`); guest-initiated
//!                          connections go to `vsock.sock_<port>`
//!       vmm.pid            written by the driver (CH has no pid file option), so a restarted
//!                          server can find and kill a VMM left over from its previous run
//!       cloud-hypervisor.log   the VMM's stdout and stderr
//!       restore-source/    a restore's rewritten `config.json` plus links to the snapshot's
//!                          other files; exists only while `vm.restore` runs
//! ```
//!
//! Before a VMM starts, the driver removes every runtime file: CH binds the vsock socket without
//! unlinking a stale one (`AddrInUse`), and a stale `.lock` from a killed VMM makes the next
//! start fail with `ApiSocketInUse`. The console log is wherever the spec says.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::vmm::{VmSpec, spec};

/// Fixed file names inside a VM directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChPaths {
    /// The VM directory.
    pub dir: PathBuf,
    /// API socket.
    pub api: PathBuf,
    /// The lock file CH keeps next to the API socket.
    pub api_lock: PathBuf,
    /// Hybrid vsock socket.
    pub vsock: PathBuf,
    /// The VMM's pid.
    pub pid_file: PathBuf,
    /// The VMM's stdout/stderr.
    pub log: PathBuf,
    /// Directory a restore reads its snapshot from.
    pub restore_source: PathBuf,
}

impl ChPaths {
    /// The layout for directory `dir`.
    pub fn new(dir: &Path) -> ChPaths {
        ChPaths {
            dir: dir.to_path_buf(),
            api: dir.join("ch-api.sock"),
            api_lock: dir.join("ch-api.sock.lock"),
            vsock: dir.join("vsock.sock"),
            pid_file: dir.join("vmm.pid"),
            log: dir.join("cloud-hypervisor.log"),
            restore_source: dir.join("restore-source"),
        }
    }

    /// What a dead VMM leaves behind.
    pub fn runtime_files(&self) -> [&Path; 4] {
        [&self.api, &self.api_lock, &self.vsock, &self.pid_file]
    }

    /// Removes the runtime files; missing ones are fine.
    pub fn remove_runtime_files(&self) {
        crate::vmm::remove_runtime_files(&self.runtime_files());
    }
}

/// Checks `spec` (shared checks plus this layout's socket paths) and returns the layout.
pub fn validate(spec: &VmSpec) -> Result<ChPaths> {
    spec::validate(spec)?;
    if spec.memory_file.is_some() {
        return Err(Error::Unsupported(
            "Cloud Hypervisor keeps guest RAM anonymous and saves it into its snapshots; a memory file is a QEMU option"
                .to_string(),
        ));
    }
    let paths = ChPaths::new(&spec.dir);
    spec::check_sockets(&[&paths.api, &paths.vsock])?;
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::vmm::spec::tests::spec;

    #[test]
    fn layout_and_validation() {
        let paths = validate(&spec()).expect("valid");
        assert_eq!(paths.api, PathBuf::from("/run/platinum/sbx1/ch-api.sock"));
        assert_eq!(
            paths.api_lock,
            PathBuf::from("/run/platinum/sbx1/ch-api.sock.lock")
        );
        assert_eq!(paths.vsock, PathBuf::from("/run/platinum/sbx1/vsock.sock"));
        let mut s = spec();
        s.dir = PathBuf::from(format!("/run/{}", "d".repeat(100)));
        assert!(
            matches!(validate(&s), Err(Error::Invalid(msg)) if msg.contains("shorter VM directory"))
        );
    }

    #[test]
    fn runtime_files_are_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = ChPaths::new(dir.path());
        for file in paths.runtime_files() {
            std::fs::write(file, b"").expect("write");
        }
        std::fs::write(&paths.log, b"kept").expect("log");
        paths.remove_runtime_files();
        assert!(paths.runtime_files().iter().all(|p| !p.exists()));
        assert!(paths.log.exists(), "logs outlive the VMM");
        paths.remove_runtime_files();
    }
}
