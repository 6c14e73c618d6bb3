//! Snapshots and checkpoints: take, list, inspect, delete, roll back; and the two steps every
//! snapshot path shares, [`Engine::take_snapshot`] (host save, then hash and sign) and
//! [`Engine::open_snapshot`] (every check before a VMM process is started).
//!
//! On disk: `<data>/snapshots/<id>/` (see [`crate::snapshots::dir`]); in the store: one row per
//! snapshot, inserted before its directory is written and marked ready after, so a server that
//! dies in between cleans up at start ([`Engine::reconcile_snapshots`]).

use platinum_hostagent::host::snapshot::{AfterSave, RestoreAs, RestoreVm};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;
use time::OffsetDateTime;

use crate::commands::sandbox::{require, runtime_info, wire_name};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{
    CreateSnapshot, Sandbox, SandboxState, Snapshot, SnapshotKind, SnapshotTimings,
};
use crate::snapshots::compat::HostProfile;
use crate::snapshots::dir::{self as snapdir, Identity};
use crate::snapshots::signing::SnapshotKeys;

/// The signing keys' file in the data directory.
pub const KEYS_FILE: &str = "snapshot-keys.json";
/// Snapshot directories live under `<data>/<SNAPSHOTS_DIR>/`.
pub const SNAPSHOTS_DIR: &str = "snapshots";

/// States a snapshot can be taken in.
const SNAPSHOTTABLE: [SandboxState; 2] = [SandboxState::Running, SandboxState::Paused];

/// A new snapshot id: a kind prefix and 20 lowercase alphanumerics.
fn new_snapshot_id(kind: SnapshotKind) -> String {
    let prefix = match kind {
        SnapshotKind::Snapshot => "snap",
        SnapshotKind::Checkpoint => "ckpt",
        SnapshotKind::Suspend => "susp",
        SnapshotKind::Template => "tmpl",
        SnapshotKind::Backup => "bkup",
    };
    format!("{prefix}{}", crate::ids::new_sandbox_id())
}

/// Maps a host failure while writing a snapshot: a full disk is `no_space`.
fn save_error(e: platinum_hostagent::Error) -> Error {
    let full = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<std::io::Error>())
        .is_some_and(|io| io.kind() == std::io::ErrorKind::StorageFull);
    if full {
        Error::NoSpace(crate::error::chain(&e))
    } else {
        e.into()
    }
}

impl Engine {
    /// `<data>/snapshots`, created on first use.
    pub(crate) fn snapshots_root(&self) -> Result<PathBuf> {
        let data = self.config.data_dir.as_ref().ok_or_else(|| {
            Error::Unsupported("this engine has no data directory for snapshots".into())
        })?;
        let root = data.join(SNAPSHOTS_DIR);
        platinum_hostagent::private_file::create_dir(&root)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", root.display())))?;
        Ok(root)
    }

    pub(crate) fn keys(&self) -> Result<Arc<SnapshotKeys>> {
        self.snapshot_keys
            .clone()
            .ok_or_else(|| Error::Unsupported("this engine has no snapshot signing keys".into()))
    }

    /// This host in the terms of a snapshot manifest.
    pub(crate) fn host_profile(&self) -> HostProfile {
        let info = self.host.info();
        HostProfile {
            vmm: wire_name(&info.vmm),
            vmm_version: info.vmm_version,
            accelerator: wire_name(&info.accel),
            cpu_model: info.cpu_model,
            cpu_flags: info.cpu_flags,
        }
    }

