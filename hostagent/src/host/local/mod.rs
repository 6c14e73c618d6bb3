//! The in-process host agent: one host, VMs as child processes of this server.
//!
//! Layout under the data directory, one directory per sandbox and nothing shared between them:
//!
//! ```text
//! <data>/sandboxes/<id>/
//!     sandbox.json     what this VM is (spec, env, template): lets `start` boot it again
//!     rootfs.disk      copy-on-write clone of the template's root filesystem
//!     console.log      the guest's serial console
//!     qmp.sock agent.sock vsock.sock vmm.pid qemu.log ...   the VMM's runtime files
//! ```
//! `destroy` removes the directory; nothing else of a sandbox exists on the host.
//!
//! Each running VM has a slot with its `Vm`, its guest session (reconnected on demand), and three
//! watchers: one reports a VMM that exits without being asked; one pings the agent and, when it
//! stops answering, gives up on the VM; one gives up on the VM when its guest breaks the protocol
//! (a hostile or broken agent: see `platinum_protocol::mux`). Giving up kills the VMM, frees the
//! slot and the TAP (the lease and the disk stay, so `start` can boot it again) and reports a
//! [`HostEvent`], which the engine turns into `error`. All watchers stop when the slot is dropped.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, broadcast};
use tokio::task::JoinHandle;

mod archive;
mod layers;
mod share;
mod snapshot;
mod volumes;

use super::snapshot::{AfterSave, RestoreVm, SaveReport, disk_file_name};
use super::{CreateVm, HostAgent, HostEvent, HostInfo, VmStatus};
use crate::archive::{
    Archive, ArchiveDir, Archived, ObjectStore, ObjectStoreConfig, Restored, open_store,
};
use crate::broker::{Broker, BrokerOptions, BrokeredEgress, HostCa, SecretRegistry};
use crate::console;
use crate::disk::{CloneMethod, DiskOptions, create_disk_from};
use crate::error::{Error, IoContext, Result};
use crate::guest::GuestClient;
use crate::host::memory::{MEMORY_FILE_NAME, MemoryBacking, resolve as resolve_memory};
use crate::image::oci::{ImportImage, ImportedImage, RegistryOptions};
use crate::image::{
    ConsoleLog, GuestImage, ImageCache, Progress, builtin_templates, kernel_cmdline, template,
};
use crate::net::{EgressRules, Lease, Network};
use crate::share::{ByteStream, ShareEntry};
use crate::transport;
use crate::vmm::{DiskFormat, NetSpec, SHARE_TAG, TransportKind, Vm, VmSpec, Vmm};
use crate::volume_files::{VolumeAttrs, VolumeEntry};

/// Settings of the local host agent.
#[derive(Debug, Clone)]
pub struct LocalHostConfig {
    /// Data directory; sandboxes live in `<data>/sandboxes/<id>`.
    pub data_dir: PathBuf,
    /// Guest image cache.
    pub cache: ImageCache,
    /// The static guest agent binary packed into initramfs images.
    pub agent_binary: PathBuf,
    /// Default guest transport.
    pub transport: TransportKind,
    /// How root disks are cloned when reflink is impossible.
    pub disk: DiskOptions,
    /// Where guest RAM lives ([`crate::host::memory`]).
    pub memory: MemoryBacking,
    /// Kernel console verbosity.
    pub console: ConsoleLog,
    /// Interval of agent health pings.
    pub health_interval: Duration,
    /// Consecutive failed pings before an agent is reported unresponsive.
    pub health_failures: u32,
    /// How long a graceful stop may take before the VMM is killed.
    pub stop_grace: Duration,
    /// How registries are reached when images are imported.
    pub registries: RegistryOptions,
    /// Where archived sandboxes go (`None`: the directory `<data>/archive`).
    pub archive: Option<ObjectStoreConfig>,
    /// Size of each sandbox's host share, MiB (a sparse image: it takes what is stored).
    pub share_mib: u64,
    /// A PEM file of CA certificates the egress broker trusts for servers besides the host's
    /// trust store (servers on a test network).
    pub egress_extra_roots: Option<PathBuf>,
}

impl LocalHostConfig {
    /// Defaults for a data dir, cache and agent binary.
    pub fn new(data_dir: PathBuf, cache: ImageCache, agent_binary: PathBuf) -> Self {
        LocalHostConfig {
            data_dir,
            cache,
            agent_binary,
            transport: TransportKind::VirtioSerial,
            disk: DiskOptions::default(),
            memory: MemoryBacking::Auto,
            console: ConsoleLog::Quiet,
            health_interval: Duration::from_secs(10),
            health_failures: 3,
            stop_grace: Duration::from_secs(10),
            registries: RegistryOptions::default(),
            archive: None,
            share_mib: 1024,
            egress_extra_roots: None,
        }
    }
}

/// Whether a booting VM gets a network device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NetPlan {
    /// As [`CreateVm::internet`] says.
    Auto(Option<bool>),
    /// None (a snapshot taken without one must be restored without one).
    Off,
}

/// The record's file in a sandbox directory.
const RECORD_FILE: &str = "sandbox.json";
/// The guest console's log in a sandbox directory.
const CONSOLE_FILE: &str = "console.log";

