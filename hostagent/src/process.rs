//! Child processes the host agent owns (VMMs and their helper daemons): spawning into their own
//! process group, logging, and killing.
//!
//! Every child runs as the leader of a new process group (`process_group(0)`), so one `killpg`
//! reaches whatever it forks. Its stdout and stderr are appended to a log file in the VM
//! directory, which is what [`crate::console::tail`] reads back when a start fails. A watcher task
//! owns the `tokio::process::Child`, reaps it, and publishes the exit status on a `watch` channel;
//! everybody else only holds the receiving side, so waiting never races with reaping and nothing
//! blocks forever.
//!
//! [`ChildProcess::kill`] is SIGTERM to the group, a bounded wait, then SIGKILL and another
//! bounded wait. It is idempotent: killing an exited child returns its recorded status.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::error::{Error, IoContext, Result};

/// How long `kill` waits after SIGKILL before it gives up on the process.
const SIGKILL_WAIT: Duration = Duration::from_secs(5);

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit code, if it exited normally.
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    pub signal: Option<i32>,
}

impl ExitInfo {
    fn from_status(status: ExitStatus) -> Self {
        ExitInfo {
            code: status.code(),
            signal: status.signal(),
        }
    }

    /// A short human-readable description (`exit code 1`, `signal 9`).
    pub fn describe(&self) -> String {
        match (self.code, self.signal) {
            (Some(code), _) => format!("exit code {code}"),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "unknown exit status".to_string(),
        }
    }
}

/// A program to start: path, arguments and where its output goes.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    /// Short name for logs (`qemu`, `vhost-device-vsock`).
    pub name: String,
    /// Executable.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// File that stdout and stderr are appended to.
    pub log: PathBuf,
    /// Descriptors the child inherits under their own numbers (the parent keeps them
    /// close-on-exec: only this child gets them).
    pub inherit: Vec<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// A child process in its own process group, reaped by a watcher task.
#[derive(Debug)]
pub struct ChildProcess {
    name: String,
    pid: u32,
    log: PathBuf,
    exit: watch::Receiver<Option<ExitInfo>>,
}

impl ChildProcess {
    /// Starts `spec` as the leader of a new process group. Must run inside a tokio runtime.
    pub fn spawn(spec: &ProcessSpec) -> Result<ChildProcess> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .ctx(|| format!("opening log file {}", spec.log.display()))?;
        let log_err = log
            .try_clone()
            .ctx(|| format!("duplicating log file {}", spec.log.display()))?;
        let mut command = tokio::process::Command::new(&spec.program);
        command
            .args(spec.args.iter().map(OsStr::new))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .process_group(0)
            .kill_on_drop(false);
        if !spec.inherit.is_empty() {
            let fds: Vec<i32> = spec.inherit.iter().map(|f| f.as_raw_fd()).collect();
            // SAFETY: runs in the child between fork and exec and only calls fcntl, which is
            // async-signal-safe; the descriptors are open (the spec holds them).
            unsafe {
                command.pre_exec(move || {
                    for &fd in &fds {
                        if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingProgram {
                    program: spec.program.display().to_string(),
                    hint: "the configured path does not exist".to_string(),
                }
            } else {
                Error::io(
                    format!("spawning {} ({})", spec.name, spec.program.display()),
                    e,
                )
            }
        })?;
        let pid = child.id().ok_or_else(|| {
            Error::VmmStart(format!("{} exited before its pid was read", spec.name))
        })?;
        info!(name = %spec.name, pid, log = %spec.log.display(), "spawned child process");

        let (tx, rx) = watch::channel(None);
        let name = spec.name.clone();
        tokio::spawn(async move {
            let info = match child.wait().await {
                Ok(status) => ExitInfo::from_status(status),
                Err(e) => {
                    warn!(name = %name, pid, error = %e, "waiting for child failed");
                    ExitInfo {
                        code: None,
                        signal: None,
                    }
                }
            };
            debug!(name = %name, pid, status = %info.describe(), "child process exited");
            // Nobody listening is fine: the owner may have dropped its handle.
            let _ = tx.send(Some(info));
        });

        Ok(ChildProcess {
            name: spec.name.clone(),
            pid,
            log: spec.log.clone(),
            exit: rx,
        })
    }

    /// Process id (also the process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Short name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The log file its output goes to.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The exit status if it has already exited (and been reaped).
    pub fn try_exit(&self) -> Option<ExitInfo> {
        *self.exit.borrow()
    }

    /// Resolves when the process has exited.
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.exit.clone();
        match rx.wait_for(Option::is_some).await {
            Ok(value) => value.unwrap_or(ExitInfo {
                code: None,
                signal: None,
            }),
            // The watcher task is gone without publishing: only possible when the runtime shuts
            // down, and then there is no process left to wait for.
            Err(_) => ExitInfo {
                code: None,
                signal: None,
            },
        }
    }

    /// Waits for the exit for at most `timeout`.
    pub async fn wait_timeout(&self, timeout: Duration) -> Option<ExitInfo> {
        tokio::time::timeout(timeout, self.wait()).await.ok()
    }

