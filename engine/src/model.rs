//! The engine's data model: sandboxes, their states, and the request/response shapes of commands.
//!
//! These types are the wire shapes of the native REST API and the MCP server too, so they derive
//! `utoipa::ToSchema` and `schemars::JsonSchema`, and their doc comments become API documentation.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use utoipa::ToSchema;

/// Lifecycle state of a sandbox.
///
/// `creating -> running <-> paused`, `running|paused -> stopping -> stopped -> starting -> running`,
/// `running|paused -> suspended -> starting -> running` (pause to disk and resume),
/// `stopped -> archived -> starting`, any -> `error` (the VM died or its agent stopped answering),
/// any -> `deleted`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SandboxState {
    /// The VM is booting.
    Creating,
    /// A stopped sandbox is booting again from its disk.
    Starting,
    /// Ready for commands.
    Running,
    /// vCPUs stopped, memory kept; resume is instant.
    Paused,
    /// Paused to disk: memory, processes and disk are in a signed snapshot and no VM process
    /// runs (its RAM is free); resume restores it with the same id and address. A sandbox paused
    /// without its memory is `suspended` too and cold-boots from its disk on resume.
    Suspended,
    /// Shutting down.
    Stopping,
    /// VM off, disk kept; start boots it again.
    Stopped,
    /// Set aside in object storage (lifecycle rules or an explicit archive of a stopped or
    /// paused sandbox): its disk and, when it was paused, its memory image are in the archive
    /// store and nothing of it stays on the host. Start (or resume) brings it back onto any host
    /// that shares the store and database, with its processes when it was paused.
    Archived,
    /// The VM failed; see `error`.
    Error,
    /// Gone; nothing of it remains on the host.
    Deleted,
}

impl SandboxState {
    /// Every state.
    pub const ALL: [SandboxState; 10] = [
        SandboxState::Creating,
        SandboxState::Starting,
        SandboxState::Running,
        SandboxState::Paused,
        SandboxState::Suspended,
        SandboxState::Stopping,
        SandboxState::Stopped,
        SandboxState::Archived,
        SandboxState::Error,
        SandboxState::Deleted,
    ];

    /// States with a VM that is up: `running` and `paused` (see [`Self::has_vm`]).
    pub const WITH_VM: [SandboxState; 2] = [SandboxState::Running, SandboxState::Paused];

    /// Live states: the VM is up or booting. They count against the host's sandbox limit and
    /// keep their runtime info (see [`Self::is_live`]).
    pub const LIVE: [SandboxState; 4] = [
        SandboxState::Creating,
        SandboxState::Starting,
        SandboxState::Running,
        SandboxState::Paused,
    ];

    /// States in which the host may still run a VM for the sandbox: the [`Self::LIVE`] ones plus
    /// `stopping`. A sandbox in one of them whose VM is gone has failed.
    pub const CLAIMS_VM: [SandboxState; 5] = [
        SandboxState::Creating,
        SandboxState::Starting,
        SandboxState::Running,
        SandboxState::Paused,
        SandboxState::Stopping,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Creating => "creating",
            SandboxState::Starting => "starting",
            SandboxState::Running => "running",
            SandboxState::Paused => "paused",
            SandboxState::Suspended => "suspended",
            SandboxState::Stopping => "stopping",
            SandboxState::Stopped => "stopped",
            SandboxState::Archived => "archived",
            SandboxState::Error => "error",
            SandboxState::Deleted => "deleted",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "creating" => SandboxState::Creating,
            "starting" => SandboxState::Starting,
            "running" => SandboxState::Running,
            "paused" => SandboxState::Paused,
            "suspended" => SandboxState::Suspended,
            "stopping" => SandboxState::Stopping,
            "stopped" => SandboxState::Stopped,
            "archived" => SandboxState::Archived,
            "error" => SandboxState::Error,
            "deleted" => SandboxState::Deleted,
            _ => return None,
        })
    }

    /// Whether a sandbox may move from `self` to `to`.
    pub fn can_become(self, to: SandboxState) -> bool {
        use SandboxState::*;
        matches!(
            (self, to),
            (Creating, Running | Error | Deleted)
                | (Running, Paused | Suspended | Stopping | Error | Deleted)
                | (Paused, Running | Suspended | Stopping | Error | Deleted)
                | (Suspended, Starting | Stopped | Archived | Deleted | Error)
                | (Stopping, Stopped | Error | Deleted)
                | (Stopped, Starting | Archived | Deleted | Error)
                | (Archived, Starting | Stopped | Suspended | Deleted | Error)
                | (Starting, Running | Error | Deleted)
                | (Error, Starting | Deleted)
        )
    }

    /// States that hold a live VM ([`Self::WITH_VM`]).
    pub fn has_vm(self) -> bool {
        Self::WITH_VM.contains(&self)
    }

    /// Whether this is one of the [`Self::LIVE`] states.
    pub fn is_live(self) -> bool {
        Self::LIVE.contains(&self)
    }

    /// Whether this is one of the [`Self::CLAIMS_VM`] states.
    pub fn claims_vm(self) -> bool {
        Self::CLAIMS_VM.contains(&self)
    }
}

impl std::fmt::Display for SandboxState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens when a sandbox's timeout expires.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutAction {
    /// Delete it.
    #[default]
    Kill,
    /// Pause it.
    Pause,
    /// Stop it (VM off, disk kept).
    Stop,
}

