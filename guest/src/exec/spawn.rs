//! Turning an `exec` request into a running child: argv, environment, working directory, stdio
//! (pipes or a PTY), and the steps that run in the child between fork and exec.
//!
//! In the child, in this order: `setsid` (the process leads its own session and process group, so
//! a timeout or a signal reaches everything it started), the PTY becomes the controlling terminal,
//! supplementary groups, gid, uid, and last `chdir`, so the user's own permissions decide whether
//! it may enter the working directory.

use crate::exec::pty;
use crate::files::paths;
use crate::reaper::Reaper;
use crate::users::{Credentials, User};
use platinum_protocol::{
    Command as Program, ExecSpec, ExitStatus, GuestError, GuestErrorCode, PtySize,
};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tokio::sync::oneshot;

/// `PATH` every process starts with (the request or the session may override it).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start one process, resolved and checked.
pub struct Launch {
    argv: Vec<String>,
    env: BTreeMap<String, String>,
    cwd: PathBuf,
    user: String,
    creds: Credentials,
    stdin: bool,
    pty: Option<PtySize>,
}

/// A started child and the agent's ends of its stdio.
pub struct Launched {
    /// Its pid (also its process group and session id).
    pub pid: u32,
    /// Resolves with its exit status.
    pub exit: oneshot::Receiver<ExitStatus>,
    /// Where its input goes: the stdin pipe, or the PTY master.
    pub stdin: Option<OwnedFd>,
    /// Its output, by channel: stdout and stderr pipes, or the PTY master on stdout.
    pub outputs: Vec<(u8, OwnedFd)>,
    /// The PTY master, for resizing.
    pub pty: Option<OwnedFd>,
    /// When the spawn began (for the exit status's `elapsed_us`).
    pub started: std::time::Instant,
}

impl Launch {
    /// Resolves a request for `user`; `session_env` is the sandbox-wide environment from `hello`.
    pub fn new(
        spec: &ExecSpec,
        user: &User,
        creds: Credentials,
        session_env: &BTreeMap<String, String>,
    ) -> Result<Self, GuestError> {
        let argv = match &spec.command {
            Program::Argv(argv) if argv.first().is_some_and(|a| !a.is_empty()) => argv.clone(),
            Program::Argv(_) => {
                return Err(GuestError::new(
                    GuestErrorCode::InvalidArgument,
                    "empty argv",
                ));
            }
            Program::Shell(script) if Path::new("/bin/bash").exists() => {
                vec!["/bin/bash".into(), "-l".into(), "-c".into(), script.clone()]
            }
            Program::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        };
        if argv.iter().any(|a| a.contains('\0')) {
            return Err(GuestError::new(
                GuestErrorCode::InvalidArgument,
                "argv contains a NUL byte",
            ));
        }
        let cwd = paths::resolve(spec.cwd.as_deref().unwrap_or("~"), &user.home)?;
        if !cwd.is_dir() {
            let why = if cwd.exists() {
                "is not a directory"
            } else {
                "does not exist"
            };
            return Err(GuestError::new(
                GuestErrorCode::SpawnFailed,
                format!("working directory {} {why}", cwd.display()),
            ));
        }
        let mut env = BTreeMap::from([
            ("PATH".to_string(), DEFAULT_PATH.to_string()),
            ("HOME".to_string(), paths::display(&user.home)),
            ("USER".to_string(), user.name.clone()),
            ("LOGNAME".to_string(), user.name.clone()),
            ("SHELL".to_string(), user.shell.clone()),
            ("LANG".to_string(), "C.UTF-8".to_string()),
        ]);
        if spec.pty.is_some() {
            env.insert("TERM".into(), "xterm-256color".into());
        }
        env.extend(session_env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        if env
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'))
        {
            return Err(GuestError::new(
                GuestErrorCode::InvalidArgument,
                "malformed environment variable",
            ));
        }
        Ok(Self {
            argv,
            env,
            cwd,
            user: user.name.clone(),
            creds,
            stdin: spec.stdin,
            pty: spec.pty,
        })
    }

    /// The working directory the process starts in.
    pub fn cwd(&self) -> &Path {
        &self.cwd
    }

    /// Forks and execs. Blocking: call it from a blocking thread. Fails with `spawn_failed`, carrying
    /// the OS error, when the program cannot be started.
    pub fn start(self, reaper: &Reaper) -> Result<Launched, GuestError> {
        let started = std::time::Instant::now();
        let failed = |e: std::io::Error| {
            GuestError::new(
                GuestErrorCode::SpawnFailed,
                format!(
                    "cannot start {:?} as {} in {}: {e}",
                    self.argv[0],
                    self.user,
                    self.cwd.display()
                ),
            )
        };
        let mut cmd = Command::new(&self.argv[0]);
        cmd.args(&self.argv[1..]).env_clear().envs(&self.env);
        let pty = match self.pty {
            Some(size) => {
                let pty = pty::open_pty(size).map_err(failed)?;
                for stdio in 0..3 {
                    let slave = pty.slave.try_clone().map_err(failed)?;
                    match stdio {
                        0 => cmd.stdin(Stdio::from(slave)),
                        1 => cmd.stdout(Stdio::from(slave)),
                        _ => cmd.stderr(Stdio::from(slave)),
                    };
                }
                Some(pty.master)
            }
            None => {
                cmd.stdin(if self.stdin {
                    Stdio::piped()
                } else {
                    Stdio::null()
                });
                cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
                None
            }
        };
        let cwd = CString::new(self.cwd.as_os_str().as_bytes())
            .map_err(|e| failed(std::io::Error::other(e)))?;
        let Credentials { uid, gid, groups } = self.creds.clone();
        let on_pty = pty.is_some();
        // SAFETY: the closure runs in the forked child and only makes async-signal-safe syscalls on
        // data prepared before the fork (no allocation, no locks).
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setsid()?;
                if on_pty {
                    pty::acquire_controlling_terminal()?;
                }
                check(libc::setgroups(groups.len(), groups.as_ptr()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
                check(libc::chdir(cwd.as_ptr()))
            });
        }
        let (mut child, exit) = reaper.spawn(&mut cmd).map_err(failed)?;
        // Close the parent's copies of the PTY slave: the master then reads EIO once the child's
        // session is gone.
        drop(cmd);
        let pid = child.id();
        let launched = match pty {
            Some(master) => Launched {
                pid,
                exit,
                stdin: Some(master.try_clone().map_err(failed)?),
                outputs: vec![(
                    platinum_protocol::channel::STDOUT,
                    master.try_clone().map_err(failed)?,
                )],
                pty: Some(master),
                started,
            },
            None => {
                let mut outputs = Vec::with_capacity(2);
                if let Some(out) = child.stdout.take() {
                    outputs.push((platinum_protocol::channel::STDOUT, OwnedFd::from(out)));
                }
                if let Some(err) = child.stderr.take() {
                    outputs.push((platinum_protocol::channel::STDERR, OwnedFd::from(err)));
                }
                Launched {
                    pid,
                    exit,
                    stdin: child.stdin.take().map(OwnedFd::from),
                    outputs,
                    pty: None,
                    started,
                }
            }
        };
        Ok(launched)
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
