//! Sandbox lifecycle commands.

use platinum_hostagent::host::snapshot::{RestoreAs, RestoreVm};
use platinum_hostagent::host::{CreateVm, VmStatus};
use std::time::Duration;
use time::OffsetDateTime;

use crate::commands::pools::PoolKey;
use crate::commands::templates::ReadyKey;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::{check_template_name, new_sandbox_id};
use crate::model::{
    AttachVolume, BootMode, CreateSandbox, RuntimeInfo, Sandbox, SandboxMetrics, SandboxState,
    StartInfo, StartPath,
};
use crate::model::{ListQuery, Page};

/// Longest env var or metadata value accepted.
const MAX_VALUE_LEN: usize = 32 * 1024;
/// Most env vars or metadata pairs accepted.
const MAX_PAIRS: usize = 256;
/// Metadata keys under this prefix are Platinum's own and refused in what users set.
pub const RESERVED_METADATA_PREFIX: &str = "platinum.";

pub(crate) fn runtime_info(v: &VmStatus) -> RuntimeInfo {
    RuntimeInfo {
        vmm: wire_name(&v.vmm),
        accel: wire_name(&v.accel),
        pid: v.pid,
        transport: wire_name(&v.transport),
        disk_clone: v.disk_clone.clone(),
        agent_version: v.agent_version.clone(),
        kernel: v.kernel.clone(),
        boot_ms: v.boot_ms,
        ip: v.ip.map(|ip| ip.to_string()),
        internet: v.internet,
        start: StartInfo {
            vm_ms: v.boot_ms,
            ..StartInfo::default()
        },
    }
}

/// The serde name of a unit enum variant (`VmmKind::Qemu` -> `"qemu"`).
pub(crate) fn wire_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// What a map of string pairs holds, for [`check_pairs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pairs {
    /// Environment variables: names follow [`crate::env::check_env_name`].
    Env,
    /// User metadata: no key under [`RESERVED_METADATA_PREFIX`].
    Metadata,
    /// Front-end attributes (set in code).
    Attributes,
}

impl Pairs {
    fn what(self) -> &'static str {
        match self {
            Pairs::Env => "env",
            Pairs::Metadata => "metadata",
            Pairs::Attributes => "attribute",
        }
    }
}

/// Bounds a map of string pairs: how many, key and value sizes, no NUL bytes, and the key rule
/// of its kind.
pub(crate) fn check_pairs(
    kind: Pairs,
    pairs: &std::collections::BTreeMap<String, String>,
) -> Result<()> {
    let what = kind.what();
    if pairs.len() > MAX_PAIRS {
        return Err(Error::InvalidRequest(format!(
            "at most {MAX_PAIRS} {what} entries"
        )));
    }
    for (k, v) in pairs {
        if k.is_empty()
            || k.len() > 256
            || v.len() > MAX_VALUE_LEN
            || k.contains('\0')
            || v.contains('\0')
        {
            return Err(Error::InvalidRequest(format!("invalid {what} entry {k:?}")));
        }
        if kind == Pairs::Env {
            crate::env::check_env_name(k)?;
        } else if kind == Pairs::Metadata && k.starts_with(RESERVED_METADATA_PREFIX) {
            return Err(Error::InvalidRequest(format!(
                "{what} key {k:?} is reserved (the prefix {RESERVED_METADATA_PREFIX:?} is Platinum's own)"
            )));
        }
    }
    Ok(())
}

/// Checks a sandbox's size against the engine's limits.
pub(crate) fn check_size(
    cfg: &crate::config::EngineConfig,
    vcpus: u32,
    memory_mib: u32,
) -> Result<()> {
    if vcpus == 0 || vcpus > cfg.max_vcpus {
        return Err(Error::InvalidRequest(format!(
            "vcpus must be 1..={}",
            cfg.max_vcpus
        )));
    }
    if !(128..=cfg.max_memory_mib).contains(&memory_mib) {
        return Err(Error::InvalidRequest(format!(
            "memory_mib must be 128..={}",
            cfg.max_memory_mib
        )));
    }
    Ok(())
}

