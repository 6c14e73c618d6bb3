//! Talking to a registry: image references, a tag resolved to its linux/amd64 manifest and
//! configuration, layers downloaded to files with their sizes bounded and digests checked.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, linux_amd64_resolver};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use tokio::io::AsyncWrite;

use super::{ImageConfig, MAX_LAYERS, RegistryCredentials, RegistryOptions};
use crate::error::{Error, Result};

/// How long connecting to a registry may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a registry may go without sending anything.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// Checks `text` is an image reference and returns it in full (`ubuntu` ->
/// `docker.io/library/ubuntu:latest`).
pub fn parse_reference(text: &str) -> Result<String> {
    reference(text).map(|r| r.whole())
}

fn reference(text: &str) -> Result<Reference> {
    let text = text.trim();
    text.parse::<Reference>()
        .map_err(|e| Error::Invalid(format!("{text:?} is not an image reference: {e}")))
}

/// One image's registry, with the credentials to use there.
pub(crate) struct Registry {
    client: Client,
    auth: RegistryAuth,
    reference: Reference,
}

/// An image's manifest and configuration.
pub(crate) struct Resolved {
    /// The full reference.
    pub reference: String,
    /// Its registry and repository (`docker.io/library/ubuntu`).
    pub repository: String,
    /// The manifest's digest.
    pub digest: String,
    /// The manifest (of the linux/amd64 image when the reference names an index).
    pub manifest: OciImageManifest,
    /// Its configuration.
    pub config: ImageConfig,
}

impl Registry {
    /// A client for `reference`'s registry.
    pub fn new(
        reference: &str,
        credentials: Option<&RegistryCredentials>,
        options: &RegistryOptions,
    ) -> Result<Self> {
        let reference = self::reference(reference)?;
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.insecure.clone()),
            platform_resolver: Some(Box::new(linux_amd64_resolver)),
            connect_timeout: Some(CONNECT_TIMEOUT),
            read_timeout: Some(READ_TIMEOUT),
            user_agent: concat!("platinum/", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        };
        let auth = match credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        Ok(Self {
            client: Client::new(config),
            auth,
            reference,
        })
    }

    fn error(&self, e: impl std::error::Error) -> Error {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(inner) = source {
            message.push_str(": ");
            message.push_str(&inner.to_string());
            source = inner.source();
        }
        Error::Registry {
            image: self.reference.whole(),
            message,
        }
    }

    /// Fetches the manifest (resolving an index to linux/amd64) and the configuration.
    pub async fn resolve(&self) -> Result<Resolved> {
        let (manifest, digest, config) = self
            .client
            .pull_manifest_and_config(&self.reference, &self.auth)
            .await
            .map_err(|e| self.error(e))?;
        let config = ImageConfig::from_json(&config).map_err(|e| Error::Registry {
            image: self.reference.whole(),
            message: e.to_string(),
        })?;
        if manifest.layers.len() > MAX_LAYERS {
            return Err(Error::Registry {
                image: self.reference.whole(),
                message: format!(
                    "the image has {} layers; at most {MAX_LAYERS} are supported",
                    manifest.layers.len()
                ),
            });
        }
        Ok(Resolved {
            reference: self.reference.whole(),
            repository: format!(
                "{}/{}",
                self.reference.registry(),
                self.reference.repository()
            ),
            digest,
            manifest,
            config,
        })
    }

    /// Downloads `image`'s layers into `dir`, in order, and returns their files. Their sizes
    /// together may not pass the disk's (`disk_mib`); each download stops at its descriptor's
    /// size and its digest is checked.
    pub async fn download_layers(
        &self,
        image: &Resolved,
        dir: &Path,
        disk_mib: u64,
        report: &(dyn Fn(String) + Send + Sync),
    ) -> Result<Vec<PathBuf>> {
        let layers = &image.manifest.layers;
        let total: u64 = layers.iter().map(|l| l.size.max(0) as u64).sum();
        if total > disk_mib << 20 {
            return Err(Error::Registry {
                image: image.reference.clone(),
                message: format!(
                    "its layers are {} MB compressed, more than the template's {disk_mib} MiB disk",
                    total / 1_000_000
                ),
            });
        }
        report(format!(
            "pulling {} ({}): {} layers, {:.1} MB",
            image.reference,
            image.digest,
            layers.len(),
            total as f64 / 1e6
        ));
        let mut files = Vec::with_capacity(layers.len());
        for (i, layer) in layers.iter().enumerate() {
            check_layer(layer).map_err(|message| Error::Registry {
                image: image.reference.clone(),
                message: format!("layer {}: {message}", i + 1),
            })?;
            let path = dir.join(format!("{i:03}"));
            let file = tokio::fs::File::create(&path)
                .await
                .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
            let started = std::time::Instant::now();
            let out = Bounded {
                file,
                left: layer.size.max(0) as u64,
            };
            self.client
                .pull_blob(&self.reference, layer, out)
                .await
                .map_err(|e| self.error(e))?;
            report(format!(
                "layer {}/{} {} ({:.1} MB) in {:.1} s",
                i + 1,
                layers.len(),
                short(&layer.digest),
                layer.size as f64 / 1e6,
                started.elapsed().as_secs_f64()
            ));
            files.push(path);
        }
        Ok(files)
    }
}

