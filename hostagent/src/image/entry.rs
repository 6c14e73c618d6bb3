//! Content-addressed cache entries: keys, locks, partial builds and atomic publication.
//!
//! An entry of kind `K` with key `H` lives in `images/K/H/`. Its life:
//!
//! 1. **Reuse.** If `images/K/H/` exists, its manifest checks out ([`Depth::Quick`]) and no
//!    `H.partial-*` directory lies next to it, it is used as is, without taking a lock.
//! 2. **Lock.** Otherwise the builder takes an exclusive `flock` on `images/K/H.lock` (waiting
//!    for a concurrent builder of the same key; it then finds that builder's result in step 3).
//!    Lock files are never deleted: unlinking a lock file someone waits on would let two
//!    builders in.
//! 3. **Clean up under the lock.** `H.partial-*` directories are leftovers of builders that died
//!    (a live builder would hold the lock) and are removed with a warning. An `H/` that fails
//!    its check (missing, unreadable or stale manifest, wrong sizes or hashes) is removed with a
//!    warning too; one that passes is used.
//! 4. **Build** into `images/K/H.partial-<pid>-<random>/`, record every file's size and SHA-256
//!    in `manifest.json` (written last, after the files are synced), then `rename` the directory
//!    to `H/` and sync `images/K/`. A reader therefore sees a complete entry or none. A failed
//!    build removes its partial directory.
//!
//! Removing a directory first detaches any mount left below it (an interrupted chroot build can
//! leave `/proc` or `/dev` mounted inside its tree), so a cleanup can never delete through a
//! mount into the host.

use std::fs::{File, OpenOptions};
use std::future::Future;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::manifest::{Depth, EntryKind, Manifest, record_files};
use super::progress::Progress;
use crate::error::{Error, IoContext, Result};

/// Marks a directory as an unfinished build of the key before it.
const PARTIAL_MARK: &str = ".partial-";

/// Suffix of lock files.
const LOCK_SUFFIX: &str = ".lock";

/// The key of an entry built from `inputs`: the first 128 bits of the SHA-256 of their JSON
/// form, as hex. Inputs are structs (fields in declaration order, no maps), so the JSON is
/// canonical and the key stable.
pub(crate) fn key_of(inputs: &impl Serialize) -> Result<String> {
    let json = serde_json::to_vec(inputs).map_err(|e| Error::Image {
        step: "cache key".into(),
        message: e.to_string(),
    })?;
    Ok(super::manifest::sha256_hex(&json)[..32].to_owned())
}

/// A complete entry: its directory and manifest.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// `images/<kind>/<key>/`.
    pub dir: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
}

/// What a build hands back besides its files.
pub(crate) struct Built {
    /// The manifest's label.
    pub label: String,
    /// The manifest's details.
    pub details: serde_json::Value,
}

/// The directory holding all entries of one kind.
pub(crate) struct KindDir {
    dir: PathBuf,
    kind: EntryKind,
}

impl KindDir {
    /// `images/<kind>/` under `images`.
    pub(crate) fn new(images: &Path, kind: EntryKind) -> Self {
        Self {
            dir: images.join(kind.dir_name()),
            kind,
        }
    }

    /// The entry directory for `key`.
    pub(crate) fn entry_dir(&self, key: &str) -> PathBuf {
        self.dir.join(key)
    }

