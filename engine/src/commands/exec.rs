//! Running commands in a sandbox: buffered exec (over [`Engine::run`]), streaming exec,
//! background processes, signals, stdin.

use bytes::Bytes;
use platinum_hostagent::guest::GuestClient;
use platinum_protocol::{Command, ExecSpec};
use std::time::{Duration, Instant};

use crate::commands::sandbox::require;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{CommandLine, ExecRequest, ExecResult, ProcessInfo, Sandbox, SandboxState};
use crate::process::{ExecStream, PtySize};

/// Options for starting a streaming process (PTY and stdin), beyond [`ExecRequest`].
#[derive(Debug, Clone, Default)]
pub struct StreamOptions {
    /// Keep stdin open for writes.
    pub stdin: bool,
    /// Run on a PTY of this size.
    pub pty: Option<PtySize>,
    /// Label stored with the process.
    pub tag: Option<String>,
}

impl Engine {
    /// The guest session of a sandbox that is running.
    pub(crate) async fn running_guest(&self, id: &str) -> Result<(Sandbox, GuestClient)> {
        let s = self.sandbox_for_traffic(id).await?;
        require(&s, "this operation", &[SandboxState::Running])?;
        self.touch(&s).await;
        let guest = self.host.guest(id).await?;
        Ok((s, guest))
    }

    /// A sandbox that traffic is for: one created with `auto_resume` is resumed first when it
    /// is paused (in memory or to disk); any other is returned as it is.
    pub async fn sandbox_for_traffic(&self, id: &str) -> Result<Sandbox> {
        let s = self.load(id).await?;
        if s.auto_resume() && matches!(s.state, SandboxState::Paused | SandboxState::Suspended) {
            tracing::info!(sandbox = %id, state = %s.state, "auto-resuming on traffic");
            return self.resume_sandbox(id).await;
        }
        Ok(s)
    }

    fn exec_spec(
        &self,
        req: &ExecRequest,
        default_timeout: Option<Duration>,
        opts: Option<StreamOptions>,
    ) -> Result<ExecSpec> {
        let command = match &req.command {
            CommandLine::Shell(s) if s.trim().is_empty() => {
                return Err(Error::InvalidRequest("command is empty".into()));
            }
            CommandLine::Argv(a) if a.is_empty() || a[0].is_empty() => {
                return Err(Error::InvalidRequest("command argv is empty".into()));
            }
            CommandLine::Shell(s) => Command::Shell(s.clone()),
            CommandLine::Argv(a) => Command::Argv(a.clone()),
        };
        crate::env::check_env(&req.env)?;
        if let Some(cwd) = &req.cwd {
            check_guest_path(cwd)?;
        }
        let timeout_ms = match req.timeout_ms {
            Some(0) => None,
            Some(ms) => Some(ms),
            None => default_timeout.map(|d| d.as_millis() as u64),
        };
        let opts = opts.unwrap_or_default();
        Ok(ExecSpec {
            command,
            env: req.env.clone(),
            cwd: req.cwd.clone(),
            user: req.user.clone(),
            stdin: opts.stdin || req.stdin.is_some(),
            timeout_ms,
            pty: opts.pty.map(Into::into),
            tag: opts.tag,
        })
    }

    /// Starts a process and returns its stream and the timeout the guest enforces; `req.stdin`
    /// is the caller's to feed ([`feed_stdin`]).
    pub(crate) async fn start_process(
        &self,
        id: &str,
        req: &ExecRequest,
        default_timeout: Option<Duration>,
        opts: Option<StreamOptions>,
    ) -> Result<(ExecStream, Option<u64>)> {
        let mut spec = self.exec_spec(req, default_timeout, opts)?;
        let (sandbox, guest) = self.running_guest(id).await?;
        // Commands of a custom template's sandbox start in its working directory and as its
        // user (its last `workdir` and `user` steps, or a pulled image's), as the SDKs' images
        // and `docker run` do, unless the request says otherwise.
        if let Some(defaults) = self.builds.defaults_of(&sandbox.template) {
            spec.cwd = spec.cwd.or(defaults.workdir);
            spec.user = spec.user.or(defaults.user);
        }
        let timeout_ms = spec.timeout_ms;
        Ok((ExecStream::new(guest.exec(spec).await?), timeout_ms))
    }

