//! Deciding between KVM and TCG for QEMU, and whether KVM can run a stock guest at all.
//!
//! KVM is chosen only when all of these hold:
//! 1. `/dev/kvm` opens read-write;
//! 2. `KVM_GET_API_VERSION` returns 12 (the only stable KVM API);
//! 3. `/sys/module/kvm_pvm` is absent: `kvm_pvm` is a nested PVM hypervisor that cannot run a
//!    stock Debian kernel (emulation failures mid-boot);
//! 4. `/proc/cpuinfo` lists `vmx` or `svm`, i.e. the CPU really has hardware virtualization.
//!
//! Otherwise QEMU runs the guest under TCG. `PLATINUM_ACCEL=kvm|tcg` overrides the decision;
//! forcing KVM where the checks fail is allowed (for experiments) but logged as a warning.
//! Every decision carries a human-readable reason for `platinum doctor` and sandbox info.

use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::{Error, Result};
use crate::vmm::Accel;

/// Environment variable that overrides the accelerator (`kvm` or `tcg`).
pub const ACCEL_ENV: &str = "PLATINUM_ACCEL";

/// The only KVM API version Linux has ever shipped as stable.
const KVM_API_VERSION: i32 = 12;

/// `KVM_GET_API_VERSION` = `_IO(KVMIO, 0x00)` with `KVMIO = 0xAE`.
const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;

/// The accelerator chosen for this host and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccelChoice {
    /// KVM or TCG.
    pub accel: Accel,
    /// Why, in words.
    pub reason: String,
    /// True when `PLATINUM_ACCEL` decided it.
    pub forced: bool,
}

/// Where the host facts are read from; [`HostPaths::default`] is the real host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// The KVM device (`/dev/kvm`).
    pub kvm_device: PathBuf,
    /// Directory present when the `kvm_pvm` module is loaded.
    pub kvm_pvm_module: PathBuf,
    /// CPU flags source (`/proc/cpuinfo`).
    pub cpuinfo: PathBuf,
}

impl Default for HostPaths {
    fn default() -> Self {
        HostPaths {
            kvm_device: PathBuf::from("/dev/kvm"),
            kvm_pvm_module: PathBuf::from("/sys/module/kvm_pvm"),
            cpuinfo: PathBuf::from("/proc/cpuinfo"),
        }
    }
}

/// Decides for this host, honouring `PLATINUM_ACCEL`.
pub fn detect() -> Result<AccelChoice> {
    let env = std::env::var(ACCEL_ENV).ok();
    decide(&HostPaths::default(), env.as_deref())
}

/// Decides from the given host paths and override value (the value of `PLATINUM_ACCEL`, if set).
pub fn decide(paths: &HostPaths, env_override: Option<&str>) -> Result<AccelChoice> {
    let kvm = kvm_usable(paths);
    match env_override.map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) if v.eq_ignore_ascii_case("tcg") => Ok(AccelChoice {
            accel: Accel::Tcg,
            reason: format!("{ACCEL_ENV}=tcg"),
            forced: true,
        }),
        Some(v) if v.eq_ignore_ascii_case("kvm") => {
            let reason = match &kvm {
                Ok(()) => format!("{ACCEL_ENV}=kvm (KVM usable)"),
                Err(why) => {
                    warn!(%why, "{ACCEL_ENV}=kvm forces KVM although it cannot run a stock guest here");
                    format!("{ACCEL_ENV}=kvm, forced although {why}")
                }
            };
            Ok(AccelChoice {
                accel: Accel::Kvm,
                reason,
                forced: true,
            })
        }
        Some(other) => Err(Error::Invalid(format!(
            "{ACCEL_ENV}={other}: expected `kvm` or `tcg`"
        ))),
        None => Ok(match kvm {
            Ok(()) => AccelChoice {
                accel: Accel::Kvm,
                reason: "KVM usable: /dev/kvm API 12, hardware virtualization present".to_string(),
                forced: false,
            },
            Err(why) => AccelChoice {
                accel: Accel::Tcg,
                reason: format!("TCG: {why}"),
                forced: false,
            },
        }),
    }
}