    /// Returns the complete entry for `key`, building it with `build` if needed (see the module
    /// docs). `build` gets an empty directory to fill and returns the manifest's label and
    /// details; `inputs` go into the manifest as they are.
    pub(crate) async fn ensure<I, F, Fut>(
        &self,
        key: &str,
        inputs: &I,
        progress: &Progress,
        build: F,
    ) -> Result<Entry>
    where
        I: Serialize,
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<Built>>,
    {
        let dir = self.entry_dir(key);
        if dir.exists() && self.partials(key)?.is_empty() {
            let (dir, progress) = (dir.clone(), progress.clone());
            if let Ok(entry) =
                blocking("cache check", move || Ok(check_entry(&dir, &progress))).await?
            {
                tracing::debug!(kind = %self.kind, key, "reusing cached image entry");
                return Ok(entry);
            }
        }

        std::fs::create_dir_all(&self.dir).ctx(|| format!("creating {}", self.dir.display()))?;
        let _lock = self.lock(key).await?;
        for partial in self.partials(key)? {
            tracing::warn!(path = %partial.display(), "removing an unfinished image build left by a dead builder");
            remove_tree_off_thread(partial).await?;
        }
        if dir.exists() {
            let (check_dir, check_progress) = (dir.clone(), progress.clone());
            match blocking("cache check", move || {
                Ok(check_entry(&check_dir, &check_progress))
            })
            .await?
            {
                Ok(entry) => return Ok(entry),
                Err(why) => {
                    tracing::warn!(path = %dir.display(), reason = %why, "cached image entry is broken; rebuilding it");
                    remove_tree_off_thread(dir.clone()).await?;
                }
            }
        }

        let partial = self.dir.join(format!(
            "{key}{PARTIAL_MARK}{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir(&partial).ctx(|| format!("creating {}", partial.display()))?;
        let inputs = serde_json::to_value(inputs).map_err(|e| Error::Image {
            step: "manifest".into(),
            message: e.to_string(),
        })?;
        match self
            .build_into(&partial, key, inputs, progress, build)
            .await
        {
            Ok(manifest) => {
                std::fs::rename(&partial, &dir)
                    .ctx(|| format!("renaming {} to {}", partial.display(), dir.display()))?;
                super::manifest::sync_dir(&self.dir)?;
                Ok(Entry { dir, manifest })
            }
            Err(error) => {
                if let Err(cleanup) = remove_tree_off_thread(partial.clone()).await {
                    tracing::warn!(path = %partial.display(), error = %cleanup, "could not remove a failed image build");
                }
                Err(error)
            }
        }
    }

    async fn build_into<F, Fut>(
        &self,
        partial: &Path,
        key: &str,
        inputs: serde_json::Value,
        progress: &Progress,
        build: F,
    ) -> Result<Manifest>
    where
        F: FnOnce(PathBuf) -> Fut,
        Fut: Future<Output = Result<Built>>,
    {
        let built = build(partial.to_path_buf()).await?;
        let (dir, kind, key, progress) = (
            partial.to_path_buf(),
            self.kind,
            key.to_owned(),
            progress.clone(),
        );
        blocking("manifest", move || {
            let files = record_files(&dir, &progress)?;
            let manifest = Manifest::new(kind, &key, built.label, inputs, built.details, files);
            manifest.write(&dir)?;
            Ok(manifest)
        })
        .await
    }

    /// Takes the exclusive lock for `key`, waiting for another builder if there is one.
    pub(crate) async fn lock(&self, key: &str) -> Result<File> {
        let file = self.open_lock(key)?;
        match file.try_lock() {
            Ok(()) => Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::info!(kind = %self.kind, key, "another process is building this image entry; waiting for it");
                let path = self.lock_path(key);
                blocking("cache lock", move || {
                    file.lock().ctx(|| format!("locking {}", path.display()))?;
                    Ok(file)
                })
                .await
            }
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(
                format!("locking {}", self.lock_path(key).display()),
                e,
            )),
        }
    }

    /// Takes the lock for `key` only if nobody holds it.
    pub(crate) fn try_lock(&self, key: &str) -> Result<Option<File>> {
        let file = self.open_lock(key)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(file)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(Error::io(
                format!("locking {}", self.lock_path(key).display()),
                e,
            )),
        }
    }

    fn open_lock(&self, key: &str) -> Result<File> {
        std::fs::create_dir_all(&self.dir).ctx(|| format!("creating {}", self.dir.display()))?;
        let path = self.lock_path(key);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening lock file {}", path.display()))
    }

    fn lock_path(&self, key: &str) -> PathBuf {
        self.dir.join(format!("{key}{LOCK_SUFFIX}"))
    }

    /// Unfinished build directories of `key`.
    fn partials(&self, key: &str) -> Result<Vec<PathBuf>> {
        let prefix = format!("{key}{PARTIAL_MARK}");
        Ok(self
            .scan()?
            .into_iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(_, path)| path)
            .collect())
    }

    /// Every entry and partial directory of this kind: (name, path). Lock files are skipped.
    pub(crate) fn scan(&self) -> Result<Vec<(String, PathBuf)>> {
        let read = match std::fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(format!("listing {}", self.dir.display()), e)),
        };
        let mut found = Vec::new();
        for entry in read {
            let entry = entry.ctx(|| format!("listing {}", self.dir.display()))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if name.ends_with(LOCK_SUFFIX) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            found.push((name, entry.path()));
        }
        found.sort();
        Ok(found)
    }
}

