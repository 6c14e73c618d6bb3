//! Where archived chunks live: an [`ObjectStore`] is a flat key → bytes map with the three
//! operations the archive needs. [`DirStore`] keeps objects as files under a directory (the
//! embedded default); [`super::s3::S3Store`] keeps them in an S3-compatible bucket.
//!
//! Keys are relative, `/`-separated, made of lowercase alphanumerics, `-`, `_` and `.` (never a
//! `..` component), so a key can never name anything outside the store's root or bucket prefix.

use async_trait::async_trait;
use bytes::Bytes;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// A flat key → bytes store.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Where the objects go, for logs and errors (never credentials).
    fn describe(&self) -> String;
    /// Whether an object exists.
    async fn has(&self, key: &str) -> Result<bool>;
    /// Writes an object whole (replacing one of the same key).
    async fn put(&self, key: &str, data: Bytes) -> Result<()>;
    /// Reads an object; `None` when there is none under `key`.
    async fn get(&self, key: &str) -> Result<Option<Bytes>>;
}

/// Checks a key (see the module docs).
pub fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && key.split('/').all(|part| {
            !part.is_empty()
                && part != "."
                && part != ".."
                && part.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
                })
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("bad object key {key:?}")))
    }
}

/// Objects as files under a directory: `<root>/<key>`, written to a temporary name and renamed,
/// so an object that exists is whole.
#[derive(Debug, Clone)]
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// A store under `root` (created when missing, owner-only).
    pub fn new(root: &Path) -> Result<DirStore> {
        crate::private_file::create_dir(root).ctx(|| format!("creating {}", root.display()))?;
        Ok(DirStore {
            root: root.to_path_buf(),
        })
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

#[async_trait]
impl ObjectStore for DirStore {
    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }

    async fn has(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(m.is_file()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }

    async fn put(&self, key: &str, data: Bytes) -> Result<()> {
        let path = self.path(key)?;
        tokio::task::spawn_blocking(move || -> Result<()> {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
            }
            let mut tmp = path.as_os_str().to_owned();
            tmp.push(format!(".partial-{}", rand::random::<u64>()));
            let tmp = PathBuf::from(tmp);
            std::fs::write(&tmp, &data).ctx(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &path).ctx(|| format!("renaming {}", tmp.display()))
        })
        .await
        .map_err(|e| Error::Invalid(format!("object write task: {e}")))?
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(data) => Ok(Some(Bytes::from(data))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_inside_the_store() {
        for good in ["chunks/ab/abcdef", "a.b-c_d", "x"] {
            check_key(good).unwrap();
        }
        for bad in [
            "", "/abs", "a/../b", "..", "a//b", "A", "a/./b", "a\\b", "a b",
        ] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[tokio::test]
    async fn a_dir_store_round_trips_and_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let store = DirStore::new(&dir.path().join("objects")).unwrap();
        assert!(!store.has("chunks/aa/x").await.unwrap());
        assert_eq!(store.get("chunks/aa/x").await.unwrap(), None);
        store
            .put("chunks/aa/x", Bytes::from_static(b"hello"))
            .await
            .unwrap();
        assert!(store.has("chunks/aa/x").await.unwrap());
        assert_eq!(
            store.get("chunks/aa/x").await.unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert!(store.put("../escape", Bytes::new()).await.is_err());
        // No temporary files are left next to the object.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("objects/chunks/aa"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["x"]);
    }
}
