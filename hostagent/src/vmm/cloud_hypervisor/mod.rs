//! The Cloud Hypervisor driver: one `cloud-hypervisor` process per VM, configured through its
//! REST API on a per-VM Unix socket. KVM only; the production driver where KVM can boot a stock
//! guest (see [`crate::vmm::select`]).
//!
//! - [`driver`]: [`CloudHypervisorVmm`] (implements [`crate::vmm::Vmm`]) starts VMs and restores
//!   snapshots under a new identity.
//! - [`vm`]: [`CloudHypervisorVm`] (implements [`crate::vmm::Vm`]): pause/resume, snapshot,
//!   disk and virtio-fs hot-add, shutdown.
//! - [`api`]: the typed HTTP client for the API socket; [`api::Endpoint::ALL`] lists every
//!   endpoint the driver calls.
//! - [`config`]: the pure spec-to-request-body functions (`VmConfig`, `DiskConfig`, …).
//! - [`paths`]: the fixed file layout of a VM directory.
//! - [`snapshot`]: snapshot directories and the `config.json` rewrite for restores.
//!
//! The guest is the same as under QEMU: the same kernel, initramfs (which loads the virtio-pci
//! modules CH needs) and agent, reached over the hybrid vsock socket with the shared
//! [`crate::transport::hybrid_vsock`] client. What is verified where: request bodies and the
//! API client against CH v53's OpenAPI schema in CI (`tests/cloud_hypervisor_contract.rs`,
//! `tests/cloud_hypervisor_api.rs`); the whole driver against a real CH only on KVM hosts
//! (`tests/cloud_hypervisor.rs`, an ignored test: run it with `--ignored`).

pub mod api;
pub mod config;
pub mod driver;
pub mod paths;
pub mod snapshot;
pub mod vm;

pub use config::MemoryRestoreMode;
pub use driver::{CloudHypervisorConfig, CloudHypervisorVmm, RestoreOptions};
pub use vm::CloudHypervisorVm;
