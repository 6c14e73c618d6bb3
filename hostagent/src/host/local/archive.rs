//! Archive and restore of the local host's sandboxes (see [`crate::archive`] for the format).
//!
//! Archive (the VM must not run): upload `sandbox.json` and every disk, a qcow2 overlay first
//! flattened into a raw file next to it (`qemu-img convert`, removed afterwards), then each extra
//! directory's files, where a hard link of one of the sandbox's disks is recorded as a link
//! instead of being stored twice. The local copy stays: the caller removes it
//! ([`crate::host::HostAgent::destroy`]) once it has kept the archive.
//!
//! Restore: everything is downloaded into `<data>/restoring/<id>` (and the extra directories),
//! checked chunk by chunk; the sandbox's record is rewritten for this host (its directory, this
//! host's kernel and initramfs of its template, raw disks, its old address when it is free here,
//! else a new one that a memory restore then gives the guest), and only then is the directory
//! renamed into place. A restore that fails leaves nothing behind.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::share::SHARE_IMAGE;
use super::{LocalHost, RECORD_FILE, VmRecord, write_record};
use crate::archive::chunks::{self, Counts, check_name};
use crate::archive::{
    Archive, ArchiveDir, Archived, ArchivedFile, ArchivedSet, CHUNK_SIZE, Restored, SANDBOX_SET,
    SNAPSHOT_SET, TransferReport,
};
use crate::disk::{flatten_to_raw, same_file};
use crate::error::{Error, IoContext, Result};
use crate::host::snapshot::{HOST_FILE, SavedVm, disk_file_name, list_files};
use crate::vmm::DiskFormat;
use crate::vmm::manifest::{MANIFEST_FILE as VM_MANIFEST_FILE, read_manifest, write_manifest};

/// Where restores are assembled, under the data directory.
const RESTORING_DIR: &str = "restoring";

/// Removes restores a stopped server left half done.
pub(super) fn remove_unfinished(data: &Path) {
    let dir = data.join(RESTORING_DIR);
    if let Err(e) = std::fs::remove_dir_all(&dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(dir = %dir.display(), error = %e, "removing unfinished restores");
    }
}

fn report(counts: &Counts, sets: &[ArchivedSet], started: Instant) -> TransferReport {
    let all = sets.iter().flat_map(|s| &s.files);
    TransferReport {
        files: all.clone().count() as u64,
        bytes_total: all.map(|f| f.size).sum(),
        chunks_moved: counts.moved.load(Ordering::Relaxed),
        chunks_reused: counts.reused.load(Ordering::Relaxed),
        chunks_zero: counts.zero.load(Ordering::Relaxed),
        bytes_moved: counts.bytes.load(Ordering::Relaxed),
        ms: started.elapsed().as_millis().try_into().unwrap_or(u64::MAX),
    }
}

