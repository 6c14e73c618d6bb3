//! JSON messages carried by `OPEN` and `MSG` frames.
//!
//! The host opens a stream with a [`Request`]. The guest answers with zero or more [`GuestEvent`]s and
//! ends with one [`Outcome`] (`{"ok": …}` or `{"error": {"code", "message"}}`). Requests that move
//! bytes (exec output, file contents, stdin) use `DATA` frames on the [`crate::channel`]s alongside.
//!
//! | request | events | data | ok value |
//! |---|---|---|---|
//! | `hello` | – | – | [`HelloReply`] |
//! | `ping` | – | – | [`PingReply`] (the payload echoed) |
//! | `exec` | `started`, `exited` | stdin ->, stdout/stderr <- | [`ExitStatus`] |
//! | `attach` | `started`, `lost`, `exited` | stdin ->, stdout/stderr <- | [`ExitStatus`] |
//! | `read_file` | `file_info` | stdout <- | `null` |
//! | `write_file` | – | stdin -> | [`FileEntry`] |
//! | `write_stdin` | – | stdin -> | `null` |
//! | `connect_port` | `connected` | stdin -> socket, socket -> stdout | `null` |
//! | `watch` | `watching`, then `fs_event` per change | – | `null` (the watched directory is gone) |
//! | others | – | – | see [`Request`] |

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Everything the host can ask of the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// First request of a session: version check, clock, hostname and sandbox-wide defaults.
    Hello(Hello),
    /// Echo a payload back (measures the raw transport).
    Ping {
        /// Bytes to echo.
        payload: String,
    },
    /// Set the guest's wall clock (after boot, resume or restore).
    SetClock {
        /// Host time, nanoseconds since the Unix epoch.
        unix_ns: i64,
    },
    /// Read the guest's wall clock, for the host to compare with its own ([`ClockReply`]).
    ReadClock,
    /// Agent version and process count.
    Health,
    /// CPU, memory and disk usage.
    Metrics,
    /// Start a process and stream its output. The process outlives the stream: dropping the stream
    /// detaches, it does not kill.
    Exec(ExecSpec),
    /// Re-attach to a process started earlier, optionally replaying its buffered output.
    Attach {
        /// Guest pid.
        pid: u32,
        /// Replay what the process wrote before this attach (as far as the buffer holds).
        #[serde(default)]
        replay: bool,
    },
    /// Send a signal to a process (and, by default, its process group).
    Signal {
        /// Guest pid.
        pid: u32,
        /// Signal number (9 = SIGKILL, 15 = SIGTERM, ...), `1..=`[`MAX_SIGNAL`]; others do not
        /// parse.
        #[serde(deserialize_with = "signal_number")]
        signal: i32,
    },
    /// Write `DATA` on the stdin channel to a process's stdin; `EOF` closes its stdin.
    WriteStdin {
        /// Guest pid.
        pid: u32,
    },
    /// Close a process's stdin.
    CloseStdin {
        /// Guest pid.
        pid: u32,
    },
    /// Resize a process's PTY.
    ResizePty {
        /// Guest pid.
        pid: u32,
        /// New size.
        size: PtySize,
    },
    /// List processes started through the agent (running, and recently exited).
    ListProcesses,
    /// Stream a file's contents on the stdout channel.
    ReadFile(PathRequest),
    /// Write a file from `DATA` on the stdin channel; atomic (temp file + rename) unless appending.
    WriteFile(WriteFile),
    /// List a directory.
    ListDir {
        /// Directory.
        #[serde(flatten)]
        at: PathRequest,
        /// How many levels to descend (1 = direct children).
        #[serde(default = "one")]
        depth: u32,
    },
    /// Describe one path (symlinks are not followed).
    Stat(PathRequest),
    /// Create a directory, with parents.
    MakeDir {
        /// Directory.
        #[serde(flatten)]
        at: PathRequest,
        /// Permission bits; default 0o755.
        #[serde(default)]
        mode: Option<u32>,
        /// Hand the directory and every parent this request creates to this user (owner, and
        /// group: the group of the same name, else the user's primary group). Needs a root caller.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Remove a file, or a directory tree.
    Remove {
        /// Path to remove.
        #[serde(flatten)]
        at: PathRequest,
        /// Remove a non-empty directory and everything in it.
        #[serde(default)]
        recursive: bool,
    },
    /// Move or rename.
    Rename {
        /// Source path.
        from: String,
        /// Destination path.
        to: String,
        /// User whose home relative paths resolve against and whose permissions apply.
        #[serde(default)]
        user: Option<String>,
        /// Replace an existing destination.
        #[serde(default)]
        overwrite: bool,
    },
    /// Change permission bits.
    Chmod {
        /// Path.
        #[serde(flatten)]
        at: PathRequest,
        /// New permission bits (e.g. 0o644).
        mode: u32,
    },
    /// Change owner and/or group (by name).
    Chown {
        /// Path.
        #[serde(flatten)]
        at: PathRequest,
        /// New owner user name.
        #[serde(default)]
        owner: Option<String>,
        /// New group name.
        #[serde(default)]
        group: Option<String>,
    },
    /// Open a TCP connection to a port inside the guest (loopback first) and relay it: `DATA` on
    /// the stdin channel goes to the socket, the socket's bytes come back on the stdout channel,
    /// `EOF` either way half-closes. The guest answers `connected` once the connection is up.
    ConnectPort {
        /// TCP port inside the guest.
        port: u16,
    },
    /// Watch a directory: `watching` once the watches are in place, then one `fs_event` per
    /// change, until the host resets the stream (or the directory itself goes away).
    Watch {
        /// Directory.
        #[serde(flatten)]
        at: PathRequest,
        /// Watch every directory below it too, including ones created later.
        #[serde(default)]
        recursive: bool,
        /// Allow a directory on a network or FUSE filesystem (NFS, SMB/CIFS, FUSE, virtio-fs),
        /// where inotify may miss changes; refused (`invalid_argument`) otherwise.
        #[serde(default)]
        allow_network_mounts: bool,
    },
    /// Flush all filesystems (snapshot quiesce).
    Sync,
    /// Sync and power the VM off (or reboot).
    Shutdown {
        /// Reboot instead of powering off.
        #[serde(default)]
        reboot: bool,
    },
    /// Mount the ext4 volume on the disk whose serial is `serial` at `path` (created if
    /// missing), waiting a few seconds for a disk that was just hot-added to appear. Root only:
    /// the agent does it, so images without `mount` work.
    MountVolume {
        /// The disk's serial (the volume's id).
        serial: String,
        /// Absolute mount path.
        path: String,
        /// Mount read-only (no journal replay).
        #[serde(default)]
        readonly: bool,
    },
    /// Flush and unmount `path`; fine when nothing is mounted there, an error while the mount
    /// is busy.
    UnmountVolume {
        /// Absolute mount path.
        path: String,
    },
    /// Take on a new identity after a restore into another sandbox (fork, restore of a
    /// snapshot): hostname, network address and MAC, and fresh randomness, so copies of one
    /// memory image neither collide on the network nor share their random number generator's
    /// state.
    Reidentify(Identity),
}

