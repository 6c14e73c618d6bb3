//! The guest kernel: Debian's stock cloud kernel, unpacked into a PVH `vmlinux` and the modules
//! the guest needs.
//!
//! Steps (see the spec, "Booting the stock Debian cloud kernel"):
//!
//! 1. resolve `linux-image-cloud-amd64` to the concrete package and version ([`super::apt`]);
//!    the cache key is that package, version, the wanted module list and the builder version;
//! 2. `apt-get download` it and unpack it with `dpkg-deb -x` (nothing is installed on the host);
//! 3. `depmod -b` the unpacked tree, because the package ships no `modules.dep`;
//! 4. read `boot/config-<release>`: `CONFIG_PVH=y` is required, `CONFIG_RD_GZIP` decides how the
//!    initramfs is compressed;
//! 5. decompress `boot/vmlinuz-<release>` into `vmlinux` and check its PVH note
//!    ([`super::vmlinux`]);
//! 6. copy the wanted modules and their dependencies to `modules/` and record the load order
//!    ([`super::modules`]).
//!
//! The entry holds `vmlinux`, `config` and `modules/*.ko`; the manifest's details carry the
//! release, the PVH entry address and the module load order. When apt cannot resolve the
//! package at all (no network for `apt-get update`, no apt), the newest complete cached kernel
//! is used with a warning, so a host that built its images once keeps working offline.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::apt::{self, Package};
use super::entry::{Built, Entry, KindDir, blocking, check_entry, key_of};
use super::initramfs::InitrdCompression;
use super::manifest::EntryKind;
use super::modules::{GUEST_MODULES, ModuleDeps, load_order};
use super::progress::Progress;
use super::vmlinux;
use crate::error::{Error, IoContext, Result};
use crate::tool::Tool;

/// The Debian meta package that always points at the current cloud kernel.
pub const KERNEL_PACKAGE: &str = "linux-image-cloud-amd64";

/// A guest kernel in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    /// Cache key of the kernel entry.
    pub key: String,
    /// The PVH-bootable ELF kernel.
    pub vmlinux: PathBuf,
    /// Kernel release, e.g. `6.1.0-56-cloud-amd64`.
    pub release: String,
    /// The Debian package it came from, e.g. `linux-image-6.1.0-56-cloud-amd64`.
    pub package: String,
    /// That package's version, e.g. `6.1.192-2`.
    pub version: String,
    /// Physical address of the PVH entry point.
    pub pvh_entry: u64,
    /// The guest's modules, in load order.
    pub modules: Vec<PathBuf>,
    /// How an initramfs for this kernel is compressed.
    pub initrd_compression: InitrdCompression,
}

/// What the kernel key is computed from.
#[derive(Serialize)]
struct KernelInputs<'a> {
    builder_version: u32,
    package: &'a str,
    version: &'a str,
    modules: Vec<&'static str>,
}

/// What a kernel build records in its manifest.
#[derive(Debug, Serialize, Deserialize)]
struct KernelDetails {
    release: String,
    package: String,
    version: String,
    pvh_entry: u64,
    /// Module file names (in `modules/`), in load order.
    modules: Vec<String>,
    missing_optional_modules: Vec<String>,
    initrd_compression: InitrdCompression,
}

impl Kernel {
    fn from_entry(entry: &Entry) -> Result<Self> {
        let details: KernelDetails = serde_json::from_value(entry.manifest.details.clone())
            .map_err(|e| Error::Image {
                step: "kernel".into(),
                message: format!("{}: bad manifest details: {e}", entry.dir.display()),
            })?;
        Ok(Kernel {
            key: entry.manifest.key.clone(),
            vmlinux: entry.dir.join("vmlinux"),
            release: details.release,
            package: details.package,
            version: details.version,
            pvh_entry: details.pvh_entry,
            modules: details
                .modules
                .iter()
                .map(|m| entry.dir.join("modules").join(m))
                .collect(),
            initrd_compression: details.initrd_compression,
        })
    }
}

/// Returns the cached kernel for the current Debian cloud kernel package, building it first if
/// needed.
pub(crate) async fn ensure(images: &Path, progress: &Progress) -> Result<(Kernel, Entry)> {
    let kind = KindDir::new(images, EntryKind::Kernel);
    let package = match apt::resolve_kernel(KERNEL_PACKAGE, progress).await {
        Ok(package) => package,
        Err(error) => return newest_cached(&kind, images, progress, error).await,
    };
    let inputs = KernelInputs {
        builder_version: super::BUILDER_VERSION,
        package: &package.name,
        version: &package.version,
        modules: GUEST_MODULES.iter().map(|m| m.name).collect(),
    };
    let key = key_of(&inputs)?;
    let entry = kind
        .ensure(&key, &inputs, progress, |dir| {
            build(dir, package.clone(), progress.clone())
        })
        .await?;
    Ok((Kernel::from_entry(&entry)?, entry))
}

