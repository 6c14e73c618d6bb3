//! The shapes of custom templates and their builds (also the REST and MCP wire shapes).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// What a template build should make: a base, steps run in order inside a builder VM started
/// from it, and what sandboxes of the new template run at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct TemplateBuildRequest {
    /// Name of the template to make (or replace): `[a-z0-9][a-z0-9._-]*`, at most 63
    /// characters, not a built-in template's.
    pub name: String,
    /// Base image, as users write it: `debian:12`, `debian_slim`, `python:3.11`, `node:20` and
    /// `e2bdev/base` are the built-in Debian 12 template `base`; any other image reference
    /// (`ubuntu:24.04`, `registry.example.com/team/app:1`) is pulled from its registry; a
    /// built-in template's name names it. Default `base`. The build log says which base it used.
    #[serde(default)]
    pub from_image: Option<String>,
    /// Credentials for `from_image`'s registry (a private image). Write-only: used for the pull
    /// only, never stored, logged, answered or given to a VM.
    #[serde(default, skip_serializing_if = "never_serialized")]
    #[schema(write_only)]
    pub registry_auth: Option<RegistryAuth>,
    /// Start from an existing template instead (built-in or custom: its disk, environment,
    /// working directory and user). Exclusive with `from_image`.
    #[serde(default)]
    pub from_template: Option<String>,
    /// The steps, in order.
    #[serde(default)]
    pub steps: Vec<BuildStep>,
    /// Command started (as the template's user, in its working directory) when a sandbox of the
    /// template starts; it keeps running. The ready snapshot is taken once it is ready.
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Command run repeatedly after `start_cmd` until it exits 0 (the sandbox is ready). Default
    /// with a start command: none (ready at once).
    #[serde(default)]
    pub ready_cmd: Option<String>,
    /// vCPUs of the builder VM and the default of the template's sandboxes.
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Memory of the builder VM and the default of the template's sandboxes, MiB.
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Run every step, using no cached layer.
    #[serde(default)]
    pub force: bool,
    /// Longest the build may take, seconds (default 1800, at most 7200). A build past it is
    /// stopped and fails.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// A Dockerfile (one stage: `FROM`, `RUN`, `COPY`, `ADD`, `ENV`, `ARG`, `WORKDIR`, `USER`,
    /// `CMD`, `ENTRYPOINT`) instead of `from_image`, `steps` and `start_cmd`.
    #[serde(default)]
    pub dockerfile: Option<String>,
    /// Key of the uploaded build context (a tar archive) the Dockerfile's `COPY` reads from.
    #[serde(default)]
    pub context: Option<String>,
}

/// Keeps [`TemplateBuildRequest::registry_auth`] out of every serialization (answers, the
/// store) while the schema still documents it as a request field.
fn never_serialized(_: &Option<RegistryAuth>) -> bool {
    true
}

/// User name and password (or token) for a registry; never answered or logged.
// `Debug` (below) does not show the password.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct RegistryAuth {
    /// User name (`_json_key` with a GCP service account key as the password).
    pub username: String,
    /// Password, access token or key.
    pub password: String,
}

impl std::fmt::Debug for RegistryAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Default of [`TemplateBuildRequest::timeout_secs`].
pub const DEFAULT_BUILD_TIMEOUT_SECS: u64 = 1800;
/// Largest [`TemplateBuildRequest::timeout_secs`].
pub const MAX_BUILD_TIMEOUT_SECS: u64 = 7200;

impl TemplateBuildRequest {
    /// The build's timeout, seconds.
    pub fn timeout_secs(&self) -> u64 {
        self.timeout_secs.unwrap_or(DEFAULT_BUILD_TIMEOUT_SECS)
    }
}

/// One step of a build. A step's cache key covers it and everything before it, so a changed
/// step rebuilds from there on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct BuildStep {
    /// What the step does.
    #[serde(flatten)]
    pub action: StepAction,
    /// Run this step (and so every later one) even when a cached layer has it.
    #[serde(default)]
    pub force: bool,
}

/// What a build step does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum StepAction {
    /// Runs a shell command (`bash -c`); a non-zero exit fails the build.
    Run {
        /// The command line.
        command: String,
        /// Who runs it (default: the user set by the last `user` step, else `root`).
        #[serde(default)]
        user: Option<String>,
    },
    /// Unpacks uploaded files (a tar archive, gzip or not, uploaded under `files`) and copies
    /// them to `dest` with Docker's `COPY` rules: one file copied to a `dest` that does not end
    /// in `/` and is not a directory becomes that file; anything else lands inside `dest`.
    Copy {
        /// Key the archive was uploaded under (64 lowercase hex digits).
        files: String,
        /// What in the archive to copy: a path or a glob relative to its root (default: all of
        /// it). A directory's contents are copied into `dest`.
        #[serde(default)]
        src: Option<String>,
        /// Absolute destination in the template.
        dest: String,
        /// Owner (`user` or `user:group`) of what is copied; default root.
        #[serde(default)]
        user: Option<String>,
        /// Mode set on what is copied (e.g. 0o755).
        #[serde(default)]
        mode: Option<u32>,
    },
    /// Sets environment variables for later steps and for every process in the template's
    /// sandboxes.
    Env {
        /// Name to value.
        vars: BTreeMap<String, String>,
    },
    /// Sets the working directory of later steps and of the start command (created if missing).
    Workdir {
        /// Absolute path.
        path: String,
    },
    /// Sets who runs later steps and the start command.
    User {
        /// A user of the template (`root`, `user`, or one a step created).
        name: String,
    },
}