/// Rules the lifecycle loop applies on its own, besides the timeout: stop a sandbox nobody uses,
/// then archive and delete it once it has been stopped for a while. Activity is any command
/// (exec, files, processes, sessions) and every start.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRules {
    /// Stop a running sandbox after this many seconds without activity (`null` = never).
    #[serde(default)]
    pub stop_after_idle_secs: Option<u64>,
    /// Archive a sandbox that has been stopped this many seconds (`null` = never).
    #[serde(default)]
    pub archive_after_stopped_secs: Option<u64>,
    /// Delete a sandbox that has been stopped (or archived) this many seconds; `0` deletes it as
    /// soon as it stops (`null` = never).
    #[serde(default)]
    pub delete_after_stopped_secs: Option<u64>,
}

/// A named set of lifecycle rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LifecyclePreset {
    /// Never stopped, archived or deleted automatically.
    Persistent,
    /// Stopped after 15 minutes idle, archived after 7 days stopped, deleted 30 days later.
    Ephemeral,
}

impl LifecyclePreset {
    /// The preset's rules with every rule set in `explicit` kept.
    pub fn apply(self, explicit: LifecycleRules) -> LifecycleRules {
        const DAY: u64 = 24 * 3600;
        let preset = match self {
            LifecyclePreset::Persistent => LifecycleRules::default(),
            LifecyclePreset::Ephemeral => LifecycleRules {
                stop_after_idle_secs: Some(15 * 60),
                archive_after_stopped_secs: Some(7 * DAY),
                delete_after_stopped_secs: Some(37 * DAY),
            },
        };
        LifecycleRules {
            stop_after_idle_secs: explicit
                .stop_after_idle_secs
                .or(preset.stop_after_idle_secs),
            archive_after_stopped_secs: explicit
                .archive_after_stopped_secs
                .or(preset.archive_after_stopped_secs),
            delete_after_stopped_secs: explicit
                .delete_after_stopped_secs
                .or(preset.delete_after_stopped_secs),
        }
    }
}

/// How the sandbox's VM runs on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct RuntimeInfo {
    /// `qemu` or `cloud_hypervisor`.
    pub vmm: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// VMM process id on the host.
    pub pid: u32,
    /// Guest agent transport: `virtio_serial` or `vsock`.
    pub transport: String,
    /// How the root disk was cloned: `reflink`, `qcow2` or `copy`.
    pub disk_clone: String,
    /// Guest agent version.
    pub agent_version: String,
    /// Guest kernel release.
    pub kernel: String,
    /// Milliseconds from VMM start to the guest agent's first answer.
    pub boot_ms: u64,
    /// Address on the sandbox network (none when the host has no sandbox network).
    #[serde(default)]
    pub ip: Option<String>,
    /// Whether the sandbox can reach beyond the host.
    #[serde(default)]
    pub internet: bool,
    /// How its VM came to be: booted, or restored from which snapshot, and what that cost.
    #[serde(default)]
    pub start: StartInfo,
}

impl RuntimeInfo {
    /// This runtime, described as brought back from `snapshot` (a pause to disk or a
    /// checkpoint) into the same sandbox.
    pub fn resumed_from(mut self, snapshot: &str) -> Self {
        self.start.path = StartPath::Resume;
        self.start.snapshot = Some(snapshot.to_string());
        self
    }
}

/// How a sandbox's VM was started.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum StartPath {
    /// The kernel booted (`boot: cold`, or no ready snapshot of its template yet).
    #[default]
    Boot,
    /// Restored from its template's ready snapshot (a booted VM, saved once per template,
    /// image and size).
    TemplateSnapshot,
    /// Restored from a snapshot the caller named.
    Snapshot,
    /// Restored from the state of the sandbox it was forked from.
    Fork,
    /// Brought back from a pause to disk, a rollback, or restarted.
    Resume,
    /// Claimed from a warm pool: its VM was started (restored, or booted) before the create,
    /// `snapshot` says from what.
    Pool,
}

/// The start of a sandbox's current VM.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct StartInfo {
    /// Which way.
    pub path: StartPath,
    /// The snapshot restored, if one was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Checking the snapshot's signature and files, milliseconds (files unchanged since this
    /// server hashed them are not hashed again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify_ms: Option<u64>,
    /// VMM start (boot or restore) until the guest agent answered, milliseconds.
    pub vm_ms: u64,
}

/// How `create` starts the VM.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum BootMode {
    /// Restore the template's ready snapshot when there is one, else boot.
    #[default]
    Auto,
    /// Always boot the kernel.
    Cold,
}

/// A sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Sandbox {
    /// Id: 20 lowercase alphanumerics.
    pub id: String,
    /// Unique name, if it was given one (sandboxes can be looked up by it).
    #[serde(default)]
    pub name: Option<String>,
    /// Template it was created from.
    pub template: String,
    /// Lifecycle state.
    pub state: SandboxState,
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u32,
    /// Environment variables every command gets.
    pub env: BTreeMap<String, String>,
    /// Free-form labels. Keys under the reserved `platinum.` prefix are refused.
    pub metadata: BTreeMap<String, String>,
    /// State a front end keeps about the sandbox (Daytona's public flag and preview-signing
    /// generation, E2B's public traffic flag): never part of the metadata a user sets or sees,
    /// changed only through [`crate::Engine::update_attributes`].
    #[serde(skip)]
    pub attributes: BTreeMap<String, String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When the sandbox expires (its timeout), if it does.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    #[schemars(with = "Option<String>")]
    pub expires_at: Option<OffsetDateTime>,
    /// What happens at expiry.
    pub on_timeout: TimeoutAction,
    /// Idle stop, archive and delete rules.
    #[serde(default)]
    pub lifecycle: LifecycleRules,
    /// Last time a command touched it (for stopped sandboxes: when it stopped).
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub last_activity_at: OffsetDateTime,
    /// Why it is in `error`.
    pub error: Option<String>,
    /// VM details, while it has a VM.
    pub runtime: Option<RuntimeInfo>,
}

