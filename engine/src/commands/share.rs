//! A sandbox's host share (`/mnt/dnah-share` in the guest): files read, written, listed and
//! removed on the host, with no guest round trip, while the sandbox runs, is paused or is
//! stopped. The host agent resolves every path beneath the share without following links
//! ([`platinum_hostagent::share`]); the engine checks the sandbox and translates the shapes.

use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use platinum_hostagent::share::{ShareEntry as HostEntry, ShareEntryKind};
use time::OffsetDateTime;

use crate::commands::sandbox::require;
use crate::engine::Engine;
use crate::error::Result;
use crate::model::{SandboxState, ShareEntry};

impl From<HostEntry> for ShareEntry {
    fn from(e: HostEntry) -> Self {
        ShareEntry {
            name: e.name,
            kind: match e.kind {
                ShareEntryKind::File => "file",
                ShareEntryKind::Dir => "dir",
                ShareEntryKind::Symlink => "symlink",
                ShareEntryKind::Other => "other",
            }
            .to_string(),
            size: e.size,
            modified_at: OffsetDateTime::from_unix_timestamp(e.modified)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        }
    }
}

impl Engine {
    /// A sandbox whose directory, and so its share, is on the host: any but an archived one.
    async fn require_share(&self, id: &str) -> Result<()> {
        let s = self.load(id).await?;
        let on_host: Vec<SandboxState> = SandboxState::ALL
            .into_iter()
            .filter(|s| !matches!(s, SandboxState::Archived | SandboxState::Deleted))
            .collect();
        require(&s, "using its share", &on_host).map(drop)
    }

    /// What `path` is in the share (`""` is its root).
    pub async fn share_stat(&self, id: &str, path: &str) -> Result<ShareEntry> {
        self.require_share(id).await?;
        Ok(self.host.share_stat(id, path).await?.into())
    }

    /// The entries of directory `path` in the share, by name.
    pub async fn share_list(&self, id: &str, path: &str) -> Result<Vec<ShareEntry>> {
        self.require_share(id).await?;
        let entries = self.host.share_list(id, path).await?;
        Ok(entries.into_iter().map(Into::into).collect())
    }

    /// Opens file `path` of the share for reading: the file and its size.
    pub async fn share_read(&self, id: &str, path: &str) -> Result<(tokio::fs::File, u64)> {
        self.require_share(id).await?;
        let (file, size) = self.host.share_read(id, path).await?;
        Ok((tokio::fs::File::from_std(file), size))
    }

    /// Writes file `path` of the share from `body` (parents created; the file appears whole
    /// once the body has all arrived). The share's size bounds it: a full share is `no_space`.
    pub async fn share_write<S, E>(&self, id: &str, path: &str, body: S) -> Result<ShareEntry>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send + 'static,
        E: std::fmt::Display,
    {
        self.require_share(id).await?;
        let body = Box::pin(body.map_err(|e| std::io::Error::other(e.to_string())));
        self.host.share_write(id, path, body).await?;
        Ok(self.host.share_stat(id, path).await?.into())
    }

    /// Removes `path` from the share (a directory's contents too with `recursive`).
    pub async fn share_remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.require_share(id).await?;
        Ok(self.host.share_remove(id, path, recursive).await?)
    }
}
