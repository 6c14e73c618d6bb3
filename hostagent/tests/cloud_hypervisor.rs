//! The full Cloud Hypervisor driver with a real `cloud-hypervisor` (v53+), the real guest image
//! and the real guest agent, on a host whose KVM boots a stock guest.
//!
//! `#[ignore]`d, because CH cannot boot a guest on the development and CI machines (their
//! `/dev/kvm` is a nested PVM). Run it on a KVM host with `--ignored`; there a missing
//! prerequisite fails the test with a message naming it (it never passes without running):
//!
//! ```sh
//! guest/build-static.sh                       # the static guest agent the image packs
//! cargo test -p platinum-hostagent --test cloud_hypervisor -- --ignored --nocapture
//! ```
//!
//! Needs: `cloud-hypervisor` v53+ (`PATH` or `$PLATINUM_CLOUD_HYPERVISOR`), a `/dev/kvm` that
//! boots a stock kernel, the static guest agent (`guest/build-static.sh` or
//! `$PLATINUM_GUEST_AGENT`), `virtiofsd` (`PATH`, `/usr/libexec` or `~/.cargo/bin`), and the base
//! guest image in the image cache (built on first use, which needs root and network).
//!
//! One test, one parent VM, many assertions (boots cost seconds): boot and exec over the hybrid
//! vsock; pause/resume; hot-add of a disk (seen by the guest) and of a virtio-fs share (mounted by
//! the guest); snapshot; restore into a new identity with its own directory and disk copies,
//! proving the restored VM has the parent's RAM but not what the parent did afterwards; shutdown
//! of both. Timings are printed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use platinum_hostagent::accel;
use platinum_hostagent::disk::{DiskOptions, create_disk};
use platinum_hostagent::guest::{GuestClient, unix_now_ns};
use platinum_hostagent::image::{ConsoleLog, ImageCache, Progress, kernel_cmdline, template};
use platinum_hostagent::process::{ChildProcess, ProcessSpec, find_in_path};
use platinum_hostagent::transport;
use platinum_hostagent::vmm::cloud_hypervisor::{
    CloudHypervisorConfig, CloudHypervisorVm, CloudHypervisorVmm, RestoreOptions,
};
use platinum_hostagent::vmm::{
    Accel, DiskFormat, DiskSpec, FsSpec, TransportKind, Vm, VmRunState, VmSpec,
};
use platinum_protocol::{ExecSpec, Hello, PROTOCOL_VERSION};

/// Generous: a first boot reads a 53 MB kernel and loads modules.
const AGENT_TIMEOUT: Duration = Duration::from_secs(60);

/// What the test runs with, once every prerequisite is found.
struct Prerequisites {
    vmm: CloudHypervisorVmm,
    agent: PathBuf,
    virtiofsd: PathBuf,
}

/// Finds every prerequisite; panics naming all that are missing (the test was asked to run).
fn prerequisites() -> Prerequisites {
    let mut missing = Vec::new();
    let vmm = CloudHypervisorVmm::new(CloudHypervisorConfig::default())
        .map_err(|e| missing.push(format!("cloud-hypervisor v53+: {e}")))
        .ok();
    match accel::detect() {
        Ok(choice) if choice.accel == Accel::Kvm => {}
        Ok(choice) => missing.push(format!(
            "a /dev/kvm that boots a stock kernel: {}",
            choice.reason
        )),
        Err(e) => missing.push(format!("a /dev/kvm that boots a stock kernel: {e}")),
    }
    let agent = agent_binary();
    if agent.is_none() {
        missing.push(
            "the static guest agent: run guest/build-static.sh or set PLATINUM_GUEST_AGENT"
                .to_string(),
        );
    }
    let virtiofsd = virtiofsd();
    if virtiofsd.is_none() {
        missing.push(
            "virtiofsd (not on PATH, in /usr/libexec or ~/.cargo/bin; cargo install virtiofsd)"
                .to_string(),
        );
    }
    match (vmm, agent, virtiofsd) {
        (Some(vmm), Some(agent), Some(virtiofsd)) if missing.is_empty() => Prerequisites {
            vmm,
            agent,
            virtiofsd,
        },
        _ => panic!(
            "the Cloud Hypervisor end-to-end test cannot run here; missing:\n  - {}",
            missing.join("\n  - ")
        ),
    }
}

/// The static guest agent: `$PLATINUM_GUEST_AGENT`, else where `guest/build-static.sh` puts it.
fn agent_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PLATINUM_GUEST_AGENT") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors()
        .map(|dir| dir.join("x86_64-unknown-linux-gnu/release/platinum-guest"))
        .find(|candidate| candidate.is_file())
}

fn virtiofsd() -> Option<PathBuf> {
    find_in_path("virtiofsd")
        .or_else(|| Some(PathBuf::from("/usr/libexec/virtiofsd")).filter(|p| p.is_file()))
        .or_else(|| {
            let home = std::env::var_os("HOME")?;
            Some(Path::new(&home).join(".cargo/bin/virtiofsd")).filter(|p| p.is_file())
        })
}

