//! Disk layers: a running VM's root disk kept as it was at one moment, to start other VMs from.
//!
//! A template build commits a layer after each step that changes the disk, so a later build
//! whose first steps are the same starts from the newest layer it shares instead of running
//! them again. Layers live beside the sandboxes:
//!
//! ```text
//! <data>/layers/<key>/
//!     disk         the VM's root disk file as it was: raw, or a qcow2 overlay whose backing file
//!                  is the image or layer that VM was made from
//!     layer.json   its format and size
//! ```
//!
//! A layer is made either from a running VM's disk ([`LocalHost::commit_layer_of`], a build
//! step) or from an image pulled from an OCI registry ([`LocalHost::import_image_layer`], a
//! build's `FROM`; see [`crate::image::oci`]), whose key hashes the image's digest.
//!
//! A commit stops the vCPUs (QEMU drains and flushes every block device when it stops, so the
//! file is consistent; the caller has the guest `sync` first), copies the file (a reflink where
//! the filesystem can, else a sparse copy) into `<key>.partial-<random>` and renames it, so a
//! layer that exists is whole. A layer is never written again: VMs started from it get a copy-on-write
//! disk of their own, so it must stay while any disk made from it exists.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::LocalHost;
use crate::disk::copy_disk;
use crate::error::{Error, IoContext, Result};
use crate::host::HostAgent;
use crate::image::oci::{self, ImportImage, ImportedImage, Registry};
use crate::vmm::DiskFormat;

/// The file name of a layer's disk.
const DISK_FILE: &str = "disk";
/// The file name of a layer's description.
const LAYER_FILE: &str = "layer.json";

/// What `layer.json` records.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Layer {
    /// Format of `disk`.
    pub format: DiskFormat,
    /// Bytes `disk` takes on the host.
    pub bytes: u64,
    /// The disk file (not stored: where the layer is now).
    #[serde(skip)]
    pub disk: PathBuf,
}

/// Layer keys become directory names: lowercase hex or alphanumerics only.
fn check_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 64
        && key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!("invalid disk layer key {key:?}")))
    }
}

impl LocalHost {
    fn layer_dir(&self, key: &str) -> Result<PathBuf> {
        check_key(key)?;
        Ok(self.config.data_dir.join("layers").join(key))
    }