impl Engine {
    /// Creates a sandbox and returns once it runs and its agent answers: a sandbox claimed from
    /// a warm pool of its kind when one is ready, else a new VM restored from the snapshot it
    /// names or its template's ready snapshot, else booted.
    /// Volumes it names are checked first and attached and mounted once it runs; when one
    /// cannot be, the sandbox is removed again.
    /// A backup named as its `snapshot` is fetched from the object store first (and its fetched
    /// copy removed after); a `backup` schedule is kept once the sandbox exists.
    pub async fn create_sandbox(&self, mut req: CreateSandbox) -> Result<Sandbox> {
        let mounts = std::mem::take(&mut req.volumes);
        self.check_volume_mounts(&mounts).await?;
        let policy = req.backup.take();
        if let Some(p) = &policy {
            crate::commands::backups::check_policy(p)?;
        }
        let fetched = match &req.snapshot {
            Some(name) => self.fetch_backup_for_create(name).await?,
            None => None,
        };
        let created = self.create_sandbox_in(req, None).await;
        if let Some(fetched) = fetched {
            fetched.release().await;
        }
        let sandbox = created?;
        if policy.is_some() {
            self.store.set_backup_policy(&sandbox.id, policy).await?;
        }
        for m in mounts {
            let attach = AttachVolume {
                sandbox_id: sandbox.id.clone(),
                path: m.path,
                readonly: m.readonly,
            };
            if let Err(e) = self.attach_volume(&m.volume, attach).await {
                tracing::warn!(sandbox = %sandbox.id, volume = %m.volume, error = %e, "attaching a volume at create failed; removing the sandbox");
                if let Err(kill) = self.kill_sandbox(&sandbox.id).await {
                    tracing::error!(sandbox = %sandbox.id, error = %kill, "removing a sandbox whose volume failed");
                }
                return Err(e);
            }
        }
        Ok(sandbox)
    }

