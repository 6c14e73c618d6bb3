//! Running a build: steps in a builder VM, a layer after each step that changes the disk, the
//! start command checked, the ready snapshot taken, and only then the template recorded.
//!
//! The builder VM is an ordinary VM of the base (or of the layer the cache reached) that no
//! sandbox row names; it is checked against the host's limits like a create and removed however
//! the build ends. Its steps trust what the host trusts, as the image builder's setup commands
//! do: the host's CA bundle is written to the builder's `/tmp` (a tmpfs, so never part of a
//! layer) and named by `SSL_CERT_FILE`, `PIP_CERT` and the like in the steps' environment, and
//! pip may install into the system Python (`PIP_BREAK_SYSTEM_PACKAGES=1`, what the SDKs' base
//! images allow). Neither reaches the template's sandboxes. A build that fails, times out or is cut short by a shutdown leaves its layers
//! (each one whole: they are the cache) but no template, and an existing template of that name
//! stays as it was.

use platinum_hostagent::host::CreateVm;
use platinum_hostagent::host::snapshot::AfterSave;
use platinum_protocol::{Command, ExecSpec, PathRequest, WriteFile};
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;
use tokio::time::Instant;

use super::log::{BuildLog, LineSplitter};
use super::model::{
    BuildFailure, BuildStep, CustomTemplate, LogLevel, ProcessDefaults, StepAction, TemplateBuild,
};
use crate::commands::templates::{ReadyKey, builder_sandbox};
use crate::engine::Engine;
use crate::error::Error;
use crate::model::SnapshotKind;
use crate::process::{ExecEvent, ExecStream, ExitStatus};

/// Lines of a failed step's output its failure reports.
const FAILURE_LINES: usize = 20;
/// How long one run of a ready command may take.
const READY_CMD_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause between runs of a ready command.
const READY_POLL: Duration = Duration::from_millis(500);
/// How long a start command may take to be ready when a sandbox boots.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// Tag of the start command's process (`list_processes` shows it).
const START_TAG: &str = "template-start";

/// Unpacks an uploaded archive (`$ARCHIVE`) and copies what `$SRC` names in it (a path or a glob
/// relative to the archive's root, `*` matching dot files too; empty = all of it) to `$DEST`
/// with Docker's `COPY` rules, then sets `$OWNER` and `$MODE` on what it copied. Runs as root in
/// the builder VM with `/bin/sh`, so POSIX shell and the tools busybox has too (images pulled
/// from registries may have no bash).
const COPY_SCRIPT: &str = r#"set -eu
tmp=$(mktemp -d /tmp/.platinum-copy.XXXXXX)
list="$tmp.list"
copied="$tmp.copied"
# Not every tar (busybox's) recognises gzip on its own.
if [ "$(head -c 2 "$ARCHIVE" | od -An -tx1 | tr -d ' \n')" = 1f8b ]; then
  gzip -dc "$ARCHIVE" > "$tmp.tar"
  mv "$tmp.tar" "$ARCHIVE"