/// Splits a directory name into its key and whether it is an unfinished build.
pub(crate) fn parse_dir_name(name: &str) -> (&str, bool) {
    match name.split_once(PARTIAL_MARK) {
        Some((key, _)) => (key, true),
        None => (name, false),
    }
}

/// Reads and quick-checks the entry in `dir`; the error says why it is not usable.
pub(crate) fn check_entry(dir: &Path, progress: &Progress) -> std::result::Result<Entry, String> {
    let manifest = Manifest::read(dir)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if manifest.key != name {
        return Err(format!(
            "manifest.json belongs to key {}, not {name}",
            manifest.key
        ));
    }
    if manifest.builder_version != super::BUILDER_VERSION {
        return Err(format!(
            "built by image builder version {}, this is version {}",
            manifest.builder_version,
            super::BUILDER_VERSION
        ));
    }
    manifest.check(dir, Depth::Quick, progress)?;
    Ok(Entry {
        dir: dir.to_path_buf(),
        manifest,
    })
}

/// Removes a directory tree; a missing one is fine. Mounts below it are detached first.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    let canonical = match path.canonicalize() {
        Ok(canonical) => canonical,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("resolving {}", path.display()), e)),
    };
    let mut mounts = mounts_below(&canonical)?;
    // Deepest first, so a mount inside another mount goes before its parent.
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for mount in &mounts {
        tracing::warn!(mount = %mount.display(), "detaching a mount left inside an image build directory");
        nix::mount::umount2(mount, nix::mount::MntFlags::MNT_DETACH).map_err(|e| Error::Image {
            step: "cleanup".into(),
            message: format!(
                "{} is still mounted inside {} (an interrupted build?) and cannot be detached: {e}; unmount it by hand",
                mount.display(),
                path.display()
            ),
        })?;
    }
    if !mounts.is_empty() && !mounts_below(&canonical)?.is_empty() {
        return Err(Error::Image {
            step: "cleanup".into(),
            message: format!("mounts remain below {}; not deleting it", path.display()),
        });
    }
    std::fs::remove_dir_all(&canonical).ctx(|| format!("removing {}", canonical.display()))
}

/// [`remove_tree`] on a blocking thread (a root filesystem tree takes seconds to delete).
async fn remove_tree_off_thread(path: PathBuf) -> Result<()> {
    blocking("cleanup", move || remove_tree(&path)).await
}