    /// Takes a snapshot of `sandbox` (running or paused; the caller holds its lock): the host
    /// writes memory, device state and disks, then every file is hashed and the manifest
    /// signed. On any failure nothing of it stays behind (row and directory removed).
    pub(crate) async fn take_snapshot(
        &self,
        sandbox: &Sandbox,
        kind: SnapshotKind,
        name: Option<String>,
        then: AfterSave,
    ) -> Result<Snapshot> {
        let started = Instant::now();
        if matches!(then, AfterSave::Continue) {
            self.require_no_volumes(&sandbox.id, "taking a snapshot")
                .await?;
        }
        let root = self.snapshots_root()?;
        let keys = self.keys()?;
        self.check_room_for_snapshot(sandbox)?;
        let profile = self.host_profile();
        let mut snap = Snapshot {
            id: new_snapshot_id(kind),
            name,
            kind,
            sandbox_id: sandbox.id.clone(),
            template: sandbox.template.clone(),
            vcpus: sandbox.vcpus,
            memory_mib: sandbox.memory_mib,
            size_bytes: 0,
            created_at: OffsetDateTime::now_utc(),
            vmm: format!("{} {}", profile.vmm, profile.vmm_version),
            accel: profile.accelerator.clone(),
            key_id: keys.current_kid(),
            timings: SnapshotTimings::default(),
            env: sandbox.env.clone(),
            metadata: sandbox.metadata.clone(),
        };
        self.store.insert_snapshot(&snap, false).await?;
        let dir = root.join(&snap.id);
        let written = async {
            platinum_hostagent::private_file::create_dir(&dir)
                .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
            let report = self
                .host
                .save(&sandbox.id, &dir, then)
                .await
                .map_err(save_error)?;
            let who = Identity {
                snapshot_id: snap.id.clone(),
                sandbox_id: sandbox.id.clone(),
                created_at: rfc3339(snap.created_at),
            };
            let (d, k, p, files) = (
                dir.clone(),
                keys.clone(),
                profile.clone(),
                report.files.clone(),
            );
            let (kid, hash_ms) =
                tokio::task::spawn_blocking(move || snapdir::seal(&d, &files, who, &p, &k))
                    .await
                    .map_err(|e| Error::Internal(format!("sealing task: {e}")))?
                    .map_err(Error::from)?;
            Ok::<_, Error>((report, kid, hash_ms))
        }
        .await;
        let (report, kid, hash_ms) = match written {
            Ok(v) => v,
            Err(e) => {
                self.discard_snapshot(&snap.id).await;
                return Err(e);
            }
        };
        snap.key_id = kid;
        snap.size_bytes = snapdir::size_on_disk(&dir);
        snap.timings = SnapshotTimings {
            paused_ms: report.paused_ms,
            state_ms: report.state_ms,
            disks_ms: report.disks_ms,
            hash_ms,
            total_ms: millis(started),
        };
        self.store.finish_snapshot(&snap).await?;
        self.store
            .append_event(
                &sandbox.id,
                &format!("{}_taken", kind.as_str()),
                &serde_json::json!({ "snapshot": snap.id, "timings": snap.timings }),
            )
            .await?;
        tracing::info!(sandbox = %sandbox.id, snapshot = %snap.id, kind = kind.as_str(), timings = ?snap.timings, "snapshot taken");
        Ok(snap)
    }

    /// Refuses a snapshot the data directory has no room for: its memory image can be as large
    /// as the guest's memory, and `min_free_disk_mib` must stay free after it.
    pub(crate) fn check_room_for_snapshot(&self, sandbox: &Sandbox) -> Result<()> {
        let Some(free) = self.host.disk_free_bytes() else {
            return Ok(());
        };
        let need = (self.config.min_free_disk_mib + u64::from(sandbox.memory_mib)) << 20;
        if free < need {
            return Err(Error::NoSpace(format!(
                "{} MiB free in the data directory; a snapshot of a {} MiB sandbox needs {} MiB \
                 with {} MiB kept free",
                free >> 20,
                sandbox.memory_mib,
                need >> 20,
                self.config.min_free_disk_mib
            )));
        }
        Ok(())
    }

    /// Checks a snapshot's directory (signature, key, identity, compatibility, every file's size
    /// and hash) and returns it. Nothing is started and nothing is removed when a check fails.
    pub(crate) async fn open_snapshot(&self, snap: &Snapshot) -> Result<PathBuf> {
        Ok(self.open_snapshot_timed(snap).await?.0)
    }

