//! [`QemuVmm`]: the QEMU driver behind the [`Vmm`] trait.
//!
//! Starting a VM, step by step (the same for boot and restore):
//! 1. validate the spec and check that the VM directory, kernel, initramfs and disks exist;
//! 2. remove stale sockets from an earlier run in the same directory; with a memory file, create
//!    it empty (boot) or put the snapshot's clone there (restore);
//! 3. start the helper daemons (vhost-device-vsock for the vsock transport, virtiofsd for a host
//!    share) and wait for their vhost-user sockets;
//! 4. spawn QEMU in its own process group, output appended to `<dir>/qemu.log`;
//! 5. poll the QMP socket until it negotiates (bounded), failing fast with the log tail if QEMU
//!    exits meanwhile;
//! 6. connect the console reader ([`console::ConsoleCapture`]: the guest's serial console goes
//!    to a socket, and from there into `console.log`, capped at [`console::CONSOLE_LOG_CAP`]),
//!    which runs until QEMU exits;
//! 7. boot: `cont` (QEMU was started with `-S`, so no console output is lost before step 6),
//!    check `query-status` says running. Restore: `migrate-incoming` the snapshot's state
//!    file, wait for completion, `cont`.
//!
//! Any failure after step 3 kills what was started and removes the sockets before returning, so
//! a failed start leaves nothing running.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tracing::{info, warn};

use crate::accel::{self, AccelChoice};
use crate::console;
use crate::error::{Error, IoContext, Result};
use crate::process::{ChildProcess, ProcessSpec, find_in_path};
use crate::vmm::{
    Accel, GuestEndpoint, TransportKind, Vm, VmInfo, VmSpec, Vmm, VmmKind, manifest, spec,
};
use platinum_protocol::VSOCK_PORT;

use super::daemon::Helpers;
use super::paths::{self, VmPaths};
use super::qmp::Qmp;
use super::vm::{Parts, QemuVm};
use super::{cmdline, snapshot};
use super::{virtiofsd, vsock_daemon};

/// Default QEMU binary name.
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";
/// Default vhost-device-vsock binary name.
pub const VSOCK_PROGRAM: &str = "vhost-device-vsock";

/// Poll interval while waiting for the QMP socket.
const POLL: Duration = Duration::from_millis(20);
/// Log lines quoted when a start fails.
const LOG_TAIL_LINES: usize = 30;

/// Settings of the QEMU driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// QEMU binary; `qemu-system-x86_64` on `PATH` when `None`.
    pub qemu: Option<PathBuf>,
    /// vhost-device-vsock binary; `PATH`, then `~/.cargo/bin`, when `None`.
    pub vhost_device_vsock: Option<PathBuf>,
    /// virtiofsd binary (for host shares); `PATH`, then `~/.cargo/bin`, when `None`.
    pub virtiofsd: Option<PathBuf>,
    /// Accelerator; detected with [`accel::detect`] when `None`.
    pub accel: Option<AccelChoice>,
    /// Bound on steps 3-5 (helpers up, QMP answering).
    pub start_timeout: Duration,
    /// Bound on each QMP command.
    pub qmp_timeout: Duration,
    /// Bound on saving or loading a snapshot.
    pub snapshot_timeout: Duration,
    /// When this process is root, boot QEMU so that it drops to a uid of its own per sandbox
    /// ([`cmdline::unprivileged_id`]) before the guest runs. Restored VMs too: snapshots are
    /// written and read through descriptors the host opens and hands over (`add-fd`).
    pub unprivileged: bool,
}

impl Default for QemuConfig {
    fn default() -> Self {
        QemuConfig {
            qemu: None,
            vhost_device_vsock: None,
            virtiofsd: None,
            accel: None,
            start_timeout: Duration::from_secs(15),
            qmp_timeout: Duration::from_secs(30),
            snapshot_timeout: Duration::from_secs(600),
            unprivileged: false,
        }
    }
}