    /// [`Engine::create_sandbox`], or with `pool` a new sandbox that waits in that warm pool.
    pub(crate) async fn create_sandbox_in(
        &self,
        mut req: CreateSandbox,
        pool: Option<&str>,
    ) -> Result<Sandbox> {
        let cfg = &self.config;
        // Secrets' variables hold placeholders, never values.
        let (grants, secret_vars) = self
            .grant_secrets(&std::mem::take(&mut req.secrets), &req.env)
            .await?;
        let egress = match &mut req.egress {
            Some(p) => {
                p.header_rules = self.check_header_rules(&p.header_rules).await?;
                crate::commands::egress::egress_rules(p)?
            }
            None => Default::default(),
        };
        // Header rules are brokered like secrets.
        let brokered = !grants.is_empty()
            || req
                .egress
                .as_ref()
                .is_some_and(|p| !p.header_rules.is_empty());
        // A snapshot is checked (signature, hashes, compatibility) before anything is created.
        let from = match req.snapshot.take() {
            Some(name) => {
                let snap = self.get_snapshot(&name).await?;
                let (dir, verify_ms) = self.open_snapshot_timed(&snap).await?;
                Some((snap, dir, verify_ms))
            }
            None => None,
        };
        let template = match &from {
            Some((snap, _, _)) => snap.template.clone(),
            None => req
                .template
                .clone()
                .unwrap_or_else(|| cfg.default_template.clone()),
        };
        check_template_name(&template)?;
        if from.is_none() && !self.template_exists(&template) {
            return Err(Error::TemplateNotFound(template));
        }
        // A custom template boots its base's kernel from its own disk layer, and gives its
        // sandboxes its size and environment unless the request says otherwise.
        let custom = self.builds.template(&template);
        let (def_vcpus, def_memory) = self.template_size(&template);
        let vcpus = req
            .vcpus
            .or(from.as_ref().map(|(s, _, _)| s.vcpus))
            .unwrap_or(def_vcpus);
        let memory_mib = req
            .memory_mib
            .or(from.as_ref().map(|(s, _, _)| s.memory_mib))
            .unwrap_or(def_memory);
        check_size(cfg, vcpus, memory_mib)?;
        if let Some((snap, _, _)) = &from
            && (snap.vcpus, snap.memory_mib) != (vcpus, memory_mib)
        {
            return Err(Error::InvalidRequest(format!(
                "snapshot {} restores with {} vCPUs and {} MiB of memory (its memory image is that size); \
                 asked for {vcpus} vCPUs and {memory_mib} MiB",
                snap.id, snap.vcpus, snap.memory_mib
            )));
        }
        if let Some((snap, _, _)) = &from {
            // The restored processes have the snapshot's environment; new ones get it too,
            // with what the request sets on top.
            let mut env = snap.env.clone();
            env.append(&mut req.env);
            req.env = env;
        } else if let Some(custom) = &custom {
            let mut env = custom.defaults.env.clone();
            env.append(&mut req.env);
            req.env = env;
        }
        let timeout = match req.timeout_secs {
            None => cfg.default_timeout,
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
        };
        if timeout.is_some_and(|t| t > cfg.max_timeout) {
            return Err(Error::InvalidRequest(format!(
                "timeout_secs must be at most {}",
                cfg.max_timeout.as_secs()
            )));
        }
        req.env.extend(secret_vars);
        check_pairs(Pairs::Env, &req.env)?;
        check_pairs(Pairs::Metadata, &req.metadata)?;
        check_pairs(Pairs::Attributes, &req.attributes)?;
        if req.auto_resume {
            req.attributes.insert(
                crate::model::AUTO_RESUME_ATTRIBUTE.to_string(),
                "true".to_string(),
            );
        }
        if let Some(name) = &req.name {
            crate::commands::settings::check_sandbox_name(name)?;
            if self.store.get_sandbox_by_name(name).await?.is_some() {
                return Err(Error::Conflict(format!(
                    "a sandbox named {name:?} already exists"
                )));
            }
        }

        let now = OffsetDateTime::now_utc();
        let sandbox = Sandbox {
            id: new_sandbox_id(),
            name: req.name,
            template: template.clone(),
            state: SandboxState::Creating,
            vcpus,
            memory_mib,
            env: req.env,
            metadata: req.metadata,
            attributes: req.attributes,
            created_at: now,
            expires_at: timeout.map(|t| now + t),
            on_timeout: req.on_timeout.unwrap_or_default(),
            lifecycle: match req.lifecycle_type {
                Some(preset) => preset.apply(req.lifecycle),
                None => req.lifecycle,
            },
            last_activity_at: now,
            error: None,
            runtime: None,
        };
        // A warm sandbox of this kind, when a pool has one ready: no VM work at all.
        if pool.is_none() && req.boot == BootMode::Auto && req.internet != Some(false) {
            let key = PoolKey {
                template: template.clone(),
                snapshot: from.as_ref().map(|(s, _, _)| s.id.clone()),
                vcpus,
                memory_mib,
            };
            if let Some(claimed) = self.claim_pooled(&key, &sandbox).await? {
                // A pooled sandbox booted without the policy: in force from here on.
                if let Some(policy) = req.egress {
                    self.set_egress_policy(&claimed.id, policy).await?;
                }
                if !grants.is_empty() {
                    self.store_grants(&claimed.id, &grants).await?;
                }
                return Ok(claimed);
            }
        }
        // Without a snapshot named, the template's ready snapshot when there is one (checked
        // before anything is created, like any snapshot).
        let ready = match (&from, req.boot) {
            (None, BootMode::Auto) => {
                self.ready_snapshot(&ReadyKey {
                    template: template.clone(),
                    vcpus,
                    memory_mib,
                })
                .await
            }
            _ => None,
        };

        {
            // Admission and the insert that makes it true happen under one lock: two concurrent
            // creates cannot both take the last place.
            let _admission = self.admission.lock().await;
            self.admit(&sandbox).await?;
            match pool {
                Some(pool) => self.store.insert_pooled_sandbox(&sandbox, pool).await?,
                None => self.store.insert_sandbox(&sandbox).await?,
            }
        }
        // The VM boots with the rules (below); the policy is kept for later reads and changes.
        if req.egress.is_some() {
            self.store
                .set_egress_policy(&sandbox.id, req.egress.as_ref())
                .await?;
        }
        // Its secrets and header rules are brokered from its first request on.
        if brokered {
            self.store_grants(&sandbox.id, &grants).await?;
        }
        self.store
            .append_event(&sandbox.id, "creating", &serde_json::json!({ "template": template, "vcpus": vcpus, "memory_mib": memory_mib }))
            .await?;
        let create = CreateVm {
            id: sandbox.id.clone(),
            template: custom.as_ref().map_or(template, |c| c.base.clone()),
            layer: custom.as_ref().and_then(|c| c.layer.clone()),
            vcpus,
            memory_mib,
            env: sandbox.env.clone(),
            transport: None,
            internet: req.internet,
            egress: egress.clone(),
        };
        let restore = |dir, start: StartInfo, fallback| NewVm::Restore {
            vm: RestoreVm {
                id: sandbox.id.clone(),
                snapshot_dir: dir,
                env: sandbox.env.clone(),
                restore_as: RestoreAs::New {
                    internet: req.internet,
                },
                egress: egress.clone(),
            },
            start,
            fallback,
        };
        let vm = match (from, ready) {
            (Some((snap, dir, verify_ms)), _) => restore(
                dir,
                StartInfo {
                    path: StartPath::Snapshot,
                    snapshot: Some(snap.id),
                    verify_ms: Some(verify_ms),
                    vm_ms: 0,
                },
                None,
            ),
            // A ready snapshot that fails to restore falls back to a boot.
            (None, Some(ready)) => restore(
                ready.dir,
                StartInfo {
                    path: StartPath::TemplateSnapshot,
                    snapshot: Some(ready.snapshot.id),
                    verify_ms: Some(ready.verify_ms),
                    vm_ms: 0,
                },
                Some(Box::new(create)),
            ),
            (None, None) => NewVm::Create(create),
        };
        if let NewVm::Restore {
            start:
                StartInfo {
                    snapshot: Some(snap),
                    ..
                },
            ..
        } = &vm
        {
            self.store
                .append_event(
                    &sandbox.id,
                    "restoring",
                    &serde_json::json!({ "snapshot": snap }),
                )
                .await?;
        }
        let engine = self.arc()?;
        self.detached(
            async move { engine.boot_new(sandbox, vm, timeout).await },
            |engine, made: Sandbox| async move {
                tracing::info!(sandbox = %made.id, "create abandoned by its caller; removing the sandbox");
                if let Err(e) = engine.kill_sandbox(&made.id).await {
                    tracing::error!(sandbox = %made.id, error = %e, "removing an abandoned sandbox");
                }
            },
        )
        .await
    }

