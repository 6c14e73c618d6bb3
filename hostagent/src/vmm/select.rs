//! Choosing the VMM for this host: Cloud Hypervisor where it can run, QEMU otherwise.
//!
//! Cloud Hypervisor is chosen when both hold:
//! 1. a `cloud-hypervisor` binary of v53 or later is found (configured path,
//!    `$PLATINUM_CLOUD_HYPERVISOR`, or `PATH`; see [`driver::locate_binary`]);
//! 2. the accelerator decision ([`crate::accel`]) is KVM, i.e. KVM can boot a stock guest.
//!
//! Otherwise QEMU runs every VM, under KVM or TCG as [`crate::accel`] decided. `PLATINUM_VMM`
//! forces a driver: `qemu`, or `cloud-hypervisor` (which still needs the binary, and is allowed
//! without a usable KVM for experiments, with a warning, like `PLATINUM_ACCEL=kvm`).
//!
//! [`detect`] gathers the facts from the host; [`decide`] is the pure decision, so every branch
//! is unit-tested. The [`Selection`] carries a human-readable reason and, when QEMU was chosen,
//! what Cloud Hypervisor would need, for `platinum doctor`.

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;
use tracing::warn;

use crate::accel::{self, AccelChoice};
use crate::error::{Error, Result};
use crate::vmm::cloud_hypervisor::driver::{
    self, CLOUD_HYPERVISOR_ENV, CLOUD_HYPERVISOR_PROGRAM, ChVersion, INSTALL_HINT,
    MIN_MAJOR_VERSION,
};
use crate::vmm::cloud_hypervisor::{CloudHypervisorConfig, CloudHypervisorVmm};
use crate::vmm::qemu::{QemuConfig, QemuVmm};
use crate::vmm::{Accel, Vmm, VmmKind};

/// Environment variable that forces a driver (`qemu` or `cloud-hypervisor`).
pub const VMM_ENV: &str = "PLATINUM_VMM";

/// What the decision is made from.
#[derive(Debug, Clone)]
pub struct Facts {
    /// The value of `PLATINUM_VMM`, if set.
    pub forced: Option<String>,
    /// The accelerator decision.
    pub accel: AccelChoice,
    /// A usable Cloud Hypervisor binary, or why there is none.
    pub cloud_hypervisor: std::result::Result<(PathBuf, ChVersion), String>,
}

/// The VMM this host runs, and why.
#[derive(Debug, Clone, Serialize)]
pub struct Selection {
    /// The driver.
    pub kind: VmmKind,
    /// Why, in words.
    pub reason: String,
    /// True when `PLATINUM_VMM` decided it.
    pub forced: bool,
    /// The accelerator decision (QEMU uses it; Cloud Hypervisor always runs on KVM).
    pub accel: AccelChoice,
    /// The Cloud Hypervisor binary, when one is usable.
    pub cloud_hypervisor: Option<PathBuf>,
    /// What Cloud Hypervisor would need and this host lacks (empty when it was chosen).
    pub missing: Vec<String>,
}

impl Selection {
    /// The accelerator VMs get: KVM under Cloud Hypervisor, the accel decision under QEMU.
    pub fn vm_accel(&self) -> Accel {
        match self.kind {
            VmmKind::CloudHypervisor => Accel::Kvm,
            VmmKind::Qemu => self.accel.accel,
        }
    }

    /// Builds the chosen driver with default settings.
    pub fn into_vmm(self) -> Result<Arc<dyn Vmm>> {
        Ok(match self.kind {
            VmmKind::Qemu => Arc::new(QemuVmm::new(QemuConfig {
                accel: Some(self.accel),
                // Sandboxes' device models never run as root (where this process is root).
                unprivileged: true,
                ..QemuConfig::default()
            })?),
            VmmKind::CloudHypervisor => Arc::new(CloudHypervisorVmm::new(CloudHypervisorConfig {
                binary: self.cloud_hypervisor,
                ..CloudHypervisorConfig::default()
            })?),
        })
    }
}

