//! What the host agent puts into a snapshot directory and takes back out of it.
//!
//! [`super::HostAgent::save`] writes the VMM's own files (QEMU: `vmstate`; Cloud Hypervisor:
//! `config.json`, `state.json`, `memory-ranges`), the driver's `vm.json`, one `<disk id>.disk` per
//! disk and [`HOST_FILE`] (what the host needs to run the VM again: template, how its disks were
//! made, whether it had a network device). [`super::HostAgent::restore`] boots a VM from such a
//! directory, either as the same sandbox again (resume from disk, rollback) or as a new one (a
//! restored snapshot, a fork), which then takes on its own identity in the guest
//! (`reidentify`: hostname, MAC and address, a reseeded RNG).
//!
//! The directory is the caller's: the host never signs, hashes or deletes it. Disks are hard
//! links when the VM is gone afterwards (nothing writes them any more, nothing is copied) and
//! copies (reflink, else sparse) when it runs on.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::vmm::DiskFormat;

/// The host's record inside a snapshot directory.
pub const HOST_FILE: &str = "host.json";

/// What becomes of the VM once its state is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterSave {
    /// It goes on (snapshot, checkpoint, fork): its vCPUs stopped only while the state was
    /// written (a VM that was paused before stays paused).
    Continue,
    /// Its VMM exits and its RAM is freed (pause to disk); its disks and network lease stay.
    Exit,
}

/// What a save did and cost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SaveReport {
    /// How long the vCPUs were stopped for it, milliseconds (0 when the VM was paused anyway).
    pub paused_ms: u64,
    /// How long the VMM took to write the device state and memory, milliseconds.
    pub state_ms: u64,
    /// How long the disks took to copy or link, milliseconds.
    pub disks_ms: u64,
    /// Every file now in the directory.
    pub files: Vec<String>,
}

/// One disk in a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDisk {
    /// Device id (`rootfs`, ...).
    pub id: String,
    /// Its format.
    pub format: DiskFormat,
}

impl SavedDisk {
    /// Its file name, in a snapshot and in a sandbox directory alike.
    pub fn file_name(&self) -> String {
        disk_file_name(&self.id)
    }
}

/// `<disk id>.disk`.
pub fn disk_file_name(id: &str) -> String {
    format!("{id}.disk")
}

/// [`HOST_FILE`]'s content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedVm {
    /// Template (image) the VM was made from.
    pub template: String,
    /// How its root disk was made (`reflink`, `qcow2`, `copy`).
    pub disk_clone: String,
    /// Its disks, root first.
    pub disks: Vec<SavedDisk>,
    /// Whether it had a network device (a restored VM has the same devices).
    pub network: bool,
    /// Whether its traffic could leave the host.
    pub internet: bool,
}

impl SavedVm {
    /// Writes [`HOST_FILE`] into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(HOST_FILE);
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Invalid(e.to_string()))?;
        crate::private_file::write(&path, &json).ctx(|| format!("writing {}", path.display()))
    }

    /// Reads [`HOST_FILE`] from `dir`.
    pub fn read(dir: &Path) -> Result<SavedVm> {
        let path = dir.join(HOST_FILE);
        let raw = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
        serde_json::from_slice(&raw)
            .map_err(|e| Error::Invalid(format!("{} is malformed: {e}", path.display())))
    }
}

/// Which sandbox a restored VM is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RestoreAs {
    /// The sandbox the snapshot was taken of, in its own directory, with its lease (resume from
    /// disk, rollback). A VM it still runs is replaced.
    Same,
    /// A new sandbox (restore of a snapshot, fork): new directory, new lease, new identity in
    /// the guest. `internet` as in [`super::CreateVm::internet`] (the snapshot's when `None`).
    New {
        /// Internet access.
        internet: Option<bool>,
    },
}

/// Parameters of [`super::HostAgent::restore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreVm {
    /// Sandbox id of the restored VM.
    pub id: String,
    /// The snapshot directory.
    pub snapshot_dir: PathBuf,
    /// Environment variables for new sessions (as at create).
    pub env: BTreeMap<String, String>,
    /// Same or new sandbox.
    pub restore_as: RestoreAs,
    /// A new sandbox's egress rules (the same sandbox keeps its own).
    #[serde(default)]
    pub egress: crate::net::EgressRules,
}

/// Every regular file's name in `dir`, sorted.
pub fn list_files(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        if entry.file_type().is_ok_and(|t| t.is_file())
            && let Ok(name) = entry.file_name().into_string()
        {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_records_round_trip_and_files_are_listed() {
        let dir = tempfile::tempdir().unwrap();
        let saved = SavedVm {
            template: "base".into(),
            disk_clone: "qcow2".into(),
            disks: vec![SavedDisk {
                id: "rootfs".into(),
                format: DiskFormat::Qcow2,
            }],
            network: true,
            internet: false,
        };
        saved.write(dir.path()).unwrap();
        assert_eq!(SavedVm::read(dir.path()).unwrap(), saved);
        assert_eq!(saved.disks[0].file_name(), "rootfs.disk");
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("vmstate"), b"x").unwrap();
        assert_eq!(list_files(dir.path()).unwrap(), ["host.json", "vmstate"]);
        std::fs::write(dir.path().join(HOST_FILE), b"{").unwrap();
        assert!(matches!(SavedVm::read(dir.path()), Err(Error::Invalid(_))));
    }
}
