//! Running a command to completion: the one path behind every "run this and give me its output"
//! of every front end (REST `exec`, MCP `run_command`, Daytona's toolbox commands, git, ...).
//!
//! [`Engine::run`] starts the process and returns a [`Run`]. Reading it — event by event with
//! [`Run::next`] (output as it arrives, for progress) or all at once with [`Run::finish`] —
//! keeps each stream's output within a byte budget, waits [`HOST_GRACE`] past the command's own
//! timeout for the guest to report the kill (then kills it from here and fails with
//! `exec_timeout`), and ends with a [`RunOutput`]. A `Run` that is dropped before its process
//! ended — the client disconnected, an SDK gave up, an MCP request was cancelled — kills the
//! process group in the guest, so an abandoned request never leaves a process behind.

use bytes::{Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::commands::exec::feed_stdin;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{ExecRequest, ExecResult};
use crate::process::{ExecEvent, ExecStream, ExitStatus, SIGKILL};

/// How long past a command's own timeout the host waits for the guest to report it killed.
pub const HOST_GRACE: Duration = Duration::from_secs(10);

/// Which end of a stream's output a [`Run`] keeps when there is more than its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retain {
    /// The first bytes (buffered exec: the start of the output explains the rest).
    Head,
    /// The last bytes (an agent's tool call: the end shows how it finished).
    Tail,
}

/// Something a [`Run`] produced.
#[derive(Debug)]
pub enum RunEvent {
    /// Bytes on stdout, as they arrived (also kept, within the budget, for the output).
    Stdout(Bytes),
    /// Bytes on stderr, likewise.
    Stderr(Bytes),
    /// The process ended; the last event.
    Exited(RunOutput),
}

/// How a finished command ended and what it wrote, within the byte budget.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Guest pid.
    pub pid: u32,
    /// How it ended.
    pub exit: ExitStatus,
    /// stdout as kept (raw bytes).
    pub stdout: Bytes,
    /// stderr as kept.
    pub stderr: Bytes,
    /// Some output was not kept (over budget, or lost from the guest's buffer).
    pub truncated: bool,
    /// From start to exit, as the host saw it.
    pub duration: Duration,
    retain: Retain,
    limit: usize,
}

impl RunOutput {
    /// Exit code by the shell convention (128 + signal for signals).
    pub fn exit_code(&self) -> i32 {
        self.exit.shell_code()
    }

    /// stdout as text (invalid UTF-8 replaced), within the byte budget.
    pub fn stdout_text(&self) -> String {
        self.text(&self.stdout).0
    }

    /// stderr as text (invalid UTF-8 replaced), within the byte budget.
    pub fn stderr_text(&self) -> String {
        self.text(&self.stderr).0
    }

    /// Lossy decoding turns each invalid byte into a 3-byte U+FFFD, so the text is cut again to
    /// the budget, at a character boundary, from the end the run keeps; `true` when cut.
    fn text(&self, bytes: &[u8]) -> (String, bool) {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if text.len() <= self.limit {
            return (text, false);
        }
        match self.retain {
            Retain::Head => {
                let mut end = self.limit;
                while !text.is_char_boundary(end) {
                    end -= 1;
                }
                text.truncate(end);
            }
            Retain::Tail => {
                let mut start = text.len() - self.limit;
                while !text.is_char_boundary(start) {
                    start += 1;
                }
                text.drain(..start);
            }
        }
        (text, true)
    }
}

impl From<RunOutput> for ExecResult {
    fn from(out: RunOutput) -> Self {
        let (stdout, cut_out) = out.text(&out.stdout);
        let (stderr, cut_err) = out.text(&out.stderr);
        ExecResult {
            pid: out.pid,
            exit_code: Some(out.exit.shell_code()),
            signal: out.exit.signal,
            timed_out: out.exit.timed_out,
            stdout,
            stderr,
            truncated: out.truncated || cut_out || cut_err,
            duration_ms: out.duration.as_millis() as u64,
        }
    }
}

/// A command running to completion; see the module docs. Dropping it before the process ended
/// kills the process.
pub struct Run {
    engine: Arc<Engine>,
    sandbox: String,
    stream: ExecStream,
    timeout_ms: Option<u64>,
    deadline: Option<tokio::time::Instant>,
    started: Instant,
    stdout: Kept,
    stderr: Kept,
    lost: bool,
    /// The process ended or was killed: nothing to kill on drop.
    over: bool,
}