/// Decides for this host, honouring `PLATINUM_VMM`, `PLATINUM_CLOUD_HYPERVISOR` and
/// `PLATINUM_ACCEL`. `accel` replaces the accelerator detection when given.
pub fn detect(accel: Option<AccelChoice>) -> Result<Selection> {
    let accel = match accel {
        Some(choice) => choice,
        None => accel::detect()?,
    };
    let cloud_hypervisor = match driver::locate_binary(None) {
        Some(path) => driver::usable_version(&path).map(|version| (path, version)),
        None => Err(match std::env::var_os(CLOUD_HYPERVISOR_ENV) {
            Some(value) if !value.is_empty() => format!(
                "${CLOUD_HYPERVISOR_ENV}={} is not a file",
                PathBuf::from(value).display()
            ),
            _ => format!("not on PATH and ${CLOUD_HYPERVISOR_ENV} unset"),
        }),
    };
    decide(Facts {
        forced: std::env::var(VMM_ENV).ok(),
        accel,
        cloud_hypervisor,
    })
}

/// The decision of the module docs.
pub fn decide(facts: Facts) -> Result<Selection> {
    let Facts {
        forced,
        accel,
        cloud_hypervisor,
    } = facts;
    let mut missing = Vec::new();
    if let Err(why) = &cloud_hypervisor {
        missing.push(format!(
            "{CLOUD_HYPERVISOR_PROGRAM} v{MIN_MAJOR_VERSION}+: {why}; {INSTALL_HINT}"
        ));
    }
    if accel.accel != Accel::Kvm {
        let why = accel.reason.trim_start_matches("TCG: ");
        missing.push(format!("a KVM that boots a stock guest: {why}"));
    }
    let binary = cloud_hypervisor.as_ref().ok().map(|(path, _)| path.clone());
    let found =
        |(path, version): &(PathBuf, ChVersion)| format!("{} at {}", version.text, path.display());

    match forced.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
        Some(v) if v.eq_ignore_ascii_case("qemu") => Ok(Selection {
            kind: VmmKind::Qemu,
            reason: format!("{VMM_ENV}=qemu; QEMU with {}", accel_name(&accel)),
            forced: true,
            accel,
            cloud_hypervisor: binary,
            missing,
        }),
        Some(v)
            if v.eq_ignore_ascii_case("cloud-hypervisor")
                || v.eq_ignore_ascii_case("cloud_hypervisor") =>
        {
            let ch = cloud_hypervisor.map_err(|why| Error::MissingProgram {
                program: CLOUD_HYPERVISOR_PROGRAM.to_string(),
                hint: format!("{VMM_ENV}={v} but {why}; {INSTALL_HINT}"),
            })?;
            let reason = if accel.accel == Accel::Kvm {
                format!("{VMM_ENV}={v}; {}", found(&ch))
            } else {
                warn!(why = %accel.reason, "{VMM_ENV}={v} forces Cloud Hypervisor although KVM cannot boot a stock guest here");
                format!(
                    "{VMM_ENV}={v}; {}, forced although KVM cannot boot a stock guest ({})",
                    found(&ch),
                    accel.reason
                )
            };
            Ok(Selection {
                kind: VmmKind::CloudHypervisor,
                reason,
                forced: true,
                accel,
                cloud_hypervisor: Some(ch.0),
                missing: Vec::new(),
            })
        }
        Some(other) => Err(Error::Invalid(format!(
            "{VMM_ENV}={other}: expected `qemu` or `cloud-hypervisor`"
        ))),
        None => match (&cloud_hypervisor, accel.accel) {
            (Ok(ch), Accel::Kvm) => Ok(Selection {
                kind: VmmKind::CloudHypervisor,
                reason: format!("{} and KVM usable ({})", found(ch), accel.reason),
                forced: false,
                accel,
                cloud_hypervisor: binary,
                missing,
            }),
            _ => Ok(Selection {
                kind: VmmKind::Qemu,
                reason: format!(
                    "QEMU with {}; Cloud Hypervisor lacks {}",
                    accel_name(&accel),
                    missing.join("; and ")
                ),
                forced: false,
                accel,
                cloud_hypervisor: binary,
                missing,
            }),
        },
    }
}