/// What `sandbox.json` records about a VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct VmRecord {
    spec: VmSpec,
    template: String,
    env: BTreeMap<String, String>,
    disk_clone: String,
    /// The sandbox's network lease (kept across stop and start).
    #[serde(default)]
    lease: Option<Lease>,
    /// Kernel command line without the network parameters (which follow the lease).
    #[serde(default)]
    base_cmdline: String,
    /// The guest's memory image knows another address than `lease` (an archive restored where
    /// its old address was taken): the next restore from it gives the guest its lease again.
    #[serde(default)]
    reidentify: bool,
    /// What the sandbox may reach beyond the host (applied whenever it gets its network).
    #[serde(default)]
    egress: EgressRules,
}

struct Slot {
    record: VmRecord,
    /// The environment new guest sessions get (the record's, until `set_env` replaces it).
    env: Mutex<BTreeMap<String, String>>,
    vm: Arc<dyn Vm>,
    guest: tokio::sync::Mutex<Option<GuestClient>>,
    /// The host's egress CA (PEM) every new guest session adds to the guest's trust store.
    trust: Option<Arc<str>>,
    /// Signalled when `guest` gets a new session (the violation watcher follows it).
    guest_changed: Arc<Notify>,
    /// Set before the host itself ends the VM, so the exit watcher stays quiet.
    expected_exit: AtomicBool,
    paused: AtomicBool,
    boot_ms: u64,
    agent_version: String,
    kernel: String,
    watchers: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        for w in self.watchers.lock().expect("slot watchers").drain(..) {
            w.abort();
        }
    }
}

/// The in-process [`HostAgent`].
pub struct LocalHost {
    me: Weak<LocalHost>,
    config: LocalHostConfig,
    vmm: Arc<dyn Vmm>,
    network: Arc<Network>,
    info: HostInfo,
    /// Guest RAM in a file in each new sandbox's directory.
    memory_in_file: bool,
    images: Mutex<HashMap<String, GuestImage>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    events: broadcast::Sender<HostEvent>,
    /// Where archives go.
    archive_store: Arc<dyn ObjectStore>,
    /// The secrets each sandbox's brokered requests may carry (`crate::broker`).
    secrets: Arc<SecretRegistry>,
    /// The egress broker and this host's CA; `None` when the CA could not be read or made.
    broker: Option<Arc<Broker>>,
}

impl LocalHost {
    /// Creates the host agent over a VMM driver. Kills VMMs left behind by an earlier run of this
    /// server (their sandboxes' directories and disks stay).
    pub fn new(
        config: LocalHostConfig,
        vmm: Arc<dyn Vmm>,
        network: Arc<Network>,
        reason: String,
    ) -> Result<Arc<Self>> {
        let sandboxes = config.data_dir.join("sandboxes");
        crate::private_file::create_dir(&sandboxes)
            .ctx(|| format!("creating {}", sandboxes.display()))?;
        kill_leftovers(&sandboxes);
        layers::remove_unfinished(&config.data_dir);
        archive::remove_unfinished(&config.data_dir);
        let archive_store =
            open_store(
                &config
                    .archive
                    .clone()
                    .unwrap_or_else(|| ObjectStoreConfig::Dir {
                        path: config.data_dir.join("archive"),
                    }),
            )?;
        tracing::info!(store = %archive_store.describe(), "archives");
        for (id, record) in stored_records(&sandboxes) {
            if let Some(lease) = record.lease {
                network.adopt(&id, lease);
            }
        }
        let (cpu_model, cpu_flags) = super::cpu::describe();
        let memory = resolve_memory(config.memory, vmm.kind(), &sandboxes)?;
        tracing::info!(in_file = memory.in_file, reason = %memory.reason, "guest memory");
        let info = HostInfo {
            id: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
            vmm: vmm.kind(),
            accel: vmm.accel(),
            reason,
            transport: config.transport,
            network_unavailable: network.unavailable_reason().map(str::to_owned),
            vmm_version: vmm.version(),
            cpu_model,
            cpu_flags,
            memory: memory.reason,
        };
        let (events, _) = broadcast::channel(256);
        let broker = match egress_broker(&config) {
            Ok(b) => Some(Arc::new(b)),
            Err(e) => {
                tracing::warn!(error = %e, "no egress CA: secrets cannot be brokered on this host");
                None
            }
        };
        // The egress proxy's decision for a TLS connection from a sandbox whose ClientHello
        // names `sni`: the broker and what it does to the requests when the sandbox has secrets
        // bound to that name or header rules for it, `None` to splice it untouched.
        let secrets: Arc<SecretRegistry> = Arc::default();
        if let Some(broker) = &broker {
            let (registry, broker) = (secrets.clone(), broker.clone());
            network.set_brokering(Arc::new(move |id: &str, sni: &str| {
                registry.plan(id, sni).map(|plan| (broker.clone(), plan))
            }));
        }
        Ok(Arc::new_cyclic(|me| LocalHost {
            me: me.clone(),
            config,
            vmm,
            network,
            info,
            memory_in_file: memory.in_file,
            images: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            events,
            archive_store,
            secrets,
            broker,
        }))
    }

    /// The CA certificate (PEM) sandboxes trust, when this host has one.
    fn trust_pem(&self) -> Option<&str> {
        self.broker.as_ref().map(|b| b.ca().certificate_pem())
    }

