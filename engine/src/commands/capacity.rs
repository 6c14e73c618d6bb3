//! The host's capacity: what holds a VM (callers' sandboxes and warm pools' apart), against the
//! limits in [`crate::config::EngineConfig`]; admission of a sandbox that is about to hold one.

use std::collections::HashSet;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{Capacity, Sandbox, SandboxState};

impl Engine {
    /// What holds a VM now, apart by callers' sandboxes and warm pools', against the limits.
    pub async fn capacity(&self) -> Result<Capacity> {
        let cfg = &self.config;
        let mut pooled_ids = HashSet::new();
        for pool in self.store.list_pools().await? {
            for s in self.store.pooled_sandboxes(&pool.id).await? {
                pooled_ids.insert(s.id);
            }
        }
        let mut c = Capacity {
            max_sandboxes: cfg.max_sandboxes as u64,
            max_memory_mib: cfg.max_total_memory_mib,
            sandboxes: 0,
            memory_mib: 0,
            pooled: 0,
            pooled_memory_mib: 0,
            disk_free_mib: self.host.disk_free_bytes().map(|b| b >> 20),
            min_free_disk_mib: cfg.min_free_disk_mib,
        };
        for s in self.vm_holders(None).await? {
            if pooled_ids.contains(&s.id) {
                c.pooled += 1;
                c.pooled_memory_mib += u64::from(s.memory_mib);
            } else {
                c.sandboxes += 1;
                c.memory_mib += u64::from(s.memory_mib);
            }
        }
        Ok(c)
    }

    /// Whether the host has room for `sandbox` next to everything else that holds a VM: the
    /// sandbox count, their memory, and free disk in the data directory. The caller holds
    /// [`Engine::admission`] until the state change that makes the decision true is stored.
    pub(crate) async fn admit(&self, sandbox: &Sandbox) -> Result<()> {
        let cfg = &self.config;
        let others = self.vm_holders(Some(&sandbox.id)).await?;
        if others.len() >= cfg.max_sandboxes {
            return Err(Error::CapacityExhausted(format!(
                "{} sandboxes hold a VM (limit {})",
                others.len(),
                cfg.max_sandboxes
            )));
        }
        let used: u64 = others.iter().map(|s| u64::from(s.memory_mib)).sum();
        let limit = cfg.max_total_memory_mib;
        if used + u64::from(sandbox.memory_mib) > limit {
            return Err(Error::CapacityExhausted(format!(
                "{used} MiB of sandbox memory is in use; {} MiB more exceeds the limit of {limit} MiB",
                sandbox.memory_mib
            )));
        }
        if let Some(free) = self.host.disk_free_bytes() {
            let reserve = cfg.min_free_disk_mib << 20;
            if free < reserve {
                return Err(Error::CapacityExhausted(format!(
                    "{} MiB of disk is free in the data directory; {} MiB must stay free",
                    free >> 20,
                    cfg.min_free_disk_mib
                )));
            }
        }
        Ok(())
    }

    /// Sandboxes in a state that holds a VM (pooled ones included), but `except`.
    async fn vm_holders(&self, except: Option<&str>) -> Result<Vec<Sandbox>> {
        Ok(self
            .store
            .sandboxes_in_states(&SandboxState::CLAIMS_VM)
            .await?
            .into_iter()
            .filter(|s| Some(s.id.as_str()) != except)
            .collect())
    }
}
