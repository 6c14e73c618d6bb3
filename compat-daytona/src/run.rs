//! Running one command to completion for a toolbox request (execute, code-run, git, find, ...).
//!
//! Built on the engine's streaming exec, with one addition the buffered exec does not make: if
//! the request goes away before the command ends (the client disconnected or gave up), the
//! command's whole process group is killed, so an abandoned request never leaves a process
//! behind.

use bytes::Bytes;
use platinum_engine::model::{CommandLine, ExecRequest};
use platinum_engine::{Engine, Error as EngineError, StreamOptions};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long past a command's own timeout the host waits before giving up on the guest.
const HOST_GRACE: Duration = Duration::from_secs(10);
const SIGKILL: i32 = 9;

/// How a command ended and what it wrote.
#[derive(Debug, Clone)]
pub struct Finished {
    /// Exit code (128 + signal when a signal ended it).
    pub exit_code: i32,
    /// stdout (capped at the engine's output limit).
    pub stdout: Bytes,
    /// stderr (capped likewise).
    pub stderr: Bytes,
    /// The timeout fired and the command was killed.
    pub timed_out: bool,
}

impl Finished {
    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// An argv command with options.
#[derive(Debug, Clone, Default)]
pub struct Cmd {
    /// Program and arguments (never a shell string built from user input).
    pub argv: Vec<String>,
    /// Extra environment.
    pub env: BTreeMap<String, String>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Kill it after this long (`None`: no limit).
    pub timeout: Option<Duration>,
    /// Text for stdin (then stdin is closed).
    pub stdin: Option<String>,
}

impl Cmd {
    /// `argv` with no options.
    pub fn new<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Sets the working directory.
    pub fn cwd(mut self, cwd: Option<String>) -> Self {
        self.cwd = cwd;
        self
    }

    /// Adds environment variables.
    pub fn envs(mut self, env: BTreeMap<String, String>) -> Self {
        self.env.extend(env);
        self
    }

    /// Sets the timeout.
    pub fn timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Kills a process group when dropped while armed.
struct KillOnDrop {
    engine: Arc<Engine>,
    sandbox: String,
    pid: u32,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (engine, sandbox, pid) = (self.engine.clone(), self.sandbox.clone(), self.pid);
        tracing::debug!(sandbox = %sandbox, pid, "request abandoned: killing its command");
        rt.spawn(async move {
            if let Err(e) = engine.signal_process(&sandbox, pid, SIGKILL).await {
                tracing::debug!(sandbox = %sandbox, pid, error = %e, "killing an abandoned command");
            }
        });
    }
}

/// Runs `cmd` in sandbox `id` until it ends; kills it if this future is dropped first.
pub async fn run(engine: &Arc<Engine>, id: &str, cmd: Cmd) -> Result<Finished, EngineError> {
    let timeout_ms = cmd.timeout.map(|t| (t.as_millis() as u64).max(1));
    let req = ExecRequest {
        command: CommandLine::Argv(cmd.argv),
        env: cmd.env,
        cwd: cmd.cwd,
        user: None,
        // 0 tells the engine "no limit".
        timeout_ms: Some(timeout_ms.unwrap_or(0)),
        stdin: cmd.stdin,
        background: false,
    };
    let stream = engine
        .exec_stream(id, req, StreamOptions::default())
        .await?;
    let mut guard = KillOnDrop {
        engine: engine.clone(),
        sandbox: id.to_string(),
        pid: stream.pid(),
        armed: true,
    };
    let collect = stream.collect(engine.config().exec_output_limit);
    let out = match timeout_ms {
        Some(ms) => {
            match tokio::time::timeout(Duration::from_millis(ms) + HOST_GRACE, collect).await {
                Ok(r) => r.map_err(EngineError::from)?,
                // The guard kills it on the way out.
                Err(_) => return Err(EngineError::ExecTimeout(ms)),
            }
        }
        None => collect.await.map_err(EngineError::from)?,
    };
    guard.armed = false;
    Ok(Finished {
        exit_code: out.exit.shell_code(),
        stdout: out.stdout,
        stderr: out.stderr,
        timed_out: out.exit.timed_out,
    })
}
