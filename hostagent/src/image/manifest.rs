//! `manifest.json`: the record that makes a cache entry complete.
//!
//! Every entry directory (`images/<kind>/<key>/`) holds its files and one `manifest.json`,
//! written last, after every file is synced:
//!
//! ```text
//! { "format": 1, "kind": "kernel", "key": "<32 hex>", "label": "linux-image-6.1.0-56-cloud-amd64 6.1.192-2",
//!   "builder_version": 1, "created_unix": 1763890000,
//!   "inputs":  { ...what the key was computed from... },
//!   "details": { ...what the build found out: kernel release, module load order, ... },
//!   "files": [ { "path": "vmlinux", "size": 53477376, "sha256": "<64 hex>" }, ... ] }
//! ```
//!
//! Checking an entry comes in two depths. [`Depth::Quick`], done on every reuse, compares every
//! file's size and hashes the files below 200 MB (the kernel, modules and initramfs; a 4 GiB root
//! filesystem is only size-checked). [`Depth::Full`], for `platinum image verify`, hashes
//! everything. A check never fails with an error: it returns why the entry is not usable, and the
//! cache decides what to do (rebuild, or report).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::progress::Progress;
use crate::error::{Error, IoContext, Result};

/// The manifest's file name inside an entry directory.
pub(crate) const MANIFEST_FILE: &str = "manifest.json";

/// Version of the manifest format; a manifest of another format is rebuilt.
const MANIFEST_FORMAT: u32 = 1;

/// Files up to this size are hashed on every reuse of an entry.
const QUICK_HASH_LIMIT: u64 = 200_000_000;

/// Files at least this large get a byte bar while they are hashed.
const SHOW_HASH_FROM: u64 = 64 << 20;

/// What a cache entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A PVH `vmlinux` with the guest's kernel modules.
    Kernel,
    /// An initramfs with the guest agent as `/init`.
    Initramfs,
    /// An ext4 root filesystem image built from a template.
    Rootfs,
}

impl EntryKind {
    /// Every kind, in build order.
    pub const ALL: [EntryKind; 3] = [EntryKind::Kernel, EntryKind::Initramfs, EntryKind::Rootfs];

    /// The directory under `images/` holding entries of this kind.
    pub fn dir_name(self) -> &'static str {
        match self {
            EntryKind::Kernel => "kernel",
            EntryKind::Initramfs => "initramfs",
            EntryKind::Rootfs => "rootfs",
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// The manifest of one complete cache entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    /// What the entry holds.
    pub kind: EntryKind,
    /// The entry's key (its directory name).
    pub key: String,
    /// One line for people: kernel package and version, template name, agent hash.
    pub label: String,
    /// The image builder version that wrote it.
    pub builder_version: u32,
    /// When the build finished, seconds since the Unix epoch.
    pub created_unix: u64,
    /// The inputs the key was computed from.
    pub inputs: serde_json::Value,
    /// Facts the build found out (kernel release, module load order, ...).
    pub details: serde_json::Value,
    /// Every file of the entry except the manifest, sorted by path.
    pub files: Vec<FileRecord>,
}

/// Size and hash of one file of an entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Path relative to the entry directory, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 of the content, lowercase hex.
    pub sha256: String,
}

/// How thoroughly [`Manifest::check`] looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Sizes of all files, hashes of files below 200 MB.
    Quick,
    /// Sizes and hashes of all files.
    Full,
}

impl Manifest {
    /// A manifest for files already recorded with [`record_files`].
    pub(crate) fn new(
        kind: EntryKind,
        key: &str,
        label: String,
        inputs: serde_json::Value,
        details: serde_json::Value,
        files: Vec<FileRecord>,
    ) -> Self {
        let created_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            format: MANIFEST_FORMAT,
            kind,
            key: key.to_owned(),
            label,
            builder_version: super::BUILDER_VERSION,
            created_unix,
            inputs,
            details,
            files,
        }
    }

    /// Reads `dir/manifest.json`; the error says why it is missing or unusable.
    pub(crate) fn read(dir: &Path) -> std::result::Result<Self, String> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => "manifest.json is missing".to_owned(),
            _ => format!("cannot read manifest.json: {e}"),
        })?;
        let manifest: Manifest = serde_json::from_slice(&text)
            .map_err(|e| format!("manifest.json is unreadable: {e}"))?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(format!(
                "manifest.json has format {}, expected {MANIFEST_FORMAT}",
                manifest.format
            ));
        }
        Ok(manifest)
    }

    /// Writes the manifest into `dir` (via a temporary file and a rename, then synced).
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST_FILE);
        let tmp = dir.join(format!("{MANIFEST_FILE}.tmp"));
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Image {
            step: "manifest".into(),
            message: e.to_string(),
        })?;
        let mut file = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
        file.write_all(&json)
            .and_then(|()| file.sync_all())
            .ctx(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).ctx(|| format!("renaming {} into place", tmp.display()))?;
        sync_dir(dir)
    }

    /// The record of `path` (relative to the entry).
    pub(crate) fn file(&self, path: &str) -> Option<&FileRecord> {
        self.files.iter().find(|f| f.path == path)
    }

    /// Checks the files in `dir` against the manifest; the error says what is wrong.
    pub(crate) fn check(
        &self,
        dir: &Path,
        depth: Depth,
        progress: &Progress,
    ) -> std::result::Result<(), String> {
        if self.files.is_empty() {
            return Err("manifest.json lists no files".to_owned());
        }
        for record in &self.files {
            if !is_plain_relative(&record.path) {
                return Err(format!("manifest.json lists a bad path {:?}", record.path));
            }
            let path = dir.join(&record.path);
            let size = path
                .metadata()
                .map_err(|e| format!("{}: {e}", record.path))?
                .len();
            if size != record.size {
                return Err(format!(
                    "{} has {size} bytes, manifest.json says {}",
                    record.path, record.size
                ));
            }
        }
        for record in &self.files {
            if depth == Depth::Quick && record.size >= QUICK_HASH_LIMIT {
                continue;
            }
            let (_, sha256) = sha256_file(&dir.join(&record.path), progress)
                .map_err(|e| format!("{}: {e}", record.path))?;
            if sha256 != record.sha256 {
                return Err(format!(
                    "{} has SHA-256 {sha256}, manifest.json says {}",
                    record.path, record.sha256
                ));
            }
        }
        Ok(())
    }
}

