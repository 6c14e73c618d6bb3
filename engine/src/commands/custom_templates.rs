//! Custom templates: start a build, follow it, list, get and delete templates, upload the
//! files `copy` steps unpack. How a build runs is [`crate::builds`].
//!
//! A build request is checked whole before anything starts (names, steps, sizes, that every
//! uploaded file it names is here); a second build of a template while one runs is refused. The
//! build then runs on a task of its own and the caller follows it by id. A template that
//! sandboxes (pooled ones included) or pools use cannot be deleted; deleting one removes its
//! ready snapshots, while its layers stay as cache for later builds.

use bytes::Bytes;
use futures::Stream;
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;

use crate::builds::base::{Base, PULLED_IMAGE_TEMPLATE, resolve_base};
use crate::builds::log::BuildLog;
use crate::builds::model::{
    BuildLogEntry, BuildLogs, BuildStatus, CustomTemplate, LogLevel, MAX_BUILD_TIMEOUT_SECS,
    ProcessDefaults, StepAction, TemplateBuild, TemplateBuildRequest, TemplateSummary,
};
use crate::builds::runner::{Plan, custom_image_id};
use crate::builds::{Running, files, keys};
use crate::commands::sandbox::check_size;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::SandboxState;

/// Most steps in one build.
const MAX_STEPS: usize = 256;
/// Longest command (a step's, the start or ready command), bytes.
const MAX_COMMAND: usize = 64 * 1024;

/// What a template's image is on this host: the built-in template it boots, its layer, and the
/// content id ready snapshots are named by.
#[derive(Debug, Clone)]
pub(crate) struct TemplateImage {
    /// Content id.
    pub id: String,
    /// The built-in template (kernel, initramfs, and the disk when there is no layer).
    pub base: String,
    /// The custom template, when it is one.
    pub custom: Option<CustomTemplate>,
}

impl TemplateImage {
    /// Its disk layer.
    pub fn layer(&self) -> Option<String> {
        self.custom.as_ref().and_then(|c| c.layer.clone())
    }
}

/// Checks the name of a template to build: `[a-z0-9][a-z0-9._-]*`, at most 63 characters.
pub fn check_new_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "template name {name:?} must match [a-z0-9][a-z0-9._-]* and be at most 63 characters"
        )))
    }
}

fn check_command(what: &str, cmd: &str) -> Result<()> {
    if cmd.trim().is_empty() || cmd.len() > MAX_COMMAND || cmd.contains('\0') {
        return Err(Error::InvalidRequest(format!(
            "{what} must be a non-empty command of at most {MAX_COMMAND} bytes without NUL"
        )));
    }
    Ok(())
}

fn check_abs_path(what: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') || path.len() > 4096 || path.contains('\0') {
        return Err(Error::InvalidRequest(format!(
            "{what} {path:?} must be an absolute path"
        )));
    }
    Ok(())
}

/// Users (and `user:group` owners) as `useradd` accepts them.
fn check_user(what: &str, user: &str) -> Result<()> {
    let ok = !user.is_empty()
        && user.len() <= 65
        && user.split(':').count() <= 2
        && user.split(':').all(|part| {
            !part.is_empty()
                && part.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_-".contains(c))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidRequest(format!(
            "{what} {user:?} is not a user name"
        )))
    }
}

