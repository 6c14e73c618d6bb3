//! Named background shells ("sessions"): one long-lived `bash` in the guest per session, in which
//! commands run one after another, so `cd`, exported variables and shell functions carry over from
//! one command to the next. Each command has its own id, exit code and logs; callers may wait for
//! it, poll it, follow its output live, or send it input.
//!
//! How a session runs its commands, and how its logs are kept, is in [`crate::sessions`].

use bytes::Bytes;
use futures::Stream;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::commands::exec::StreamOptions;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::ExecRequest;
use crate::process::SIGKILL;
use crate::sessions::{
    MAX_COMMANDS_KEPT, Record, Session, State, boot_of, check_session_id, random_hex,
};

/// Prefix of each stdout line in a command's combined log.
pub const STDOUT_MARK: [u8; 3] = [1, 1, 1];
/// Prefix of each stderr line in a command's combined log.
pub const STDERR_MARK: [u8; 3] = [2, 2, 2];

/// Most sessions one sandbox may have at once.
const MAX_SESSIONS_PER_SANDBOX: usize = 64;
/// Longest command text.
const MAX_COMMAND_LEN: usize = 1 << 20;
/// Exit code of commands that never ran because their session ended first.
pub const NOT_RUN_EXIT_CODE: i32 = -1;
/// A session keeps at most this many times `exec_output_limit` of logs over all its commands
/// (one command holds at most 4 times: each stream once, the combined log twice).
pub const SESSION_LOG_BUDGET_LIMITS: usize = 4;
/// How long writing input to a command may take (the command may not be reading).
const INPUT_TIMEOUT_MS: u64 = 10_000;

/// A session and its commands, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id (chosen by the caller).
    pub id: String,
    /// Commands, oldest first.
    pub commands: Vec<SessionCommand>,
    /// The shell has exited; the session runs no more commands.
    pub ended: bool,
}

/// A command run in a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionCommand {
    /// Command id.
    pub id: String,
    /// The command text.
    pub command: String,
    /// Exit code once it finished; `None` while queued or running.
    pub exit_code: Option<i32>,
}

/// What a command wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionLogs {
    /// stdout and stderr interleaved, each line prefixed with [`STDOUT_MARK`] or [`STDERR_MARK`].
    pub output: Bytes,
    /// stdout alone.
    pub stdout: Bytes,
    /// stderr alone.
    pub stderr: Bytes,
    /// Exit code once it finished.
    pub exit_code: Option<i32>,
    /// Output was dropped: beyond the command's limit, or (for a finished command) all of it,
    /// to keep its session within its log budget (see [`crate::sessions`]).
    pub truncated: bool,
}

impl Engine {
    /// Starts a session: a new shell in the sandbox, as the default user in its home directory.
    pub async fn create_session(&self, id: &str, session: &str) -> Result<()> {
        check_session_id(session)?;
        let _creating = self.sessions.creating.lock().await;
        let sandbox = self.load(id).await?;
        let existing = self.sessions.of(&sandbox);
        if existing.iter().any(|s| s.id == session) {
            return Err(Error::Conflict(format!("session {session} already exists")));
        }
        if existing.len() >= MAX_SESSIONS_PER_SANDBOX {
            return Err(Error::CapacityExhausted(format!(
                "at most {MAX_SESSIONS_PER_SANDBOX} sessions per sandbox"
            )));
        }
        let req = ExecRequest::argv(vec!["/bin/bash".into(), "-l".into()]);
        let opts = StreamOptions {
            stdin: true,
            pty: None,
            tag: Some(format!("session:{session}")),
        };
        let stream = self.exec_stream(id, req, opts).await?;
        // Re-read: exec_stream required it running, so it has a boot identity now.
        let sandbox = self.load(id).await?;
        let boot = boot_of(&sandbox).ok_or_else(|| {
            Error::Internal(format!("sandbox {id} is running without runtime info"))
        })?;
        let nonce = random_hex(8);
        let dir = format!("/tmp/.platinum-session-{nonce}");
        let stdin = stream.stdin();
        let pid = stream.pid();
        // `-m 700` keeps other users away from the FIFOs; failing here ends the session at once.
        stdin
            .write(format!("mkdir -m 700 {dir} || exit 97\n").as_bytes())
            .await?;
        let s = Arc::new(Session {
            id: session.to_string(),
            sandbox: id.to_string(),
            boot,
            created: std::time::Instant::now(),
            dir,
            pid,
            stdin,
            limit: self.config.exec_output_limit,
            state: Mutex::new(State::new(&nonce)),
            nonce,
            changed: watch::Sender::new(0),
        });
        self.sessions.start(s, stream);
        tracing::info!(sandbox = %id, session, pid, "session started");
        Ok(())
    }

