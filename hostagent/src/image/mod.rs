//! Building and caching guest images: the kernel, the initramfs with the guest agent, and root
//! filesystems.
//!
//! A sandbox boots from three files: Debian's stock cloud kernel as a PVH `vmlinux`, an
//! initramfs whose `/init` is the guest agent (it loads the virtio modules packed next to it,
//! mounts the root disk and stays PID 1), and an ext4 root filesystem built from a
//! [`Template`]. [`ImageCache`] builds each of them once and keeps them, content-addressed,
//! under one root directory (`~/.cache/platinum` unless `PLATINUM_CACHE_DIR` says otherwise):
//!
//! ```text
//! <root>/images/kernel/<key>/{vmlinux, config, modules/*.ko, manifest.json}
//! <root>/images/initramfs/<key>/{initramfs.cpio.gz, manifest.json}
//! <root>/images/rootfs/<key>/{rootfs.ext4, manifest.json}
//! ```
//!
//! Use:
//!
//! ```no_run
//! # async fn example() -> platinum_hostagent::Result<()> {
//! use platinum_hostagent::image::{ConsoleLog, ImageCache, Progress, kernel_cmdline, template};
//!
//! let cache = ImageCache::new(ImageCache::default_root());
//! let base = template("base").expect("built-in template");
//! let image = cache.ensure_image(&base, "path/to/static/platinum-guest".as_ref(), &Progress::new()).await?;
//! let cmdline = kernel_cmdline(ConsoleLog::Quiet);
//! // boot image.kernel + image.initramfs with `cmdline`, root disk = a clone of image.rootfs
//! # Ok(()) }
//! ```
//!
//! Keys hash what an entry is built from, never when: the kernel's key is the resolved package
//! and version, the initramfs's is the kernel key plus the agent's SHA-256 and module list, the
//! root filesystem's is the template recipe plus suite and mirrors; every key includes
//! [`BUILDER_VERSION`]. [`GuestImage::id`] hashes the three files' contents.
//!
//! Files, in build order: `apt.rs` finds and downloads packages, `vmlinux.rs` extracts the PVH
//! kernel, `modules.rs` orders kernel modules, `kernel.rs`, `initramfs.rs` and `rootfs.rs`
//! build the three kinds of entries (the last from a `template.rs` recipe), `entry.rs` keeps the
//! cache consistent (locks, partial builds, atomic publication), `manifest.rs` records and
//! checks file hashes, `crate::tool` runs the external programs and `progress.rs` reports to
//! terminals and logs. `cache.rs` ties them together behind [`ImageCache`]. Images pulled from
//! OCI registries for custom templates are not cached here but made into disk layers: [`oci`].

mod apt;
mod cache;
mod entry;
mod initramfs;
mod kernel;
mod manifest;
mod modules;
pub mod oci;
mod progress;
mod rootfs;
mod template;
mod vmlinux;

pub use cache::{CACHE_DIR_ENV, CacheEntry, GuestImage, ImageCache};
pub use initramfs::InitrdCompression;
pub use kernel::{ConsoleLog, KERNEL_PACKAGE, Kernel, kernel_cmdline};
pub use manifest::{EntryKind, FileRecord, Manifest};
pub use progress::Progress;
pub use rootfs::host_ca_bundle;

/// Removes a build or import directory (unmounting anything left mounted inside it first).
pub fn remove_build_dir(path: &std::path::Path) -> crate::Result<()> {
    entry::remove_tree(path)
}
pub use template::{DEFAULT_DISK_SIZE_MIB, Template, builtin_templates, template};

/// Version of the image builder. Part of every cache key: bump it whenever a change to the
/// builder changes what it produces (layout, recipe, tool options), so old entries are rebuilt.
pub const BUILDER_VERSION: u32 = 1;
