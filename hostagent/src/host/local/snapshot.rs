//! Save and restore of the local host's VMs (see [`crate::host::snapshot`] for the directory).
//!
//! Save: stop the vCPUs, let the VMM write device state and memory, put the disks next to it
//! (hard links when the VM exits afterwards, copies when it runs on), then resume or end the VM.
//! The pause window is measured and reported.
//!
//! Restore: as the same sandbox (its directory, record and lease; a VM it still runs is killed
//! first) or as a new one (a directory, record and lease of its own; the guest then takes on the
//! new identity with `reidentify`). Disks are copied out of the snapshot unless they are the
//! sandbox's own already (the hard links of a pause to disk).

use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{LocalHost, NetPlan, VmRecord, read_record, slot_guest, write_record};
use crate::disk::{copy_disk, same_file};
use crate::error::{Error, IoContext, Result};
use crate::host::VmStatus;
use crate::host::snapshot::{
    AfterSave, RestoreAs, RestoreVm, SaveReport, SavedDisk, SavedVm, disk_file_name, list_files,
};
use crate::vmm::manifest::read_manifest;

/// Bytes of host randomness a restored copy mixes into its RNG.
const IDENTITY_ENTROPY: usize = 64;

impl LocalHost {
    pub(super) async fn save_vm(
        &self,
        id: &str,
        dir: &Path,
        then: AfterSave,
    ) -> Result<SaveReport> {
        let slot = self.slot(id)?;
        if matches!(then, AfterSave::Continue) {
            self.require_no_volumes(id, "a snapshot")?;
        }
        if !dir.is_dir()
            || std::fs::read_dir(dir)
                .ctx(|| format!("reading {}", dir.display()))?
                .next()
                .is_some()
        {
            return Err(Error::Invalid(format!(
                "snapshot directory {} must exist and be empty",
                dir.display()
            )));
        }
        slot.vm.prepare_snapshot().await?;
        let was_paused = slot.paused.swap(true, Ordering::SeqCst);
        let stopped = Instant::now();
        if !was_paused && let Err(e) = slot.vm.pause().await {
            slot.paused.store(false, Ordering::SeqCst);
            return Err(e);
        }
        let written = async {
            let state_started = Instant::now();
            slot.vm.snapshot(dir).await?;
            let state_ms = millis(state_started.elapsed());
            let disks_started = Instant::now();
            let mut disks = Vec::new();
            // Volumes are not the sandbox's: they stay where they are (and only a pause to disk,
            // whose restore finds them there again, may save a VM that has any).
            for disk in slot
                .record
                .spec
                .disks
                .iter()
                .filter(|d| d.volume_slot.is_none())
            {
                let dest = dir.join(disk_file_name(&disk.id));
                match then {
                    // Nothing writes the disk once the VMM is gone: the snapshot shares it.
                    AfterSave::Exit => std::fs::hard_link(&disk.path, &dest)
                        .ctx(|| format!("linking {} to {}", disk.path.display(), dest.display()))?,
                    AfterSave::Continue => drop(copy_disk(&disk.path, &dest).await?),
                }
                disks.push(SavedDisk {
                    id: disk.id.clone(),
                    format: disk.format,
                });
            }
            let lease = slot.record.lease.as_ref();
            SavedVm {
                template: slot.record.template.clone(),
                disk_clone: slot.record.disk_clone.clone(),
                disks,
                network: slot.record.spec.net.is_some(),
                internet: lease.is_some_and(|l| l.internet),
            }
            .write(dir)?;
            Ok::<_, Error>((state_ms, millis(disks_started.elapsed())))
        }
        .await;
        let paused_ms = match then {
            AfterSave::Exit if written.is_ok() => {
                self.end_vm(id, &slot, "paused to disk").await?;
                millis(stopped.elapsed())
            }
            // A snapshot, or a pause to disk whose save failed: the VM runs on as it was.
            _ => {
                run_on(id, &slot, was_paused).await?;
                if was_paused {
                    0
                } else {
                    millis(stopped.elapsed())
                }
            }
        };
        let (state_ms, disks_ms) = written?;
        let report = SaveReport {
            paused_ms,
            state_ms,
            disks_ms,
            files: list_files(dir)?,
        };
        tracing::info!(sandbox = %id, ?then, paused_ms, state_ms, disks_ms, "VM saved");
        Ok(report)
    }

    /// Kills the VM of `slot` on purpose and gives its TAP back (lease and disk stay).
    async fn end_vm(&self, id: &str, slot: &super::Slot, why: &str) -> Result<()> {
        slot.expected_exit.store(true, Ordering::SeqCst);
        self.take_slot(id);
        if let Some(g) = slot.guest.lock().await.take() {
            g.shutdown(why);
        }
        slot.vm.kill().await?;
        self.network.detach(id, false).await
    }