/// Mount points at or below `dir`, from `/proc/self/mountinfo`.
fn mounts_below(dir: &Path) -> Result<Vec<PathBuf>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .ctx(|| "reading /proc/self/mountinfo".to_owned())?;
    Ok(info
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mount_path(field)))
        .filter(|mount| mount.starts_with(dir))
        .collect())
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape_mount_path(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 4)
            .filter(|_| bytes[i] == b'\\')
            .and_then(|oct| {
                std::str::from_utf8(oct)
                    .ok()
                    .and_then(|s| u8::from_str_radix(s, 8).ok())
            });
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs blocking work (hashing, compressing, walking trees) off the async threads.
pub(crate) async fn blocking<T, F>(step: &'static str, work: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| Error::Image {
            step: step.into(),
            message: format!("worker thread failed: {e}"),
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    async fn build_counting(
        kind: &KindDir,
        key: &str,
        builds: &Arc<AtomicUsize>,
        content: &'static [u8],
    ) -> Result<Entry> {
        let builds = builds.clone();
        kind.ensure(
            key,
            &serde_json::json!({"in": 1}),
            &Progress::hidden(),
            move |dir| async move {
                builds.fetch_add(1, Ordering::SeqCst);
                std::fs::write(dir.join("payload"), content).unwrap();
                Ok(Built {
                    label: "test".into(),
                    details: serde_json::json!({"n": 1}),
                })
            },
        )
        .await
    }

    #[tokio::test]
    async fn builds_once_then_reuses() {
        let root = tempfile::tempdir().unwrap();
        let kind = KindDir::new(root.path(), EntryKind::Kernel);
        let builds = Arc::new(AtomicUsize::new(0));
        let first = build_counting(&kind, "k1", &builds, b"data").await.unwrap();
        let second = build_counting(&kind, "k1", &builds, b"data").await.unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 1);
        assert_eq!(first.manifest, second.manifest);
        assert_eq!(std::fs::read(first.dir.join("payload")).unwrap(), b"data");
        assert!(first.dir.join("manifest.json").is_file());
        assert_eq!(
            kind.scan().unwrap().len(),
            1,
            "no partial directory may remain"
        );
    }

    #[tokio::test]
    async fn truncated_file_missing_manifest_and_partial_dir_each_cause_a_rebuild() {
        let root = tempfile::tempdir().unwrap();
        let kind = KindDir::new(root.path(), EntryKind::Initramfs);
        let builds = Arc::new(AtomicUsize::new(0));
        let entry = build_counting(&kind, "k", &builds, b"0123456789")
            .await
            .unwrap();

        std::fs::write(entry.dir.join("payload"), b"01234").unwrap();
        build_counting(&kind, "k", &builds, b"0123456789")
            .await
            .unwrap();
        assert_eq!(
            builds.load(Ordering::SeqCst),
            2,
            "a truncated file forces a rebuild"
        );

        std::fs::remove_file(entry.dir.join("manifest.json")).unwrap();
        build_counting(&kind, "k", &builds, b"0123456789")
            .await
            .unwrap();
        assert_eq!(
            builds.load(Ordering::SeqCst),
            3,
            "a missing manifest forces a rebuild"
        );

        std::fs::write(entry.dir.join("manifest.json"), b"garbage").unwrap();
        build_counting(&kind, "k", &builds, b"0123456789")
            .await
            .unwrap();
        assert_eq!(
            builds.load(Ordering::SeqCst),
            4,
            "an unreadable manifest forces a rebuild"
        );

        std::fs::remove_dir_all(&entry.dir).unwrap();
        let stray = kind.dir.join("k.partial-1-deadbeef");
        std::fs::create_dir_all(stray.join("sub")).unwrap();
        std::fs::write(stray.join("sub/half-written"), b"x").unwrap();
        build_counting(&kind, "k", &builds, b"0123456789")
            .await
            .unwrap();
        assert_eq!(builds.load(Ordering::SeqCst), 5, "a missing entry is built");
        assert!(!stray.exists(), "the stray partial directory is removed");

        std::fs::create_dir(&stray).unwrap();
        build_counting(&kind, "k", &builds, b"0123456789")
            .await
            .unwrap();
        assert_eq!(
            builds.load(Ordering::SeqCst),
            5,
            "a stray partial next to a good entry does not force a rebuild"
        );
        assert!(!stray.exists(), "but it is cleaned up");
    }

    #[tokio::test]
    async fn failed_build_leaves_nothing_behind() {
        let root = tempfile::tempdir().unwrap();
        let kind = KindDir::new(root.path(), EntryKind::Rootfs);
        let result = kind
            .ensure(
                "k",
                &serde_json::json!({}),
                &Progress::hidden(),
                |dir| async move {
                    std::fs::write(dir.join("half"), b"x").unwrap();
                    Err(Error::Image {
                        step: "test".into(),
                        message: "boom".into(),
                    })
                },
            )
            .await;
        assert!(result.is_err());
        assert!(kind.scan().unwrap().is_empty());
    }

    #[tokio::test]
    async fn concurrent_builders_of_one_key_build_once() {
        let root = tempfile::tempdir().unwrap();
        let kind = Arc::new(KindDir::new(root.path(), EntryKind::Kernel));
        let builds = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (kind, builds) = (kind.clone(), builds.clone());
                tokio::spawn(async move {
                    kind.ensure(
                        "k",
                        &serde_json::json!({}),
                        &Progress::hidden(),
                        move |dir| async move {
                            builds.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            std::fs::write(dir.join("payload"), b"data").unwrap();
                            Ok(Built {
                                label: "t".into(),
                                details: serde_json::Value::Null,
                            })
                        },
                    )
                    .await
                    .unwrap()
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(builds.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn keys_are_stable_and_input_sensitive() {
        #[derive(Serialize)]
        struct Inputs<'a> {
            builder_version: u32,
            package: &'a str,
        }
        let key = key_of(&Inputs {
            builder_version: 1,
            package: "linux-image-x",
        })
        .unwrap();
        assert_eq!(key, "0bb97683c754b6e37c46a0bd651e6cbc");
        assert_ne!(
            key,
            key_of(&Inputs {
                builder_version: 2,
                package: "linux-image-x"
            })
            .unwrap()
        );
    }

    #[test]
    fn partial_names_and_mountinfo_escapes_parse() {
        assert_eq!(parse_dir_name("abc.partial-12-00ff00ff"), ("abc", true));
        assert_eq!(parse_dir_name("abc"), ("abc", false));
        assert_eq!(unescape_mount_path("/tmp/a\\040b"), "/tmp/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }
}
