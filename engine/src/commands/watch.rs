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
    /// Watches `path` (absolute, or relative to the user's home) for changes; with `recursive`,
    /// every directory below it too. Fails with `file_not_found`, `not_a_directory` or
    /// `permission_denied` (the user must be able to read the directory).
    pub async fn watch_dir(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
        user: Option<String>,
    ) -> Result<DirWatch> {
        check_guest_path(path)?;
        let (_, guest) = self.running_guest(id).await?;
        let at = PathRequest {
            path: path.to_string(),
            user,
        };
        tracing::debug!(sandbox = %id, path, recursive, "watching a directory");
        Ok(DirWatch {
            inner: guest.watch(at, recursive).await?,
        })
    }
}