impl Engine {
    /// Starts `req` (a foreground command: `background` is refused) and returns its [`Run`].
    /// `timeout_ms` defaults to the engine's exec timeout; `0` means none. Each stream keeps its
    /// first `exec_output_limit` bytes unless [`Run::retain`] says otherwise.
    pub async fn run(&self, id: &str, req: ExecRequest) -> Result<Run> {
        if req.background {
            return Err(Error::InvalidRequest(
                "a command run to completion cannot be a background command".into(),
            ));
        }
        let engine = self.arc()?;
        let started = Instant::now();
        let (stream, timeout_ms) = self
            .start_process(id, &req, Some(self.config.default_exec_timeout), None)
            .await?;
        let deadline = timeout_ms
            .map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms) + HOST_GRACE);
        let limit = self.config.exec_output_limit;
        let run = Run {
            engine,
            sandbox: id.to_string(),
            stream,
            timeout_ms,
            deadline,
            started,
            stdout: Kept::new(Retain::Head, limit),
            stderr: Kept::new(Retain::Head, limit),
            lost: false,
            over: false,
        };
        // Fed after the `Run` exists, so a caller that leaves mid-way still kills the process.
        feed_stdin(&run.stream, &req).await?;
        Ok(run)
    }
}

impl Run {
    /// Guest pid.
    pub fn pid(&self) -> u32 {
        self.stream.pid()
    }

    /// Keeps `limit` bytes of each stream from the `retain` end instead of the default (the
    /// first `exec_output_limit` bytes). Call before reading.
    pub fn retain(mut self, retain: Retain, limit: usize) -> Self {
        self.stdout = Kept::new(retain, limit);
        self.stderr = Kept::new(retain, limit);
        self
    }

    /// The next event. After [`RunEvent::Exited`] the run is over; calling again is an error.
    /// When the host's deadline passes first, the process is killed and this fails with
    /// `exec_timeout`.
    pub async fn next(&mut self) -> Result<RunEvent> {
        if self.over {
            return Err(Error::Internal("the run has already ended".into()));
        }
        loop {
            let event = match self.deadline {
                Some(deadline) => {
                    match tokio::time::timeout_at(deadline, self.stream.next()).await {
                        Ok(event) => event,
                        Err(_) => {
                            self.kill_now().await;
                            return Err(Error::ExecTimeout(self.timeout_ms.unwrap_or(0)));
                        }
                    }
                }
                None => self.stream.next().await,
            };
            match event? {
                Some(ExecEvent::Stdout(b)) => {
                    self.stdout.push(&b);
                    return Ok(RunEvent::Stdout(b));
                }
                Some(ExecEvent::Stderr(b)) => {
                    self.stderr.push(&b);
                    return Ok(RunEvent::Stderr(b));
                }
                Some(ExecEvent::Lost(_)) => self.lost = true,
                Some(ExecEvent::Exited(exit)) => {
                    self.over = true;
                    return Ok(RunEvent::Exited(self.output(exit)));
                }
                None => {
                    return Err(Error::GuestUnreachable(
                        "the command's output stream ended without an exit status".into(),
                    ));
                }
            }
        }
    }

    /// Reads to the end and returns the output.
    pub async fn finish(mut self) -> Result<RunOutput> {
        loop {
            if let RunEvent::Exited(out) = self.next().await? {
                return Ok(out);
            }
        }
    }

    /// Kills the process now and waits for the guest to accept the signal (failures are
    /// logged: the sandbox may be gone already).
    pub async fn kill(mut self) {
        self.kill_now().await;
    }

    async fn kill_now(&mut self) {
        self.over = true;
        kill_command(&self.engine, &self.sandbox, self.pid()).await;
    }

    fn output(&mut self, exit: ExitStatus) -> RunOutput {
        let (retain, limit) = (self.stdout.retain(), self.stdout.limit);
        let (stdout, cut_out) = self.stdout.take();
        let (stderr, cut_err) = self.stderr.take();
        RunOutput {
            pid: self.pid(),
            exit,
            stdout,
            stderr,
            truncated: self.lost || cut_out || cut_err,
            duration: self.started.elapsed(),
            retain,
            limit,
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if self.over {
            return;
        }
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (engine, sandbox, pid) = (self.engine.clone(), self.sandbox.clone(), self.pid());
        tracing::debug!(sandbox = %sandbox, pid, "caller went away: killing its command");
        rt.spawn(async move { kill_command(&engine, &sandbox, pid).await });
    }
}

/// Kills a process group in the guest (a run's, a language server's); a failure is logged (the
/// sandbox may be gone already).
pub(crate) async fn kill_command(engine: &Engine, sandbox: &str, pid: u32) {
    match engine.signal_process(sandbox, pid, SIGKILL).await {
        Ok(()) => tracing::info!(sandbox, pid, "command killed"),
        Err(e) => tracing::warn!(sandbox, pid, error = %e, "could not kill the command"),
    }
}

/// One stream's output within a byte budget, kept from one end.
struct Kept {
    limit: usize,
    kept: KeptBytes,
    cut: bool,
}

/// The bytes a [`Kept`] holds: the first ones, or the last ones.
enum KeptBytes {
    Head(BytesMut),
    Tail(VecDeque<u8>),
}

impl Kept {
    fn new(retain: Retain, limit: usize) -> Self {
        let kept = match retain {
            Retain::Head => KeptBytes::Head(BytesMut::new()),
            Retain::Tail => KeptBytes::Tail(VecDeque::new()),
        };
        Kept {
            limit,
            kept,
            cut: false,
        }
    }

