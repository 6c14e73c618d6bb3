//! Template ready snapshots: a create restores a saved, booted VM of its template instead of
//! booting one.
//!
//! For each template, image and size (vCPUs, memory) there is at most one snapshot of kind
//! `template`, named `template:<template>:<vcpus>x<MiB>:<image id>`: a VM of the template booted
//! for this alone until its agent answered, then saved to disk (the VMM exits) and signed like
//! any snapshot. The image id is the content hash of kernel, initramfs (with the guest agent) and
//! root filesystem, so a rebuilt image gets a new name and the old snapshot is replaced; a VMM
//! upgrade makes it incompatible, so it is refused, removed and rebuilt.
//!
//! A create that finds no ready snapshot boots (and starts the build in the background, once);
//! one that finds a refused one (tampered, incompatible) removes it, boots, and rebuilds. So a
//! snapshot never makes a create fail that a boot would not. Builds that failed are not retried
//! for [`RETRY_AFTER`]. At start the engine builds the default template's at the default size.
//!
//! The restored copy becomes its own machine before the create returns: the host gives it its
//! own hostname, MAC, address and 64 bytes of host entropy that the guest mixes into its RNG and
//! reseeds from (`reidentify`), and re-syncs its clock.

use platinum_hostagent::host::CreateVm;
use platinum_hostagent::host::snapshot::AfterSave;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::builds::runner::READY_TIMEOUT;
use crate::commands::custom_templates::TemplateImage;
use crate::engine::Engine;
use crate::error::Result;
use crate::ids::new_sandbox_id;
use crate::model::{Sandbox, SandboxState, Snapshot, SnapshotKind};

/// A failed build is not tried again sooner than this.
pub const RETRY_AFTER: Duration = Duration::from_secs(300);

/// Builds in progress and recent failures, by ready-snapshot name.
#[derive(Debug, Default)]
pub struct ReadyBuilds {
    building: Mutex<HashSet<String>>,
    failed: Mutex<HashMap<String, Instant>>,
}

impl ReadyBuilds {
    /// Claims the build of `name`: false when it runs already or failed within [`RETRY_AFTER`].
    fn claim(&self, name: &str) -> bool {
        if self
            .failed
            .lock()
            .expect("ready builds")
            .get(name)
            .is_some_and(|at| at.elapsed() < RETRY_AFTER)
        {
            return false;
        }
        self.building
            .lock()
            .expect("ready builds")
            .insert(name.to_string())
    }

    /// Ends the build of `name`.
    fn finish(&self, name: &str, ok: bool) {
        self.building.lock().expect("ready builds").remove(name);
        let mut failed = self.failed.lock().expect("ready builds");
        if ok {
            failed.remove(name);
        } else {
            failed.insert(name.to_string(), Instant::now());
        }
    }

    /// Whether a build of `name` is in progress.
    pub fn is_building(&self, name: &str) -> bool {
        self.building.lock().expect("ready builds").contains(name)
    }
}

/// What a ready snapshot is of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyKey {
    /// Template name.
    pub template: String,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
}

impl ReadyKey {
    /// Name shared by every image's ready snapshot of this template and size.
    fn prefix(&self) -> String {
        format!(
            "template:{}:{}x{}:",
            self.template, self.vcpus, self.memory_mib
        )
    }

    /// The ready snapshot's name for image `image`.
    pub fn name(&self, image: &str) -> String {
        format!("{}{image}", self.prefix())
    }
}

/// A ready snapshot, checked, to restore.
#[derive(Debug, Clone)]
pub struct ReadySnapshot {
    /// Its record.
    pub snapshot: Snapshot,
    /// Its checked directory.
    pub dir: PathBuf,
    /// What checking it took, ms.
    pub verify_ms: u64,
}