/// The newest complete kernel entry, for when apt cannot say which kernel is current.
async fn newest_cached(
    kind: &KindDir,
    images: &Path,
    progress: &Progress,
    error: Error,
) -> Result<(Kernel, Entry)> {
    let dirs: Vec<PathBuf> = kind.scan()?.into_iter().map(|(_, path)| path).collect();
    let progress = progress.clone();
    let newest = blocking("kernel", move || {
        Ok(dirs
            .iter()
            .filter_map(|dir| check_entry(dir, &progress).ok())
            .max_by_key(|e| e.manifest.created_unix))
    })
    .await?;
    let Some(entry) = newest else {
        return Err(error);
    };
    tracing::warn!(
        error = %error,
        cached = %entry.manifest.label,
        cache = %images.display(),
        "cannot resolve the current kernel package; using the newest cached kernel"
    );
    Ok((Kernel::from_entry(&entry)?, entry))
}

async fn build(dir: PathBuf, package: Package, progress: Progress) -> Result<Built> {
    let work = dir.join("work");
    std::fs::create_dir(&work).ctx(|| format!("creating {}", work.display()))?;
    let deb = apt::download(&package, &work, &progress).await?;

    let root = work.join("root");
    let step = progress.step(format!("unpacking {}", package.name));
    Tool::new("unpack kernel", "dpkg-deb")?
        .arg("-x")
        .arg(&deb)
        .arg(&root)
        .output()
        .await?;
    let (release, modules_dir) = find_release(&root)?;
    step.done(&release);

    let step = progress.step("depmod");
    if !root.join("lib").exists() {
        // depmod -b looks in <base>/lib/modules; merged-/usr packages ship usr/lib/modules.
        std::os::unix::fs::symlink("usr/lib", root.join("lib"))
            .ctx(|| format!("linking {}/lib", root.display()))?;
    }
    Tool::new("depmod", "depmod")?
        .arg("-b")
        .arg(&root)
        .arg(&release)
        .output()
        .await?;
    step.done("");

    let config_path = root.join("boot").join(format!("config-{release}"));
    let config = std::fs::read_to_string(&config_path)
        .ctx(|| format!("reading {}", config_path.display()))?;
    if !config_enabled(&config, "CONFIG_PVH") {
        return Err(Error::Image {
            step: "kernel".into(),
            message: format!(
                "{} {} is built without CONFIG_PVH; it cannot be booted as a PVH vmlinux",
                package.name, package.version
            ),
        });
    }
    let initrd_compression = if config_enabled(&config, "CONFIG_RD_GZIP") {
        InitrdCompression::Gzip
    } else {
        InitrdCompression::None
    };
    std::fs::copy(&config_path, dir.join("config"))
        .ctx(|| format!("copying {}", config_path.display()))?;

    let pvh_entry = extract_vmlinux(
        &root.join("boot").join(format!("vmlinuz-{release}")),
        &dir.join("vmlinux"),
        &progress,
    )
    .await?;

    let step = progress.step("collecting guest modules");
    let (modules, missing_optional) = {
        let (modules_dir, out) = (modules_dir.clone(), dir.join("modules"));
        blocking("modules", move || copy_modules(&modules_dir, &out)).await?
    };
    for name in &missing_optional {
        tracing::warn!(module = %name, release = %release, "the kernel has no such module; the guest will do without it");
    }
    step.done(format!("{} modules", modules.len()));

    std::fs::remove_dir_all(&work).ctx(|| format!("removing {}", work.display()))?;
    let details = KernelDetails {
        release: release.clone(),
        package: package.name.clone(),
        version: package.version.clone(),
        pvh_entry,
        modules,
        missing_optional_modules: missing_optional,
        initrd_compression,
    };
    Ok(Built {
        label: format!("{} {}", package.name, package.version),
        details: serde_json::to_value(details).map_err(|e| Error::Image {
            step: "kernel".into(),
            message: e.to_string(),
        })?,
    })
}

/// The single `lib/modules/<release>` (or `usr/lib/modules/<release>`) of an unpacked package.
fn find_release(root: &Path) -> Result<(String, PathBuf)> {
    for base in ["lib/modules", "usr/lib/modules"] {
        let Ok(read) = std::fs::read_dir(root.join(base)) else {
            continue;
        };
        let releases: Vec<PathBuf> = read
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_dir())
            .collect();
        if let [only] = releases.as_slice() {
            let release = only
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            return Ok((release, only.clone()));
        }
    }
    Err(Error::Image {
        step: "kernel".into(),
        message: format!(
            "{} has no single lib/modules/<release> directory",
            root.display()
        ),
    })
}

/// Whether `option` is `=y` in a kernel config.
fn config_enabled(config: &str, option: &str) -> bool {
    config
        .lines()
        .any(|line| line.strip_prefix(option).is_some_and(|rest| rest == "=y"))
}

