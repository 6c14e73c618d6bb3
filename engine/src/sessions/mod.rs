//! The machinery behind sessions ([`crate::commands::sessions`]), named background shells: one
//! long-lived `bash` in the guest per session, in which commands run one after another, so `cd`,
//! exported variables and shell functions carry over from one command to the next. Each command
//! has its own id, exit code and logs; callers may wait for it, poll it, follow its output live,
//! or send it input.
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

mod pump;
mod scanner;

use bytes::Bytes;
use rand::Rng;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::commands::sessions::{
    NOT_RUN_EXIT_CODE, SESSION_LOG_BUDGET_LIMITS, STDERR_MARK, STDOUT_MARK, SessionCommand,
    SessionInfo, SessionLogs,
};
use crate::error::{Error, Result};
use crate::model::Sandbox;
use crate::process::{ExecStream, StdinWriter};
use pump::pump;
use scanner::{MarkerScanner, Piece};

/// Most commands a session remembers; the oldest finished ones are forgotten first.
pub(crate) const MAX_COMMANDS_KEPT: usize = 1000;
/// Longest session id.
const MAX_SESSION_ID: usize = 256;

type SandboxSessions = HashMap<String, Arc<Session>>;

/// The engine's registry of sessions, by sandbox then session id.
#[derive(Default)]
pub(crate) struct Sessions {
    map: Arc<Mutex<HashMap<String, SandboxSessions>>>,
    /// Serialises creates, so two creates of one id cannot both start a shell.
    pub(crate) creating: tokio::sync::Mutex<()>,
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SandboxSessions>> {
        self.map.lock().expect("session registry")
    }