fn accel_name(accel: &AccelChoice) -> &'static str {
    match accel.accel {
        Accel::Kvm => "KVM",
        Accel::Tcg => "TCG",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvm() -> AccelChoice {
        AccelChoice {
            accel: Accel::Kvm,
            reason: "KVM usable".to_string(),
            forced: false,
        }
    }

    fn tcg() -> AccelChoice {
        AccelChoice {
            accel: Accel::Tcg,
            reason: "TCG: kvm_pvm is loaded".to_string(),
            forced: false,
        }
    }

    fn ch() -> std::result::Result<(PathBuf, ChVersion), String> {
        Ok((
            PathBuf::from("/usr/local/bin/cloud-hypervisor"),
            ChVersion {
                major: 53,
                minor: 0,
                text: "cloud-hypervisor v53.0.0".to_string(),
            },
        ))
    }

    fn no_ch() -> std::result::Result<(PathBuf, ChVersion), String> {
        Err("not on PATH and $PLATINUM_CLOUD_HYPERVISOR unset".to_string())
    }

    fn facts(
        forced: Option<&str>,
        accel: AccelChoice,
        ch: std::result::Result<(PathBuf, ChVersion), String>,
    ) -> Facts {
        Facts {
            forced: forced.map(str::to_string),
            accel,
            cloud_hypervisor: ch,
        }
    }

    #[test]
    fn ch_with_kvm_wins() {
        let s = decide(facts(None, kvm(), ch())).expect("decide");
        assert_eq!(s.kind, VmmKind::CloudHypervisor);
        assert!(
            s.reason.contains("v53.0.0") && s.reason.contains("KVM usable"),
            "{}",
            s.reason
        );
        assert!(s.missing.is_empty() && !s.forced);
        assert_eq!(s.vm_accel(), Accel::Kvm);
    }

    #[test]
    fn qemu_explains_what_ch_lacks() {
        let s = decide(facts(None, tcg(), ch())).expect("decide");
        assert_eq!(s.kind, VmmKind::Qemu);
        assert_eq!(s.missing.len(), 1);
        assert!(s.reason.contains("kvm_pvm"), "{}", s.reason);
        assert_eq!(s.vm_accel(), Accel::Tcg);

        let s = decide(facts(None, kvm(), no_ch())).expect("decide");
        assert_eq!(s.kind, VmmKind::Qemu);
        assert!(s.reason.contains("not on PATH"), "{}", s.reason);
        assert!(
            s.missing[0].contains("install-cloud-hypervisor.sh"),
            "{:?}",
            s.missing
        );

        let s = decide(facts(None, tcg(), no_ch())).expect("decide");
        assert_eq!(s.missing.len(), 2);
    }

    #[test]
    fn the_environment_forces_a_driver() {
        let s = decide(facts(Some("qemu"), kvm(), ch())).expect("decide");
        assert_eq!((s.kind, s.forced), (VmmKind::Qemu, true));
        let s = decide(facts(Some("Cloud-Hypervisor"), tcg(), ch())).expect("decide");
        assert_eq!((s.kind, s.forced), (VmmKind::CloudHypervisor, true));
        assert!(s.reason.contains("forced although"), "{}", s.reason);
        assert!(matches!(
            decide(facts(Some("cloud-hypervisor"), kvm(), no_ch())),
            Err(Error::MissingProgram { .. })
        ));
        assert!(matches!(
            decide(facts(Some("firecracker"), kvm(), ch())),
            Err(Error::Invalid(msg)) if msg.contains(VMM_ENV)
        ));
        let s = decide(facts(Some(" "), kvm(), ch())).expect("blank is unset");
        assert!(!s.forced);
    }

    #[test]
    fn this_host_gets_a_selection_with_a_reason() {
        // On the development and CI machines KVM is a nested PVM, so QEMU is chosen unless the
        // environment forces something.
        if std::env::var_os(VMM_ENV).is_some() {
            return;
        }
        let s = detect(None).expect("detect");
        assert!(!s.reason.is_empty());
        if std::path::Path::new("/sys/module/kvm_pvm").exists() {
            assert_eq!(s.kind, VmmKind::Qemu, "{}", s.reason);
        }
    }
}