    /// Sends `signal` to the whole process group unless the leader has already exited.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        if self.try_exit().is_some() {
            return Ok(());
        }
        let pgid = Pid::from_raw(self.pid as i32);
        match killpg(pgid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::io(
                format!(
                    "sending {signal} to process group {} ({})",
                    self.pid, self.name
                ),
                e.into(),
            )),
        }
    }

    /// SIGTERM to the group, wait up to `grace`, then SIGKILL and wait again (bounded).
    /// Idempotent: an exited process just returns its status.
    pub async fn kill(&self, grace: Duration) -> Result<ExitInfo> {
        if let Some(exit) = self.try_exit() {
            return Ok(exit);
        }
        self.signal(Signal::SIGTERM)?;
        if let Some(exit) = self.wait_timeout(grace).await {
            return Ok(exit);
        }
        warn!(name = %self.name, pid = self.pid, "child ignored SIGTERM, sending SIGKILL");
        self.signal(Signal::SIGKILL)?;
        self.wait_timeout(SIGKILL_WAIT)
            .await
            .ok_or_else(|| Error::Timeout {
                what: format!("{} (pid {}) to exit after SIGKILL", self.name, self.pid),
                seconds: SIGKILL_WAIT.as_secs(),
            })
    }
}

/// Processes (other than this one) whose command line mentions `path`: the VMM and helper
/// daemons of a VM directory name it in their arguments (sockets, disks, logs), also when they
/// were started by an earlier run of the server or their pid file is gone.
pub fn processes_mentioning(path: &Path) -> Vec<i32> {
    let needle = path.to_string_lossy().into_owned();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(&needle))
                .unwrap_or(false)
        })
        .collect()
}

/// SIGKILLs every process [`processes_mentioning`] `path` and returns how many there were. For
/// VMs nobody tracks any more: a boot cut short, or a server that died without stopping them.
pub fn kill_processes_mentioning(path: &Path) -> usize {
    let pids = processes_mentioning(path);
    for pid in &pids {
        warn!(pid, path = %path.display(), "killing a process left behind for this VM directory");
        // A pid that exited meanwhile gives ESRCH, which is fine.
        let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    pids.len()
}

/// Finds `program` in the directories of `PATH`.
pub fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// Whether a process with this pid exists (signal 0 succeeds or is denied).
pub fn pid_alive(pid: u32) -> bool {
    match nix::sys::signal::kill(Pid::from_raw(pid as i32), None) {
        Ok(()) => true,
        Err(nix::errno::Errno::EPERM) => true,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(dir: &Path, script: &str) -> ProcessSpec {
        ProcessSpec {
            name: "sh".to_string(),
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".to_string(), script.to_string()],
            log: dir.join("sh.log"),
            inherit: Vec::new(),
        }
    }

    #[tokio::test]
    async fn exit_status_and_log_are_recorded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child =
            ChildProcess::spawn(&sh(dir.path(), "echo out; echo err >&2; exit 3")).expect("spawn");
        let exit = child.wait().await;
        assert_eq!(
            exit,
            ExitInfo {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(child.try_exit(), Some(exit));
        let log = std::fs::read_to_string(dir.path().join("sh.log")).expect("log");
        assert!(log.contains("out") && log.contains("err"), "log: {log}");
    }

    #[tokio::test]
    async fn kill_terminates_the_group_and_is_idempotent() {
        let dir = tempfile::tempdir().expect("tempdir");
        // The shell forks a grandchild; killing the group must reach it too.
        let pidfile = dir.path().join("grandchild");
        let script = format!("sleep 300 & echo $! > {}; wait", pidfile.display());
        let child = ChildProcess::spawn(&sh(dir.path(), &script)).expect("spawn");
        let mut grandchild = None;
        for _ in 0..100 {
            if let Ok(text) = std::fs::read_to_string(&pidfile)
                && let Ok(pid) = text.trim().parse::<u32>()
            {
                grandchild = Some(pid);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let grandchild = grandchild.expect("grandchild pid written");
        let exit = child.kill(Duration::from_secs(2)).await.expect("kill");
        assert_eq!(exit.signal, Some(libc::SIGTERM));
        assert!(!pid_alive(child.pid()));
        for _ in 0..100 {
            if !pid_alive(grandchild) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(!pid_alive(grandchild), "grandchild survived the group kill");
        assert_eq!(
            child
                .kill(Duration::from_secs(1))
                .await
                .expect("second kill"),
            exit
        );
    }

    #[tokio::test]
    async fn kill_escalates_to_sigkill() {
        let dir = tempfile::tempdir().expect("tempdir");
        let child = ChildProcess::spawn(&sh(
            dir.path(),
            "trap '' TERM; echo ready; while true; do sleep 0.05; done",
        ))
        .expect("spawn");
        // Let the shell install its trap before the signal arrives.
        for _ in 0..100 {
            if std::fs::read_to_string(dir.path().join("sh.log")).is_ok_and(|l| l.contains("ready"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let exit = child.kill(Duration::from_millis(200)).await.expect("kill");
        assert_eq!(exit.signal, Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn missing_program_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let spec = ProcessSpec {
            name: "nope".to_string(),
            program: dir.path().join("does-not-exist"),
            args: vec![],
            log: dir.path().join("nope.log"),
            inherit: Vec::new(),
        };
        assert!(matches!(
            ChildProcess::spawn(&spec),
            Err(Error::MissingProgram { .. })
        ));
    }
}