/// The QEMU driver.
#[derive(Debug, Clone)]
pub struct QemuVmm {
    qemu: PathBuf,
    vhost_device_vsock: Option<PathBuf>,
    virtiofsd: Option<PathBuf>,
    accel: AccelChoice,
    /// Kernel arguments that give TCG guests a real clock ([`super::tsc`]).
    tcg_clock: Option<&'static str>,
    /// `qemu-system-x86_64 --version`'s number (`10.0.2`), or `unknown`.
    version: String,
    config: QemuConfig,
}

/// A QEMU process that answers QMP, before it becomes a [`QemuVm`].
struct Started {
    paths: VmPaths,
    qemu: Arc<ChildProcess>,
    helpers: Arc<Helpers>,
    qmp: Qmp,
    /// How long cloning the snapshot's RAM file took (a restore into a RAM file).
    memory_placed: Option<Duration>,
}

impl QemuVmm {
    /// Resolves the binaries and the accelerator.
    pub fn new(config: QemuConfig) -> Result<QemuVmm> {
        let qemu = match &config.qemu {
            Some(path) if path.is_file() => path.clone(),
            Some(path) => return Err(missing_qemu(&path.display().to_string())),
            None => find_in_path(QEMU_PROGRAM).ok_or_else(|| missing_qemu(QEMU_PROGRAM))?,
        };
        let vhost_device_vsock = match &config.vhost_device_vsock {
            Some(path) => Some(path.clone()),
            None => find_cargo_program(VSOCK_PROGRAM),
        };
        let virtiofsd = match &config.virtiofsd {
            Some(path) => Some(path.clone()),
            None => find_cargo_program(virtiofsd::PROGRAM),
        };
        let accel = match &config.accel {
            Some(choice) => choice.clone(),
            None => accel::detect()?,
        };
        let tcg_clock = match accel.accel {
            Accel::Tcg => super::tsc::tcg_clock_args(),
            Accel::Kvm => None,
        };
        let version = qemu_version(&qemu);
        info!(qemu = %qemu.display(), %version, accel = ?accel.accel, reason = %accel.reason, ?tcg_clock, "QEMU driver ready");
        Ok(QemuVmm {
            qemu,
            vhost_device_vsock,
            virtiofsd,
            accel,
            tcg_clock,
            version,
            config,
        })
    }

    /// The accelerator decision with its reason (for `platinum doctor`).
    pub fn accel_choice(&self) -> &AccelChoice {
        &self.accel
    }

    /// The QEMU binary in use.
    pub fn qemu_program(&self) -> &Path {
        &self.qemu
    }

    /// Boots like [`Vmm::boot`] but returns the concrete VM.
    pub async fn boot_vm(&self, spec: &VmSpec) -> Result<Arc<QemuVm>> {
        let started = self.start(spec, None).await?;
        let checked = async {
            started.qmp.run("cont", None).await?;
            let status = started.qmp.query_status().await?;
            if status.running {
                Ok(())
            } else {
                Err(Error::VmmStart(format!(
                    "QEMU started but its VM is `{}`, not running",
                    status.status
                )))
            }
        }
        .await;
        self.finish(spec, started, checked).await
    }

    /// Restores like [`Vmm::restore`] but returns the concrete VM.
    pub async fn restore_vm(&self, spec: &VmSpec, snapshot_dir: &Path) -> Result<Arc<QemuVm>> {
        snapshot::check_dir(snapshot_dir)?;
        let manifest = manifest::read_manifest(snapshot_dir, VmmKind::Qemu)?;
        manifest::check_layout(&manifest.spec, spec)?;
        if !snapshot::state_path(snapshot_dir).is_file() {
            return Err(Error::Invalid(format!(
                "snapshot {} has no {}",
                snapshot_dir.display(),
                snapshot::STATE_FILE
            )));
        }
        let started = self.start(spec, Some(snapshot_dir)).await?;
        let loaded = async {
            snapshot::load(
                &started.qmp,
                snapshot_dir,
                started.memory_placed,
                self.config.snapshot_timeout,
            )
            .await?;
            let status = started.qmp.query_status().await?;
            if !status.running {
                started.qmp.run("cont", None).await?;
            }
            Ok(())
        }
        .await;
        self.finish(spec, started, loaded).await
    }