    /// Runs a command and returns its output once it ends (or, with `background`, its pid at
    /// once). A foreground command is killed when the caller stops waiting ([`Engine::run`]).
    pub async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult> {
        if !req.background {
            return Ok(self.run(id, req).await?.finish().await?.into());
        }
        let started = Instant::now();
        let (stream, _) = self.start_process(id, &req, None, None).await?;
        feed_stdin(&stream, &req).await?;
        Ok(ExecResult {
            pid: stream.pid(),
            exit_code: None,
            signal: None,
            timed_out: false,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            duration_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Starts a command and returns its live output stream. Dropping the stream detaches; the
    /// process keeps running (reattach with [`Engine::attach`]).
    pub async fn exec_stream(
        &self,
        id: &str,
        req: ExecRequest,
        opts: StreamOptions,
    ) -> Result<ExecStream> {
        let (stream, _) = self.start_process(id, &req, None, Some(opts)).await?;
        feed_stdin(&stream, &req).await?;
        Ok(stream)
    }

    /// Re-attaches to a process, optionally replaying the output it buffered.
    pub async fn attach(&self, id: &str, pid: u32, replay: bool) -> Result<ExecStream> {
        let (_, guest) = self.running_guest(id).await?;
        Ok(ExecStream::new(guest.attach(pid, replay).await?))
    }

    /// Processes started in the sandbox (running and recently ended).
    pub async fn list_processes(&self, id: &str) -> Result<Vec<ProcessInfo>> {
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest
            .list_processes()
            .await?
            .into_iter()
            .map(Into::into)
            .collect())
    }

    /// Sends a signal to a process's group.
    pub async fn signal_process(&self, id: &str, pid: u32, signal: i32) -> Result<()> {
        if !(1..=64).contains(&signal) {
            return Err(Error::InvalidRequest(format!("invalid signal {signal}")));
        }
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.signal(pid, signal).await?)
    }

    /// Writes to a process's stdin.
    pub async fn write_stdin(&self, id: &str, pid: u32, data: Bytes) -> Result<()> {
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.write_stdin(pid, data).await?)
    }

    /// Closes a process's stdin.
    pub async fn close_stdin(&self, id: &str, pid: u32) -> Result<()> {
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.close_stdin(pid).await?)
    }

    /// Resizes a process's PTY.
    pub async fn resize_pty(&self, id: &str, pid: u32, size: PtySize) -> Result<()> {
        if size.cols == 0 || size.rows == 0 {
            return Err(Error::InvalidRequest(
                "PTY size must be at least 1x1".into(),
            ));
        }
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.resize_pty(pid, size.into()).await?)
    }

    /// Opens a TCP connection to `port` inside the sandbox (through the guest agent; no network
    /// path is needed). Fails with `port_not_open` when nothing listens there.
    pub async fn connect_port(&self, id: &str, port: u16) -> Result<tokio::io::DuplexStream> {
        if port == 0 {
            return Err(Error::InvalidRequest("port must be 1-65535".into()));
        }
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.connect_port(port).await?)
    }
}

/// Writes `req.stdin`, if any, to the process and closes its stdin.
pub(crate) async fn feed_stdin(stream: &ExecStream, req: &ExecRequest) -> Result<()> {
    if let Some(input) = &req.stdin {
        let stdin = stream.stdin();
        stdin.write(input.as_bytes()).await?;
        stdin.close()?;
    }
    Ok(())
}

/// Rejects guest paths that cannot be valid (empty, NUL bytes, absurdly long).
pub(crate) fn check_guest_path(path: &str) -> Result<()> {
    if path.is_empty() {
        return Err(Error::InvalidRequest("path is empty".into()));
    }
    if path.contains('\0') {
        return Err(Error::InvalidRequest("path contains a NUL byte".into()));
    }
    if path.len() > 4096 {
        return Err(Error::InvalidRequest(
            "path is longer than 4096 bytes".into(),
        ));
    }
    Ok(())
}