/// Hashes every regular file under `dir` (except a manifest) and syncs it to disk. Records are
/// sorted by path; anything that is not a regular file or a directory is an error.
pub(crate) fn record_files(dir: &Path, progress: &Progress) -> Result<Vec<FileRecord>> {
    let mut files = Vec::new();
    collect_files(dir, "", &mut files)?;
    files.sort();
    files
        .into_iter()
        .filter(|rel| rel != MANIFEST_FILE)
        .map(|rel| {
            let path = dir.join(&rel);
            let (size, sha256) =
                sha256_file(&path, progress).ctx(|| format!("hashing {}", path.display()))?;
            File::open(&path)
                .and_then(|f| f.sync_all())
                .ctx(|| format!("syncing {}", path.display()))?;
            Ok(FileRecord {
                path: rel,
                size,
                sha256,
            })
        })
        .collect()
}

fn collect_files(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|name| Error::Image {
                step: "manifest".into(),
                message: format!("file name {name:?} in {} is not UTF-8", dir.display()),
            })?;
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let file_type = entry
            .file_type()
            .ctx(|| format!("inspecting {}", entry.path().display()))?;
        if file_type.is_dir() {
            collect_files(&entry.path(), &rel, out)?;
            sync_dir(&entry.path())?;
        } else if file_type.is_file() {
            out.push(rel);
        } else {
            return Err(Error::Image {
                step: "manifest".into(),
                message: format!(
                    "{} is neither a file nor a directory",
                    entry.path().display()
                ),
            });
        }
    }
    Ok(())
}

/// Size and SHA-256 (hex) of a file; big files get a byte bar.
pub(crate) fn sha256_file(path: &Path, progress: &Progress) -> std::io::Result<(u64, String)> {
    let mut file = File::open(path)?;
    let total = file.metadata()?.len();
    let bar = (total >= SHOW_HASH_FROM).then(|| {
        let name = path.file_name().map_or_else(
            || path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        progress.bytes(format!("hashing {name}"), total)
    });
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        done += n as u64;
        if let Some(bar) = &bar {
            bar.set_position(done);
        }
    }
    if let Some(bar) = bar {
        bar.done("");
    }
    Ok((done, hex::encode(hasher.finalize())))
}

/// Hex SHA-256 of a byte string.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Makes a rename or a new file in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// A relative path made only of normal components (no `..`, no root).
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry_with_files() -> (tempfile::TempDir, Manifest) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("modules")).unwrap();
        std::fs::write(dir.path().join("vmlinux"), b"kernel bytes").unwrap();
        std::fs::write(dir.path().join("modules/virtio.ko"), b"module").unwrap();
        let files = record_files(dir.path(), &Progress::hidden()).unwrap();
        let manifest = Manifest::new(
            EntryKind::Kernel,
            "k",
            "label".into(),
            serde_json::json!({}),
            serde_json::json!({}),
            files,
        );
        manifest.write(dir.path()).unwrap();
        (dir, manifest)
    }

    #[test]
    fn records_every_file_sorted_and_round_trips() {
        let (dir, manifest) = entry_with_files();
        let paths: Vec<&str> = manifest.files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["modules/virtio.ko", "vmlinux"]);
        assert_eq!(
            manifest.file("vmlinux").unwrap().sha256,
            sha256_hex(b"kernel bytes")
        );
        assert_eq!(Manifest::read(dir.path()).unwrap(), manifest);
        manifest
            .check(dir.path(), Depth::Full, &Progress::hidden())
            .unwrap();
    }

    #[test]
    fn size_and_content_changes_are_caught() {
        let (dir, manifest) = entry_with_files();
        std::fs::write(dir.path().join("vmlinux"), b"kernel bytez").unwrap();
        let why = manifest
            .check(dir.path(), Depth::Quick, &Progress::hidden())
            .unwrap_err();
        assert!(why.contains("SHA-256"), "{why}");
        std::fs::write(dir.path().join("vmlinux"), b"short").unwrap();
        let why = manifest
            .check(dir.path(), Depth::Quick, &Progress::hidden())
            .unwrap_err();
        assert!(why.contains("has 5 bytes"), "{why}");
        std::fs::remove_file(dir.path().join("modules/virtio.ko")).unwrap();
        assert!(
            manifest
                .check(dir.path(), Depth::Quick, &Progress::hidden())
                .is_err()
        );
    }

    #[test]
    fn missing_or_garbled_manifest_is_reported() {
        let (dir, _) = entry_with_files();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{ not json").unwrap();
        assert!(
            Manifest::read(dir.path())
                .unwrap_err()
                .contains("unreadable")
        );
        std::fs::remove_file(dir.path().join(MANIFEST_FILE)).unwrap();
        assert!(Manifest::read(dir.path()).unwrap_err().contains("missing"));
    }

    #[test]
    fn paths_escaping_the_entry_are_rejected() {
        let (dir, mut manifest) = entry_with_files();
        manifest.files[0].path = "../vmlinux".into();
        let why = manifest
            .check(dir.path(), Depth::Quick, &Progress::hidden())
            .unwrap_err();
        assert!(why.contains("bad path"), "{why}");
    }
}