    /// Turns a started QEMU into a VM, or tears it down if `checked` failed.
    async fn finish(
        &self,
        spec: &VmSpec,
        started: Started,
        checked: Result<()>,
    ) -> Result<Arc<QemuVm>> {
        if let Err(e) = checked {
            let e = with_log_tail(e, &started.paths, started.qemu.try_exit().is_some());
            teardown(&started.qemu, &started.helpers, &started.paths).await;
            return Err(e);
        }
        let guest = match spec.transport {
            TransportKind::VirtioSerial => GuestEndpoint::VirtioSerial {
                socket: started.paths.agent.clone(),
            },
            TransportKind::Vsock => GuestEndpoint::HybridVsock {
                socket: started.paths.vsock.clone(),
                port: VSOCK_PORT,
            },
        };
        let info = VmInfo {
            vmm: VmmKind::Qemu,
            accel: self.accel.accel,
            pid: started.qemu.pid(),
            guest,
            devices: cmdline::describe_devices(spec, &started.paths),
        };
        info!(vm = %spec.id, pid = info.pid, "VM running");
        Ok(QemuVm::new(Parts {
            info,
            spec: spec.clone(),
            paths: started.paths,
            qemu: started.qemu,
            helpers: started.helpers,
            qmp: started.qmp,
            snapshot_timeout: self.config.snapshot_timeout,
        }))
    }

    /// Steps 1-6 of the module docs: a VM that boots (`from` is `None`) or waits for the state
    /// of the snapshot in `from`. A RAM file is made fresh for a boot and cloned from the
    /// snapshot for a restore.
    async fn start(&self, spec: &VmSpec, from: Option<&Path>) -> Result<Started> {
        let paths = paths::validate(spec)?;
        spec::check_inputs(spec)?;
        let memory_placed = match (&spec.memory_file, from) {
            (None, _) => None,
            (Some(file), None) => {
                snapshot::fresh_memory(file, spec.memory_mib)?;
                None
            }
            (Some(file), Some(dir)) => Some(snapshot::place_memory(dir, file).await?),
        };
        let incoming = from.is_some();
        paths.remove_runtime_files();
        let console_socket = console::socket_path(&paths.dir);
        remove_stale(&console_socket);
        let deadline = Instant::now() + self.config.start_timeout;

        let helpers = Arc::new(self.start_helpers(spec, &paths).await?);

        let mut args = cmdline::build(spec, &paths, self.accel.accel, self.tcg_clock, incoming);
        let mut inherit = Vec::new();
        if self.config.unprivileged && nix::unistd::geteuid().is_root() {
            cmdline::run_unprivileged(&mut args, cmdline::unprivileged_id(&spec.id));
            // Disks as descriptors: after the drop QEMU can reopen them (a migration does)
            // but open no path.
            let (fds, held) = open_disk_fds(spec)?;
            cmdline::use_disk_fds(&mut args, spec, &fds);
            inherit = held;
        }
        let process = ProcessSpec {
            name: "qemu".to_string(),
            program: self.qemu.clone(),
            args,
            log: paths.qemu_log.clone(),
            inherit,
        };
        let qemu = match ChildProcess::spawn(&process) {
            Ok(child) => Arc::new(child),
            Err(e) => {
                helpers.kill_all().await;
                paths.remove_runtime_files();
                return Err(e);
            }
        };

        let connected = async {
            let qmp = self.connect_qmp(&qemu, &paths, deadline).await?;
            // QEMU created every chardev socket before QMP answered.
            let left = deadline.saturating_duration_since(Instant::now());
            let capture = console::ConsoleCapture::connect(
                &console_socket,
                &spec.console_log,
                console::CONSOLE_LOG_CAP,
                left.max(Duration::from_secs(1)),
            )
            .await?;
            Ok::<_, Error>((qmp, capture))
        }
        .await;
        match connected {
            Ok((qmp, capture)) => {
                let (waiter, id) = (qemu.clone(), spec.id.clone());
                tokio::spawn(async move {
                    let log = capture
                        .run(async move {
                            waiter.wait().await;
                        })
                        .await;
                    if log.dropped() > 0 {
                        info!(vm = %id, dropped = log.dropped(), "console log was capped");
                    }
                });
                Ok(Started {
                    paths,
                    qemu,
                    helpers,
                    qmp,
                    memory_placed,
                })
            }
            Err(e) => {
                let e = with_log_tail(e, &paths, qemu.try_exit().is_some());
                teardown(&qemu, &helpers, &paths).await;
                Err(e)
            }
        }
    }

