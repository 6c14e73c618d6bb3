//! Continuous backup: snapshots of a running sandbox kept in the object store.
//!
//! A backup is a snapshot (kind `backup`) taken while the sandbox runs on — its vCPUs stop only
//! for the save, the pause window reported in its timings beside the VMM's own device-state
//! save — whose directory the host then uploads as content-addressed chunks (disks flattened to
//! raw, so no base image of this host is needed). Only chunks the store lacks are sent, so each
//! backup after the first costs what changed since. The engine signs the chunk list, keeps it
//! (`backups`) and removes the local directory: a backup lives in the object store only.
//!
//! A schedule ([`BackupPolicy`], set at create or later) takes one every `interval_secs` while
//! the sandbox runs and keeps the newest `keep`; [`crate::backups`] runs it. Backups outlive
//! their sandbox and its host's data: restoring one ([`Engine::restore_backup`], or any create
//! that names it as its `snapshot`) fetches it into a fresh snapshot directory, checking every
//! chunk and then the snapshot's own signed manifest, restores it as a new sandbox and removes
//! the fetched copy again.
//!
//! Not in a backup: attached volumes (a sandbox with volumes is refused, as for every snapshot)
//! and the host share, which a restore gets new and empty like a fork's. Chunks no backup or
//! archive uses any more stay in the store (no garbage collection yet).

use std::path::PathBuf;

use platinum_hostagent::archive::SNAPSHOT_SET;
use platinum_hostagent::host::snapshot::AfterSave;
use tokio::sync::OwnedMutexGuard;

use crate::commands::sandbox::require;
use crate::commands::snapshots::rfc3339;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{
    Backup, BackupPolicy, BackupStatus, BackupUpload, CreateSandbox, Sandbox, SandboxState,
    Snapshot, SnapshotKind,
};
use crate::snapshots::SnapshotError;
use crate::snapshots::archive::{ArchiveManifest, SignedArchive};
use crate::snapshots::dir as snapdir;

/// The shortest interval a schedule may have.
pub const MIN_INTERVAL_SECS: u64 = 5;
/// The most backups a schedule may keep.
pub const MAX_KEEP: u32 = 100;

/// States a backup can be taken in.
const BACKUPABLE: [SandboxState; 2] = [SandboxState::Running, SandboxState::Paused];

/// Checks a schedule's bounds.
pub(crate) fn check_policy(policy: &BackupPolicy) -> Result<()> {
    if policy.interval_secs < MIN_INTERVAL_SECS {
        return Err(Error::InvalidRequest(format!(
            "interval_secs must be at least {MIN_INTERVAL_SECS}"
        )));
    }
    if !(1..=MAX_KEEP).contains(&policy.keep) {
        return Err(Error::InvalidRequest(format!(
            "keep must be 1..={MAX_KEEP}"
        )));
    }
    Ok(())
}

/// The backup a snapshot row and its signed chunk list make.
fn backup_of(snap: Snapshot, signed: &SignedArchive) -> Backup {
    let report = &signed.manifest.report;
    Backup {
        id: snap.id,
        sandbox_id: snap.sandbox_id,
        template: snap.template,
        vcpus: snap.vcpus,
        memory_mib: snap.memory_mib,
        created_at: snap.created_at,
        timings: snap.timings,
        upload: BackupUpload {
            bytes_total: report.bytes_total,
            chunks_sent: report.chunks_moved,
            chunks_reused: report.chunks_reused,
            chunks_zero: report.chunks_zero,
            bytes_sent: report.bytes_moved,
            ms: report.ms,
        },
    }
}

/// A backup fetched into its snapshot directory for a create; the directory goes again when
/// [`FetchedBackup::release`] is called. Its lock keeps a second fetch of it waiting.
pub(crate) struct FetchedBackup {
    dir: PathBuf,
    _lock: OwnedMutexGuard<()>,
}

impl FetchedBackup {
    /// Removes the fetched copy (what was restored from it has its own files).
    pub(crate) async fn release(self) {
        if let Err(e) = tokio::fs::remove_dir_all(&self.dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(dir = %self.dir.display(), error = %e, "removing a fetched backup");
        }
    }
}