/// The attribute that marks a sandbox as resumed by traffic ([`CreateSandbox::auto_resume`]).
pub const AUTO_RESUME_ATTRIBUTE: &str = "platinum.auto_resume";

impl Sandbox {
    /// A new row created now: no name, environment, metadata or attributes, no timeout, the
    /// default lifecycle, no VM yet.
    pub fn new_row(
        id: String,
        template: String,
        vcpus: u32,
        memory_mib: u32,
        state: SandboxState,
    ) -> Sandbox {
        let now = OffsetDateTime::now_utc();
        Sandbox {
            id,
            name: None,
            template,
            state,
            vcpus,
            memory_mib,
            env: BTreeMap::new(),
            metadata: BTreeMap::new(),
            attributes: BTreeMap::new(),
            created_at: now,
            expires_at: None,
            on_timeout: TimeoutAction::default(),
            lifecycle: LifecycleRules::default(),
            last_activity_at: now,
            error: None,
            runtime: None,
        }
    }

    /// Whether traffic resumes it when it is paused.
    pub fn auto_resume(&self) -> bool {
        self.attributes
            .get(AUTO_RESUME_ATTRIBUTE)
            .is_some_and(|v| v == "true")
    }
}

/// Parameters of `create`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSandbox {
    /// Template name (`base` by default; `platinum image ls` lists them).
    #[serde(default)]
    pub template: Option<String>,
    /// vCPUs (1-16; default 2).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Memory in MiB (128-65536; default 1024).
    #[serde(default)]
    pub memory_mib: Option<u32>,
    /// Environment variables for every command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Free-form labels (string to string; keys under the reserved `platinum.` prefix are
    /// refused).
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Front-end state to store with the new sandbox ([`Sandbox::attributes`]); set by front
    /// ends in code, never from a request body.
    #[serde(skip)]
    pub attributes: BTreeMap<String, String>,
    /// Seconds until the sandbox expires (default 300; 0 = never).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// What happens at expiry (default `kill`).
    #[serde(default)]
    pub on_timeout: Option<TimeoutAction>,
    /// Unique name (1-255 of `A-Z a-z 0-9 . _ -`); the sandbox can then be looked up by it.
    #[serde(default)]
    pub name: Option<String>,
    /// Idle stop, archive and delete rules (default: none).
    #[serde(default)]
    pub lifecycle: LifecycleRules,
    /// Internet access (default: on where the host has a sandbox network). `true` fails on hosts
    /// without one; `false` keeps the sandbox off the internet.
    #[serde(default)]
    pub internet: Option<bool>,
    /// Lifecycle preset: `persistent` (default: nothing automatic) or `ephemeral` (stop after
    /// 15 min idle, archive after 7 days stopped, delete 30 days after that). Rules set in
    /// `lifecycle` win over the preset's.
    #[serde(default, rename = "type")]
    pub lifecycle_type: Option<LifecyclePreset>,
    /// Resume the sandbox when traffic reaches it while it is paused (any command, file, port
    /// or envd call on it), instead of refusing with `invalid_state`.
    #[serde(default)]
    pub auto_resume: bool,
    /// Restore this snapshot (id or name) instead of booting a template: the new sandbox starts
    /// with the snapshot's memory, processes and disk. Its template, vCPUs, memory and
    /// environment are the snapshot's (`vcpus`/`memory_mib`, if given, must equal them).
    #[serde(default)]
    pub snapshot: Option<String>,
    /// `auto` (default): restore the template's ready snapshot, a booted VM saved once per
    /// template, image and size, when one exists (otherwise boot, and build one for the next
    /// create); `cold`: always boot. The sandbox's `runtime.start` says which happened.
    #[serde(default)]
    pub boot: BootMode,
    /// Volumes to attach and mount once the sandbox runs (each by id or name; a volume may be
    /// attached read-write to one sandbox at a time).
    #[serde(default)]
    pub volumes: Vec<VolumeMount>,
    /// Continuous backup while it runs (default: none). A snapshot named by `snapshot` may be
    /// a backup (`bkup…`): it is fetched from the object store first.
    #[serde(default)]
    pub backup: Option<BackupPolicy>,
    /// What it may reach beyond the host (default: everything public); in force before its
    /// first instruction runs, and replaceable later (`PUT …/egress-policy`).
    #[serde(default)]
    pub egress: Option<EgressPolicy>,
    /// Secrets it may use (environment variable name → secret id or name): the variable holds
    /// the secret's placeholder, which the host's egress broker replaces with the secret in
    /// HTTPS request headers to the secret's hosts. The value never enters the VM.
    #[serde(default)]
    pub secrets: BTreeMap<String, String>,
}

/// What to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(untagged)]
pub enum CommandLine {
    /// A shell command line, run by `bash -l -c`.
    Shell(String),
    /// An argv vector, run directly.
    Argv(Vec<String>),
}

/// Filter and page for listing sandboxes. Results are newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only these states (empty = all but `deleted`).
    pub states: Vec<SandboxState>,
    /// Every pair must match the sandbox's metadata.
    pub metadata: Vec<(String, String)>,
    /// Only sandboxes whose name starts with this (ASCII case-insensitive).
    pub name_prefix: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Continue after this cursor (from [`Page::next_cursor`]).
    pub cursor: Option<String>,
}

/// One page of sandboxes.
#[derive(Debug, Clone)]
pub struct Page {
    /// The sandboxes.
    pub items: Vec<Sandbox>,
    /// Cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// How far a sandbox's wall clock is from the host's ([`crate::Engine::clock_skew`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClockSkew {
    /// Guest time minus host time, milliseconds (negative: the guest is behind).
    pub guest_ahead: f64,
    /// The measurement's uncertainty (half its round trip), milliseconds.
    pub within: f64,
}