    /// The sandbox's sessions, oldest first (none when it is not running).
    pub async fn list_sessions(&self, id: &str) -> Result<Vec<SessionInfo>> {
        let sandbox = self.load(id).await?;
        Ok(self
            .sessions
            .of(&sandbox)
            .iter()
            .map(|s| s.info())
            .collect())
    }

    /// One session and its commands.
    pub async fn get_session(&self, id: &str, session: &str) -> Result<SessionInfo> {
        let sandbox = self.load(id).await?;
        Ok(self.sessions.get(&sandbox, session)?.info())
    }

    /// Ends a session: kills its shell and everything it started, and forgets its commands.
    pub async fn delete_session(&self, id: &str, session: &str) -> Result<()> {
        let sandbox = self.load(id).await?;
        let s = self.sessions.get(&sandbox, session)?;
        self.sessions.remove(id, session);
        let was_running = !s.lock().ended;
        s.end(None);
        if was_running && let Err(e) = self.signal_process(id, s.pid, SIGKILL).await {
            tracing::debug!(sandbox = %id, session, error = %e, "killing the session shell");
        }
        if let Err(e) = self.remove(id, &s.dir, true, None).await {
            tracing::debug!(sandbox = %id, session, error = %e, "removing the session directory");
        }
        tracing::info!(sandbox = %id, session, "session deleted");
        Ok(())
    }

    /// Queues a command in a session and returns its id at once; it runs after the commands
    /// queued before it.
    pub async fn session_exec(&self, id: &str, session: &str, command: &str) -> Result<String> {
        if command.trim().is_empty() {
            return Err(Error::InvalidRequest("command is empty".into()));
        }
        if command.len() > MAX_COMMAND_LEN || command.contains('\0') {
            return Err(Error::InvalidRequest(format!(
                "command must be under {MAX_COMMAND_LEN} bytes without NUL bytes"
            )));
        }
        let (sandbox, _) = self.running_guest(id).await?;
        let s = self.sessions.get(&sandbox, session)?;
        let cid = random_hex(16);
        {
            let mut st = s.lock();
            if st.ended {
                return Err(Error::SessionEnded(session.to_string()));
            }
            if st.commands.len() >= MAX_COMMANDS_KEPT
                && st.commands.iter().all(|r| r.exit_code.is_none())
            {
                return Err(Error::CapacityExhausted(format!(
                    "session {session} has {MAX_COMMANDS_KEPT} commands queued or running"
                )));
            }
            st.commands
                .push_back(Record::new(cid.clone(), command.to_string()));
            st.queue.push_back(cid.clone());
            st.trim();
        }
        s.notify();
        s.dispatch().await;
        tracing::debug!(sandbox = %id, session, command = %cid, "session command queued");
        Ok(cid)
    }

    /// Waits until a session command finished and returns what it wrote. Fails with
    /// `session_ended` when its session ended (deleted, VM gone) before it could finish.
    pub async fn session_wait(&self, id: &str, session: &str, cid: &str) -> Result<SessionLogs> {
        let sandbox = self.load(id).await?;
        let s = self.sessions.get(&sandbox, session)?;
        let mut changes = s.changed.subscribe();
        loop {
            {
                let mut st = s.lock();
                let r = st
                    .record(cid)
                    .ok_or_else(|| Error::CommandNotFound(cid.to_string()))?;
                if r.aborted {
                    return Err(Error::SessionEnded(session.to_string()));
                }
                if r.exit_code.is_some() {
                    return Ok(r.logs());
                }
            }
            if changes.changed().await.is_err() {
                return Err(Error::SessionEnded(session.to_string()));
            }
        }
    }