impl Engine {
    /// Starts a template build; returns it at once (`building`). See the module docs.
    pub async fn build_template(&self, mut req: TemplateBuildRequest) -> Result<TemplateBuild> {
        let data =
            self.config.data_dir.clone().ok_or_else(|| {
                Error::Unsupported("template builds need a data directory".into())
            })?;
        if let Some(text) = &req.dockerfile {
            if req.from_image.is_some()
                || req.from_template.is_some()
                || !req.steps.is_empty()
                || req.start_cmd.is_some()
            {
                return Err(Error::InvalidRequest(
                    "a dockerfile replaces from_image, from_template, steps and start_cmd".into(),
                ));
            }
            let parsed = crate::builds::dockerfile::parse(text, req.context.as_deref())?;
            req.from_image = Some(parsed.from_image);
            req.steps = parsed.steps;
            req.start_cmd = parsed.start_cmd;
        } else if req.context.is_some() {
            return Err(Error::InvalidRequest(
                "context goes with a dockerfile".into(),
            ));
        }
        check_new_name(&req.name)?;
        if self.host.templates().contains(&req.name) {
            return Err(Error::InvalidRequest(format!(
                "{:?} is a built-in template; build under another name",
                req.name
            )));
        }
        if req.from_image.is_some() && req.from_template.is_some() {
            return Err(Error::InvalidRequest(
                "from_image and from_template exclude each other".into(),
            ));
        }
        if req.steps.len() > MAX_STEPS {
            return Err(Error::InvalidRequest(format!("at most {MAX_STEPS} steps")));
        }
        for (i, step) in req.steps.iter().enumerate() {
            let what = |s: &str| format!("step {}: {s}", i + 1);
            match &step.action {
                StepAction::Run { command, user } => {
                    check_command(&what("the command"), command)?;
                    if let Some(u) = user {
                        check_user(&what("user"), u)?;
                    }
                }
                StepAction::Copy {
                    files: key,
                    src,
                    dest,
                    user,
                    mode,
                } => {
                    if !files::path(&data, key)?.exists() {
                        return Err(Error::InvalidRequest(what(&format!(
                            "no uploaded files with key {key}; upload them first"
                        ))));
                    }
                    if let Some(src) = src
                        && (src.contains('\0')
                            || src.starts_with('/')
                            || src.split('/').any(|c| c == ".."))
                    {
                        return Err(Error::InvalidRequest(what(&format!(
                            "src {src:?} must be a path inside the upload"
                        ))));
                    }
                    check_abs_path(&what("dest"), dest)?;
                    if let Some(u) = user {
                        check_user(&what("owner"), u)?;
                    }
                    if mode.is_some_and(|m| m > 0o7777) {
                        return Err(Error::InvalidRequest(what("mode must be at most 0o7777")));
                    }
                }
                StepAction::Env { vars } => crate::env::check_env(vars)?,
                StepAction::Workdir { path } => check_abs_path(&what("workdir"), path)?,
                StepAction::User { name } => check_user(&what("user"), name)?,
            }
        }
        if let Some(cmd) = &req.start_cmd {
            check_command("start_cmd", cmd)?;
        }
        if let Some(cmd) = &req.ready_cmd {
            check_command("ready_cmd", cmd)?;
        }
        if !(1..=MAX_BUILD_TIMEOUT_SECS).contains(&req.timeout_secs()) {
            return Err(Error::InvalidRequest(format!(
                "timeout_secs must be 1..={MAX_BUILD_TIMEOUT_SECS}"
            )));
        }
        // What it builds on, checked now so a bad base is the caller's error, not the build's.
        // A base image that names a custom template (`FROM my-template`) builds on it.
        if let Some(image) = &req.from_image
            && self.builds.template(image).is_some()
        {
            req.from_template = req.from_image.take();
        }
        let mut pull = None;
        let (base, from_image, start_layer, defaults, note, parent_size) =
            match (&req.from_template, &req.from_image) {
                (Some(t), _) => match self.builds.template(t) {
                    Some(c) => (
                        c.base.clone(),
                        c.from_image.clone(),
                        c.layer.clone(),
                        c.defaults.clone(),
                        format!("base: the template {t:?} (build {})", c.build_id),
                        Some((c.vcpus, c.memory_mib)),
                    ),
                    None if self.host.templates().contains(t) => (
                        t.clone(),
                        None,
                        None,
                        ProcessDefaults::default(),
                        format!("base: the built-in template {t:?}"),
                        None,
                    ),
                    None => return Err(Error::TemplateNotFound(t.clone())),
                },
                (None, image) => {
                    let image = image.clone().unwrap_or_else(|| "base".to_string());
                    let (template, note) = match resolve_base(&image, &self.host.templates())? {
                        Base::Builtin(resolved) => (resolved.template, resolved.note),
                        Base::Registry(reference) => {
                            let note = format!("base: {reference}, from its registry");
                            pull = Some(reference);
                            (PULLED_IMAGE_TEMPLATE.to_string(), note)
                        }
                    };
                    (
                        template,
                        Some(image),
                        None,
                        ProcessDefaults::default(),
                        note,
                        None,
                    )
                }
            };
        if req.registry_auth.is_some() && pull.is_none() {
            return Err(Error::InvalidRequest(
                "registry_auth goes with a from_image pulled from a registry".into(),
            ));
        }
        let existing = self.builds.template(&req.name);
        let (def_vcpus, def_memory) = existing
            .as_ref()
            .map(|t| (t.vcpus, t.memory_mib))
            .or(parent_size)
            .unwrap_or((self.config.default_vcpus, self.config.default_memory_mib));
        let vcpus = req.vcpus.unwrap_or(def_vcpus);
        let memory_mib = req.memory_mib.unwrap_or(def_memory);
        check_size(&self.config, vcpus, memory_mib)?;

        let build = TemplateBuild {
            id: format!("bld{}", crate::ids::new_sandbox_id()),
            template: req.name.clone(),
            status: BuildStatus::Building,
            request: req,
            cached_steps: 0,
            run_steps: 0,
            failure: None,
            log_lines: 0,
            created_at: OffsetDateTime::now_utc(),
            finished_at: None,
        };
        let log = Arc::new(BuildLog::default());
        {
            let mut running = self.builds.running.lock().expect("running builds");
            if let Some(other) = running
                .values()
                .find(|r| r.build.template == build.template)
            {
                return Err(Error::Conflict(format!(
                    "template {:?} is being built already (build {})",
                    build.template, other.build.id
                )));
            }
            running.insert(
                build.id.clone(),
                Running {
                    build: build.clone(),
                    log: log.clone(),
                },
            );
        }
        if let Err(e) = self.store.put_build(&build, &[]).await {
            self.builds
                .running
                .lock()
                .expect("running builds")
                .remove(&build.id);
            return Err(e);
        }
        tracing::info!(build = %build.id, template = %build.template, steps = build.request.steps.len(), "template build started");
        let engine = self.arc()?;
        let deadline =
            tokio::time::Instant::now() + Duration::from_secs(build.request.timeout_secs());
        let started = build.clone();
        self.spawn_tracked(async move {
            let plan = Plan {
                base_image: String::new(),
                base,
                from_image,
                start_layer,
                pull,
                defaults,
                keys: Vec::new(),
                cached: 0,
                vcpus,
                memory_mib,
                deadline,
                existing,
                base_note: note,
            };
            engine.run_build(started, plan, log).await;
        });
        Ok(build)
    }

