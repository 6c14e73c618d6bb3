//! What front ends change on a sandbox after create, and lookups beyond the id: names, labels
//! (metadata), lifecycle rules, archiving, activity, and the templates sandboxes start from.
//!
//! Names are unique among sandboxes that are not deleted (the store enforces it too, so two racing
//! creates cannot both win). Lifecycle rules are enforced by [`crate::lifecycle`]; this module
//! only stores them.

use std::collections::BTreeMap;

use crate::commands::sandbox::{check_pairs, require};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::check_sandbox_id;
use crate::model::{LifecycleRules, Sandbox, SandboxState};

/// Longest sandbox name.
const MAX_NAME_LEN: usize = 255;

/// Root disk size of templates that do not say otherwise, MiB.
pub const DEFAULT_TEMPLATE_DISK_MIB: u64 = platinum_hostagent::image::DEFAULT_DISK_SIZE_MIB;

/// A template a sandbox can start from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateInfo {
    /// Template name.
    pub name: String,
    /// Size of the root disk every sandbox of this template gets, MiB.
    pub disk_mib: u64,
}

/// Rejects names that are empty, too long or use characters outside `A-Z a-z 0-9 . _ -`.
pub(crate) fn check_sandbox_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "invalid sandbox name {name:?}: use 1-{MAX_NAME_LEN} of A-Z a-z 0-9 . _ -"
        )))
    }
}

impl Engine {
    /// A sandbox by id, or else by name (ids win when a name looks like another sandbox's id).
    pub async fn find_sandbox(&self, id_or_name: &str) -> Result<Sandbox> {
        if check_sandbox_id(id_or_name).is_ok()
            && let Some(s) = self.store.get_sandbox(id_or_name).await?
            && s.state != SandboxState::Deleted
        {
            return Ok(s);
        }
        if check_sandbox_name(id_or_name).is_ok()
            && let Some(s) = self.store.get_sandbox_by_name(id_or_name).await?
        {
            return Ok(s);
        }
        Err(Error::SandboxNotFound(id_or_name.to_string()))
    }

    /// Replaces all of a sandbox's metadata (labels).
    pub async fn set_metadata(
        &self,
        id: &str,
        metadata: BTreeMap<String, String>,
    ) -> Result<Sandbox> {
        check_pairs("metadata", &metadata, false)?;
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        s.metadata = metadata;
        self.store.update_sandbox(&s).await?;
        Ok(s)
    }

    /// Replaces a sandbox's lifecycle rules. They apply from the next lifecycle tick, measured
    /// from the last activity (or, for a stopped sandbox, from when it stopped).
    pub async fn set_lifecycle_rules(&self, id: &str, rules: LifecycleRules) -> Result<Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        tracing::info!(sandbox = %id, ?rules, "lifecycle rules changed");
        s.lifecycle = rules;
        self.store.update_sandbox(&s).await?;
        self.store
            .append_event(
                id,
                "lifecycle_rules",
                &serde_json::to_value(rules).unwrap_or_default(),
            )
            .await?;
        Ok(s)
    }

    /// Archives a stopped sandbox: it stays off with its disk kept, and `start` boots it again.
    pub async fn archive_sandbox(&self, id: &str) -> Result<Sandbox> {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        require(&s, "archive", &[SandboxState::Stopped])?;
        self.transition(&mut s, SandboxState::Archived, serde_json::json!({}))
            .await?;
        Ok(s)
    }

    /// Records activity now, as a command would (keeps idle rules from stopping the sandbox).
    pub async fn record_activity(&self, id: &str) -> Result<()> {
        let s = self.load(id).await?;
        self.touch(&s).await;
        Ok(())
    }

    /// The templates this host can start sandboxes from.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        self.host
            .templates()
            .into_iter()
            .map(|name| TemplateInfo {
                disk_mib: platinum_hostagent::image::template(&name)
                    .map(|t| t.disk_size_mib)
                    .unwrap_or(DEFAULT_TEMPLATE_DISK_MIB),
                name,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for ok in ["my-box", "a", "web.1_x", &"n".repeat(255)] {
            assert!(check_sandbox_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "x/y", "ü", &"n".repeat(256), "a\0"] {
            assert!(check_sandbox_name(bad).is_err(), "{bad:?}");
        }
    }
}