    /// Removes the TAPs of sandboxes whose VM is not running (all of them right after start: an
    /// earlier server that died without stopping its VMs leaves persistent TAPs behind). Leases
    /// stay, so `start` gets the same address again.
    pub async fn release_stale_taps(&self) {
        let sandboxes = self.config.data_dir.join("sandboxes");
        for (id, record) in stored_records(&sandboxes) {
            if record.lease.is_none() || self.slots.lock().expect("host slots").contains_key(&id) {
                continue;
            }
            if let Err(e) = self.network.detach(&id, false).await {
                tracing::debug!(sandbox = %id, error = %e, "no stale TAP to remove");
            }
        }
    }

    fn dir(&self, id: &str) -> Result<PathBuf> {
        let valid = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        if !valid {
            return Err(Error::PathEscape(PathBuf::from(id)));
        }
        Ok(self.config.data_dir.join("sandboxes").join(id))
    }

    /// Fails with [`Error::VmState`] (the sandbox should be `expected`) while a VM of sandbox
    /// `id` runs.
    fn require_no_vm(&self, id: &str, expected: &str) -> Result<()> {
        if self.slots.lock().expect("host slots").contains_key(id) {
            return Err(Error::VmState {
                expected: expected.into(),
                actual: "running".into(),
            });
        }
        Ok(())
    }

    /// Points `spec` at sandbox `id`'s directory `dir` on this host: its console log, disks
    /// (`<disk id>.disk`) and memory file (where it has one) there, and the kernel command line
    /// of `id` without network parameters (a boot adds those), which it returns.
    fn place_spec(&self, spec: &mut VmSpec, id: &str, dir: &Path) -> String {
        let base_cmdline = self.base_cmdline(id, spec.share.is_some());
        spec.id = id.to_string();
        spec.dir = dir.to_path_buf();
        spec.console_log = dir.join(CONSOLE_FILE);
        spec.cmdline = base_cmdline.clone();
        spec.net = None;
        for disk in spec.disks.iter_mut().filter(|d| d.volume_slot.is_none()) {
            disk.path = dir.join(disk_file_name(&disk.id));
        }
        if let Some(memory) = spec.memory_file.as_mut() {
            *memory = dir.join(MEMORY_FILE_NAME);
        }
        if let Some(share) = spec.share.as_mut() {
            *share = dir.join(share::SHARE_DIR);
        }
        base_cmdline
    }

    /// Kernel command line of sandbox `id` without its network parameters; with `share`, the
    /// guest mounts its host share.
    fn base_cmdline(&self, id: &str, share: bool) -> String {
        let share = if share {
            format!(" platinum.share={SHARE_TAG}")
        } else {
            String::new()
        };
        format!(
            "{} platinum.hostname={id}{share}",
            kernel_cmdline(self.config.console)
        )
    }