    fn retain(&self) -> Retain {
        match self.kept {
            KeptBytes::Head(_) => Retain::Head,
            KeptBytes::Tail(_) => Retain::Tail,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        match &mut self.kept {
            KeptBytes::Head(head) => {
                let room = self.limit.saturating_sub(head.len());
                head.extend_from_slice(&bytes[..bytes.len().min(room)]);
                self.cut |= bytes.len() > room;
            }
            KeptBytes::Tail(tail) => {
                let skip = bytes.len().saturating_sub(self.limit);
                self.cut |= skip > 0;
                tail.extend(&bytes[skip..]);
                if tail.len() > self.limit {
                    let excess = tail.len() - self.limit;
                    tail.drain(..excess);
                    self.cut = true;
                }
            }
        }
    }

    /// The kept bytes and whether anything was cut. A tail cut at the front can split a UTF-8
    /// sequence: its leading continuation bytes are dropped.
    fn take(&mut self) -> (Bytes, bool) {
        match &mut self.kept {
            KeptBytes::Head(head) => (std::mem::take(head).freeze(), self.cut),
            KeptBytes::Tail(tail) => {
                let bytes: Vec<u8> = std::mem::take(tail).into();
                let skip = if self.cut {
                    bytes
                        .iter()
                        .take(3)
                        .take_while(|b| (**b & 0xC0) == 0x80)
                        .count()
                } else {
                    0
                };
                (Bytes::from(bytes).slice(skip..), self.cut)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output(retain: Retain, limit: usize, stdout: &[u8]) -> RunOutput {
        RunOutput {
            pid: 1,
            exit: ExitStatus {
                code: Some(0),
                signal: None,
                timed_out: false,
                guest_elapsed: None,
                guest_handled: None,
            },
            stdout: Bytes::copy_from_slice(stdout),
            stderr: Bytes::new(),
            truncated: false,
            duration: Duration::ZERO,
            retain,
            limit,
        }
    }

    #[test]
    fn head_keeps_the_prefix_and_reports_the_cut() {
        let mut k = Kept::new(Retain::Head, 5);
        k.push(b"abc");
        k.push(b"defg");
        k.push(b"x");
        assert_eq!(k.take(), (Bytes::from_static(b"abcde"), true));
        let mut k = Kept::new(Retain::Head, 5);
        k.push(b"abc");
        assert_eq!(k.take(), (Bytes::from_static(b"abc"), false));
    }

    #[test]
    fn tail_keeps_the_end_and_never_splits_a_character() {
        let mut k = Kept::new(Retain::Tail, 5);
        k.push(b"hello ");
        assert_eq!(k.take(), (Bytes::from_static(b"ello "), true));
        let mut k = Kept::new(Retain::Tail, 5);
        k.push(b"hi");
        // "w\u{f6}rld!" is 7 bytes; the last 5 start inside the 2-byte "\u{f6}".
        k.push("w\u{f6}rld!".as_bytes());
        assert_eq!(k.take(), (Bytes::from_static(b"rld!"), true));
        // A chunk far larger than the budget never grows the buffer past it.
        let mut k = Kept::new(Retain::Tail, 4);
        k.push(&[b'a'; 1 << 20]);
        assert!(matches!(&k.kept, KeptBytes::Tail(tail) if tail.len() == 4));
    }

    #[test]
    fn text_stays_within_the_byte_budget_after_lossy_decoding() {
        let out = output(Retain::Head, 10, b"hello");
        assert_eq!(out.stdout_text(), "hello");
        // 10 invalid bytes decode to 30 bytes of U+FFFD.
        let out = output(Retain::Head, 10, &[0xff; 10]);
        assert_eq!(out.stdout_text(), "\u{fffd}".repeat(3));
        let result = ExecResult::from(out);
        assert!(result.truncated && result.stdout.len() <= 10);
        let out = output(Retain::Head, 2, "h\u{e9}llo".as_bytes());
        assert_eq!(out.stdout_text(), "h");
        let out = output(Retain::Tail, 10, &[0xff; 10]);
        assert_eq!(out.stdout_text(), "\u{fffd}".repeat(3));
        let out = output(Retain::Tail, 4, "h\u{e9}llo".as_bytes());
        assert_eq!(out.stdout_text(), "llo");
    }
}
