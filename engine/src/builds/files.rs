//! Files uploaded for builds' `copy` steps, kept by key so an unchanged file is never sent twice.
//!
//! `<data>/template-files/<key>`: one archive per key (64 lowercase hex digits). An upload is
//! written to a private temporary file, counted against the upload limit as it streams, and
//! renamed into place when complete, so a stored file is always whole. The native API keys files
//! by their SHA-256 and checks it; the E2B API keys them by the SDK's hash of the files'
//! content and modes, which the host cannot recompute from the archive, so it is taken as given.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// Where uploads live under the data directory.
pub const DIR: &str = "template-files";

/// Checks that `key` is 64 lowercase hex digits.
pub fn check_key(key: &str) -> Result<()> {
    if key.len() == 64
        && key
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "file key {key:?} is not 64 lowercase hex digits"
        )))
    }
}

/// The stored file of `key` under `data_dir`.
pub fn path(data_dir: &Path, key: &str) -> Result<PathBuf> {
    check_key(key)?;
    Ok(data_dir.join(DIR).join(key))
}

/// Stores `body` as `key`, at most `limit` bytes; with `verify`, its SHA-256 must be `key`.
/// Returns its size.
pub async fn store<S, E>(
    data_dir: &Path,
    key: &str,
    body: S,
    limit: u64,
    verify: bool,
) -> Result<u64>
where
    S: Stream<Item = std::result::Result<Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let dest = path(data_dir, key)?;
    let dir = data_dir.join(DIR);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
    let tmp = dir.join(format!(".{key}.{}", crate::ids::new_sandbox_id()));
    let written = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| Error::Internal(format!("creating {}: {e}", tmp.display())))?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk =
                chunk.map_err(|e| Error::InvalidRequest(format!("reading the upload: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(Error::PayloadTooLarge { limit });
            }
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(|e| Error::Internal(format!("writing {}: {e}", tmp.display())))?;
        }
        file.sync_all()
            .await
            .map_err(|e| Error::Internal(format!("writing {}: {e}", tmp.display())))?;
        if verify {
            let got = hex::encode(hasher.finalize());
            if got != key {
                return Err(Error::InvalidRequest(format!(
                    "the upload's SHA-256 is {got}, not {key}"
                )));
            }
        }
        tokio::fs::rename(&tmp, &dest)
            .await
            .map_err(|e| Error::Internal(format!("storing {}: {e}", dest.display())))?;
        Ok(size)
    }
    .await;
    if written.is_err() {
        let _ = tokio::fs::remove_file(&tmp).await;
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(parts: &[&'static [u8]]) -> impl Stream<Item = std::result::Result<Bytes, String>> {
        futures::stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn uploads_are_checked_bounded_and_whole() {
        let dir = tempfile::tempdir().unwrap();
        let key = hex::encode(Sha256::digest(b"hello world"));
        assert_eq!(
            store(dir.path(), &key, body(&[b"hello ", b"world"]), 100, true)
                .await
                .unwrap(),
            11
        );
        assert_eq!(
            std::fs::read(path(dir.path(), &key).unwrap()).unwrap(),
            b"hello world"
        );
        let other = "0".repeat(64);
        let wrong = store(dir.path(), &other, body(&[b"x"]), 100, true).await;
        assert!(wrong.unwrap_err().to_string().contains("SHA-256"));
        let big = store(dir.path(), &other, body(&[b"0123456789"]), 5, false).await;
        assert!(matches!(big, Err(Error::PayloadTooLarge { limit: 5 })));
        assert!(!path(dir.path(), &other).unwrap().exists());
        let left: Vec<_> = std::fs::read_dir(dir.path().join(DIR)).unwrap().collect();
        assert_eq!(left.len(), 1, "no temporary file is left behind");
        assert!(check_key("../etc").is_err());
        assert!(check_key(&"A".repeat(64)).is_err());
    }
}