    fn slot(&self, id: &str) -> Result<Arc<Slot>> {
        self.slots
            .lock()
            .expect("host slots")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::VmState {
                expected: "running".into(),
                actual: "not running".into(),
            })
    }

    async fn image(&self, template_name: &str) -> Result<GuestImage> {
        if let Some(img) = self.images.lock().expect("host images").get(template_name) {
            return Ok(img.clone());
        }
        let tpl = template(template_name)
            .ok_or_else(|| Error::Invalid(format!("unknown template {template_name:?}")))?;
        let img = self
            .config
            .cache
            .ensure_image(&tpl, &self.config.agent_binary, &Progress::hidden())
            .await?;
        self.images
            .lock()
            .expect("host images")
            .insert(template_name.to_string(), img.clone());
        Ok(img)
    }

    /// Boots the VM of `record` (from its disk, or from a snapshot directory with `from`) and
    /// connects to its agent.
    async fn boot(
        &self,
        mut record: VmRecord,
        net: NetPlan,
        from: Option<&Path>,
    ) -> Result<VmStatus> {
        let id = record.spec.id.clone();
        if record.spec.share.is_some() {
            self.ensure_share(&record.spec.dir).await?;
        }
        match net {
            NetPlan::Auto(internet) => self.plug_network(&mut record, internet).await?,
            NetPlan::Off => {
                record.spec.net = None;
                record.spec.cmdline = record.base_cmdline.clone();
                write_record(&record)?;
            }
        }
        let booted = async {
            let mut retried = false;
            loop {
                let started = Instant::now();
                let vm = match from {
                    None => self.vmm.boot(&record.spec).await?,
                    Some(dir) => self.vmm.restore(&record.spec, dir).await?,
                };
                let deadline = if from.is_some() {
                    RESTORE_AGENT_DEADLINE
                } else {
                    BOOT_AGENT_DEADLINE
                };
                let e = match connect_agent(vm.as_ref(), &record.env, self.trust_pem(), deadline)
                    .await
                {
                    Ok(g) => return Ok((vm, g, started)),
                    Err(e) => e,
                };
                let _ = vm.kill().await;
                let e = self.boot_failure(&id, e);
                // A boot whose VM ended before the agent answered ran no user code: a guest
                // kernel that died early (say, of a fault under an emulated CPU) gets one more
                // boot. Restores are not retried: their callers fall back to a boot.
                match e {
                    Error::VmmExited(_) if from.is_none() && !retried => {
                        tracing::warn!(sandbox = %id, error = %e, "the VM ended during boot; booting it once more");
                        retried = true;
                    }
                    Error::VmmExited(m) if retried => {
                        return Err(Error::VmmExited(format!(
                            "{m} (a second boot; the first ended too)"
                        )));
                    }
                    e => return Err(e),
                }
            }
        };
        let (vm, guest, started) = match booted.await {
            Ok(v) => v,
            Err(e) => {
                if let Err(net) = self.network.detach(&id, false).await {
                    tracing::warn!(sandbox = %id, error = %net, "removing the TAP after a failed boot");
                }
                return Err(e);
            }
        };
        let boot_ms = started.elapsed().as_millis() as u64;
        let hello = guest.hello().clone();
        tracing::info!(sandbox = %id, boot_ms, agent = %hello.agent_version, "guest agent ready");
        let slot = Arc::new(Slot {
            env: Mutex::new(record.env.clone()),
            record,
            vm: vm.clone(),
            guest: tokio::sync::Mutex::new(Some(guest)),
            trust: self.trust_pem().map(Arc::from),
            guest_changed: Arc::new(Notify::new()),
            expected_exit: AtomicBool::new(false),
            paused: AtomicBool::new(false),
            boot_ms,
            agent_version: hello.agent_version,
            kernel: hello.kernel,
            watchers: Mutex::new(Vec::new()),
        });
        let watchers = vec![
            self.watch_exit(&slot),
            self.watch_health(&slot),
            self.watch_violation(&slot),
        ];
        *slot.watchers.lock().expect("slot watchers") = watchers;
        let status = self.status(&slot);
        self.slots.lock().expect("host slots").insert(id, slot);
        Ok(status)
    }

    /// Gives the VM its network device per `internet` (see [`CreateVm::internet`]) and records the
    /// lease; the kernel command line gets the guest's settings.
    async fn plug_network(&self, record: &mut VmRecord, internet: Option<bool>) -> Result<()> {
        let wanted = match internet {
            Some(w) => Some(w),
            None if self.network.unavailable_reason().is_none() => {
                Some(record.lease.as_ref().is_none_or(|l| l.internet))
            }
            None => None,
        };
        let Some(internet) = wanted else {
            record.spec.net = None;
            record.spec.cmdline = record.base_cmdline.clone();
            return Ok(());
        };
        let lease = self
            .network
            .attach(
                &record.spec.id,
                internet,
                record.lease.clone(),
                &record.egress,
            )
            .await?;
        record.spec.net = Some(NetSpec {
            tap: lease.tap.clone(),
            mac: lease.mac.clone(),
        });
        record.spec.cmdline = format!("{} {}", record.base_cmdline, lease.cmdline());
        record.lease = Some(lease);
        write_record(record)
    }

    fn status(&self, slot: &Slot) -> VmStatus {
        let info = slot.vm.info();
        VmStatus {
            id: slot.record.spec.id.clone(),
            vmm: info.vmm,
            accel: info.accel,
            pid: info.pid,
            transport: slot.record.spec.transport,
            disk_clone: slot.record.disk_clone.clone(),
            agent_version: slot.agent_version.clone(),
            kernel: slot.kernel.clone(),
            boot_ms: slot.boot_ms,
            ip: slot.record.lease.as_ref().map(|l| l.ip),
            internet: slot.record.lease.as_ref().is_some_and(|l| l.internet),
        }
    }

    fn watch_exit(&self, slot: &Arc<Slot>) -> JoinHandle<()> {
        let weak = Arc::downgrade(slot);
        let vm = slot.vm.clone();
        let host = self.me.clone();
        let id = slot.record.spec.id.clone();
        tokio::spawn(async move {
            let exit = vm.wait_exit().await;
            let (Some(slot), Some(host)) = (weak.upgrade(), host.upgrade()) else {
                return;
            };
            if slot.expected_exit.load(Ordering::SeqCst) || exit.requested {
                return;
            }
            host.slots.lock().expect("host slots").remove(&id);
            if let Some(g) = slot.guest.lock().await.take() {
                g.shutdown("VM exited");
            }
            let console_tail = host.console_tail_of(&id, 20);
            tracing::warn!(sandbox = %id, ?exit, "VM exited unexpectedly");
            let _ = host.events.send(HostEvent::VmExited {
                id,
                exit,
                console_tail,
            });
        })
    }

    /// Checks the guest every `health_interval` (a `read_clock` round trip, which also corrects
    /// its clock: [`GuestClient::keep_clock`]) and gives up on the VM after `health_failures`
    /// failures in a row.
    fn watch_health(&self, slot: &Arc<Slot>) -> JoinHandle<()> {
        let weak = Arc::downgrade(slot);
        let host = self.me.clone();
        let interval = self.config.health_interval;
        let limit = self.config.health_failures;
        tokio::spawn(async move {
            let mut failures = 0u32;
            loop {
                tokio::time::sleep(interval).await;
                let (Some(slot), Some(host)) = (weak.upgrade(), host.upgrade()) else {
                    return;
                };
                if slot.paused.load(Ordering::SeqCst) || slot.expected_exit.load(Ordering::SeqCst) {
                    failures = 0;
                    continue;
                }
                let result = match slot_guest(&slot, Duration::from_secs(5)).await {
                    // The check's round trip also keeps the guest clock on the host's.
                    Ok(g) => tokio::time::timeout(interval, g.keep_clock())
                        .await
                        .map_err(|_| Error::Timeout {
                            what: "health ping".into(),
                            seconds: interval.as_secs(),
                        }),
                    Err(e) => Err(e),
                };
                match result {
                    Ok(Ok(_)) => failures = 0,
                    Ok(Err(e)) | Err(e) => {
                        failures += 1;
                        tracing::warn!(sandbox = %slot.record.spec.id, failures, error = %e, "guest health check failed");
                        if failures >= limit && !slot.paused.load(Ordering::SeqCst) {
                            let reason = format!("{e} ({failures} health checks failed in a row)");
                            host.give_up(&slot, |id, console_tail| HostEvent::GuestUnresponsive {
                                id,
                                reason,
                                console_tail,
                            })
                            .await;
                            return;
                        }
                    }
                }
            }
        })
    }

    /// Follows the slot's guest session (also across reconnects) and gives up on the VM when the
    /// guest breaks the protocol.
    fn watch_violation(&self, slot: &Arc<Slot>) -> JoinHandle<()> {
        let weak = Arc::downgrade(slot);
        let host = self.me.clone();
        tokio::spawn(async move {
            loop {
                // No strong reference is held while waiting: dropping the slot ends this task.
                let Some(slot) = weak.upgrade() else { return };
                let notify = slot.guest_changed.clone();
                let mut changed = std::pin::pin!(notify.notified());
                changed.as_mut().enable();
                let guest = slot.guest.lock().await.clone();
                drop(slot);
                let Some(guest) = guest else {
                    changed.await;
                    continue;
                };
                tokio::select! {
                    _ = guest.closed() => {}
                    _ = changed.as_mut() => continue,
                }
                let Some(reason) = guest.violation() else {
                    // Closed for another reason (VM exit, shutdown): wait for a new session.
                    changed.await;
                    continue;
                };
                let (Some(slot), Some(host)) = (weak.upgrade(), host.upgrade()) else {
                    return;
                };
                tracing::warn!(sandbox = %slot.record.spec.id, %reason, "guest agent broke the protocol; stopping its VM");
                host.give_up(&slot, |id, console_tail| HostEvent::GuestViolation {
                    id,
                    reason: reason.to_string(),
                    console_tail,
                })
                .await;
                return;
            }
        })
    }

    /// Ends a VM the host gave up on (its guest broke the protocol or stopped answering): kills
    /// the VMM, frees the slot and the TAP (the lease and the disk stay, so `start` boots it
    /// again), then reports the event `event` builds from the id and the console tail. Does
    /// nothing when the slot is no longer this VM's (stopped, destroyed or booted again since).
    async fn give_up(&self, slot: &Arc<Slot>, event: impl FnOnce(String, String) -> HostEvent) {
        let id = slot.record.spec.id.clone();
        {
            let mut slots = self.slots.lock().expect("host slots");
            match slots.get(&id) {
                Some(current) if Arc::ptr_eq(current, slot) => {
                    slots.remove(&id);
                }
                _ => return,
            }
        }
        slot.expected_exit.store(true, Ordering::SeqCst);
        match slot.vm.kill().await {
            Ok(exit) => {
                tracing::warn!(sandbox = %id, ?exit, "killed the VM of a guest the host gave up on")
            }
            Err(e) => {
                tracing::error!(sandbox = %id, error = %e, "killing the VM of a guest the host gave up on")
            }
        }
        if let Some(g) = slot.guest.lock().await.take() {
            g.shutdown("the host gave up on this guest");
        }
        if let Err(e) = self.network.detach(&id, false).await {
            tracing::warn!(sandbox = %id, error = %e, "removing the TAP of a VM the host gave up on");
        }
        let console_tail = self.console_tail_of(&id, 20);
        let _ = self.events.send(event(id, console_tail));
    }

    /// `e` (a VM that ended or an agent that never answered during boot) with the last lines
    /// the guest printed, which say why (a kernel panic, say). The whole tail goes to the log.
    fn boot_failure(&self, id: &str, e: Error) -> Error {
        let tail = self.console_tail_of(id, 20);
        let Some(said) = console::last_words(&tail, 3, 400) else {
            return e;
        };
        tracing::warn!(sandbox = %id, error = %e, console = %tail, "boot failed; the guest console ends with");
        match e {
            Error::VmmExited(m) => Error::VmmExited(format!("{m}; the console ends: {said}")),
            Error::GuestUnreachable(m) => {
                Error::GuestUnreachable(format!("{m}; the console ends: {said}"))
            }
            other => other,
        }
    }

    fn console_tail_of(&self, id: &str, lines: usize) -> String {
        match self.dir(id) {
            Ok(dir) => console::tail(&dir.join(CONSOLE_FILE), lines).unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn take_slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots.lock().expect("host slots").remove(id)
    }
}

