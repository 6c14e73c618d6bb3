//! Named background shells ("sessions"): one long-lived `bash` in the guest per session, in which
//! commands run one after another, so `cd`, exported variables and shell functions carry over from
//! one command to the next. Each command has its own id, exit code and logs; callers may wait for
//! it, poll it, follow its output live, or send it input.
//!
//! How it works. The shell is an ordinary guest process (stdin kept open, output streamed back).
//! For each command the host writes one line to the shell's stdin:
//!
//! ```text
//! mkfifo <dir>/<cid> && exec {fd}<><dir>/<cid>; <start marker on stdout and stderr>;
//! eval "$(printf %s <base64 of the command> | base64 -d)" <&$fd; rc=$?; <close and remove fifo>;
//! <end marker with rc on stderr and stdout>
//! ```
//!
//! - The command text never reaches the shell's parser directly (it is base64 and `eval`ed), so
//!   unbalanced quotes or a syntax error fail that command (exit 2) and not the session.
//! - The markers carry a random per-session nonce; the host splits the shell's stdout and stderr
//!   on them, so every byte between a command's start and end markers is that command's output,
//!   per channel, even when markers are split across reads.
//! - The command's stdin is a FIFO of its own: input is written there through a separate exec, so
//!   input a command does not read can never be executed by the shell later.
//! - The next command is written only after the previous one's end markers arrived, so commands
//!   queue in order (Daytona's semantics: an async command blocks the ones after it).
//!
//! Logs are kept on the host, in memory, within two budgets:
//! - per command, the first `exec_output_limit` bytes of each stream (the combined log: the first
//!   twice that); later output is dropped and the command's `truncated` flag set;
//! - per session, [`SESSION_LOG_BUDGET_LIMITS`] times `exec_output_limit` over all its commands:
//!   past it, the logs of the oldest finished commands are dropped (emptied, `truncated` set)
//!   until the session fits again. The running command always fits (its own cap is smaller).
//!
//! The combined log prefixes every stdout line with `01 01 01` and every stderr line with
//! `02 02 02` (the prefix is repeated whenever the stream switches mid-line), so a reader can split
//! it back into the two streams exactly.
//!
//! A session ends when its shell exits (`exit` in a command: the running command gets the shell's
//! exit code), when it is deleted (its process group is killed), or when the VM goes away. Commands
//! that never ran get exit code -1. Sessions belong to one boot of the VM: after a stop and start
//! they are gone.

use bytes::Bytes;
use futures::Stream;
use platinum_hostagent::guest::{ExecEvent, ExecStream, StdinWriter};
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::commands::exec::StreamOptions;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{ExecRequest, Sandbox};

/// Prefix of each stdout line in a command's combined log.
pub const STDOUT_MARK: [u8; 3] = [1, 1, 1];
/// Prefix of each stderr line in a command's combined log.
pub const STDERR_MARK: [u8; 3] = [2, 2, 2];

/// Most sessions one sandbox may have at once.
const MAX_SESSIONS_PER_SANDBOX: usize = 64;
/// Most commands a session remembers; the oldest finished ones are forgotten first.
const MAX_COMMANDS_KEPT: usize = 1000;
/// Longest session id.
const MAX_SESSION_ID: usize = 256;
/// Longest command text.
const MAX_COMMAND_LEN: usize = 1 << 20;
/// Exit code of commands that never ran because their session ended first.
pub const NOT_RUN_EXIT_CODE: i32 = -1;
/// Record separator: brackets every marker.
const RS: u8 = 0x1e;
/// Longest marker body (after the prefix) the scanner waits for before calling it text.
const MAX_MARKER_BODY: usize = 96;
/// A session keeps at most this many times `exec_output_limit` of logs over all its commands
/// (one command holds at most 4 times: each stream once, the combined log twice).
pub const SESSION_LOG_BUDGET_LIMITS: usize = 4;
/// How long writing input to a command may take (the command may not be reading).
const INPUT_TIMEOUT_MS: u64 = 10_000;
const SIGKILL: i32 = 9;

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
    /// to keep its session within its log budget (see the module docs).
    pub truncated: bool,
}

type SandboxSessions = HashMap<String, Arc<Session>>;

