//! The QEMU driver: `-M microvm` VMs under KVM or TCG, controlled over QMP.
//!
//! - [`driver`]: [`QemuVmm`] (implements [`crate::vmm::Vmm`]) starts VMs and restores snapshots.
//! - [`vm`]: [`QemuVm`] (implements [`crate::vmm::Vm`]) is one running VM.
//! - [`cmdline`]: the pure spec-to-argv function.
//! - [`paths`]: the fixed file layout of a VM directory and its socket-path checks (the rest of
//!   spec validation is shared: [`crate::vmm::spec`]).
//! - [`qmp`]: a small typed QMP client.
//! - [`hotplug`]: volumes added to and removed from a running VM.
//! - [`snapshot`]: save/restore through migration to a file (the `vm.json` manifest is shared:
//!   [`crate::vmm::manifest`]).
//! - [`vsock_daemon`]: the per-VM vhost-device-vsock for the vsock transport.
//! - [`virtiofsd`]: the per-VM virtiofsd serving the host share.
//! - [`daemon`]: what both helper daemons share (start, wait for the socket, kill).
//! - [`tsc`]: the host TSC frequency that gives a TCG guest a real clock instead of jiffies.

pub mod cmdline;
pub mod daemon;
pub mod driver;
pub mod hotplug;
pub mod paths;
pub mod qmp;
pub mod snapshot;
pub mod tsc;
pub mod virtiofsd;
pub mod vm;
pub mod vsock_daemon;

pub use driver::{QemuConfig, QemuVmm};
pub use vm::QemuVm;