/// How long a booted VM's agent has to answer (a kernel boot under TCG on a busy host).
const BOOT_AGENT_DEADLINE: Duration = Duration::from_secs(120);
/// How long a restored VM's agent has to answer: it was answering when saved, so a restore that
/// is not back by then (many at once on a busy TCG host take seconds each) is broken.
const RESTORE_AGENT_DEADLINE: Duration = Duration::from_secs(60);

/// Connects to the guest agent of a booting VM: retries until it answers, the deadline passes or
/// the VMM exits.
async fn connect_agent(
    vm: &dyn Vm,
    env: &BTreeMap<String, String>,
    trust: Option<&str>,
    deadline: Duration,
) -> Result<GuestClient> {
    let endpoint = vm.info().guest.clone();
    let until = Instant::now() + deadline;
    let mut last = String::from("no attempt");
    let mut exited = std::pin::pin!(vm.wait_exit());
    loop {
        if Instant::now() >= until {
            return Err(Error::GuestUnreachable(format!(
                "agent did not answer within {}s: {last}",
                deadline.as_secs()
            )));
        }
        let attempt = async {
            let stream = transport::connect(&endpoint, Duration::from_secs(2)).await?;
            GuestClient::start(stream, hello(env, trust), Duration::from_secs(3)).await
        };
        tokio::select! {
            exit = &mut exited => {
                return Err(Error::VmmExited(format!("VM ended during boot (code {:?}, signal {:?})", exit.code, exit.signal)));
            }
            r = attempt => match r {
                Ok(g) => {
                    // `hello` set the clock, behind by its one-way trip: measure and correct.
                    if let Err(e) = g.keep_clock().await {
                        tracing::warn!(error = %e, "cannot set the guest clock");
                    }
                    return Ok(g);
                }
                Err(e @ Error::ProtocolMismatch { .. }) => return Err(e),
                Err(e) => last = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// This host's CA (made on first use, in the data directory) and the broker over it.
fn egress_broker(config: &LocalHostConfig) -> Result<Broker> {
    let ca = Arc::new(HostCa::load_or_create(&config.data_dir)?);
    let mut options = BrokerOptions::default();
    if let Some(path) = &config.egress_extra_roots {
        let pem = std::fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
        options.extra_roots = crate::broker::ca::pem_certificates(&pem)?;
    }
    Broker::new(ca, options)
}

/// The `hello` of every guest session: its environment, and the host's egress CA for its trust
/// store (at boot, reconnect and restore alike, so template snapshots and pools have it too).
fn hello(env: &BTreeMap<String, String>, trust: Option<&str>) -> platinum_protocol::Hello {
    let mut env = env.clone();
    if trust.is_some() {
        // Node.js keeps its own roots; this file is written by the agent with the CA.
        env.entry("NODE_EXTRA_CA_CERTS".into())
            .or_insert_with(|| format!("/{}", platinum_protocol::EGRESS_CA_FILE));
    }
    platinum_protocol::Hello {
        protocol: platinum_protocol::PROTOCOL_VERSION,
        // Stamped by `GuestClient::start` when it is sent.
        unix_ns: 0,
        env,
        default_user: Some("user".into()),
        trust_pem: trust.map(str::to_owned),
    }
}

/// The slot's guest session, reconnecting if the connection dropped.
async fn slot_guest(slot: &Slot, timeout: Duration) -> Result<GuestClient> {
    let mut guard = slot.guest.lock().await;
    if let Some(g) = guard.as_ref() {
        if !g.is_closed() {
            return Ok(g.clone());
        }
        // A guest that broke the protocol gets no second session; its VM is being stopped.
        if let Some(reason) = g.violation() {
            return Err(Error::GuestUnreachable(format!(
                "the guest agent broke the protocol and its VM is being stopped: {reason}"
            )));
        }
    }
    tracing::info!(sandbox = %slot.record.spec.id, "reconnecting to the guest agent");
    let env = slot.env.lock().expect("slot env").clone();
    let g = connect_agent(slot.vm.as_ref(), &env, slot.trust.as_deref(), timeout).await?;
    *guard = Some(g.clone());
    slot.guest_changed.notify_waiters();
    Ok(g)
}

/// Kills VMM and helper processes left behind by an earlier run of this server (one that died
/// without stopping them): every process whose command line names a sandbox directory.
fn kill_leftovers(sandboxes: &Path) {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return;
    };
    for entry in entries.flatten() {
        crate::process::kill_processes_mentioning(&entry.path().join(""));
    }
}

/// Writes `sandbox.json` (it holds the sandbox's environment variables: owner-only, atomic).
fn write_record(record: &VmRecord) -> Result<()> {
    let path = record.spec.dir.join(RECORD_FILE);
    let json = serde_json::to_vec_pretty(record).map_err(|e| Error::Invalid(e.to_string()))?;
    crate::private_file::write(&path, &json).ctx(|| format!("writing {}", path.display()))
}

/// Reads `sandbox.json` of sandbox `id` in `dir`.
fn read_record(dir: &Path, id: &str) -> Result<VmRecord> {
    let raw = std::fs::read(dir.join(RECORD_FILE))
        .ctx(|| format!("reading {}/{RECORD_FILE}", dir.display()))?;
    let mut record: VmRecord = serde_json::from_slice(&raw)
        .map_err(|e| Error::Invalid(format!("corrupt sandbox.json of {id}: {e}")))?;
    if record.base_cmdline.is_empty() {
        record.base_cmdline = record.spec.cmdline.clone();
    }
    Ok(record)
}

/// The `sandbox.json` records under `sandboxes`, by id (unreadable ones are skipped).
fn stored_records(sandboxes: &Path) -> Vec<(String, VmRecord)> {
    let Ok(entries) = std::fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let raw = std::fs::read(e.path().join(RECORD_FILE)).ok()?;
            Some((
                e.file_name().into_string().ok()?,
                serde_json::from_slice(&raw).ok()?,
            ))
        })
        .collect()
}

fn clone_method_name(m: CloneMethod) -> &'static str {
    match m {
        CloneMethod::Reflink => "reflink",
        CloneMethod::Qcow2Overlay => "qcow2",
        CloneMethod::SparseCopy => "copy",
    }
}