/// The host this engine runs sandboxes on, as `platinum up` and the benchmarks print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostInfo {
    /// VMM driver (`qemu`, `cloud-hypervisor`).
    pub vmm: String,
    /// Accelerator (`kvm`, `tcg`).
    pub accel: String,
    /// Why this VMM and accelerator were chosen.
    pub reason: String,
    /// Default guest transport.
    pub transport: String,
    /// Sandbox networking: `None` when available, else why not.
    pub network_unavailable: Option<String>,
    /// Where guest RAM lives (anonymous memory, or a file snapshots clone in place) and why.
    pub memory: String,
}

/// Parameters of `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    /// A shell string (`"ls -la | wc -l"`) or an argv array (`["ls", "-la"]`).
    pub command: CommandLine,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the user's home; relative paths resolve against it).
    #[serde(default)]
    pub cwd: Option<String>,
    /// User to run as (default `user`).
    #[serde(default)]
    pub user: Option<String>,
    /// Kill the command after this many milliseconds (default 60000 for buffered exec; 0 = none).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Text fed to stdin, then stdin is closed.
    #[serde(default)]
    pub stdin: Option<String>,
    /// Start it and return immediately with its pid; reattach with the process endpoints.
    #[serde(default)]
    pub background: bool,
}

impl ExecRequest {
    /// Runs `command` with everything else defaulted (see [`ExecRequest::shell`]).
    pub fn new(command: CommandLine) -> ExecRequest {
        ExecRequest {
            command,
            env: Default::default(),
            cwd: None,
            user: None,
            timeout_ms: None,
            stdin: None,
            background: false,
        }
    }

    /// A shell command line (`bash -l -c`) with everything else defaulted.
    pub fn shell(command: impl Into<String>) -> ExecRequest {
        ExecRequest::new(CommandLine::Shell(command.into()))
    }

    /// An argv vector with everything else defaulted.
    pub fn argv(argv: Vec<String>) -> ExecRequest {
        ExecRequest::new(CommandLine::Argv(argv))
    }
}

/// Result of a buffered `exec`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ExecResult {
    /// Guest pid.
    pub pid: u32,
    /// Exit code (128 + signal when a signal ended it); `null` for background starts.
    pub exit_code: Option<i32>,
    /// Signal that ended it, if any.
    pub signal: Option<i32>,
    /// The timeout fired and the command was killed.
    pub timed_out: bool,
    /// stdout (UTF-8, invalid bytes replaced).
    pub stdout: String,
    /// stderr (UTF-8, invalid bytes replaced).
    pub stderr: String,
    /// Output beyond the limit was dropped.
    pub truncated: bool,
    /// Wall time on the host, milliseconds.
    pub duration_ms: u64,
}

/// A file or directory in a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct FileInfo {
    /// Last path component.
    pub name: String,
    /// Absolute path.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits as an integer (e.g. 420 = 0o644).
    pub mode: u32,
    /// `ls -l` style, e.g. `-rw-r--r--`.
    pub permissions: String,
    /// Owner.
    pub owner: String,
    /// Group.
    pub group: String,
    /// Modification time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub modified_at: OffsetDateTime,
    /// Target, for symlinks, as the link holds it (possibly relative).
    pub symlink_target: Option<String>,
    /// Symlinks: where the link leads (absent if dangling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedLink>,
    /// User metadata (xattrs).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The entry a symlink finally leads to: its absolute, link-free path, type and mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ResolvedLink {
    /// Absolute, link-free path.
    pub path: String,
    /// `file`, `dir` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Permission bits.
    pub mode: u32,
}

/// The wire name of a file kind.
fn kind_name(kind: platinum_protocol::FileKind) -> String {
    use platinum_protocol::FileKind;
    match kind {
        FileKind::File => "file",
        FileKind::Dir => "dir",
        FileKind::Symlink => "symlink",
        FileKind::Other => "other",
    }
    .into()
}

impl From<platinum_protocol::FileEntry> for FileInfo {
    fn from(e: platinum_protocol::FileEntry) -> Self {
        FileInfo {
            name: e.name,
            path: e.path,
            kind: kind_name(e.kind),
            size: e.size,
            mode: e.mode,
            permissions: e.permissions,
            owner: e.owner,
            group: e.group,
            modified_at: OffsetDateTime::from_unix_timestamp_nanos(e.modified_unix_ns as i128)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            symlink_target: e.symlink_target,
            resolved: e.resolved.map(|r| ResolvedLink {
                path: r.path,
                kind: kind_name(r.kind),
                mode: r.mode,
            }),
            metadata: e.metadata,
        }
    }
}

/// A process started in a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ProcessInfo {
    /// Guest pid.
    pub pid: u32,
    /// The command, as a display string.
    pub command: String,
    /// Label given at start.
    pub tag: Option<String>,
    /// User it runs as.
    pub user: String,
    /// Working directory.
    pub cwd: String,
    /// Runs on a PTY.
    pub pty: bool,
    /// Still running.
    pub running: bool,
    /// Exit code once ended (128 + signal for signals).
    pub exit_code: Option<i32>,
    /// Start time.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub started_at: OffsetDateTime,
}

impl From<platinum_protocol::ProcessInfo> for ProcessInfo {
    fn from(p: platinum_protocol::ProcessInfo) -> Self {
        ProcessInfo {
            pid: p.pid,
            command: command_display(&p.command),
            tag: p.tag,
            user: p.user,
            cwd: p.cwd,
            pty: p.pty,
            running: p.exit.is_none(),
            exit_code: p.exit.map(|e| e.shell_code()),
            started_at: OffsetDateTime::from_unix_timestamp_nanos(
                p.started_unix_ms as i128 * 1_000_000,
            )
            .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        }
    }
}