impl LocalHost {
    pub(super) async fn archive_sandbox(&self, id: &str, extra: &[ArchiveDir]) -> Result<Archived> {
        let dir = self.dir(id)?;
        self.require_no_vm(id, "stopped")?;
        self.require_no_volumes(id, "archiving it")?;
        let record = super::read_record(&dir, id)?;
        let store = self.archive_store.clone();
        let started = Instant::now();
        let counts = Counts::default();
        tracing::info!(sandbox = %id, store = %store.describe(), "archiving");

        let mut sandbox = ArchivedSet {
            name: SANDBOX_SET.into(),
            files: vec![
                chunks::upload_file(&store, &dir.join(RECORD_FILE), RECORD_FILE, &counts).await?,
            ],
            disk_links: Vec::new(),
        };
        for disk in &record.spec.disks {
            let name = disk_file_name(&disk.id);
            let file = self
                .upload_disk(&disk.path, disk.format, &name, &dir, &counts)
                .await?;
            sandbox.files.push(file);
        }
        // The share's image, consistent once unmounted (nothing writes it while stopped).
        if dir.join(SHARE_IMAGE).is_file() {
            self.release_share(&dir).await?;
            let image = dir.join(SHARE_IMAGE);
            sandbox
                .files
                .push(chunks::upload_file(&store, &image, SHARE_IMAGE, &counts).await?);
        }
        let mut sets = vec![sandbox];
        for extra in extra {
            if extra.set == SANDBOX_SET {
                return Err(Error::Invalid(format!(
                    "{SANDBOX_SET:?} is the sandbox's own set"
                )));
            }
            let mut set = ArchivedSet {
                name: extra.set.clone(),
                files: Vec::new(),
                disk_links: Vec::new(),
            };
            for name in list_files(&extra.dir)? {
                let path = extra.dir.join(&name);
                if let Some(disk) = record.spec.disks.iter().find(|d| same_file(&d.path, &path)) {
                    set.disk_links.push((name, disk.id.clone()));
                    continue;
                }
                set.files
                    .push(chunks::upload_file(&store, &path, &name, &counts).await?);
            }
            sets.push(set);
        }
        let report = report(&counts, &sets, started);
        tracing::info!(sandbox = %id, ?report, "archived");
        Ok(Archived {
            archive: Archive {
                chunk_size: CHUNK_SIZE,
                sets,
            },
            report,
        })
    }

    /// Uploads the file at `path` as `name`; a qcow2 disk is flattened to raw first (into a
    /// temporary file in `scratch`, removed afterwards), so no base image is needed to use it.
    async fn upload_disk(
        &self,
        path: &Path,
        format: DiskFormat,
        name: &str,
        scratch: &Path,
        counts: &Counts,
    ) -> Result<ArchivedFile> {
        let store = &self.archive_store;
        match format {
            DiskFormat::Raw => chunks::upload_file(store, path, name, counts).await,
            DiskFormat::Qcow2 => {
                let flat = scratch.join(format!(".archive-{name}"));
                let _ = std::fs::remove_file(&flat);
                flatten_to_raw(self.config.disk.qemu_img.as_deref(), path, format, &flat).await?;
                let uploaded = chunks::upload_file(store, &flat, name, counts).await;
                let _ = std::fs::remove_file(&flat);
                uploaded
            }
        }
    }

    /// Uploads every file of snapshot directory `dir` as set [`SNAPSHOT_SET`], its qcow2 disks
    /// flattened to raw (a restore then needs no base image of this host). The directory stays.
    pub(super) async fn upload_snapshot_dir(&self, dir: &Path) -> Result<Archived> {
        let saved = SavedVm::read(dir)?;
        let started = Instant::now();
        let counts = Counts::default();
        let mut set = ArchivedSet {
            name: SNAPSHOT_SET.into(),
            files: Vec::new(),
            disk_links: Vec::new(),
        };
        for name in list_files(dir)? {
            let format = saved
                .disks
                .iter()
                .find(|d| d.file_name() == name)
                .map_or(DiskFormat::Raw, |d| d.format);
            let file = self
                .upload_disk(&dir.join(&name), format, &name, dir, &counts)
                .await?;
            set.files.push(file);
        }
        let sets = vec![set];
        let report = report(&counts, &sets, started);
        tracing::info!(dir = %dir.display(), ?report, "snapshot uploaded");
        Ok(Archived {
            archive: Archive {
                chunk_size: CHUNK_SIZE,
                sets,
            },
            report,
        })
    }