#[async_trait]
impl HostAgent for LocalHost {
    fn info(&self) -> HostInfo {
        self.info.clone()
    }

    async fn set_egress(&self, id: &str, rules: EgressRules) -> Result<()> {
        let mut record = read_record(&self.dir(id)?, id)?;
        record.egress = rules.clone();
        write_record(&record)?;
        self.network.set_egress(id, &rules).await
    }

    async fn set_secrets(&self, id: &str, egress: BrokeredEgress) -> Result<()> {
        self.dir(id)?;
        let any = !egress.is_empty();
        self.secrets.set(id, egress);
        // Its HTTPS goes through the host's proxy, which hands bound names to the broker.
        self.network.set_brokered(id, any).await
    }

    async fn set_env(&self, id: &str, env: BTreeMap<String, String>) -> Result<()> {
        let slot = self.slot(id)?;
        let mut record = read_record(&self.dir(id)?, id)?;
        record.env = env.clone();
        write_record(&record)?;
        *slot.env.lock().expect("slot env") = env.clone();
        let g = slot_guest(&slot, Duration::from_secs(5)).await?;
        g.update_defaults(hello(&env, self.trust_pem())).await
    }

    async fn prepare_template(&self, template: &str) -> Result<String> {
        self.image(template).await.map(|image| image.id)
    }