    /// Plans (the base's image, layer keys, the cached prefix), executes and records a build.
    async fn run_build(&self, mut build: TemplateBuild, mut plan: Plan, log: Arc<BuildLog>) {
        let outcome = async {
            plan.base_image = self
                .host
                .prepare_template(&plan.base)
                .await
                .map_err(Error::from)?;
            if let Some(reference) = plan.pull.clone() {
                self.pull_base(
                    &mut plan,
                    &reference,
                    build.request.registry_auth.as_ref(),
                    &log,
                )
                .await?;
            }
            let base = keys::base_key(&plan.base_image, plan.start_layer.as_deref());
            plan.keys = keys::chain(&base, &build.request.steps);
            plan.cached =
                keys::cached_prefix(&build.request.steps, &plan.keys, build.request.force, |k| {
                    self.host.has_layer(k)
                });
            self.set_running(&build.id, |b| b.cached_steps = plan.cached as u32);
            Ok::<_, Error>(())
        }
        .await;
        let outcome = match outcome {
            Ok(()) => self.execute_build(&build, &plan, &log).await,
            Err(e) => Err(e.into()),
        };
        build.cached_steps = plan.cached as u32;
        match outcome {
            Ok((tpl, run_steps)) => {
                build.run_steps = run_steps;
                match self.record_template(&tpl, &plan).await {
                    Ok(()) => {
                        build.status = BuildStatus::Ready;
                        log.push(
                            LogLevel::Info,
                            None,
                            format!(
                                "template {:?} ready: {} steps from cache, {} run",
                                tpl.name, build.cached_steps, run_steps
                            ),
                        );
                    }
                    Err(e) => {
                        build.status = BuildStatus::Error;
                        log.push(
                            LogLevel::Error,
                            None,
                            format!("recording the template: {e}"),
                        );
                        build.failure = Some(e.into());
                    }
                }
            }
            Err(failure) => {
                log.push(
                    LogLevel::Error,
                    None,
                    format!("build failed: {}", failure.message),
                );
                build.status = BuildStatus::Error;
                build.failure = Some(failure);
            }
        }
        build.finished_at = Some(OffsetDateTime::now_utc());
        build.log_lines = log.len() as u64;
        tracing::info!(build = %build.id, template = %build.template, status = ?build.status, cached = build.cached_steps, run = build.run_steps, "template build ended");
        if let Err(e) = self.store.put_build(&build, &log.all()).await {
            tracing::error!(build = %build.id, error = %e, "recording a finished template build");
        }
        self.builds
            .running
            .lock()
            .expect("running builds")
            .remove(&build.id);
        log.close();
    }

    fn set_running(&self, id: &str, change: impl FnOnce(&mut TemplateBuild)) {
        if let Some(r) = self
            .builds
            .running
            .lock()
            .expect("running builds")
            .get_mut(id)
        {
            change(&mut r.build);
        }
    }

