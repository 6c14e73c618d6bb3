//! Named persistent volumes: create, list, get, delete; attach to and detach from sandboxes.
//!
//! A volume is an ext4 filesystem in an image on the host ([`platinum_hostagent`] makes and
//! plugs it). Attaching one to a running sandbox hot-adds the disk and has the guest agent mount
//! it at the asked path; attaching one to a stopped sandbox records it, and every boot
//! mounts what is attached ([`Engine::mount_volumes`]). A pause to disk keeps volumes (the
//! restore finds them where they were); snapshots, forks and archives of a sandbox with volumes
//! are refused, because the volume's data would not be in them while the guest's memory
//! remembers it. A volume attached read-write is attached nowhere else; read-only attachments
//! may be shared. Locks: a volume's lock, then its sandbox's, never the other way round.

use platinum_hostagent::guest::GuestClient;
use time::OffsetDateTime;

use crate::commands::sandbox::require;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::new_sandbox_id;
use crate::model::{
    AttachVolume, CreateVolume, SandboxState, Volume, VolumeAttachment, VolumeMount,
};

/// Default size of a new volume, MiB.
pub const DEFAULT_VOLUME_MIB: u64 = 1024;
/// Smallest volume, MiB (ext4 with a journal needs a few).
pub const MIN_VOLUME_MIB: u64 = 16;
/// Largest volume, MiB (1 TiB).
pub const MAX_VOLUME_MIB: u64 = 1 << 20;
/// Checks a volume name: 1-64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
fn check_volume_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "volume name {name:?} must be 1-64 of A-Z a-z 0-9 . _ - (not starting with . or -)"
        )))
    }
}

/// Checks a mount path: absolute, plain (`A-Z a-z 0-9 . _ - /`, no `.` or `..` component, no
/// trailing `/`), and not `/` or a system directory.
pub fn check_mount_path(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::InvalidRequest(format!("mount path {path:?} {why}")));
    if !path.starts_with('/') || path.len() > 1024 {
        return bad("must be absolute and at most 1024 bytes");
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
    {
        return bad("may hold only A-Z a-z 0-9 . _ - /");
    }
    let parts: Vec<&str> = path[1..].split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || *p == "." || *p == "..")
    {
        return bad("must be a plain path (no empty, . or .. components, no trailing /)");
    }
    const SYSTEM: [&str; 6] = ["proc", "sys", "dev", "run", "boot", "etc"];
    if SYSTEM.contains(&parts[0]) {
        return bad("is under a system directory");
    }
    Ok(())
}

/// Mounts a volume in a running guest; what the guest refuses is a conflict.
async fn mount_in(guest: &GuestClient, volume: &Volume, path: &str, readonly: bool) -> Result<()> {
    guest
        .mount_volume(&volume.id, path, readonly)
        .await
        .map_err(|e| in_guest(e, &format!("mounting volume {} at {path}", volume.name)))
}

/// Unmounts a volume in a running guest (nothing mounted is fine; busy is a conflict).
async fn unmount_in(guest: &GuestClient, volume: &Volume, path: &str) -> Result<()> {
    guest
        .unmount_volume(path)
        .await
        .map_err(|e| in_guest(e, &format!("unmounting volume {} from {path}", volume.name)))
}

/// A guest's refusal of a mount or unmount as [`Error::Conflict`] (the volume cannot be used
/// that way now); other failures (an unreachable guest) keep their code.
fn in_guest(e: platinum_hostagent::Error, what: &str) -> Error {
    match e {
        platinum_hostagent::Error::Guest(g) => Error::Conflict(format!("{what}: {}", g.message)),
        other => Error::from(other),
    }
}

/// Whether `volume` may be attached (read-only or not) to sandbox `sandbox` (`None`: one not
/// created yet): not twice to one sandbox, and read-write only where it is attached nowhere
/// else; read-only attachments may share it.
fn check_attachable(volume: &Volume, sandbox: Option<&str>, readonly: bool) -> Result<()> {
    let Some(a) = volume
        .attachments
        .iter()
        .find(|a| Some(a.sandbox_id.as_str()) == sandbox || !a.readonly || !readonly)
    else {
        return Ok(());
    };
    let why = if Some(a.sandbox_id.as_str()) == sandbox {
        format!("is attached to sandbox {} already", a.sandbox_id)
    } else if !a.readonly {
        format!("is attached read-write to sandbox {}", a.sandbox_id)
    } else {
        format!(
            "is attached (read-only) to sandbox {}; only read-only attachments can share it",
            a.sandbox_id
        )
    };
    Err(Error::Conflict(format!("volume {} {why}", volume.name)))
}

/// The lock key of a volume (sandbox ids are alphanumeric, so keys never collide).
pub(crate) fn lock_key(volume_id: &str) -> String {
    format!("volume:{volume_id}")
}

