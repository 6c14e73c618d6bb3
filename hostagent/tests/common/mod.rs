//! Shared helpers for the VM integration tests: the guest kernel (from the image cache), a tiny
//! busybox initramfs built per test, console polling, and a guard that kills VMM process groups
//! even when a test panics.
//!
//! The test initramfs stands in for the real guest agent: its `/init` is a busybox shell script
//! that loads the virtio modules, runs an echo loop on the agent's virtio-serial port, prints
//! [`READY_MARKER`] and then a `tick N` line every second, so a restored VM can prove it
//! continued where it was saved.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use platinum_hostagent::image::{ImageCache, Kernel, Progress};
use platinum_hostagent::vmm::{TransportKind, VmSpec};

/// Printed by the test `/init` once the modules are loaded and the echo loop runs.
pub const READY_MARKER: &str = "PLATINUM-TEST-READY";

/// Modules the test guest loads, in dependency order.
const TEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_mmio",
    "virtio_console",
    "virtio_blk",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
];

/// Static busybox from Debian's `busybox-static`.
const BUSYBOX: &str = "/bin/busybox";

/// Panics, naming what is missing, unless QEMU and busybox-static are installed (CI installs
/// both; a VM test that cannot boot a VM must not pass).
pub fn require_vm_prerequisites() {
    let mut missing = Vec::new();
    if platinum_hostagent::process::find_in_path("qemu-system-x86_64").is_none() {
        missing.push(
            "qemu-system-x86_64 (apt-get install -t bookworm-backports qemu-system-x86)"
                .to_string(),
        );
    }
    if !Path::new(BUSYBOX).is_file() {
        missing.push(format!("{BUSYBOX} (apt-get install busybox-static)"));
    }
    assert!(
        missing.is_empty(),
        "this VM test cannot run here; missing: {}",
        missing.join(", ")
    );
}

/// The guest kernel from the shared image cache (downloaded and extracted on first use).
pub async fn kernel() -> Kernel {
    ImageCache::new(ImageCache::default_root())
        .ensure_kernel(&Progress::hidden())
        .await
        .expect("guest kernel from the image cache (needs the Debian mirror on first use)")
}

/// Writes the test initramfs into `dir` and returns its path: [`busybox_initramfs`] printing a
/// `tick N` line every second.
pub fn test_initramfs(kernel: &Kernel, dir: &Path) -> PathBuf {
    busybox_initramfs(
        kernel,
        &dir.join("test-initramfs.cpio.gz"),
        TEST_MODULES,
        READY_MARKER,
        "i=0\nwhile true; do echo \"tick $i\"; i=$((i+1)); $B sleep 1; done",
    )
}

/// Writes a gzipped busybox initramfs to `path` and returns it. Its `/init` mounts `/proc`,
/// `/sys` and `/dev`, loads `modules` from the guest kernel, runs an echo loop on the agent's
/// virtio-serial port, prints `ready`, then runs the shell code `main` (`$B` is busybox).
///
/// Gzipped: one kernel hung at "ACPI: Core revision" under TCG with an uncompressed archive of
/// the same files (3 of 3 boots), and booted with it gzipped.
pub fn busybox_initramfs(
    kernel: &Kernel,
    path: &Path,
    modules: &[&str],
    ready: &str,
    main: &str,
) -> PathBuf {
    let init = format!(
        r#"#!/bin/busybox sh
B=/bin/busybox
$B mount -t proc proc /proc
$B mount -t sysfs sysfs /sys
$B mount -t devtmpfs devtmpfs /dev
for m in {module_list}; do $B insmod /m/$m.ko; done
port=""
for p in /sys/class/virtio-ports/*; do
  [ "$($B cat $p/name 2>/dev/null)" = org.platinum.agent.0 ] && port=/dev/${{p##*/}}
done
echo "agent port: $port"
if [ -n "$port" ]; then
  # The port stays open across cat runs: cat ends at each end of file (no host attached), and
  # closing the port would discard whatever the host sent in between.
  ( exec 3<>$port; while true; do $B cat <&3 >&3 2>/dev/null; $B sleep 0.2; done ) &