/// A layer this host can unpack: a tar archive, plain or gzip-compressed, served by the
/// registry itself.
fn check_layer(layer: &OciDescriptor) -> std::result::Result<(), String> {
    if layer.urls.as_ref().is_some_and(|u| !u.is_empty()) {
        return Err("foreign layers (served from other URLs) are not supported".into());
    }
    if layer.size < 0 {
        return Err(format!("negative size {}", layer.size));
    }
    let t = layer.media_type.as_str();
    let supported = t.ends_with(".tar")
        || t.ends_with(".tar+gzip")
        || t.ends_with(".tar.gzip")
        || t == "application/octet-stream";
    if supported {
        Ok(())
    } else {
        Err(format!(
            "media type {t} is not supported (tar and gzip-compressed tar are)"
        ))
    }
}

/// `sha256:0123456789ab`.
fn short(digest: &str) -> &str {
    &digest[..digest.len().min(19)]
}

/// A file that takes at most `left` more bytes: a registry cannot fill the host's disk with a
/// blob longer than its descriptor says.
struct Bounded {
    file: tokio::fs::File,
    left: u64,
}

impl AsyncWrite for Bounded {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if buf.len() as u64 > self.left {
            return Poll::Ready(Err(std::io::Error::other(
                "the registry sent more bytes than the layer's size",
            )));
        }
        let this = &mut *self;
        match Pin::new(&mut this.file).poll_write(cx, buf) {
            Poll::Ready(Ok(n)) => {
                this.left -= n as u64;
                Poll::Ready(Ok(n))
            }
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.file).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_normalised_and_garbage_refused() {
        assert_eq!(
            parse_reference("ubuntu:24.04").unwrap(),
            "docker.io/library/ubuntu:24.04"
        );
        assert_eq!(
            parse_reference("localhost:5000/team/app").unwrap(),
            "localhost:5000/team/app:latest"
        );
        for bad in ["", "UPPER/Case", "a b", "x:y:z:"] {
            assert!(parse_reference(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn only_tar_layers_from_the_registry_are_taken() {
        let layer = |t: &str| OciDescriptor {
            media_type: t.into(),
            digest: "sha256:00".into(),
            size: 1,
            ..Default::default()
        };
        check_layer(&layer("application/vnd.oci.image.layer.v1.tar+gzip")).unwrap();
        check_layer(&layer("application/vnd.docker.image.rootfs.diff.tar.gzip")).unwrap();
        check_layer(&layer("application/vnd.oci.image.layer.v1.tar")).unwrap();
        let zstd = check_layer(&layer("application/vnd.oci.image.layer.v1.tar+zstd"));
        assert!(zstd.unwrap_err().contains("zstd"));
        let mut foreign = layer("application/vnd.oci.image.layer.v1.tar");
        foreign.urls = Some(vec!["https://example.com/x".into()]);
        assert!(check_layer(&foreign).is_err());
    }

    #[tokio::test]
    async fn a_blob_longer_than_its_size_is_cut_off() {
        use tokio::io::AsyncWriteExt;
        let dir = tempfile::tempdir().unwrap();
        let file = tokio::fs::File::create(dir.path().join("b")).await.unwrap();
        let mut out = Bounded { file, left: 4 };
        out.write_all(b"abcd").await.unwrap();
        assert!(out.write_all(b"e").await.is_err());
    }
}