    /// [`Engine::open_snapshot`], with how long the checks took (ms).
    pub(crate) async fn open_snapshot_timed(&self, snap: &Snapshot) -> Result<(PathBuf, u64)> {
        let dir = self.snapshots_root()?.join(&snap.id);
        let (d, id, keys, profile, verified) = (
            dir.clone(),
            snap.id.clone(),
            self.keys()?,
            self.host_profile(),
            self.verified.clone(),
        );
        let verify_ms =
            tokio::task::spawn_blocking(move || snapdir::open(&d, &id, &keys, &profile, &verified))
                .await
                .map_err(|e| Error::Internal(format!("verifying task: {e}")))??;
        tracing::info!(snapshot = %snap.id, verify_ms, "snapshot verified");
        Ok((dir, verify_ms))
    }

    /// Removes a snapshot's directory and row (failures are logged).
    pub(crate) async fn discard_snapshot(&self, id: &str) {
        if let Ok(root) = self.snapshots_root() {
            let dir = root.join(id);
            match tokio::fs::remove_dir_all(&dir).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(snapshot = %id, error = %e, "removing a snapshot directory")
                }
            }
        }
        if let Err(e) = self.store.delete_snapshot(id).await {
            tracing::warn!(snapshot = %id, error = %e, "removing a snapshot row");
        }
    }

    /// A snapshot or checkpoint by id or name (pause-to-disk images are not listed).
    pub async fn get_snapshot(&self, id_or_name: &str) -> Result<Snapshot> {
        match self.store.get_snapshot(id_or_name).await? {
            Some(s) if s.kind != SnapshotKind::Suspend => Ok(s),
            _ => Err(Error::SnapshotNotFound(id_or_name.to_string())),
        }
    }

    /// The public keys that verify snapshot manifests, as a JWKS (RFC 8037).
    pub fn snapshot_jwks(&self) -> Result<serde_json::Value> {
        Ok(self.keys()?.jwks())
    }

    /// Makes a new snapshot signing key current; older ones keep verifying what they signed.
    /// Returns the new key's id.
    pub fn rotate_snapshot_key(&self) -> Result<String> {
        Ok(self.keys()?.rotate()?)
    }

    /// Named snapshots, oldest first, optionally of one sandbox.
    pub async fn list_snapshots(&self, sandbox_id: Option<&str>) -> Result<Vec<Snapshot>> {
        self.store
            .list_snapshots(sandbox_id, Some(SnapshotKind::Snapshot))
            .await
    }

    /// Takes a named, immutable snapshot of a running or paused sandbox, which keeps running.
    pub async fn create_snapshot(&self, id: &str, req: CreateSnapshot) -> Result<Snapshot> {
        if let Some(name) = &req.name {
            crate::commands::settings::check_sandbox_name(name)?;
            if self.store.get_snapshot(name).await?.is_some() {
                return Err(Error::Conflict(format!(
                    "a snapshot named {name:?} already exists"
                )));
            }
        }
        let _g = self.lock(id).await;
        let s = self.load(id).await?;
        require(&s, "snapshot", &SNAPSHOTTABLE)?;
        self.touch(&s).await;
        self.take_snapshot(&s, SnapshotKind::Snapshot, req.name, AfterSave::Continue)
            .await
    }

    /// Deletes a snapshot or checkpoint (its files and its record).
    pub async fn delete_snapshot(&self, id_or_name: &str) -> Result<()> {
        let snap = self.get_snapshot(id_or_name).await?;
        self.discard_snapshot(&snap.id).await;
        Ok(())
    }

    /// Takes a checkpoint of a running or paused sandbox to roll it back to later; returns it in
    /// the same call.
    pub async fn checkpoint(&self, id: &str) -> Result<Snapshot> {
        let _g = self.lock(id).await;
        let s = self.load(id).await?;
        require(&s, "checkpoint", &SNAPSHOTTABLE)?;
        self.touch(&s).await;
        self.take_snapshot(&s, SnapshotKind::Checkpoint, None, AfterSave::Continue)
            .await
    }

    /// The sandbox's checkpoints, oldest first.
    pub async fn list_checkpoints(&self, id: &str) -> Result<Vec<Snapshot>> {
        self.load(id).await?;
        self.store
            .list_snapshots(Some(id), Some(SnapshotKind::Checkpoint))
            .await
    }

    /// Puts the same sandbox (same id, same address) back to a checkpoint: memory, processes
    /// and disk. The checkpoint is checked first; a refused one leaves the sandbox as it was.
    pub async fn rollback(&self, id: &str, checkpoint: &str) -> Result<Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(&s, "rollback", &SNAPSHOTTABLE)?;
        let snap = match self.store.get_snapshot(checkpoint).await? {
            Some(c) if c.kind == SnapshotKind::Checkpoint && c.sandbox_id == s.id => c,
            _ => {
                return Err(Error::SnapshotNotFound(format!(
                    "{checkpoint} (no checkpoint of sandbox {id} has that id)"
                )));
            }
        };
        let dir = self.open_snapshot(&snap).await?;
        self.forget_guest_state(id);
        let restored = self
            .host
            .restore(RestoreVm {
                id: s.id.clone(),
                snapshot_dir: dir,
                env: s.env.clone(),
                restore_as: RestoreAs::Same,
                egress: Default::default(),
            })
            .await;
        match restored {
            Ok(status) => {
                s.runtime = Some(runtime_info(&status).resumed_from(&snap.id));
                s.last_activity_at = OffsetDateTime::now_utc();
                let detail = serde_json::json!({ "checkpoint": snap.id });
                if s.state == SandboxState::Paused {
                    self.transition(&mut s, SandboxState::Running, detail)
                        .await?;
                } else {
                    self.store.update_sandbox(&s).await?;
                    self.store
                        .append_event(&s.id, "rolled_back", &detail)
                        .await?;
                }
                Ok(s)
            }
            Err(e) => {
                let e = Error::from(e);
                if let Err(cleanup) = self.host.stop(id).await {
                    tracing::debug!(sandbox = %id, error = %cleanup, "stopping after a failed rollback");
                }
                self.record_error(&mut s, format!("rollback to {} failed: {e}", snap.id))
                    .await?;
                Err(e)
            }
        }
    }

    /// Removes a deleted sandbox's checkpoints and pause-to-disk image, and with
    /// `with_snapshots` its named snapshots too (never its backups).
    pub(crate) async fn discard_snapshots_of(&self, id: &str, with_snapshots: bool) -> Result<()> {
        for snap in self.store.list_snapshots(Some(id), None).await? {
            // Backups outlive their sandbox: that is what they are for.
            if snap.kind == SnapshotKind::Backup {
                continue;
            }
            if snap.kind != SnapshotKind::Snapshot || with_snapshots {
                self.discard_snapshot(&snap.id).await;
            }
        }
        Ok(())
    }

    /// At start: snapshots a dead server left half-written. A finished directory (signed
    /// manifest in place) is adopted: a pause to disk that got that far is a paused sandbox.
    /// Anything else is removed, with directories nobody owns (an interrupted fork's).
    pub(crate) async fn reconcile_snapshots(&self) -> Result<()> {
        let (Ok(root), Ok(keys)) = (self.snapshots_root(), self.keys()) else {
            return Ok(());
        };
        for mut snap in self.store.unready_snapshots().await? {
            let dir = root.join(&snap.id);
            if snapdir::signed_manifest(&dir, &snap.id, &keys).is_err() {
                tracing::warn!(snapshot = %snap.id, "removing a snapshot the server did not finish");
                self.discard_snapshot(&snap.id).await;
                continue;
            }
            snap.size_bytes = snapdir::size_on_disk(&dir);
            self.store.finish_snapshot(&snap).await?;
            if snap.kind == SnapshotKind::Suspend
                && let Some(mut s) = self.store.get_sandbox(&snap.sandbox_id).await?
                && s.state.claims_vm()
            {
                tracing::warn!(sandbox = %s.id, "the server died while pausing to disk; the sandbox is paused");
                self.transition(
                    &mut s,
                    SandboxState::Suspended,
                    serde_json::json!({ "snapshot": snap.id, "memory": true, "recovered": true }),
                )
                .await?;
            }
        }
        let known: std::collections::HashSet<String> = self
            .store
            .list_snapshots(None, None)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        if let Ok(entries) = std::fs::read_dir(&root) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !known.contains(&name) {
                    tracing::warn!(dir = %name, "removing a snapshot directory nobody owns");
                    if let Err(e) = std::fs::remove_dir_all(entry.path()) {
                        tracing::warn!(dir = %name, error = %e, "could not remove it");
                    }
                }
            }
        }
        Ok(())
    }
}