    /// Stores a built template and removes the ready snapshots of what it replaced.
    async fn record_template(&self, tpl: &CustomTemplate, plan: &Plan) -> Result<()> {
        self.store.put_template(tpl).await?;
        self.builds
            .templates
            .write()
            .expect("custom templates")
            .insert(tpl.name.clone(), tpl.clone());
        let kept = format!(":{}", custom_image_id(&plan.base_image, tpl));
        self.discard_ready_snapshots(
            &format!("template:{}:", tpl.name),
            |n| n.ends_with(&kept),
            "of a replaced template",
        )
        .await
    }

    /// A template build, running or ended.
    pub async fn template_build(&self, id: &str) -> Result<TemplateBuild> {
        Ok(self.template_build_logs(id, usize::MAX, 0).await?.build)
    }

    /// A build and up to `limit` lines of its log from `offset`.
    pub async fn template_build_logs(
        &self,
        id: &str,
        offset: usize,
        limit: usize,
    ) -> Result<BuildLogs> {
        let running = self
            .builds
            .running
            .lock()
            .expect("running builds")
            .get(id)
            .cloned();
        if let Some(r) = running {
            let mut build = r.build;
            build.log_lines = r.log.len() as u64;
            let entries = r.log.read(offset, limit);
            return Ok(BuildLogs {
                next_offset: (offset.min(build.log_lines as usize) + entries.len()) as u64,
                build,
                entries,
            });
        }
        let (build, log) = self
            .store
            .get_build(id)
            .await?
            .ok_or_else(|| Error::BuildNotFound(id.to_string()))?;
        let next = offset.min(log.len());
        let entries: Vec<_> = log.into_iter().skip(offset).take(limit).collect();
        Ok(BuildLogs {
            build,
            next_offset: (next + entries.len()) as u64,
            entries,
        })
    }

    /// Waits until build `id` has log lines past `offset` or ended (at most `wait`); true when
    /// it ended.
    pub async fn wait_template_build(&self, id: &str, offset: usize, wait: Duration) -> bool {
        let log = self
            .builds
            .running
            .lock()
            .expect("running builds")
            .get(id)
            .map(|r| r.log.clone());
        match log {
            Some(log) => tokio::time::timeout(wait, log.wait_past(offset))
                .await
                .unwrap_or(false),
            None => true,
        }
    }

    /// Every template: the built-in ones, then the custom ones by name.
    pub fn list_templates(&self) -> Vec<TemplateSummary> {
        let builtin = self.host.templates();
        self.templates()
            .into_iter()
            .map(|t| TemplateSummary {
                builtin: builtin.contains(&t.name),
                custom: self.builds.template(&t.name),
                name: t.name,
                disk_mib: t.disk_mib,
            })
            .collect()
    }

