//! Directory watching: the changes under a directory in a sandbox, streamed as they happen.
//!
//! [`Engine::watch_dir`] returns once the guest has its watches in place, so every change made
//! after it returns is reported. Each change is an [`FsEvent`] whose `name` is relative to the
//! watched directory (`.` for the directory itself). Dropping the [`DirWatch`] stops the watch in
//! the guest; the stream also ends (`Ok(None)`) when the watched directory is removed, and fails
//! when the sandbox goes away.

use platinum_hostagent::guest::WatchStream;
use platinum_protocol::PathRequest;

use crate::commands::exec::check_guest_path;
use crate::engine::Engine;
use crate::error::Result;

pub use platinum_protocol::{FsEvent, FsOp};

/// What a watch covers.
#[derive(Debug, Clone, Copy, Default)]
pub struct WatchOptions {
    /// Every directory below it too, including ones created later.
    pub recursive: bool,
    /// Allow a directory on a network or FUSE filesystem (NFS, SMB/CIFS, 9p, FUSE, virtio-fs),
    /// where changes made elsewhere can go unseen; refused with `invalid_request` otherwise.
    pub allow_network_mounts: bool,
}

/// A live watch. Dropping it stops watching.
pub struct DirWatch {
    inner: WatchStream,
}

impl DirWatch {
    /// The next change; `None` once the watched directory itself is gone.
    pub async fn next(&mut self) -> Result<Option<FsEvent>> {
        Ok(self.inner.next().await?)
    }
}

impl Engine {
    /// Watches `path` (absolute, or relative to the user's home) for changes, as `options` say.
    /// Fails with `file_not_found`, `not_a_directory`, `permission_denied` (the user must be able
    /// to read the directory) or `invalid_request` (a network mount not allowed).
    pub async fn watch_dir(
        &self,
        id: &str,
        path: &str,
        options: WatchOptions,
        user: Option<String>,
    ) -> Result<DirWatch> {
        check_guest_path(path)?;
        let (_, guest) = self.running_guest(id).await?;
        let at = PathRequest {
            path: path.to_string(),
            user,
        };
        tracing::debug!(sandbox = %id, path, ?options, "watching a directory");
        Ok(DirWatch {
            inner: guest
                .watch(at, options.recursive, options.allow_network_mounts)
                .await?,
        })
    }
}
