//! Warm pools: sandboxes of one template (or snapshot) and size kept restored and running, so
//! that a create of that kind is a claim — one store transaction that hands a pooled sandbox to
//! the caller with the caller's name, environment, metadata, timeout and lifecycle — and no VM
//! is started on that path. The environment reaches the guest as one `hello` on the sandbox's
//! existing agent session (skipped when it is unchanged). A new pooled sandbox runs one `true`
//! before it counts as ready, so a claim's first command does not pay for a cold VM (it is still
//! claimable meanwhile, as the newest, only when nothing older is ready).
//!
//! Pooled sandboxes are ordinary sandbox rows with a pool id: they hold VMs (so they count
//! against capacity), and they are not listed to callers until claimed. The refill loop
//! ([`crate::pools`]) keeps each pool at its size, replaces pooled sandboxes whose VM died, and
//! drains those restored from a template's ready snapshot that has since been replaced (the
//! template's image changed). A create that finds its pool empty starts its own VM as if there
//! were no pool.

use std::collections::BTreeMap;
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::{check_template_name, new_sandbox_id};
use crate::model::{
    BootMode, CreatePool, CreateSandbox, ExecRequest, Pool, Sandbox, SandboxState, SnapshotKind,
    StartPath, UpdatePool,
};

/// What a create asks for, as pools are keyed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PoolKey {
    /// Template.
    pub template: String,
    /// Snapshot id, when the create restores one.
    pub snapshot: Option<String>,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
}

impl PoolKey {
    fn of(pool: &Pool) -> PoolKey {
        PoolKey {
            template: pool.template.clone(),
            snapshot: pool.snapshot.clone(),
            vcpus: pool.vcpus,
            memory_mib: pool.memory_mib,
        }
    }
}

impl Engine {
    /// Creates a warm pool; it fills in the background.
    pub async fn create_pool(&self, req: CreatePool) -> Result<Pool> {
        let cfg = &self.config;
        let (template, snapshot, vcpus, memory_mib) = match &req.snapshot {
            Some(name) => {
                let snap = self.get_snapshot(name).await?;
                if snap.kind != SnapshotKind::Snapshot {
                    return Err(Error::InvalidRequest(format!(
                        "{name} is a {}; pools restore named snapshots",
                        snap.kind.as_str()
                    )));
                }
                for (what, asked, has) in [
                    ("vcpus", req.vcpus, snap.vcpus),
                    ("memory_mib", req.memory_mib, snap.memory_mib),
                ] {
                    if asked.is_some_and(|a| a != has) {
                        return Err(Error::InvalidRequest(format!(
                            "snapshot {} restores with {what} = {has}",
                            snap.id
                        )));
                    }
                }
                (snap.template, Some(snap.id), snap.vcpus, snap.memory_mib)
            }
            None => {
                let template = req
                    .template
                    .clone()
                    .unwrap_or_else(|| cfg.default_template.clone());
                check_template_name(&template)?;
                if !self.template_exists(&template) {
                    return Err(Error::TemplateNotFound(template));
                }
                let (def_vcpus, def_memory) = self.template_size(&template);
                let vcpus = req.vcpus.unwrap_or(def_vcpus);
                let memory_mib = req.memory_mib.unwrap_or(def_memory);
                crate::commands::sandbox::check_size(cfg, vcpus, memory_mib)?;
                (template, None, vcpus, memory_mib)
            }
        };
        let now = OffsetDateTime::now_utc();
        let pool = Pool {
            id: format!("pool{}", new_sandbox_id()),
            template,
            snapshot,
            vcpus,
            memory_mib,
            size: req.size,
            ready: 0,
            starting: 0,
            error: None,
            created_at: now,
            updated_at: now,
        };
        self.check_pool_fits(&pool, req.size)?;
        let key = PoolKey::of(&pool);
        if self
            .store
            .list_pools()
            .await?
            .iter()
            .any(|p| PoolKey::of(p) == key)
        {
            return Err(Error::Conflict(format!(
                "a pool of {} at {} vCPUs and {} MiB exists already; resize it",
                pool.snapshot.as_deref().unwrap_or(&pool.template),
                pool.vcpus,
                pool.memory_mib
            )));
        }
        self.store.insert_pool(&pool).await?;
        tracing::info!(pool = %pool.id, template = %pool.template, size = pool.size, "pool created");
        self.pools.wake();
        self.get_pool(&pool.id).await
    }

