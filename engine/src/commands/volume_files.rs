//! Files in a named volume, whether or not a sandbox has it mounted: list, stat, read, write,
//! mkdir, remove, and owner/mode changes.
//!
//! Where the data is reached depends on the volume's attachments, decided under the volume's
//! lock ([`Engine::volume_route`]):
//! - attached to a running sandbox: through that sandbox's guest file API (the commands of
//!   [`crate::commands::files`]), the path joined under the attachment's mount path, acting as
//!   the sandbox's default user (root when an owner is asked for);
//! - attached nowhere, or only to stopped sandboxes: in the volume's image on the host, without
//!   mounting it ([`platinum_hostagent::volume_files`]), holding the volume's lock and those of
//!   the stopped sandboxes for the whole operation, so nothing boots or attaches it meanwhile;
//! - attached to a sandbox in any other state (paused, suspended with its memory, ...): refused
//!   (`conflict`), because the guest's memory holds the mounted filesystem.
//!
//! Paths are relative to the volume's root, checked the same way on both routes
//! ([`platinum_hostagent::volume_files::components`]: no `..`, no NUL, ...). Owners are numeric
//! (uid/gid); through a guest, uid/gid 0 and 1000 (the templates' `root` and `user`) can be
//! given and guest owner names read back as those numbers.

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use platinum_hostagent::volume_files::{VOLUME_OWNER, VolumeEntry, VolumeEntryKind, components};
use std::sync::atomic::Ordering;
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;

use crate::commands::files::{CreateAs, counted_upload};
use crate::commands::volumes::lock_key;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{FileInfo, SandboxState, Volume, VolumeFileEntry};

pub use platinum_hostagent::volume_files::VolumeAttrs;

/// Uid (and gid) of the nobody account, for guest owner names this module does not know.
const NOBODY: u32 = 65534;

/// A file being read from a volume.
pub struct VolumeDownload {
    /// Its size in bytes.
    pub size: u64,
    /// Its contents.
    pub body: BoxStream<'static, Result<Bytes>>,
}

impl std::fmt::Debug for VolumeDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeDownload")
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// Where a volume's files are reached.
enum Route {
    /// Through running sandbox `sandbox`, where the volume is mounted at `mount`.
    Guest { sandbox: String, mount: String },
    /// In the image on the host; the guards keep attaches and boots out meanwhile.
    Image { _locks: Vec<OwnedMutexGuard<()>> },
}

/// The checked components of `path`, as a typed `invalid_request` when they are not.
fn parts(path: &str) -> Result<Vec<&str>> {
    components(path).map_err(Error::from)
}

