//! File commands. Guest paths are absolute or relative to the user's home (resolved in the guest).
//! Contents stream both ways; uploads are capped at `max_upload_bytes` and an upload that fails
//! half-way leaves the destination untouched.

use crate::process::FileDownload;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use platinum_protocol::{PathRequest, WriteFile};
use std::collections::BTreeMap;
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

/// Who a file write or a `make_dir` acts as, and who gets what it creates.
#[derive(Debug, Clone, Default)]
pub struct CreateAs {
    /// The user it runs as: relative paths resolve in its home and its permissions apply
    /// (default: the sandbox's default user).
    pub user: Option<String>,
    /// Permission bits of what is created (default 0o644 for files, 0o755 for directories).
    pub mode: Option<u32>,
    /// Hand the file or directory, and every parent directory created for it, to this user (its
    /// owner, and its group) in the same guest request: what E2B's envd does for files root
    /// creates on a user's behalf. Needs `user` to be root.
    pub owner: Option<String>,
    /// User metadata to store on a written file (see [`FileInfo::metadata`]): keys are HTTP
    /// token characters (stored in lower case), values printable ASCII. A replaced file's old
    /// metadata goes with it. Ignored by `make_dir`.
    pub metadata: BTreeMap<String, String>,
}

/// Metadata keys one file may be given.
pub const MAX_METADATA_KEYS: usize = 64;
/// Bytes of one metadata key (the guest stores it as `user.e2b.<key>`, at most 255 bytes).
pub const MAX_METADATA_KEY_BYTES: usize = 200;
/// Bytes of one metadata value.
pub const MAX_METADATA_VALUE_BYTES: usize = 4096;

/// Checks user metadata for a file (see [`CreateAs::metadata`]).
fn check_metadata(metadata: &BTreeMap<String, String>) -> Result<()> {
    let bad = |m: String| Err(Error::InvalidRequest(m));
    if metadata.len() > MAX_METADATA_KEYS {
        return bad(format!("at most {MAX_METADATA_KEYS} metadata keys"));
    }
    let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let mut lower = std::collections::HashSet::new();
    for (key, value) in metadata {
        if key.is_empty() || key.len() > MAX_METADATA_KEY_BYTES || !key.chars().all(token) {
            return bad(format!(
                "metadata key {key:?} must be 1 to {MAX_METADATA_KEY_BYTES} HTTP token characters \
                 (letters, digits and !#$%&'*+-.^_`|~)"
            ));
        }
        if !lower.insert(key.to_ascii_lowercase()) {
            return bad(format!(
                "metadata key {key:?} is given twice (keys ignore case)"
            ));
        }
        if value.len() > MAX_METADATA_VALUE_BYTES
            || !value.chars().all(|c| (' '..='~').contains(&c))
        {
            return bad(format!(
                "metadata value for {key:?} must be at most {MAX_METADATA_VALUE_BYTES} printable \
                 ASCII characters"
            ));
        }
    }
    Ok(())
}

impl CreateAs {
    /// As `user`, with everything else defaulted.
    pub fn user(user: Option<String>) -> Self {
        CreateAs {
            user,
            ..CreateAs::default()
        }
    }

    fn check(&self) -> Result<()> {
        if self.mode.is_some_and(|m| m > 0o7777) {
            return Err(Error::InvalidRequest("mode must be at most 0o7777".into()));
        }
        check_metadata(&self.metadata)
    }
}

/// `body` cut off with an error once more than `limit` bytes have come; the flag says whether
/// that is why it failed (the caller answers `payload_too_large` then).
pub(crate) fn counted_upload<S, E>(
    body: S,
    limit: u64,
) -> (
    impl Stream<Item = std::result::Result<Bytes, platinum_hostagent::Error>> + Send,
    Arc<AtomicBool>,
)
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let too_large = Arc::new(AtomicBool::new(false));
    let flag = too_large.clone();
    let mut seen: u64 = 0;
    let counted = body.map(move |chunk| {
        let chunk =
            chunk.map_err(|e| platinum_hostagent::Error::Invalid(format!("upload body: {e}")))?;
        seen += chunk.len() as u64;
        if seen > limit {
            flag.store(true, Ordering::Relaxed);
            return Err(platinum_hostagent::Error::Invalid(
                "upload too large".into(),
            ));
        }
        Ok(chunk)
    });
    (counted, too_large)
}

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
        Ok(FileDownload::new(guest.read_file(req).await?))
    }

    /// Reads a whole file of at most `limit` bytes (`payload_too_large` when it is larger,
    /// before more than `limit` bytes were read).
    pub async fn read_to_vec(
        &self,
        id: &str,
        path: &str,
        user: Option<String>,
        limit: usize,
    ) -> Result<Vec<u8>> {
        let too_large = || Error::PayloadTooLarge {
            limit: limit as u64,
        };
        let mut dl = self.read_file(id, path, user).await?;
        if dl.entry.size > limit as u64 {
            return Err(too_large());
        }
        let mut data = Vec::with_capacity(dl.entry.size as usize);
        while let Some(chunk) = dl.chunk().await? {
            if data.len() + chunk.len() > limit {
                return Err(too_large());
            }
            data.extend_from_slice(&chunk);
        }
        Ok(data)
    }

    /// Writes a file from a byte stream, creating missing parent directories. `declared_len`
    /// (e.g. Content-Length) is checked against the upload limit before any byte moves; the
    /// stream itself is counted too.
    pub async fn write_file<S, E>(
        &self,
        id: &str,
        path: &str,
        how: CreateAs,
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
        how.check()?;
        let req = WriteFile {
            at: at(path, how.user)?,
            mode: how.mode,
            append: false,
            create_parents: true,
            owner: how.owner,
            metadata: how.metadata,
        };
        let (_, guest) = self.running_guest(id).await?;
        let (counted, too_large) = counted_upload(body, limit);
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
    pub async fn make_dir(&self, id: &str, path: &str, how: CreateAs) -> Result<(FileInfo, bool)> {
        how.check()?;
        let req = at(path, how.user)?;
        let (_, guest) = self.running_guest(id).await?;
        let r = guest.make_dir(req, how.mode, how.owner).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pairs: &[(&str, &str)]) -> Result<()> {
        check_metadata(
            &pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn metadata_is_checked_as_envd_checks_its_headers() {
        assert!(check(&[("owner", "ada"), ("Stage", "draft 2"), ("a.b-c_d", "")]).is_ok());
        for bad in [
            check(&[("", "x")]),
            check(&[("has space", "x")]),
            check(&[("k", "line\nbreak")]),
            check(&[("k", "caf\u{e9}")]),
            check(&[("Key", "1"), ("key", "2")]),
            check(&[(&"k".repeat(MAX_METADATA_KEY_BYTES + 1), "x")]),
            check(&[("k", &"v".repeat(MAX_METADATA_VALUE_BYTES + 1))]),
        ] {
            assert!(matches!(bad, Err(Error::InvalidRequest(_))), "{bad:?}");
        }
        let many: BTreeMap<String, String> = (0..=MAX_METADATA_KEYS)
            .map(|i| (format!("k{i}"), String::new()))
            .collect();
        assert!(check_metadata(&many).is_err());
    }
}
