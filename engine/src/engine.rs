//! The [`Engine`]: owns the store, the host agent, per-sandbox locks and the background loops.
//!
//! Its public methods (in [`crate::commands`]) are the command layer: every front end (REST, MCP,
//! E2B, Daytona, CLI) calls them and nothing below them. Lifecycle changes of one sandbox are
//! serialised by a per-sandbox lock; commands that only use a running guest (exec, files) do not
//! take it, so they run concurrently with each other.

use platinum_hostagent::host::HostAgent;
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, Weak};
use std::time::Instant;
use time::OffsetDateTime;
use tokio::sync::OwnedMutexGuard;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::ApiKeys;
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::ids::check_sandbox_id;
use crate::model::{Sandbox, SandboxState};
use crate::store::Store;

/// How often a sandbox's activity time is written to the store at most.
const ACTIVITY_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// The engine. Share it as `Arc<Engine>`.
pub struct Engine {
    /// This engine, for work that must outlive the caller's future ([`Engine::detached`]).
    me: Weak<Engine>,
    pub(crate) config: EngineConfig,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) host: Arc<dyn HostAgent>,
    pub(crate) keys: ApiKeys,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    activity: Mutex<HashMap<String, Instant>>,
    /// Last activity per sandbox, exact (the store's copy is written at most every few seconds).
    seen: Mutex<HashMap<String, OffsetDateTime>>,
    /// Named background shells (`commands::sessions`).
    pub(crate) sessions: crate::sessions::Sessions,
    /// Code-context kernels (`commands::code`).
    pub(crate) code: crate::code::Kernels,
    /// Language servers (`commands::lsp`).
    pub(crate) lsp: crate::lsp::LanguageServers,
    pub(crate) shutdown: CancellationToken,
    /// Lifecycle work handed to its own task (create, start): waited for at shutdown.
    tasks: TaskTracker,
    /// Serialises admission decisions (count, memory, disk) with the state change that makes
    /// them true, so two concurrent creates cannot both take the last place.
    pub(crate) admission: tokio::sync::Mutex<()>,
    /// Revoked tokens (`commands::tokens`), loaded from the store.
    pub(crate) revoked_tokens: crate::commands::tokens::RevokedTokens,
    /// The edge proxy's keys, exposures and wake locks (`edge`), loaded from the store.
    pub(crate) edge: crate::edge::Edge,
    /// Recent metrics samples per sandbox (`metrics_history`).
    pub(crate) metrics: crate::metrics_history::MetricsHistory,
    /// Keys that sign snapshot manifests; `None` when the engine has no data directory.
    pub(crate) snapshot_keys: Option<Arc<crate::snapshots::signing::SnapshotKeys>>,
    /// Snapshot files hashed already this run (`snapshots::verified`).
    pub(crate) verified: Arc<crate::snapshots::verified::VerifiedFiles>,
    /// Template ready snapshots being built (`commands::templates`).
    pub(crate) ready_builds: crate::commands::templates::ReadyBuilds,
    /// The warm pools' refill loop (`pools`).
    pub(crate) pools: crate::pools::Pools,
    /// Custom templates and the builds in progress (`builds`).
    pub(crate) builds: crate::builds::Builds,
    /// Seals and opens secret values (`commands::secrets`).
    pub(crate) vault: crate::vault::Vault,
}

impl Engine {
    /// Builds an engine over a store and a host agent. Call [`Engine::start`] to run its loops.
    pub async fn new(
        config: EngineConfig,
        store: Arc<dyn Store>,
        host: Arc<dyn HostAgent>,
    ) -> Result<Arc<Self>> {
        let keys = ApiKeys::load(store.as_ref()).await?;
        let revoked_tokens = crate::commands::tokens::RevokedTokens::load(store.as_ref()).await?;
        let snapshot_keys = match &config.data_dir {
            Some(dir) => Some(Arc::new(
                crate::snapshots::signing::SnapshotKeys::load_or_create(
                    &dir.join(crate::commands::snapshots::KEYS_FILE),
                )?,
            )),
            None => None,
        };
        let vault = crate::vault::Vault::open(config.data_dir.as_deref())?;
        let edge = crate::edge::Edge::load(store.as_ref(), &vault).await?;
        Ok(Arc::new_cyclic(|me| Engine {
            me: me.clone(),
            config,
            store,
            host,
            keys,
            locks: Mutex::new(HashMap::new()),
            activity: Mutex::new(HashMap::new()),
            seen: Mutex::new(HashMap::new()),
            sessions: Default::default(),
            code: Default::default(),
            lsp: Default::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            admission: tokio::sync::Mutex::new(()),
            revoked_tokens,
            edge,
            metrics: Default::default(),
            snapshot_keys,
            verified: Default::default(),
            ready_builds: Default::default(),
            pools: Default::default(),
            builds: Default::default(),
            vault,
        }))
    }