    fn templates(&self) -> Vec<String> {
        builtin_templates().into_iter().map(|t| t.name).collect()
    }

    async fn commit_layer(&self, id: &str, key: &str) -> Result<u64> {
        self.commit_layer_of(id, key).await
    }

    fn has_layer(&self, key: &str) -> bool {
        matches!(self.layer(key), Ok(Some(_)))
    }

    async fn import_image(
        &self,
        req: ImportImage,
        report: &(dyn Fn(String) + Send + Sync),
    ) -> Result<ImportedImage> {
        self.import_image_layer(req, report).await
    }

    async fn create(&self, req: CreateVm) -> Result<VmStatus> {
        let dir = self.dir(&req.id)?;
        let image = self.image(&req.template).await?;
        let (base, base_format) = match &req.layer {
            None => (image.rootfs.clone(), DiskFormat::Raw),
            Some(key) => {
                let layer = self
                    .layer(key)?
                    .ok_or_else(|| Error::Invalid(format!("no disk layer {key}")))?;
                (layer.disk, layer.format)
            }
        };
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .ctx(|| format!("creating sandbox directory {}", dir.display()))?;
        let disk = create_disk_from(
            "rootfs",
            &base,
            base_format,
            &dir.join("rootfs.disk"),
            &self.config.disk,
        )
        .await?;
        let share = self.vmm.serves_shares().then(|| dir.join(share::SHARE_DIR));
        let cmdline = self.base_cmdline(&req.id, share.is_some());
        let transport = req.transport.unwrap_or(self.config.transport);
        let spec = VmSpec {
            id: req.id.clone(),
            dir: dir.clone(),
            kernel: image.kernel.clone(),
            initramfs: image.initramfs.clone(),
            cmdline,
            disks: vec![disk.spec],
            vcpus: req.vcpus,
            memory_mib: req.memory_mib,
            memory_file: self.memory_in_file.then(|| dir.join(MEMORY_FILE_NAME)),
            transport,
            vsock_cid: 3,
            console_log: dir.join(CONSOLE_FILE),
            net: None,
            share,
        };
        let base_cmdline = spec.cmdline.clone();
        let record = VmRecord {
            spec,
            template: req.template,
            env: req.env,
            disk_clone: clone_method_name(disk.method).into(),
            lease: None,
            base_cmdline,
            reidentify: false,
            egress: req.egress,
        };
        write_record(&record)?;
        self.boot(record, NetPlan::Auto(req.internet), None).await
    }

    async fn start(&self, id: &str) -> Result<VmStatus> {
        let dir = self.dir(id)?;
        self.require_no_vm(id, "stopped")?;
        let mut record = read_record(&dir, id)?;
        // A cold boot gets its address from the kernel command line.
        record.reidentify = false;
        let internet = record.lease.as_ref().map(|l| l.internet);
        self.boot(record, NetPlan::Auto(internet), None).await
    }

    async fn stop(&self, id: &str) -> Result<()> {
        let Ok(slot) = self.slot(id) else {
            // No VM is tracked (a boot cut short, or one that failed): make sure nothing of it
            // runs, and give its TAP back (the lease and the disk stay).
            crate::process::kill_processes_mentioning(&self.dir(id)?.join(""));
            return self.network.detach(id, false).await;
        };
        slot.expected_exit.store(true, Ordering::SeqCst);
        if slot.paused.load(Ordering::SeqCst) {
            slot.vm.resume().await?;
        }
        // Ask the agent first: it syncs and unmounts cleanly. Then the VMM's own power-off path.
        if let Ok(g) = slot_guest(&slot, Duration::from_secs(5)).await
            && let Err(e) = g.shutdown_guest(false).await
        {
            tracing::warn!(sandbox = %id, error = %e, "guest shutdown request failed");
        }
        let exit = slot.vm.shutdown(self.config.stop_grace).await?;
        tracing::info!(sandbox = %id, ?exit, "VM stopped");
        self.take_slot(id);
        self.network.detach(id, false).await
    }

    async fn pause(&self, id: &str) -> Result<()> {
        let slot = self.slot(id)?;
        slot.paused.store(true, Ordering::SeqCst);
        if let Err(e) = slot.vm.pause().await {
            slot.paused.store(false, Ordering::SeqCst);
            return Err(e);
        }
        Ok(())
    }