fn time_of(secs: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl From<VolumeEntry> for VolumeFileEntry {
    fn from(e: VolumeEntry) -> Self {
        VolumeFileEntry {
            name: e.name,
            path: e.path,
            kind: match e.kind {
                VolumeEntryKind::File => "file",
                VolumeEntryKind::Dir => "dir",
                VolumeEntryKind::Symlink => "symlink",
                VolumeEntryKind::Other => "other",
            }
            .to_string(),
            size: e.size,
            mode: e.mode,
            uid: e.uid,
            gid: e.gid,
            atime: time_of(e.atime),
            mtime: time_of(e.mtime),
            ctime: time_of(e.ctime),
            symlink_target: e.target,
        }
    }
}

/// A guest owner or group name as a number: `root` 0, `user` 1000, digits as themselves, any
/// other name [`NOBODY`].
fn id_of(name: &str) -> u32 {
    match name {
        "root" => 0,
        "user" => VOLUME_OWNER,
        n => n.parse().unwrap_or(NOBODY),
    }
}

/// A uid or gid as the guest account name it can be given as.
fn name_of(id: u32) -> Result<String> {
    match id {
        0 => Ok("root".into()),
        VOLUME_OWNER => Ok("user".into()),
        other => Err(Error::Unsupported(format!(
            "owner {other}: while a running sandbox has the volume mounted only uid/gid 0 and \
             {VOLUME_OWNER} can be set"
        ))),
    }
}

/// A guest file's description as a volume entry at `path` (from the volume's root).
fn from_guest(info: FileInfo, path: String) -> VolumeFileEntry {
    VolumeFileEntry {
        name: path.rsplit('/').next().unwrap_or("").to_string(),
        path,
        kind: info.kind,
        size: info.size,
        mode: info.mode,
        uid: id_of(&info.owner),
        gid: id_of(&info.group),
        atime: info.modified_at,
        mtime: info.modified_at,
        ctime: info.modified_at,
        symlink_target: info.symlink_target,
    }
}

/// The path from the volume's root of `parts`.
fn volume_path(parts: &[&str]) -> String {
    format!("/{}", parts.join("/"))
}

/// The guest path of `parts` under mount path `mount`.
fn guest_path(mount: &str, parts: &[&str]) -> String {
    if parts.is_empty() {
        mount.to_string()
    } else {
        format!("{mount}/{}", parts.join("/"))
    }
}

/// The user a guest request acts as, and the owner it hands what it creates to: the default
/// user, or root handing it to the asked owner.
fn guest_create_as(attrs: VolumeAttrs) -> Result<CreateAs> {
    let owner = attrs.uid.or(attrs.gid).map(name_of).transpose()?;
    Ok(CreateAs {
        user: owner.as_ref().map(|_| "root".to_string()),
        mode: attrs.mode,
        owner,
        ..CreateAs::default()
    })
}

impl Engine {
    /// Decides where volume `id_or_name`'s files are reached (see the module documentation).
    async fn volume_route(&self, id_or_name: &str) -> Result<(Volume, Route)> {
        let id = self.get_volume(id_or_name).await?.id;
        let volume_lock = self.lock(&lock_key(&id)).await;
        let volume = self.get_volume(&id).await?;
        let mut attached: Vec<&str> = volume
            .attachments
            .iter()
            .map(|a| a.sandbox_id.as_str())
            .collect();
        attached.sort_unstable();
        for a in &volume.attachments {
            if let Ok(s) = self.load(&a.sandbox_id).await
                && s.state == SandboxState::Running
            {
                let route = Route::Guest {
                    sandbox: s.id,
                    mount: a.path.clone(),
                };
                return Ok((volume, route));
            }
        }
        let mut locks = vec![volume_lock];
        for sandbox in attached {
            locks.push(self.lock(sandbox).await);
            match self.load(sandbox).await {
                Ok(s) if s.state == SandboxState::Stopped => {}
                Err(Error::SandboxNotFound(_)) => {}
                Ok(s) => {
                    return Err(Error::Conflict(format!(
                        "volume {} is mounted in sandbox {sandbox}, which is {}; start or stop \
                         it to reach the volume's files",
                        volume.name,
                        s.state.as_str()
                    )));
                }
                Err(e) => return Err(e),
            }
        }
        Ok((volume, Route::Image { _locks: locks }))
    }

    /// What `path` is in a volume (a final symlink described as itself on the host route).
    pub async fn volume_stat(&self, volume: &str, path: &str) -> Result<VolumeFileEntry> {
        let parts = parts(path)?;
        match self.volume_route(volume).await? {
            (_, Route::Guest { sandbox, mount }) => {
                let info = self
                    .stat(&sandbox, &guest_path(&mount, &parts), None)
                    .await?;
                Ok(from_guest(info, volume_path(&parts)))
            }
            (v, Route::Image { .. }) => Ok(self.host.volume_stat(&v.id, path).await?.into()),
        }
    }

    /// The entries of directory `path` of a volume, `depth` levels deep (1: its children).
    pub async fn volume_list(
        &self,
        volume: &str,
        path: &str,
        depth: u32,
    ) -> Result<Vec<VolumeFileEntry>> {
        let parts = parts(path)?;
        match self.volume_route(volume).await? {
            (_, Route::Guest { sandbox, mount }) => {
                let listed = self
                    .list_dir(&sandbox, &guest_path(&mount, &parts), depth, None)
                    .await?;
                Ok(listed
                    .into_iter()
                    .filter_map(|info| {
                        let rel = info.path.strip_prefix(&mount)?.to_string();
                        Some(from_guest(info, rel))
                    })
                    .collect())
            }
            (v, Route::Image { .. }) => Ok(self
                .host
                .volume_list(&v.id, path, depth)
                .await?
                .into_iter()
                .map(Into::into)
                .collect()),
        }
    }

    /// Opens regular file `path` of a volume for reading (on the host route, a private copy
    /// taken under the volume's lock).
    pub async fn volume_read(&self, volume: &str, path: &str) -> Result<VolumeDownload> {
        let parts = parts(path)?;
        match self.volume_route(volume).await? {
            (_, Route::Guest { sandbox, mount }) => {
                let dl = self
                    .read_file(&sandbox, &guest_path(&mount, &parts), None)
                    .await?;
                Ok(VolumeDownload {
                    size: dl.entry.size,
                    body: dl.into_stream().boxed(),
                })
            }
            (v, Route::Image { .. }) => {
                let (file, size) = self.host.volume_read(&v.id, path).await?;
                let body = tokio_util::io::ReaderStream::new(tokio::fs::File::from_std(file))
                    .map_err(|e| Error::Internal(format!("reading a volume file copy: {e}")))
                    .boxed();
                Ok(VolumeDownload { size, body })
            }
        }
    }

    /// Writes file `path` of a volume from `body` (parents created, replaced whole), owned by
    /// `attrs`' uid/gid (default 1000) with its mode (default 0o644). Uploads are capped at
    /// `max_upload_bytes`, checked against `declared_len` first.
    pub async fn volume_write<S, E>(
        &self,
        volume: &str,
        path: &str,
        attrs: VolumeAttrs,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<VolumeFileEntry>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display + 'static,
    {
        let parts = parts(path)?;
        if parts.is_empty() {
            return Err(Error::guest(
                crate::error::ErrorCode::IsADirectory,
                "/ is the volume's root directory",
            ));
        }
        let limit = self.config.max_upload_bytes;
        if declared_len.is_some_and(|n| n > limit) {
            return Err(Error::PayloadTooLarge { limit });
        }
        match self.volume_route(volume).await? {
            (_, Route::Guest { sandbox, mount }) => {
                let how = guest_create_as(attrs)?;
                let info = self
                    .write_file(
                        &sandbox,
                        &guest_path(&mount, &parts),
                        how,
                        declared_len,
                        body,
                    )
                    .await?;
                Ok(from_guest(info, volume_path(&parts)))
            }
            (v, Route::Image { .. }) => {
                let (counted, too_large) = counted_upload(body, limit);
                let counted = counted.map_err(|e| std::io::Error::other(e.to_string()));
                let written = self
                    .host
                    .volume_write(&v.id, path, Box::pin(counted), attrs, limit)
                    .await;
                match written {
                    Ok(entry) => {
                        tracing::info!(volume = %v.id, path = %entry.path, size = entry.size, "volume file written on the host");
                        Ok(entry.into())
                    }
                    Err(_) if too_large.load(Ordering::Relaxed) => {
                        Err(Error::PayloadTooLarge { limit })
                    }
                    Err(e) => Err(e.into()),
                }
            }
        }
    }

    /// Creates directory `path` in a volume (`parents`: missing parents too, else a missing
    /// parent is `file_not_found`); returns it and whether it was created.
    pub async fn volume_make_dir(
        &self,
        volume: &str,
        path: &str,
        parents: bool,
        attrs: VolumeAttrs,
    ) -> Result<(VolumeFileEntry, bool)> {
        let parts = parts(path)?;
        match self.volume_route(volume).await? {
            (_, Route::Guest { sandbox, mount }) => {
                if !parents && let Some((_, up)) = parts.split_last() {
                    self.stat(&sandbox, &guest_path(&mount, up), None).await?;
                }
                let how = guest_create_as(attrs)?;
                let (info, created) = self
                    .make_dir(&sandbox, &guest_path(&mount, &parts), how)
                    .await?;
                Ok((from_guest(info, volume_path(&parts)), created))
            }
            (v, Route::Image { .. }) => {
                let (entry, created) = self
                    .host
                    .volume_make_dir(&v.id, path, parents, attrs)
                    .await?;
                Ok((entry.into(), created))
            }
        }
    }

    /// Removes `path` (a directory with everything in it) from a volume.
    pub async fn volume_remove(&self, volume: &str, path: &str) -> Result<()> {
        let parts = parts(path)?;
        if parts.is_empty() {
            return Err(Error::InvalidRequest(
                "the volume's root cannot be removed".into(),
            ));
        }
        match self.volume_route(volume).await? {
            (_, Route::Guest { sandbox, mount }) => {
                self.remove(&sandbox, &guest_path(&mount, &parts), true, None)
                    .await
            }
            (v, Route::Image { .. }) => Ok(self.host.volume_remove(&v.id, path).await?),
        }
    }

    /// Changes the owner, group and/or permission bits of `path` in a volume.
    pub async fn volume_set_attrs(
        &self,
        volume: &str,
        path: &str,
        attrs: VolumeAttrs,
    ) -> Result<VolumeFileEntry> {
        let parts = parts(path)?;
        if attrs.mode.is_some_and(|m| m > 0o7777) {
            return Err(Error::InvalidRequest("mode must be at most 0o7777".into()));
        }
        match self.volume_route(volume).await? {
            (_, Route::Guest { sandbox, mount }) => {
                let at = guest_path(&mount, &parts);
                let root = Some("root".to_string());
                if let Some(mode) = attrs.mode {
                    self.chmod(&sandbox, &at, mode, root.clone()).await?;
                }
                let owner = attrs.uid.map(name_of).transpose()?;
                let group = attrs.gid.map(name_of).transpose()?;
                if owner.is_some() || group.is_some() {
                    self.chown(&sandbox, &at, owner, group, root).await?;
                }
                let info = self.stat(&sandbox, &at, None).await?;
                Ok(from_guest(info, volume_path(&parts)))
            }
            (v, Route::Image { .. }) => {
                Ok(self.host.volume_set_attrs(&v.id, path, attrs).await?.into())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_owners_map_to_numbers_and_back() {
        assert_eq!((id_of("root"), id_of("user"), id_of("42")), (0, 1000, 42));
        assert_eq!(id_of("postgres"), NOBODY);
        assert_eq!(name_of(0).unwrap(), "root");
        assert_eq!(name_of(1000).unwrap(), "user");
        assert!(matches!(name_of(7), Err(Error::Unsupported(_))));
    }

    #[test]
    fn paths_join_under_the_mount_and_bad_ones_are_invalid_requests() {
        assert_eq!(
            guest_path("/data", &parts("/a/b c").unwrap()),
            "/data/a/b c"
        );
        assert_eq!(guest_path("/data", &parts("/").unwrap()), "/data");
        for bad in ["../etc", "/a/../../b", "a\0b"] {
            let e = parts(bad).unwrap_err();
            assert_eq!(e.code(), crate::error::ErrorCode::InvalidRequest, "{bad:?}");
        }
    }

    /// A volume attached to sandbox `sandbox` in `state` (seeded in the store).
    async fn attached(state: SandboxState) -> std::sync::Arc<Engine> {
        use crate::store::Store;
        let (engine, store) = crate::testing::engine().await;
        store
            .insert_sandbox(&crate::testing::sandbox("sb1", state))
            .await
            .unwrap();
        let volume = Volume {
            id: "vol1".into(),
            name: "data".into(),
            size_mib: 16,
            attachments: vec![crate::model::VolumeAttachment {
                sandbox_id: "sb1".into(),
                path: "/data".into(),
                readonly: false,
            }],
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        store.insert_volume(&volume).await.unwrap();
        engine
    }

    #[tokio::test]
    async fn the_route_follows_the_attached_sandboxs_state() {
        // Paused: the guest's memory holds the mounted filesystem; neither route is safe.
        let engine = attached(SandboxState::Paused).await;
        let e = engine.volume_stat("data", "/x").await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::Conflict, "{e}");
        // Stopped: the image on the host (which this test host does not have).
        let engine = attached(SandboxState::Stopped).await;
        let e = engine.volume_stat("data", "/x").await.unwrap_err();
        assert!(e.to_string().contains("runs no VMs"), "{e}");
        // Bad paths are refused before any route is taken.
        let e = engine.volume_remove("data", "/").await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::InvalidRequest, "{e}");
    }

    #[tokio::test]
    async fn content_of_a_missing_volume_is_volume_not_found() {
        let (engine, _) = crate::testing::engine().await;
        let e = engine.volume_stat("nope", "/").await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::VolumeNotFound);
        let e = engine.volume_list("nope", "/a/../b", 1).await.unwrap_err();
        assert_eq!(e.code(), crate::error::ErrorCode::InvalidRequest);
    }
}
