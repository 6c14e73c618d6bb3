//! Where sandboxes' guest RAM lives: anonymous shared memory, or a file in each sandbox's
//! directory (QEMU's `memory-backend-file,share=on`).
//!
//! With a file, a snapshot, checkpoint, fork or pause to disk saves only the device state (the
//! file is the RAM) and clones the file while the vCPUs are stopped; on a filesystem with reflinks
//! (XFS with `reflink=1`, btrfs) that clone shares every block and takes milliseconds, however big
//! the guest. Without reflinks the clone would be a full copy, slower than QEMU streaming the RAM,
//! so [`MemoryBacking::Auto`] picks a file only where the data directory reflinks, and only for
//! QEMU (Cloud Hypervisor saves its own RAM).
//!
//! The cost of a file: the kernel writes the guest's dirty RAM back to the data disk (at most
//! once per dirty-expiry interval per page), and a clone first flushes what is dirty.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::disk::reflink;
use crate::error::{IoContext, Result};
use crate::vmm::VmmKind;

/// Name of the memory file in a sandbox's directory.
pub const MEMORY_FILE_NAME: &str = "memory";

/// The operator's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryBacking {
    /// A file where the VMM is QEMU and the data directory reflinks, else anonymous.
    #[default]
    Auto,
    /// Anonymous shared memory (memfd); snapshots stream the RAM.
    Anonymous,
    /// A file in the sandbox's directory (QEMU only), reflinks or not.
    File,
}

/// What [`resolve`] decided, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Guest RAM in a file.
    pub in_file: bool,
    /// One line for logs and `platinum doctor`.
    pub reason: String,
}

/// Decides where guest RAM lives for VMs of `vmm` whose directories are under `sandboxes`.
pub fn resolve(choice: MemoryBacking, vmm: VmmKind, sandboxes: &Path) -> Result<MemoryPlan> {
    let plan = |in_file: bool, reason: &str| MemoryPlan {
        in_file,
        reason: reason.to_string(),
    };
    Ok(match (choice, vmm) {
        (MemoryBacking::Anonymous, _) => plan(false, "anonymous memory, as configured"),
        (_, VmmKind::CloudHypervisor) => plan(
            false,
            "anonymous memory: Cloud Hypervisor saves guest RAM into its snapshots itself",
        ),
        (MemoryBacking::File, VmmKind::Qemu) => plan(true, "a memory file, as configured"),
        (MemoryBacking::Auto, VmmKind::Qemu) => {
            if reflinks(sandboxes)? {
                plan(
                    true,
                    "a memory file: the data directory reflinks, so snapshots clone RAM in place",
                )
            } else {
                plan(
                    false,
                    "anonymous memory: the data directory cannot reflink (use XFS with reflink=1 or btrfs for in-place RAM snapshots)",
                )
            }
        }
    })
}

/// Whether files in `dir` can be reflinked: clones a small probe file.
pub fn reflinks(dir: &Path) -> Result<bool> {
    let probe = dir.join(".reflink-probe");
    let clone = dir.join(".reflink-probe-clone");
    for stale in [&probe, &clone] {
        let _ = std::fs::remove_file(stale);
    }
    std::fs::write(&probe, [0x5a; 4096]).ctx(|| format!("writing {}", probe.display()))?;
    let result = reflink(&probe, &clone);
    for file in [&probe, &clone] {
        let _ = std::fs::remove_file(file);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_choices_win_and_cloud_hypervisor_stays_anonymous() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        assert!(
            !resolve(MemoryBacking::Anonymous, VmmKind::Qemu, d)
                .unwrap()
                .in_file
        );
        assert!(
            resolve(MemoryBacking::File, VmmKind::Qemu, d)
                .unwrap()
                .in_file
        );
        for choice in [MemoryBacking::Auto, MemoryBacking::File] {
            assert!(
                !resolve(choice, VmmKind::CloudHypervisor, d)
                    .unwrap()
                    .in_file
            );
        }
    }

    #[test]
    fn auto_follows_whether_the_directory_reflinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let can = reflinks(dir.path()).expect("probe");
        let plan = resolve(MemoryBacking::Auto, VmmKind::Qemu, dir.path()).unwrap();
        assert_eq!(plan.in_file, can, "{}", plan.reason);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "probe files left"
        );
    }
}