pub(crate) fn millis(since: Instant) -> u64 {
    since.elapsed().as_millis().try_into().unwrap_or(u64::MAX)
}

pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SnapshotKind;
    use crate::store::Store;
    use crate::testing::{engine_in, sandbox};

    fn row(id: &str, kind: SnapshotKind, sandbox_id: &str) -> Snapshot {
        Snapshot {
            id: id.into(),
            name: None,
            kind,
            sandbox_id: sandbox_id.into(),
            template: "base".into(),
            vcpus: 1,
            memory_mib: 512,
            size_bytes: 0,
            created_at: OffsetDateTime::now_utc(),
            vmm: "qemu 10.0.2".into(),
            accel: "tcg".into(),
            key_id: String::new(),
            timings: Default::default(),
            env: Default::default(),
            metadata: Default::default(),
        }
    }

    /// A server that died in the middle of a pause to disk: once the image was sealed, the
    /// sandbox is paused (`suspended`), never lost; before that, the half-written image goes and
    /// the sandbox is the ordinary lost VM (`error`, disk kept). Directories nobody owns go.
    #[tokio::test]
    async fn a_restart_adopts_finished_pauses_and_removes_half_written_ones() {
        let data = tempfile::tempdir().unwrap();
        let (engine, store) = engine_in(data.path()).await;
        let root = engine.snapshots_root().unwrap();
        let keys = engine.keys().unwrap();
        let (done, half) = ("a0000000000000000001", "a0000000000000000002");
        for id in [done, half] {
            store
                .insert_sandbox(&sandbox(id, SandboxState::Running))
                .await
                .unwrap();
        }
        // Sealed but never marked ready.
        let sealed = row("suspsealed", SnapshotKind::Suspend, done);
        store.insert_snapshot(&sealed, false).await.unwrap();
        let dir = root.join(&sealed.id);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("vmstate"), b"state").unwrap();
        let who = Identity {
            snapshot_id: sealed.id.clone(),
            sandbox_id: done.into(),
            created_at: "2026-12-03T00:00:00Z".into(),
        };
        let files = vec!["vmstate".to_string()];
        snapdir::seal(&dir, &files, who, &engine.host_profile(), &keys).unwrap();
        // Written, not sealed.
        let partial = row("susppartial", SnapshotKind::Suspend, half);
        store.insert_snapshot(&partial, false).await.unwrap();
        std::fs::create_dir(root.join(&partial.id)).unwrap();
        std::fs::write(root.join(&partial.id).join("vmstate"), b"sta").unwrap();
        // An interrupted fork's directory.
        std::fs::create_dir(root.join("forkleftover")).unwrap();

        engine.start().await.unwrap();
        engine.stop_background();

        assert_eq!(
            engine.get_sandbox(done).await.unwrap().state,
            SandboxState::Suspended
        );
        assert_eq!(
            engine.suspend_image(done).await.unwrap().map(|s| s.id),
            Some(sealed.id.clone())
        );
        assert_eq!(
            engine.get_sandbox(half).await.unwrap().state,
            SandboxState::Error
        );
        assert!(engine.suspend_image(half).await.unwrap().is_none());
        assert!(dir.join(snapdir::MANIFEST_FILE).is_file());
        assert!(!root.join(&partial.id).exists());
        assert!(!root.join("forkleftover").exists());
        assert!(store.unready_snapshots().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn snapshots_are_refused_without_a_data_directory() {
        let (engine, store) = crate::testing::engine().await;
        let id = "a0000000000000000003";
        store
            .insert_sandbox(&sandbox(id, SandboxState::Running))
            .await
            .unwrap();
        let e = engine.checkpoint(id).await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::Unsupported);
        let e = engine.snapshot_jwks().unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::Unsupported);
    }
}