    /// The layer `key`, when it exists.
    pub(super) fn layer(&self, key: &str) -> Result<Option<Layer>> {
        let dir = self.layer_dir(key)?;
        let text = match std::fs::read_to_string(dir.join(LAYER_FILE)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(format!("reading layer {key}"), e)),
        };
        let mut layer: Layer = serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("layer {key}: corrupt {LAYER_FILE}: {e}")))?;
        layer.disk = dir.join(DISK_FILE);
        Ok(Some(layer))
    }

    /// Keeps the root disk of running VM `id` as layer `key` (see the module docs); an existing
    /// layer `key` is kept as it is. Returns the bytes the layer takes.
    pub(super) async fn commit_layer_of(&self, id: &str, key: &str) -> Result<u64> {
        if let Some(layer) = self.layer(key)? {
            return Ok(layer.bytes);
        }
        let slot = self.slot(id)?;
        let disk = slot
            .record
            .spec
            .disks
            .iter()
            .find(|d| d.id == "rootfs")
            .cloned()
            .ok_or_else(|| Error::Invalid(format!("VM {id} has no root disk")))?;
        let dir = self.layer_dir(key)?;
        // A directory of this commit's own: two builds that share a step may commit its layer
        // at the same time (the first to publish wins, see `publish_layer`).
        let partial = dir.with_extension(format!("partial-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&partial).ctx(|| format!("creating {}", partial.display()))?;
        slot.vm.pause().await?;
        let copied = copy_disk(&disk.path, &partial.join(DISK_FILE)).await;
        let resumed = slot.vm.resume().await;
        let written = copied.and_then(|_| {
            resumed?;
            self.publish_layer(&partial, key, disk.format)
        });
        if written.is_err() {
            let _ = std::fs::remove_dir_all(&partial);
        }
        let bytes = written?;
        tracing::info!(vm = %id, layer = %key, bytes, "disk layer committed");
        Ok(bytes)
    }
}

impl LocalHost {
    /// Imports `req`'s image as a raw disk layer (see the module docs); an image whose layer
    /// exists is only resolved, not downloaded. Work happens in `<key>.import-<random>`, renamed
    /// into place when whole, so two imports of one image at once both succeed.
    pub(super) async fn import_image_layer(
        &self,
        req: ImportImage,
        report: &(dyn Fn(String) + Send + Sync),
    ) -> Result<ImportedImage> {
        let template = crate::image::template(&req.template)
            .ok_or_else(|| Error::Invalid(format!("no built-in template {:?}", req.template)))?;
        let disk_mib = template.disk_size_mib;
        let registry = Registry::new(
            &req.reference,
            req.credentials.as_ref(),
            &self.config.registries,
        )?;
        let image = registry.resolve().await?;
        let key = oci::layer_key(&image.repository, &image.digest, disk_mib);
        let imported = |reused| ImportedImage {
            reference: image.reference.clone(),
            digest: image.digest.clone(),
            layer: key.clone(),
            config: image.config.clone(),
            reused,
        };
        if self.layer(&key)?.is_some() {
            report(format!(
                "{} ({}) was imported before: layer {}",
                image.reference,
                image.digest,
                &key[..12]
            ));
            return Ok(imported(true));
        }
        // The download, the unpacked tree and the disk image (sparse: about the tree) at once,
        // taking the tree as three times the compressed layers (unpacking stops at the disk's
        // size anyway, and a full data directory fails the import cleanly).
        let compressed: u64 = image
            .manifest
            .layers
            .iter()
            .map(|l| l.size.max(0) as u64)
            .sum();
        let need = compressed.saturating_mul(7);
        if let Some(free) = self.disk_free_bytes()
            && free < need
        {
            return Err(Error::Registry {
                image: image.reference.clone(),
                message: format!(
                    "importing it needs up to {} MB free in the data directory; {} MB are",
                    need / 1_000_000,
                    free / 1_000_000
                ),
            });
        }
        let dir = self.layer_dir(&key)?;
        let work = dir.with_extension(format!("import-{:016x}", rand::random::<u64>()));
        crate::private_file::create_dir(&work).ctx(|| format!("creating {}", work.display()))?;
        let published = async {
            oci::import_into(&work, &registry, &image, disk_mib, report).await?;
            self.publish_layer(&work, &key, DiskFormat::Raw)
        }
        .await;
        if published.is_err() {
            let _ = crate::image::remove_build_dir(&work);
        }
        let bytes = published?;
        tracing::info!(image = %image.reference, digest = %image.digest, layer = %key, bytes, "image imported");
        Ok(imported(false))
    }
}

impl LocalHost {
    /// Describes the disk in `work` (`layer.json`) and renames `work` to layer `key`'s
    /// directory; returns the bytes the layer takes. When another commit or import of the same
    /// key finished first, its layer is as good: `work` is removed.
    fn publish_layer(&self, work: &Path, key: &str, format: DiskFormat) -> Result<u64> {
        let bytes = allocated_bytes(&work.join(DISK_FILE))?;
        let layer = Layer {
            format,
            bytes,
            disk: PathBuf::new(),
        };
        let text = serde_json::to_vec_pretty(&layer)
            .map_err(|e| Error::Invalid(format!("layer {key}: {e}")))?;
        std::fs::write(work.join(LAYER_FILE), text).ctx(|| format!("writing layer {key}"))?;
        match std::fs::rename(work, self.layer_dir(key)?) {
            Ok(()) => Ok(bytes),
            Err(_) if self.layer(key)?.is_some() => {
                let _ = std::fs::remove_dir_all(work);
                Ok(bytes)
            }
            Err(e) => Err(Error::io(format!("publishing layer {key}"), e)),
        }
    }
}

/// Removes what commits and imports cut short (a crash, a kill) left in `<data>/layers`.
pub(super) fn remove_unfinished(data: &Path) {
    let Ok(list) = std::fs::read_dir(data.join("layers")) else {
        return;
    };
    for entry in list.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.contains(".partial") || name.contains(".import-") {
            tracing::info!(dir = %name, "removing an unfinished disk layer");
            if let Err(e) = crate::image::remove_build_dir(&entry.path()) {
                tracing::warn!(dir = %name, error = %e, "cannot remove an unfinished disk layer");
            }
        }
    }
}

/// Bytes a file takes on disk (its allocated blocks: a sparse copy is counted as stored).
fn allocated_bytes(path: &std::path::Path) -> Result<u64> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ctx(|| format!("stat {}", path.display()))?;
    Ok(meta.blocks() * 512)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_leave_the_layer_directory() {
        for bad in ["", "../x", "a/b", "A", "x.y", &"a".repeat(65)] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
        check_key("0123abc").unwrap();
    }
}