/// The engine's registry of sessions, by sandbox then session id.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Arc<Mutex<HashMap<String, SandboxSessions>>>,
    /// Serialises creates, so two creates of one id cannot both start a shell.
    creating: tokio::sync::Mutex<()>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SandboxSessions>> {
        self.map.lock().expect("session registry")
    }

    /// Sessions of a sandbox, after dropping those of an earlier boot of its VM.
    fn of(&self, sandbox: &Sandbox) -> Vec<Arc<Session>> {
        let boot = boot_of(sandbox);
        let mut map = self.lock();
        let Some(sessions) = map.get_mut(&sandbox.id) else {
            return Vec::new();
        };
        sessions.retain(|_, s| Some(s.boot) == boot);
        let mut list: Vec<_> = sessions.values().cloned().collect();
        list.sort_by_key(|s| s.created);
        list
    }

    fn get(&self, sandbox: &Sandbox, session: &str) -> Result<Arc<Session>> {
        self.of(sandbox)
            .into_iter()
            .find(|s| s.id == session)
            .ok_or_else(|| Error::SessionNotFound(session.to_string()))
    }

    fn remove(&self, sandbox: &str, session: &str) -> Option<Arc<Session>> {
        let mut map = self.lock();
        let sessions = map.get_mut(sandbox)?;
        let removed = sessions.remove(session);
        if sessions.is_empty() {
            map.remove(sandbox);
        }
        removed
    }
}

/// Which boot of a sandbox's VM this is (the VMM's pid), `None` without a VM.
fn boot_of(s: &Sandbox) -> Option<u32> {
    s.runtime.as_ref().map(|r| r.pid)
}

/// Checks a caller-chosen session id.
fn check_session_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_SESSION_ID || id.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(Error::InvalidRequest(format!(
            "invalid session id {id:?}: 1-{MAX_SESSION_ID} characters, no '/' or control characters"
        )));
    }
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// One live (or ended) session.
struct Session {
    id: String,
    sandbox: String,
    boot: u32,
    created: std::time::Instant,
    /// Guest directory holding the commands' stdin FIFOs.
    dir: String,
    /// The shell's pid (its process group holds everything the session started).
    pid: u32,
    nonce: String,
    stdin: StdinWriter,
    limit: usize,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

struct State {
    commands: VecDeque<Record>,
    queue: VecDeque<String>,
    running: Option<String>,
    ended: bool,
    /// Log bytes held by all commands (see [`Record::held`]).
    log_bytes: usize,
    scanners: [MarkerScanner; 2],
    /// Command between its start and end marker, per channel (0 = stdout, 1 = stderr).
    current: [Option<String>; 2],
    /// Last command seen per channel: output after its end marker (background jobs) goes there.
    last: [Option<String>; 2],
}

struct Record {
    id: String,
    command: String,
    exit_code: Option<i32>,
    /// It did not finish on its own: its session was deleted or its VM went away.
    aborted: bool,
    ended_on: [bool; 2],
    output: Vec<u8>,
    streams: [Vec<u8>; 2],
    last_channel: Option<usize>,
    line_start: [bool; 2],
    truncated: bool,
}

impl Record {
    fn new(id: String, command: String) -> Self {
        Record {
            id,
            command,
            exit_code: None,
            aborted: false,
            ended_on: [false; 2],
            output: Vec::new(),
            streams: [Vec::new(), Vec::new()],
            last_channel: None,
            line_start: [true; 2],
            truncated: false,
        }
    }

    /// Log bytes this command holds.
    fn held(&self) -> usize {
        self.output.len() + self.streams[0].len() + self.streams[1].len()
    }

    /// Drops all logs (the session's budget needs the room); returns the bytes freed.
    fn drop_logs(&mut self) -> usize {
        let freed = self.held();
        if freed > 0 {
            tracing::debug!(command = %self.id, freed, "session log budget: dropping a finished command's logs");
            self.truncated = true;
        }
        self.output = Vec::new();
        self.streams = [Vec::new(), Vec::new()];
        freed
    }

    /// Appends output of one channel to the stream and to the combined, marked log.
    fn append(&mut self, channel: usize, bytes: &[u8], limit: usize) {
        let stream = &mut self.streams[channel];
        let room = limit.saturating_sub(stream.len());
        stream.extend_from_slice(&bytes[..bytes.len().min(room)]);
        let mut truncated = bytes.len() > room;
        let mark = if channel == 0 {
            STDOUT_MARK
        } else {
            STDERR_MARK
        };
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let needs_mark = self.line_start[channel] || self.last_channel != Some(channel);
            let need = piece.len() + if needs_mark { mark.len() } else { 0 };
            if self.output.len() + need > limit.saturating_mul(2) {
                truncated = true;
                break;
            }
            if needs_mark {
                self.output.extend_from_slice(&mark);
            }
            self.output.extend_from_slice(piece);
            self.line_start[channel] = piece.ends_with(b"\n");
            self.last_channel = Some(channel);
        }
        if truncated && !self.truncated {
            tracing::warn!(command = %self.id, limit, "session command output over the limit; the rest is dropped");
        }
        self.truncated |= truncated;
    }

