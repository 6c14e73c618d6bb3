//! Finding and downloading Debian packages with the host's apt.
//!
//! The guest kernel is Debian's stock cloud kernel, never compiled here. The meta package
//! (`linux-image-cloud-amd64`) names no files; it depends on the concrete package of the
//! current kernel (`linux-image-6.1.0-56-cloud-amd64`), whose candidate version apt picks
//! from the host's sources (bookworm-security outranks bookworm, backports stay at priority
//! 100). Resolution only reads apt's local lists; `apt-get update` runs only when they cannot
//! answer. The package is fetched with `apt-get download`, which installs nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::progress::Progress;
use crate::error::{Error, IoContext, Result};
use crate::tool::Tool;

/// A concrete package at a concrete version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Package {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// Resolves a kernel meta package to the concrete `linux-image-*` package it depends on and
/// that package's candidate version, running `apt-get update` once if the local lists cannot.
pub(crate) async fn resolve_kernel(meta: &str, progress: &Progress) -> Result<Package> {
    let step = progress.step(format!("resolving {meta}"));
    let package = match resolve_once(meta).await {
        Ok(package) => package,
        Err(first) => {
            tracing::info!(error = %first, "apt's package lists cannot resolve the kernel; running apt-get update");
            step.set_message("apt-get update");
            Tool::new("apt-get update", "apt-get")?
                .args(["update", "-q"])
                .output()
                .await?;
            resolve_once(meta).await?
        }
    };
    step.done(format!("{} {}", package.name, package.version));
    Ok(package)
}

async fn resolve_once(meta: &str) -> Result<Package> {
    let show = Tool::new("resolve kernel", "apt-cache")?
        .args(["show", "--no-all-versions", meta])
        .output()
        .await?;
    let (name, pinned) = concrete_dependency(&show, meta).ok_or_else(|| Error::Image {
        step: "resolve kernel".into(),
        message: format!("{meta} depends on no linux-image-* package"),
    })?;
    // Debian's kernel meta packages pin the exact version, which saves asking apt again (every
    // apt-cache call rebuilds apt's cache on hosts that do not keep one).
    let version = match pinned {
        Some(version) => version,
        None => {
            let policy = Tool::new("resolve kernel", "apt-cache")?
                .args(["policy", &name])
                .output()
                .await?;
            candidate(&policy).ok_or_else(|| Error::Image {
                step: "resolve kernel".into(),
                message: format!("apt has no installable version of {name}"),
            })?
        }
    };
    Ok(Package { name, version })
}

/// The first `linux-image-*` dependency in `apt-cache show` output, with its version if the
/// dependency pins one with `(= version)`.
fn concrete_dependency(show: &str, meta: &str) -> Option<(String, Option<String>)> {
    let depends = show
        .lines()
        .find_map(|line| line.strip_prefix("Depends:"))?;
    depends
        .split([',', '|'])
        .map(str::trim)
        .find_map(|alternative| {
            let (name, constraint) = match alternative.split_once('(') {
                Some((name, constraint)) => {
                    (name.trim(), Some(constraint.trim_end_matches(')').trim()))
                }
                None => (alternative, None),
            };
            if !name.starts_with("linux-image-") || name == meta {
                return None;
            }
            let pinned = constraint
                .and_then(|c| c.strip_prefix('='))
                .map(|v| v.trim().to_owned());
            Some((name.to_owned(), pinned))
        })
}

/// The `Candidate:` version of `apt-cache policy` output, unless it is `(none)`.
fn candidate(policy: &str) -> Option<String> {
    policy.lines().find_map(|line| {
        let version = line.trim().strip_prefix("Candidate:")?.trim();
        (!version.is_empty() && version != "(none)").then(|| version.to_owned())
    })
}

/// Downloads `package` into `dir` (a byte bar follows the file as it grows) and returns the
/// `.deb`'s path.
pub(crate) async fn download(
    package: &Package,
    dir: &Path,
    progress: &Progress,
) -> Result<PathBuf> {
    let spec = format!("{}={}", package.name, package.version);
    let show = Tool::new("download kernel", "apt-cache")?
        .args(["show", "--no-all-versions", &spec])
        .output()
        .await?;
    let size = show
        .lines()
        .find_map(|l| l.strip_prefix("Size:")?.trim().parse::<u64>().ok())
        .unwrap_or(0);

    let bar = progress.bytes(format!("downloading {}", package.name), size);
    // Root's apt drops to the `_apt` user for downloads, which cannot write into our private
    // directory; downloading as root there is what `apt-get download` would fall back to anyway.
    let run = Tool::new("download kernel", "apt-get")?
        .args(["download", "-q", "-o", "APT::Sandbox::User=root", &spec])
        .current_dir(dir)
        .output();
    tokio::pin!(run);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            result = &mut run => { result?; break; }
            _ = tick.tick() => bar.set_position(dir_bytes(dir)),
        }
    }
    let deb = std::fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| Error::Image {
            step: "download kernel".into(),
            message: format!("apt-get download {spec} left no .deb in {}", dir.display()),
        })?;
    bar.done(format!("{} MB", dir_bytes(dir) / 1_000_000));
    Ok(deb)
}

/// Bytes of the files directly in `dir` and its `partial/` (apt's download area).
fn dir_bytes(dir: &Path) -> u64 {
    [dir.to_path_buf(), dir.join("partial")]
        .iter()
        .filter_map(|d| std::fs::read_dir(d).ok())
        .flatten()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_apt_cache_output() {
        let meta = "linux-image-cloud-amd64";
        let show = "Package: linux-image-cloud-amd64\nVersion: 6.1.192-2\n\
                    Depends: linux-image-6.1.0-56-cloud-amd64 (= 6.1.192-2)\nSize: 1492\n";
        assert_eq!(
            concrete_dependency(show, meta),
            Some((
                "linux-image-6.1.0-56-cloud-amd64".into(),
                Some("6.1.192-2".into())
            ))
        );
        let unpinned = "Depends: initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-cloud-amd64 (>= 6.12)\n";
        assert_eq!(
            concrete_dependency(unpinned, meta),
            Some(("linux-image-6.12.9-cloud-amd64".into(), None))
        );
        assert_eq!(concrete_dependency("Depends: libc6\n", meta), None);
        let policy =
            "linux-image-6.1.0-56-cloud-amd64:\n  Installed: (none)\n  Candidate: 6.1.192-2\n";
        assert_eq!(candidate(policy).as_deref(), Some("6.1.192-2"));
        assert_eq!(
            candidate("p:\n  Installed: (none)\n  Candidate: (none)\n"),
            None
        );
    }
}