impl StepAction {
    /// Whether the step changes the disk (and so ends in a cached layer).
    pub fn changes_disk(&self) -> bool {
        matches!(
            self,
            StepAction::Run { .. } | StepAction::Copy { .. } | StepAction::Workdir { .. }
        )
    }
}

/// What a build (or a template) leaves for processes: environment, working directory, user.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ProcessDefaults {
    /// Environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory.
    #[serde(default)]
    pub workdir: Option<String>,
    /// User.
    #[serde(default)]
    pub user: Option<String>,
}

/// A template a build made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct CustomTemplate {
    /// Name.
    pub name: String,
    /// Id (`tpl` + 20 lowercase alphanumerics); stays across rebuilds of the name.
    pub id: String,
    /// The built-in template whose kernel and base system it builds on.
    pub base: String,
    /// The base as the build request wrote it (`python:3.11`), when it named one.
    #[serde(default)]
    pub from_image: Option<String>,
    /// The disk layer its sandboxes start from (none: the base's own disk).
    #[serde(default)]
    pub layer: Option<String>,
    /// Environment, working directory and user its processes get.
    #[serde(default)]
    pub defaults: ProcessDefaults,
    /// Started when a sandbox of it starts.
    #[serde(default)]
    pub start_cmd: Option<String>,
    /// Run until it succeeds after `start_cmd`.
    #[serde(default)]
    pub ready_cmd: Option<String>,
    /// Default vCPUs of its sandboxes.
    pub vcpus: u32,
    /// Default memory of its sandboxes, MiB.
    pub memory_mib: u32,
    /// The build that made it as it is now.
    pub build_id: String,
    /// Builds that made it, this one included.
    pub build_count: u32,
    /// When it was first built.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When it was last rebuilt.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub updated_at: OffsetDateTime,
}

/// Where a build is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BuildStatus {
    /// Running its steps.
    Building,
    /// Done: the template exists as built.
    Ready,
    /// Failed; see `failure`. Nothing of it became a template.
    Error,
}

/// How bad a log line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Details.
    Debug,
    /// Progress.
    Info,
    /// Something to look at.
    Warn,
    /// A failure.
    Error,
}

/// One line of a build's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct BuildLogEntry {
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub timestamp: OffsetDateTime,
    /// How bad.
    pub level: LogLevel,
    /// The line.
    pub message: String,
    /// The step it belongs to (1-based; none for the build itself).
    #[serde(default)]
    pub step: Option<u32>,
}

/// Why a build failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct BuildFailure {
    /// What went wrong.
    pub message: String,
    /// The step that failed (1-based), when one did.
    #[serde(default)]
    pub step: Option<u32>,
    /// Its command, when it ran one.
    #[serde(default)]
    pub command: Option<String>,
    /// Its exit code, when it exited.
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// The last lines it wrote.
    #[serde(default)]
    pub last_output: Vec<String>,
}

/// A template build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct TemplateBuild {
    /// Id (`bld` + 20 lowercase alphanumerics).
    pub id: String,
    /// The template it makes.
    pub template: String,
    /// Where it is.
    pub status: BuildStatus,
    /// What was asked.
    pub request: TemplateBuildRequest,
    /// Steps taken from cached layers instead of run.
    #[serde(default)]
    pub cached_steps: u32,
    /// Steps run.
    #[serde(default)]
    pub run_steps: u32,
    /// Why it failed.
    #[serde(default)]
    pub failure: Option<BuildFailure>,
    /// Lines in its log so far.
    #[serde(default)]
    pub log_lines: u64,
    /// When it was asked for.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When it ended.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    #[schemars(with = "Option<String>")]
    pub finished_at: Option<OffsetDateTime>,
}

/// A template sandboxes can start from: built in, or made by a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct TemplateSummary {
    /// Name (what a create's `template` names).
    pub name: String,
    /// Whether it is one of the host's built-in templates (which cannot be rebuilt or deleted).
    pub builtin: bool,
    /// Root disk size of its sandboxes, MiB.
    pub disk_mib: u64,
    /// What a build made, for a custom template.
    #[serde(default)]
    pub custom: Option<CustomTemplate>,
}

/// Every template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct TemplateList {
    /// Built-in templates first, then custom ones by name.
    pub templates: Vec<TemplateSummary>,
}

/// A build and a page of its log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct BuildLogs {
    /// The build as it is now.
    pub build: TemplateBuild,
    /// Log lines from the offset asked for.
    pub entries: Vec<BuildLogEntry>,
    /// The offset to ask for next.
    pub next_offset: u64,
}

/// Files stored for `copy` steps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct UploadedFiles {
    /// Their key (the SHA-256 of the upload, hex).
    pub key: String,
    /// Bytes.
    pub size: u64,
}
