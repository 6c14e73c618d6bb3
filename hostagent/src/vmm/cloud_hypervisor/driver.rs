//! [`CloudHypervisorVmm`]: the Cloud Hypervisor driver behind the [`Vmm`] trait.
//!
//! Starting a VM, step by step (boot and restore share steps 1-4):
//! 1. force the vsock transport (see below), validate the spec and check that the VM directory,
//!    kernel, initramfs and disks exist;
//! 2. remove runtime files of an earlier VMM in the same directory (sockets, lock, pid file);
//! 3. spawn `cloud-hypervisor --api-socket path=<dir>/ch-api.sock --seccomp true -v` in its own
//!    process group, output appended to `<dir>/cloud-hypervisor.log`, and write `vmm.pid`;
//! 4. poll `vmm.ping` until the API answers (bounded), failing fast with the log tail if the
//!    VMM exits meanwhile;
//! 5. boot: `vm.create` with the [`config::vm_config`] body, `vm.boot`, and `vm.info` must say
//!    `Running`. Restore: rewrite the snapshot's `config.json` for the new identity into
//!    `<dir>/restore-source/` ([`snapshot::prepare_restore_source`]), `vm.restore` from there
//!    (VM paused), `vm.resume`, `vm.info` must say `Running`.
//!
//! Any failure after step 3 kills the VMM and removes its runtime files before returning, so a
//! failed start leaves nothing running.
//!
//! **Transport.** CH reaches a guest only through its hybrid vsock socket (it has no
//! virtio-serial port with a host socket), so this driver always runs the vsock transport and
//! reports [`GuestEndpoint::HybridVsock`]. A spec asking for virtio-serial (the host agent's
//! default, or a sandbox created under QEMU) is run with vsock instead and the override is
//! logged: refusing it would make a sandbox created on a QEMU host unbootable on a CH host,
//! although the guest image and agent serve both transports.
//!
//! **Binary.** The configured path, else `$PLATINUM_CLOUD_HYPERVISOR`, else `cloud-hypervisor`
//! on `PATH`; it must report v53 or later (`--version`), the API this driver is contract-tested
//! against.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{info, warn};

use crate::console;
use crate::error::{Error, IoContext, Result};
use crate::process::{ChildProcess, ProcessSpec, find_in_path};
use crate::vmm::{
    Accel, FsSpec, GuestEndpoint, TransportKind, Vm, VmInfo, VmSpec, Vmm, VmmKind, manifest, spec,
};
use platinum_protocol::VSOCK_PORT;

use super::api::{ApiClient, ChVmState, VmmPing};
use super::config::{self, MemoryRestoreMode};
use super::paths::{self, ChPaths};
use super::snapshot::{self, RestoreIdentity};
use super::vm::{CloudHypervisorVm, Parts};

/// Default binary name.
pub const CLOUD_HYPERVISOR_PROGRAM: &str = "cloud-hypervisor";
/// Environment variable naming the binary.
pub const CLOUD_HYPERVISOR_ENV: &str = "PLATINUM_CLOUD_HYPERVISOR";
/// Oldest supported major version.
pub const MIN_MAJOR_VERSION: u32 = 53;
/// How to install it.
pub const INSTALL_HINT: &str =
    "install the pinned release with scripts/install-cloud-hypervisor.sh (needs a KVM host)";

/// Poll interval while waiting for the API socket.
const POLL: Duration = Duration::from_millis(20);
/// Log lines quoted when a start fails.
const LOG_TAIL_LINES: usize = 30;

/// Settings of the Cloud Hypervisor driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudHypervisorConfig {
    /// The binary; see the module docs for the lookup when `None`.
    pub binary: Option<PathBuf>,
    /// How restores bring guest RAM back.
    pub memory_restore_mode: MemoryRestoreMode,
    /// Boot VMs with shared guest RAM so virtio-fs shares can be hot-added.
    pub hotplug_fs: bool,
    /// Bound on steps 3-4 (VMM up, API answering).
    pub start_timeout: Duration,
    /// Bound on each API request (snapshot and restore excepted).
    pub api_timeout: Duration,
    /// Bound on `vm.snapshot` and `vm.restore`.
    pub snapshot_timeout: Duration,
}

impl Default for CloudHypervisorConfig {
    fn default() -> Self {
        CloudHypervisorConfig {
            binary: None,
            memory_restore_mode: MemoryRestoreMode::Copy,
            hotplug_fs: true,
            start_timeout: Duration::from_secs(15),
            api_timeout: Duration::from_secs(30),
            snapshot_timeout: Duration::from_secs(600),
        }
    }
}