    /// Starts the helper daemons `spec` needs: vhost-device-vsock for the vsock transport,
    /// virtiofsd for a share. One that fails stops the others.
    async fn start_helpers(&self, spec: &VmSpec, paths: &VmPaths) -> Result<Helpers> {
        let timeout = self.config.start_timeout;
        let mut helpers = Helpers::default();
        if spec.transport == TransportKind::Vsock {
            let program =
                self.vhost_device_vsock
                    .as_deref()
                    .ok_or_else(|| Error::MissingProgram {
                        program: VSOCK_PROGRAM.to_string(),
                        hint: "cargo install vhost-device-vsock".to_string(),
                    })?;
            helpers.vsock =
                Some(vsock_daemon::start(program, &spec.id, spec.vsock_cid, paths, timeout).await?);
        }
        if let Some(share) = &spec.share {
            let started = match self.virtiofsd.as_deref() {
                Some(program) => virtiofsd::start(program, share, paths),
                None => Err(Error::MissingProgram {
                    program: virtiofsd::PROGRAM.to_string(),
                    hint: "cargo install virtiofsd".to_string(),
                }),
            };
            match started {
                Ok(daemon) => helpers.virtiofsd = Some(daemon),
                Err(e) => {
                    helpers.kill_all().await;
                    return Err(e);
                }
            }
        }
        Ok(helpers)
    }