impl Request {
    /// The request's `op` name, as on the wire.
    pub fn op(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Ping { .. } => "ping",
            Request::SetClock { .. } => "set_clock",
            Request::ReadClock => "read_clock",
            Request::Health => "health",
            Request::Metrics => "metrics",
            Request::Exec(_) => "exec",
            Request::Attach { .. } => "attach",
            Request::Signal { .. } => "signal",
            Request::WriteStdin { .. } => "write_stdin",
            Request::CloseStdin { .. } => "close_stdin",
            Request::ResizePty { .. } => "resize_pty",
            Request::ListProcesses => "list_processes",
            Request::ReadFile(_) => "read_file",
            Request::WriteFile(_) => "write_file",
            Request::ListDir { .. } => "list_dir",
            Request::Stat(_) => "stat",
            Request::MakeDir { .. } => "make_dir",
            Request::Remove { .. } => "remove",
            Request::Rename { .. } => "rename",
            Request::Chmod { .. } => "chmod",
            Request::Chown { .. } => "chown",
            Request::Sync => "sync",
            Request::ConnectPort { .. } => "connect_port",
            Request::Watch { .. } => "watch",
            Request::Shutdown { .. } => "shutdown",
            Request::Reidentify(_) => "reidentify",
            Request::MountVolume { .. } => "mount_volume",
            Request::UnmountVolume { .. } => "unmount_volume",
        }
    }
}

fn one() -> u32 {
    1
}