/// A protocol command rendered for humans.
pub fn command_display(c: &platinum_protocol::Command) -> String {
    match c {
        platinum_protocol::Command::Shell(s) => s.clone(),
        platinum_protocol::Command::Argv(a) => a.join(" "),
    }
}

/// CPU, memory and disk usage of a sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct SandboxMetrics {
    /// vCPUs online.
    pub cpu_count: u32,
    /// CPU busy percentage since the previous sample.
    pub cpu_used_pct: f32,
    /// Memory total, bytes.
    pub mem_total: u64,
    /// Memory used, bytes.
    pub mem_used: u64,
    /// Page cache, bytes.
    pub mem_cache: u64,
    /// Root disk size, bytes.
    pub disk_total: u64,
    /// Root disk used, bytes.
    pub disk_used: u64,
}

/// One metrics sample of a sandbox ([`crate::Engine::metrics_history`]).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSample {
    /// When it was taken.
    pub at: OffsetDateTime,
    /// The values.
    pub metrics: SandboxMetrics,
}

impl From<platinum_protocol::MetricsReply> for SandboxMetrics {
    fn from(m: platinum_protocol::MetricsReply) -> Self {
        SandboxMetrics {
            cpu_count: m.cpu_count,
            cpu_used_pct: m.cpu_used_pct,
            mem_total: m.mem_total,
            mem_used: m.mem_used,
            mem_cache: m.mem_cache,
            disk_total: m.disk_total,
            disk_used: m.disk_used,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_machine_allows_only_documented_transitions() {
        use SandboxState::*;
        assert!(Creating.can_become(Running));
        assert!(Running.can_become(Paused) && Paused.can_become(Running));
        assert!(Stopped.can_become(Starting) && Starting.can_become(Running));
        assert!(!Deleted.can_become(Running));
        assert!(!Stopped.can_become(Paused));
        assert!(!Creating.can_become(Paused));
        assert!(Stopped.can_become(Archived) && Archived.can_become(Starting));
        assert!(Suspended.can_become(Archived) && Archived.can_become(Suspended));
        assert!(Archived.can_become(Stopped) && !Archived.can_become(Paused));
        assert!(!Running.can_become(Archived) && !Archived.can_become(Running));
        for s in [
            Creating, Starting, Running, Paused, Stopping, Stopped, Archived, Error, Deleted,
        ] {
            assert_eq!(SandboxState::parse(s.as_str()), Some(s));
            assert!(!s.can_become(s), "{s} -> {s}");
        }
    }

    #[test]
    fn command_lines_accept_strings_and_arrays() {
        let r: ExecRequest = serde_json::from_str(r#"{"command":"echo hi"}"#).unwrap();
        assert_eq!(r.command, CommandLine::Shell("echo hi".into()));
        let r: ExecRequest = serde_json::from_str(r#"{"command":["ls","-l"]}"#).unwrap();
        assert_eq!(r.command, CommandLine::Argv(vec!["ls".into(), "-l".into()]));
        assert!(serde_json::from_str::<ExecRequest>(r#"{"command":"x","bogus":1}"#).is_err());
        let r: ExecRequest = serde_json::from_str(r#"{"command":"echo hi"}"#).unwrap();
        assert_eq!(r, ExecRequest::shell("echo hi"));
    }

    #[test]
    fn state_sets_nest() {
        use SandboxState::*;
        assert!(SandboxState::WITH_VM.iter().all(|s| s.is_live()));
        assert!(SandboxState::LIVE.iter().all(|s| s.claims_vm()));
        assert!(Stopping.claims_vm() && !Stopping.is_live());
        for s in [Stopped, Archived, Error, Deleted] {
            assert!(!s.claims_vm(), "{s}");
        }
    }
}

/// What a snapshot is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotKind {
    /// Named and kept until deleted, also after its sandbox is deleted (unless asked otherwise);
    /// restored into new sandboxes.
    Snapshot,
    /// Taken of a running sandbox to roll that same sandbox back to; deleted with it.
    Checkpoint,
    /// The memory image of a sandbox paused to disk; used up by its resume.
    Suspend,
    /// A template's ready snapshot: a VM of the template booted until its agent answered,
    /// restored by every create of that template and size. Rebuilt when the image changes.
    Template,
    /// A backup: uploaded to the object store, its local copy removed; fetched again to
    /// restore it. Kept after its sandbox is deleted.
    Backup,
}

impl SnapshotKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotKind::Snapshot => "snapshot",
            SnapshotKind::Checkpoint => "checkpoint",
            SnapshotKind::Suspend => "suspend",
            SnapshotKind::Template => "template",
            SnapshotKind::Backup => "backup",
        }
    }

    /// Parses the snake_case name.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "snapshot" => SnapshotKind::Snapshot,
            "checkpoint" => SnapshotKind::Checkpoint,
            "suspend" => SnapshotKind::Suspend,
            "template" => SnapshotKind::Template,
            "backup" => SnapshotKind::Backup,
            _ => return None,
        })
    }
}

/// What taking a snapshot cost, in milliseconds.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
pub struct SnapshotTimings {
    /// How long the sandbox's vCPUs were stopped (its pause window).
    pub paused_ms: u64,
    /// Writing device state and memory.
    pub state_ms: u64,
    /// Copying (reflink) or linking the disks.
    pub disks_ms: u64,
    /// Hashing every file (BLAKE3) and signing the manifest.
    pub hash_ms: u64,
    /// The whole call.
    pub total_ms: u64,
}

