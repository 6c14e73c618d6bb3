//! Pause to disk and resume from it.
//!
//! With memory: the host writes the VM's full state into a snapshot of kind `suspend` and its
//! VMM exits (RAM freed); the sandbox is `suspended`. Resume checks that snapshot (signature,
//! hashes, compatibility: a refused one leaves the sandbox suspended and says why), restores the
//! VM as the same sandbox (same id, address, MAC, processes, files; the clock is re-synced) and
//! removes the image. Without memory: the VM shuts down keeping its disk, and resume boots it.
//! Both resumes go through [`Engine::start_sandbox`], so `start` of a suspended sandbox works too.

use platinum_hostagent::host::snapshot::AfterSave;

use crate::commands::sandbox::require;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::{Sandbox, SandboxState, Snapshot, SnapshotKind};

impl Engine {
    /// Pauses a running or paused sandbox to disk, with its memory (`memory: true`) or only its
    /// disk. No VM process runs for it afterwards.
    pub async fn suspend_sandbox(&self, id: &str, memory: bool) -> Result<Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(
            &s,
            "pause to disk",
            &[SandboxState::Running, SandboxState::Paused],
        )?;
        let detail = if memory {
            let taken = self
                .take_snapshot(&s, SnapshotKind::Suspend, None, AfterSave::Exit)
                .await;
            let snap = match taken {
                Ok(snap) => snap,
                Err(e) => {
                    // A save that failed before the VM exited leaves it running as it was; one
                    // that failed after (sealing the image) leaves no VM: that is a failure the
                    // sandbox shows, with its disk kept for `start`.
                    if !self.host.running().await.contains(&s.id) {
                        self.record_error(&mut s, format!("pause to disk failed: {e}"))
                            .await?;
                    }
                    return Err(e);
                }
            };
            serde_json::json!({ "memory": true, "snapshot": snap.id, "timings": snap.timings })
        } else {
            self.host.stop(id).await?;
            serde_json::json!({ "memory": false })
        };
        self.forget_guest_state(id);
        // Rules that count time spent stopped count from here.
        s.last_activity_at = time::OffsetDateTime::now_utc();
        s.runtime = None;
        self.transition(&mut s, SandboxState::Suspended, detail)
            .await?;
        Ok(s)
    }

    /// The memory image a suspended sandbox resumes from, if it was paused with its memory.
    pub(crate) async fn suspend_image(&self, id: &str) -> Result<Option<Snapshot>> {
        Ok(self
            .store
            .list_snapshots(Some(id), Some(SnapshotKind::Suspend))
            .await?
            .pop())
    }

    /// The resume of a suspended sandbox: refused when its image fails a check (the sandbox
    /// stays suspended, nothing is started).
    pub(crate) async fn checked_suspend_image(
        &self,
        s: &Sandbox,
    ) -> Result<Option<(Snapshot, std::path::PathBuf)>> {
        if s.state != SandboxState::Suspended {
            return Ok(None);
        }
        let Some(image) = self.suspend_image(&s.id).await? else {
            return Ok(None);
        };
        match self.open_snapshot(&image).await {
            Ok(dir) => Ok(Some((image, dir))),
            Err(e) => {
                tracing::warn!(sandbox = %s.id, snapshot = %image.id, error = %e, "refusing to resume from a snapshot that failed its checks");
                let detail = serde_json::json!({ "snapshot": image.id, "refused": e.to_string() });
                self.store
                    .append_event(&s.id, "resume_refused", &detail)
                    .await?;
                Err(e)
            }
        }
    }
}
