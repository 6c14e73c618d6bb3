//! The kernel modules a guest needs, and the order to load them in.
//!
//! Debian's cloud kernel builds the virtio drivers, vsock, virtio-fs and overlayfs as modules,
//! so the initramfs carries them and the guest agent loads them (one `init_module` per file, in
//! the order of `/platinum/modules.order`) before it touches any device. The order comes from
//! `modules.dep` as written by `depmod`: every line is
//!
//! ```text
//! kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko ...
//! ```
//!
//! listing a module's path and all the modules it needs. [`load_order`] walks those lists depth
//! first, so every module comes after everything it depends on, each module appears once, and
//! a dependency cycle (which depmod itself would refuse) is an error instead of a hang.
//!
//! Module names are compared with `-` and `_` treated alike, as the kernel does
//! (`virtio-rng.ko` is the module `virtio_rng`).

use std::collections::{BTreeMap, HashSet};

use crate::error::{Error, Result};

/// A module the guest wants, and whether the guest is useless without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WantedModule {
    /// Module name (`-` and `_` are interchangeable).
    pub name: &'static str,
    /// Missing required modules fail the kernel build; missing optional ones are a warning.
    pub required: bool,
    /// Why the guest wants it.
    pub why: &'static str,
}

const fn required(name: &'static str, why: &'static str) -> WantedModule {
    WantedModule {
        name,
        required: true,
        why,
    }
}

const fn optional(name: &'static str, why: &'static str) -> WantedModule {
    WantedModule {
        name,
        required: false,
        why,
    }
}

/// The modules every guest image carries, in the order they are requested (dependencies are
/// added ahead of them as needed).
pub(crate) const GUEST_MODULES: &[WantedModule] = &[
    required("virtio", "virtio core"),
    required("virtio_ring", "virtio queues"),
    required("virtio_mmio", "QEMU microvm devices"),
    optional(
        "virtio_pci_legacy_dev",
        "Cloud Hypervisor devices (PCI only)",
    ),
    optional(
        "virtio_pci_modern_dev",
        "Cloud Hypervisor devices (PCI only)",
    ),
    optional("virtio_pci", "Cloud Hypervisor devices (PCI only)"),
    required(
        "virtio_blk",
        "root filesystem (and Cloud Hypervisor volumes)",
    ),
    required("virtio_scsi", "QEMU volumes (hot-pluggable SCSI disks)"),
    required("sd_mod", "QEMU volumes (SCSI disks)"),
    optional("failover", "virtio-net standby support"),
    optional("net_failover", "virtio-net standby support"),
    optional("virtio_net", "sandbox network"),
    required(
        "virtio_console",
        "hvc console and the virtio-serial agent transport",
    ),
    required("vsock", "vsock agent transport"),
    required("vmw_vsock_virtio_transport_common", "vsock agent transport"),
    required("vmw_vsock_virtio_transport", "vsock agent transport"),
    optional("fuse", "virtio-fs shares"),
    optional("virtiofs", "virtio-fs shares"),
    optional("overlay", "copy-on-write layers"),
    optional("virtio_rng", "guest entropy (HW_RANDOM_VIRTIO)"),
    optional("virtio_balloon", "memory balloon"),
];

/// The parsed `modules.dep`: each module's path and the paths it depends on.
#[derive(Debug, Default)]
pub(crate) struct ModuleDeps {
    /// Normalized module name -> (path, dependency paths), first line wins.
    modules: BTreeMap<String, (String, Vec<String>)>,
}

impl ModuleDeps {
    /// Parses `modules.dep`. Blank lines and `#` comments are skipped; a malformed line is an
    /// error; a module listed twice keeps its first line.
    pub(crate) fn parse(text: &str) -> Result<Self> {
        let mut modules = BTreeMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((path, deps)) = line.split_once(':') else {
                return Err(Error::Image {
                    step: "modules".into(),
                    message: format!("modules.dep line {} has no ':': {line:?}", number + 1),
                });
            };
            let path = path.trim();
            let deps: Vec<String> = deps.split_whitespace().map(str::to_owned).collect();
            modules
                .entry(module_name(path))
                .or_insert_with(|| (path.to_owned(), deps));
        }
        Ok(Self { modules })
    }

    /// The path of a module (by name), if `modules.dep` lists it.
    pub(crate) fn path_of(&self, name: &str) -> Option<&str> {
        self.modules
            .get(&normalize(name))
            .map(|(path, _)| path.as_str())
    }
}

/// The outcome of [`load_order`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct LoadOrder {
    /// Module paths (relative to `lib/modules/<release>/`), dependencies first, no duplicates.
    pub paths: Vec<String>,
    /// Optional modules the kernel does not have.
    pub missing_optional: Vec<&'static str>,
}

