//! A guest that floods its serial console cannot fill the host's disk: one real QEMU VM whose
//! `/init` writes lines to `/dev/console` as fast as it can. While it does, `console.log` stays
//! under [`CONSOLE_LOG_CAP`] (it is trimmed to its newest half, with a note, each time it
//! reaches the cap), QEMU still answers QMP during it, `console::tail` still returns the newest
//! lines, and once the VM is killed the log is still under the cap. The flood never stops on its
//! own: the test ends it by killing the VM once the cap has been reached.

#[allow(dead_code)]
mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{KillGuard, require_vm_prerequisites};
use platinum_hostagent::console::{self, CONSOLE_LOG_CAP};
use platinum_hostagent::image::Kernel;
use platinum_hostagent::vmm::qemu::{QemuConfig, QemuVmm};
use platinum_hostagent::vmm::{TransportKind, Vm, VmRunState};

/// Printed once the echo loop runs, right before the flood starts.
const READY: &str = "FLOOD-TEST-READY";
/// The flood's line.
const FLOOD_LINE: &str = "flood 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij";
/// Enough for two TCG guests on a busy 2-core machine to boot and write past the cap.
const TIMEOUT: Duration = Duration::from_secs(300);

const MODULES: &[&str] = &["virtio_ring", "virtio", "virtio_mmio", "virtio_console"];

/// An initramfs whose `/init` runs an echo loop on the agent port and floods the console.
fn flood_initramfs(kernel: &Kernel, dir: &Path) -> PathBuf {
    common::busybox_initramfs(
        kernel,
        &dir.join("flood-initramfs.cpio.gz"),
        MODULES,
        READY,
        &format!("while true; do $B yes \"{FLOOD_LINE}\" > /dev/console; done"),
    )
}

/// The first bytes of the console log.
fn head(path: &Path) -> String {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        let _ = f.take(64).read_to_end(&mut buf);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_console_flood_stays_under_the_cap_and_the_vm_still_answers() {
    require_vm_prerequisites();
    let kernel = common::kernel().await;
    let work = tempfile::tempdir().expect("tempdir");
    let initramfs = flood_initramfs(&kernel, work.path());
    let dir = work.path().join("vm");
    std::fs::create_dir(&dir).expect("vm dir");
    let spec = common::spec(
        "flood1",
        &dir,
        &kernel,
        &initramfs,
        TransportKind::VirtioSerial,
    );
    let vmm = QemuVmm::new(QemuConfig::default()).expect("QEMU driver");
    let mut guard = KillGuard::default();
    let started = Instant::now();
    let vm = vmm.boot_vm(&spec).await.expect("boot");
    guard.add(vm.info().pid);
    let log = spec.console_log.clone();

    // Wait for the first trim (more than the cap written), checking the size all along.
    let mut biggest = 0;
    loop {
        let size = std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0);
        biggest = biggest.max(size);
        assert!(size <= CONSOLE_LOG_CAP, "console.log is {size} bytes");
        if head(&log).starts_with("[platinum: ") {
            break;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "no trim after {TIMEOUT:?} ({size} bytes); console tail:\n{}",
            console::tail(&log, 5).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "first trim after {:?} (largest seen: {biggest} bytes)",
        started.elapsed()
    );

    // QEMU still answers while the guest floods: the console never blocks it.
    let state = tokio::time::timeout(Duration::from_secs(30), vm.state())
        .await
        .expect("QMP answers within 30 s during the flood")
        .expect("state");
    assert_eq!(state, VmRunState::Running);

    // The tail is the flood's newest lines (the last one may be cut mid-write). The guest's
    // single TCG vCPU is busy flooding, so its agent is not asked: what must hold is the host
    // side, bounded and answering.
    let tail = console::tail(&log, 3).expect("tail");
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "{tail:?}");
    assert!(
        lines[..2].iter().all(|l| l.trim_end() == FLOOD_LINE),
        "{tail:?}"
    );

    vm.kill().await.expect("kill");
    let size = std::fs::metadata(&log).expect("stat").len();
    assert!(size <= CONSOLE_LOG_CAP, "console.log is {size} bytes");
    assert!(head(&log).starts_with("[platinum: "));
    drop(guard);
}