impl Engine {
    /// Takes a backup of a running or paused sandbox now; it runs on while the backup uploads.
    pub async fn backup_sandbox(&self, id: &str) -> Result<Backup> {
        let keys = self.keys()?;
        let snap = {
            let _g = self.lock(id).await;
            let s = self.load(id).await?;
            require(&s, "backup", &BACKUPABLE)?;
            self.take_snapshot(&s, SnapshotKind::Backup, None, AfterSave::Continue)
                .await?
        };
        let dir = self.snapshots_root()?.join(&snap.id);
        let uploaded = async {
            let archived = self.host.upload_snapshot(&dir).await?;
            let manifest = ArchiveManifest {
                sandbox_id: id.to_string(),
                created_at: rfc3339(snap.created_at),
                suspend_snapshot: None,
                backup_snapshot: Some(snap.id.clone()),
                archive: archived.archive,
                report: archived.report,
            };
            let signed = SignedArchive::sign(manifest, &keys)?;
            self.store.put_backup(&signed).await?;
            Ok::<_, Error>(signed)
        }
        .await;
        let signed = match uploaded {
            Ok(signed) => signed,
            Err(e) => {
                tracing::warn!(sandbox = %id, backup = %snap.id, error = %e, "backup failed");
                let detail = serde_json::json!({
                    "backup": snap.id, "code": e.code().as_str(), "error": e.to_string(),
                });
                self.store
                    .append_event(id, "backup_failed", &detail)
                    .await?;
                self.discard_snapshot(&snap.id).await;
                return Err(e);
            }
        };
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(backup = %snap.id, error = %e, "removing an uploaded backup's local copy");
        }
        let backup = backup_of(snap, &signed);
        self.store
            .append_event(
                id,
                "backup_stored",
                &serde_json::json!({
                    "backup": backup.id,
                    "paused_ms": backup.timings.paused_ms,
                    "state_ms": backup.timings.state_ms,
                    "upload": backup.upload,
                }),
            )
            .await?;
        tracing::info!(sandbox = %id, backup = %backup.id, paused_ms = backup.timings.paused_ms, upload = ?backup.upload, "backup taken");
        self.prune_backups(id).await?;
        Ok(backup)
    }

    /// Backups, oldest first: every one, or sandbox `sandbox_id`'s (also once it is deleted).
    pub async fn list_backups(&self, sandbox_id: Option<&str>) -> Result<Vec<Backup>> {
        let mut backups = Vec::new();
        for snap in self
            .store
            .list_snapshots(sandbox_id, Some(SnapshotKind::Backup))
            .await?
        {
            // A backup whose upload is still running is not one yet.
            if let Some(signed) = self.store.get_backup(&snap.id).await? {
                backups.push(backup_of(snap, &signed));
            }
        }
        Ok(backups)
    }

    /// A backup by id.
    pub async fn get_backup(&self, id: &str) -> Result<Backup> {
        let (snap, signed) = self.backup_record(id).await?;
        Ok(backup_of(snap, &signed))
    }

    /// Deletes a backup (its record; chunks other backups share stay in the store).
    pub async fn delete_backup(&self, id: &str) -> Result<()> {
        let (snap, _) = self.backup_record(id).await?;
        let _g = self.lock(&snap.id).await;
        self.forget_backup(&snap.id).await
    }

    /// A sandbox's schedule and backups.
    pub async fn backup_status(&self, id: &str) -> Result<BackupStatus> {
        let s = self.load(id).await?;
        Ok(BackupStatus {
            policy: self.store.get_backup_policy(&s.id).await?,
            backups: self.list_backups(Some(&s.id)).await?,
        })
    }

    /// Sets (`Some`) or ends (`None`) a sandbox's continuous backup. A new schedule's first
    /// backup is due at once unless the sandbox has a backup younger than the interval.
    pub async fn set_backup_policy(
        &self,
        id: &str,
        policy: Option<BackupPolicy>,
    ) -> Result<BackupStatus> {
        if let Some(p) = &policy {
            check_policy(p)?;
        }
        {
            let _g = self.lock(id).await;
            let s = self.load(id).await?;
            if policy.is_some() && s.state == SandboxState::Deleted {
                return Err(Error::InvalidState {
                    id: s.id.clone(),
                    state: s.state.to_string(),
                    action: "a backup schedule".into(),
                    needed: "not deleted".into(),
                });
            }
            self.store.set_backup_policy(&s.id, policy).await?;
        }
        if policy.is_some() {
            self.prune_backups(id).await?;
        }
        self.backup_status(id).await
    }

    /// Restores backup `id` as a new sandbox; `req` as for a create (its `snapshot` is the
    /// backup; its size must be the backup's when given).
    pub async fn restore_backup(&self, id: &str, mut req: CreateSandbox) -> Result<Sandbox> {
        let (snap, _) = self.backup_record(id).await?;
        req.snapshot = Some(snap.id);
        self.create_sandbox(req).await
    }

    /// When `name` is a backup, fetches it into its snapshot directory (every chunk checked,
    /// the snapshot's manifest re-sealed for the files the upload turned raw) for a create to
    /// restore from; `None` for any other snapshot.
    pub(crate) async fn fetch_backup_for_create(
        &self,
        name: &str,
    ) -> Result<Option<FetchedBackup>> {
        let snap = match self.store.get_snapshot(name).await? {
            Some(snap) if snap.kind == SnapshotKind::Backup => snap,
            _ => return Ok(None),
        };
        let signed = self.chunk_list(&snap).await?;
        let keys = self.keys()?;
        signed.verify(&snap.sandbox_id, &keys)?;
        if signed.manifest.backup_snapshot.as_deref() != Some(snap.id.as_str()) {
            return Err(SnapshotError::SignatureInvalid(format!(
                "the chunk list kept for backup {} is another snapshot's",
                snap.id
            ))
            .into());
        }
        let lock = self.lock(&snap.id).await;
        let dir = self.snapshots_root()?.join(&snap.id);
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::Internal(format!(
                "removing a leftover {}: {e}",
                dir.display()
            )));
        }
        let restored = self
            .host
            .download_snapshot(&signed.manifest.archive, &dir)
            .await?;
        let changed = restored
            .changed
            .into_iter()
            .find(|(set, _)| set == SNAPSHOT_SET)
            .map(|(_, names)| names)
            .unwrap_or_default();
        let (d, sid, k) = (dir.clone(), snap.id.clone(), keys.clone());
        let resealed = tokio::task::spawn_blocking(move || snapdir::reseal(&d, &sid, &changed, &k))
            .await
            .map_err(|e| Error::Internal(format!("re-sealing task: {e}")))?;
        let fetched = FetchedBackup { dir, _lock: lock };
        if let Err(e) = resealed {
            fetched.release().await;
            return Err(e.into());
        }
        tracing::info!(backup = %snap.id, transfer = ?restored.report, "backup fetched");
        Ok(Some(fetched))
    }

    /// At start: backups whose upload a dead server did not finish go (row and directory), and
    /// finished ones lose the local copy a fetch may have left.
    pub(crate) async fn reconcile_backups(&self) -> Result<()> {
        let Ok(root) = self.snapshots_root() else {
            return Ok(());
        };
        for snap in self
            .store
            .list_snapshots(None, Some(SnapshotKind::Backup))
            .await?
        {
            if self.store.get_backup(&snap.id).await?.is_none() {
                tracing::warn!(backup = %snap.id, "removing a backup whose upload did not finish");
                self.discard_snapshot(&snap.id).await;
            } else if let Err(e) = std::fs::remove_dir_all(root.join(&snap.id))
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::warn!(backup = %snap.id, error = %e, "removing a fetched backup's copy");
            }
        }
        Ok(())
    }

    /// A finished backup's snapshot row and signed chunk list.
    async fn backup_record(&self, id: &str) -> Result<(Snapshot, SignedArchive)> {
        let not_found = || Error::SnapshotNotFound(format!("{id} (no backup has that id)"));
        let snap = match self.store.get_snapshot(id).await? {
            Some(s) if s.kind == SnapshotKind::Backup => s,
            _ => return Err(not_found()),
        };
        let signed = self.chunk_list(&snap).await?;
        Ok((snap, signed))
    }

    /// The signed chunk list of backup `snap` (none while its upload runs: not found).
    async fn chunk_list(&self, snap: &Snapshot) -> Result<SignedArchive> {
        self.store
            .get_backup(&snap.id)
            .await?
            .ok_or_else(|| Error::SnapshotNotFound(format!("{} (no backup has that id)", snap.id)))
    }

    /// Removes a backup's row, chunk list and any local copy.
    async fn forget_backup(&self, id: &str) -> Result<()> {
        self.store.delete_backup(id).await?;
        self.discard_snapshot(id).await;
        Ok(())
    }

    /// Deletes a sandbox's oldest backups beyond what its schedule keeps.
    async fn prune_backups(&self, sandbox_id: &str) -> Result<()> {
        let Some(policy) = self.store.get_backup_policy(sandbox_id).await? else {
            return Ok(());
        };
        let backups = self.list_backups(Some(sandbox_id)).await?;
        let extra = backups.len().saturating_sub(policy.keep as usize);
        for old in backups.into_iter().take(extra) {
            let _g = self.lock(&old.id).await;
            tracing::info!(sandbox = %sandbox_id, backup = %old.id, "deleting a backup the schedule no longer keeps");
            self.forget_backup(&old.id).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_bounded() {
        let p = |interval_secs, keep| BackupPolicy {
            interval_secs,
            keep,
        };
        check_policy(&p(5, 1)).unwrap();
        check_policy(&p(3600, MAX_KEEP)).unwrap();
        for bad in [p(4, 3), p(60, 0), p(60, MAX_KEEP + 1)] {
            assert_eq!(
                check_policy(&bad).unwrap_err().code(),
                crate::error::ErrorCode::InvalidRequest
            );
        }
        let parsed: BackupPolicy = serde_json::from_str(r#"{"interval_secs":30}"#).unwrap();
        assert_eq!(parsed.keep, 3);
        assert!(serde_json::from_str::<BackupPolicy>(r#"{"interval_secs":30,"x":1}"#).is_err());
    }
}