    fn info(&self) -> SessionCommand {
        SessionCommand {
            id: self.id.clone(),
            command: self.command.clone(),
            exit_code: self.exit_code,
        }
    }

    fn logs(&self) -> SessionLogs {
        SessionLogs {
            output: Bytes::copy_from_slice(&self.output),
            stdout: Bytes::copy_from_slice(&self.streams[0]),
            stderr: Bytes::copy_from_slice(&self.streams[1]),
            exit_code: self.exit_code,
            truncated: self.truncated,
        }
    }
}

impl State {
    fn record(&mut self, id: &str) -> Option<&mut Record> {
        self.commands.iter_mut().find(|r| r.id == id)
    }

    /// Appends output to command `cid` and keeps the session within `budget` bytes of logs by
    /// dropping the logs of its oldest finished commands.
    fn append(&mut self, cid: &str, channel: usize, bytes: &[u8], limit: usize, budget: usize) {
        let Some(r) = self.record(cid) else {
            return;
        };
        let before = r.held();
        r.append(channel, bytes, limit);
        let grown = r.held() - before;
        self.log_bytes += grown;
        for r in self.commands.iter_mut() {
            if self.log_bytes <= budget {
                break;
            }
            if r.exit_code.is_some() {
                self.log_bytes -= r.drop_logs();
            }
        }
    }

    /// Forgets the oldest finished commands beyond the cap.
    fn trim(&mut self) {
        while self.commands.len() > MAX_COMMANDS_KEPT {
            match self.commands.iter().position(|r| r.exit_code.is_some()) {
                Some(i) => {
                    if let Some(r) = self.commands.remove(i) {
                        self.log_bytes -= r.held();
                    }
                }
                None => break,
            }
        }
    }
}

/// What the marker scanner found in a channel's bytes.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    Start(String),
    End(String, i32),
}

/// Splits one channel's byte stream on this session's markers, across read boundaries.
struct MarkerScanner {
    prefix: Vec<u8>,
    carry: Vec<u8>,
}

impl MarkerScanner {
    fn new(nonce: &str) -> Self {
        let mut prefix = vec![RS];
        prefix.extend_from_slice(format!("PTM:{nonce}:").as_bytes());
        MarkerScanner {
            prefix,
            carry: Vec::new(),
        }
    }

    fn feed(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut text_from = 0;
        let mut pos = 0;
        while let Some(i) = data[pos..].iter().position(|b| *b == RS) {
            let start = pos + i;
            let rest = &data[start..];
            let n = rest.len().min(self.prefix.len());
            if rest[..n] != self.prefix[..n] {
                pos = start + 1;
                continue;
            }
            if n < self.prefix.len() {
                // A possible marker cut off at the end: wait for more bytes.
                break;
            }
            let body_start = start + self.prefix.len();
            // A body is short: look no further than its longest, so a candidate prefix followed
            // by a flood of text costs a bounded scan.
            let window = &data[body_start..data.len().min(body_start + MAX_MARKER_BODY + 1)];
            match window.iter().position(|b| *b == RS) {
                Some(j) => {
                    let body = &data[body_start..body_start + j];
                    match parse_marker(body) {
                        Some(piece) => {
                            if start > text_from {
                                out.push(Piece::Text(data[text_from..start].to_vec()));
                            }
                            out.push(piece);
                            pos = body_start + j + 1;
                            text_from = pos;
                        }
                        None => pos = start + 1,
                    }
                }
                None if data.len() - body_start > MAX_MARKER_BODY => pos = start + 1,
                None => break,
            }
        }
        // Everything from the first unresolved possible marker on waits for the next read.
        let keep_from = data[pos..]
            .iter()
            .position(|b| *b == RS)
            .map_or(data.len(), |i| pos + i)
            .max(text_from);
        if keep_from > text_from {
            out.push(Piece::Text(data[text_from..keep_from].to_vec()));
        }
        self.carry = data[keep_from..].to_vec();
        out
    }
}