/// `Ok` when KVM can run a stock guest, else the reason it cannot.
fn kvm_usable(paths: &HostPaths) -> std::result::Result<(), String> {
    let dev = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&paths.kvm_device)
        .map_err(|e| format!("{} cannot be opened ({e})", paths.kvm_device.display()))?;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int; the fd is open for
    // the duration of the call. On a non-KVM file the ioctl fails with ENOTTY, which is handled.
    let version = unsafe { libc::ioctl(dev.as_raw_fd(), KVM_GET_API_VERSION as _, 0) };
    if version != KVM_API_VERSION {
        return Err(format!(
            "KVM_GET_API_VERSION returned {version}, expected {KVM_API_VERSION}"
        ));
    }
    if paths.kvm_pvm_module.exists() {
        return Err(format!(
            "{} is loaded: /dev/kvm is a nested PVM hypervisor that cannot run a stock kernel",
            module_name(&paths.kvm_pvm_module)
        ));
    }
    let cpuinfo = std::fs::read_to_string(&paths.cpuinfo)
        .map_err(|e| format!("{} unreadable ({e})", paths.cpuinfo.display()))?;
    if !cpu_has_virtualization(&cpuinfo) {
        return Err("the CPU flags in /proc/cpuinfo have neither vmx nor svm".to_string());
    }
    Ok(())
}

fn module_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Whether any `flags` line of a `/proc/cpuinfo` text lists `vmx` or `svm`.
fn cpu_has_virtualization(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| key.trim() == "flags")
        .any(|(_, flags)| flags.split_whitespace().any(|f| f == "vmx" || f == "svm"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_host(dir: &Path, flags: &str, pvm: bool) -> HostPaths {
        let cpuinfo = dir.join("cpuinfo");
        std::fs::write(
            &cpuinfo,
            format!("processor\t: 0\nflags\t\t: fpu {flags} sse2\n"),
        )
        .expect("write cpuinfo");
        let module = dir.join("kvm_pvm");
        if pvm {
            std::fs::create_dir_all(&module).expect("module dir");
        }
        // A regular file opens, but the KVM ioctl fails on it: that is the "no usable KVM" path.
        let kvm = dir.join("kvm");
        std::fs::write(&kvm, b"").expect("fake kvm");
        HostPaths {
            kvm_device: kvm,
            kvm_pvm_module: module,
            cpuinfo,
        }
    }

    #[test]
    fn cpu_flags_are_parsed_per_token() {
        assert!(cpu_has_virtualization("flags\t: fpu vmx sse\n"));
        assert!(cpu_has_virtualization("flags : svm\n"));
        assert!(!cpu_has_virtualization(
            "flags : fpu vmxnet sse\nvmx flags : vmx\n"
        ));
        assert!(!cpu_has_virtualization(""));
    }

    #[test]
    fn missing_kvm_device_means_tcg_with_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut paths = fake_host(dir.path(), "vmx", false);
        paths.kvm_device = dir.path().join("absent");
        let choice = decide(&paths, None).expect("decide");
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(
            choice.reason.contains("cannot be opened"),
            "{}",
            choice.reason
        );
        assert!(!choice.forced);
    }

    #[test]
    fn a_device_that_is_not_kvm_means_tcg() {
        let dir = tempfile::tempdir().expect("tempdir");
        let choice = decide(&fake_host(dir.path(), "vmx", false), None).expect("decide");
        assert_eq!(choice.accel, Accel::Tcg);
        assert!(
            choice.reason.contains("KVM_GET_API_VERSION"),
            "{}",
            choice.reason
        );
    }

    #[test]
    fn overrides_win_and_are_marked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths = fake_host(dir.path(), "", true);
        let kvm = decide(&paths, Some("KVM")).expect("decide");
        assert_eq!(kvm.accel, Accel::Kvm);
        assert!(
            kvm.forced && kvm.reason.contains("forced although"),
            "{}",
            kvm.reason
        );
        let tcg = decide(&paths, Some("tcg")).expect("decide");
        assert_eq!((tcg.accel, tcg.forced), (Accel::Tcg, true));
        assert!(matches!(
            decide(&paths, Some("hvf")),
            Err(Error::Invalid(_))
        ));
        assert!(!decide(&paths, Some(" ")).expect("blank is unset").forced);
    }

    #[test]
    fn this_host_gets_a_decision_with_a_reason() {
        let choice = decide(&HostPaths::default(), None).expect("decide");
        assert!(!choice.reason.is_empty());
        if Path::new("/sys/module/kvm_pvm").exists() {
            assert_eq!(
                choice.accel,
                Accel::Tcg,
                "kvm_pvm hosts must use TCG: {}",
                choice.reason
            );
            assert!(choice.reason.contains("kvm_pvm"), "{}", choice.reason);
        }
    }
}