    pub(super) async fn restore_vm(&self, req: RestoreVm) -> Result<VmStatus> {
        let saved = SavedVm::read(&req.snapshot_dir)?;
        let manifest = read_manifest(&req.snapshot_dir, self.vmm.kind())?;
        let dir = self.dir(&req.id)?;
        let (mut record, net) = match &req.restore_as {
            RestoreAs::Same => {
                if let Ok(slot) = self.slot(&req.id) {
                    self.end_vm(&req.id, &slot, "replaced by a restore").await?;
                }
                let mut record = read_record(&dir, &req.id)?;
                record.env = req.env.clone();
                let internet = record.lease.as_ref().map(|l| l.internet);
                (record, self.net_plan(&saved, internet)?)
            }
            RestoreAs::New { internet } => {
                if let Some(volume) = manifest.spec.disks.iter().find(|d| d.volume_slot.is_some()) {
                    return Err(Error::Invalid(format!(
                        "the snapshot's VM had volume {} attached; it restores only into its own sandbox",
                        volume.id
                    )));
                }
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&dir)
                    .ctx(|| format!("creating sandbox directory {}", dir.display()))?;
                let mut spec = manifest.spec.clone();
                // The RAM is where the snapshot's was: in a file (of this directory) or not.
                let base_cmdline = self.place_spec(&mut spec, &req.id, &dir);
                let record = VmRecord {
                    spec,
                    template: saved.template.clone(),
                    env: req.env.clone(),
                    disk_clone: saved.disk_clone.clone(),
                    lease: None,
                    base_cmdline,
                    reidentify: false,
                    egress: req.egress.clone(),
                };
                write_record(&record)?;
                (
                    record,
                    self.net_plan(&saved, internet.or(Some(saved.internet)))?,
                )
            }
        };
        let own = record
            .spec
            .disks
            .iter()
            .filter(|d| d.volume_slot.is_none())
            .count();
        if own != saved.disks.len() {
            return Err(Error::Invalid(format!(
                "the snapshot has {} disks, sandbox {} has {own}",
                saved.disks.len(),
                req.id,
            )));
        }
        let own = record
            .spec
            .disks
            .iter_mut()
            .filter(|d| d.volume_slot.is_none());
        for (disk, want) in own.zip(&saved.disks) {
            let src = req.snapshot_dir.join(want.file_name());
            disk.format = want.format;
            if same_file(&src, &disk.path) {
                continue;
            }
            match std::fs::remove_file(&disk.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(format!("removing {}", disk.path.display()), e));
                }
                _ => {}
            }
            copy_disk(&src, &disk.path).await?;
        }
        let moved = std::mem::take(&mut record.reidentify);
        write_record(&record)?;
        let status = self.boot(record, net, Some(&req.snapshot_dir)).await?;
        if moved || matches!(req.restore_as, RestoreAs::New { .. }) {
            let slot = self.slot(&req.id)?;
            let lease = slot.record.lease.as_ref();
            let mut entropy = vec![0u8; IDENTITY_ENTROPY];
            rand::fill(&mut entropy[..]);
            let identity = platinum_protocol::Identity {
                hostname: req.id.clone(),
                net: lease.map(crate::net::Lease::identity),
                entropy,
            };
            let g = slot_guest(&slot, Duration::from_secs(10)).await?;
            g.reidentify(identity).await?;
        }
        Ok(status)
    }

    /// The network a restored VM gets: a device exactly when the snapshot had one.
    fn net_plan(&self, saved: &SavedVm, internet: Option<bool>) -> Result<NetPlan> {
        if !saved.network {
            return Ok(NetPlan::Off);
        }
        if let Some(why) = self.network.unavailable_reason() {
            return Err(Error::Invalid(format!(
                "the snapshot's VM has a network device, but this host has no sandbox network ({why})"
            )));
        }
        Ok(NetPlan::Auto(Some(internet.unwrap_or(saved.internet))))
    }
}

/// Puts a slot back as it was before a save: vCPUs running again unless they were paused
/// before, and then the guest clock re-synced (it stood still while the vCPUs did; failing to
/// sync it is logged, the VM runs either way).
async fn run_on(id: &str, slot: &super::Slot, was_paused: bool) -> Result<()> {
    let resumed = if was_paused {
        Ok(())
    } else {
        slot.vm.resume().await
    };
    slot.paused.store(was_paused, Ordering::SeqCst);
    resumed?;
    if !was_paused {
        match slot_guest(slot, Duration::from_secs(10)).await {
            Ok(g) => drop(g.keep_clock().await),
            Err(e) => {
                tracing::warn!(sandbox = %id, error = %e, "re-syncing the clock after a save")
            }
        }
    }
    Ok(())
}

fn millis(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}