fn parse_marker(body: &[u8]) -> Option<Piece> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split(':');
    let kind = parts.next()?;
    let cid = parts.next()?;
    if cid.is_empty() || !cid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match (kind, parts.next(), parts.next()) {
        ("S", None, None) => Some(Piece::Start(cid.to_string())),
        ("E", Some(rc), None) => Some(Piece::End(cid.to_string(), rc.parse().ok()?)),
        _ => None,
    }
}

impl Session {
    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The session's log budget, bytes.
    fn budget(&self) -> usize {
        self.limit.saturating_mul(SESSION_LOG_BUDGET_LIMITS)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("session state")
    }

    /// The shell line that runs command `cid` (see the module docs).
    fn command_line(&self, cid: &str, command: &str) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(command.as_bytes());
        let (dir, n) = (&self.dir, &self.nonce);
        format!(
            "__pt_c={cid}; mkfifo -m 600 {dir}/$__pt_c && exec {{__pt_in}}<>{dir}/$__pt_c; \
             printf '\\036PTM:%s:S:%s\\036' {n} $__pt_c; printf '\\036PTM:%s:S:%s\\036' {n} $__pt_c >&2; \
             eval \"$(printf %s {b64} | base64 -d)\" <&$__pt_in; __pt_rc=$?; \
             exec {{__pt_in}}<&-; rm -f {dir}/$__pt_c; \
             printf '\\036PTM:%s:E:%s:%d\\036' {n} $__pt_c $__pt_rc >&2; \
             printf '\\036PTM:%s:E:%s:%d\\036' {n} $__pt_c $__pt_rc\n"
        )
    }

    /// Writes the next queued command to the shell if it is idle.
    async fn dispatch(&self) {
        let line = {
            let mut st = self.lock();
            if st.ended || st.running.is_some() {
                return;
            }
            let Some(cid) = st.queue.pop_front() else {
                return;
            };
            let Some(command) = st.record(&cid).map(|r| r.command.clone()) else {
                return;
            };
            st.running = Some(cid.clone());
            self.command_line(&cid, &command)
        };
        if let Err(e) = self.stdin.write(line.as_bytes()).await {
            tracing::warn!(session = %self.id, sandbox = %self.sandbox, error = %e, "writing to the session shell failed");
            self.end(None);
        }
    }

    /// Feeds shell output of one channel; returns true when a command finished.
    fn feed(&self, channel: usize, bytes: &[u8]) -> bool {
        let mut finished = false;
        {
            let mut st = self.lock();
            let pieces = st.scanners[channel].feed(bytes);
            for piece in pieces {
                match piece {
                    Piece::Text(t) => {
                        let target = st.current[channel]
                            .clone()
                            .or_else(|| st.last[channel].clone());
                        match target {
                            Some(cid) => st.append(&cid, channel, &t, self.limit, self.budget()),
                            None => {
                                tracing::debug!(session = %self.id, bytes = t.len(), "shell output outside any command")
                            }
                        }
                    }
                    Piece::Start(cid) => {
                        st.current[channel] = Some(cid.clone());
                        st.last[channel] = Some(cid);
                    }
                    Piece::End(cid, rc) => {
                        st.current[channel] = None;
                        let done = match st.record(&cid) {
                            Some(r) => {
                                r.ended_on[channel] = true;
                                if r.ended_on == [true, true] && r.exit_code.is_none() {
                                    r.exit_code = Some(rc);
                                    true
                                } else {
                                    false
                                }
                            }
                            None => false,
                        };
                        if done && st.running.as_deref() == Some(cid.as_str()) {
                            st.running = None;
                            finished = true;
                        }
                    }
                }
            }
        }
        self.notify();
        finished
    }

    /// Marks the session ended. The running command gets the shell's exit code when the shell
    /// exited on its own (`shell_exit`), else it counts as aborted; queued ones never ran.
    fn end(&self, shell_exit: Option<i32>) {
        {
            let mut st = self.lock();
            st.ended = true;
            if let Some(cid) = st.running.take()
                && let Some(r) = st.record(&cid)
                && r.exit_code.is_none()
            {
                r.exit_code = Some(shell_exit.unwrap_or(NOT_RUN_EXIT_CODE));
                r.aborted = shell_exit.is_none();
            }
            let queued: Vec<String> = st.queue.drain(..).collect();
            for cid in queued {
                if let Some(r) = st.record(&cid) {
                    r.exit_code = Some(NOT_RUN_EXIT_CODE);
                    r.aborted = true;
                }
            }
        }
        self.notify();
    }

    fn info(&self) -> SessionInfo {
        let st = self.lock();
        SessionInfo {
            id: self.id.clone(),
            commands: st.commands.iter().map(Record::info).collect(),
            ended: st.ended,
        }
    }
}

