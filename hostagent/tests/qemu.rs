//! Integration tests of the QEMU driver with real QEMU (TCG on hosts without usable KVM) and the
//! real Debian cloud kernel, booting a busybox test initramfs (see `common`).
//!
//! Boots are expensive under TCG, so each test shares one VM across many assertions:
//! - `serial_vm_lifecycle`: boot, console marker, virtio-serial echo, pause/resume, snapshot,
//!   kill, restore into a new directory (the guest keeps counting), crash detection;
//! - `vsock_vm_lifecycle`: vhost-device-vsock alongside QEMU, a refused hybrid CONNECT, the
//!   snapshot refusal, a bounded shutdown, cleanup of both processes;
//! - `start_failures_leave_nothing_running`: a missing kernel and a kernel QEMU cannot load.
//!
//! Timings are printed (`--nocapture`): spawn to console marker, snapshot time and state size,
//! restore time.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    KillGuard, READY_MARKER, last_tick, require_vm_prerequisites, spec, test_initramfs,
    wait_console, wait_gone,
};
use platinum_hostagent::Error;
use platinum_hostagent::disk::{DiskOptions, Fallback, create_disk};
use platinum_hostagent::image::Kernel;
use platinum_hostagent::transport::{self, ConnectError};
use platinum_hostagent::vmm::qemu::{QemuConfig, QemuVm, QemuVmm};
use platinum_hostagent::vmm::{
    DiskFormat, GuestEndpoint, TransportKind, Vm, VmRunState, VmSpec, Vmm,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Generous: two TCG guests may boot at once on a 2-core machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

fn vmm() -> QemuVmm {
    let vmm = QemuVmm::new(QemuConfig::default()).expect("QEMU driver");
    eprintln!(
        "accelerator: {:?} ({})",
        vmm.accel_choice().accel,
        vmm.accel_choice().reason
    );
    vmm
}

/// What every test here starts from: the guest kernel, a work directory holding the test
/// initramfs, and the driver.
struct Bench {
    kernel: Kernel,
    work: tempfile::TempDir,
    initramfs: PathBuf,
    vmm: QemuVmm,
}

impl Bench {
    /// Panics where QEMU or busybox is missing.
    async fn new() -> Bench {
        require_vm_prerequisites();
        let kernel = common::kernel().await;
        let work = tempfile::tempdir().expect("tempdir");
        let initramfs = test_initramfs(&kernel, work.path());
        Bench {
            kernel,
            work,
            initramfs,
            vmm: vmm(),
        }
    }

    /// Creates the directory `name` in the work directory.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.work.path().join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{name} dir: {e}"));
        dir
    }

    /// A spec for VM `id` in `dir` with the test kernel and initramfs.
    fn spec(&self, id: &str, dir: &Path, transport: TransportKind) -> VmSpec {
        spec(id, dir, &self.kernel, &self.initramfs, transport)
    }
}

/// Waits for the test guest's ready marker on `console`.
async fn wait_ready(console: &Path) {
    wait_console(console, BOOT_TIMEOUT, READY_MARKER, |t| {
        t.contains(READY_MARKER)
    })
    .await;
}

/// Asserts that none of the runtime files `names` is left in `dir`.
fn assert_removed(dir: &Path, names: &[&str]) {
    for name in names {
        assert!(!dir.join(name).exists(), "{name} left behind");
    }
}

/// Sends a line over the virtio-serial transport and expects the guest's echo loop to return it.
async fn assert_echo(vm: &QemuVm, payload: &[u8]) {
    let mut stream = transport::connect(&vm.info().guest, Duration::from_secs(5))
        .await
        .expect("connect to agent port");
    stream.write_all(payload).await.expect("write to guest");
    let mut buf = vec![0u8; payload.len()];
    tokio::time::timeout(Duration::from_secs(60), stream.read_exact(&mut buf))
        .await
        .expect("echo within 60 s")
        .expect("read echo");
    assert_eq!(buf, payload);
}