/// Computes the load order of `wanted` and everything they depend on. A missing required
/// module or a dependency cycle is an error.
pub(crate) fn load_order(deps: &ModuleDeps, wanted: &[WantedModule]) -> Result<LoadOrder> {
    let mut order = LoadOrder {
        paths: Vec::new(),
        missing_optional: Vec::new(),
    };
    let mut done = HashSet::new();
    let mut missing_required = Vec::new();
    for module in wanted {
        match deps.path_of(module.name) {
            Some(path) => visit(deps, path, &mut Vec::new(), &mut done, &mut order.paths)?,
            None if module.required => {
                missing_required.push(format!("{} ({})", module.name, module.why))
            }
            None => order.missing_optional.push(module.name),
        }
    }
    if !missing_required.is_empty() {
        return Err(Error::Image {
            step: "modules".into(),
            message: format!(
                "the kernel lacks required modules: {}",
                missing_required.join(", ")
            ),
        });
    }
    Ok(order)
}

/// Depth-first walk: a module's dependencies (in `modules.dep` order) go out before it.
fn visit(
    deps: &ModuleDeps,
    path: &str,
    stack: &mut Vec<String>,
    done: &mut HashSet<String>,
    out: &mut Vec<String>,
) -> Result<()> {
    let name = module_name(path);
    if done.contains(&name) {
        return Ok(());
    }
    if stack.contains(&name) {
        stack.push(name);
        return Err(Error::Image {
            step: "modules".into(),
            message: format!("modules.dep has a dependency cycle: {}", stack.join(" -> ")),
        });
    }
    stack.push(name.clone());
    // A dependency without its own line is taken as having no dependencies.
    let (own_path, needs) = deps
        .modules
        .get(&name)
        .map_or((path, &[][..]), |(p, d)| (p.as_str(), d.as_slice()));
    for dep in needs {
        visit(deps, dep, stack, done, out)?;
    }
    stack.pop();
    done.insert(name);
    out.push(own_path.to_owned());
    Ok(())
}

/// The module name of a path: `kernel/drivers/char/hw_random/virtio-rng.ko` -> `virtio_rng`.
pub(crate) fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/virtio/virtio_pci_legacy_dev.ko:
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_legacy_dev.ko kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/net/core/failover.ko:
kernel/fs/overlayfs/overlay.ko:
";

    fn position(order: &LoadOrder, name: &str) -> usize {
        order
            .paths
            .iter()
            .position(|p| module_name(p) == name)
            .unwrap_or_else(|| panic!("{name} missing"))
    }

    #[test]
    fn dependencies_come_first_without_duplicates() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        let wanted = [
            required("virtio_net", ""),
            required("virtio_pci", ""),
            optional("virtio-rng", ""),
            required("virtio_mmio", ""),
            required("virtio", ""),
        ];
        let order = load_order(&deps, &wanted).unwrap();
        let names: Vec<String> = order.paths.iter().map(|p| module_name(p)).collect();
        assert_eq!(
            names,
            [
                "failover",
                "net_failover",
                "virtio_ring",
                "virtio",
                "virtio_net",
                "virtio_pci_legacy_dev",
                "virtio_pci_modern_dev",
                "virtio_pci",
                "virtio_rng",
                "virtio_mmio"
            ]
        );
        // net_failover needs failover: the walk follows net_failover's own line even though
        // virtio_net's line lists it first.
        assert!(position(&order, "failover") < position(&order, "net_failover"));
        assert_eq!(
            order.paths[8],
            "kernel/drivers/char/hw_random/virtio-rng.ko"
        );
    }

    #[test]
    fn missing_modules_warn_or_fail_by_kind() {
        let deps = ModuleDeps::parse(DEP).unwrap();
        let order =
            load_order(&deps, &[optional("virtiofs", ""), required("overlay", "")]).unwrap();
        assert_eq!(order.missing_optional, ["virtiofs"]);
        let err = load_order(&deps, &[required("virtio_blk", "root disk")]).unwrap_err();
        assert!(err.to_string().contains("virtio_blk (root disk)"), "{err}");
    }

    #[test]
    fn cycles_are_an_error_and_duplicate_lines_keep_the_first() {
        let deps = ModuleDeps::parse("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n").unwrap();
        let err = load_order(&deps, &[required("a", "")]).unwrap_err();
        assert!(err.to_string().contains("a -> b -> c -> a"), "{err}");

        let deps = ModuleDeps::parse("x/a.ko: x/b.ko\nx/b.ko:\ny/a.ko:\n# comment\n\n").unwrap();
        assert_eq!(deps.path_of("a"), Some("x/a.ko"));
        let order = load_order(
            &deps,
            &[required("a", ""), required("b", ""), required("a", "")],
        )
        .unwrap();
        assert_eq!(order.paths, ["x/b.ko", "x/a.ko"]);
    }

    #[test]
    fn malformed_lines_are_rejected() {
        assert!(ModuleDeps::parse("kernel/a.ko kernel/b.ko\n").is_err());
    }

    #[test]
    fn names_normalize_dashes() {
        assert_eq!(
            module_name("kernel/drivers/char/hw_random/virtio-rng.ko"),
            "virtio_rng"
        );
        assert_eq!(module_name("virtio_blk.ko"), "virtio_blk");
    }
}