/// Per-restore choices beyond the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RestoreOptions {
    /// New virtiofsd sockets by share id, one for every share in the snapshot.
    pub fs_sockets: BTreeMap<String, PathBuf>,
    /// Overrides the driver's memory restore mode.
    pub memory_restore_mode: Option<MemoryRestoreMode>,
}

/// A Cloud Hypervisor version from `--version` (`cloud-hypervisor v53.0.0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// The line as printed.
    pub text: String,
}

/// The Cloud Hypervisor driver.
#[derive(Debug, Clone)]
pub struct CloudHypervisorVmm {
    binary: PathBuf,
    version: ChVersion,
    config: CloudHypervisorConfig,
}

/// A VMM that answers its API, before it becomes a [`CloudHypervisorVm`].
struct Started {
    paths: ChPaths,
    process: Arc<ChildProcess>,
    api: ApiClient,
}

impl CloudHypervisorVmm {
    /// Resolves the binary and checks its version.
    pub fn new(config: CloudHypervisorConfig) -> Result<CloudHypervisorVmm> {
        let binary =
            locate_binary(config.binary.as_deref()).ok_or_else(|| Error::MissingProgram {
                program: CLOUD_HYPERVISOR_PROGRAM.to_string(),
                hint: format!("not on PATH and ${CLOUD_HYPERVISOR_ENV} unset; {INSTALL_HINT}"),
            })?;
        let version = usable_version(&binary).map_err(|why| Error::MissingProgram {
            program: format!("{CLOUD_HYPERVISOR_PROGRAM} v{MIN_MAJOR_VERSION} or later"),
            hint: format!("{why}; {INSTALL_HINT}"),
        })?;
        info!(binary = %binary.display(), version = %version.text, "Cloud Hypervisor driver ready");
        Ok(CloudHypervisorVmm {
            binary,
            version,
            config,
        })
    }

    /// The binary in use.
    pub fn binary(&self) -> &Path {
        &self.binary
    }

    /// Its version.
    pub fn version(&self) -> &ChVersion {
        &self.version
    }

    /// Boots like [`Vmm::boot`] but returns the concrete VM.
    pub async fn boot_vm(&self, spec: &VmSpec) -> Result<Arc<CloudHypervisorVm>> {
        let spec = with_vsock(spec);
        let started = self.start(&spec).await?;
        let body = config::vm_config(&spec, &started.paths, self.config.hotplug_fs);
        let booted = async {
            started.api.create(&body).await?;
            started.api.boot().await?;
            expect_running(&started.api).await
        }
        .await;
        self.finish(spec, Vec::new(), started, booted).await
    }

    /// Restores like [`Vmm::restore`] but returns the concrete VM. `options` names the new
    /// virtiofsd sockets for the snapshot's shares and may override the memory restore mode.
    pub async fn restore_vm_with(
        &self,
        spec: &VmSpec,
        snapshot_dir: &Path,
        options: &RestoreOptions,
    ) -> Result<Arc<CloudHypervisorVm>> {
        let spec = with_vsock(spec);
        snapshot::check_dir(snapshot_dir)?;
        let manifest = manifest::read_manifest(snapshot_dir, VmmKind::CloudHypervisor)?;
        manifest::check_layout(&manifest.spec, &spec)?;
        let shares = new_shares(&manifest.fs, &options.fs_sockets)?;
        let mode = options
            .memory_restore_mode
            .unwrap_or(self.config.memory_restore_mode);

        let paths = paths::validate(&spec)?;
        let identity = RestoreIdentity {
            spec: &spec,
            vsock: &paths.vsock,
            fs: &shares,
        };
        let changes =
            snapshot::prepare_restore_source(snapshot_dir, &paths.restore_source, &identity)?;
        info!(vm = %spec.id, snapshot = %snapshot_dir.display(), ?changes, "rewrote the snapshot config for the new identity");

        let started = match self.start(&spec).await {
            Ok(started) => started,
            Err(e) => {
                discard_source(&paths);
                return Err(e);
            }
        };
        let body = config::restore_config(&paths.restore_source, mode);
        let restored = async {
            let began = Instant::now();
            started
                .api
                .restore(&body, self.config.snapshot_timeout)
                .await?;
            info!(vm = %spec.id, %mode, elapsed = ?began.elapsed(), "VM state restored");
            started.api.resume().await?;
            expect_running(&started.api).await
        }
        .await;
        discard_source(&paths);
        self.finish(spec, shares, started, restored).await
    }