    /// Makes the pool of `template` at the default size hold `size` sandboxes: resized when it
    /// exists, created when not (server configuration: `platinum up --warm-pool`).
    pub async fn ensure_pool(&self, template: &str, size: u32) -> Result<Pool> {
        let cfg = &self.config;
        let existing = self.store.list_pools().await?.into_iter().find(|p| {
            p.snapshot.is_none()
                && p.template == template
                && (p.vcpus, p.memory_mib) == (cfg.default_vcpus, cfg.default_memory_mib)
        });
        match existing {
            Some(p) if p.size == size => self.get_pool(&p.id).await,
            Some(p) => self.resize_pool(&p.id, UpdatePool { size }).await,
            None => {
                self.create_pool(CreatePool {
                    template: Some(template.to_string()),
                    size,
                    ..CreatePool::default()
                })
                .await
            }
        }
    }

    /// Every pool with its current state, oldest first.
    pub async fn list_pools(&self) -> Result<Vec<Pool>> {
        let mut pools = self.store.list_pools().await?;
        for pool in &mut pools {
            self.fill_in_status(pool).await?;
        }
        Ok(pools)
    }

    /// One pool with its current state.
    pub async fn get_pool(&self, id: &str) -> Result<Pool> {
        let mut pool = self.stored_pool(id).await?;
        self.fill_in_status(&mut pool).await?;
        Ok(pool)
    }

    /// Changes a pool's size (0 drains it); it refills or drains in the background.
    pub async fn resize_pool(&self, id: &str, req: UpdatePool) -> Result<Pool> {
        let pool = self.stored_pool(id).await?;
        self.check_pool_fits(&pool, req.size)?;
        if !self.store.resize_pool(id, req.size).await? {
            return Err(Error::PoolNotFound(id.to_string()));
        }
        self.pools.wake();
        self.get_pool(id).await
    }

    /// Deletes a pool and the sandboxes waiting in it.
    pub async fn delete_pool(&self, id: &str) -> Result<()> {
        if !self.store.delete_pool(id).await? {
            return Err(Error::PoolNotFound(id.to_string()));
        }
        for s in self.store.pooled_sandboxes(id).await? {
            if let Err(e) = self.kill_sandbox(&s.id).await {
                tracing::warn!(sandbox = %s.id, error = %e, "removing a deleted pool's sandbox");
            }
        }
        self.pools.forget(id);
        Ok(())
    }

