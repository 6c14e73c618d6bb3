//! `run_command`: a command in a sandbox, with its output streamed to the client while it runs.
//!
//! The command starts with [`Engine::exec_stream`]. When the client asked for progress (a
//! `progressToken` in the request), it gets one notification when the process starts (message
//! `started pid N`, progress 0) and one per output chunk (message: the text; progress: output
//! bytes so far, so it only grows). Cancelling the request (`notifications/cancelled`) kills the
//! process group in the guest. The guest enforces `timeout_ms` (the result says `timed_out`);
//! the host gives up a little later should the guest not answer.

use platinum_engine::model::{ExecRequest, ExecResult};
use platinum_engine::{Engine, ExecEvent, StreamOptions};
use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::error::{ToolError, ToolResult};

/// Timeout of a foreground command that names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Output kept per stream: the last this many bytes.
pub const OUTPUT_TAIL_BYTES: usize = 32 * 1024;
/// Longest progress message (longer chunks are cut; the result has the output).
const PROGRESS_MESSAGE_BYTES: usize = 8 * 1024;
/// How long past `timeout_ms` the host waits for the guest to report the kill.
const HOST_GRACE: Duration = Duration::from_secs(10);
const SIGKILL: i32 = 9;

/// Arguments of `run_command`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunCommandArgs {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Shell command line, run with `bash -l -c` as `user`.
    pub command: String,
    /// Working directory (default /home/user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub cwd: Option<String>,
    /// Extra environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Kill it after this many milliseconds (default 60000; 0 = no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub timeout_ms: Option<u64>,
    /// Start it and return at once with its pid (output is not collected; redirect it to a
    /// file). For servers and other long-lived processes.
    #[serde(default)]
    pub background: bool,
    /// Text written to stdin, which is then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub stdin: Option<String>,
}

/// The last `limit` bytes of a stream, and whether anything was dropped.
struct Tail {
    buf: VecDeque<u8>,
    limit: usize,
    dropped: bool,
}

