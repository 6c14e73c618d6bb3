//! Images from OCI registries: pulled, unpacked and finished into a root disk sandboxes boot.
//!
//! A template build may start `FROM` any image a registry serves (`ubuntu:24.04`,
//! `registry.example.com/team/app:1`). The host pulls it with [`oci_client`] (token and basic
//! auth, image indexes resolved to linux/amd64, every blob's digest checked), applies its layers
//! in order into an empty directory ([`unpack`]: whiteouts, opaque directories, no path outside
//! the directory, sizes bounded by the template's disk), makes the tree a sandbox root
//! ([`finish`]: the `user` account, `/etc/hosts` and friends, the mount points the guest agent
//! needs) and writes it into an ext4 disk, which becomes a disk layer
//! (`<data>/layers/<key>/`, see `host::local::layers`). The guest agent is not in the image: it
//! is the initramfs's `/init` and switches into whatever root it is given, so any Linux
//! userland with a `/bin/sh` works.
//!
//! The layer's key hashes the image's registry and repository, its manifest digest and the disk
//! size, so the same image is pulled once; a tag that moves gives a new digest and so a new
//! layer. The registry is asked for the manifest with the caller's credentials every time,
//! before an imported layer is reused, and a layer is never shared between repositories: a
//! caller who may not pull a private image cannot get its layer by naming the same digest
//! elsewhere. Nothing from the image
//! runs on the host: the tree is only read, written and copied into the disk, and every path
//! the host opens inside it is checked not to pass through a symbolic link.
//!
//! Registries are reached over HTTPS, trusting the host's CA store; plain HTTP only for the
//! registries the host's configuration names as insecure (a local test registry). Credentials
//! are used for the pull only: they are neither stored nor logged and never reach a guest.

mod finish;
mod pull;
mod unpack;

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{Error, Result};

pub use pull::parse_reference;
pub(crate) use pull::{Registry, Resolved};

/// Most layers an image may have.
pub const MAX_LAYERS: usize = 128;
/// Most file system entries an image may have, over all its layers.
pub const MAX_ENTRIES: u64 = 2_000_000;

/// User name and password (or token) for a registry. `Debug` does not show the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryCredentials {
    /// User name (`_json_key` for a GCP service account key, `AWS` for an ECR token).
    pub username: String,
    /// Password, token or key.
    pub password: String,
}

impl std::fmt::Debug for RegistryCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Which registries this host reaches over plain HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// `host[:port]` of each registry spoken to over HTTP instead of HTTPS.
    pub insecure: Vec<String>,
}

/// What to import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportImage {
    /// The image as the user wrote it (`ubuntu:24.04`, `localhost:5000/app@sha256:…`).
    pub reference: String,
    /// Credentials for its registry (anonymous when `None`).
    pub credentials: Option<RegistryCredentials>,
    /// The built-in template whose kernel and initramfs boot it; its disk size is the layer's.
    pub template: String,
}

/// The parts of an image's configuration a template keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `NAME=value` entries, in the image's order.
    pub env: Vec<String>,
    /// Working directory, if the image sets one.
    pub workdir: Option<String>,
    /// User (`name`, `uid`, `name:group`), if the image sets one.
    pub user: Option<String>,
    /// Entrypoint.
    pub entrypoint: Vec<String>,
    /// Command.
    pub cmd: Vec<String>,
}

impl ImageConfig {
    /// Reads an image configuration blob (the `config` object of the OCI image spec).
    pub fn from_json(text: &str) -> Result<Self> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase")]
        struct Inner {
            #[serde(default)]
            env: Option<Vec<String>>,
            #[serde(default)]
            working_dir: Option<String>,
            #[serde(default)]
            user: Option<String>,
            #[serde(default)]
            entrypoint: Option<Vec<String>>,
            #[serde(default)]
            cmd: Option<Vec<String>>,
        }
        #[derive(Deserialize)]
        struct Outer {
            #[serde(default)]
            architecture: String,
            #[serde(default)]
            os: String,
            #[serde(default)]
            config: Option<Inner>,
        }
        let outer: Outer = serde_json::from_str(text)
            .map_err(|e| Error::Invalid(format!("the image's configuration is not valid: {e}")))?;
        if outer.os != "linux" || outer.architecture != "amd64" {
            return Err(Error::Invalid(format!(
                "the image is for {}/{}; this host runs linux/amd64 images",
                outer.os, outer.architecture
            )));
        }
        let inner = outer.config.unwrap_or_default();
        let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
        Ok(Self {
            env: inner.env.unwrap_or_default(),
            workdir: nonempty(inner.working_dir),
            user: nonempty(inner.user),
            entrypoint: inner.entrypoint.unwrap_or_default(),
            cmd: inner.cmd.unwrap_or_default(),
        })
    }
}