fi
tar -x -o -f "$ARCHIVE" -C "$tmp"
rm -f "$ARCHIVE"
cd "$tmp"
src=${SRC#./}
if [ "$src" = . ]; then src=; fi
if [ -n "$src" ]; then
  # One level per component, so that `*` never matches across a `/`.
  depth=$(printf '%s\n' "$src" | tr -s '/' '\n' | grep -c .)
  find . -mindepth "$depth" -maxdepth "$depth" -path "./${src%/}" > "$list"
else
  echo . > "$list"
fi
n=$(grep -c '' "$list" || true)
if [ "$n" -eq 0 ]; then echo "nothing in the upload matches '$SRC'" >&2; exit 1; fi
: > "$copied"
copy_into() { mkdir -p "$DEST"; cp -a "$1" "$DEST/"; printf '%s\n' "${DEST%/}/$(basename "$1")" >> "$copied"; }
while IFS= read -r m; do
  if [ -d "$m" ]; then
    # A directory's contents, each on its own: `cp -a dir/. dest` would give dest the mode of
    # the directory copied from (a private temporary one for the whole upload).
    mkdir -p "$DEST"
    for c in "$m"/* "$m"/.[!.]* "$m"/..?*; do
      if [ -e "$c" ] || [ -L "$c" ]; then copy_into "$c"; fi
    done
  elif [ "${DEST%/}" != "$DEST" ] || [ -d "$DEST" ] || [ "$n" -gt 1 ]; then
    copy_into "$m"
  else
    mkdir -p "$(dirname "$DEST")"
    cp -a "$m" "$DEST"
    printf '%s\n' "$DEST" >> "$copied"
  fi
done < "$list"
while IFS= read -r c; do
  if [ -n "$OWNER" ]; then chown -R "$OWNER" "$c"; fi
  if [ -n "$MODE" ]; then chmod -R "$MODE" "$c"; fi
done < "$copied"
count=$(grep -c '' "$copied" || true)
cd /
rm -rf "$tmp" "$list" "$copied"
echo "copied $count entries to $DEST""#;

/// Makes a working directory and hands a new one to the user that works there.
const WORKDIR_SCRIPT: &str = r#"set -eu
if [ ! -d "$DIR" ]; then mkdir -p "$DIR"; chown "$OWNER" "$DIR"; fi"#;

/// Everything a build needs that is decided before it runs.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// The built-in template it builds on.
    pub base: String,
    /// That template's image id on this host.
    pub base_image: String,
    /// The base as the request named it.
    pub from_image: Option<String>,
    /// The layer of the template it builds on, if that is a custom one (or the pulled image's).
    pub start_layer: Option<String>,
    /// An image to pull from its registry before anything else: its full reference.
    pub pull: Option<String>,
    /// What the template it builds on gives processes.
    pub defaults: ProcessDefaults,
    /// The key after each step.
    pub keys: Vec<String>,
    /// Leading steps taken from the cache.
    pub cached: usize,
    /// The builder's and the template's size.
    pub vcpus: u32,
    /// MiB.
    pub memory_mib: u32,
    /// When the build must be over.
    pub deadline: Instant,
    /// The template this build replaces.
    pub existing: Option<CustomTemplate>,
    /// The base line for the log.
    pub base_note: String,
}

/// The image id of a custom template: its base's image, its layer and what its processes get,
/// so that a change to any of them gives its ready snapshots a new name.
pub(crate) fn custom_image_id(base_image: &str, tpl: &CustomTemplate) -> String {
    let mut h = blake3::Hasher::new();
    h.update(b"platinum custom template image v1\0");
    h.update(base_image.as_bytes());
    h.update(b"\0");
    h.update(tpl.layer.as_deref().unwrap_or("").as_bytes());
    h.update(b"\0");
    let what = serde_json::json!({
        "defaults": tpl.defaults,
        "start_cmd": tpl.start_cmd,
        "ready_cmd": tpl.ready_cmd,
    });
    h.update(what.to_string().as_bytes());
    h.finalize().to_hex()[..32].to_string()
}

/// A step's one-line description for the log.
fn describe(step: &BuildStep) -> String {
    match &step.action {
        StepAction::Run { command, user } => match user {
            Some(u) => format!("RUN (as {u}) {command}"),
            None => format!("RUN {command}"),
        },
        StepAction::Copy { files, dest, .. } => {
            format!("COPY {} -> {dest}", &files[..12.min(files.len())])
        }
        StepAction::Env { vars } => {
            format!("ENV {}", vars.keys().cloned().collect::<Vec<_>>().join(" "))
        }
        StepAction::Workdir { path } => format!("WORKDIR {path}"),
        StepAction::User { name } => format!("USER {name}"),
    }
}

/// What a step leaves for later steps (environment, directory, user).
fn apply_defaults(defaults: &mut ProcessDefaults, action: &StepAction) {
    match action {
        StepAction::Env { vars } => defaults
            .env
            .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone()))),
        StepAction::Workdir { path } => defaults.workdir = Some(path.clone()),
        StepAction::User { name } => defaults.user = Some(name.clone()),
        StepAction::Run { .. } | StepAction::Copy { .. } => {}
    }
}

/// Who runs a process of these defaults.
fn user_of(defaults: &ProcessDefaults) -> String {
    defaults
        .user
        .clone()
        .unwrap_or_else(|| crate::env::DEFAULT_USER.to_string())
}

/// A failure of the build itself (not of one step).
fn failure(message: impl Into<String>) -> BuildFailure {
    BuildFailure {
        message: message.into(),
        step: None,
        command: None,
        exit_code: None,
        last_output: Vec::new(),
    }
}

impl From<Error> for BuildFailure {
    fn from(e: Error) -> Self {
        failure(e.to_string())
    }
}

/// Where the host's CA bundle is in a builder VM.
const HOST_CA_IN_BUILDER: &str = "/tmp/platinum-host-ca.crt";

/// The builder VM of a running build, if one was started, and what its steps' environment
/// gets on top of the template's.
#[derive(Default)]
struct Builder {
    id: Option<String>,
    env: BTreeMap<String, String>,
}

impl Engine {
    /// Runs the build and returns the template it made. See the module docs.
    pub(crate) async fn execute_build(
        &self,
        build: &TemplateBuild,
        plan: &Plan,
        log: &BuildLog,
    ) -> Result<(CustomTemplate, u32), BuildFailure> {
        let mut builder = Builder::default();
        let made = tokio::select! {
            made = self.execute_in(build, plan, log, &mut builder) => made,
            _ = tokio::time::sleep_until(plan.deadline) => Err(failure(format!(
                "the build took longer than its timeout of {} s",
                build.request.timeout_secs()
            ))),
            _ = self.shutdown.cancelled() => Err(failure("the server shut down during the build")),
        };
        if let Some(id) = builder.id.take()
            && let Err(e) = self.host.destroy(&id).await
        {
            tracing::warn!(vm = %id, error = %e, "removing a template builder VM");
        }
        made
    }

    async fn execute_in(
        &self,
        build: &TemplateBuild,
        plan: &Plan,
        log: &BuildLog,
        builder: &mut Builder,
    ) -> Result<(CustomTemplate, u32), BuildFailure> {
        let req = &build.request;
        let total = req.steps.len();
        log.push(LogLevel::Info, None, plan.base_note.clone());
        let mut defaults = plan.defaults.clone();
        let mut layer = plan.start_layer.clone();
        for (i, step) in req.steps[..plan.cached].iter().enumerate() {
            apply_defaults(&mut defaults, &step.action);
            if step.action.changes_disk() {
                layer = Some(plan.keys[i].clone());
            }
            log.push(
                LogLevel::Info,
                Some(i as u32 + 1),
                format!("[{}/{total}] CACHED {}", i + 1, describe(step)),
            );
        }
        let mut run_steps = 0u32;
        for (i, step) in req.steps.iter().enumerate().skip(plan.cached) {
            let n = i as u32 + 1;
            log.push(
                LogLevel::Info,
                Some(n),
                format!("[{n}/{total}] {}", describe(step)),
            );
            if !step.action.changes_disk() {
                apply_defaults(&mut defaults, &step.action);
                continue;
            }
            run_steps += 1;
            let id = match &builder.id {
                Some(id) => id.clone(),
                None => {
                    self.start_builder(plan, layer.as_deref(), log, builder)
                        .await?
                }
            };
            let started = std::time::Instant::now();
            self.run_step(&id, step, n, &defaults, &builder.env, plan.deadline, log)
                .await?;
            apply_defaults(&mut defaults, &step.action);
            let guest = self.host.guest(&id).await.map_err(Error::from)?;
            guest.sync().await.map_err(Error::from)?;
            // A layer is at most the disk's size; the host keeps its free-disk reserve.
            let reserve = self.config.min_free_disk_mib << 20;
            if let Some(free) = self.host.disk_free_bytes()
                && free < reserve
            {
                return Err(BuildFailure {
                    step: Some(n),
                    ..failure(format!(
                        "no space for the layer of step {n}: {} MiB free, {} MiB kept free",
                        free >> 20,
                        reserve >> 20
                    ))
                });
            }
            let bytes = self
                .host
                .commit_layer(&id, &plan.keys[i])
                .await
                .map_err(Error::from)?;
            layer = Some(plan.keys[i].clone());
            log.push(
                LogLevel::Info,
                Some(n),
                format!(
                    "[{n}/{total}] done in {:.1} s; layer {} ({} MiB)",
                    started.elapsed().as_secs_f64(),
                    &plan.keys[i][..12],
                    bytes >> 20
                ),
            );
        }

        let now = time::OffsetDateTime::now_utc();
        let tpl = CustomTemplate {
            name: req.name.clone(),
            id: plan
                .existing
                .as_ref()
                .map(|t| t.id.clone())
                .unwrap_or_else(|| format!("tpl{}", crate::ids::new_sandbox_id())),
            base: plan.base.clone(),
            from_image: plan.from_image.clone(),
            layer,
            defaults,
            start_cmd: req.start_cmd.clone(),
            ready_cmd: req.ready_cmd.clone(),
            vcpus: plan.vcpus,
            memory_mib: plan.memory_mib,
            build_id: build.id.clone(),
            build_count: plan.existing.as_ref().map_or(0, |t| t.build_count) + 1,
            created_at: plan.existing.as_ref().map_or(now, |t| t.created_at),
            updated_at: now,
        };
        self.finish_template(&tpl, plan, log, builder).await?;
        Ok((tpl, run_steps))
    }

    /// Checks the start command and takes the ready snapshot, in the builder VM (started when
    /// every step came from the cache), unless a ready snapshot of this exact image exists.
    async fn finish_template(
        &self,
        tpl: &CustomTemplate,
        plan: &Plan,
        log: &BuildLog,
        builder: &mut Builder,
    ) -> Result<(), BuildFailure> {
        let snapshots = self.config.template_snapshots && self.config.data_dir.is_some();
        let key = ReadyKey {
            template: tpl.name.clone(),
            vcpus: tpl.vcpus,
            memory_mib: tpl.memory_mib,
        };
        let name = key.name(&custom_image_id(&plan.base_image, tpl));
        let have_snapshot = snapshots
            && self
                .store
                .get_snapshot(&name)
                .await
                .map_err(BuildFailure::from)?
                .is_some();
        if have_snapshot {
            log.push(LogLevel::Info, None, "ready snapshot: cached");
            return Ok(());
        }
        if !snapshots && tpl.start_cmd.is_none() {
            return Ok(());
        }
        let id = match &builder.id {
            Some(id) => id.clone(),
            None => {
                self.start_builder(plan, tpl.layer.as_deref(), log, builder)
                    .await?
            }
        };
        if tpl.start_cmd.is_some() {
            self.start_template_process(&id, tpl, Some(log), plan.deadline)
                .await?;
        }
        if !snapshots {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let sandbox = builder_sandbox(&id, &key);
        let snap = self
            .take_snapshot(
                &sandbox,
                SnapshotKind::Template,
                Some(name),
                AfterSave::Exit,
            )
            .await
            .map_err(|e| failure(format!("taking the ready snapshot: {e}")))?;
        log.push(
            LogLevel::Info,
            None,
            format!(
                "ready snapshot {} taken in {:.1} s ({} MiB)",
                snap.id,
                started.elapsed().as_secs_f64(),
                snap.size_bytes >> 20
            ),
        );
        Ok(())
    }

    /// Boots the builder VM from `layer` (or the base's own disk).
    async fn start_builder(
        &self,
        plan: &Plan,
        layer: Option<&str>,
        log: &BuildLog,
        builder: &mut Builder,
    ) -> Result<String, BuildFailure> {
        let id = crate::ids::new_sandbox_id();
        let key = ReadyKey {
            template: plan.base.clone(),
            vcpus: plan.vcpus,
            memory_mib: plan.memory_mib,
        };
        {
            let _admitting = self.admission.lock().await;
            self.admit(&builder_sandbox(&id, &key)).await?;
        }
        log.push(
            LogLevel::Info,
            None,
            format!(
                "starting the builder VM ({} vCPUs, {} MiB) from {}",
                plan.vcpus,
                plan.memory_mib,
                match layer {
                    Some(l) => format!("layer {}", &l[..12]),
                    None => format!("the {} image", plan.base),
                }
            ),
        );
        builder.id = Some(id.clone());
        let started = std::time::Instant::now();
        self.boot_bounded(self.host.create(CreateVm {
            id: id.clone(),
            template: plan.base.clone(),
            layer: layer.map(str::to_string),
            vcpus: plan.vcpus,
            memory_mib: plan.memory_mib,
            env: Default::default(),
            transport: None,
            internet: None,
            egress: Default::default(),
        }))
        .await
        .map_err(|e| failure(format!("starting the builder VM: {e}")))?;
        builder.env = self.builder_env(&id).await?;
        log.push(
            LogLevel::Info,
            None,
            format!(
                "builder VM ready in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        );
        Ok(id)
    }

    /// Puts the host's CA bundle into builder VM `id` and returns the environment that makes
    /// the steps' tools use it (see the module docs).
    async fn builder_env(&self, id: &str) -> Result<BTreeMap<String, String>, BuildFailure> {
        let mut env = BTreeMap::from([("PIP_BREAK_SYSTEM_PACKAGES".to_string(), "1".to_string())]);
        let Some(ca) = platinum_hostagent::image::host_ca_bundle() else {
            return Ok(env);
        };
        let bundle = tokio::fs::read(&ca).await.map_err(|e| {
            failure(format!(
                "reading the host's CA bundle {}: {e}",
                ca.display()
            ))
        })?;
        let body = futures::stream::once(async move {
            Ok::<_, platinum_hostagent::Error>(bytes::Bytes::from(bundle))
        });
        self.write_as_root(id, HOST_CA_IN_BUILDER, 0o644, body)
            .await
            .map_err(|e| {
                failure(format!(
                    "copying the host's CA bundle into the builder: {e}"
                ))
            })?;
        for var in [
            "SSL_CERT_FILE",
            "NODE_EXTRA_CA_CERTS",
            "PIP_CERT",
            "REQUESTS_CA_BUNDLE",
            "CURL_CA_BUNDLE",
            "GIT_SSL_CAINFO",
        ] {
            env.insert(var.to_string(), HOST_CA_IN_BUILDER.to_string());
        }
        Ok(env)
    }

    /// Runs one disk step in the builder VM.
    #[allow(clippy::too_many_arguments)]
    async fn run_step(
        &self,
        id: &str,
        step: &BuildStep,
        n: u32,
        defaults: &ProcessDefaults,
        build_env: &BTreeMap<String, String>,
        deadline: Instant,
        log: &BuildLog,
    ) -> Result<(), BuildFailure> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut spec = ExecSpec::shell("");
        spec.env = build_env.clone();
        spec.env
            .extend(defaults.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        spec.timeout_ms = Some(remaining.as_millis().max(1) as u64);
        let command = match &step.action {
            StepAction::Run { command, user } => {
                spec.command = Command::Shell(command.clone());
                spec.cwd = defaults.workdir.clone();
                spec.user = Some(user.clone().unwrap_or_else(|| user_of(defaults)));
                command.clone()
            }
            StepAction::Copy {
                files,
                src,
                dest,
                user,
                mode,
            } => {
                let archive = self.upload_to_builder(id, files).await?;
                spec.command =
                    Command::Argv(vec!["/bin/sh".into(), "-c".into(), COPY_SCRIPT.into()]);
                spec.user = Some("root".into());
                spec.env.insert("ARCHIVE".into(), archive);
                spec.env
                    .insert("SRC".into(), src.clone().unwrap_or_default());
                spec.env.insert("DEST".into(), dest.clone());
                spec.env
                    .insert("OWNER".into(), user.clone().unwrap_or_default());
                spec.env.insert(
                    "MODE".into(),
                    mode.map(|m| format!("{m:o}")).unwrap_or_default(),
                );
                describe(step)
            }
            StepAction::Workdir { path } => {
                spec.command =
                    Command::Argv(vec!["/bin/sh".into(), "-c".into(), WORKDIR_SCRIPT.into()]);
                spec.user = Some("root".into());
                spec.env.insert("DIR".into(), path.clone());
                spec.env.insert("OWNER".into(), user_of(defaults));
                describe(step)
            }
            StepAction::Env { .. } | StepAction::User { .. } => return Ok(()),
        };
        let guest = self.host.guest(id).await.map_err(Error::from)?;
        let stream = ExecStream::new(guest.exec(spec).await.map_err(|e| BuildFailure {
            step: Some(n),
            command: Some(command.clone()),
            ..failure(format!("step {n} could not start: {}", Error::from(e)))
        })?);
        let (exit, tail) = follow(stream, log, Some(n)).await;
        let exit = exit.map_err(|e| BuildFailure {
            step: Some(n),
            command: Some(command.clone()),
            last_output: tail.iter().cloned().collect(),
            ..failure(format!("step {n}: {e}"))
        })?;
        if exit.code == Some(0) {
            return Ok(());
        }
        let how = if exit.timed_out {
            "ran past the build's timeout".to_string()
        } else {
            format!("exited with code {}", exit.shell_code())
        };
        log.push(
            LogLevel::Error,
            Some(n),
            format!("step {n} {how}: {command}"),
        );
        Err(BuildFailure {
            message: format!("step {n} {how}: {command}"),
            step: Some(n),
            command: Some(command),
            exit_code: Some(exit.shell_code()),
            last_output: tail.into_iter().collect(),
        })
    }

    /// Writes uploaded file `key` into the builder VM; returns its path there.
    async fn upload_to_builder(&self, id: &str, key: &str) -> Result<String, BuildFailure> {
        let data = self
            .config
            .data_dir
            .as_deref()
            .ok_or_else(|| failure("copy steps need a data directory"))?;
        let path = super::files::path(data, key)?;
        let file = tokio::fs::File::open(&path).await.map_err(|_| {
            failure(format!(
                "no uploaded files with key {key}; upload them first"
            ))
        })?;
        let body = futures::StreamExt::map(tokio_util::io::ReaderStream::new(file), |chunk| {
            chunk.map_err(|e| platinum_hostagent::Error::io("reading uploaded files", e))
        });
        let at = format!("/tmp/.platinum-upload-{}", crate::ids::new_sandbox_id());
        self.write_as_root(id, &at, 0o600, body)
            .await
            .map_err(|e| failure(format!("copying uploaded files into the builder: {e}")))?;
        Ok(at)
    }

    /// Writes a file into VM `id` as root.
    async fn write_as_root<S>(
        &self,
        id: &str,
        path: &str,
        mode: u32,
        body: S,
    ) -> crate::error::Result<()>
    where
        S: futures::Stream<Item = platinum_hostagent::Result<bytes::Bytes>> + Send,
    {
        let guest = self.host.guest(id).await?;
        let req = WriteFile {
            at: PathRequest {
                path: path.to_string(),
                user: Some("root".into()),
            },
            mode: Some(mode),
            append: false,
            create_parents: true,
            owner: None,
            metadata: Default::default(),
        };
        guest.write_file(req, body).await?;
        Ok(())
    }

    /// Starts `tpl`'s start command in VM `id` and waits until its ready command succeeds (at
    /// once without one). Its output goes to `log` while it gets ready, when there is one.
    pub(crate) async fn start_template_process(
        &self,
        id: &str,
        tpl: &CustomTemplate,
        log: Option<&BuildLog>,
        deadline: Instant,
    ) -> Result<(), BuildFailure> {
        if tpl.start_cmd.is_none() && tpl.ready_cmd.is_none() {
            return Ok(());
        }
        let start_cmd = tpl.start_cmd.clone().unwrap_or_default();
        let guest = self.host.guest(id).await.map_err(Error::from)?;
        let mut spec = ExecSpec::shell(start_cmd.clone());
        spec.env = tpl.defaults.env.clone();
        spec.cwd = tpl.defaults.workdir.clone();
        spec.user = Some(user_of(&tpl.defaults));
        spec.tag = Some(START_TAG.into());
        let mut ready_spec = spec.clone();
        ready_spec.tag = None;
        let mut start = match &tpl.start_cmd {
            None => None,
            Some(cmd) => {
                if let Some(log) = log {
                    log.push(LogLevel::Info, None, format!("start command: {cmd}"));
                }
                Some(ExecStream::new(guest.exec(spec).await.map_err(|e| {
                    BuildFailure {
                        command: Some(cmd.clone()),
                        ..failure(format!(
                            "the start command could not start: {}",
                            Error::from(e)
                        ))
                    }
                })?))
            }
        };
        let mut lines = LineSplitter::default();
        let mut tail: VecDeque<String> = VecDeque::new();
        let started = std::time::Instant::now();
        loop {
            let ready = match &tpl.ready_cmd {
                None => true,
                Some(cmd) => {
                    ready_spec.command = Command::Shell(cmd.clone());
                    ready_spec.timeout_ms = Some(READY_CMD_TIMEOUT.as_millis() as u64);
                    let check = guest.exec(ready_spec.clone()).await.map_err(Error::from)?;
                    let (exit, _) =
                        follow(ExecStream::new(check), &BuildLog::default(), None).await;
                    exit.is_ok_and(|e| e.code == Some(0))
                }
            };
            if ready {
                if let Some(log) = log {
                    log.push(
                        LogLevel::Info,
                        None,
                        format!(
                            "start command ready after {:.1} s",
                            started.elapsed().as_secs_f64()
                        ),
                    );
                }
                // Dropping the stream detaches: the process goes on.
                return Ok(());
            }
            let pause = tokio::time::sleep(READY_POLL);
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = &mut pause => break,
                    _ = tokio::time::sleep_until(deadline) => {
                        return Err(BuildFailure {
                            command: Some(start_cmd.clone()),
                            last_output: tail.into_iter().collect(),
                            ..failure(format!(
                                "the start command was not ready after {:.0} s (ready command: {})",
                                started.elapsed().as_secs_f64(),
                                tpl.ready_cmd.as_deref().unwrap_or("")
                            ))
                        });
                    }
                    event = next_event(&mut start) => match event {
                        Ok(Some(ExecEvent::Stdout(b) | ExecEvent::Stderr(b))) => {
                            for line in lines.feed(&b) {
                                keep(&mut tail, &line);
                                if let Some(log) = log {
                                    log.push(LogLevel::Info, None, line);
                                }
                            }
                        }
                        Ok(Some(ExecEvent::Lost(_))) => {}
                        Ok(Some(ExecEvent::Exited(exit))) => {
                            return Err(BuildFailure {
                                command: Some(start_cmd.clone()),
                                exit_code: Some(exit.shell_code()),
                                last_output: tail.into_iter().collect(),
                                ..failure(format!(
                                    "the start command exited with code {} before it was ready",
                                    exit.shell_code()
                                ))
                            });
                        }
                        Ok(None) | Err(_) => {
                            return Err(failure("the start command's output ended before it was ready"));
                        }
                    }
                }
            }
        }
    }
}

/// The next event of the start command, when there is one (else never).
async fn next_event(start: &mut Option<ExecStream>) -> crate::error::Result<Option<ExecEvent>> {
    match start {
        Some(s) => s.next().await,
        None => std::future::pending().await,
    }
}

/// Keeps the last [`FAILURE_LINES`] lines.
fn keep(tail: &mut VecDeque<String>, line: &str) {
    if tail.len() == FAILURE_LINES {
        tail.pop_front();
    }
    tail.push_back(line.to_string());
}

/// Follows a process to its end, logging its output line by line; returns how it ended and
/// its last lines.
async fn follow(
    mut stream: ExecStream,
    log: &BuildLog,
    step: Option<u32>,
) -> (crate::error::Result<ExitStatus>, VecDeque<String>) {
    let mut lines = LineSplitter::default();
    let mut tail = VecDeque::new();
    let ended = loop {
        match stream.next().await {
            Ok(Some(ExecEvent::Stdout(b) | ExecEvent::Stderr(b))) => {
                for line in lines.feed(&b) {
                    keep(&mut tail, &line);
                    log.push(LogLevel::Info, step, line);
                }
            }
            Ok(Some(ExecEvent::Lost(n))) => {
                log.push(
                    LogLevel::Warn,
                    step,
                    format!("{n} bytes of output were lost"),
                );
            }
            Ok(Some(ExecEvent::Exited(exit))) => break Ok(exit),
            Ok(None) => break Err(Error::GuestUnreachable("the process's stream ended".into())),
            Err(e) => break Err(e),
        }
    };
    if let Some(line) = lines.finish() {
        keep(&mut tail, &line);
        log.push(LogLevel::Info, step, line);
    }
    (ended, tail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_env_workdir_and_user_steps() {
        let mut d = ProcessDefaults::default();
        apply_defaults(
            &mut d,
            &StepAction::Env {
                vars: [("A".to_string(), "1".to_string())].into(),
            },
        );
        apply_defaults(
            &mut d,
            &StepAction::Workdir {
                path: "/app".into(),
            },
        );
        apply_defaults(
            &mut d,
            &StepAction::User {
                name: "root".into(),
            },
        );
        assert_eq!(d.env["A"], "1");
        assert_eq!(d.workdir.as_deref(), Some("/app"));
        assert_eq!(user_of(&d), "root");
        assert_eq!(
            user_of(&ProcessDefaults::default()),
            crate::env::DEFAULT_USER
        );
    }
}
