//! [`ImageCache`]: the public face of the image builder.
//!
//! Every `ensure_*` call returns a complete, checked cache entry, building it first when it is
//! missing or broken (see [`super::entry`] for the protocol that keeps concurrent builders and
//! crashes from corrupting the cache). Calls with the same inputs after the first do no build
//! work: they resolve the kernel package with apt, hash the agent, and quick-check the entries.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::entry::{self, KindDir, blocking};
use super::initramfs;
use super::kernel::{self, Kernel};
use super::manifest::{Depth, EntryKind, Manifest, sha256_hex};
use super::progress::Progress;
use super::rootfs;
use super::template::Template;
use crate::error::{Error, Result};

/// Environment variable that overrides the cache directory.
pub const CACHE_DIR_ENV: &str = "PLATINUM_CACHE_DIR";

/// A complete guest image: everything a VMM needs to boot a sandbox of one template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The template's name.
    pub template: String,
    /// PVH `vmlinux`.
    pub kernel: PathBuf,
    /// Initramfs with the guest agent as `/init`.
    pub initramfs: PathBuf,
    /// ext4 root filesystem image (read-only base; sandboxes get copy-on-write clones).
    pub rootfs: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub kernel_release: String,
    /// Content hash of the three files (32 hex digits): equal ids mean identical bytes.
    pub id: String,
}

/// One directory in the cache, as [`ImageCache::list`] finds it.
#[derive(Debug, Clone)]
pub struct CacheEntry {
    /// What it holds.
    pub kind: EntryKind,
    /// Its key.
    pub key: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its manifest; `None` when missing or unreadable (the entry is then rebuilt on use).
    pub manifest: Option<Manifest>,
    /// True for the leftover of a build that did not finish.
    pub partial: bool,
    /// Disk space its files take (sparse files count what they really use).
    pub bytes_on_disk: u64,
}

/// The guest image cache: `<root>/images/{kernel,initramfs,rootfs}/<key>/`.
#[derive(Debug, Clone)]
pub struct ImageCache {
    root: PathBuf,
}

impl ImageCache {
    /// A cache rooted at `root` (created on first build).
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// `$PLATINUM_CACHE_DIR` if set, else `~/.cache/platinum`, else `/var/cache/platinum` when
    /// there is no home directory (a system service).
    pub fn default_root() -> PathBuf {
        root_from(std::env::var_os(CACHE_DIR_ENV), std::env::var_os("HOME"))
    }

