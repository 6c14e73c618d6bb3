//! Fork: `count` copies of a running sandbox in one call. The source's state is written once
//! (its vCPUs stop only for that: the pause window, reported) into a directory no one else
//! sees, every copy is restored from it as a new sandbox with its own identity (id, hostname,
//! MAC and address, reseeded RNG), then the directory is removed. The source runs on.
//!
//! All or nothing: when one copy fails, the others are deleted and the error is returned.
//! Two forks of one source run one after the other (the source's lifecycle lock).

use platinum_hostagent::host::snapshot::{AfterSave, RestoreAs, RestoreVm};
use std::time::{Duration, Instant};

use crate::commands::sandbox::{NewVm, require};
use crate::commands::snapshots::millis;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ids::new_sandbox_id;
use crate::model::{ForkRequest, ForkResult, Sandbox, SandboxState, StartInfo, StartPath};

/// Most copies one fork makes.
pub const MAX_FORK_COUNT: u32 = 20;

impl Engine {
    /// Forks a running (or paused) sandbox into `count` new running sandboxes.
    pub async fn fork_sandbox(&self, id: &str, req: ForkRequest) -> Result<ForkResult> {
        let started = Instant::now();
        if !(1..=MAX_FORK_COUNT).contains(&req.count) {
            return Err(Error::InvalidRequest(format!(
                "count must be 1..={MAX_FORK_COUNT}, not {}",
                req.count
            )));
        }
        if let Some(name) = &req.name {
            if req.count != 1 {
                return Err(Error::InvalidRequest(format!(
                    "a name is for a single copy; asked for {} copies",
                    req.count
                )));
            }
            crate::commands::settings::check_sandbox_name(name)?;
            if self.store.get_sandbox_by_name(name).await?.is_some() {
                return Err(Error::Conflict(format!(
                    "a sandbox named {name:?} already exists"
                )));
            }
        }
        let root = self.snapshots_root()?;
        let guard = self.lock(id).await;
        let source = self.load(id).await?;
        require(
            &source,
            "fork",
            &[SandboxState::Running, SandboxState::Paused],
        )?;
        self.check_room_for_snapshot(&source)?;
        self.require_no_volumes(id, "forking it").await?;
        self.touch(&source).await;
        // Copies reach what the source may reach.
        let egress = self.store.get_egress_policy(id).await?;
        let rules = match &egress {
            Some(p) => crate::commands::egress::egress_rules(p)?,
            None => Default::default(),
        };
        // Copies hold the source's placeholders, so they are granted its secrets.
        let grants: std::collections::BTreeMap<String, String> = self
            .store
            .secret_grants(Some(&source.id), None)
            .await?
            .into_iter()
            .map(|g| (g.env, g.secret_id))
            .collect();
        let mut copies: Vec<Sandbox> = (0..req.count).map(|_| copy_of(&source)).collect();
        if let Some(first) = copies.first_mut() {
            first.name = req.name.clone();
        }
        // Every copy is admitted and inserted before any work: a fork that cannot fit makes
        // no VM (copies inserted before the refusal are deleted).
        let admitted = async {
            let _admission = self.admission.lock().await;
            for (inserted, copy) in copies.iter().enumerate() {
                if let Err(e) = self.admit(copy).await {
                    return Err((inserted, e));
                }
                self.store
                    .insert_sandbox(copy)
                    .await
                    .map_err(|e| (inserted, e))?;
                self.store
                    .set_egress_policy(&copy.id, egress.as_ref())
                    .await
                    .map_err(|e| (inserted + 1, e))?;
                if !grants.is_empty() || egress.as_ref().is_some_and(|p| !p.header_rules.is_empty())
                {
                    self.store_grants(&copy.id, &grants)
                        .await
                        .map_err(|e| (inserted + 1, e))?;
                }
            }
            Ok(())
        }
        .await;
        if let Err((inserted, e)) = admitted {
            for c in &copies[..inserted] {
                self.abandon_copy(c, &e).await;
            }
            return Err(e);
        }
        let dir = root.join(format!("fork{}", new_sandbox_id()));
        let saved = async {
            platinum_hostagent::private_file::create_dir(&dir)
                .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
            Ok::<_, Error>(
                self.host
                    .save(&source.id, &dir, AfterSave::Continue)
                    .await?,
            )
        }
        .await;
        drop(guard);
        let report = match saved {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::fs::remove_dir_all(&dir).await;
                for c in &copies {
                    self.abandon_copy(c, &e).await;
                }
                return Err(e);
            }
        };
        let restores = copies.iter().map(|copy| {
            let dir = dir.clone();
            let copy = copy.clone();
            let egress = rules.clone();
            async move {
                self.store
                    .append_event(&copy.id, "forking", &serde_json::json!({ "source": id }))
                    .await?;
                let vm = NewVm::Restore {
                    vm: RestoreVm {
                        id: copy.id.clone(),
                        snapshot_dir: dir,
                        env: copy.env.clone(),
                        restore_as: RestoreAs::New { internet: None },
                        egress,
                    },
                    start: StartInfo {
                        path: StartPath::Fork,
                        ..StartInfo::default()
                    },
                    fallback: None,
                };
                let timeout = copy.expires_at.map(|t| {
                    Duration::try_from(t - copy.created_at).unwrap_or_default()
                });
                let engine = self.arc()?;
                self.detached(
                    async move { engine.boot_new(copy, vm, timeout).await },
                    |engine, made: Sandbox| async move {
                        if let Err(e) = engine.kill_sandbox(&made.id).await {
                            tracing::error!(sandbox = %made.id, error = %e, "removing an abandoned fork");
                        }
                    },
                )
                .await
            }
        });
        let results = futures::future::join_all(restores).await;
        if let Err(e) = tokio::fs::remove_dir_all(&dir).await {
            tracing::warn!(dir = %dir.display(), error = %e, "removing a fork's state");
        }
        let mut made = Vec::new();
        let mut failure = None;
        for r in results {
            match r {
                Ok(s) => made.push(s),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        if let Some(e) = failure {
            for s in &made {
                if let Err(k) = self.kill_sandbox(&s.id).await {
                    tracing::error!(sandbox = %s.id, error = %k, "removing a copy of a failed fork");
                }
            }
            return Err(e);
        }
        self.store
            .append_event(
                id,
                "forked",
                &serde_json::json!({
                    "copies": made.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
                    "paused_ms": report.paused_ms,
                }),
            )
            .await?;
        Ok(ForkResult {
            sandboxes: made,
            source_paused_ms: report.paused_ms,
            total_ms: millis(started),
        })
    }

    /// A copy that never got a VM: recorded as failed, then deleted.
    async fn abandon_copy(&self, copy: &Sandbox, why: &Error) {
        let mut c = copy.clone();
        if let Err(e) = self
            .record_error(&mut c, format!("fork failed: {why}"))
            .await
        {
            tracing::warn!(sandbox = %c.id, error = %e, "recording a failed fork copy");
        }
        if let Err(e) = self.kill_sandbox(&c.id).await {
            tracing::warn!(sandbox = %c.id, error = %e, "removing a failed fork copy");
        }
    }
}

/// The row of a new copy of `source`: same template, size, environment, metadata and lifecycle
/// (timeout action, rules, auto-resume), no name, no front-end state, the source's timeout length
/// counted from now.
fn copy_of(source: &Sandbox) -> Sandbox {
    let mut copy = Sandbox::new_row(
        new_sandbox_id(),
        source.template.clone(),
        source.vcpus,
        source.memory_mib,
        SandboxState::Creating,
    );
    copy.env = source.env.clone();
    copy.metadata = source.metadata.clone();
    copy.attributes = source
        .attributes
        .iter()
        .filter(|(k, _)| k.as_str() == crate::model::AUTO_RESUME_ATTRIBUTE)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    copy.expires_at = source
        .expires_at
        .map(|t| copy.created_at + (t - source.created_at).max(time::Duration::ZERO));
    copy.on_timeout = source.on_timeout;
    copy.lifecycle = source.lifecycle;
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_keep_the_lifecycle_but_no_front_end_state() {
        let mut source = crate::testing::sandbox("src", SandboxState::Running);
        source.name = Some("named".into());
        source.attributes.insert(
            crate::model::AUTO_RESUME_ATTRIBUTE.to_string(),
            "true".into(),
        );
        source
            .attributes
            .insert("daytona.public".into(), "true".into());
        let copy = copy_of(&source);
        assert_ne!(copy.id, source.id);
        assert_eq!(copy.name, None);
        assert_eq!(copy.state, SandboxState::Creating);
        assert!(copy.auto_resume());
        assert_eq!(copy.attributes.len(), 1, "{:?}", copy.attributes);
        assert_eq!(copy.on_timeout, source.on_timeout);
    }
}
