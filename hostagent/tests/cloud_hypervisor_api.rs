//! The Cloud Hypervisor API client and driver against a strict stand-in for CH's API socket
//! (`cloud_hypervisor_support/standin.rs`: method, path and body checked against the CH v53
//! OpenAPI document, documented status codes, CH's error bodies). CH cannot run on these
//! machines; this is the one place a stand-in replaces it.
//!
//! - `client_speaks_the_documented_protocol`: every client call, success and error statuses,
//!   CH's 500 messages surfaced in `Error::VmmControl`;
//! - `the_stand_in_refuses_what_ch_refuses`: raw HTTP proves the oracle is strict;
//! - the driver tests run [`CloudHypervisorVmm`] with a fake `cloud-hypervisor` (a shell script
//!   that links the VM's API socket to a stand-in and sleeps, so the driver's process handling is
//!   real): boot, the guest endpoint over hybrid vsock, pause/resume, hot-add, snapshot, restore
//!   as a clone with a rewritten config, failed starts leaving nothing behind, shutdown with its
//!   fallbacks, and crash detection.

#[path = "cloud_hypervisor_support/schema.rs"]
mod schema;
#[path = "cloud_hypervisor_support/standin.rs"]
mod standin;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use platinum_hostagent::Error;
use platinum_hostagent::process::pid_alive;
use platinum_hostagent::transport;
use platinum_hostagent::vmm::cloud_hypervisor::api::{ApiClient, ChVmState};
use platinum_hostagent::vmm::cloud_hypervisor::config::{self, MemoryRestoreMode};
use platinum_hostagent::vmm::cloud_hypervisor::paths::ChPaths;
use platinum_hostagent::vmm::cloud_hypervisor::{
    CloudHypervisorConfig, CloudHypervisorVm, CloudHypervisorVmm, RestoreOptions,
};
use platinum_hostagent::vmm::manifest::{MANIFEST_FILE, read_manifest};
use platinum_hostagent::vmm::{
    DiskFormat, DiskSpec, FsSpec, GuestEndpoint, TransportKind, Vm, VmExit, VmRunState, VmSpec,
    Vmm, VmmKind,
};
use schema::ChSchema;
use serde_json::{Value, json};
use standin::StandIn;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TIMEOUT: Duration = Duration::from_secs(10);

fn schema() -> Option<Arc<ChSchema>> {
    ChSchema::load().map(Arc::new)
}

/// An empty file standing in for a kernel, initramfs or disk image.
fn touch(path: &Path) -> PathBuf {
    std::fs::write(path, b"").expect("touch");
    path.to_path_buf()
}

fn vm_spec(id: &str, dir: &Path, images: &Path) -> VmSpec {
    std::fs::create_dir_all(dir).expect("vm dir");
    VmSpec {
        id: id.to_string(),
        dir: dir.to_path_buf(),
        kernel: images.join("vmlinux"),
        initramfs: images.join("initramfs.cpio.gz"),
        cmdline: format!("console=ttyS0 panic=-1 quiet platinum.hostname={id}"),
        disks: vec![DiskSpec {
            id: "rootfs".to_string(),
            path: touch(&dir.join("rootfs.disk")),
            format: DiskFormat::Raw,
            readonly: false,
            volume_slot: None,
        }],
        vcpus: 2,
        memory_mib: 512,
        memory_file: None,
        transport: TransportKind::VirtioSerial,
        vsock_cid: 3,
        console_log: dir.join("console.log"),
        net: None,
        share: None,
    }
}

/// Sends bytes over the VM's guest endpoint and expects the stand-in guest's echo.
async fn assert_guest_echo(guest: &GuestEndpoint) {
    let mut stream = transport::connect(guest, Duration::from_secs(5))
        .await
        .expect("hybrid vsock connect");
    stream.write_all(b"hello agent").await.expect("write");
    let mut buf = [0u8; 11];
    tokio::time::timeout(TIMEOUT, stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf, b"hello agent");
}