    /// The cache's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn images(&self) -> PathBuf {
        self.root.join("images")
    }

    /// The guest kernel (PVH `vmlinux` and modules) of the current Debian cloud kernel package.
    pub async fn ensure_kernel(&self, progress: &Progress) -> Result<Kernel> {
        Ok(kernel::ensure(&self.images(), progress).await?.0)
    }

    /// The initramfs for `kernel` with `agent` (the static `platinum-guest` binary) as `/init`.
    /// Returns the archive's path.
    pub async fn ensure_initramfs(
        &self,
        kernel: &Kernel,
        agent: &Path,
        progress: &Progress,
    ) -> Result<PathBuf> {
        Ok(initramfs::ensure(&self.images(), kernel, agent, progress)
            .await?
            .0)
    }

    /// The ext4 root filesystem image of `template`. Building one takes minutes and needs root.
    pub async fn ensure_rootfs(&self, template: &Template, progress: &Progress) -> Result<PathBuf> {
        Ok(rootfs::ensure(&self.images(), template, progress).await?.0)
    }

    /// Everything needed to boot `template` with `agent`. The kernel and initramfs are built
    /// while the root filesystem bootstraps.
    pub async fn ensure_image(
        &self,
        template: &Template,
        agent: &Path,
        progress: &Progress,
    ) -> Result<GuestImage> {
        let images = self.images();
        let boot = async {
            let (kernel, kernel_entry) = kernel::ensure(&images, progress).await?;
            let (initramfs, initramfs_entry) =
                initramfs::ensure(&images, &kernel, agent, progress).await?;
            Ok::<_, Error>((kernel, kernel_entry, initramfs, initramfs_entry))
        };
        let ((kernel, kernel_entry, initramfs, initramfs_entry), (rootfs, rootfs_entry)) =
            tokio::try_join!(boot, rootfs::ensure(&images, template, progress))?;
        let hash_of = |entry: &entry::Entry, file: &Path| {
            let name = file
                .strip_prefix(&entry.dir)
                .ok()
                .and_then(Path::to_str)
                .unwrap_or_default();
            entry
                .manifest
                .file(name)
                .map(|f| f.sha256.clone())
                .ok_or_else(|| Error::Image {
                    step: "image".into(),
                    message: format!("{} is missing from its manifest", file.display()),
                })
        };
        let content = format!(
            "kernel {}\ninitramfs {}\nrootfs {}\n",
            hash_of(&kernel_entry, &kernel.vmlinux)?,
            hash_of(&initramfs_entry, &initramfs)?,
            hash_of(&rootfs_entry, &rootfs)?
        );
        Ok(GuestImage {
            template: template.name.clone(),
            kernel: kernel.vmlinux,
            initramfs,
            rootfs,
            kernel_release: kernel.release,
            id: sha256_hex(content.as_bytes())[..32].to_owned(),
        })
    }

    /// Every entry and unfinished build in the cache, by kind and key.
    pub fn list(&self) -> Result<Vec<CacheEntry>> {
        let images = self.images();
        let mut entries = Vec::new();
        for kind in EntryKind::ALL {
            for (name, dir) in KindDir::new(&images, kind).scan()? {
                let (key, partial) = entry::parse_dir_name(&name);
                entries.push(CacheEntry {
                    kind,
                    key: key.to_owned(),
                    manifest: if partial {
                        None
                    } else {
                        Manifest::read(&dir).ok()
                    },
                    partial,
                    bytes_on_disk: bytes_on_disk(&dir),
                    dir,
                });
            }
        }
        Ok(entries)
    }

    /// Hashes every file of `entry` against its manifest (for `platinum image verify`). An
    /// entry that does not match is reported as [`Error::Image`]; the next `ensure_*` rebuilds
    /// it.
    pub async fn verify(&self, entry: &CacheEntry, progress: &Progress) -> Result<()> {
        let fail = |why: String| Error::Image {
            step: "verify".into(),
            message: format!(
                "{} {} ({}): {why}",
                entry.kind,
                entry.key,
                entry.dir.display()
            ),
        };
        if entry.partial {
            return Err(fail("an unfinished build".into()));
        }
        let manifest = Manifest::read(&entry.dir).map_err(fail)?;
        let (dir, progress) = (entry.dir.clone(), progress.clone());
        let step = progress.step(format!("verifying {} {}", entry.kind, entry.key));
        blocking("verify", move || {
            Ok(manifest.check(&dir, Depth::Full, &progress))
        })
        .await?
        .map_err(fail)?;
        step.done("");
        Ok(())
    }

    /// Removes every entry that none of `keep` uses, and unfinished builds nobody is working
    /// on. Entries being built right now are left alone. Returns what was removed.
    pub fn gc(&self, keep: &[GuestImage]) -> Result<Vec<CacheEntry>> {
        let in_use: HashSet<PathBuf> = keep
            .iter()
            .flat_map(|image| [&image.kernel, &image.initramfs, &image.rootfs])
            .filter_map(|file| file.parent().map(Path::to_path_buf))
            .collect();
        let images = self.images();
        let mut removed = Vec::new();
        for entry in self.list()? {
            if in_use.contains(&entry.dir) {
                continue;
            }
            // A builder holds the key's lock for the whole build: if we get it, nobody is
            // building this key and the directory can go.
            let Some(_lock) = KindDir::new(&images, entry.kind).try_lock(&entry.key)? else {
                tracing::info!(dir = %entry.dir.display(), "skipping an image entry that is being built");
                continue;
            };
            tracing::info!(dir = %entry.dir.display(), bytes = entry.bytes_on_disk, "removing unused image entry");
            entry::remove_tree(&entry.dir)?;
            removed.push(entry);
        }
        Ok(removed)
    }
}

/// The default root given `$PLATINUM_CACHE_DIR` and `$HOME`.
fn root_from(cache_dir: Option<OsString>, home: Option<OsString>) -> PathBuf {
    match (
        cache_dir.filter(|d| !d.is_empty()),
        home.filter(|h| !h.is_empty()),
    ) {
        (Some(dir), _) => PathBuf::from(dir),
        (None, Some(home)) => PathBuf::from(home).join(".cache/platinum"),
        (None, None) => PathBuf::from("/var/cache/platinum"),
    }
}

/// Disk space used under `dir` (allocated blocks; unreadable parts count as zero).
fn bytes_on_disk(dir: &Path) -> u64 {
    let Ok(read) = std::fs::read_dir(dir) else {
        return 0;
    };
    read.filter_map(|e| e.ok())
        .filter_map(|e| Some((e.path(), e.path().symlink_metadata().ok()?)))
        .map(|(path, meta)| {
            if meta.is_dir() {
                bytes_on_disk(&path)
            } else {
                meta.blocks() * 512
            }
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_root_prefers_the_environment_variable() {
        let some = |s: &str| Some(OsString::from(s));
        assert_eq!(
            root_from(some("/srv/cache"), some("/root")),
            PathBuf::from("/srv/cache")
        );
        assert_eq!(
            root_from(some(""), some("/home/me")),
            PathBuf::from("/home/me/.cache/platinum")
        );
        assert_eq!(root_from(None, None), PathBuf::from("/var/cache/platinum"));
    }
}
