//! Host dependencies: what Platinum needs on the host, whether it is there, and installing it on
//! Debian 12 (`platinum up` as root).
//!
//! QEMU comes from bookworm-backports (QEMU 10: `migrate file:` for snapshots, microvm PVH
//! boot); the image builder needs mmdebstrap, dpkg-deb, depmod and mkfs.ext4; qcow2 overlays need
//! qemu-img. vhost-device-vsock is optional (the vsock transport under QEMU).

use anyhow::{Context, Result, bail};
use serde::Serialize;
use std::path::PathBuf;
use std::process::Command;

/// One program Platinum uses.
#[derive(Debug, Clone, Serialize)]
pub struct Dependency {
    /// Program name.
    pub program: &'static str,
    /// What it is for.
    pub purpose: &'static str,
    /// Debian package providing it (`None`: not from apt).
    pub package: Option<&'static str>,
    /// Install from bookworm-backports.
    pub backports: bool,
    /// Needed for the default setup.
    pub required: bool,
    /// Where it was found.
    pub found: Option<PathBuf>,
    /// `--version` first line, when found.
    pub version: Option<String>,
}

const DEPENDENCIES: &[(&str, &str, Option<&str>, bool, bool)] = &[
    (
        "qemu-system-x86_64",
        "runs sandbox VMs (QEMU driver)",
        Some("qemu-system-x86"),
        true,
        true,
    ),
    (
        "qemu-img",
        "qcow2 overlays where reflink is unavailable",
        Some("qemu-utils"),
        true,
        true,
    ),
    (
        "mmdebstrap",
        "builds template root filesystems",
        Some("mmdebstrap"),
        false,
        true,
    ),
    (
        "dpkg-deb",
        "unpacks the Debian kernel package",
        Some("dpkg"),
        false,
        true,
    ),
    (
        "depmod",
        "orders kernel modules for the initramfs",
        Some("kmod"),
        false,
        true,
    ),
    (
        "mkfs.ext4",
        "writes root filesystem images",
        Some("e2fsprogs"),
        false,
        true,
    ),
    (
        "apt-get",
        "downloads the kernel and packages",
        Some("apt"),
        false,
        true,
    ),
    (
        "vhost-device-vsock",
        "vsock transport under QEMU (optional)",
        None,
        false,
        false,
    ),
];

fn find(program: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin"].map(PathBuf::from));
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter()
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn version_of(path: &PathBuf) -> Option<String> {
    let out = Command::new(path).arg("--version").output().ok()?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

/// Checks every dependency.
pub fn check() -> Vec<Dependency> {
    DEPENDENCIES
        .iter()
        .map(|&(program, purpose, package, backports, required)| {
            let found = find(program);
            let version = found.as_ref().and_then(version_of);
            Dependency {
                program,
                purpose,
                package,
                backports,
                required,
                found,
                version,
            }
        })
        .collect()
}

/// QEMU's major version from `qemu-system-x86_64 --version`.
pub fn qemu_major(version_line: &str) -> Option<u32> {
    version_line
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Problems with the found dependencies (missing required programs, QEMU too old).
pub fn problems(deps: &[Dependency]) -> Vec<String> {
    let mut out = Vec::new();
    for d in deps.iter().filter(|d| d.required && d.found.is_none()) {
        out.push(format!("{} is missing ({})", d.program, d.purpose));
    }
    if let Some(q) = deps.iter().find(|d| d.program == "qemu-system-x86_64")
        && let Some(v) = &q.version
        && qemu_major(v).is_some_and(|m| m < 8)
    {
        out.push(format!(
            "QEMU is too old ({v}); Platinum needs QEMU >= 8.2 from bookworm-backports"
        ));
    }
    out
}

/// Installs missing required packages with apt (Debian, as root). Adds bookworm-backports to the
/// apt sources when QEMU must come from there.
pub fn install_missing(deps: &[Dependency]) -> Result<()> {
    let missing: Vec<&Dependency> = deps
        .iter()
        .filter(|d| d.required && d.package.is_some())
        .filter(|d| {
            d.found.is_none() || (d.program == "qemu-system-x86_64" && !problems(deps).is_empty())
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "missing: {}. Run `platinum up` as root to install them, or install them yourself",
            missing
                .iter()
                .map(|d| d.program)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let os = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    if !os.contains("ID=debian") {
        bail!(
            "automatic installation supports Debian 12 only; install these yourself: {:?}",
            missing.iter().map(|d| d.package).collect::<Vec<_>>()
        );
    }
    let backports: Vec<&str> = missing
        .iter()
        .filter(|d| d.backports)
        .filter_map(|d| d.package)
        .collect();
    let plain: Vec<&str> = missing
        .iter()
        .filter(|d| !d.backports)
        .filter_map(|d| d.package)
        .collect();
    if !backports.is_empty() {
        ensure_backports_source()?;
    }
    run("apt-get", &["update", "-q"])?;
    if !backports.is_empty() {
        let mut args = vec!["install", "-y", "-q", "-t", "bookworm-backports"];
        args.extend(&backports);
        run("apt-get", &args)?;
    }
    if !plain.is_empty() {
        let mut args = vec!["install", "-y", "-q"];
        args.extend(&plain);
        run("apt-get", &args)?;
    }
    Ok(())
}

fn ensure_backports_source() -> Result<()> {
    let sources = ["/etc/apt/sources.list", "/etc/apt/sources.list.d"];
    let mut text = String::new();
    for s in sources {
        let p = std::path::Path::new(s);
        if p.is_file() {
            text.push_str(&std::fs::read_to_string(p).unwrap_or_default());
        } else if let Ok(entries) = std::fs::read_dir(p) {
            for e in entries.flatten() {
                text.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
            }
        }
    }
    if text.contains("bookworm-backports") {
        return Ok(());
    }
    std::fs::write(
        "/etc/apt/sources.list.d/platinum-backports.list",
        "deb http://deb.debian.org/debian bookworm-backports main\n",
    )
    .context("adding bookworm-backports to the apt sources")
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    tracing::info!(command = %format!("{program} {}", args.join(" ")), "installing dependencies");
    let status = Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .with_context(|| format!("running {program}"))?;
    if !status.success() {
        bail!("`{program} {}` failed with {status}", args.join(" "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_qemu_major_version() {
        assert_eq!(
            qemu_major("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)"),
            Some(10)
        );
        assert_eq!(qemu_major("QEMU emulator version 7.2.22"), Some(7));
        assert_eq!(qemu_major("garbage"), None);
    }

    #[test]
    fn old_qemu_and_missing_programs_are_problems() {
        let mut deps = check();
        for d in &mut deps {
            if d.program == "qemu-system-x86_64" {
                d.found = Some("/usr/bin/qemu-system-x86_64".into());
                d.version = Some("QEMU emulator version 7.2.22".into());
            }
            if d.program == "mmdebstrap" {
                d.found = None;
            }
        }
        let p = problems(&deps);
        assert!(p.iter().any(|m| m.contains("too old")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("mmdebstrap")), "{p:?}");
    }
}