    /// Boots the VM of a sandbox just inserted as `creating` and moves it to `running`, or tears
    /// everything down and records `error`. Runs on its own task ([`Engine::detached`]).
    pub(crate) async fn boot_new(
        &self,
        mut sandbox: Sandbox,
        vm: NewVm,
        timeout: Option<Duration>,
    ) -> Result<Sandbox> {
        let _guard = self.lock(&sandbox.id).await;
        let (booted, start) = match vm {
            NewVm::Create(vm) => (
                self.boot_bounded(self.host.create(vm)).await,
                StartInfo::default(),
            ),
            NewVm::Restore {
                vm,
                start,
                fallback,
            } => match (self.boot_bounded(self.host.restore(vm)).await, fallback) {
                (Err(e), Some(create)) => {
                    tracing::warn!(sandbox = %sandbox.id, error = %e, "restoring the template's ready snapshot failed; booting instead, and building a new one");
                    if let Err(cleanup) = self.host.destroy(&sandbox.id).await {
                        tracing::warn!(sandbox = %sandbox.id, error = %cleanup, "cleanup after a failed restore");
                    }
                    if let Some(snap) = &start.snapshot {
                        self.discard_snapshot(snap).await;
                    }
                    (
                        self.boot_bounded(self.host.create(*create)).await,
                        StartInfo::default(),
                    )
                }
                (booted, _) => (booted, start),
            },
        };
        // A booted (not restored) VM of a custom template starts its start command; a restored
        // one has it running already.
        let booted = match (booted, start.snapshot.is_none()) {
            (Ok(status), true) => self.start_custom(&sandbox).await.map(|()| status),
            (booted, _) => booted,
        };
        match booted {
            Ok(status) => {
                let mut runtime = runtime_info(&status);
                runtime.start = StartInfo {
                    vm_ms: status.boot_ms,
                    ..start
                };
                sandbox.runtime = Some(runtime);
                // Expiry counts from when the sandbox became usable.
                let ready = OffsetDateTime::now_utc();
                sandbox.expires_at = timeout.map(|t| ready + t);
                sandbox.last_activity_at = ready;
                self.transition(
                    &mut sandbox,
                    SandboxState::Running,
                    serde_json::json!({ "boot_ms": status.boot_ms }),
                )
                .await?;
                Ok(sandbox)
            }
            Err(e) => {
                let console = self
                    .host
                    .console_tail(&sandbox.id, 20)
                    .await
                    .unwrap_or_default();
                if let Err(cleanup) = self.host.destroy(&sandbox.id).await {
                    tracing::error!(sandbox = %sandbox.id, error = %cleanup, "cleanup after failed create");
                }
                let reason = if console.is_empty() {
                    e.to_string()
                } else {
                    format!("{e}; console: {console}")
                };
                self.record_error(&mut sandbox, reason).await?;
                Err(e)
            }
        }
    }

