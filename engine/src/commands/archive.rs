//! Archive to object storage, and back.
//!
//! Archive (a stopped sandbox, or a paused one: paused in memory it is paused to disk first):
//! the host uploads the sandbox's record and disk and, for a paused one, its memory image (the
//! pause-to-disk snapshot, whose checks run first) to the object store, content-addressed, so
//! what is stored already is not sent again. The engine signs the chunk lists and keeps them
//! (`archives`), the sandbox turns `archived`, and only then is the host's copy removed. A
//! server that stops anywhere on the way leaves the sandbox either still local (and `stopped` or
//! `suspended`) or wholly archived. A failed upload leaves it as it was, with an
//! `archive_failed` event; a lifecycle rule tries again on its next pass.
//!
//! Restore (start or resume of an archived sandbox): the signature is checked, then the host
//! downloads every chunk into a fresh directory, checking each against the signed hash (a host
//! that never saw the sandbox works the same way: it needs the database, the signing keys and
//! the store), the memory image is re-sealed for this host, and the sandbox is `stopped` or
//! `suspended` again for the start to go on from. A missing or altered chunk is
//! `archive_corrupt` and an unreachable store `object_store_unavailable`; either way nothing is
//! started and the sandbox stays archived.

use platinum_hostagent::archive::ArchiveDir;
use time::OffsetDateTime;

use crate::commands::sandbox::require;
use crate::commands::snapshots::rfc3339;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{Sandbox, SandboxState};
use crate::snapshots::archive::{ArchiveManifest, SignedArchive};
use crate::snapshots::dir as snapdir;

/// The archive set holding a paused sandbox's memory image.
const SUSPEND_SET: &str = "suspend";

/// The memory image in directory `dir` as an archive set.
fn suspend_set(dir: &std::path::Path) -> ArchiveDir {
    ArchiveDir {
        set: SUSPEND_SET.into(),
        dir: dir.to_path_buf(),
    }
}

impl Engine {
    /// Archives a stopped or paused sandbox to the object store and frees its space on the host.
    pub async fn archive_sandbox(&self, id: &str) -> Result<Sandbox> {
        self.require_no_volumes(id, "archiving it").await?;
        if self.load(id).await?.state == SandboxState::Paused {
            self.suspend_sandbox(id, true).await?;
        }
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(
            &s,
            "archive",
            &[SandboxState::Stopped, SandboxState::Suspended],
        )?;
        let keys = self.keys()?;
        let image = self.checked_suspend_image(&s).await?;
        let extra: Vec<ArchiveDir> = image.iter().map(|(_, dir)| suspend_set(dir)).collect();
        let archived = match self.host.archive(id, &extra).await {
            Ok(archived) => archived,
            Err(e) => {
                let e = Error::from(e);
                tracing::warn!(sandbox = %id, error = %e, "archiving failed; the sandbox stays on this host");
                let detail =
                    serde_json::json!({ "code": e.code().as_str(), "error": e.to_string() });
                self.store
                    .append_event(id, "archive_failed", &detail)
                    .await?;
                return Err(e);
            }
        };
        let manifest = ArchiveManifest {
            sandbox_id: id.to_string(),
            created_at: rfc3339(OffsetDateTime::now_utc()),
            suspend_snapshot: image.as_ref().map(|(snap, _)| snap.id.clone()),
            backup_snapshot: None,
            archive: archived.archive,
            report: archived.report.clone(),
        };
        let signed = SignedArchive::sign(manifest, &keys)?;
        self.store.put_archive(&signed).await?;
        let detail = serde_json::json!({
            "memory": image.is_some(),
            "transfer": archived.report,
        });
        self.transition(&mut s, SandboxState::Archived, detail)
            .await?;
        // Archived: the host's copy goes (the memory image's row stays; its files come back on
        // restore).
        if let Err(e) = self.host.destroy(id).await {
            tracing::warn!(sandbox = %id, error = %e, "removing the archived sandbox's local copy");
        }
        if let Some((_, dir)) = &image
            && let Err(e) = tokio::fs::remove_dir_all(dir).await
        {
            tracing::warn!(sandbox = %id, error = %e, "removing the archived memory image's local copy");
        }
        Ok(s)
    }

    /// Brings archived sandbox `s` back onto this host: afterwards it is `stopped` or, when it
    /// was archived paused, `suspended` (the caller holds its lock).
    pub(crate) async fn restore_archived(&self, s: &mut Sandbox) -> Result<()> {
        let Some(signed) = self.store.get_archive(&s.id).await? else {
            // Archived by a server without object storage: the disk never left this host.
            return self
                .transition(
                    s,
                    SandboxState::Stopped,
                    serde_json::json!({ "local": true }),
                )
                .await;
        };
        let keys = self.keys()?;
        signed.verify(&s.id, &keys)?;
        let manifest = &signed.manifest;
        let image_dir = match &manifest.suspend_snapshot {
            Some(snap) => Some(self.snapshots_root()?.join(snap)),
            None => None,
        };
        let extra: Vec<ArchiveDir> = image_dir.iter().map(|dir| suspend_set(dir)).collect();
        let restored = self
            .host
            .restore_archive(&s.id, &manifest.archive, &extra)
            .await?;
        if let (Some(snap), Some(dir)) = (&manifest.suspend_snapshot, &image_dir) {
            let changed = restored
                .changed
                .iter()
                .find(|(set, _)| set == SUSPEND_SET)
                .map(|(_, names)| names.clone())
                .unwrap_or_default();
            let (d, id, k) = (dir.clone(), snap.clone(), keys.clone());
            tokio::task::spawn_blocking(move || snapdir::reseal(&d, &id, &changed, &k))
                .await
                .map_err(|e| Error::Internal(format!("re-sealing task: {e}")))??;
        }
        let to = if manifest.suspend_snapshot.is_some() {
            SandboxState::Suspended
        } else {
            SandboxState::Stopped
        };
        let detail = serde_json::json!({ "restored": true, "transfer": restored.report });
        self.transition(s, to, detail).await?;
        self.store.delete_archive(&s.id).await?;
        Ok(())
    }
}
