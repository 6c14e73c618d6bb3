//! virtiofsd: the virtio-fs backend serving a VM's host share ([`crate::vmm::VmSpec::share`]).
//!
//! One daemon per VM, started before QEMU on a socket bound here (`<dir>/virtiofsd.sock`, given
//! as `--fd`), exporting only the share
//! directory. It runs as root (so guest files of any owner keep their owner on the host) inside
//! its own sandbox: mount, pid and network namespaces with the share as its root, a seccomp
//! filter that kills on anything unexpected, and without `CAP_MKNOD`, so a guest cannot create
//! device nodes on the host. `--migration-mode find-paths` puts the guest's open files into the
//! VM's migration stream by path, so a pause to disk (whose restore runs a new virtiofsd on the
//! same directory) finds them again; a snapshot restored elsewhere finds another directory, and
//! files the guest had open there answer with errors (`--migration-on-error guest-error`)
//! instead of failing the restore. The daemon exits when QEMU disconnects, and is killed with
//! the VM regardless.

use std::path::Path;

use crate::error::Result;
use crate::process::ProcessSpec;

use super::daemon::SocketDaemon;
use super::paths::VmPaths;

/// The program's name.
pub const PROGRAM: &str = "virtiofsd";

/// Starts virtiofsd exporting `share` on a listening socket made here (virtiofsd serves one
/// connection, so none may be spent on a readiness probe).
pub fn start(program: &Path, share: &Path, paths: &VmPaths) -> Result<SocketDaemon> {
    let spec = ProcessSpec {
        name: PROGRAM.to_string(),
        program: program.to_path_buf(),
        args: args(share),
        log: paths.virtiofsd_log.clone(),
        inherit: Vec::new(),
    };
    SocketDaemon::start_listening(spec, &paths.virtiofsd, "--fd=")
}

fn args(share: &Path) -> Vec<String> {
    [
        "--shared-dir",
        &share.display().to_string(),
        "--sandbox",
        "namespace",
        "--seccomp",
        "kill",
        "--modcaps=-mknod",
        "--cache",
        "auto",
        "--inode-file-handles=never",
        "--migration-mode",
        "find-paths",
        "--migration-on-error",
        "guest-error",
        "--log-level",
        "warn",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_daemon_exports_only_the_share_sandboxed_and_without_mknod() {
        let a = args(Path::new("/var/lib/platinum/sandboxes/sbx1/share"));
        let joined = a.join(" ");
        assert!(joined.contains("--shared-dir /var/lib/platinum/sandboxes/sbx1/share"));
        assert!(joined.contains("--sandbox namespace"));
        assert!(joined.contains("--seccomp kill"));
        assert!(a.contains(&"--modcaps=-mknod".to_string()));
        assert!(joined.contains("--migration-mode find-paths"));
    }
}
