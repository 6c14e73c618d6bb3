//! `run_command`: a command in a sandbox, with its output streamed to the client while it runs.
//!
//! The command runs on the engine's one run path ([`Engine::run`]), keeping the last
//! [`OUTPUT_TAIL_BYTES`] of each stream. When the client asked for progress (a `progressToken`
//! in the request), it gets one notification when the process starts (message `started pid N`,
//! progress 0) and one per output chunk (message: the text; progress: output bytes so far, so it
//! only grows). Cancelling the request (`notifications/cancelled`) kills the process group in the
//! guest, as does a client that goes away (the run is dropped). The guest enforces `timeout_ms`
//! (the result says `timed_out`); the engine gives up a little later should the guest not answer.

use platinum_engine::model::{ExecRequest, ExecResult};
use platinum_engine::{Engine, Retain, RunEvent};
use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use rmcp::service::RequestContext;
use schemars::JsonSchema;
use serde::Deserialize;
use std::collections::BTreeMap;

use crate::error::{ToolError, ToolResult};

/// Timeout of a foreground command that names none.
pub const DEFAULT_TIMEOUT_MS: u64 = 60_000;
/// Output kept per stream: the last this many bytes.
pub const OUTPUT_TAIL_BYTES: usize = 32 * 1024;
/// Longest progress message (longer chunks are cut; the result has the output).
const PROGRESS_MESSAGE_BYTES: usize = 8 * 1024;

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

    let mut run = engine
        .run(&id, request)
        .await?
        .retain(Retain::Tail, OUTPUT_TAIL_BYTES);
    let pid = run.pid();
    tracing::debug!(sandbox = %id, pid, "command started");
    let mut progress = Progress::new(ctx);
    progress.note(format!("started pid {pid}")).await;
    loop {
        let event = tokio::select! {
            event = run.next() => event?,
            _ = ctx.ct.cancelled() => {
                run.kill().await;
                return Err(ToolError::new("cancelled", format!("cancelled; pid {pid} was killed")));
            }
        };
        match event {
            RunEvent::Stdout(b) | RunEvent::Stderr(b) => progress.output(&b).await,
            RunEvent::Exited(out) => return Ok(out.into()),
        }
    }
}
