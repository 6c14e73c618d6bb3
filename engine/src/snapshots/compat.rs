//! Whether a snapshot can be restored on this host: the same VMM and version, the same
//! accelerator, and under KVM every CPU feature the snapshot's host had (the guest may be using
//! any of them; TCG emulates its CPU, so the host's flags do not matter there). An incompatible
//! snapshot is refused with what differs, instead of a guest that crashes later.

use super::SnapshotError;
use super::manifest::Manifest;

/// What this host offers, in the manifest's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProfile {
    /// `qemu` or `cloud_hypervisor`.
    pub vmm: String,
    /// Its version.
    pub vmm_version: String,
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// CPU model name.
    pub cpu_model: String,
    /// CPU feature flags, sorted.
    pub cpu_flags: Vec<String>,
}

/// Most missing CPU flags named in a refusal.
const NAMED_FLAGS: usize = 12;

/// Fails with [`SnapshotError::Incompatible`] saying everything that differs.
pub fn check(manifest: &Manifest, host: &HostProfile) -> Result<(), SnapshotError> {
    let mut diffs = Vec::new();
    if manifest.vmm != host.vmm {
        diffs.push(format!(
            "it was taken with {}, this host runs {}",
            manifest.vmm, host.vmm
        ));
    } else if manifest.vmm_version != host.vmm_version {
        diffs.push(format!(
            "it was taken with {} {}, this host runs {} {}",
            manifest.vmm, manifest.vmm_version, host.vmm, host.vmm_version
        ));
    }
    if manifest.accelerator != host.accelerator {
        diffs.push(format!(
            "it was taken under {}, this host runs {}",
            manifest.accelerator, host.accelerator
        ));
    } else if manifest.accelerator == "kvm" {
        let missing: Vec<&str> = manifest
            .cpu_flags
            .iter()
            .filter(|f| host.cpu_flags.binary_search(f).is_err())
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            let shown = missing[..missing.len().min(NAMED_FLAGS)].join(" ");
            let more = missing.len().saturating_sub(NAMED_FLAGS);
            let more = if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            };
            diffs.push(format!(
                "this host's CPU ({}) lacks features the snapshot's ({}) had: {shown}{more}",
                host.cpu_model, manifest.cpu_model
            ));
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(SnapshotError::Incompatible(diffs.join("; ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshots::manifest::tests::manifest;

    fn host() -> HostProfile {
        HostProfile {
            vmm: "qemu".into(),
            vmm_version: "9.2.0".into(),
            accelerator: "tcg".into(),
            cpu_model: "other cpu".into(),
            cpu_flags: vec!["sse2".into()],
        }
    }

    #[test]
    fn tcg_snapshots_ignore_host_cpu_flags() {
        check(&manifest(), &host()).unwrap();
    }

    #[test]
    fn every_difference_is_named() {
        let mut m = manifest();
        m.vmm_version = "10.0.2".into();
        let e = check(&m, &host()).unwrap_err().to_string();
        assert!(e.contains("qemu 10.0.2, this host runs qemu 9.2.0"), "{e}");

        let mut m = manifest();
        m.accelerator = "kvm".into();
        let e = check(&m, &host()).unwrap_err().to_string();
        assert!(e.contains("under kvm, this host runs tcg"), "{e}");

        let mut h = host();
        h.accelerator = "kvm".into();
        h.cpu_flags = vec!["avx2".into(), "sse2".into()];
        let mut m = manifest();
        m.accelerator = "kvm".into();
        m.vmm = "cloud_hypervisor".into();
        let e = check(&m, &h).unwrap_err();
        assert_eq!(e.code(), "snapshot_incompatible");
        let e = e.to_string();
        assert!(
            e.contains("taken with cloud_hypervisor, this host runs qemu"),
            "{e}"
        );
        assert!(
            e.contains("lacks features") && e.contains("sse4_2") && !e.contains("avx2"),
            "{e}"
        );
    }
}