/// The `hello` request.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Hello {
    /// The host's [`crate::PROTOCOL_VERSION`].
    pub protocol: u32,
    /// Host time, nanoseconds since the Unix epoch; the guest sets its clock to it.
    pub unix_ns: i64,
    /// Environment variables every process gets (before per-request ones).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// User that requests without a `user` run as.
    #[serde(default)]
    pub default_user: Option<String>,
    /// CA certificates (PEM) the guest adds to its system trust store (PID 1 only): the host's
    /// egress CA, whose leaves the host's secret broker presents. Certificates only, never a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_pem: Option<String>,
}

/// A sandbox's identity inside its VM (`reidentify`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Identity {
    /// Hostname (the sandbox id).
    pub hostname: String,
    /// The network interface's new settings; `None` when the VM has no network device.
    #[serde(default)]
    pub net: Option<NetIdentity>,
    /// Bytes the guest mixes into its random pool before forcing a reseed (at most
    /// [`MAX_IDENTITY_ENTROPY`]).
    #[serde(default)]
    pub entropy: Vec<u8>,
}

/// Most entropy bytes one `reidentify` carries.
pub const MAX_IDENTITY_ENTROPY: usize = 512;

/// Static IPv4 settings of the sandbox's ethernet interface.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetIdentity {
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Address.
    pub addr: std::net::Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Name servers.
    #[serde(default)]
    pub dns: Vec<std::net::IpAddr>,
}

/// Answer to `hello`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HelloReply {
    /// The guest's protocol version.
    pub protocol: u32,
    /// Guest agent version (crate version).
    pub agent_version: String,
    /// Random id chosen at agent start; changes on reboot, not on snapshot restore.
    pub boot_id: String,
    /// Kernel release (`uname -r`).
    pub kernel: String,
}

/// Answer to `ping`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PingReply {
    /// The payload, echoed.
    pub payload: String,
}

/// Answer to `read_clock`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClockReply {
    /// The guest's `CLOCK_REALTIME`, nanoseconds since the Unix epoch.
    pub unix_ns: i64,
}

/// Answer to `health`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HealthReply {
    /// Guest agent version.
    pub agent_version: String,
    /// Milliseconds since the agent started.
    pub uptime_ms: u64,
    /// Processes started through the agent that are still running.
    pub running_processes: u32,
}

/// Answer to `metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct MetricsReply {
    /// Online CPUs.
    pub cpu_count: u32,
    /// CPU busy percentage since the previous `metrics` call (or since boot).
    pub cpu_used_pct: f32,
    /// Total memory, bytes.
    pub mem_total: u64,
    /// Used memory (total - available), bytes.
    pub mem_used: u64,
    /// Page cache, bytes.
    pub mem_cache: u64,
    /// Root filesystem size, bytes.
    pub disk_total: u64,
    /// Root filesystem used, bytes.
    pub disk_used: u64,
}

/// What to run.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Executed directly; `argv[0]` is looked up in `PATH`.
    Argv(Vec<String>),
    /// Run by `/bin/bash -l -c` (falling back to `/bin/sh -c`).
    Shell(String),
}

/// The `exec` request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ExecSpec {
    /// What to run.
    pub command: Command,
    /// Extra environment (wins over the sandbox-wide environment).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory; default the user's home. Relative paths resolve against the home.
    #[serde(default)]
    pub cwd: Option<String>,
    /// User to run as; default the session's default user.
    #[serde(default)]
    pub user: Option<String>,
    /// Keep stdin open for `DATA` on the stdin channel (else stdin is `/dev/null`).
    #[serde(default)]
    pub stdin: bool,
    /// Kill the process group after this many milliseconds.
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Run on a pseudo-terminal of this size (stdout carries the terminal output; no stderr).
    #[serde(default)]
    pub pty: Option<PtySize>,
    /// Free-form label stored with the process (shown by `list_processes`).
    #[serde(default)]
    pub tag: Option<String>,
}

impl ExecSpec {
    /// A shell command with everything else defaulted.
    pub fn shell(cmd: impl Into<String>) -> Self {
        Self {
            command: Command::Shell(cmd.into()),
            env: BTreeMap::new(),
            cwd: None,
            user: None,
            stdin: false,
            timeout_ms: None,
            pty: None,
            tag: None,
        }
    }
}