/// Reads the shell's output for the life of the session.
async fn pump(
    session: Arc<Session>,
    mut stream: ExecStream,
    registry: Arc<Mutex<HashMap<String, SandboxSessions>>>,
) {
    let outcome = loop {
        let finished = match stream.next().await {
            Ok(Some(ExecEvent::Stdout(b))) => session.feed(0, &b),
            Ok(Some(ExecEvent::Stderr(b))) => session.feed(1, &b),
            Ok(Some(ExecEvent::Lost(n))) => {
                tracing::warn!(session = %session.id, bytes = n, "session shell output was lost");
                false
            }
            Ok(Some(ExecEvent::Exited(status))) => break Ok(status.shell_code()),
            Ok(None) => break Err("the output stream ended".to_string()),
            Err(e) => break Err(e.to_string()),
        };
        if finished {
            let s = session.clone();
            tokio::spawn(async move { s.dispatch().await });
        }
    };
    match outcome {
        Ok(code) => {
            tracing::info!(session = %session.id, sandbox = %session.sandbox, code, "session shell exited");
            session.end(Some(code));
        }
        Err(reason) => {
            tracing::info!(session = %session.id, sandbox = %session.sandbox, %reason, "session lost");
            session.end(None);
            // Its VM is gone or unreachable: nothing of it is left to query.
            let mut map = registry.lock().expect("session registry");
            if let Some(sessions) = map.get_mut(&session.sandbox)
                && sessions
                    .get(&session.id)
                    .is_some_and(|s| Arc::ptr_eq(s, &session))
            {
                sessions.remove(&session.id);
            }
        }
    }
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
            state: Mutex::new(State {
                commands: VecDeque::new(),
                queue: VecDeque::new(),
                running: None,
                ended: false,
                log_bytes: 0,
                scanners: [MarkerScanner::new(&nonce), MarkerScanner::new(&nonce)],
                current: [None, None],
                last: [None, None],
            }),
            nonce,
            changed: watch::Sender::new(0),
        });
        self.sessions
            .lock()
            .entry(id.to_string())
            .or_default()
            .insert(session.to_string(), s.clone());
        tokio::spawn(pump(s, stream, self.sessions.map.clone()));
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
            let running = st.running.clone();
            let r = st
                .record(cid)
                .ok_or_else(|| Error::CommandNotFound(cid.to_string()))?;
            if r.exit_code.is_some() {
                return Err(Error::CommandFinished(cid.to_string()));
            }
            if running.as_deref() != Some(cid) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: &[Piece]) -> Vec<u8> {
        p.iter()
            .flat_map(|p| match p {
                Piece::Text(t) => t.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn markers_are_found_across_reads_and_text_around_them_kept() {
        let stream = b"junk\x1ePTM:n1:S:c1\x1ehello\nno newline\x1ePTM:n1:E:c1:3\x1etail\x1e";
        for split in 1..stream.len() {
            let mut sc = MarkerScanner::new("n1");
            let mut pieces = sc.feed(&stream[..split]);
            pieces.extend(sc.feed(&stream[split..]));
            let markers: Vec<_> = pieces
                .iter()
                .filter(|p| !matches!(p, Piece::Text(_)))
                .collect();
            assert_eq!(
                markers,
                [&Piece::Start("c1".into()), &Piece::End("c1".into(), 3)],
                "split at {split}"
            );
            // The lone trailing RS may start a marker: held back until more bytes come.
            assert_eq!(
                text(&pieces),
                b"junkhello\nno newlinetail",
                "split at {split}"
            );
        }
    }

    #[test]
    fn foreign_and_malformed_markers_are_text() {
        let mut sc = MarkerScanner::new("n1");
        let input = b"a\x1ePTM:other:S:c1\x1eb\x1ePTM:n1:X:c1\x1ec\x1ed";
        assert_eq!(text(&sc.feed(input)), input.to_vec());
        assert_eq!(text(&sc.feed(b"e\x1ePT")), b"e".to_vec());
        assert_eq!(text(&sc.feed(b"x")), b"\x1ePTx".to_vec());
        // A prefix whose body never closes is given up on after a while.
        let mut long = b"\x1ePTM:n1:S:".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_MARKER_BODY + 5));
        assert_eq!(text(&sc.feed(&long)), long);
    }

    #[test]
    fn combined_log_marks_lines_and_stream_switches() {
        let mut r = Record::new("c".into(), "x".into());
        r.append(0, b"out1\npart", 100);
        r.append(1, b"err\n", 100);
        r.append(0, b"ial\n", 100);
        assert_eq!(
            r.output,
            b"\x01\x01\x01out1\n\x01\x01\x01part\x02\x02\x02err\n\x01\x01\x01ial\n".to_vec()
        );
        assert_eq!(r.streams[0], b"out1\npartial\n".to_vec());
        assert_eq!(r.streams[1], b"err\n".to_vec());
        assert!(!r.truncated);
        r.append(0, &[b'z'; 200], 100);
        assert!(r.truncated);
        assert_eq!(r.streams[0].len(), 100);
        assert!(r.output.len() <= 200);
    }

    #[test]
    fn one_byte_chunks_keep_the_scanner_linear_and_its_carry_bounded() {
        // A hostile command floods one byte at a time with text that keeps looking like the
        // start of a marker: the scanner's carry stays within one marker, and all of it is text.
        let mut sc = MarkerScanner::new("n1");
        let mut unit = b"\x1ePTM:n1:S:".to_vec();
        unit.extend(std::iter::repeat_n(b'a', MAX_MARKER_BODY + 3));
        let input: Vec<u8> = unit.iter().copied().cycle().take(200_000).collect();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        for b in &input {
            out.extend(text(&sc.feed(std::slice::from_ref(b))));
            assert!(sc.carry.len() <= sc.prefix.len() + MAX_MARKER_BODY + 1);
        }
        // Bytes that cannot continue a marker release what is held back.
        out.extend(text(&sc.feed(&[b'.'; MAX_MARKER_BODY + 2])));
        assert_eq!(&out[..input.len()], &input[..]);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    fn state() -> State {
        State {
            commands: VecDeque::new(),
            queue: VecDeque::new(),
            running: None,
            ended: false,
            log_bytes: 0,
            scanners: [MarkerScanner::new("n"), MarkerScanner::new("n")],
            current: [None, None],
            last: [None, None],
        }
    }

    #[test]
    fn the_session_budget_drops_the_oldest_finished_logs_first() {
        let (limit, budget) = (100, 600);
        let mut st = state();
        for id in ["a", "b", "c"] {
            st.commands.push_back(Record::new(id.into(), "x".into()));
        }
        // a and b finished with 150 bytes of stdout each: 100 kept + 153 in the combined log.
        for id in ["a", "b"] {
            st.append(id, 0, &[b'o'; 150], limit, budget);
            st.record(id).unwrap().exit_code = Some(0);
        }
        assert_eq!(st.log_bytes, 506);
        assert_eq!(st.record("a").unwrap().logs().stdout.len(), 100);
        st.append("c", 1, b"err\n", limit, budget);
        assert_eq!(st.log_bytes, 517);
        // c grows past the budget: the oldest finished command (a) loses its logs, b keeps them.
        st.append("c", 0, &[b'z'; 300], limit, budget);
        let a = st.record("a").unwrap().logs();
        assert!(a.truncated && a.output.is_empty() && a.stdout.is_empty());
        assert_eq!(st.record("b").unwrap().logs().stdout.len(), 100);
        let c = st.record("c").unwrap().logs();
        assert_eq!((c.stdout.len(), c.stderr.len()), (100, 4));
        assert!(c.truncated);
        assert_eq!(
            st.log_bytes,
            st.commands.iter().map(Record::held).sum::<usize>()
        );
        assert!(st.log_bytes <= budget);
        // A running command is never dropped, even alone over the budget.
        st.append("c", 1, &[b'e'; 300], limit, 10);
        assert!(st.record("b").unwrap().logs().stdout.is_empty());
        assert_eq!(st.record("c").unwrap().logs().stderr.len(), 100);
    }

    #[test]
    fn session_ids_are_checked() {
        assert!(check_session_id("my-session").is_ok());
        assert!(check_session_id("").is_err());
        assert!(check_session_id("a/b").is_err());
        assert!(check_session_id("a\nb").is_err());
        assert!(check_session_id(&"x".repeat(257)).is_err());
    }
}