    /// Turns a started VMM into a VM, or tears it down if `checked` failed.
    async fn finish(
        &self,
        spec: VmSpec,
        shares: Vec<FsSpec>,
        started: Started,
        checked: Result<()>,
    ) -> Result<Arc<CloudHypervisorVm>> {
        if let Err(e) = checked {
            let e = with_log_tail(e, &started.paths, started.process.try_exit().is_some());
            teardown(&started.process, &started.paths).await;
            return Err(e);
        }
        let info = VmInfo {
            vmm: VmmKind::CloudHypervisor,
            accel: Accel::Kvm,
            pid: started.process.pid(),
            guest: GuestEndpoint::HybridVsock {
                socket: started.paths.vsock.clone(),
                port: VSOCK_PORT,
            },
            devices: config::describe_devices(&spec, &started.paths, self.config.hotplug_fs),
        };
        info!(vm = %spec.id, pid = info.pid, "VM running");
        Ok(CloudHypervisorVm::new(Parts {
            info,
            spec,
            shares,
            paths: started.paths,
            process: started.process,
            api: started.api,
            shared_memory: self.config.hotplug_fs,
            snapshot_timeout: self.config.snapshot_timeout,
        }))
    }

    /// Steps 1-4 of the module docs (`spec` already has the vsock transport).
    async fn start(&self, spec: &VmSpec) -> Result<Started> {
        let paths = paths::validate(spec)?;
        spec::check_inputs(spec)?;
        paths.remove_runtime_files();
        let deadline = Instant::now() + self.config.start_timeout;

        let process = ProcessSpec {
            name: CLOUD_HYPERVISOR_PROGRAM.to_string(),
            program: self.binary.clone(),
            args: config::command_line(&paths),
            log: paths.log.clone(),
            inherit: Vec::new(),
        };
        let process = Arc::new(ChildProcess::spawn(&process)?);
        let api = ApiClient::new(&paths.api, self.config.api_timeout);
        let up = async {
            std::fs::write(&paths.pid_file, format!("{}\n", process.pid()))
                .ctx(|| format!("writing {}", paths.pid_file.display()))?;
            self.wait_api(&process, &api, deadline).await
        }
        .await;
        match up {
            Ok(ping) => {
                info!(vm = %spec.id, pid = process.pid(), version = %ping.version, "cloud-hypervisor API up");
                Ok(Started {
                    paths,
                    process,
                    api,
                })
            }
            Err(e) => {
                let e = with_log_tail(e, &paths, process.try_exit().is_some());
                teardown(&process, &paths).await;
                Err(e)
            }
        }
    }