    /// One command of a session.
    pub async fn session_command(
        &self,
        id: &str,
        session: &str,
        cid: &str,
    ) -> Result<SessionCommand> {
        let sandbox = self.load(id).await?;
        let s = self.sessions.get(&sandbox, session)?;
        let mut st = s.lock();
        st.record(cid)
            .map(|r| r.info())
            .ok_or_else(|| Error::CommandNotFound(cid.to_string()))
    }

    /// What a session command has written so far.
    pub async fn session_logs(&self, id: &str, session: &str, cid: &str) -> Result<SessionLogs> {
        let sandbox = self.load(id).await?;
        let s = self.sessions.get(&sandbox, session)?;
        let mut st = s.lock();
        st.record(cid)
            .map(|r| r.logs())
            .ok_or_else(|| Error::CommandNotFound(cid.to_string()))
    }

    /// A command's combined, marked log ([`SessionLogs::output`]) from the start, live: the
    /// stream yields what is there, then each new piece as it arrives, and ends once the command
    /// finished and everything was yielded.
    pub async fn follow_session_logs(
        &self,
        id: &str,
        session: &str,
        cid: &str,
    ) -> Result<impl Stream<Item = Bytes> + Send + 'static> {
        let sandbox = self.load(id).await?;
        let s = self.sessions.get(&sandbox, session)?;
        if s.lock().record(cid).is_none() {
            return Err(Error::CommandNotFound(cid.to_string()));
        }
        let changes = s.changed.subscribe();
        let start = (s, cid.to_string(), 0usize, changes);
        Ok(futures::stream::unfold(
            start,
            |(s, cid, mut offset, mut changes)| async move {
                loop {
                    // Some(chunk): yield it; None: wait for more; the stream ends when the
                    // command finished and everything was yielded (or it was forgotten).
                    let step = {
                        let mut st = s.lock();
                        match st.record(&cid) {
                            None => return None,
                            Some(r) if offset < r.output.len() => {
                                let chunk = Bytes::copy_from_slice(&r.output[offset..]);
                                offset = r.output.len();
                                Some(chunk)
                            }
                            Some(r) if r.exit_code.is_some() => return None,
                            Some(_) => None,
                        }
                    };
                    match step {
                        Some(chunk) => return Some((chunk, (s, cid, offset, changes))),
                        None => changes.changed().await.ok()?,
                    }
                }
            },
        ))
    }

    /// Sends input to the running command of a session (it arrives on the command's stdin).
    pub async fn session_input(
        &self,
        id: &str,
        session: &str,
        cid: &str,
        data: &str,
    ) -> Result<()> {
        let (sandbox, _) = self.running_guest(id).await?;
        let s = self.sessions.get(&sandbox, session)?;
        {
            let mut st = s.lock();
            let r = st
                .record(cid)
                .ok_or_else(|| Error::CommandNotFound(cid.to_string()))?;
            if r.exit_code.is_some() {
                return Err(Error::CommandFinished(cid.to_string()));
            }
            // Written to the shell is not enough: until its start marker arrives the FIFO may
            // not exist yet, and a missing FIFO below means the command has ended.
            if !r.started {
                return Err(Error::Conflict(format!(
                    "command {cid} has not started yet"
                )));
            }
        }
        let fifo = format!("{}/{cid}", s.dir);
        // Open read-write so the open never blocks; `-p` makes sure the FIFO is still there (the
        // command may have just ended) and nothing else gets created.
        let req = ExecRequest {
            timeout_ms: Some(INPUT_TIMEOUT_MS),
            stdin: Some(data.to_string()),
            ..ExecRequest::argv(vec![
                "/bin/sh".into(),
                "-c".into(),
                "[ -p \"$1\" ] || exit 3; exec 3<>\"$1\" && cat >&3".into(),
                "session-input".into(),
                fifo,
            ])
        };
        let r = self.exec(id, req).await?;
        match r.exit_code {
            Some(0) => Ok(()),
            Some(3) => Err(Error::CommandFinished(cid.to_string())),
            _ if r.timed_out => Err(Error::ExecTimeout(INPUT_TIMEOUT_MS)),
            code => Err(Error::Internal(format!(
                "writing input to command {cid} failed ({code:?}): {}",
                r.stderr.trim()
            ))),
        }
    }
}