    async fn resume(&self, id: &str) -> Result<()> {
        let slot = self.slot(id)?;
        slot.vm.resume().await?;
        slot.paused.store(false, Ordering::SeqCst);
        // The guest clock stood still while paused.
        let g = slot_guest(&slot, Duration::from_secs(10)).await?;
        g.keep_clock().await.map(drop)
    }

    async fn save(&self, id: &str, dir: &Path, then: AfterSave) -> Result<SaveReport> {
        self.save_vm(id, dir, then).await
    }

    async fn restore(&self, req: RestoreVm) -> Result<VmStatus> {
        self.restore_vm(req).await
    }

    async fn destroy(&self, id: &str) -> Result<()> {
        let dir = self.dir(id)?;
        if let Some(slot) = self.take_slot(id) {
            slot.expected_exit.store(true, Ordering::SeqCst);
            if let Some(g) = slot.guest.lock().await.take() {
                g.shutdown("sandbox destroyed");
            }
            slot.vm.kill().await?;
        }
        // Whatever a boot cut short (or an earlier server) left running for this directory.
        crate::process::kill_processes_mentioning(&dir.join(""));
        self.network.detach(id, true).await?;
        self.release_share(&dir).await?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", dir.display()), e)),
        }
    }

    async fn archive(&self, id: &str, extra: &[ArchiveDir]) -> Result<Archived> {
        self.archive_sandbox(id, extra).await
    }

    async fn restore_archive(
        &self,
        id: &str,
        archive: &Archive,
        extra: &[ArchiveDir],
    ) -> Result<Restored> {
        self.restore_archive_of(id, archive, extra).await
    }

    async fn upload_snapshot(&self, dir: &Path) -> Result<Archived> {
        self.upload_snapshot_dir(dir).await
    }

    async fn download_snapshot(&self, archive: &Archive, dir: &Path) -> Result<Restored> {
        self.download_snapshot_dir(archive, dir).await
    }

    async fn create_volume(&self, id: &str, size_mib: u64) -> Result<()> {
        self.make_volume(id, size_mib).await
    }

    async fn delete_volume(&self, id: &str) -> Result<()> {
        self.remove_volume(id).await
    }

    async fn attach_volume(&self, id: &str, volume: &str, readonly: bool) -> Result<u32> {
        self.attach(id, volume, readonly).await
    }

    async fn detach_volume(&self, id: &str, volume: &str) -> Result<()> {
        self.detach(id, volume).await
    }

    async fn volume_stat(&self, volume: &str, path: &str) -> Result<VolumeEntry> {
        self.volume_image(volume)?.stat(path).await
    }

    async fn volume_list(&self, volume: &str, path: &str, depth: u32) -> Result<Vec<VolumeEntry>> {
        self.volume_image(volume)?.list(path, depth).await
    }

    async fn volume_read(&self, volume: &str, path: &str) -> Result<(std::fs::File, u64)> {
        self.volume_image(volume)?.read_file(path).await
    }

    async fn volume_write(
        &self,
        volume: &str,
        path: &str,
        body: ByteStream,
        attrs: VolumeAttrs,
        limit: u64,
    ) -> Result<VolumeEntry> {
        self.volume_image(volume)?
            .write_file(path, body, attrs, limit)
            .await
    }

    async fn volume_make_dir(
        &self,
        volume: &str,
        path: &str,
        parents: bool,
        attrs: VolumeAttrs,
    ) -> Result<(VolumeEntry, bool)> {
        self.volume_image(volume)?
            .make_dir(path, parents, attrs)
            .await
    }

    async fn volume_remove(&self, volume: &str, path: &str) -> Result<()> {
        self.volume_image(volume)?.remove(path).await
    }

    async fn volume_set_attrs(
        &self,
        volume: &str,
        path: &str,
        attrs: VolumeAttrs,
    ) -> Result<VolumeEntry> {
        self.volume_image(volume)?.set_attrs(path, attrs).await
    }

    async fn share_stat(&self, id: &str, path: &str) -> Result<ShareEntry> {
        self.share_root(id).await?.stat(path)
    }

    async fn share_list(&self, id: &str, path: &str) -> Result<Vec<ShareEntry>> {
        self.share_root(id).await?.list(path)
    }

    async fn share_read(&self, id: &str, path: &str) -> Result<(std::fs::File, u64)> {
        self.share_root(id).await?.open_file(path)
    }

    async fn share_write(&self, id: &str, path: &str, body: ByteStream) -> Result<u64> {
        self.share_root(id).await?.write(path, body).await
    }

    async fn share_remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.share_root(id).await?.remove(path, recursive)
    }

    async fn guest(&self, id: &str) -> Result<GuestClient> {
        let slot = self.slot(id)?;
        slot_guest(&slot, Duration::from_secs(10)).await
    }

    async fn console_tail(&self, id: &str, lines: usize) -> Result<String> {
        let dir = self.dir(id)?;
        console::tail(&dir.join(CONSOLE_FILE), lines)
    }

    async fn running(&self) -> Vec<String> {
        self.slots
            .lock()
            .expect("host slots")
            .keys()
            .cloned()
            .collect()
    }

    fn subscribe(&self) -> broadcast::Receiver<HostEvent> {
        self.events.subscribe()
    }

    fn disk_free_bytes(&self) -> Option<u64> {
        let stats = nix::sys::statvfs::statvfs(&self.config.data_dir).ok()?;
        Some(
            stats
                .blocks_available()
                .saturating_mul(stats.fragment_size()),
        )
    }
}