/// Decompresses `vmlinuz` into `out`, checks the PVH note, returns the PVH entry address.
async fn extract_vmlinux(vmlinuz: &Path, out: &Path, progress: &Progress) -> Result<u64> {
    let data = std::fs::read(vmlinuz).ctx(|| format!("reading {}", vmlinuz.display()))?;
    let bar = progress.bytes("decompressing vmlinuz", data.len() as u64);
    let out = out.to_path_buf();
    let (entry, size, bar) = blocking("vmlinux", move || {
        let vmlinux = vmlinux::extract(&data, &mut |done| bar.set_position(done as u64))?;
        let entry = vmlinux::pvh_entry(&vmlinux)?;
        std::fs::write(&out, &vmlinux).ctx(|| format!("writing {}", out.display()))?;
        Ok((entry, vmlinux.len(), bar))
    })
    .await?;
    bar.done(format!(
        "vmlinux {} MB, PVH entry {entry:#x}",
        size / 1_000_000
    ));
    Ok(entry)
}

/// Copies the guest's modules (and what they depend on) from `modules_dir` into `out`; returns
/// their file names in load order and the optional modules the kernel lacks.
fn copy_modules(modules_dir: &Path, out: &Path) -> Result<(Vec<String>, Vec<String>)> {
    let dep_path = modules_dir.join("modules.dep");
    let text =
        std::fs::read_to_string(&dep_path).ctx(|| format!("reading {}", dep_path.display()))?;
    let order = load_order(&ModuleDeps::parse(&text)?, GUEST_MODULES)?;
    std::fs::create_dir(out).ctx(|| format!("creating {}", out.display()))?;
    let mut names = Vec::with_capacity(order.paths.len());
    for path in &order.paths {
        let name = path.rsplit('/').next().unwrap_or(path).to_owned();
        if names.contains(&name) {
            return Err(Error::Image {
                step: "modules".into(),
                message: format!("two modules are called {name}"),
            });
        }
        let from = modules_dir.join(path);
        std::fs::copy(&from, out.join(&name)).ctx(|| format!("copying {}", from.display()))?;
        names.push(name);
    }
    Ok((
        names,
        order
            .missing_optional
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
    ))
}

/// How much the guest kernel prints on its serial console.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ConsoleLog {
    /// Errors only. Every byte on the emulated UART is a VM exit, so production boots stay quiet.
    #[default]
    Quiet,
    /// Full boot log, for debugging.
    Verbose,
}

/// The kernel command line for Platinum's guest images.
///
/// - `console=ttyS0`: the 8250 UART is built into the kernel (virtio-console is a module, so
///   `hvc0` only appears once the agent has loaded it); both VMMs provide it.
/// - `panic=-1`: reboot at once on a panic, so a dead guest ends its VMM instead of hanging.
/// - `root=/dev/vda rw rootfstype=ext4`: where the agent (PID 1 in the initramfs, which the
///   kernel runs instead of mounting a root itself) finds the root filesystem.
/// - `quiet loglevel=1`, or `loglevel=7` when verbose.
///
/// ACPI stays on: QEMU microvm describes its virtio-mmio devices only in ACPI, and the Debian
/// kernel cannot take `virtio_mmio.device=` instead.
pub fn kernel_cmdline(log: ConsoleLog) -> String {
    let verbosity = match log {
        ConsoleLog::Quiet => "quiet loglevel=1",
        ConsoleLog::Verbose => "loglevel=7",
    };
    format!("console=ttyS0 panic=-1 root=/dev/vda rw rootfstype=ext4 {verbosity}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_options_are_matched_exactly() {
        let config =
            "CONFIG_PVH=y\n# CONFIG_RD_GZIP is not set\nCONFIG_RD_LZ4=y\nCONFIG_PVH_EXTRA=y\n";
        assert!(config_enabled(config, "CONFIG_PVH"));
        assert!(!config_enabled(config, "CONFIG_RD_GZIP"));
        assert!(!config_enabled("CONFIG_PVHX=y\n", "CONFIG_PVH"));
    }

    #[test]
    fn kernel_keys_follow_package_version_and_modules() {
        let inputs = |version: &'static str, modules: Vec<&'static str>| KernelInputs {
            builder_version: 1,
            package: "linux-image-6.1.0-56-cloud-amd64",
            version,
            modules,
        };
        let key = key_of(&inputs("6.1.192-2", vec!["virtio", "virtio_blk"])).unwrap();
        assert_eq!(key, "ef0d791c85896bb03ae1265271f95c46");
        assert_ne!(
            key,
            key_of(&inputs("6.1.193-1", vec!["virtio", "virtio_blk"])).unwrap()
        );
        assert_ne!(key, key_of(&inputs("6.1.192-2", vec!["virtio"])).unwrap());
    }

    #[test]
    fn cmdline_keeps_the_uart_console_and_acpi() {
        let quiet = kernel_cmdline(ConsoleLog::Quiet);
        assert!(quiet.starts_with("console=ttyS0 "), "{quiet}");
        assert!(
            quiet.contains("quiet") && !quiet.contains("acpi=off"),
            "{quiet}"
        );
        assert!(kernel_cmdline(ConsoleLog::Verbose).contains("loglevel=7"));
    }
}