/// A snapshot: a sandbox's memory, device state and disks at one moment, with a signed manifest
/// (Ed25519) of every file's BLAKE3 hash, checked before anything is restored from it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Snapshot {
    /// Id (`snap` or `ckpt` + 20 lowercase alphanumerics).
    pub id: String,
    /// Unique name, if it was given one.
    #[serde(default)]
    pub name: Option<String>,
    /// What it is for.
    pub kind: SnapshotKind,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    /// That sandbox's template.
    pub template: String,
    /// vCPUs of a sandbox restored from it.
    pub vcpus: u32,
    /// Memory of a sandbox restored from it, MiB.
    pub memory_mib: u32,
    /// Bytes on disk (memory, device state, disks; disks share unchanged blocks where the
    /// filesystem allows).
    pub size_bytes: u64,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// The VMM that wrote it and the version (`qemu 10.0.2`); it restores only there.
    pub vmm: String,
    /// `kvm` or `tcg`.
    pub accel: String,
    /// Id of the key that signed its manifest (see `/.well-known/jwks.json`).
    pub key_id: String,
    /// What taking it cost.
    pub timings: SnapshotTimings,
    /// Environment of the sandbox it was taken of (restored sandboxes get it).
    #[serde(skip)]
    pub env: BTreeMap<String, String>,
    /// Metadata of the sandbox it was taken of.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

/// What a sandbox's traffic may reach when neither list names the destination.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EgressDefault {
    /// Everything not denied.
    #[default]
    Allow,
    /// Only what is allowed.
    Deny,
}

/// What a sandbox may reach beyond the host, by address and by name; replaced at any time, in
/// force for the next connection (by address: the next packet). Entries are IPv4 addresses,
/// CIDRs, domain names (`api.example.com`) or wildcards (`*.example.com`: names under it);
/// `allow` wins over `deny`. Names are enforced on the host: the sandbox's DNS is answered by
/// the host (names the policy does not let it resolve get NXDOMAIN; with `default: deny` only
/// allowed names resolve), and its HTTP (port 80) and HTTPS (443) by a host proxy that checks
/// the TLS server name or HTTP Host and that the address is the name's. Other ports reach an
/// allowed name's addresses once the sandbox resolved it. Whatever it says, other sandboxes,
/// the host, private, shared (CGNAT), link-local and cloud metadata addresses stay unreachable
/// (the operator's allow-list of private ranges aside).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressPolicy {
    /// `allow` (default) or `deny`: what happens to traffic neither list names.
    #[serde(default)]
    pub default: EgressDefault,
    /// Always reachable (at most 256 entries), e.g. `203.0.113.0/24`, `198.51.100.7`,
    /// `api.example.com`, `*.example.org`.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Never reachable unless also allowed (at most 256 entries).
    #[serde(default)]
    pub deny: Vec<String>,
    /// Headers the host sets on the sandbox's HTTPS requests to given hosts (at most 32
    /// rules), e.g. an API key the sandbox never sees. Setting a host here does not make it
    /// reachable: the lists above decide that.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub header_rules: Vec<EgressHeaderRule>,
}

/// Headers set on every HTTPS request a sandbox sends to `host`, by the host's egress broker
/// (which terminates the sandbox's TLS with a certificate of the host CA the sandbox trusts,
/// and opens its own to the real server). A value may hold `${secrets.NAME}` (a secret's name
/// or id): the broker puts the secret's value there, so the sandbox never holds it. A secret
/// with `hosts` of its own may only be used for hosts among them. A header of the same name the
/// sandbox sent is replaced. Of the rules matching a request's host only the most specific
/// applies (the host's own, else the longest wildcard); one rule per host. Plain HTTP (port 80)
/// is never given these headers.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EgressHeaderRule {
    /// A host name (`api.example.com`) or `*.example.com` (names under it).
    pub host: String,
    /// Header name → value (1-16 headers; values up to 4 KiB, `${secrets.NAME}` allowed).
    /// `Host`, `Content-Length`, `Transfer-Encoding`, `Connection` and other per-hop headers
    /// cannot be set.
    pub headers: BTreeMap<String, String>,
}

/// A sandbox's continuous backup: while it runs, a backup every `interval_secs`; the newest
/// `keep` are kept, older ones deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupPolicy {
    /// Seconds between backups (at least 5).
    pub interval_secs: u64,
    /// How many backups of the sandbox to keep (1-100; default 3).
    #[serde(default = "BackupPolicy::default_keep")]
    pub keep: u32,
}

impl BackupPolicy {
    fn default_keep() -> u32 {
        3
    }
}

/// What a backup's upload moved: only chunks the object store lacked are sent, so a backup
/// after the first sends what changed since.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
pub struct BackupUpload {
    /// Bytes of every file of the backup.
    pub bytes_total: u64,
    /// Chunks sent to the object store.
    pub chunks_sent: u64,
    /// Chunks the store had already (from this or any earlier upload).
    pub chunks_reused: u64,
    /// Chunks of zeros, stored nowhere.
    pub chunks_zero: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// How long the upload took, milliseconds (the sandbox ran on meanwhile).
    pub ms: u64,
}

/// A backup: a snapshot of a running (or paused) sandbox — memory, processes and disks — kept in
/// the object store, content-addressed and signed. Restoring one makes a new sandbox; backups
/// outlive the sandbox and its host's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Backup {
    /// Id (`bkup` + 20 lowercase alphanumerics).
    pub id: String,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    /// That sandbox's template.
    pub template: String,
    /// vCPUs of a sandbox restored from it.
    pub vcpus: u32,
    /// Memory of a sandbox restored from it, MiB.
    pub memory_mib: u32,
    /// When it was taken.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// What taking its snapshot cost; `paused_ms` is the sandbox's pause window and `state_ms`
    /// the VMM's own device-state save within it.
    pub timings: SnapshotTimings,
    /// What its upload moved.
    pub upload: BackupUpload,
}