async fn wait_gone(pid: u32) {
    let deadline = Instant::now() + TIMEOUT;
    while pid_alive(pid) {
        assert!(Instant::now() < deadline, "process {pid} survived");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn vmm_control(result: Result<impl std::fmt::Debug, Error>) -> (String, String) {
    match result {
        Err(Error::VmmControl { request, message }) => (request, message),
        other => panic!("expected VmmControl, got {other:?}"),
    }
}

#[tokio::test]
async fn client_speaks_the_documented_protocol() {
    let Some(schema) = schema() else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let images = work.path();
    touch(&images.join("vmlinux"));
    touch(&images.join("initramfs.cpio.gz"));
    let mut spec = vm_spec("sbx1", &work.path().join("vm"), images);
    spec.transport = TransportKind::Vsock;
    let paths = ChPaths::new(&spec.dir);
    let ch = StandIn::start(schema, &paths.api, None);
    let api = ApiClient::new(&paths.api, TIMEOUT);

    assert_eq!(api.ping().await.expect("ping").version, "53.0.0");
    let (request, message) = vmm_control(api.info().await);
    assert_eq!(request, "vm.info");
    assert!(message.starts_with("HTTP 404"), "{message}");
    let (request, _) = vmm_control(api.boot().await);
    assert_eq!(request, "vm.boot");

    api.create(&config::vm_config(&spec, &paths, true))
        .await
        .expect("create");
    let (_, message) = vmm_control(api.create(&config::vm_config(&spec, &paths, true)).await);
    assert!(
        message.contains("HTTP 500") && message.contains("VM is already created"),
        "{message}"
    );
    assert_eq!(api.info().await.expect("info").state, ChVmState::Created);
    api.boot().await.expect("boot");
    assert_eq!(api.info().await.expect("info").state, ChVmState::Running);

    let (request, message) = vmm_control(api.resume().await);
    assert_eq!(request, "vm.resume");
    assert!(message.starts_with("HTTP 405"), "{message}");
    let snap = work.path().join("snap");
    std::fs::create_dir(&snap).expect("snap dir");
    let (_, message) = vmm_control(api.snapshot(&config::snapshot_config(&snap), TIMEOUT).await);
    assert!(message.contains("VM is not paused"), "{message}");

    let disk = DiskSpec {
        id: "vol0".to_string(),
        path: touch(&work.path().join("vol0.raw")),
        format: DiskFormat::Raw,
        readonly: true,
        volume_slot: None,
    };
    let attached = api
        .add_disk(&config::disk_config(&disk))
        .await
        .expect("add-disk")
        .expect("a hot-plug answers with the PCI address");
    assert_eq!(attached.id, "vol0");
    let (request, message) = vmm_control(api.add_disk(&config::disk_config(&disk)).await);
    assert_eq!(request, "vm.add-disk");
    assert!(
        message.contains("Identifier vol0 is not unique"),
        "{message}"
    );
    let share = FsSpec {
        id: "fs0".to_string(),
        tag: "work".to_string(),
        socket: touch(&work.path().join("fs0.sock")),
    };
    assert!(
        api.add_fs(&config::fs_config(&share))
            .await
            .expect("add-fs")
            .is_some()
    );

    api.pause().await.expect("pause");
    api.snapshot(&config::snapshot_config(&snap), TIMEOUT)
        .await
        .expect("snapshot");
    for file in ["config.json", "state.json", "memory-ranges"] {
        assert!(snap.join(file).is_file(), "{file} missing");
    }
    let (_, message) = vmm_control(
        api.restore(
            &config::restore_config(&snap, MemoryRestoreMode::Copy),
            TIMEOUT,
        )
        .await,
    );
    assert!(message.starts_with("HTTP 404"), "{message}");
    api.power_button()
        .await
        .expect_err("no power button while paused");
    api.shutdown_vm().await.expect("vm.shutdown");
    assert_eq!(api.info().await.expect("info").state, ChVmState::Shutdown);
    api.shutdown_vmm().await.expect("vmm.shutdown");

    // Every body the client sent passed the stand-in's schema check (else it had answered 400).
    assert!(
        ch.requests().iter().all(|r| r.status != 400),
        "{:?}",
        ch.requests()
    );
}

/// One raw HTTP/1.1 exchange; returns the status and body.
async fn raw(socket: &Path, request: String) -> (u16, String) {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut reply))
        .await
        .expect("reply in time")
        .expect("read");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP reply: {text}"));
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}