impl Engine {
    /// Creates a volume.
    pub async fn create_volume(&self, req: CreateVolume) -> Result<Volume> {
        check_volume_name(&req.name)?;
        let size_mib = req.size_mib.unwrap_or(DEFAULT_VOLUME_MIB);
        if !(MIN_VOLUME_MIB..=MAX_VOLUME_MIB).contains(&size_mib) {
            return Err(Error::InvalidRequest(format!(
                "size_mib must be {MIN_VOLUME_MIB}-{MAX_VOLUME_MIB}, got {size_mib}"
            )));
        }
        if self.store.get_volume(&req.name).await?.is_some() {
            return Err(Error::Conflict(format!(
                "a volume named {:?} already exists",
                req.name
            )));
        }
        let volume = Volume {
            id: format!("vol{}", &new_sandbox_id()[..16]),
            name: req.name,
            size_mib,
            attachments: Vec::new(),
            created_at: OffsetDateTime::now_utc(),
        };
        self.host.create_volume(&volume.id, size_mib).await?;
        if let Err(e) = self.store.insert_volume(&volume).await {
            let _ = self.host.delete_volume(&volume.id).await;
            return Err(e);
        }
        tracing::info!(volume = %volume.id, name = %volume.name, size_mib, "volume created");
        Ok(volume)
    }

    /// Every volume, oldest first.
    pub async fn list_volumes(&self) -> Result<Vec<Volume>> {
        self.store.list_volumes().await
    }

    /// A volume by id or name.
    pub async fn get_volume(&self, id_or_name: &str) -> Result<Volume> {
        self.store
            .get_volume(id_or_name)
            .await?
            .ok_or_else(|| Error::VolumeNotFound(id_or_name.to_string()))
    }

    /// Deletes a volume and its data; refused while it is attached anywhere.
    pub async fn delete_volume(&self, id_or_name: &str) -> Result<()> {
        let id = self.get_volume(id_or_name).await?.id;
        let _g = self.lock(&lock_key(&id)).await;
        let volume = self.get_volume(&id).await?;
        if let Some(a) = volume.attachments.first() {
            return Err(Error::Conflict(format!(
                "volume {} is attached to sandbox {}; detach it first",
                volume.name, a.sandbox_id
            )));
        }
        self.store.delete_volume(&id).await?;
        self.host.delete_volume(&id).await?;
        tracing::info!(volume = %id, "volume deleted");
        Ok(())
    }

    /// Attaches a volume to a running sandbox (hot-added and mounted now) or a stopped one
    /// (mounted at its next boot).
    pub async fn attach_volume(&self, id_or_name: &str, req: AttachVolume) -> Result<Volume> {
        check_mount_path(&req.path)?;
        let id = self.get_volume(id_or_name).await?.id;
        let _v = self.lock(&lock_key(&id)).await;
        let mut volume = self.get_volume(&id).await?;
        let _s = self.lock(&req.sandbox_id).await;
        let sandbox = self.load(&req.sandbox_id).await?;
        require(
            &sandbox,
            "attaching a volume",
            &[SandboxState::Running, SandboxState::Stopped],
        )?;
        check_attachable(&volume, Some(&sandbox.id), req.readonly)?;
        let mounted_here = self.attachments_of(&sandbox.id).await?;
        if let Some((other, _)) = mounted_here.iter().find(|(_, a)| a.path == req.path) {
            return Err(Error::Conflict(format!(
                "sandbox {} has volume {} mounted at {} already",
                sandbox.id, other.name, req.path
            )));
        }
        self.host
            .attach_volume(&sandbox.id, &volume.id, req.readonly)
            .await?;
        if sandbox.state == SandboxState::Running {
            let mounted = async {
                let guest = self.host.guest(&sandbox.id).await?;
                mount_in(&guest, &volume, &req.path, req.readonly).await
            }
            .await;
            if let Err(e) = mounted {
                if let Err(undo) = self.host.detach_volume(&sandbox.id, &volume.id).await {
                    tracing::warn!(volume = %volume.id, sandbox = %sandbox.id, error = %undo, "detaching after a failed mount");
                }
                return Err(e);
            }
        }
        volume.attachments.push(VolumeAttachment {
            sandbox_id: sandbox.id.clone(),
            path: req.path.clone(),
            readonly: req.readonly,
        });
        self.store.update_volume(&volume).await?;
        tracing::info!(volume = %volume.id, sandbox = %sandbox.id, path = %req.path, readonly = req.readonly, "volume attached");
        Ok(volume)
    }