    async fn stored_pool(&self, id: &str) -> Result<Pool> {
        self.store
            .list_pools()
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::PoolNotFound(id.to_string()))
    }

    async fn fill_in_status(&self, pool: &mut Pool) -> Result<()> {
        let members = self.store.pooled_sandboxes(&pool.id).await?;
        let (mut ready, mut starting) = (0, 0);
        for s in &members {
            match s.state {
                SandboxState::Running if !self.pools.is_warming(&s.id) => ready += 1,
                SandboxState::Running | SandboxState::Creating => starting += 1,
                _ => {}
            }
        }
        pool.ready = ready;
        pool.starting = starting;
        pool.error = self.pools.error(&pool.id);
        Ok(())
    }

    /// A pool of `size` must fit the host's limits on its own.
    fn check_pool_fits(&self, pool: &Pool, size: u32) -> Result<()> {
        let cfg = &self.config;
        let memory = u64::from(size) * u64::from(pool.memory_mib);
        if size as usize > cfg.max_sandboxes || memory > cfg.max_total_memory_mib {
            return Err(Error::CapacityExhausted(format!(
                "a pool of {size} sandboxes of {} MiB needs {memory} MiB and {size} VMs; this host \
                 allows {} MiB and {} VMs in all",
                pool.memory_mib, cfg.max_total_memory_mib, cfg.max_sandboxes
            )));
        }
        Ok(())
    }

    /// Hands a pooled sandbox matching `key` to the caller, with `wanted`'s name, environment,
    /// metadata, attributes, timeout and lifecycle; `None` when no pool of that kind has one
    /// ready (the caller starts a VM of its own). A claimed sandbox whose agent does not take
    /// the new environment is removed and the next one tried.
    pub(crate) async fn claim_pooled(
        &self,
        key: &PoolKey,
        wanted: &Sandbox,
    ) -> Result<Option<Sandbox>> {
        let Some(pool) = self
            .store
            .list_pools()
            .await?
            .into_iter()
            .find(|p| PoolKey::of(p) == *key)
        else {
            return Ok(None);
        };
        let apply = |s: &mut Sandbox| {
            s.name = wanted.name.clone();
            s.env = wanted.env.clone();
            s.metadata = wanted.metadata.clone();
            s.attributes = wanted.attributes.clone();
            s.expires_at = wanted.expires_at;
            s.on_timeout = wanted.on_timeout;
            s.lifecycle = wanted.lifecycle;
            s.last_activity_at = wanted.last_activity_at;
            if let Some(runtime) = s.runtime.as_mut() {
                runtime.start.path = StartPath::Pool;
            }
        };
        // What the pool's VMs run with: the same for every sandbox tried below.
        let pooled_env = key_env(key, self).await;
        loop {
            let Some(s) = self.store.claim_pooled(&pool.id, &apply).await? else {
                return Ok(None);
            };
            self.pools.wake();
            match self.set_guest_env(&s, &pooled_env).await {
                Ok(()) => {
                    self.store
                        .append_event(&s.id, "claimed", &serde_json::json!({ "pool": pool.id }))
                        .await?;
                    tracing::info!(sandbox = %s.id, pool = %pool.id, "claimed a warm sandbox");
                    return Ok(Some(s));
                }
                Err(e) => {
                    tracing::warn!(sandbox = %s.id, error = %e, "a claimed warm sandbox did not answer; removing it");
                    if let Err(e) = self.kill_sandbox(&s.id).await {
                        tracing::warn!(sandbox = %s.id, error = %e, "removing a dead warm sandbox");
                    }
                }
            }
        }
    }

    /// Gives the guest of a claimed sandbox its environment, unless the VM has it already.
    async fn set_guest_env(
        &self,
        s: &Sandbox,
        pooled_env: &BTreeMap<String, String>,
    ) -> Result<()> {
        if s.env == *pooled_env {
            // Still make sure the agent answers: a dead VM is never handed out.
            return self.ping_guest(&s.id, "claim".into()).await.map(drop);
        }
        self.host.set_env(&s.id, s.env.clone()).await?;
        Ok(())
    }

    /// Starts one sandbox for `pool` (the refill loop's step), and warms it with one `true`: the
    /// first command in a new VM pays for what nothing has touched yet (the agent's and the
    /// shell's pages, and under TCG the translation of their code), which a claim should not.
    pub(crate) async fn fill_pool_once(&self, pool: &Pool) -> Result<Sandbox> {
        let req = CreateSandbox {
            template: Some(pool.template.clone()),
            snapshot: pool.snapshot.clone(),
            vcpus: Some(pool.vcpus),
            memory_mib: Some(pool.memory_mib),
            timeout_secs: Some(0),
            boot: BootMode::Auto,
            ..CreateSandbox::default()
        };
        let s = self.create_sandbox_in(req, Some(&pool.id)).await?;
        self.pools.set_warming(&s.id, true);
        let warmed = self
            .exec(&s.id, ExecRequest::argv(vec!["true".into()]))
            .await;
        self.pools.set_warming(&s.id, false);
        if let Err(e) = warmed {
            tracing::debug!(sandbox = %s.id, error = %e, "warming a pooled sandbox");
        }
        Ok(s)
    }
}

/// The environment pooled sandboxes of `key` run with: none for a template, the snapshot's for
/// a snapshot.
async fn key_env(key: &PoolKey, engine: &Engine) -> BTreeMap<String, String> {
    match &key.snapshot {
        Some(id) => engine
            .store
            .get_snapshot(id)
            .await
            .ok()
            .flatten()
            .map(|s| s.env)
            .unwrap_or_default(),
        None => BTreeMap::new(),
    }
}