    /// Polls the QMP socket until it negotiates, QEMU exits, or the deadline passes.
    async fn connect_qmp(
        &self,
        qemu: &ChildProcess,
        paths: &VmPaths,
        deadline: Instant,
    ) -> Result<Qmp> {
        loop {
            if let Some(exit) = qemu.try_exit() {
                return Err(Error::VmmStart(format!(
                    "QEMU exited during start ({})",
                    exit.describe()
                )));
            }
            if paths.qmp.exists() {
                match Qmp::connect(&paths.qmp, self.config.qmp_timeout).await {
                    Ok(qmp) => return Ok(qmp),
                    Err(e) if Instant::now() >= deadline => return Err(e),
                    Err(_) => {}
                }
            }
            if Instant::now() >= deadline {
                return Err(Error::VmmStart(format!(
                    "QMP socket {} did not answer within {:?}",
                    paths.qmp.display(),
                    self.config.start_timeout
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

#[async_trait]
impl Vmm for QemuVmm {
    fn kind(&self) -> VmmKind {
        VmmKind::Qemu
    }

    fn accel(&self) -> Accel {
        self.accel.accel
    }

    /// QEMU's version and the machine layout's revision (`10.0.2+m3`): a snapshot restores
    /// only into the same QEMU and the same machine.
    fn version(&self) -> String {
        format!("{}+m{}", self.version, super::cmdline::MACHINE_REVISION)
    }

    /// When virtiofsd was found.
    fn serves_shares(&self) -> bool {
        self.virtiofsd.is_some()
    }

    async fn boot(&self, spec: &VmSpec) -> Result<Arc<dyn Vm>> {
        Ok(self.boot_vm(spec).await?)
    }

    async fn restore(&self, spec: &VmSpec, snapshot_dir: &Path) -> Result<Arc<dyn Vm>> {
        Ok(self.restore_vm(spec, snapshot_dir).await?)
    }
}

fn missing_qemu(program: &str) -> Error {
    Error::MissingProgram {
        program: program.to_string(),
        hint: "apt-get install -t bookworm-backports qemu-system-x86".to_string(),
    }
}

/// `PATH`, then `~/.cargo/bin` (where `cargo install <program>` puts it).
fn find_cargo_program(program: &str) -> Option<PathBuf> {
    find_in_path(program).or_else(|| {
        let home = std::env::var_os("HOME")?;
        let path = Path::new(&home).join(".cargo/bin").join(program);
        path.is_file().then_some(path)
    })
}

/// Adds QEMU's log tail to a start failure; when QEMU is gone, the failure is a `VmmStart`.
fn with_log_tail(error: Error, paths: &VmPaths, exited: bool) -> Error {
    let tail = console::tail(&paths.qemu_log, LOG_TAIL_LINES).unwrap_or_default();
    match error {
        Error::VmmStart(msg) => Error::VmmStart(format!("{msg}; QEMU log:\n{tail}")),
        other if exited => Error::VmmStart(format!("{other}; QEMU exited. QEMU log:\n{tail}")),
        other => other,
    }
}

/// Kills a half-started VM and its daemons and removes its sockets.
async fn teardown(qemu: &ChildProcess, helpers: &Helpers, paths: &VmPaths) {
    if let Err(e) = qemu.kill(Duration::from_secs(2)).await {
        warn!(error = %e, "killing QEMU after a failed start failed");
    }
    helpers.kill_all().await;
    paths.remove_runtime_files();
    remove_stale(&console::socket_path(&paths.dir));
}

/// Removes a socket an earlier QEMU left behind (missing is fine).
fn remove_stale(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "removing a stale socket failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_qemu_that_does_not_exist_is_a_missing_program() {
        let config = QemuConfig {
            qemu: Some(PathBuf::from("/nonexistent/qemu-system-x86_64")),
            accel: Some(AccelChoice {
                accel: Accel::Tcg,
                reason: "test".to_string(),
                forced: true,
            }),
            ..QemuConfig::default()
        };
        match QemuVmm::new(config) {
            Err(Error::MissingProgram { hint, .. }) => {
                assert!(hint.contains("bookworm-backports"), "{hint}")
            }
            other => panic!("expected MissingProgram, got {other:?}"),
        }
    }
}

/// The number in `QEMU emulator version 10.0.2 (Debian ...)`, or `unknown`.
fn qemu_version(qemu: &Path) -> String {
    std::process::Command::new(qemu)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| parse_qemu_version(&String::from_utf8_lossy(&out.stdout)))
        .unwrap_or_else(|| "unknown".into())
}

fn parse_qemu_version(text: &str) -> Option<String> {
    let rest = text.lines().next()?.split("version ").nth(1)?;
    rest.split_whitespace().next().map(str::to_owned)
}

#[cfg(test)]
mod version_tests {
    #[test]
    fn reads_the_version_number() {
        assert_eq!(
            super::parse_qemu_version(
                "QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)\nCopyright"
            )
            .as_deref(),
            Some("10.0.2")
        );
        assert_eq!(super::parse_qemu_version("nonsense"), None);
    }
}

/// Opens `disk`'s image read-only and, unless the disk is read-only, read-write: the pair of
/// descriptors an unprivileged QEMU is given for it.
pub(super) fn open_image(
    disk: &crate::vmm::DiskSpec,
) -> Result<(std::os::fd::OwnedFd, Option<std::os::fd::OwnedFd>)> {
    let open = |write: bool| -> Result<std::os::fd::OwnedFd> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(&disk.path)
            .ctx(|| format!("opening disk {}", disk.path.display()))?;
        Ok(file.into())
    };
    let ro = open(false)?;
    let rw = if disk.readonly {
        None
    } else {
        Some(open(true)?)
    };
    Ok((ro, rw))
}

/// Opens every disk of `spec` read-write (unless read-only) and read-only, for
/// [`cmdline::use_disk_fds`]; returns the fd sets and the descriptors to keep open until QEMU
/// has them.
fn open_disk_fds(spec: &VmSpec) -> Result<(Vec<cmdline::DiskFds>, Vec<Arc<std::os::fd::OwnedFd>>)> {
    use std::os::fd::AsRawFd;
    let mut sets = Vec::new();
    let mut held = Vec::new();
    for (i, disk) in spec.disks.iter().enumerate() {
        let (ro, rw) = open_image(disk)?;
        let (ro, rw) = (Arc::new(ro), rw.map(Arc::new));
        sets.push(cmdline::DiskFds {
            set: i as u32 + 1,
            rw: rw.as_ref().map(|f| f.as_raw_fd()),
            ro: ro.as_raw_fd(),
        });
        held.push(ro);
        held.extend(rw);
    }
    Ok((sets, held))
}