    /// One template, built in or custom (by name, or a custom one by id).
    pub fn get_template(&self, name_or_id: &str) -> Result<TemplateSummary> {
        let name = self
            .custom_template(name_or_id)
            .map_or_else(|_| name_or_id.to_string(), |t| t.name);
        self.list_templates()
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::TemplateNotFound(name_or_id.to_string()))
    }

    /// Every custom template, by name.
    pub fn custom_templates(&self) -> Vec<CustomTemplate> {
        self.builds
            .templates
            .read()
            .expect("custom templates")
            .values()
            .cloned()
            .collect()
    }

    /// The custom template called `name_or_id`.
    pub fn custom_template(&self, name_or_id: &str) -> Result<CustomTemplate> {
        let templates = self.builds.templates.read().expect("custom templates");
        templates
            .get(name_or_id)
            .or_else(|| templates.values().find(|t| t.id == name_or_id))
            .cloned()
            .ok_or_else(|| Error::TemplateNotFound(name_or_id.to_string()))
    }

    /// Deletes a custom template (refused while sandboxes, pools or a build use it); its ready
    /// snapshots go with it, its layers stay as cache.
    pub async fn delete_template(&self, name_or_id: &str) -> Result<()> {
        if self.host.templates().iter().any(|t| t == name_or_id) {
            return Err(Error::InvalidRequest(format!(
                "{name_or_id:?} is a built-in template and cannot be deleted"
            )));
        }
        let tpl = self.custom_template(name_or_id)?;
        if let Some(build) = self.builds.running_for(&tpl.name) {
            return Err(Error::Conflict(format!(
                "template {:?} is being built (build {build}); delete it after the build",
                tpl.name
            )));
        }
        let live: Vec<SandboxState> = SandboxState::ALL
            .iter()
            .copied()
            .filter(|s| *s != SandboxState::Deleted)
            .collect();
        let users = self
            .store
            .sandboxes_in_states(&live)
            .await?
            .into_iter()
            .filter(|s| s.template == tpl.name)
            .count();
        let pools = self
            .store
            .list_pools()
            .await?
            .into_iter()
            .filter(|p| p.template == tpl.name)
            .count();
        if users > 0 || pools > 0 {
            return Err(Error::Conflict(format!(
                "template {:?} is in use by {users} sandbox(es) and {pools} pool(s); delete those first",
                tpl.name
            )));
        }
        self.store.delete_template(&tpl.name).await?;
        self.builds
            .templates
            .write()
            .expect("custom templates")
            .remove(&tpl.name);
        self.discard_ready_snapshots(
            &format!("template:{}:", tpl.name),
            |_| false,
            "of a deleted template",
        )
        .await?;
        tracing::info!(template = %tpl.name, "custom template deleted");
        Ok(())
    }

    /// Stores files for `copy` steps under `key`; with `verify`, the body's SHA-256 must be
    /// `key`. At most the upload limit. Returns the size.
    pub async fn upload_template_files<S, E>(&self, key: &str, body: S, verify: bool) -> Result<u64>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let data =
            self.config.data_dir.as_deref().ok_or_else(|| {
                Error::Unsupported("template builds need a data directory".into())
            })?;
        files::store(data, key, body, self.config.max_upload_bytes, verify).await
    }

    /// Whether files with `key` were uploaded.
    pub fn has_template_files(&self, key: &str) -> Result<bool> {
        let data =
            self.config.data_dir.as_deref().ok_or_else(|| {
                Error::Unsupported("template builds need a data directory".into())
            })?;
        Ok(files::path(data, key)?.exists())
    }

    /// What `name`'s image is on this host (builds the base's image when it is not yet).
    pub(crate) async fn template_image(&self, name: &str) -> Result<TemplateImage> {
        let custom = self.builds.template(name);
        let base = custom
            .as_ref()
            .map_or(name, |c| c.base.as_str())
            .to_string();
        let base_image = self.host.prepare_template(&base).await?;
        let id = match &custom {
            Some(c) => custom_image_id(&base_image, c),
            None => base_image,
        };
        Ok(TemplateImage { id, base, custom })
    }

    /// The default size (vCPUs, MiB) of `name`'s sandboxes: a custom template's own, else the
    /// engine's.
    pub(crate) fn template_size(&self, name: &str) -> (u32, u32) {
        self.builds
            .template(name)
            .map(|t| (t.vcpus, t.memory_mib))
            .unwrap_or((self.config.default_vcpus, self.config.default_memory_mib))
    }

    /// Whether sandboxes can start from template `name` (built in or custom).
    pub(crate) fn template_exists(&self, name: &str) -> bool {
        self.host.templates().iter().any(|t| t == name) || self.builds.template(name).is_some()
    }

    /// At start: loads the custom templates and fails the builds a stop cut short.
    pub(crate) async fn load_custom_templates(&self) -> Result<()> {
        let templates = self.store.custom_templates().await?;
        *self.builds.templates.write().expect("custom templates") =
            templates.into_iter().map(|t| (t.name.clone(), t)).collect();
        for mut build in self.store.builds_in(BuildStatus::Building).await? {
            let mut log = self
                .store
                .get_build(&build.id)
                .await?
                .map(|(_, log)| log)
                .unwrap_or_default();
            let message = "the server stopped during the build".to_string();
            log.push(BuildLogEntry {
                timestamp: OffsetDateTime::now_utc(),
                level: LogLevel::Error,
                message: message.clone(),
                step: None,
            });
            build.status = BuildStatus::Error;
            build.failure = Some(crate::builds::model::BuildFailure {
                message,
                step: None,
                command: None,
                exit_code: None,
                last_output: Vec::new(),
            });
            build.finished_at = Some(OffsetDateTime::now_utc());
            build.log_lines = log.len() as u64;
            self.store.put_build(&build, &log).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_users_and_paths_are_checked() {
        for ok in ["web", "my-app.v2", "a_b", "0x"] {
            check_new_name(ok).unwrap();
        }
        for bad in ["", "Web", "-x", "a/b", "a:b", &"n".repeat(64)] {
            assert!(check_new_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["root", "user", "user:user", "_svc", "www-data"] {
            check_user("user", ok).unwrap();
        }
        for bad in ["", "Root", "a b", "a:b:c", "x;rm", ":g"] {
            assert!(check_user("user", bad).is_err(), "{bad:?}");
        }
        check_abs_path("dest", "/app/").unwrap();
        assert!(check_abs_path("dest", "app").is_err());
        assert!(check_command("c", "  ").is_err());
        assert!(check_command("c", "a\0b").is_err());
    }
}