/// A sandbox's backup schedule and its backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct BackupStatus {
    /// The schedule (`null`: no continuous backup).
    pub policy: Option<BackupPolicy>,
    /// Its backups, oldest first.
    pub backups: Vec<Backup>,
}

/// Every backup (or one sandbox's).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct BackupList {
    /// Backups, oldest first.
    pub backups: Vec<Backup>,
}

/// Parameters of taking a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSnapshot {
    /// Unique name (1-255 of `A-Z a-z 0-9 . _ -`), to restore it by.
    #[serde(default)]
    pub name: Option<String>,
}

/// How to pause.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Absent: stop the vCPUs and keep the VM in memory (instant resume). `true`: pause to
    /// disk, memory included: the VM process exits and frees its RAM; resume brings back the
    /// processes where they were. `false`: keep only the disk; resume boots it again.
    #[serde(default)]
    pub memory: Option<bool>,
}

/// A warm pool: sandboxes of one template (or snapshot) and size kept restored and running, so
/// that a create of that kind claims one instead of starting a VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Pool {
    /// Id (`pool` + 20 lowercase alphanumerics).
    pub id: String,
    /// Template of its sandboxes.
    pub template: String,
    /// Snapshot its sandboxes are restored from, when not the template's ready snapshot; creates
    /// naming this snapshot claim from it.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// vCPUs of its sandboxes.
    pub vcpus: u32,
    /// Memory of its sandboxes, MiB.
    pub memory_mib: u32,
    /// Sandboxes to keep ready (0 drains the pool).
    pub size: u32,
    /// Sandboxes ready to be claimed now.
    pub ready: u32,
    /// Sandboxes being started for it now.
    pub starting: u32,
    /// Why the pool cannot be filled, when it cannot.
    #[serde(default)]
    pub error: Option<String>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When its size last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub updated_at: OffsetDateTime,
}

/// A named persistent volume: an ext4 filesystem that outlives the sandboxes it is attached
/// to, mounted in each at a path of its choosing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Volume {
    /// Id (`vol` + 16 lowercase alphanumerics).
    pub id: String,
    /// Unique name (1-64 of `A-Z a-z 0-9 . _ -`).
    pub name: String,
    /// Size of its filesystem, MiB.
    pub size_mib: u64,
    /// Where it is attached now.
    pub attachments: Vec<VolumeAttachment>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
}

/// A file, directory or link in a named volume, as the volume content commands describe it
/// ([`crate::commands::volume_files`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFileEntry {
    /// Last path component (empty for the volume's root).
    pub name: String,
    /// Path from the volume's root, starting with `/`.
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (e.g. 420 = 0o644).
    pub mode: u32,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
    /// Last access.
    #[serde(with = "time::serde::rfc3339")]
    pub atime: OffsetDateTime,
    /// Last modification.
    #[serde(with = "time::serde::rfc3339")]
    pub mtime: OffsetDateTime,
    /// Last change of the entry's metadata.
    #[serde(with = "time::serde::rfc3339")]
    pub ctime: OffsetDateTime,
    /// A symlink's target, as the link holds it.
    pub symlink_target: Option<String>,
}

/// An entry of a sandbox's host share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ShareEntry {
    /// File name (empty for the share's root).
    pub name: String,
    /// `file`, `dir`, `symlink` (listed, never followed) or `other`.
    pub kind: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub modified_at: OffsetDateTime,
}

/// A directory of a sandbox's host share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ShareListing {
    /// The directory (relative to the share's root).
    pub path: String,
    /// Its entries, by name.
    pub entries: Vec<ShareEntry>,
}

/// Every volume.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct VolumeList {
    /// Volumes, oldest first.
    pub volumes: Vec<Volume>,
}

/// A volume attached to a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct VolumeAttachment {
    /// The sandbox.
    pub sandbox_id: String,
    /// Where it is mounted in the sandbox.
    pub path: String,
    /// Mounted read-only.
    pub readonly: bool,
}

/// Parameters of a new volume.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVolume {
    /// Unique name (1-64 of `A-Z a-z 0-9 . _ -`).
    pub name: String,
    /// Size in MiB (16-1048576; default 1024). The image is sparse: the host's disk fills only
    /// as the volume does.
    #[serde(default)]
    pub size_mib: Option<u64>,
}

/// A volume to mount in a sandbox (at create, or `POST /v1/volumes/{id}/attach`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VolumeMount {
    /// Volume id or name.
    pub volume: String,
    /// Absolute mount path in the sandbox (created if missing; not `/` and not under `/proc`,
    /// `/sys`, `/dev` or `/run`).
    pub path: String,
    /// Mount read-only (several sandboxes may share a volume read-only).
    #[serde(default)]
    pub readonly: bool,
}

/// Parameters of attaching a volume to a running sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AttachVolume {
    /// The sandbox (running).
    pub sandbox_id: String,
    /// Absolute mount path in the sandbox.
    pub path: String,
    /// Mount read-only.
    #[serde(default)]
    pub readonly: bool,
}

/// Parameters of detaching a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DetachVolume {
    /// The sandbox (running: the volume is unmounted first, or stopped).
    pub sandbox_id: String,
}

