//! What front ends change on a sandbox after create, and lookups beyond the id: names, labels
//! (metadata), lifecycle rules, archiving, activity, and the templates sandboxes start from.
//!
//! Names are unique among sandboxes that are not deleted (the store enforces it too, so two racing
//! creates cannot both win). Lifecycle rules are enforced by [`crate::lifecycle`]; this module
//! only stores them.

use std::collections::BTreeMap;

use crate::commands::sandbox::{Pairs, check_pairs};
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
        check_pairs(Pairs::Metadata, &metadata)?;
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        s.metadata = metadata;
        self.store.update_sandbox(&s).await?;
        Ok(s)
    }

    /// Changes a sandbox's front-end attributes ([`Sandbox::attributes`]) with `change`, under
    /// the sandbox lock: concurrent changes (and concurrent metadata updates) never undo each
    /// other. Returns the sandbox as stored.
    pub async fn update_attributes<F>(&self, id: &str, change: F) -> Result<Sandbox>
    where
        F: FnOnce(&mut BTreeMap<String, String>),
    {
        let _g = self.lock(id).await;
        let mut s = self.load(id).await?;
        change(&mut s.attributes);
        check_pairs(Pairs::Attributes, &s.attributes)?;
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

    /// Records activity now, as a command would (keeps idle rules from stopping the sandbox).
    pub async fn record_activity(&self, id: &str) -> Result<()> {
        let s = self.load(id).await?;
        self.touch(&s).await;
        Ok(())
    }

    /// The templates sandboxes can start from: the host's built-in ones, then custom ones.
    pub fn templates(&self) -> Vec<TemplateInfo> {
        let disk_of = |name: &str| {
            platinum_hostagent::image::template(name)
                .map(|t| t.disk_size_mib)
                .unwrap_or(DEFAULT_TEMPLATE_DISK_MIB)
        };
        let builtin = self.host.templates().into_iter().map(|name| TemplateInfo {
            disk_mib: disk_of(&name),
            name,
        });
        let custom = self.custom_templates().into_iter().map(|t| TemplateInfo {
            disk_mib: disk_of(&t.base),
            name: t.name,
        });
        builtin.chain(custom).collect()
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

#[cfg(test)]
mod attribute_tests {
    use crate::error::ErrorCode;
    use crate::model::{Sandbox, SandboxState};
    use crate::store::Store;
    use crate::testing::engine;
    use std::collections::BTreeMap;

    fn sandbox(id: &str) -> Sandbox {
        crate::testing::sandbox(id, SandboxState::Stopped)
    }

    fn generation(s: &Sandbox) -> u64 {
        s.attributes
            .get("platinum.test/generation")
            .map_or(0, |v| v.parse().unwrap())
    }

    /// Daytona's signing-key rotation racing a labels update: before attributes were kept apart
    /// from metadata and changed under the sandbox lock, a labels update that read the sandbox
    /// before a rotation and wrote after it rolled the generation back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_rotations_and_label_updates_never_roll_back() {
        let (engine, store) = engine().await;
        let id = "a0000000000000000001";
        store.insert_sandbox(&sandbox(id)).await.unwrap();
        let mut tasks = Vec::new();
        for i in 0..50 {
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                e.update_attributes(id, |a| {
                    let next = a
                        .get("platinum.test/generation")
                        .map_or(0, |v| v.parse::<u64>().unwrap())
                        + 1;
                    a.insert("platinum.test/generation".into(), next.to_string());
                })
                .await
                .unwrap();
            }));
            let e = engine.clone();
            tasks.push(tokio::spawn(async move {
                let labels = BTreeMap::from([("round".to_string(), i.to_string())]);
                e.set_metadata(id, labels).await.unwrap();
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let s = engine.get_sandbox(id).await.unwrap();
        assert_eq!(generation(&s), 50);
        assert!(s.metadata.contains_key("round"));
        assert!(!s.metadata.keys().any(|k| k.starts_with("platinum.")));
    }

    #[tokio::test]
    async fn reserved_metadata_keys_are_refused() {
        let (engine, store) = engine().await;
        let id = "a0000000000000000002";
        store.insert_sandbox(&sandbox(id)).await.unwrap();
        let labels = BTreeMap::from([("platinum.daytona/public".to_string(), "true".to_string())]);
        let err = engine.set_metadata(id, labels).await.unwrap_err();
        assert_eq!(err.code(), ErrorCode::InvalidRequest);
        let s = engine.get_sandbox(id).await.unwrap();
        assert!(s.metadata.is_empty() && s.attributes.is_empty());
    }
}