    /// Sessions of a sandbox, after dropping those of an earlier boot of its VM.
    pub(crate) fn of(&self, sandbox: &Sandbox) -> Vec<Arc<Session>> {
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

    pub(crate) fn get(&self, sandbox: &Sandbox, session: &str) -> Result<Arc<Session>> {
        self.of(sandbox)
            .into_iter()
            .find(|s| s.id == session)
            .ok_or_else(|| Error::SessionNotFound(session.to_string()))
    }

    pub(crate) fn remove(&self, sandbox: &str, session: &str) -> Option<Arc<Session>> {
        let mut map = self.lock();
        let sessions = map.get_mut(sandbox)?;
        let removed = sessions.remove(session);
        if sessions.is_empty() {
            map.remove(sandbox);
        }
        removed
    }

    /// Registers a new session and starts reading its shell's output.
    pub(crate) fn start(&self, s: Arc<Session>, stream: ExecStream) {
        self.lock()
            .entry(s.sandbox.clone())
            .or_default()
            .insert(s.id.clone(), s.clone());
        tokio::spawn(pump(s, stream, self.map.clone()));
    }
}

/// Which boot of a sandbox's VM this is (the VMM's pid), `None` without a VM.
pub(crate) fn boot_of(s: &Sandbox) -> Option<u32> {
    s.runtime.as_ref().map(|r| r.pid)
}

/// Checks a caller-chosen session id.
pub(crate) fn check_session_id(id: &str) -> Result<()> {
    if id.is_empty() || id.len() > MAX_SESSION_ID || id.chars().any(|c| c.is_control() || c == '/')
    {
        return Err(Error::InvalidRequest(format!(
            "invalid session id {id:?}: 1-{MAX_SESSION_ID} characters, no '/' or control characters"
        )));
    }
    Ok(())
}

pub(crate) fn random_hex(bytes: usize) -> String {
    let mut rng = rand::rng();
    (0..bytes)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

/// One live (or ended) session.
pub(crate) struct Session {
    pub(crate) id: String,
    pub(crate) sandbox: String,
    pub(crate) boot: u32,
    pub(crate) created: std::time::Instant,
    /// Guest directory holding the commands' stdin FIFOs.
    pub(crate) dir: String,
    /// The shell's pid (its process group holds everything the session started).
    pub(crate) pid: u32,
    pub(crate) nonce: String,
    pub(crate) stdin: StdinWriter,
    pub(crate) limit: usize,
    pub(crate) state: Mutex<State>,
    pub(crate) changed: watch::Sender<u64>,
}

pub(crate) struct State {
    pub(crate) commands: VecDeque<Record>,
    pub(crate) queue: VecDeque<String>,
    pub(crate) running: Option<String>,
    pub(crate) ended: bool,
    /// Log bytes held by all commands (see [`Record::held`]).
    log_bytes: usize,
    scanners: [MarkerScanner; 2],
    /// Command between its start and end marker, per channel (0 = stdout, 1 = stderr).
    current: [Option<String>; 2],
    /// Last command seen per channel: output after its end marker (background jobs) goes there.
    last: [Option<String>; 2],
}

pub(crate) struct Record {
    id: String,
    command: String,
    pub(crate) exit_code: Option<i32>,
    /// It did not finish on its own: its session was deleted or its VM went away.
    pub(crate) aborted: bool,
    /// The shell printed its start marker: its stdin FIFO exists (it is made before the marker).
    pub(crate) started: bool,
    ended_on: [bool; 2],
    pub(crate) output: Vec<u8>,
    streams: [Vec<u8>; 2],
    last_channel: Option<usize>,
    line_start: [bool; 2],
    truncated: bool,
}

impl Record {
    pub(crate) fn new(id: String, command: String) -> Self {
        Record {
            id,
            command,
            exit_code: None,
            aborted: false,
            started: false,
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

    pub(crate) fn info(&self) -> SessionCommand {
        SessionCommand {
            id: self.id.clone(),
            command: self.command.clone(),
            exit_code: self.exit_code,
        }
    }

    pub(crate) fn logs(&self) -> SessionLogs {
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
    /// A session's state before its first command; `nonce` is the session's marker nonce.
    pub(crate) fn new(nonce: &str) -> Self {
        State {
            commands: VecDeque::new(),
            queue: VecDeque::new(),
            running: None,
            ended: false,
            log_bytes: 0,
            scanners: [MarkerScanner::new(nonce), MarkerScanner::new(nonce)],
            current: [None, None],
            last: [None, None],
        }
    }

    pub(crate) fn record(&mut self, id: &str) -> Option<&mut Record> {
        self.commands.iter_mut().find(|r| r.id == id)
    }

    /// Splits one channel's shell output on the markers: text goes to the command whose start
    /// marker came last on that channel, a start marks the command started, and the end markers
    /// on both channels finish it. Returns true when the running command finished.
    fn feed(
        &mut self,
        channel: usize,
        bytes: &[u8],
        limit: usize,
        budget: usize,
        session: &str,
    ) -> bool {
        let mut finished = false;
        for piece in self.scanners[channel].feed(bytes) {
            match piece {
                Piece::Text(t) => {
                    match self.current[channel]
                        .clone()
                        .or_else(|| self.last[channel].clone())
                    {
                        Some(cid) => self.append(&cid, channel, &t, limit, budget),
                        None => {
                            tracing::debug!(
                                session,
                                bytes = t.len(),
                                "shell output outside any command"
                            )
                        }
                    }
                }
                Piece::Start(cid) => {
                    if let Some(r) = self.record(&cid) {
                        r.started = true;
                    }
                    self.current[channel] = Some(cid.clone());
                    self.last[channel] = Some(cid);
                }
                Piece::End(cid, rc) => {
                    self.current[channel] = None;
                    let done = match self.record(&cid) {
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
                    if done && self.running.as_deref() == Some(cid.as_str()) {
                        self.running = None;
                        finished = true;
                    }
                }
            }
        }
        finished
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
    pub(crate) fn trim(&mut self) {
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

impl Session {
    pub(crate) fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    /// The session's log budget, bytes.
    fn budget(&self) -> usize {
        self.limit.saturating_mul(SESSION_LOG_BUDGET_LIMITS)
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
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
    pub(crate) async fn dispatch(&self) {
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
        let finished = self
            .lock()
            .feed(channel, bytes, self.limit, self.budget(), &self.id);
        self.notify();
        finished
    }

    /// Marks the session ended. The running command gets the shell's exit code when the shell
    /// exited on its own (`shell_exit`), else it counts as aborted; queued ones never ran.
    pub(crate) fn end(&self, shell_exit: Option<i32>) {
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

    pub(crate) fn info(&self) -> SessionInfo {
        let st = self.lock();
        SessionInfo {
            id: self.id.clone(),
            commands: st.commands.iter().map(Record::info).collect(),
            ended: st.ended,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn state() -> State {
        State::new("n")
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
    fn a_command_is_started_only_once_its_start_marker_arrives() {
        let mut st = state();
        st.commands
            .push_back(Record::new("c1".into(), "read x".into()));
        st.running = Some("c1".into());
        // Dispatched (written to the shell) but its marker not seen: not started, so input
        // is refused as "not started yet" rather than taken for a finished command.
        assert!(!st.record("c1").unwrap().started);
        let start = "\u{1e}PTM:n:S:c1\u{1e}";
        assert!(!st.feed(0, start.as_bytes(), 100, 1000, "s"));
        assert!(st.record("c1").unwrap().started);
        assert!(!st.feed(0, b"hi\n\x1ePTM:n:E:c1:0\x1e", 100, 1000, "s"));
        assert!(st.feed(
            1,
            format!("{start}\u{1e}PTM:n:E:c1:0\u{1e}").as_bytes(),
            100,
            1000,
            "s"
        ));
        let r = st.record("c1").unwrap();
        assert_eq!(
            (r.exit_code, r.logs().stdout),
            (Some(0), Bytes::from_static(b"hi\n"))
        );
        assert!(st.running.is_none());
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
