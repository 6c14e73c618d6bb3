//! [`EndRequest`]: how both drivers tell host-requested VM ends from crashes and guest power-offs.
//!
//! The flag is set before the host stops a VM on purpose (`shutdown`, `kill`), unless the VMM has
//! already exited on its own, and read back into every [`VmExit`] the VM reports.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::process::{ChildProcess, ExitInfo};
use crate::vmm::VmExit;

/// Whether the host asked for a VM's end.
#[derive(Debug, Default)]
pub(crate) struct EndRequest(AtomicBool);

impl EndRequest {
    /// Records that the host is ending the VM run by `vmm`, unless it has already ended on its own
    /// (a crash stays a crash when the owner cleans up afterwards).
    pub(crate) fn mark(&self, vmm: &ChildProcess) {
        if vmm.try_exit().is_none() {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// The [`VmExit`] for the VMM's exit status.
    pub(crate) fn vm_exit(&self, exit: ExitInfo) -> VmExit {
        VmExit {
            code: exit.code,
            signal: exit.signal,
            requested: self.0.load(Ordering::SeqCst),
        }
    }
}