/// The highest tick printed so far, waiting for at least one.
async fn current_tick(console: &Path) -> u64 {
    let text = wait_console(console, BOOT_TIMEOUT, "a tick line", |t| {
        last_tick(t).is_some()
    })
    .await;
    last_tick(&text).expect("tick")
}

/// Waits until a restored guest's console counts past `at_snapshot`, and checks it did not boot
/// again to get there; returns the console.
async fn continues_counting(console: &Path, at_snapshot: u64) -> String {
    let text = wait_console(console, BOOT_TIMEOUT, "ticks after restore", |t| {
        last_tick(t).is_some_and(|n| n > at_snapshot)
    })
    .await;
    assert!(
        !text.contains(READY_MARKER) && !text.contains("Linux version"),
        "restored guest rebooted:\n{text}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_vm_lifecycle() {
    let b = Bench::new().await;
    let (work, vmm) = (&b.work, &b.vmm);
    let mut guard = KillGuard::default();

    // A small raw data disk exercises the disk path and the snapshot's device layout.
    let base = work.path().join("base.raw");
    std::fs::File::create(&base)
        .expect("base")
        .set_len(8 << 20)
        .expect("size");
    let dir1 = b.dir("vm1");
    let options = DiskOptions {
        fallback: Fallback::SparseCopy,
        ..DiskOptions::default()
    };
    let disk1 = create_disk("data", &base, &dir1.join("data.raw"), &options)
        .await
        .expect("disk");
    assert_eq!(disk1.spec.format, DiskFormat::Raw);
    let mut spec1 = b.spec("sbx1", &dir1, TransportKind::VirtioSerial);
    spec1.disks.push(disk1.spec);

    // Boot and wait for the guest's marker.
    let spawned = Instant::now();
    let vm = vmm.boot_vm(&spec1).await.expect("boot");
    guard.add(vm.info().pid);
    let running_after = spawned.elapsed();
    wait_ready(&spec1.console_log).await;
    eprintln!(
        "TIMING boot: QMP running after {running_after:?}, console marker after {:?}",
        spawned.elapsed()
    );

    let info = vm.info();
    assert_eq!(
        info.guest,
        GuestEndpoint::VirtioSerial {
            socket: dir1.join("agent.sock")
        }
    );
    let pid_file = std::fs::read_to_string(dir1.join("vmm.pid")).expect("pid file");
    assert_eq!(pid_file.trim().parse::<u32>().expect("pid"), info.pid);
    assert!(
        info.devices
            .iter()
            .any(|d| d.starts_with("virtio-blk data")),
        "{:?}",
        info.devices
    );

    // The agent port carries bytes both ways.
    assert_echo(&vm, b"ping over virtio-serial\n").await;

    // Pause: state, a frozen counter, state checks; resume.
    assert_eq!(vm.state().await.expect("state"), VmRunState::Running);
    assert!(matches!(vm.resume().await, Err(Error::VmState { .. })));
    assert!(
        matches!(vm.snapshot(work.path()).await, Err(Error::VmState { .. })),
        "snapshot needs paused"
    );
    vm.pause().await.expect("pause");
    assert_eq!(vm.state().await.expect("state"), VmRunState::Paused);
    assert!(matches!(vm.pause().await, Err(Error::VmState { .. })));
    let frozen = current_tick(&spec1.console_log).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let text = std::fs::read_to_string(&spec1.console_log).expect("console");
    assert_eq!(last_tick(&text), Some(frozen), "guest ran while paused");
    vm.resume().await.expect("resume");
    assert_eq!(vm.state().await.expect("state"), VmRunState::Running);
    wait_console(
        &spec1.console_log,
        BOOT_TIMEOUT,
        "ticks after resume",
        |t| last_tick(t).is_some_and(|n| n > frozen),
    )
    .await;

    // Snapshot while paused; the disk is copied while paused too.
    vm.pause().await.expect("pause for snapshot");
    let at_snapshot = current_tick(&spec1.console_log).await;
    let snap = b.dir("snap");
    let started = Instant::now();
    let stats = vm.snapshot_with_stats(&snap).await.expect("snapshot");
    let state_size = std::fs::metadata(snap.join("vmstate"))
        .expect("vmstate")
        .len();
    eprintln!(
        "TIMING snapshot: {:?} (QEMU total-time {:?} ms), vmstate {} MiB, guest RAM {} MiB",
        started.elapsed(),
        stats.qemu_total_ms,
        state_size >> 20,
        spec1.memory_mib
    );
    assert!(snap.join("vm.json").is_file());
    // The memfd RAM must be in the stream (QEMU >= 8.1 without x-ignore-shared).
    assert!(
        state_size > 4 << 20,
        "state file of {state_size} bytes cannot hold guest RAM"
    );
    let dir2 = b.dir("vm2");
    let disk2 = create_disk(
        "data",
        &dir1.join("data.raw"),
        &dir2.join("data.raw"),
        &options,
    )
    .await
    .expect("disk copy");

    // The source VM can go on after a snapshot (QEMU leaves it in `postmigrate`).
    assert_eq!(vm.state().await.expect("state"), VmRunState::Paused);
    vm.resume().await.expect("resume after snapshot");
    assert_eq!(vm.state().await.expect("state"), VmRunState::Running);

    // Kill: requested, processes gone, sockets removed, idempotent.
    let exit = vm.kill().await.expect("kill");
    assert!(exit.requested);
    assert_eq!(vm.wait_exit().await, exit);
    assert_eq!(vm.state().await.expect("state"), VmRunState::Exited);
    assert!(
        wait_gone(info.pid, Duration::from_secs(5)).await,
        "QEMU pid {} still exists",
        info.pid
    );
    assert_removed(&dir1, &["qmp.sock", "agent.sock", "vmm.pid"]);
    assert_eq!(vm.kill().await.expect("second kill"), exit);

    // A restore spec with other devices is refused before anything starts.
    let mut wrong = b.spec("sbx2", &dir2, TransportKind::VirtioSerial);
    wrong.console_log = dir2.join("console.log");
    assert!(
        matches!(vmm.restore_vm(&wrong, &snap).await, Err(Error::Invalid(msg)) if msg.contains("disks"))
    );
    assert!(
        !dir2.join("qemu.log").exists(),
        "QEMU was started for a mismatched restore"
    );

    // Restore into a new directory: the guest continues counting without rebooting.
    let mut spec2 = b.spec("sbx2", &dir2, TransportKind::VirtioSerial);
    spec2.disks.push(disk2.spec);
    let started = Instant::now();
    let vm2 = vmm.restore_vm(&spec2, &snap).await.expect("restore");
    guard.add(vm2.info().pid);
    eprintln!(
        "TIMING restore: {:?} (spawn to running after migrate-incoming + cont)",
        started.elapsed()
    );
    assert_eq!(vm2.state().await.expect("state"), VmRunState::Running);
    let text = continues_counting(&spec2.console_log, at_snapshot).await;
    let first = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("tick "))
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        first.is_some_and(|n| n >= at_snapshot),
        "restored console starts at {first:?}, snapshot was at {at_snapshot}"
    );
    assert_echo(&vm2, b"ping after restore\n").await;

    // Crash: SIGKILL from outside is not a requested exit.
    let pid2 = vm2.info().pid;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid2 as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("SIGKILL QEMU");
    let exit = tokio::time::timeout(Duration::from_secs(10), vm2.wait_exit())
        .await
        .expect("exit observed");
    assert!(!exit.requested, "{exit:?}");
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    let deadline = Instant::now() + Duration::from_secs(5);
    while dir2.join("qmp.sock").exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !dir2.join("qmp.sock").exists(),
        "reaper did not remove the sockets"
    );
    // Cleaning up afterwards keeps it a crash.
    assert!(!vm2.kill().await.expect("kill after crash").requested);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vsock_vm_lifecycle() {
    let b = Bench::new().await;
    let mut guard = KillGuard::default();
    let dir = b.dir("vm");
    let spec = b.spec("sbxv", &dir, TransportKind::Vsock);

    let spawned = Instant::now();
    let vm = b.vmm.boot_vm(&spec).await.expect("boot with vsock");
    guard.add(vm.info().pid);
    let daemon = vm.vsock_daemon_pid().expect("vhost-device-vsock runs");
    guard.add(daemon);
    assert_eq!(
        vm.info().guest,
        GuestEndpoint::HybridVsock {
            socket: dir.join("vsock.sock"),
            port: 18047
        }
    );
    wait_ready(&spec.console_log).await;
    eprintln!(
        "TIMING boot (vsock): console marker after {:?}",
        spawned.elapsed()
    );

    // No agent listens on 18047 in the test guest: the CONNECT is refused, cleanly and retryably.
    let err = transport::connect(&vm.info().guest, Duration::from_secs(20))
        .await
        .expect_err("nobody listens");
    assert!(
        matches!(err, ConnectError::Refused { port: 18047 }),
        "{err}"
    );
    assert!(err.is_retryable());

    // vhost-user-vsock is unmigratable: refused before anything is tried.
    match vm.snapshot(b.work.path()).await {
        Err(Error::Unsupported(msg)) => assert!(msg.contains("vsock"), "{msg}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert_eq!(vm.state().await.expect("state"), VmRunState::Running);

    // The busybox guest ignores the ACPI power button: shutdown kills after its grace period.
    let vm: Arc<dyn Vm> = vm;
    let started = Instant::now();
    let exit = vm.shutdown(Duration::from_secs(2)).await.expect("shutdown");
    assert!(exit.requested, "{exit:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(vm.kill().await.expect("kill after shutdown"), exit);
    assert!(
        wait_gone(vm.info().pid, Duration::from_secs(5)).await,
        "QEMU survived"
    );
    assert!(
        wait_gone(daemon, Duration::from_secs(5)).await,
        "vhost-device-vsock survived"
    );
    assert_removed(
        &dir,
        &[
            "qmp.sock",
            "agent.sock",
            "vsock.sock",
            "vhost-vsock.sock",
            "vmm.pid",
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failures_leave_nothing_running() {
    let b = Bench::new().await;
    let (work, vmm) = (&b.work, &b.vmm);

    // A kernel that does not exist is caught before QEMU starts.
    let dir = b.dir("missing");
    let mut missing = b.spec("sbxm", &dir, TransportKind::Vsock);
    missing.kernel = work.path().join("no-such-vmlinux");
    match vmm.boot(&missing).await {
        Err(Error::Invalid(msg)) => assert!(msg.contains("kernel"), "{msg}"),
        Err(other) => panic!("expected Invalid, got {other}"),
        Ok(_) => panic!("booted without a kernel"),
    }
    assert!(
        !dir.join("qemu.log").exists() && !dir.join("vhost-device-vsock.log").exists(),
        "a process was started"
    );

    // A kernel QEMU cannot load: QEMU exits during start, the error quotes its log, and the
    // vsock daemon started before it is stopped again.
    let dir = b.dir("broken");
    let mut broken = b.spec("sbxb", &dir, TransportKind::Vsock);
    broken.kernel = work.path().join("garbage-vmlinux");
    std::fs::write(&broken.kernel, b"this is not a kernel").expect("write garbage");
    match vmm.boot(&broken).await {
        Err(Error::VmmStart(msg)) => {
            eprintln!("start failure as reported: {msg}");
            assert!(msg.contains("QEMU log"), "{msg}");
        }
        Err(other) => panic!("expected VmmStart, got {other}"),
        Ok(_) => panic!("booted a garbage kernel"),
    }
    assert_removed(
        &dir,
        &["qmp.sock", "vsock.sock", "vhost-vsock.sock", "vmm.pid"],
    );
    let dir_text = dir.display().to_string();
    let leftovers = std::process::Command::new("pgrep")
        .args(["-f", &dir_text])
        .output()
        .expect("pgrep");
    assert!(
        leftovers.stdout.is_empty(),
        "processes left: {}",
        String::from_utf8_lossy(&leftovers.stdout)
    );
}

/// Guest RAM in a memory file: a snapshot holds only device state plus a clone of the file, a
/// restore maps a clone, the guest goes on counting, and ending a VM removes its memory file.
/// (This directory does not reflink on every host, so the clone may be a copy: the driver's
/// mechanics are the same; reflinks are tested through the engine in `testkit`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_file_vm_saves_device_state_only() {
    let b = Bench::new().await;
    let vmm = &b.vmm;
    let mut guard = KillGuard::default();
    let dir1 = b.dir("ram1");
    let mut spec1 = b.spec("ram1", &dir1, TransportKind::VirtioSerial);
    spec1.memory_file = Some(dir1.join("memory"));
    // What an earlier VM left in the directory is not this boot's RAM.
    std::fs::write(dir1.join("memory"), b"stale").expect("stale memory file");
    let vm = vmm.boot_vm(&spec1).await.expect("boot with a memory file");
    guard.add(vm.info().pid);
    wait_ready(&spec1.console_log).await;
    assert_eq!(
        std::fs::metadata(dir1.join("memory"))
            .expect("memory")
            .len(),
        u64::from(spec1.memory_mib) << 20
    );

    vm.pause().await.expect("pause");
    let at_snapshot = current_tick(&spec1.console_log).await;
    let snap = b.dir("ram-snap");
    let stats = vm.snapshot_with_stats(&snap).await.expect("snapshot");
    let state_size = std::fs::metadata(snap.join("vmstate"))
        .expect("vmstate")
        .len();
    eprintln!(
        "TIMING memory-file snapshot: {:?} (QEMU total-time {:?} ms, memory clone {:?}), vmstate {state_size} bytes",
        stats.elapsed, stats.qemu_total_ms, stats.memory
    );
    assert!(
        state_size < 2 << 20,
        "x-ignore-shared should leave the RAM out of the stream, got {state_size} bytes"
    );
    assert!(stats.memory.is_some());
    assert_eq!(
        std::fs::metadata(snap.join("memory"))
            .expect("memory clone")
            .len(),
        u64::from(spec1.memory_mib) << 20
    );
    vm.kill().await.expect("kill");
    assert!(
        !dir1.join("memory").exists(),
        "an ended VM's memory file stays"
    );

    // A restore must keep the RAM where the snapshot had it.
    let dir2 = b.dir("ram2");
    let anonymous = b.spec("ram2", &dir2, TransportKind::VirtioSerial);
    assert!(
        matches!(vmm.restore_vm(&anonymous, &snap).await, Err(Error::Invalid(m)) if m.contains("memory file")),
        "restoring file RAM into anonymous RAM"
    );
    let mut spec2 = anonymous.clone();
    spec2.memory_file = Some(dir2.join("memory"));
    let vm2 = vmm.restore_vm(&spec2, &snap).await.expect("restore");
    guard.add(vm2.info().pid);
    continues_counting(&spec2.console_log, at_snapshot).await;
    assert_echo(&vm2, b"ping from file-backed RAM\n").await;
    // The snapshot's clone is untouched by the running copy.
    assert!(!platinum_hostagent::disk::same_file(
        &snap.join("memory"),
        &dir2.join("memory")
    ));
    vm2.kill().await.expect("kill restored");
}