    /// Downloads set [`SNAPSHOT_SET`] of `archive` into `dir` (which must not exist), checking
    /// every chunk, and makes its records say the disks are raw. The directory appears whole or
    /// not at all; the files changed after download are reported for re-sealing.
    pub(super) async fn download_snapshot_dir(
        &self,
        archive: &Archive,
        dir: &Path,
    ) -> Result<Restored> {
        archive.check(SNAPSHOT_SET)?;
        let set = archive.set(SNAPSHOT_SET).expect("checked");
        if dir.exists() {
            return Err(Error::Invalid(format!("{} exists already", dir.display())));
        }
        let name = dir
            .file_name()
            .ok_or_else(|| Error::Invalid(format!("{} has no name", dir.display())))?;
        let staging = self
            .config
            .data_dir
            .join(RESTORING_DIR)
            .join(format!("snapshot-{}", name.to_string_lossy()));
        let store = self.archive_store.clone();
        let started = Instant::now();
        let counts = Counts::default();
        let downloaded = async {
            let _ = std::fs::remove_dir_all(&staging);
            crate::private_file::create_dir(&staging)
                .ctx(|| format!("creating {}", staging.display()))?;
            for file in &set.files {
                chunks::download_file(&store, file, &staging.join(&file.name), &counts).await?;
            }
            // The disks the upload flattened differ from what the manifest hashed, and so do
            // the records that now say they are raw.
            let mut changed: Vec<String> = SavedVm::read(&staging)?
                .disks
                .iter()
                .filter(|d| d.format == DiskFormat::Qcow2)
                .map(|d| d.file_name())
                .collect();
            changed.extend(self.mark_disks_raw(&staging)?);
            std::fs::rename(&staging, dir)
                .ctx(|| format!("moving {} to {}", staging.display(), dir.display()))?;
            Ok::<_, Error>(changed)
        }
        .await;
        let changed = match downloaded {
            Ok(changed) => changed,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&staging);
                return Err(e);
            }
        };
        let report = report(&counts, &archive.sets, started);
        tracing::info!(dir = %dir.display(), ?report, "snapshot downloaded");
        Ok(Restored {
            report,
            changed: vec![(SNAPSHOT_SET.into(), changed)],
        })
    }

    pub(super) async fn restore_archive_of(
        &self,
        id: &str,
        archive: &Archive,
        extra: &[ArchiveDir],
    ) -> Result<Restored> {
        archive.check(SANDBOX_SET)?;
        let dir = self.dir(id)?;
        self.require_no_vm(id, "archived")?;
        let staging = self.config.data_dir.join(RESTORING_DIR).join(id);
        let mut made: Vec<PathBuf> = vec![staging.clone()];
        let had_lease = self.network.holds(id);
        let restored = self
            .restore_into(id, archive, extra, &staging, &dir, &mut made)
            .await;
        if restored.is_err() {
            for path in made {
                let _ = std::fs::remove_dir_all(&path);
            }
            // The address the restore claimed goes back.
            if !had_lease {
                self.network.unclaim(id);
            }
        }
        restored
    }

    async fn restore_into(
        &self,
        id: &str,
        archive: &Archive,
        extra: &[ArchiveDir],
        staging: &Path,
        dir: &Path,
        made: &mut Vec<PathBuf>,
    ) -> Result<Restored> {
        let store = self.archive_store.clone();
        let started = Instant::now();
        let counts = Counts::default();
        let _ = std::fs::remove_dir_all(staging);
        std::fs::create_dir_all(staging).ctx(|| format!("creating {}", staging.display()))?;
        let sandbox = archive.set(SANDBOX_SET).expect("checked");
        for file in &sandbox.files {
            chunks::download_file(&store, file, &staging.join(&file.name), &counts).await?;
        }
        let record = self.rehome_record(id, staging, dir).await?;
        // Each further set into its directory, with the sandbox's (now raw) disks linked back
        // in, and its host record and the driver's record of the VM saying so.
        let mut changed = Vec::new();
        for set in archive.sets.iter().filter(|s| s.name != SANDBOX_SET) {
            let target = &extra
                .iter()
                .find(|e| e.set == set.name)
                .ok_or_else(|| {
                    Error::Invalid(format!("no directory for the archive's set {:?}", set.name))
                })?
                .dir;
            let _ = std::fs::remove_dir_all(target);
            crate::private_file::create_dir(target)
                .ctx(|| format!("creating {}", target.display()))?;
            made.push(target.clone());
            for file in &set.files {
                chunks::download_file(&store, file, &target.join(&file.name), &counts).await?;
            }
            changed.push((set.name.clone(), self.relink_disks(set, staging, target)?));
        }
        // The sandbox's directory appears whole or not at all.
        if dir.exists() {
            crate::process::kill_processes_mentioning(&dir.join(""));
            std::fs::remove_dir_all(dir)
                .ctx(|| format!("removing the leftover {}", dir.display()))?;
        }
        std::fs::rename(staging, dir)
            .ctx(|| format!("moving {} to {}", staging.display(), dir.display()))?;
        made.push(dir.to_path_buf());
        write_record(&record)?;
        let report = report(&counts, &archive.sets, started);
        tracing::info!(sandbox = %id, ?report, "restored from its archive");
        Ok(Restored { report, changed })
    }

    /// Links the sandbox's disks (downloaded into `staging`) into `target` where `set` had them,
    /// and makes the host record and the driver's record of the VM there say they are raw now.
    /// Returns the names of the files this changed.
    fn relink_disks(
        &self,
        set: &ArchivedSet,
        staging: &Path,
        target: &Path,
    ) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        for (name, disk_id) in &set.disk_links {
            check_name(name)?;
            let disk = staging.join(disk_file_name(disk_id));
            std::fs::hard_link(&disk, target.join(name))
                .ctx(|| format!("linking {} into {}", disk.display(), target.display()))?;
            changed.push(name.clone());
        }
        changed.extend(self.mark_disks_raw(target)?);
        Ok(changed)
    }

    /// Makes the host record and the driver's record of the VM in snapshot directory `target`
    /// say its disks are raw (what an upload flattened them to); returns the files it changed.
    fn mark_disks_raw(&self, target: &Path) -> Result<Vec<String>> {
        let mut changed = Vec::new();
        if target.join(HOST_FILE).is_file() {
            let mut saved = SavedVm::read(target)?;
            for disk in &mut saved.disks {
                disk.format = DiskFormat::Raw;
            }
            saved.disk_clone = "copy".into();
            saved.write(target)?;
            changed.push(HOST_FILE.into());
        }
        if target.join(VM_MANIFEST_FILE).is_file() {
            let mut vm = read_manifest(target, self.vmm.kind())?;
            for disk in &mut vm.spec.disks {
                disk.format = DiskFormat::Raw;
            }
            write_manifest(target, vm.vmm, &vm.spec, &vm.fs)?;
            changed.push(VM_MANIFEST_FILE.into());
        }
        Ok(changed)
    }

    /// Reads the archived record in `staging` and makes it this host's: paths under `dir`, this
    /// host's kernel and initramfs of its template, raw disks, a lease here.
    async fn rehome_record(&self, id: &str, staging: &Path, dir: &Path) -> Result<VmRecord> {
        let mut record = super::read_record(staging, id)?;
        if record.spec.id != id {
            return Err(Error::ArchiveCorrupt(format!(
                "the archived record is sandbox {}'s, not {id}'s",
                record.spec.id
            )));
        }
        let image = self.image(&record.template).await?;
        record.spec.kernel = image.kernel.clone();
        record.spec.initramfs = image.initramfs.clone();
        for disk in &mut record.spec.disks {
            let name = disk_file_name(&disk.id);
            check_name(&name)?;
            if !staging.join(&name).is_file() {
                return Err(Error::ArchiveCorrupt(format!(
                    "the archive lacks disk {name}"
                )));
            }
            disk.format = DiskFormat::Raw;
        }
        record.base_cmdline = self.place_spec(&mut record.spec, id, dir);
        record.disk_clone = "copy".into();
        if let Some(old) = record.lease.take() {
            let old_ip = old.ip;
            let lease = self.network.claim(id, old)?;
            record.reidentify = lease.ip != old_ip;
            record.lease = Some(lease);
        }
        Ok(record)
    }
}