/// Starts a virtiofsd sharing `shared` on `socket` and waits for the socket.
async fn start_virtiofsd(program: &Path, shared: &Path, socket: &Path, log: &Path) -> ChildProcess {
    let process = ChildProcess::spawn(&ProcessSpec {
        name: "virtiofsd".to_string(),
        program: program.to_path_buf(),
        args: vec![
            format!("--socket-path={}", socket.display()),
            format!("--shared-dir={}", shared.display()),
            "--cache=never".to_string(),
            "--sandbox=none".to_string(),
        ],
        log: log.to_path_buf(),
        inherit: Vec::new(),
    })
    .expect("spawn virtiofsd");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        assert!(
            process.try_exit().is_none(),
            "virtiofsd exited; see {}",
            log.display()
        );
        assert!(
            Instant::now() < deadline,
            "virtiofsd did not create {}",
            socket.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    process
}

/// Connects to the guest agent, retrying while the guest boots.
async fn agent(vm: &CloudHypervisorVm) -> GuestClient {
    let deadline = Instant::now() + AGENT_TIMEOUT;
    loop {
        let attempt = async {
            let stream = transport::connect(&vm.info().guest, Duration::from_secs(2)).await?;
            let hello = Hello {
                protocol: PROTOCOL_VERSION,
                unix_ns: unix_now_ns(),
                env: BTreeMap::new(),
                default_user: Some("user".to_string()),
                trust_pem: None,
            };
            GuestClient::start(stream, hello, Duration::from_secs(5)).await
        };
        match attempt.await {
            Ok(client) => return client,
            Err(e) if Instant::now() < deadline => {
                eprintln!("agent not up yet: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!(
                "guest agent unreachable after {AGENT_TIMEOUT:?}: {e}; console:\n{}",
                platinum_hostagent::console::tail(&vm.spec().console_log, 40).unwrap_or_default()
            ),
        }
    }
}

/// Runs a shell command as root and returns its stdout; panics unless it exits 0.
async fn sh(client: &GuestClient, cmd: &str) -> String {
    let spec = ExecSpec {
        user: Some("root".to_string()),
        timeout_ms: Some(30_000),
        ..ExecSpec::shell(cmd)
    };
    let output = client
        .exec(spec)
        .await
        .unwrap_or_else(|e| panic!("exec {cmd:?}: {e}"))
        .collect(1 << 20)
        .await
        .unwrap_or_else(|e| panic!("output of {cmd:?}: {e}"));
    assert_eq!(
        output.exit.code,
        Some(0),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn sparse_file(path: &Path, size: u64) -> PathBuf {
    std::fs::File::create(path)
        .expect("create")
        .set_len(size)
        .expect("size");
    path.to_path_buf()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs cloud-hypervisor v53+, a /dev/kvm that boots a stock kernel, the static guest agent, virtiofsd and the base image; run with --ignored on a KVM host"]
async fn cloud_hypervisor_end_to_end() {
    let Prerequisites {
        vmm,
        agent: agent_binary,
        virtiofsd: fsd,
    } = prerequisites();
    eprintln!("using {} ({})", vmm.binary().display(), vmm.version().text);
    let image = ImageCache::new(ImageCache::default_root())
        .ensure_image(
            &template("base").expect("base template"),
            &agent_binary,
            &Progress::hidden(),
        )
        .await
        .expect("guest image");
    let work = tempfile::Builder::new()
        .prefix("platinum-ch-")
        .tempdir()
        .expect("tempdir");
    let keep = std::env::var_os("PLATINUM_TEST_KEEP").is_some();

    // Boot the parent.
    let dir1 = work.path().join("p1");
    std::fs::create_dir(&dir1).expect("dir");
    let root1 = create_disk(
        "rootfs",
        &image.rootfs,
        &dir1.join("rootfs.disk"),
        &DiskOptions::default(),
    )
    .await
    .expect("root disk");
    let spec1 = VmSpec {
        id: "chtest1".to_string(),
        dir: dir1.clone(),
        kernel: image.kernel.clone(),
        initramfs: image.initramfs.clone(),
        cmdline: format!(
            "{} platinum.hostname=chtest1",
            kernel_cmdline(ConsoleLog::Quiet)
        ),
        disks: vec![root1.spec],
        vcpus: 2,
        memory_mib: 512,
        memory_file: None,
        transport: TransportKind::Vsock,
        vsock_cid: 3,
        console_log: dir1.join("console.log"),
        net: None,
        share: None,
    };
    let started = Instant::now();
    let vm1 = vmm.boot_vm(&spec1).await.expect("boot");
    let parent = agent(&vm1).await;
    eprintln!("TIMING boot to agent: {:?}", started.elapsed());
    assert_eq!(sh(&parent, "echo hello from ch").await, "hello from ch");
    assert_eq!(sh(&parent, "hostname").await, "chtest1");
    assert!(
        sh(&parent, "ls /sys/bus/pci/drivers")
            .await
            .contains("virtio-pci")
    );

    // Pause / resume.
    vm1.pause().await.expect("pause");
    assert_eq!(vm1.state().await.expect("state"), VmRunState::Paused);
    vm1.resume().await.expect("resume");
    assert_eq!(sh(&parent, "echo resumed").await, "resumed");

    // Hot-add a disk; the guest sees a second virtio-blk device.
    let data = DiskSpec {
        id: "data".to_string(),
        path: sparse_file(&dir1.join("data.raw"), 64 << 20),
        format: DiskFormat::Raw,
        readonly: false,
        volume_slot: None,
    };
    vm1.add_disk(&data).await.expect("add-disk");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let blocks = sh(&parent, "ls /sys/block").await;
        if blocks.contains("vdb") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the hot-added disk never appeared: {blocks}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        sh(&parent, "cat /sys/block/vdb/size").await,
        ((64u64 << 20) / 512).to_string()
    );

    // Hot-add a virtio-fs share.
    let share_dir = work.path().join("share");
    std::fs::create_dir(&share_dir).expect("share dir");
    std::fs::write(share_dir.join("hello.txt"), "from the host\n").expect("share file");
    let mut daemons = Vec::new();
    let mut fs_sockets = BTreeMap::new();
    let socket = dir1.join("virtiofsd.sock");
    daemons.push(start_virtiofsd(&fsd, &share_dir, &socket, &dir1.join("virtiofsd.log")).await);
    vm1.add_fs(&FsSpec {
        id: "fs0".to_string(),
        tag: "share".to_string(),
        socket,
    })
    .await
    .expect("add-fs");
    let text = sh(
        &parent,
        "mkdir -p /mnt/share && mount -t virtiofs share /mnt/share && cat /mnt/share/hello.txt",
    )
    .await;
    assert_eq!(text, "from the host");

    // Snapshot: RAM holds a marker; disks are copied while paused.
    sh(&parent, "echo before-snapshot > /dev/shm/marker").await;
    parent.sync().await.expect("sync");
    vm1.pause().await.expect("pause for snapshot");
    let snap = work.path().join("snap");
    std::fs::create_dir(&snap).expect("snap dir");
    let saved = Instant::now();
    vm1.snapshot(&snap).await.expect("snapshot");
    eprintln!("TIMING snapshot: {:?}", saved.elapsed());
    let dir2 = work.path().join("c1");
    std::fs::create_dir(&dir2).expect("clone dir");
    let mut spec2 = vm1.spec();
    spec2.id = "chclone1".to_string();
    spec2.dir = dir2.clone();
    spec2.console_log = dir2.join("console.log");
    for disk in &mut spec2.disks {
        let copy = dir2.join(disk.path.file_name().expect("disk file name"));
        std::fs::copy(&disk.path, &copy).expect("copy disk");
        disk.path = copy;
    }
    vm1.resume().await.expect("resume the parent");
    sh(&parent, "echo after-snapshot > /dev/shm/marker").await;

    // Restore the clone next to its running parent.
    let socket = dir2.join("virtiofsd.sock");
    daemons.push(start_virtiofsd(&fsd, &share_dir, &socket, &dir2.join("virtiofsd.log")).await);
    fs_sockets.insert("fs0".to_string(), socket);
    let restored = Instant::now();
    let vm2 = vmm
        .restore_vm_with(
            &spec2,
            &snap,
            &RestoreOptions {
                fs_sockets,
                memory_restore_mode: None,
            },
        )
        .await
        .expect("restore the clone");
    let clone = agent(&vm2).await;
    eprintln!("TIMING restore to agent: {:?}", restored.elapsed());
    assert_eq!(sh(&clone, "cat /dev/shm/marker").await, "before-snapshot");
    assert_eq!(sh(&parent, "cat /dev/shm/marker").await, "after-snapshot");
    assert!(sh(&clone, "ls /sys/block").await.contains("vdb"));
    assert_eq!(
        sh(&clone, "cat /mnt/share/hello.txt").await,
        "from the host"
    );

    // Shut both down: the agent powers the guest off, CH exits.
    for (vm, client) in [(&vm1, parent), (&vm2, clone)] {
        if let Err(e) = client.shutdown_guest(false).await {
            eprintln!("guest shutdown request: {e}");
        }
        let exit = vm
            .shutdown(Duration::from_secs(20))
            .await
            .expect("shutdown");
        assert!(exit.requested);
        assert_eq!(vm.state().await.expect("state"), VmRunState::Exited);
    }
    for daemon in &daemons {
        daemon
            .kill(Duration::from_secs(2))
            .await
            .expect("stop virtiofsd");
    }
    if keep {
        eprintln!("keeping {}", work.keep().display());
    }
}