/// Terminal size.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct PtySize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

/// A path in the guest plus the user it is accessed as.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PathRequest {
    /// Absolute, or relative to the user's home.
    pub path: String,
    /// User whose home relative paths resolve against and whose permissions apply.
    #[serde(default)]
    pub user: Option<String>,
}

/// The `write_file` request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WriteFile {
    /// Destination.
    #[serde(flatten)]
    pub at: PathRequest,
    /// Permission bits for a new file; default 0o644.
    #[serde(default)]
    pub mode: Option<u32>,
    /// Append instead of replacing (not atomic).
    #[serde(default)]
    pub append: bool,
    /// Create missing parent directories (owned by the user).
    #[serde(default = "yes")]
    pub create_parents: bool,
    /// Hand the file and every parent directory this request creates to this user (as
    /// [`Request::MakeDir`]'s `owner`). Needs a root caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// User metadata to store on the file (see [`FileEntry::metadata`]); a replaced file's
    /// earlier metadata is gone, an appended-to file's is kept and these keys are set.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

/// Events a guest sends before a request's [`Outcome`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum GuestEvent {
    /// The process is running (first event of `exec` and `attach`).
    Started {
        /// Guest pid.
        pid: u32,
    },
    /// Replayed output was cut short: this many bytes fell out of the buffer.
    Lost {
        /// Bytes missing before the first replayed byte.
        bytes: u64,
    },
    /// The file a `read_file` streams.
    FileInfo(FileEntry),
    /// The process ended (last event of `exec` and `attach`, right before the outcome).
    Exited(ExitStatus),
    /// A `connect_port` connection is up.
    Connected,
    /// A `watch` is in place; every change from now on is reported.
    Watching,
    /// A change under a watched directory.
    FsEvent(FsEvent),
}

/// What happened to a watched path.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum FsOp {
    /// Created, or moved in.
    Create,
    /// Contents changed.
    Write,
    /// Deleted.
    Remove,
    /// Moved away (renamed).
    Rename,
    /// Attributes (mode, owner, times) changed.
    Chmod,
}

/// One change under a watched directory.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FsEvent {
    /// Path relative to the watched directory (`.` for the directory itself).
    pub name: String,
    /// What happened.
    pub op: FsOp,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number, when a signal ended it: `1..=`[`MAX_SIGNAL`]. A message carrying any other
    /// number does not parse (a protocol error), so no arithmetic on it can overflow.
    #[serde(default, deserialize_with = "optional_signal_number")]
    pub signal: Option<i32>,
    /// The request's timeout fired and the agent killed it.
    #[serde(default)]
    pub timed_out: bool,
    /// Microseconds from the agent starting to spawn the process until it had collected its
    /// exit status, timed in the guest: for `/bin/true`, the guest's own cost of a command
    /// (fork, exec, exit, reap), which benchmarks set apart from the transport's and the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elapsed_us: Option<u64>,
    /// Microseconds from the agent taking up the `exec` request until it sent this status, timed
    /// in the guest (includes `elapsed_us`): what is left of it is the agent's own work on a
    /// command (resolving the user, setting up stdio, forwarding output and exit). Only on the
    /// status of an `exec` stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_us: Option<u64>,
}

impl ExitStatus {
    /// Shell convention: the code, or 128 + signal; -1 when neither is known (or the signal is
    /// outside `1..=`[`MAX_SIGNAL`], which only a value built in code, not parsed, can hold).
    pub fn shell_code(&self) -> i32 {
        match (self.code, self.signal) {
            (Some(c), _) => c,
            (None, Some(s)) if (1..=MAX_SIGNAL).contains(&s) => 128 + s,
            (None, _) => -1,
        }
    }
}

/// Highest signal number Linux has (`SIGRTMAX`).
pub const MAX_SIGNAL: i32 = 64;

/// Accepts a signal number in `1..=MAX_SIGNAL` only.
fn signal_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<i32, D::Error> {
    let n = i32::deserialize(d)?;
    if (1..=MAX_SIGNAL).contains(&n) {
        Ok(n)
    } else {
        Err(serde::de::Error::custom(format_args!(
            "signal {n} is outside 1..={MAX_SIGNAL}"
        )))
    }
}

