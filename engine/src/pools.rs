//! The refill loop of warm pools (commands in [`crate::commands::pools`]).
//!
//! Woken by every claim and pool change, and once a second anyway, it walks the pools: pooled
//! sandboxes that are neither starting nor running (their VM died, the server restarted and
//! stopped them) are deleted; so are those restored from a template's ready snapshot that has
//! been replaced (the template's image changed), and, past the pool's size, the newest running
//! ones. Then each pool short of its size gets one more sandbox at a time (a restore, or a boot
//! while its template has no ready snapshot yet), so refilling never floods the host. A fill
//! that fails is recorded as the pool's error (shown in its status) and retried on later ticks.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

use crate::commands::templates::ReadyKey;
use crate::engine::Engine;
use crate::model::{Pool, SandboxState};

/// How often the pools are checked when nothing wakes the loop.
const TICK: Duration = Duration::from_secs(1);
/// After a failed fill, the pool waits this long before the next attempt.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// The loop's shared state.
#[derive(Debug, Default)]
pub struct Pools {
    wake: Notify,
    filling: Mutex<HashSet<String>>,
    errors: Mutex<HashMap<String, (String, Instant)>>,
    /// Pooled sandboxes running their warm-up command (reported as starting, not ready).
    warming: Mutex<HashSet<String>>,
}

impl Pools {
    /// Makes the loop look at the pools now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Why pool `id` could not be filled last time, if it could not.
    pub fn error(&self, id: &str) -> Option<String> {
        self.errors
            .lock()
            .expect("pool errors")
            .get(id)
            .map(|(e, _)| e.clone())
    }

    /// Marks a pooled sandbox as warming up (`true`) or done (`false`).
    pub fn set_warming(&self, sandbox: &str, warming: bool) {
        let mut set = self.warming.lock().expect("pool warming");
        if warming {
            set.insert(sandbox.to_string());
        } else {
            set.remove(sandbox);
        }
    }

    /// Whether a pooled sandbox is still warming up.
    pub fn is_warming(&self, sandbox: &str) -> bool {
        self.warming.lock().expect("pool warming").contains(sandbox)
    }

    /// Drops what is known of a deleted pool.
    pub fn forget(&self, id: &str) {
        self.errors.lock().expect("pool errors").remove(id);
    }
}

/// Starts the loop; it ends when the engine's background work is stopped.
pub fn spawn(engine: Arc<Engine>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                _ = engine.pools.wake.notified() => {}
                _ = tokio::time::sleep(TICK) => {}
            }
            if let Err(e) = tend(&engine).await {
                tracing::warn!(error = %e, "tending the warm pools failed");
            }
        }
    });
}

/// One pass over every pool.
async fn tend(engine: &Arc<Engine>) -> crate::error::Result<()> {
    for pool in engine.store.list_pools().await? {
        let current = current_ready(engine, &pool).await;
        let members = engine.store.pooled_sandboxes(&pool.id).await?;
        let mut keep = Vec::new();
        for s in members {
            let live = matches!(s.state, SandboxState::Creating | SandboxState::Running);
            let restored_from = s.runtime.as_ref().and_then(|r| r.start.snapshot.clone());
            let stale = pool.snapshot.is_none()
                && current.is_some()
                && restored_from.is_some()
                && restored_from != current;
            if live && !stale {
                keep.push(s);
                continue;
            }
            tracing::info!(pool = %pool.id, sandbox = %s.id, state = %s.state, stale, "removing a pooled sandbox");
            if let Err(e) = engine.kill_sandbox(&s.id).await {
                tracing::warn!(sandbox = %s.id, error = %e, "removing a pooled sandbox");
            }
        }
        let size = pool.size as usize;
        if keep.len() > size {
            let extra: Vec<_> = keep
                .iter()
                .rev()
                .filter(|s| s.state == SandboxState::Running)
                .take(keep.len() - size)
                .map(|s| s.id.clone())
                .collect();
            for id in extra {
                if let Err(e) = engine.kill_sandbox(&id).await {
                    tracing::warn!(sandbox = %id, error = %e, "draining a pool");
                }
            }
        } else if keep.len() < size {
            fill_one(engine, pool);
        }
    }
    Ok(())
}

/// The id of the ready snapshot a template pool's sandboxes should come from, if there is one.
async fn current_ready(engine: &Engine, pool: &Pool) -> Option<String> {
    if pool.snapshot.is_some() {
        return None;
    }
    let key = ReadyKey {
        template: pool.template.clone(),
        vcpus: pool.vcpus,
        memory_mib: pool.memory_mib,
    };
    let image = engine.template_image(&pool.template).await.ok()?;
    engine
        .store
        .get_snapshot(&key.name(&image.id))
        .await
        .ok()
        .flatten()
        .map(|s| s.id)
}

/// Starts one sandbox for `pool` on a task of its own, unless one is being started already.
fn fill_one(engine: &Arc<Engine>, pool: Pool) {
    let failed_recently = engine
        .pools
        .errors
        .lock()
        .expect("pool errors")
        .get(&pool.id)
        .is_some_and(|(_, at)| at.elapsed() < RETRY_AFTER);
    if failed_recently {
        return;
    }
    if !engine
        .pools
        .filling
        .lock()
        .expect("pool fills")
        .insert(pool.id.clone())
    {
        return;
    }
    let engine = engine.clone();
    tokio::spawn(async move {
        let filled = engine.fill_pool_once(&pool).await;
        let mut errors = engine.pools.errors.lock().expect("pool errors");
        match filled {
            Ok(s) => {
                tracing::debug!(pool = %pool.id, sandbox = %s.id, "pool sandbox ready");
                errors.remove(&pool.id);
            }
            Err(e) => {
                tracing::warn!(pool = %pool.id, error = %e, "filling a pool failed");
                errors.insert(pool.id.clone(), (e.to_string(), Instant::now()));
            }
        }
        drop(errors);
        engine
            .pools
            .filling
            .lock()
            .expect("pool fills")
            .remove(&pool.id);
        engine.pools.wake();
    });
}