    /// Reconciles the store with the host, then starts the lifecycle, backup, event and metrics
    /// loops.
    pub async fn start(self: &Arc<Self>) -> Result<()> {
        self.load_custom_templates().await?;
        crate::reconciler::reconcile_at_start(self).await?;
        self.push_all_secrets().await?;
        crate::reconciler::spawn_event_loop(self.clone());
        crate::lifecycle::spawn(self.clone());
        crate::backups::spawn(self.clone());
        crate::metrics_history::spawn(self.clone());
        crate::pools::spawn(self.clone());
        let engine = self.clone();
        self.spawn_tracked(async move { engine.prepare_default_ready().await });
        Ok(())
    }

    /// Stops the background loops (VMs keep running until the host agent is dropped).
    pub fn stop_background(&self) {
        self.shutdown.cancel();
    }

    /// Runs `work` on a task of its own, so that dropping the caller's future (a client that
    /// disconnects, an SDK timeout, an MCP cancel) never abandons a half-made VM: the work runs to
    /// its end, success or failure. When nobody waits for the result any more, `abandoned` gets
    /// the successful result to undo (a create nobody will learn about is torn down). Server
    /// shutdown waits for every such task ([`Engine::stop_all_sandboxes`]); the work itself
    /// watches [`Engine::shutdown`] to end early.
    pub(crate) async fn detached<T, W, A, AF>(&self, work: W, abandoned: A) -> Result<T>
    where
        T: Send + 'static,
        W: Future<Output = Result<T>> + Send + 'static,
        A: FnOnce(Arc<Engine>, T) -> AF + Send + 'static,
        AF: Future<Output = ()> + Send + 'static,
    {
        let engine = self
            .me
            .upgrade()
            .ok_or_else(|| Error::Internal("the engine is shutting down".into()))?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.tasks.spawn(async move {
            let result = work.await;
            if let Err(Ok(unclaimed)) = tx.send(result) {
                abandoned(engine, unclaimed).await;
            }
        });
        rx.await
            .map_err(|_| Error::Internal("a lifecycle task ended without a result".into()))?
    }