/// An imported image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedImage {
    /// The full reference that was pulled (`docker.io/library/ubuntu:24.04`).
    pub reference: String,
    /// The digest of the manifest pulled (for linux/amd64).
    pub digest: String,
    /// The disk layer made from it ([`crate::host::HostAgent::commit_layer`]'s kind).
    pub layer: String,
    /// What its configuration says.
    pub config: ImageConfig,
    /// Whether the layer existed already (nothing was downloaded).
    pub reused: bool,
}

/// The disk layer key of image `digest` from `repository` (`registry/name`) on a disk of
/// `disk_mib` MiB.
pub(crate) fn layer_key(repository: &str, digest: &str, disk_mib: u64) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"platinum oci import v2\0");
    h.update(repository.as_bytes());
    h.update(b"\0");
    h.update(digest.as_bytes());
    h.update(b"\0");
    h.update(disk_mib.to_le_bytes());
    hex::encode(h.finalize())
}

/// Pulls `image` (already resolved by [`pull::resolve`]) into `work/tree`, finishes it and
/// writes `work/disk`, an ext4 image of `disk_mib` MiB (more if the content needs it).
/// `report` gets a line per step. `work` is left with `disk` only.
pub(crate) async fn import_into(
    work: &Path,
    client: &Registry,
    image: &Resolved,
    disk_mib: u64,
    report: &(dyn Fn(String) + Send + Sync),
) -> Result<()> {
    let blobs = work.join("blobs");
    let tree = work.join("tree");
    for dir in [&blobs, &tree] {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let files = client
        .download_layers(image, &blobs, disk_mib, report)
        .await?;
    report(format!("unpacking {} layers", files.len()));
    let (content_bytes, inodes) = {
        let tree = tree.clone();
        crate::image::entry::blocking("oci import", move || {
            let mut budget = unpack::Budget::new(disk_mib << 20, MAX_ENTRIES);
            for file in &files {
                unpack::apply_layer(&tree, file, &mut budget)?;
                std::fs::remove_file(file)
                    .map_err(|e| Error::io(format!("removing {}", file.display()), e))?;
            }
            finish::finish_tree(&tree)?;
            crate::image::rootfs::tree_usage(&tree)
        })
        .await?
    };
    let size_mib = crate::image::rootfs::disk_size_mib(disk_mib, content_bytes);
    report(format!(
        "writing the root disk ({} MB of files, {size_mib} MiB disk)",
        content_bytes / 1_000_000
    ));
    crate::image::rootfs::make_ext4(&tree, &work.join("disk"), size_mib, inodes).await?;
    crate::image::entry::blocking("oci import", move || {
        crate::image::entry::remove_tree(&tree)?;
        crate::image::entry::remove_tree(&blobs)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_keep_env_workdir_user_and_refuse_other_platforms() {
        let c = ImageConfig::from_json(
            r#"{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin","A=b"],
               "WorkingDir":"/app","User":"app","Cmd":["/bin/sh"]}}"#,
        )
        .unwrap();
        assert_eq!(c.env, ["PATH=/usr/bin", "A=b"]);
        assert_eq!(c.workdir.as_deref(), Some("/app"));
        assert_eq!(c.user.as_deref(), Some("app"));
        assert_eq!(c.cmd, ["/bin/sh"]);
        let bare = ImageConfig::from_json(r#"{"architecture":"amd64","os":"linux"}"#).unwrap();
        assert_eq!(bare, ImageConfig::default());
        let arm = ImageConfig::from_json(r#"{"architecture":"arm64","os":"linux"}"#)
            .unwrap_err()
            .to_string();
        assert!(arm.contains("linux/arm64"), "{arm}");
        assert!(ImageConfig::from_json("[").is_err());
    }

    #[test]
    fn keys_follow_repository_digest_and_disk_size() {
        let a = layer_key("r.io/app", "sha256:aa", 4096);
        assert_eq!(a.len(), 64);
        assert_ne!(a, layer_key("r.io/app", "sha256:ab", 4096));
        assert_ne!(a, layer_key("r.io/app", "sha256:aa", 8192));
        assert_ne!(a, layer_key("evil.io/app", "sha256:aa", 4096));
    }

    #[test]
    fn credentials_never_print_the_password() {
        let c = RegistryCredentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