impl Tail {
    fn new(limit: usize) -> Self {
        Tail {
            buf: VecDeque::new(),
            limit,
            dropped: false,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend(bytes);
        if self.buf.len() > self.limit {
            let excess = self.buf.len() - self.limit;
            self.buf.drain(..excess);
            self.dropped = true;
        }
    }

    fn text(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let bytes = [a, b].concat();
        // A cut at the front can split a UTF-8 sequence; skip its continuation bytes.
        let start = if self.dropped {
            bytes
                .iter()
                .take(3)
                .take_while(|b| (**b & 0xC0) == 0x80)
                .count()
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

/// Sends progress to the client, if it asked for it: `progress` counts output bytes so far, so
/// it grows with every notification as the protocol requires.
pub(crate) struct Progress<'a> {
    ctx: &'a RequestContext<RoleServer>,
    token: Option<ProgressToken>,
    bytes: u64,
}

impl<'a> Progress<'a> {
    /// Progress for the request in `ctx`.
    pub(crate) fn new(ctx: &'a RequestContext<RoleServer>) -> Self {
        Progress {
            ctx,
            token: ctx.meta.get_progress_token(),
            bytes: 0,
        }
    }

    /// A notification at the current byte count (the start of a run: 0).
    pub(crate) async fn note(&self, message: String) {
        let Some(token) = &self.token else { return };
        let param =
            ProgressNotificationParam::new(token.clone(), self.bytes as f64).with_message(message);
        if let Err(e) = self.ctx.peer.notify_progress(param).await {
            // The client went away; the cancellation path or the end of the run cleans up.
            tracing::debug!(error = %e, "progress notification not delivered");
        }
    }

    /// A notification carrying output (cut at a few KiB; the result has all of it).
    pub(crate) async fn output(&mut self, chunk: &[u8]) {
        if chunk.is_empty() {
            return;
        }
        self.bytes += chunk.len() as u64;
        let cut = &chunk[..chunk.len().min(PROGRESS_MESSAGE_BYTES)];
        let mut text = String::from_utf8_lossy(cut).into_owned();
        if cut.len() < chunk.len() {
            text.push('…');
        }
        self.note(text).await;
    }
}

/// Runs `args` in its sandbox; see the module docs.
pub async fn run_command(
    engine: &Engine,
    args: RunCommandArgs,
    ctx: &RequestContext<RoleServer>,
) -> ToolResult<ExecResult> {
    let id = args.sandbox_id;
    let timeout_ms = match args.timeout_ms {
        Some(0) => None,
        Some(ms) => Some(ms),
        None if args.background => None,
        None => Some(DEFAULT_TIMEOUT_MS),
    };
    let request = ExecRequest {
        env: args.env,
        cwd: args.cwd,
        timeout_ms: Some(timeout_ms.unwrap_or(0)),
        stdin: args.stdin,
        background: args.background,
        ..ExecRequest::shell(args.command)
    };
    if args.background {
        return Ok(engine.exec(&id, request).await?);
    }

    let started = Instant::now();
    let mut stream = engine
        .exec_stream(&id, request, StreamOptions::default())
        .await?;
    let pid = stream.pid();
    tracing::debug!(sandbox = %id, pid, "command started");
    let mut progress = Progress::new(ctx);
    progress.note(format!("started pid {pid}")).await;

    let deadline =
        timeout_ms.map(|ms| tokio::time::Instant::now() + Duration::from_millis(ms) + HOST_GRACE);
    let (mut stdout, mut stderr) = (Tail::new(OUTPUT_TAIL_BYTES), Tail::new(OUTPUT_TAIL_BYTES));
    let mut lost = false;
    let exit = loop {
        let event = tokio::select! {
            event = stream.next() => event,
            _ = ctx.ct.cancelled() => {
                kill(engine, &id, pid).await;
                return Err(ToolError::new("cancelled", format!("cancelled; pid {pid} was killed")));
            }
            _ = sleep_until(deadline) => {
                kill(engine, &id, pid).await;
                return Err(platinum_engine::Error::ExecTimeout(timeout_ms.unwrap_or(0)).into());
            }
        };
        match event.map_err(platinum_engine::Error::from)? {
            Some(ExecEvent::Stdout(b)) if !b.is_empty() => {
                stdout.push(&b);
                progress.output(&b).await;
            }
            Some(ExecEvent::Stderr(b)) if !b.is_empty() => {
                stderr.push(&b);
                progress.output(&b).await;
            }
            Some(ExecEvent::Stdout(_) | ExecEvent::Stderr(_)) => {}
            Some(ExecEvent::Lost(_)) => lost = true,
            Some(ExecEvent::Exited(status)) => break status,
            None => {
                return Err(ToolError::new(
                    "guest_unreachable",
                    "the command's output stream ended without an exit status",
                ));
            }
        }
    };
    Ok(ExecResult {
        pid,
        exit_code: Some(exit.shell_code()),
        signal: exit.signal,
        timed_out: exit.timed_out,
        stdout: stdout.text(),
        stderr: stderr.text(),
        truncated: lost || stdout.dropped || stderr.dropped,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Kills the command's process group; failures are logged (the sandbox may be gone already).
async fn kill(engine: &Engine, id: &str, pid: u32) {
    match engine.signal_process(id, pid, SIGKILL).await {
        Ok(()) => tracing::info!(sandbox = %id, pid, "command killed"),
        Err(e) => tracing::warn!(sandbox = %id, pid, error = %e, "could not kill the command"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_and_never_splits_a_character() {
        let mut t = Tail::new(5);
        t.push(b"hello ");
        assert!(t.dropped);
        assert_eq!(t.text(), "ello ");
        let mut t = Tail::new(5);
        t.push(b"hi");
        assert_eq!((t.text().as_str(), t.dropped), ("hi", false));
        // "w\u{f6}rld!" ends in 7 bytes; the last 5 start inside the 2-byte "\u{f6}".
        t.push("w\u{f6}rld!".as_bytes());
        assert!(t.dropped);
        assert_eq!(t.text(), "rld!");
    }
}