    /// Runs `pass` every `period` until the engine's background work is stopped (a late tick is
    /// skipped, not caught up); a failed pass is logged as `what` and the next one runs on time.
    pub(crate) fn every<F, Fut>(
        self: &Arc<Self>,
        period: std::time::Duration,
        what: &'static str,
        mut pass: F,
    ) where
        F: FnMut(Arc<Engine>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<()>> + Send,
    {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = engine.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                if let Err(e) = pass(engine.clone()).await {
                    tracing::warn!(error = %e, "{what} failed");
                }
            }
        });
    }

    /// Runs background work (a template's ready snapshot build) on a task that shutdown waits
    /// for, like [`Engine::detached`]'s; the work watches [`Engine::shutdown`] to end early.
    pub(crate) fn spawn_tracked(&self, work: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(work);
    }

    /// Waits for every task started by [`Engine::detached`] (after shutdown was signalled, they
    /// end quickly); new ones can still be started while waiting.
    pub(crate) async fn wait_for_lifecycle_tasks(&self) {
        self.tasks.close();
        self.tasks.wait().await;
        self.tasks.reopen();
    }

    /// An `Arc` of this engine.
    pub(crate) fn arc(&self) -> Result<Arc<Engine>> {
        self.me
            .upgrade()
            .ok_or_else(|| Error::Internal("the engine is shutting down".into()))
    }

    /// Engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The host this engine runs sandboxes on.
    pub fn host_info(&self) -> crate::model::HostInfo {
        let info = self.host.info();
        crate::model::HostInfo {
            vmm: crate::commands::sandbox::wire_name(&info.vmm),
            accel: crate::commands::sandbox::wire_name(&info.accel),
            reason: info.reason,
            transport: crate::commands::sandbox::wire_name(&info.transport),
            network_unavailable: info.network_unavailable,
            memory: info.memory,
        }
    }

    /// API keys.
    pub fn api_keys(&self) -> &ApiKeys {
        &self.keys
    }

    /// Serialises lifecycle changes of one sandbox.
    pub(crate) async fn lock(&self, id: &str) -> OwnedMutexGuard<()> {
        let m = self
            .locks
            .lock()
            .expect("engine locks")
            .entry(id.to_string())
            .or_default()
            .clone();
        m.lock_owned().await
    }

    pub(crate) fn forget_lock(&self, id: &str) {
        self.locks.lock().expect("engine locks").remove(id);
        self.activity.lock().expect("engine activity").remove(id);
        self.seen.lock().expect("engine activity").remove(id);
        self.forget_guest_state(id);
    }

    /// Drops what the engine keeps about processes in a sandbox's guest (code contexts, language
    /// servers): after a rollback or a restore the guest is another moment's. Sessions follow
    /// the VM's boot by themselves.
    pub(crate) fn forget_guest_state(&self, id: &str) {
        self.code.forget(id);
        self.lsp.forget(id);
    }

    /// When a sandbox was last used: the store's record or, if newer, activity not written yet.
    pub(crate) fn last_activity(&self, sandbox: &Sandbox) -> OffsetDateTime {
        let seen = self
            .seen
            .lock()
            .expect("engine activity")
            .get(&sandbox.id)
            .copied();
        seen.map_or(sandbox.last_activity_at, |t| {
            t.max(sandbox.last_activity_at)
        })
    }

    /// A sandbox that exists and is not deleted.
    pub(crate) async fn load(&self, id: &str) -> Result<Sandbox> {
        check_sandbox_id(id)?;
        match self.store.get_sandbox(id).await? {
            Some(s) if s.state != SandboxState::Deleted => Ok(s),
            _ => Err(Error::SandboxNotFound(id.to_string())),
        }
    }

    /// Moves a sandbox to `to`, checking the state machine, and records an event.
    pub(crate) async fn transition(
        &self,
        sandbox: &mut Sandbox,
        to: SandboxState,
        detail: serde_json::Value,
    ) -> Result<()> {
        if !sandbox.state.can_become(to) {
            return Err(Error::Internal(format!(
                "illegal transition {} -> {to} for {}",
                sandbox.state, sandbox.id
            )));
        }
        tracing::info!(sandbox = %sandbox.id, from = %sandbox.state, to = %to, "state change");
        sandbox.state = to;
        if !to.is_live() {
            sandbox.runtime = None;
        }
        self.store.update_sandbox(sandbox).await?;
        self.store
            .append_event(&sandbox.id, to.as_str(), &detail)
            .await
    }

    /// Marks a sandbox failed (unless it is already deleted) and records why.
    pub(crate) async fn fail(&self, id: &str, reason: String) -> Result<()> {
        let _guard = self.lock(id).await;
        let Some(mut s) = self.store.get_sandbox(id).await? else {
            return Ok(());
        };
        if !s.state.claims_vm() {
            return Ok(());
        }
        tracing::warn!(sandbox = %id, %reason, "sandbox failed");
        self.record_error(&mut s, reason).await
    }

    /// Records why a sandbox failed in its `error` and moves it to `error` (the caller holds
    /// its lock).
    pub(crate) async fn record_error(&self, sandbox: &mut Sandbox, reason: String) -> Result<()> {
        sandbox.error = Some(reason.clone());
        self.transition(
            sandbox,
            SandboxState::Error,
            serde_json::json!({ "reason": reason }),
        )
        .await
    }

    /// Notes that a command used the sandbox (drives idle-based lifecycle rules).
    pub(crate) async fn touch(&self, sandbox: &Sandbox) {
        self.seen
            .lock()
            .expect("engine activity")
            .insert(sandbox.id.clone(), OffsetDateTime::now_utc());
        let now = Instant::now();
        let due = {
            let mut act = self.activity.lock().expect("engine activity");
            let last = act
                .entry(sandbox.id.clone())
                .or_insert(now - ACTIVITY_FLUSH);
            if now.duration_since(*last) >= ACTIVITY_FLUSH {
                *last = now;
                true
            } else {
                false
            }
        };
        if due {
            let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
            if let Err(e) = self.store.touch_sandbox(&sandbox.id, now_ms).await {
                tracing::warn!(sandbox = %sandbox.id, error = %e, "could not record activity");
            }
        }
    }
}