/// Parameters of a new warm pool.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePool {
    /// Template (default: the server's default template). Ignored with `snapshot`.
    #[serde(default)]
    pub template: Option<String>,
    /// Keep sandboxes restored from this snapshot (id or name) instead.
    #[serde(default)]
    pub snapshot: Option<String>,
    /// Sandboxes to keep ready.
    pub size: u32,
    /// vCPUs (default: the server's default, or the snapshot's).
    #[serde(default)]
    pub vcpus: Option<u32>,
    /// Memory, MiB (default: the server's default, or the snapshot's).
    #[serde(default)]
    pub memory_mib: Option<u32>,
}

/// A pool's new size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePool {
    /// Sandboxes to keep ready (0 drains the pool).
    pub size: u32,
}

/// Pools, oldest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct PoolList {
    /// The pools.
    pub pools: Vec<Pool>,
}

/// The host's capacity: what holds a VM now, apart by callers' sandboxes and warm pools', and
/// the limits a new sandbox is admitted against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Capacity {
    /// Most sandboxes (pooled ones included) that may hold a VM at once.
    pub max_sandboxes: u64,
    /// Most guest memory all of them together may have, MiB.
    pub max_memory_mib: u64,
    /// Callers' sandboxes holding a VM (starting, running, paused, stopping).
    pub sandboxes: u64,
    /// Their guest memory, MiB.
    pub memory_mib: u64,
    /// Warm pools' sandboxes holding a VM (not listed to callers until claimed).
    pub pooled: u64,
    /// Their guest memory, MiB.
    pub pooled_memory_mib: u64,
    /// Free disk in the data directory, MiB (absent when it cannot be read).
    #[serde(default)]
    pub disk_free_mib: Option<u64>,
    /// Free disk a new sandbox leaves, at least, MiB.
    pub min_free_disk_mib: u64,
}

/// Result of a fork.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct ForkResult {
    /// The copies, running, each with the source's memory and disk at the fork.
    pub sandboxes: Vec<Sandbox>,
    /// How long the source's vCPUs were stopped, milliseconds.
    pub source_paused_ms: u64,
    /// The whole call, milliseconds.
    pub total_ms: u64,
}

/// Parameters of a fork.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ForkRequest {
    /// How many copies (1-20; default 1).
    #[serde(default = "one")]
    pub count: u32,
    /// Unique name for the copy (only with `count: 1`).
    #[serde(default)]
    pub name: Option<String>,
}

impl Default for ForkRequest {
    fn default() -> Self {
        ForkRequest {
            count: one(),
            name: None,
        }
    }
}

fn one() -> u32 {
    1
}

/// Parameters of a rollback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    /// The checkpoint to go back to (one of this sandbox's).
    pub checkpoint: String,
}

#[cfg(test)]
mod preset_tests {
    use super::*;

    #[test]
    fn explicit_rules_win_over_the_preset() {
        let explicit = LifecycleRules {
            stop_after_idle_secs: Some(60),
            ..Default::default()
        };
        let rules = LifecyclePreset::Ephemeral.apply(explicit);
        assert_eq!(rules.stop_after_idle_secs, Some(60));
        assert_eq!(rules.archive_after_stopped_secs, Some(7 * 24 * 3600));
        assert_eq!(rules.delete_after_stopped_secs, Some(37 * 24 * 3600));
        assert_eq!(
            LifecyclePreset::Persistent.apply(LifecycleRules::default()),
            LifecycleRules::default()
        );
        let parsed: CreateSandbox = serde_json::from_str(r#"{"type":"ephemeral"}"#).unwrap();
        assert_eq!(parsed.lifecycle_type, Some(LifecyclePreset::Ephemeral));
    }
}

/// A secret as every read answers it: never its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct Secret {
    /// Id (`sec_` and 24 lowercase alphanumerics).
    pub id: String,
    /// Unique name (1-128 of `A-Z a-z 0-9 . _ -`, not starting with `sec_`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Host names the secret may be sent to (`api.example.com`, or `*.example.com` for every
    /// name below `example.com`). Requests to other hosts carry the placeholder unreplaced.
    pub hosts: Vec<String>,
    /// What sandboxes hold instead of the value (random, unguessable).
    pub placeholder: String,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// 1 at creation, one more at each change of the value.
    pub version: u32,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub created_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    #[schemars(with = "String")]
    pub updated_at: OffsetDateTime,
}

/// Parameters of `create_secret`.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecret {
    /// Unique name (1-128 of `A-Z a-z 0-9 . _ -`, not starting with `sec_`).
    pub name: String,
    /// The value (1-16384 bytes, printable; it goes into HTTP headers). Write-only: stored
    /// encrypted and never answered.
    pub value: String,
    /// Free text (at most 1024 bytes).
    #[serde(default)]
    pub description: Option<String>,
    /// Host names it may be sent to (at most 64; `*.example.com` for every name below
    /// `example.com`).
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Free-form labels.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
}

impl std::fmt::Debug for CreateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreateSecret")
            .field("name", &self.name)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// Parameters of `update_secret`: what is given replaces what was stored.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSecret {
    /// A new value (the version goes up).
    #[serde(default)]
    pub value: Option<String>,
    /// New description.
    #[serde(default)]
    pub description: Option<String>,
    /// New host names.
    #[serde(default)]
    pub hosts: Option<Vec<String>>,
    /// New labels.
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

impl std::fmt::Debug for UpdateSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpdateSecret")
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("hosts", &self.hosts)
            .finish_non_exhaustive()
    }
}

/// Every secret, oldest first (without values).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct SecretList {
    /// The secrets.
    pub secrets: Vec<Secret>,
}

/// The secrets a sandbox holds placeholders of, by the environment variable that holds each.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, JsonSchema)]
pub struct SandboxSecrets {
    /// Variable → secret.
    pub secrets: BTreeMap<String, Secret>,
}