    /// Starts the start command of a custom template's sandbox just booted, and waits until it
    /// is ready.
    pub(crate) async fn start_custom(&self, sandbox: &Sandbox) -> Result<()> {
        let Some(custom) = self.builds.template(&sandbox.template) else {
            return Ok(());
        };
        if custom.start_cmd.is_none() && custom.ready_cmd.is_none() {
            return Ok(());
        }
        let deadline = tokio::time::Instant::now() + crate::builds::runner::READY_TIMEOUT;
        self.start_template_process(&sandbox.id, &custom, None, deadline)
            .await
            .map_err(|f| {
                let tail = f.last_output.join("\n");
                Error::Vm(format!(
                    "template {:?}: {}{}",
                    sandbox.template,
                    f.message,
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!("; last output: {tail}")
                    }
                ))
            })
    }

    /// Runs a host boot with the boot timeout, ending it early when the server shuts down. A boot
    /// cut short leaves processes behind only until the caller's `destroy` or `stop`.
    pub(crate) async fn boot_bounded(
        &self,
        boot: impl std::future::Future<Output = platinum_hostagent::Result<VmStatus>>,
    ) -> Result<VmStatus> {
        tokio::select! {
            booted = tokio::time::timeout(self.config.boot_timeout, boot) => match booted {
                Ok(r) => r.map_err(Error::from),
                Err(_) => Err(Error::Vm(format!(
                    "boot took longer than {}s",
                    self.config.boot_timeout.as_secs()
                ))),
            },
            _ = self.shutdown.cancelled() => {
                Err(Error::Vm("the server shut down while the sandbox was booting".into()))
            }
        }
    }

    /// One sandbox.
    pub async fn get_sandbox(&self, id: &str) -> Result<Sandbox> {
        self.load(id).await
    }

    /// A page of sandboxes, newest first.
    pub async fn list_sandboxes(&self, query: ListQuery) -> Result<Page> {
        self.store.list_sandboxes(&query).await
    }

    /// Deletes a sandbox: VM, disks and directory are removed, with its checkpoints; its named
    /// snapshots and its backups stay (see [`Engine::kill_sandbox_with_snapshots`]). The record
    /// stays as `deleted`.
    pub async fn kill_sandbox(&self, id: &str) -> Result<()> {
        self.kill_sandbox_with_snapshots(id, false).await
    }

    /// [`Engine::kill_sandbox`], removing its named snapshots too when `with_snapshots`.
    pub async fn kill_sandbox_with_snapshots(&self, id: &str, with_snapshots: bool) -> Result<()> {
        self.load(id).await?;
        let guard = self.lock(id).await;
        let mut s = self.load(id).await?;
        self.host.destroy(id).await?;
        if self.config.data_dir.is_some() {
            self.discard_snapshots_of(id, with_snapshots).await?;
        }
        // Its chunks stay in the object store (others may share them). Its backups stay; their
        // schedule ends.
        self.store.delete_archive(id).await?;
        self.store.set_backup_policy(id, None).await?;
        self.store.set_egress_policy(id, None).await?;
        self.forget_exposures(id).await?;
        self.forget_secrets(id).await?;
        s.error = None;
        self.transition(&mut s, SandboxState::Deleted, serde_json::json!({}))
            .await?;
        drop(guard);
        self.forget_volumes_of(id).await;
        self.forget_lock(id);
        Ok(())
    }

    /// Pauses a running sandbox (vCPUs stop; memory stays).
    pub async fn pause_sandbox(&self, id: &str) -> Result<Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(&s, "pause", &[SandboxState::Running])?;
        self.host.pause(id).await?;
        self.transition(&mut s, SandboxState::Paused, serde_json::json!({}))
            .await?;
        Ok(s)
    }

    /// Resumes a paused sandbox: restarts its vCPUs, or restores it from disk when it was
    /// paused to disk (`suspended`).
    pub async fn resume_sandbox(&self, id: &str) -> Result<Sandbox> {
        if self.load(id).await?.state == SandboxState::Suspended {
            return self.start_sandbox(id).await;
        }
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(
            &s,
            "resume",
            &[SandboxState::Paused, SandboxState::Suspended],
        )?;
        self.host.resume(id).await?;
        s.last_activity_at = OffsetDateTime::now_utc();
        self.renew_expired(&mut s);
        self.transition(&mut s, SandboxState::Running, serde_json::json!({}))
            .await?;
        Ok(s)
    }

    /// Shuts the VM down and keeps the disk.
    pub async fn stop_sandbox(&self, id: &str) -> Result<Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(&s, "stop", &[SandboxState::Running, SandboxState::Paused])?;
        self.transition(&mut s, SandboxState::Stopping, serde_json::json!({}))
            .await?;
        if let Err(e) = self.host.stop(id).await {
            self.record_error(&mut s, e.to_string()).await?;
            return Err(e.into());
        }
        // Rules that count time spent stopped (archive, delete) count from here.
        s.last_activity_at = OffsetDateTime::now_utc();
        self.transition(&mut s, SandboxState::Stopped, serde_json::json!({}))
            .await?;
        Ok(s)
    }

    /// Boots a stopped (or failed) sandbox again from its disk. The boot runs on its own task: a
    /// caller that goes away leaves a sandbox that is either running or in `error`, never one
    /// stuck in `starting` or a VM that nobody tracks.
    pub async fn start_sandbox(&self, id: &str) -> Result<Sandbox> {
        let guard = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(
            &s,
            "start",
            &[
                SandboxState::Stopped,
                SandboxState::Archived,
                SandboxState::Error,
                SandboxState::Suspended,
            ],
        )?;
        // In object storage: back onto this host first (stopped, or suspended with its memory).
        if s.state == SandboxState::Archived {
            self.restore_archived(&mut s).await?;
        }
        // Paused to disk with its memory: restore from the checked image (a refused one leaves
        // the sandbox suspended).
        let image = self.checked_suspend_image(&s).await?;
        {
            let _admission = self.admission.lock().await;
            self.admit(&s).await?;
            self.transition(&mut s, SandboxState::Starting, serde_json::json!({}))
                .await?;
        }
        let engine = self.arc()?;
        self.detached(
            async move {
                let _guard = guard;
                let booted = match &image {
                    // A cold boot of a custom template's sandbox starts its start command again.
                    // Its volumes are mounted before the start command runs.
                    None => match engine.boot_bounded(engine.host.start(&s.id)).await {
                        Ok(status) => match engine.mount_volumes(&s.id).await {
                            Ok(()) => engine.start_custom(&s).await.map(|()| status),
                            Err(e) => Err(e),
                        },
                        Err(e) => Err(e),
                    },
                    Some((_, dir)) => {
                        let restore = RestoreVm {
                            id: s.id.clone(),
                            snapshot_dir: dir.clone(),
                            env: s.env.clone(),
                            restore_as: RestoreAs::Same,
                            egress: Default::default(),
                        };
                        engine.boot_bounded(engine.host.restore(restore)).await
                    }
                };
                match booted {
                    Ok(status) => {
                        let runtime = runtime_info(&status);
                        s.runtime = Some(match &image {
                            Some((snap, _)) => runtime.resumed_from(&snap.id),
                            None => runtime,
                        });
                        s.error = None;
                        s.last_activity_at = OffsetDateTime::now_utc();
                        engine.renew_expired(&mut s);
                        let mut detail = serde_json::json!({ "boot_ms": status.boot_ms });
                        if let Some((snap, _)) = &image {
                            detail["restored_from"] = snap.id.clone().into();
                            // Used up: the sandbox runs on from it.
                            engine.discard_snapshot(&snap.id).await;
                        }
                        engine
                            .transition(&mut s, SandboxState::Running, detail)
                            .await?;
                        Ok(s)
                    }
                    Err(e) => {
                        if let Err(cleanup) = engine.host.stop(&s.id).await {
                            tracing::debug!(sandbox = %s.id, error = %cleanup, "stopping after a failed start");
                        }
                        engine.record_error(&mut s, e.to_string()).await?;
                        Err(e)
                    }
                }
            },
            // A start nobody waits for any more still ends `running`: the caller asked for it.
            |_, _| async {},
        )
        .await
    }

    /// Stops every sandbox that has a VM, concurrently (server shutdown). Failures are logged; a
    /// sandbox that cannot be stopped cleanly ends in `error` with its disk kept.
    pub async fn stop_all_sandboxes(&self) {
        // Creates and starts in flight end first (shutdown cuts their boots short).
        self.wait_for_lifecycle_tasks().await;
        let live = match self.store.sandboxes_in_states(&SandboxState::WITH_VM).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "listing sandboxes to stop");
                return;
            }
        };
        let stops = live.iter().map(|s| async move {
            if let Err(e) = self.stop_sandbox(&s.id).await {
                tracing::warn!(sandbox = %s.id, error = %e, "stop at shutdown failed");
            }
        });
        futures::future::join_all(stops).await;
    }

    /// A sandbox woken after its timeout expired (it was paused on timeout) gets the default
    /// timeout again, so the lifecycle loop does not pause it right back.
    pub(crate) fn renew_expired(&self, s: &mut Sandbox) {
        let now = OffsetDateTime::now_utc();
        if s.expires_at.is_some_and(|t| t <= now) {
            let again = self
                .config
                .default_timeout
                .unwrap_or(Duration::from_secs(300));
            s.expires_at = Some(now + again);
        }
    }

    /// Sets the sandbox to expire `secs` from now (0 = never).
    pub async fn set_timeout(&self, id: &str, secs: u64) -> Result<Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        let t = Duration::from_secs(secs);
        if t > self.config.max_timeout {
            return Err(Error::InvalidRequest(format!(
                "timeout must be at most {}s",
                self.config.max_timeout.as_secs()
            )));
        }
        s.expires_at = (secs > 0).then(|| OffsetDateTime::now_utc() + t);
        self.store.update_sandbox(&s).await?;
        Ok(s)
    }

    /// CPU, memory and disk usage, measured in the guest.
    pub async fn sandbox_metrics(&self, id: &str) -> Result<SandboxMetrics> {
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.metrics().await?.into())
    }

    /// Last lines of the sandbox's console log (works in any state that still has a directory).
    pub async fn console_log(&self, id: &str, lines: usize) -> Result<String> {
        self.load(id).await?;
        Ok(self.host.console_tail(id, lines.clamp(1, 10_000)).await?)
    }

    /// Audit trail of a sandbox: (time, kind, detail), oldest first.
    pub async fn sandbox_events(
        &self,
        id: &str,
    ) -> Result<Vec<(OffsetDateTime, String, serde_json::Value)>> {
        self.load(id).await?;
        Ok(self
            .store
            .events(id)
            .await?
            .into_iter()
            .map(|(ms, k, d)| {
                (
                    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
                        .unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    k,
                    d,
                )
            })
            .collect())
    }
}

/// How a new sandbox's VM comes to be.
pub(crate) enum NewVm {
    /// Booted from a template.
    Create(CreateVm),
    /// Restored from a checked snapshot (a restore, a fork, a template's ready snapshot).
    Restore {
        /// The restore.
        vm: RestoreVm,
        /// How the sandbox's info describes it.
        start: StartInfo,
        /// A boot to fall back to when the restore fails (a ready snapshot's).
        fallback: Option<Box<CreateVm>>,
    },
}

/// Fails with `invalid_state` unless the sandbox is in one of `allowed`.
pub(crate) fn require(s: &Sandbox, action: &str, allowed: &[SandboxState]) -> Result<()> {
    if allowed.contains(&s.state) {
        return Ok(());
    }
    Err(Error::InvalidState {
        id: s.id.clone(),
        state: s.state.to_string(),
        action: action.into(),
        needed: allowed
            .iter()
            .map(|a| a.as_str())
            .collect::<Vec<_>>()
            .join(" or "),
    })
}
