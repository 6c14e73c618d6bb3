//! Volumes on the local host: ext4 images under `<data>/volumes/`, attached to sandboxes.
//!
//! A volume is a raw image holding an empty ext4 filesystem made by `mkfs.ext4` on the host
//! (the host never mounts a filesystem a guest wrote: it creates, attaches and deletes the
//! file, and reads and writes files in it only through a sandboxed `debugfs`,
//! [`crate::volume_files`]). Attaching records the volume in the sandbox's `sandbox.json`, at the lowest free slot,
//! so every later boot and restore of that sandbox has it; when the sandbox's VM runs it is
//! hot-added too. Detaching does the reverse. Which sandbox may attach which volume, and how
//! often, is the engine's business.

use std::path::PathBuf;

use super::{LocalHost, read_record, write_record};
use crate::error::{Error, IoContext, Result};
use crate::tool::Tool;
use crate::vmm::{DiskFormat, DiskSpec, MAX_VOLUMES, spec};
use crate::volume_files::VolumeImage;

/// The owner of a new volume's root directory: the templates' `user` account, so the default
/// user can write to a fresh volume without `sudo`.
const ROOT_OWNER: &str = "root_owner=1000:1000";

impl LocalHost {
    fn volumes_dir(&self) -> PathBuf {
        self.config.data_dir.join("volumes")
    }

    /// The image of volume `id` (whose name is checked, so it cannot leave the directory).
    fn volume_path(&self, id: &str) -> Result<PathBuf> {
        spec::check_name("volume id", id)?;
        Ok(self.volumes_dir().join(format!("{id}.ext4")))
    }

    /// Volume `id`'s image, for file operations on it (scratch files go next to it).
    pub(super) fn volume_image(&self, id: &str) -> Result<VolumeImage> {
        let path = self.volume_path(id)?;
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "volume {id} has no image on this host"
            )));
        }
        Ok(VolumeImage::new(path, self.volumes_dir()))
    }

    pub(super) async fn make_volume(&self, id: &str, size_mib: u64) -> Result<()> {
        let path = self.volume_path(id)?;
        crate::private_file::create_dir(&self.volumes_dir())
            .ctx(|| format!("creating {}", self.volumes_dir().display()))?;
        if path.exists() {
            return Err(Error::Invalid(format!("volume {id} exists already")));
        }
        let partial = path.with_extension("partial");
        std::fs::File::create_new(&partial)
            .and_then(|f| f.set_len(size_mib << 20))
            .ctx(|| format!("creating the sparse file {}", partial.display()))?;
        let made = Tool::new("mkfs.ext4", "mkfs.ext4")?
            .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", "platinum-vol"])
            .arg("-E")
            .arg(format!(
                "{ROOT_OWNER},lazy_itable_init=1,lazy_journal_init=1"
            ))
            .arg(&partial)
            .output()
            .await;
        let finished = made.and_then(|_| {
            std::fs::rename(&partial, &path)
                .ctx(|| format!("moving {} into place", partial.display()))
        });
        match finished {
            Ok(()) => {
                tracing::info!(volume = id, size_mib, "volume created");
                Ok(())
            }
            Err(e) => {
                let _ = std::fs::remove_file(&partial);
                Err(e)
            }
        }
    }

    pub(super) async fn remove_volume(&self, id: &str) -> Result<()> {
        let path = self.volume_path(id)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }

    pub(super) async fn attach(&self, id: &str, volume: &str, readonly: bool) -> Result<u32> {
        let path = self.volume_path(volume)?;
        if !path.is_file() {
            return Err(Error::Invalid(format!(
                "volume {volume} has no image on this host"
            )));
        }
        let dir = self.dir(id)?;
        let mut record = read_record(&dir, id)?;
        if record.spec.disks.iter().any(|d| d.id == volume) {
            return Err(Error::Invalid(format!(
                "volume {volume} is attached to sandbox {id} already"
            )));
        }
        let slot = (0..MAX_VOLUMES)
            .find(|s| !record.spec.disks.iter().any(|d| d.volume_slot == Some(*s)))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "sandbox {id} has {MAX_VOLUMES} volumes attached, the most it can have"
                ))
            })?;
        let disk = DiskSpec {
            id: volume.to_string(),
            path,
            format: DiskFormat::Raw,
            readonly,
            volume_slot: Some(slot),
        };
        if let Ok(running) = self.slot(id) {
            running.vm.add_disk(&disk).await?;
        }
        record.spec.disks.push(disk);
        write_record(&record)?;
        tracing::info!(sandbox = id, volume, slot, readonly, "volume attached");
        Ok(slot)
    }

    pub(super) async fn detach(&self, id: &str, volume: &str) -> Result<()> {
        let dir = self.dir(id)?;
        let mut record = read_record(&dir, id)?;
        if !record
            .spec
            .disks
            .iter()
            .any(|d| d.id == volume && d.volume_slot.is_some())
        {
            return Err(Error::Invalid(format!(
                "volume {volume} is not attached to sandbox {id}"
            )));
        }
        if let Ok(running) = self.slot(id) {
            running.vm.remove_disk(volume).await?;
        }
        record.spec.disks.retain(|d| d.id != volume);
        write_record(&record)?;
        tracing::info!(sandbox = id, volume, "volume detached");
        Ok(())
    }

    /// Refuses `what` for sandbox `id` while it has volumes attached: a snapshot, fork or archive
    /// would carry a device whose data is not part of it.
    pub(super) fn require_no_volumes(&self, id: &str, what: &str) -> Result<()> {
        let record = read_record(&self.dir(id)?, id)?;
        let attached: Vec<&str> = record
            .spec
            .disks
            .iter()
            .filter(|d| d.volume_slot.is_some())
            .map(|d| d.id.as_str())
            .collect();
        if attached.is_empty() {
            return Ok(());
        }
        Err(Error::Invalid(format!(
            "sandbox {id} has volumes attached ({}); detach them before {what}",
            attached.join(", ")
        )))
    }
}
