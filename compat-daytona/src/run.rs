//! Running one argv command to completion for a toolbox request (execute, code-run, git, find,
//! ...): a builder for the request, over the engine's one run path ([`Engine::run`]), which kills
//! the command when the request goes away before it ends.

use platinum_engine::model::{CommandLine, ExecRequest};
use platinum_engine::{Engine, Error as EngineError, RunOutput};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

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

/// Runs `cmd` in sandbox `id` until it ends ([`Engine::run`]: killed if this future is dropped
/// first, output within the engine's budget).
pub async fn run(engine: &Arc<Engine>, id: &str, cmd: Cmd) -> Result<RunOutput, EngineError> {
    let req = ExecRequest {
        command: CommandLine::Argv(cmd.argv),
        env: cmd.env,
        cwd: cmd.cwd,
        user: None,
        // 0 tells the engine "no limit".
        timeout_ms: Some(cmd.timeout.map_or(0, |t| (t.as_millis() as u64).max(1))),
        stdin: cmd.stdin,
        background: false,
    };
    engine.run(id, req).await?.finish().await
}