fn put(endpoint: &str, content_type: Option<&str>, body: &str) -> String {
    let header = content_type
        .map(|t| format!("Content-Type: {t}\r\n"))
        .unwrap_or_default();
    format!(
        "PUT /api/v1/{endpoint} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{header}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test]
async fn the_stand_in_refuses_what_ch_refuses() {
    let Some(schema) = schema() else {
        return;
    };
    let work = tempfile::tempdir().expect("tempdir");
    let socket = work.path().join("api.sock");
    let ch = StandIn::start(schema, &socket, None);
    let json = Some("application/json");

    let (status, _) = raw(&socket, put("vm.teleport", None, "")).await;
    assert_eq!(status, 404);
    let get = "GET /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(&socket, get.to_string()).await.0, 400);
    let valid = r#"{"payload":{"kernel":"/k"}}"#;
    assert_eq!(
        raw(&socket, put("vm.create", None, valid)).await.0,
        400,
        "no content type"
    );
    assert_eq!(
        raw(&socket, put("vm.create", json, "")).await.0,
        400,
        "no body"
    );
    assert_eq!(
        raw(&socket, put("vm.create", json, "{")).await.0,
        400,
        "not JSON"
    );
    let (status, body) = raw(
        &socket,
        put(
            "vm.create",
            json,
            r#"{"payload":{"kernel":"/k"},"cpus":{"boot_vcpus":1,"max_vcpus":1,"smt":true}}"#,
        ),
    )
    .await;
    assert_eq!(status, 400, "unknown field: {body}");
    assert!(body.contains("smt"), "{body}");
    assert_eq!(
        raw(
            &socket,
            put(
                "vm.create",
                json,
                r#"{"cpus":{"boot_vcpus":1,"max_vcpus":1}}"#
            )
        )
        .await
        .0,
        400,
        "payload is required"
    );
    assert_eq!(
        raw(&socket, put("vm.boot", json, "{}")).await.0,
        400,
        "vm.boot takes no body"
    );
    assert_eq!(raw(&socket, put("vm.create", json, valid)).await.0, 204);
    let statuses: Vec<u16> = ch.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [400, 400, 400, 400, 400, 400, 204]);
}

/// A fake `cloud-hypervisor`: `--version` answers v53; otherwise it records its arguments and
/// pid, links the VM's API socket to the stand-in `<standins>/<vm dir name>.sock`, and sleeps
/// until killed. A `fail-start` file in the VM directory makes it exit at once, as CH does when
/// it cannot take its API socket.
struct Fake {
    binary: PathBuf,
    standins: PathBuf,
    schema: Arc<ChSchema>,
}

impl Fake {
    fn new(work: &Path, schema: Arc<ChSchema>) -> Fake {
        let bin = work.join("bin");
        let standins = work.join("standins");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::create_dir_all(&standins).expect("standins");
        let binary = bin.join("cloud-hypervisor");
        let script = format!(
            r#"#!/bin/sh
if [ "$1" = --version ]; then echo "cloud-hypervisor v53.0.0"; exit 0; fi
api="${{2#path=}}"
dir="$(dirname "$api")"
printf '%s\n' "$@" > "$dir/fake-args"
echo $$ > "$dir/fake-pid"
if [ -e "$dir/fail-start" ]; then echo "Error booting VMM: ApiSocketInUse" >&2; exit 1; fi
ln -s "{standins}/$(basename "$dir").sock" "$api" || exit 3
exec sleep 600
"#,
            standins = standins.display()
        );
        // A child writes the script, so no writable descriptor of it can leak into a child
        // forked concurrently by another test and make exec fail with ETXTBSY.
        let mut writer = std::process::Command::new("/bin/sh")
            .args(["-c", "cat > \"$1\" && chmod 755 \"$1\"", "sh"])
            .arg(&binary)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        {
            use std::io::Write;
            writer
                .stdin
                .take()
                .expect("stdin")
                .write_all(script.as_bytes())
                .expect("script");
        }
        assert!(writer.wait().expect("sh").success());
        Fake {
            binary,
            standins,
            schema,
        }
    }

    fn vmm(&self) -> CloudHypervisorVmm {
        CloudHypervisorVmm::new(CloudHypervisorConfig {
            binary: Some(self.binary.clone()),
            start_timeout: TIMEOUT,
            api_timeout: TIMEOUT,
            snapshot_timeout: TIMEOUT,
            ..CloudHypervisorConfig::default()
        })
        .expect("driver over the fake binary")
    }

    /// The stand-in the VM in `dir` will talk to.
    fn standin(&self, dir: &Path) -> StandIn {
        let name = dir.file_name().expect("dir name").to_string_lossy();
        StandIn::start(
            self.schema.clone(),
            &self.standins.join(format!("{name}.sock")),
            Some(dir),
        )
    }
}

struct Setup {
    work: tempfile::TempDir,
    fake: Fake,
}

/// A work directory with images and the fake binary; `None` (the test is skipped; under `CI` it
/// fails instead) without the CH OpenAPI document.
fn setup() -> Option<Setup> {
    let schema = schema()?;
    let work = tempfile::tempdir().expect("tempdir");
    touch(&work.path().join("vmlinux"));
    touch(&work.path().join("initramfs.cpio.gz"));
    let fake = Fake::new(work.path(), schema);
    Some(Setup { work, fake })
}

impl Setup {
    fn spec(&self, id: &str) -> VmSpec {
        vm_spec(id, &self.work.path().join(id), self.work.path())
    }

    /// The spec of VM `id` and the stand-in its fake VMM will talk to.
    fn vm(&self, id: &str) -> (VmSpec, StandIn) {
        let spec = self.spec(id);
        let ch = self.fake.standin(&spec.dir);
        (spec, ch)
    }
}

/// Boots `spec` and shuts it down with a short grace period; the exit must count as requested.
async fn boot_and_shut_down(
    vmm: &CloudHypervisorVmm,
    spec: &VmSpec,
) -> (Arc<CloudHypervisorVm>, VmExit) {
    let vm = vmm.boot_vm(spec).await.expect("boot");
    let exit = vm
        .shutdown(Duration::from_millis(300))
        .await
        .expect("shutdown");
    assert!(exit.requested);
    (vm, exit)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn driver_boots_pauses_snapshots_and_restores_a_clone() {
    let Some(s) = setup() else {
        return;
    };
    let vmm = s.fake.vmm();
    let (spec1, ch1) = s.vm("vm1");
    // A stale vsock socket from an earlier run: CH would fail to bind it.
    touch(&spec1.dir.join("vsock.sock"));

    let vm1 = vmm.boot_vm(&spec1).await.expect("boot");
    let info = vm1.info().clone();
    assert_eq!(info.vmm, VmmKind::CloudHypervisor);
    assert_eq!(
        info.guest,
        GuestEndpoint::HybridVsock {
            socket: spec1.dir.join("vsock.sock"),
            port: 18047
        }
    );
    assert_eq!(
        vm1.spec().transport,
        TransportKind::Vsock,
        "virtio-serial is overridden"
    );
    let pid_file = std::fs::read_to_string(spec1.dir.join("vmm.pid")).expect("pid file");
    assert_eq!(pid_file.trim().parse::<u32>().expect("pid"), info.pid);
    let args = std::fs::read_to_string(spec1.dir.join("fake-args")).expect("args");
    assert_eq!(
        args.lines().collect::<Vec<_>>(),
        [
            "--api-socket",
            &format!("path={}", spec1.dir.join("ch-api.sock").display()),
            "--seccomp",
            "true",
            "-v"
        ]
    );
    assert_eq!(ch1.calls(), ["vm.create", "vm.boot", "vm.info"]);
    let mut expected = vm1.spec();
    expected.disks.truncate(1);
    let paths1 = ChPaths::new(&spec1.dir);
    assert_eq!(
        ch1.last_body("vm.create").expect("create body"),
        serde_json::to_value(config::vm_config(&expected, &paths1, true)).expect("json")
    );
    assert_guest_echo(&info.guest).await;

    // Pause / resume with state checks.
    assert_eq!(vm1.state().await.expect("state"), VmRunState::Running);
    assert!(matches!(vm1.resume().await, Err(Error::VmState { .. })));
    assert!(matches!(
        vm1.snapshot(s.work.path()).await,
        Err(Error::VmState { .. })
    ));

    // Hot-add a disk and a share through the trait object, as the host agent will.
    let dyn_vm: Arc<dyn Vm> = vm1.clone();
    let vol = DiskSpec {
        id: "vol1".to_string(),
        path: touch(&spec1.dir.join("vol1.raw")),
        format: DiskFormat::Raw,
        readonly: false,
        volume_slot: None,
    };
    dyn_vm.add_disk(&vol).await.expect("add-disk");
    assert!(matches!(
        dyn_vm.add_disk(&vol).await,
        Err(Error::Invalid(_))
    ));
    let share = FsSpec {
        id: "fs0".to_string(),
        tag: "workspace".to_string(),
        socket: touch(&spec1.dir.join("virtiofsd.sock")),
    };
    dyn_vm.add_fs(&share).await.expect("add-fs");
    assert_eq!(
        ch1.last_body("vm.add-disk"),
        Some(serde_json::to_value(config::disk_config(&vol)).expect("json"))
    );

    vm1.pause().await.expect("pause");
    assert_eq!(vm1.state().await.expect("state"), VmRunState::Paused);
    assert!(matches!(vm1.pause().await, Err(Error::VmState { .. })));
    let snap = s.work.path().join("snap");
    std::fs::create_dir(&snap).expect("snap dir");
    vm1.snapshot(&snap).await.expect("snapshot");
    let manifest = read_manifest(&snap, VmmKind::CloudHypervisor).expect("manifest");
    assert_eq!(
        manifest
            .spec
            .disks
            .iter()
            .map(|d| d.id.as_str())
            .collect::<Vec<_>>(),
        ["rootfs", "vol1"]
    );
    assert_eq!(manifest.fs, vec![share.clone()]);
    assert!(snap.join(MANIFEST_FILE).is_file());

    // Restore as a clone: its own directory, disk copies, a new virtiofsd socket.
    let mut spec2 = s.spec("vm2");
    spec2.disks.push(DiskSpec {
        path: touch(&spec2.dir.join("vol1.raw")),
        ..vol.clone()
    });
    let ch2 = s.fake.standin(&spec2.dir);
    let new_socket = touch(&spec2.dir.join("virtiofsd.sock"));
    assert!(
        matches!(vmm.restore(&spec2, &snap).await, Err(Error::Invalid(msg)) if msg.contains("fs0")),
        "a restore without a socket for the share is refused before anything starts"
    );
    let options = RestoreOptions {
        fs_sockets: BTreeMap::from([("fs0".to_string(), new_socket.clone())]),
        memory_restore_mode: Some(MemoryRestoreMode::OnDemand),
    };
    let vm2 = vmm
        .restore_vm_with(&spec2, &snap, &options)
        .await
        .expect("restore");
    assert_eq!(ch2.calls(), ["vm.restore", "vm.resume", "vm.info"]);
    let restore = ch2.last_body("vm.restore").expect("restore body");
    assert_eq!(restore["memory_restore_mode"], json!("OnDemand"));
    assert_eq!(restore["resume"], json!(false));
    let restored = ch2.restored_config().expect("config read by vm.restore");
    let snapshot_config: Value =
        serde_json::from_slice(&std::fs::read(snap.join("config.json")).expect("config"))
            .expect("json");
    let ids = |c: &Value| -> Vec<String> {
        c["disks"]
            .as_array()
            .expect("disks")
            .iter()
            .map(|d| d["id"].as_str().expect("id").to_string())
            .collect()
    };
    assert_eq!(ids(&restored), ids(&snapshot_config));
    assert_eq!(restored["disks"][0]["path"], json!(spec2.disks[0].path));
    assert_eq!(restored["disks"][1]["path"], json!(spec2.disks[1].path));
    assert_eq!(
        restored["vsock"]["socket"],
        json!(spec2.dir.join("vsock.sock"))
    );
    assert_eq!(restored["serial"]["file"], json!(spec2.console_log));
    assert_eq!(restored["fs"][0]["socket"], json!(new_socket));
    assert!(
        !spec2.dir.join("restore-source").exists(),
        "the rewritten source is removed"
    );
    assert_eq!(vm2.state().await.expect("state"), VmRunState::Running);
    assert_eq!(vm2.shares()[0].socket, new_socket);
    assert_guest_echo(&vm2.info().guest).await;
    // The parent is untouched and still paused.
    assert_eq!(vm1.state().await.expect("state"), VmRunState::Paused);

    // kill: requested, runtime files gone.
    let exit = vm1.kill().await.expect("kill");
    assert!(exit.requested);
    wait_gone(info.pid).await;
    for file in ["ch-api.sock", "vsock.sock", "vmm.pid"] {
        assert!(!spec1.dir.join(file).exists(), "{file} left behind");
    }
    // shutdown: the guest powers off on the power button and CH exits.
    let exit = vm2.shutdown(TIMEOUT).await.expect("shutdown");
    assert!(exit.requested);
    assert_eq!(
        ch2.calls().last().map(String::as_str),
        Some("vm.power-button")
    );
    assert!(
        ch1.requests()
            .iter()
            .chain(ch2.requests().iter())
            .all(|r| r.status != 400)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_starts_surface_the_cause_and_leave_nothing_running() {
    let Some(s) = setup() else {
        return;
    };
    let vmm = s.fake.vmm();

    // CH refuses to boot: its message reaches the caller.
    let (spec, ch) = s.vm("vm1");
    ch.fail(
        "vm.boot",
        500,
        &[
            "Error from API",
            "The VM could not boot",
            "Cannot open disk path /x: Permission denied",
        ],
    );
    let (request, message) = vmm_control(vmm.boot_vm(&spec).await);
    assert_eq!(request, "vm.boot");
    assert!(
        message.contains("HTTP 500") && message.contains("Cannot open disk path /x"),
        "{message}"
    );
    let pid: u32 = std::fs::read_to_string(spec.dir.join("fake-pid"))
        .expect("pid")
        .trim()
        .parse()
        .expect("pid");
    wait_gone(pid).await;
    for file in ["ch-api.sock", "vmm.pid"] {
        assert!(!spec.dir.join(file).exists(), "{file} left behind");
    }

    // The VMM exits at start: the error quotes its log.
    let spec = s.spec("vm2");
    touch(&spec.dir.join("fail-start"));
    match vmm.boot_vm(&spec).await {
        Err(Error::VmmStart(msg)) => assert!(msg.contains("ApiSocketInUse"), "{msg}"),
        other => panic!("expected VmmStart, got {other:?}"),
    }

    // A missing disk never reaches the VMM.
    let mut spec = s.spec("vm3");
    spec.disks[0].path = spec.dir.join("absent.raw");
    assert!(
        matches!(vmm.boot_vm(&spec).await, Err(Error::Invalid(msg)) if msg.contains("absent.raw"))
    );
    assert!(!spec.dir.join("fake-args").exists(), "nothing was spawned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_falls_back_to_vmm_shutdown_then_to_kill() {
    let Some(s) = setup() else {
        return;
    };
    let vmm = s.fake.vmm();

    // The guest ignores the power button; vm.shutdown + vmm.shutdown end the VMM.
    let (spec, ch) = s.vm("vm1");
    ch.ignore("vm.power-button");
    let (vm, _) = boot_and_shut_down(&vmm, &spec).await;
    assert_eq!(
        ch.calls()[3..],
        ["vm.power-button", "vm.shutdown", "vmm.shutdown"]
    );
    wait_gone(vm.info().pid).await;

    // The VMM also hangs in vmm.shutdown: the driver kills it.
    let (spec, ch) = s.vm("vm2");
    ch.ignore("vm.power-button");
    ch.ignore("vmm.shutdown");
    let (vm, exit) = boot_and_shut_down(&vmm, &spec).await;
    assert_eq!(exit.signal, Some(libc::SIGTERM));
    assert!(!pid_alive(vm.info().pid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmm_that_dies_unasked_is_a_crash() {
    let Some(s) = setup() else {
        return;
    };
    let vmm = s.fake.vmm();
    let (spec, _ch) = s.vm("vm1");
    let vm: Arc<CloudHypervisorVm> = vmm.boot_vm(&spec).await.expect("boot");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(vm.info().pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the VMM");
    let exit = tokio::time::timeout(TIMEOUT, vm.wait_exit())
        .await
        .expect("exit seen");
    assert!(!exit.requested);
    assert_eq!(exit.signal, Some(libc::SIGKILL));
    assert_eq!(vm.state().await.expect("state"), VmRunState::Exited);
    let deadline = Instant::now() + TIMEOUT;
    while spec.dir.join("vmm.pid").exists() {
        assert!(Instant::now() < deadline, "the reaper did not clean up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killing a dead VM is fine and keeps it a crash.
    assert!(!vm.kill().await.expect("kill").requested);
}
