//! Loading the kernel modules the initramfs carries, in the order `/platinum/modules.order` gives
//! (one `.ko` file name per line, dependencies first), with `finit_module`.
//!
//! A module that fails to load is logged and skipped: `EEXIST` means it is built in or already
//! loaded, and a missing driver only costs the device it drives.

use nix::errno::Errno;
use nix::kmod::{ModuleInitFlags, finit_module};
use std::fs::File;
use std::path::Path;
use tracing::{debug, info, warn};

/// Where the initramfs keeps the modules.
pub const MODULES_DIR: &str = "/platinum/modules";
/// The load order.
pub const MODULES_ORDER: &str = "/platinum/modules.order";

/// Loads every module listed in the order file; returns how many were loaded.
pub fn load_all() -> usize {
    let order = match std::fs::read_to_string(MODULES_ORDER) {
        Ok(order) => order,
        Err(e) => {
            warn!(path = MODULES_ORDER, error = %e, "no module list; loading no modules");
            return 0;
        }
    };
    let mut loaded = 0;
    for name in module_names(&order) {
        let path = Path::new(MODULES_DIR).join(name);
        match load(&path) {
            Ok(()) => loaded += 1,
            Err(Errno::EEXIST) => debug!(module = name, "already loaded"),
            Err(e) => warn!(module = name, error = %e, "cannot load module"),
        }
    }
    info!(loaded, "kernel modules loaded");
    loaded
}

fn load(path: &Path) -> Result<(), Errno> {
    let file =
        File::open(path).map_err(|e| e.raw_os_error().map_or(Errno::EIO, Errno::from_raw))?;
    finit_module(&file, c"", ModuleInitFlags::empty())
}

/// The module file names of an order file: trimmed, no blanks or `#` comments.
fn module_names(order: &str) -> impl Iterator<Item = &str> {
    order
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_file_lists_names_in_order() {
        let names: Vec<_> =
            module_names("virtio.ko\n\n# net\n  virtio_net.ko  \nvsock.ko").collect();
        assert_eq!(names, ["virtio.ko", "virtio_net.ko", "vsock.ko"]);
    }
}