impl Engine {
    /// The ready snapshot of `key`'s template at the image it has now, checked; `None` when
    /// there is none yet (a build is started) or it was refused (it is removed and rebuilt).
    pub(crate) async fn ready_snapshot(&self, key: &ReadyKey) -> Option<ReadySnapshot> {
        if !self.config.template_snapshots || self.config.data_dir.is_none() {
            return None;
        }
        let image = match self.template_image(&key.template).await {
            Ok(image) => image,
            Err(e) => {
                tracing::debug!(template = %key.template, error = %e, "no image for a ready snapshot");
                return None;
            }
        };
        let name = key.name(&image.id);
        match self.store.get_snapshot(&name).await {
            Ok(Some(snap)) => match self.open_snapshot_timed(&snap).await {
                Ok((dir, verify_ms)) => {
                    return Some(ReadySnapshot {
                        snapshot: snap,
                        dir,
                        verify_ms,
                    });
                }
                Err(e) => {
                    tracing::warn!(snapshot = %snap.id, error = %e, "a template's ready snapshot was refused; booting, and building a new one");
                    self.discard_snapshot(&snap.id).await;
                }
            },
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "looking up a ready snapshot");
                return None;
            }
        }
        self.build_ready_in_background(key.clone(), image);
        None
    }

    /// Starts building `key`'s ready snapshot for `image` on a task of its own, unless that
    /// runs already or failed recently.
    pub(crate) fn build_ready_in_background(&self, key: ReadyKey, image: TemplateImage) {
        let name = key.name(&image.id);
        if !self.ready_builds.claim(&name) {
            return;
        }
        let Ok(engine) = self.arc() else {
            self.ready_builds.finish(&name, false);
            return;
        };
        self.spawn_tracked(async move {
            let built = engine.build_ready(&key, &image).await;
            if let Err(e) = &built {
                tracing::warn!(template = %key.template, error = %e, "building a template's ready snapshot failed; creates boot");
            }
            engine.ready_builds.finish(&name, built.is_ok());
        });
    }

    /// Boots a VM of `key`'s template (and starts a custom template's start command), saves it
    /// as the ready snapshot for `image`, and removes the VM and the ready snapshots of older
    /// images.
    pub(crate) async fn build_ready(
        &self,
        key: &ReadyKey,
        image: &TemplateImage,
    ) -> Result<Snapshot> {
        let started = Instant::now();
        let name = key.name(&image.id);
        let builder = builder_sandbox(&new_sandbox_id(), key);
        // The builder holds a VM for seconds and has no store row: it is checked against the
        // host's limits like a create, but reserves nothing while it runs.
        {
            let _admitting = self.admission.lock().await;
            self.admit(&builder).await?;
        }
        let built = async {
            self.boot_bounded(self.host.create(CreateVm {
                id: builder.id.clone(),
                template: image.base.clone(),
                layer: image.layer(),
                vcpus: key.vcpus,
                memory_mib: key.memory_mib,
                env: Default::default(),
                transport: None,
                internet: None,
                egress: Default::default(),
            }))
            .await?;
            if let Some(custom) = &image.custom {
                let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
                self.start_template_process(&builder.id, custom, None, deadline)
                    .await
                    .map_err(|f| {
                        crate::error::Error::Vm(format!(
                            "template {:?}: {}",
                            key.template, f.message
                        ))
                    })?;
            }
            self.take_snapshot(
                &builder,
                SnapshotKind::Template,
                Some(name.clone()),
                AfterSave::Exit,
            )
            .await
        }
        .await;
        if let Err(e) = self.host.destroy(&builder.id).await {
            tracing::warn!(vm = %builder.id, error = %e, "removing a template builder VM");
        }
        let snap = built?;
        self.discard_ready_snapshots(&key.prefix(), |n| n == name, "of an older image")
            .await?;
        tracing::info!(
            template = %key.template,
            snapshot = %snap.id,
            total_ms = started.elapsed().as_millis() as u64,
            "template ready snapshot built"
        );
        Ok(snap)
    }

    /// Removes the ready snapshots whose name starts with `prefix` (a template, or a template
    /// and size), except those `keep` names; `why` is for the log.
    pub(crate) async fn discard_ready_snapshots(
        &self,
        prefix: &str,
        keep: impl Fn(&str) -> bool,
        why: &str,
    ) -> Result<()> {
        for old in self
            .store
            .list_snapshots(None, Some(SnapshotKind::Template))
            .await?
        {
            if old
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with(prefix) && !keep(n))
            {
                tracing::info!(snapshot = %old.id, "removing the ready snapshot {why}");
                self.discard_snapshot(&old.id).await;
            }
        }
        Ok(())
    }

    /// Every template's ready snapshots (of every size and image), oldest first.
    pub async fn ready_snapshots(&self) -> Result<Vec<Snapshot>> {
        self.store
            .list_snapshots(None, Some(SnapshotKind::Template))
            .await
    }

    /// At start: the default template's ready snapshot at the default size, built in the
    /// background if it is missing.
    pub(crate) async fn prepare_default_ready(&self) {
        let key = ReadyKey {
            template: self.config.default_template.clone(),
            vcpus: self.config.default_vcpus,
            memory_mib: self.config.default_memory_mib,
        };
        // Looking it up starts the build when there is none.
        drop(self.ready_snapshot(&key).await);
    }
}

/// The sandbox record a builder VM `id` is saved as: never stored, only named in the snapshot.
pub(crate) fn builder_sandbox(id: &str, key: &ReadyKey) -> Sandbox {
    Sandbox::new_row(
        id.to_string(),
        key.template.clone(),
        key.vcpus,
        key.memory_mib,
        SandboxState::Running,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_template_size_and_image() {
        let key = ReadyKey {
            template: "base".into(),
            vcpus: 2,
            memory_mib: 512,
        };
        assert_eq!(key.name("abc123"), "template:base:2x512:abc123");
        assert!(key.name("x").starts_with(&key.prefix()));
    }

    #[test]
    fn a_build_runs_once_and_a_failure_waits() {
        let builds = ReadyBuilds::default();
        assert!(builds.claim("a"));
        assert!(!builds.claim("a"), "claimed twice");
        assert!(builds.is_building("a"));
        builds.finish("a", false);
        assert!(!builds.is_building("a"));
        assert!(!builds.claim("a"), "retried right after a failure");
        assert!(builds.claim("b"));
        builds.finish("b", true);
        assert!(builds.claim("b"), "a finished build can run again");
    }
}
