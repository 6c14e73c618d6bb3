//! File commands. Guest paths are absolute or relative to the user's home (resolved in the guest).
//! Contents stream both ways; uploads are capped at `max_upload_bytes` and an upload that fails
//! half-way leaves the destination untouched.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use platinum_hostagent::guest::FileDownload;
use platinum_protocol::{PathRequest, WriteFile};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::commands::exec::check_guest_path;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::FileInfo;

fn at(path: &str, user: Option<String>) -> Result<PathRequest> {
    check_guest_path(path)?;
    Ok(PathRequest {
        path: path.to_string(),
        user,
    })
}

/// Depth limit for recursive listings.
const MAX_LIST_DEPTH: u32 = 32;

impl Engine {
    /// Opens a file for streaming download.
    pub async fn read_file(
        &self,
        id: &str,
        path: &str,
        user: Option<String>,
    ) -> Result<FileDownload> {
        let req = at(path, user)?;
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.read_file(req).await?)
    }

    /// Writes a file from a byte stream. `declared_len` (e.g. Content-Length) is checked against
    /// the upload limit before any byte moves; the stream itself is counted too.
    pub async fn write_file<S, E>(
        &self,
        id: &str,
        path: &str,
        user: Option<String>,
        mode: Option<u32>,
        declared_len: Option<u64>,
        body: S,
    ) -> Result<FileInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let limit = self.config.max_upload_bytes;
        if declared_len.is_some_and(|n| n > limit) {
            return Err(Error::PayloadTooLarge { limit });
        }
        if mode.is_some_and(|m| m > 0o7777) {
            return Err(Error::InvalidRequest("mode must be at most 0o7777".into()));
        }
        let req = WriteFile {
            at: at(path, user)?,
            mode,
            append: false,
            create_parents: true,
        };
        let (_, guest) = self.running_guest(id).await?;
        let too_large = Arc::new(AtomicBool::new(false));
        let flag = too_large.clone();
        let mut seen: u64 = 0;
        let counted = body.map(move |chunk| {
            let chunk = chunk
                .map_err(|e| platinum_hostagent::Error::Invalid(format!("upload body: {e}")))?;
            seen += chunk.len() as u64;
            if seen > limit {
                flag.store(true, Ordering::Relaxed);
                return Err(platinum_hostagent::Error::Invalid(
                    "upload too large".into(),
                ));
            }
            Ok(chunk)
        });
        match guest.write_file(req, counted).await {
            Ok(entry) => Ok(entry.into()),
            Err(_) if too_large.load(Ordering::Relaxed) => Err(Error::PayloadTooLarge { limit }),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists a directory (`depth` 1 = children only).
    pub async fn list_dir(
        &self,
        id: &str,
        path: &str,
        depth: u32,
        user: Option<String>,
    ) -> Result<Vec<FileInfo>> {
        if depth == 0 || depth > MAX_LIST_DEPTH {
            return Err(Error::InvalidRequest(format!(
                "depth must be 1..={MAX_LIST_DEPTH}"
            )));
        }
        let req = at(path, user)?;
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest
            .list_dir(req, depth)
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Describes one path.
    pub async fn stat(&self, id: &str, path: &str, user: Option<String>) -> Result<FileInfo> {
        let req = at(path, user)?;
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.stat(req).await?.into())
    }

    /// `mkdir -p`; returns the directory and whether it was created.
    pub async fn make_dir(
        &self,
        id: &str,
        path: &str,
        user: Option<String>,
    ) -> Result<(FileInfo, bool)> {
        let req = at(path, user)?;
        let (_, guest) = self.running_guest(id).await?;
        let r = guest.make_dir(req, None).await?;
        Ok((r.entry.into(), r.created))
    }

    /// Removes a file or (with `recursive`) a directory tree.
    pub async fn remove(
        &self,
        id: &str,
        path: &str,
        recursive: bool,
        user: Option<String>,
    ) -> Result<()> {
        let req = at(path, user)?;
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.remove(req, recursive).await?)
    }

    /// Moves or renames.
    pub async fn rename(
        &self,
        id: &str,
        from: &str,
        to: &str,
        overwrite: bool,
        user: Option<String>,
    ) -> Result<FileInfo> {
        check_guest_path(from)?;
        check_guest_path(to)?;
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest
            .rename(from.into(), to.into(), user, overwrite)
            .await?
            .into())
    }

    /// Changes permission bits.
    pub async fn chmod(&self, id: &str, path: &str, mode: u32, user: Option<String>) -> Result<()> {
        if mode > 0o7777 {
            return Err(Error::InvalidRequest("mode must be at most 0o7777".into()));
        }
        let req = at(path, user)?;
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.chmod(req, mode).await?)
    }

    /// Changes owner and/or group.
    pub async fn chown(
        &self,
        id: &str,
        path: &str,
        owner: Option<String>,
        group: Option<String>,
        user: Option<String>,
    ) -> Result<()> {
        if owner.is_none() && group.is_none() {
            return Err(Error::InvalidRequest(
                "give an owner, a group, or both".into(),
            ));
        }
        let req = at(path, user)?;
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.chown(req, owner, group).await?)
    }
}
