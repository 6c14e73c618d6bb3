//! The host agent: runs sandbox microVMs on one host.
//!
//! Each plane into a guest is its own module:
//! - [`vmm`]: the `Vmm`/`Vm` traits, the drivers (QEMU; Cloud Hypervisor) and their selection.
//! - [`transport`]: byte streams to the guest agent (virtio-serial chardev socket, hybrid vsock).
//! - [`disk`]: per-sandbox copy-on-write root disks (reflink, qcow2 overlay, copy).
//! - [`image`]: building and caching guest images (kernel, initramfs, root filesystem).
//! - [`archive`]: sandboxes archived to object storage (a directory or S3), content-addressed.
//! - [`net`]: sandbox networking: a bridge, one TAP per VM, NAT and isolation with nftables.
//! - [`accel`]: deciding between KVM and TCG.
//! - [`process`]: child processes (VMMs, helper daemons) in their own process groups.
//! - [`console`]: bounded tails of console and VMM logs.
//! - [`private_file`]: owner-only, atomic, durable writes of files that hold secrets.
//! - [`share`]: file operations in a directory a guest writes to, never following its links.
//! - [`volume_files`]: files in a volume's ext4 image, through a sandboxed `debugfs`, unmounted.
//! - [`guest`]: the typed client for the guest agent, over any transport.
//! - [`host`]: the `HostAgent` trait the engine calls, and its in-process implementation.

pub mod accel;
pub mod archive;
pub mod broker;
pub mod console;
pub mod disk;
pub mod error;
pub mod guest;
pub mod host;
pub mod image;
pub mod net;
pub mod private_file;
pub mod process;
pub mod share;
pub(crate) mod tool;
pub mod transport;
pub mod vmm;
pub mod volume_files;

pub use error::{Error, Result};