/// [`signal_number`] for an optional field (`null` or absent is `None`).
fn optional_signal_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    match Option::<i32>::deserialize(d)? {
        Some(n) if !(1..=MAX_SIGNAL).contains(&n) => Err(serde::de::Error::custom(format_args!(
            "signal {n} is outside 1..={MAX_SIGNAL}"
        ))),
        other => Ok(other),
    }
}

/// A process the agent started.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProcessInfo {
    /// Guest pid.
    pub pid: u32,
    /// The command as requested.
    pub command: Command,
    /// Label given at start.
    pub tag: Option<String>,
    /// User it runs as.
    pub user: String,
    /// Working directory.
    pub cwd: String,
    /// Runs on a PTY.
    pub pty: bool,
    /// Start time, milliseconds since the Unix epoch.
    pub started_unix_ms: i64,
    /// How it ended; `None` while running.
    pub exit: Option<ExitStatus>,
}

/// Kind of filesystem entry.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Anything else (device, socket, fifo).
    Other,
}

/// One filesystem entry.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileEntry {
    /// Last path component.
    pub name: String,
    /// Absolute path.
    pub path: String,
    /// Entry kind.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// `ls -l` style permissions, e.g. `-rw-r--r--`.
    pub permissions: String,
    /// Owner user name (or uid as text).
    pub owner: String,
    /// Group name (or gid as text).
    pub group: String,
    /// Modification time, nanoseconds since the Unix epoch.
    pub modified_unix_ns: i64,
    /// Target, for symlinks.
    #[serde(default)]
    pub symlink_target: Option<String>,
    /// For symlinks: where the link finally leads, every link on the way resolved; `None` when
    /// it dangles, loops or leads somewhere the caller may not look.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedLink>,
    /// User metadata: the file's `user.e2b.<key>` extended attributes (the names E2B's envd
    /// uses, so metadata set either way reads the same), keys in lower case.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
}

/// The extended-attribute prefix under which a file's user metadata is stored in the guest.
pub const FILE_METADATA_XATTR_PREFIX: &str = "user.e2b.";

/// The entry a symlink finally leads to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResolvedLink {
    /// Absolute path, free of symlinks.
    pub path: String,
    /// Its kind (never [`FileKind::Symlink`]).
    pub kind: FileKind,
    /// Its permission bits.
    pub mode: u32,
}

/// Answer to `make_dir`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MakeDirReply {
    /// The directory.
    pub entry: FileEntry,
    /// False when it existed already.
    pub created: bool,
}

/// Final answer to a request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Success; the value's type depends on the request.
    Ok(serde_json::Value),
    /// Failure.
    Error(GuestError),
}

/// A message the guest sends on a request stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum GuestMessage {
    /// An intermediate event.
    Event(GuestEvent),
    /// The final answer.
    Outcome(Outcome),
}

/// Machine-readable failure classes reported by the guest.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum GuestErrorCode {
    /// No such file or directory.
    NotFound,
    /// The destination exists.
    AlreadyExists,
    /// The user may not do this.
    PermissionDenied,
    /// A path component is not a directory.
    NotADirectory,
    /// Expected a file, found a directory.
    IsADirectory,
    /// Directory not empty (remove without `recursive`).
    DirectoryNotEmpty,
    /// Malformed request.
    InvalidArgument,
    /// Unknown user or group name.
    UserNotFound,
    /// The program could not be started (missing binary, not executable, bad cwd).
    SpawnFailed,
    /// No process with that pid was started through the agent.
    NoSuchProcess,
    /// Disk full.
    NoSpace,
    /// Read-only filesystem.
    ReadOnly,
    /// The request is not known to this agent version.
    Unsupported,
    /// Nothing listens on the port (`connect_port`).
    ConnectionRefused,
    /// Other I/O failure.
    Io,
}