fi
echo {ready}
{main}
"#,
        module_list = modules.join(" "),
    );
    let entry = |name: &str, mode: u32, data: Vec<u8>| {
        (cpio::NewcBuilder::new(name).mode(mode), Cursor::new(data))
    };
    let mut entries = Vec::new();
    for name in ["bin", "dev", "proc", "sys", "m"] {
        entries.push(entry(name, 0o040_755, Vec::new()));
    }
    let busybox = std::fs::read(BUSYBOX).expect("read busybox");
    entries.push(entry("bin/busybox", 0o100_755, busybox));
    entries.push(entry("init", 0o100_755, init.into_bytes()));
    for name in modules {
        let file = kernel
            .modules
            .iter()
            .find(|p| p.file_stem().and_then(|s| s.to_str()) == Some(name))
            .unwrap_or_else(|| panic!("kernel has no module {name}"));
        let data = std::fs::read(file).expect("read module");
        entries.push(entry(&format!("m/{name}.ko"), 0o100_644, data));
    }
    let file = std::fs::File::create(path).expect("create initramfs");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    cpio::write_cpio(entries.into_iter(), gz)
        .expect("write initramfs")
        .finish()
        .expect("finish initramfs");
    // Zero-padded to whole pages, as the product's initramfs is: an archive that ends in the
    // last bytes of a page overwrites microvm's ACPI tables and the guest hangs at boot (see
    // `platinum_hostagent::image` initramfs docs).
    let len = std::fs::metadata(path).expect("stat initramfs").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .expect("open initramfs");
    file.set_len(len.next_multiple_of(4096))
        .expect("pad initramfs");
    path.to_path_buf()
}

/// Kernel command line for test guests (the QEMU driver adds the TCG clock itself).
pub const TEST_CMDLINE: &str = "console=ttyS0 panic=-1 quiet";

/// A spec for a test VM in `dir` (no disks; callers add them).
pub fn spec(
    id: &str,
    dir: &Path,
    kernel: &Kernel,
    initramfs: &Path,
    transport: TransportKind,
) -> VmSpec {
    VmSpec {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        kernel: kernel.vmlinux.clone(),
        initramfs: initramfs.to_path_buf(),
        cmdline: TEST_CMDLINE.to_string(),
        disks: Vec::new(),
        vcpus: 1,
        memory_mib: 256,
        memory_file: None,
        transport,
        vsock_cid: 3,
        console_log: dir.join("console.log"),
        net: None,
        share: None,
    }
}

/// Polls `path` until `done(contents)` holds; panics with the console tail after `timeout`.
pub async fn wait_console(
    path: &Path,
    timeout: Duration,
    what: &str,
    done: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if done(&text) {
            return text;
        }
        if Instant::now() >= deadline {
            let tail = platinum_hostagent::console::tail(path, 40).unwrap_or_default();
            panic!("timed out after {timeout:?} waiting for {what}; console tail:\n{tail}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The highest `tick N` in a console text.
pub fn last_tick(console: &str) -> Option<u64> {
    console
        .lines()
        .filter_map(|l| l.trim().strip_prefix("tick "))
        .filter_map(|n| n.trim().parse().ok())
        .max()
}

/// Kills the given process groups with SIGKILL on drop, so a panicking test leaves nothing
/// running. Harmless after a clean kill.
#[derive(Default)]
pub struct KillGuard {
    pids: Vec<u32>,
}

impl KillGuard {
    /// Adds a process group leader.
    pub fn add(&mut self, pid: u32) {
        self.pids.push(pid);
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        for pid in &self.pids {
            if platinum_hostagent::process::pid_alive(*pid) {
                let _ = killpg(Pid::from_raw(*pid as i32), Signal::SIGKILL);
            }
        }
    }
}

/// Waits until `pid` no longer exists.
pub async fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while platinum_hostagent::process::pid_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