    /// Detaches a volume from a sandbox: unmounted and hot-removed when it runs (refused while
    /// something in the guest keeps the mount busy), dropped from its disks when it is stopped,
    /// forgotten when the sandbox is gone.
    pub async fn detach_volume(&self, id_or_name: &str, sandbox_id: &str) -> Result<Volume> {
        let id = self.get_volume(id_or_name).await?.id;
        let _v = self.lock(&lock_key(&id)).await;
        let mut volume = self.get_volume(&id).await?;
        let Some(at) = volume
            .attachments
            .iter()
            .position(|a| a.sandbox_id == sandbox_id)
        else {
            return Err(Error::Conflict(format!(
                "volume {} is not attached to sandbox {sandbox_id}",
                volume.name
            )));
        };
        let _s = self.lock(sandbox_id).await;
        match self.load(sandbox_id).await {
            Ok(sandbox) => {
                require(
                    &sandbox,
                    "detaching a volume",
                    &[SandboxState::Running, SandboxState::Stopped],
                )?;
                if sandbox.state == SandboxState::Running {
                    let guest = self.host.guest(sandbox_id).await?;
                    unmount_in(&guest, &volume, &volume.attachments[at].path).await?;
                }
                self.host.detach_volume(sandbox_id, &volume.id).await?;
            }
            Err(Error::SandboxNotFound(_)) => {}
            Err(e) => return Err(e),
        }
        volume.attachments.remove(at);
        self.store.update_volume(&volume).await?;
        tracing::info!(volume = %volume.id, sandbox = %sandbox_id, "volume detached");
        Ok(volume)
    }

    /// The volumes attached to a sandbox, each with its attachment there.
    pub async fn attachments_of(
        &self,
        sandbox_id: &str,
    ) -> Result<Vec<(Volume, VolumeAttachment)>> {
        Ok(self
            .store
            .list_volumes()
            .await?
            .into_iter()
            .filter_map(|v| {
                let a = v
                    .attachments
                    .iter()
                    .find(|a| a.sandbox_id == sandbox_id)
                    .cloned()?;
                Some((v, a))
            })
            .collect())
    }

    /// Refuses `action` on a sandbox that has volumes attached (see the module doc).
    pub(crate) async fn require_no_volumes(&self, sandbox_id: &str, action: &str) -> Result<()> {
        let attached = self.attachments_of(sandbox_id).await?;
        if attached.is_empty() {
            return Ok(());
        }
        let names: Vec<&str> = attached.iter().map(|(v, _)| v.name.as_str()).collect();
        Err(Error::Conflict(format!(
            "sandbox {sandbox_id} has volumes attached ({}); detach them before {action}: \
             their data would not be part of it",
            names.join(", ")
        )))
    }

    /// Mounts every volume attached to a sandbox its VM just booted with (a cold boot: a
    /// restore has them mounted in its memory already).
    pub(crate) async fn mount_volumes(&self, sandbox_id: &str) -> Result<()> {
        let attached = self.attachments_of(sandbox_id).await?;
        if attached.is_empty() {
            return Ok(());
        }
        let guest = self.host.guest(sandbox_id).await?;
        for (volume, a) in attached {
            mount_in(&guest, &volume, &a.path, a.readonly).await?;
        }
        Ok(())
    }

    /// Checks volume mounts asked for at create before anything is created: every volume
    /// exists, the paths are valid and distinct, and each could be attached.
    pub(crate) async fn check_volume_mounts(&self, mounts: &[VolumeMount]) -> Result<()> {
        let mut paths = std::collections::BTreeSet::new();
        let mut volumes = std::collections::BTreeSet::new();
        for m in mounts {
            check_mount_path(&m.path)?;
            let v = self.get_volume(&m.volume).await?;
            if !paths.insert(m.path.clone()) || !volumes.insert(v.id.clone()) {
                return Err(Error::InvalidRequest(format!(
                    "volume {} or mount path {} is named twice",
                    m.volume, m.path
                )));
            }
            check_attachable(&v, None, m.readonly)?;
        }
        Ok(())
    }

    /// Drops a deleted sandbox's attachments (its disks went with it).
    pub(crate) async fn forget_volumes_of(&self, sandbox_id: &str) {
        let attached = match self.attachments_of(sandbox_id).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(sandbox = %sandbox_id, error = %e, "listing the volumes of a deleted sandbox");
                return;
            }
        };
        for (volume, _) in attached {
            if let Err(e) = self.detach_volume(&volume.id, sandbox_id).await {
                tracing::warn!(sandbox = %sandbox_id, volume = %volume.name, error = %e, "forgetting a deleted sandbox's volume");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_paths_are_plain_absolute_and_not_system_directories() {
        for ok in ["/data", "/home/user/work", "/mnt/v-1_2.x"] {
            check_mount_path(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in [
            "",
            "data",
            "/",
            "/data/",
            "/a//b",
            "/a/../etc",
            "/a/./b",
            "/proc/x",
            "/dev",
            "/etc",
            "/run/x",
            "/sys",
            "/has space",
            "/semi;colon",
            "/quote'",
        ] {
            assert!(check_mount_path(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn volume_names_are_checked() {
        for ok in ["data", "my-vol.1", "A_b"] {
            check_volume_name(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        let long = "x".repeat(65);
        for bad in ["", ".hidden", "-x", "a/b", "a b", long.as_str()] {
            assert!(check_volume_name(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