/// A failure reported by the guest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct GuestError {
    /// Class.
    pub code: GuestErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl GuestError {
    /// A new error.
    pub fn new(code: GuestErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// Classifies an I/O error; `context` names the operation and path.
    pub fn from_io(err: &std::io::Error, context: impl std::fmt::Display) -> Self {
        use std::io::ErrorKind as K;
        let code = match err.kind() {
            K::NotFound => GuestErrorCode::NotFound,
            K::AlreadyExists => GuestErrorCode::AlreadyExists,
            K::PermissionDenied => GuestErrorCode::PermissionDenied,
            K::NotADirectory => GuestErrorCode::NotADirectory,
            K::IsADirectory => GuestErrorCode::IsADirectory,
            K::DirectoryNotEmpty => GuestErrorCode::DirectoryNotEmpty,
            K::StorageFull => GuestErrorCode::NoSpace,
            K::ReadOnlyFilesystem => GuestErrorCode::ReadOnly,
            K::InvalidInput | K::InvalidFilename => GuestErrorCode::InvalidArgument,
            K::ConnectionRefused => GuestErrorCode::ConnectionRefused,
            _ => GuestErrorCode::Io,
        };
        Self::new(code, format!("{context}: {err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_have_a_stable_json_shape() {
        let r = Request::Exec(ExecSpec::shell("echo hi"));
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["op"], "exec");
        assert_eq!(v["command"], json!({"shell": "echo hi"}));

        let r: Request = serde_json::from_value(json!({"op": "list_dir", "path": "x"})).unwrap();
        assert_eq!(
            r,
            Request::ListDir {
                at: PathRequest {
                    path: "x".into(),
                    user: None
                },
                depth: 1
            }
        );
        let r: Request =
            serde_json::from_value(json!({"op": "write_file", "path": "/a", "user": "user"}))
                .unwrap();
        let Request::WriteFile(w) = r else {
            panic!("not write_file")
        };
        assert!(w.create_parents && !w.append);
    }

    #[test]
    fn unknown_requests_fail_to_parse() {
        assert!(serde_json::from_value::<Request>(json!({"op": "teleport"})).is_err());
    }

    #[test]
    fn guest_messages_distinguish_events_and_outcomes() {
        let e: GuestMessage =
            serde_json::from_value(json!({"event": "started", "pid": 7})).unwrap();
        assert_eq!(e, GuestMessage::Event(GuestEvent::Started { pid: 7 }));
        let o: GuestMessage =
            serde_json::from_value(json!({"error": {"code": "not_found", "message": "x"}}))
                .unwrap();
        assert_eq!(
            o,
            GuestMessage::Outcome(Outcome::Error(GuestError::new(
                GuestErrorCode::NotFound,
                "x"
            )))
        );
        let o: GuestMessage = serde_json::from_value(json!({"ok": null})).unwrap();
        assert_eq!(
            o,
            GuestMessage::Outcome(Outcome::Ok(serde_json::Value::Null))
        );
    }

    #[test]
    fn signals_outside_the_linux_range_do_not_parse() {
        // A hostile guest's exit status: `128 + i32::MAX` would overflow.
        for bad in [i32::MAX, i32::MIN, 0, -1, 65] {
            let v = json!({"event": "exited", "code": null, "signal": bad});
            assert!(
                serde_json::from_value::<GuestMessage>(v).is_err(),
                "signal {bad} parsed"
            );
            let v = json!({"op": "signal", "pid": 1, "signal": bad});
            assert!(
                serde_json::from_value::<Request>(v).is_err(),
                "signal {bad}"
            );
        }
        let e: GuestMessage =
            serde_json::from_value(json!({"event": "exited", "code": null, "signal": 64})).unwrap();
        let GuestMessage::Event(GuestEvent::Exited(status)) = e else {
            panic!("not exited: {e:?}")
        };
        assert_eq!(status.shell_code(), 192);
        // Absent and null signals still parse.
        let s: ExitStatus = serde_json::from_value(json!({"code": 3})).unwrap();
        assert_eq!((s.signal, s.shell_code()), (None, 3));
        let s: ExitStatus = serde_json::from_value(json!({"code": null, "signal": null})).unwrap();
        assert_eq!(s.shell_code(), -1);
        // A value built in code cannot overflow either.
        let built = ExitStatus {
            code: None,
            signal: Some(i32::MAX),
            timed_out: false,
            elapsed_us: None,
            handled_us: None,
        };
        assert_eq!(built.shell_code(), -1);
    }

    #[test]
    fn io_errors_map_to_codes() {
        let e = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            GuestError::from_io(&e, "open /etc/shadow").code,
            GuestErrorCode::PermissionDenied
        );
        assert_eq!(
            ExitStatus {
                code: None,
                signal: Some(9),
                timed_out: false,
                elapsed_us: None,
                handled_us: None,
            }
            .shell_code(),
            137
        );
    }
}