    /// Polls `vmm.ping` until it answers, the VMM exits, or the deadline passes.
    async fn wait_api(
        &self,
        process: &ChildProcess,
        api: &ApiClient,
        deadline: Instant,
    ) -> Result<VmmPing> {
        let mut last = String::from("the API socket never appeared");
        loop {
            if let Some(exit) = process.try_exit() {
                return Err(Error::VmmStart(format!(
                    "cloud-hypervisor exited during start ({})",
                    exit.describe()
                )));
            }
            if api.socket().exists() {
                match api.ping().await {
                    Ok(ping) => return Ok(ping),
                    Err(e) => last = e.to_string(),
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::VmmStart(format!(
                    "cloud-hypervisor API {} did not answer within {:?} ({last})",
                    api.socket().display(),
                    self.config.start_timeout
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl Vmm for CloudHypervisorVmm {
    fn kind(&self) -> VmmKind {
        VmmKind::CloudHypervisor
    }

    fn accel(&self) -> Accel {
        Accel::Kvm
    }

    fn version(&self) -> String {
        format!("{}.{}", self.version.major, self.version.minor)
    }

    async fn boot(&self, spec: &VmSpec) -> Result<Arc<dyn Vm>> {
        refuse_share(spec)?;
        Ok(self.boot_vm(spec).await?)
    }

    async fn restore(&self, spec: &VmSpec, snapshot_dir: &Path) -> Result<Arc<dyn Vm>> {
        refuse_share(spec)?;
        Ok(self
            .restore_vm_with(spec, snapshot_dir, &RestoreOptions::default())
            .await?)
    }
}

/// The configured path, else `$PLATINUM_CLOUD_HYPERVISOR`, else `cloud-hypervisor` on `PATH`.
/// A configured or environment path that is not a file yields `None`.
pub fn locate_binary(configured: Option<&Path>) -> Option<PathBuf> {
    let explicit = configured.map(Path::to_path_buf).or_else(|| {
        std::env::var_os(CLOUD_HYPERVISOR_ENV)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    });
    match explicit {
        Some(path) => path.is_file().then_some(path),
        None => find_in_path(CLOUD_HYPERVISOR_PROGRAM),
    }
}

/// Runs `<binary> --version` and checks it is v53 or later; the reason in words when not.
pub fn usable_version(binary: &Path) -> std::result::Result<ChVersion, String> {
    let output = std::process::Command::new(binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("{} --version failed: {e}", binary.display()))?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let version = parse_version(&text).ok_or_else(|| {
        format!(
            "{} --version printed {text:?}, not `cloud-hypervisor vN.M…`",
            binary.display()
        )
    })?;
    if version.major < MIN_MAJOR_VERSION {
        return Err(format!(
            "{} is {}, Platinum needs v{MIN_MAJOR_VERSION} or later",
            binary.display(),
            version.text
        ));
    }
    Ok(version)
}

/// Parses `cloud-hypervisor v53.0.0` (or `v53.0-246-gae44c297`, a development build).
pub fn parse_version(line: &str) -> Option<ChVersion> {
    let first = line.lines().next()?.trim();
    let token = first.split_whitespace().find_map(|t| {
        t.strip_prefix('v')
            .filter(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
    })?;
    let mut numbers = token.split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some(ChVersion {
        major,
        minor,
        text: first.to_string(),
    })
}

/// The spec with the vsock transport, logging when that overrides the spec (module docs).
fn with_vsock(spec: &VmSpec) -> VmSpec {
    let mut spec = spec.clone();
    if spec.transport != TransportKind::Vsock {
        warn!(vm = %spec.id, requested = ?spec.transport, "Cloud Hypervisor has no virtio-serial host socket; using the vsock transport");
        spec.transport = TransportKind::Vsock;
    }
    spec
}

/// Pairs the snapshot's shares with the new sockets; every share needs one, no extra allowed.
fn new_shares(old: &[FsSpec], sockets: &BTreeMap<String, PathBuf>) -> Result<Vec<FsSpec>> {
    if let Some(extra) = sockets.keys().find(|id| !old.iter().any(|f| &f.id == *id)) {
        return Err(Error::Invalid(format!(
            "restore names a socket for virtio-fs share {extra}, which the snapshot does not have"
        )));
    }
    old.iter()
        .map(|share| {
            let socket = sockets.get(&share.id).ok_or_else(|| {
                Error::Invalid(format!(
                    "the snapshot has virtio-fs share {} (tag {}); start a virtiofsd for it and pass its socket",
                    share.id, share.tag
                ))
            })?;
            spec::check_path(&format!("virtio-fs share {}", share.id), socket)?;
            Ok(FsSpec {
                socket: socket.clone(),
                ..share.clone()
            })
        })
        .collect()
}

/// `vm.info` must report `Running`.
async fn expect_running(api: &ApiClient) -> Result<()> {
    let info = api.info().await?;
    if info.state == ChVmState::Running {
        Ok(())
    } else {
        Err(Error::VmmStart(format!(
            "cloud-hypervisor reports the VM {:?}, not Running",
            info.state
        )))
    }
}

/// Adds the VMM's log tail to a start failure; when the VMM is gone, the failure is a `VmmStart`.
fn with_log_tail(error: Error, paths: &ChPaths, exited: bool) -> Error {
    let tail = console::tail(&paths.log, LOG_TAIL_LINES).unwrap_or_default();
    match error {
        Error::VmmStart(msg) => Error::VmmStart(format!("{msg}; cloud-hypervisor log:\n{tail}")),
        other if exited => Error::VmmStart(format!(
            "{other}; cloud-hypervisor exited. Its log:\n{tail}"
        )),
        other => other,
    }
}

/// Kills a half-started VMM and removes its runtime files.
async fn teardown(process: &ChildProcess, paths: &ChPaths) {
    if let Err(e) = process.kill(Duration::from_secs(2)).await {
        warn!(error = %e, "killing cloud-hypervisor after a failed start failed");
    }
    paths.remove_runtime_files();
}

/// Removes a restore's rewritten source; a leftover is harmless (the next restore replaces it).
fn discard_source(paths: &ChPaths) {
    if let Err(e) = snapshot::remove_source(&paths.restore_source) {
        warn!(error = %e, "could not remove the restore source directory");
    }
}

/// This driver does not run virtiofsd for a spec's host share ([`Vmm::serves_shares`] says
/// so); a caller that asks anyway is told, not silently given a VM without it.
fn refuse_share(spec: &VmSpec) -> Result<()> {
    match &spec.share {
        Some(share) => Err(crate::error::Error::Unsupported(format!(
            "the Cloud Hypervisor driver does not serve host shares ({})",
            share.display()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse() {
        let v = parse_version("cloud-hypervisor v53.0.0\n").expect("release");
        assert_eq!((v.major, v.minor), (53, 0));
        assert_eq!(v.text, "cloud-hypervisor v53.0.0");
        let dev = parse_version("cloud-hypervisor v53.0-246-gae44c297").expect("dev build");
        assert_eq!((dev.major, dev.minor), (53, 0));
        assert_eq!(
            parse_version("cloud-hypervisor v100.2.1").map(|v| v.major),
            Some(100)
        );
        assert!(parse_version("cloud-hypervisor").is_none());
        assert!(parse_version("qemu 7.2").is_none());
        assert!(parse_version("").is_none());
    }

    /// A fake binary printing `output`. A child process writes it, so no writable descriptor of
    /// it can leak into a concurrently forked test child and make `exec` fail with ETXTBSY.
    fn script(dir: &Path, output: &str) -> PathBuf {
        let path = dir.join("cloud-hypervisor");
        let status = std::process::Command::new("/bin/sh")
            .args([
                "-c",
                "printf '#!/bin/sh\necho \"%s\"\n' \"$1\" > \"$2\" && chmod 755 \"$2\"",
            ])
            .args(["sh", output])
            .arg(&path)
            .status()
            .expect("sh");
        assert!(status.success());
        path
    }

    #[test]
    fn old_or_unknown_binaries_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = script(dir.path(), "cloud-hypervisor v52.0.0");
        let err = usable_version(&old).expect_err("v52");
        assert!(err.contains("v53 or later"), "{err}");
        let config = CloudHypervisorConfig {
            binary: Some(old),
            ..CloudHypervisorConfig::default()
        };
        match CloudHypervisorVmm::new(config) {
            Err(Error::MissingProgram { hint, .. }) => {
                assert!(hint.contains("install-cloud-hypervisor.sh"), "{hint}")
            }
            other => panic!("expected MissingProgram, got {other:?}"),
        }
        let odd = script(dir.path(), "something else");
        assert!(usable_version(&odd).expect_err("odd").contains("printed"));
    }

    #[test]
    fn a_current_binary_is_accepted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = CloudHypervisorConfig {
            binary: Some(script(dir.path(), "cloud-hypervisor v53.0.0")),
            ..CloudHypervisorConfig::default()
        };
        let vmm = CloudHypervisorVmm::new(config).expect("driver");
        assert_eq!(vmm.version().major, 53);
        assert_eq!(
            (vmm.kind(), vmm.accel()),
            (VmmKind::CloudHypervisor, Accel::Kvm)
        );
    }

    #[test]
    fn a_configured_path_that_does_not_exist_is_not_found() {
        assert_eq!(locate_binary(Some(Path::new("/nonexistent/ch"))), None);
    }

    #[test]
    fn virtio_serial_specs_run_with_vsock() {
        let spec = crate::vmm::spec::tests::spec();
        assert_eq!(spec.transport, TransportKind::VirtioSerial);
        assert_eq!(with_vsock(&spec).transport, TransportKind::Vsock);
    }

    #[test]
    fn restored_shares_need_exactly_the_snapshot_ids() {
        let old = vec![FsSpec {
            id: "fs0".into(),
            tag: "work".into(),
            socket: "/old/fs.sock".into(),
        }];
        let mut sockets = BTreeMap::new();
        assert!(
            matches!(new_shares(&old, &sockets), Err(Error::Invalid(msg)) if msg.contains("fs0"))
        );
        sockets.insert("fs0".to_string(), PathBuf::from("/new/fs.sock"));
        let shares = new_shares(&old, &sockets).expect("paired");
        assert_eq!(shares[0].socket, PathBuf::from("/new/fs.sock"));
        assert_eq!(shares[0].tag, "work");
        sockets.insert("fs9".to_string(), PathBuf::from("/new/fs9.sock"));
        assert!(
            matches!(new_shares(&old, &sockets), Err(Error::Invalid(msg)) if msg.contains("fs9"))
        );
    }
}
