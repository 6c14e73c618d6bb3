//! Running commands in a sandbox: buffered and streaming exec, background processes, signals, stdin.

use bytes::Bytes;
use platinum_hostagent::guest::{ExecStream, GuestClient};
use platinum_protocol::{Command, ExecSpec, PtySize};
use std::time::{Duration, Instant};

use crate::commands::sandbox::require;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{CommandLine, ExecRequest, ExecResult, ProcessInfo, Sandbox, SandboxState};

/// Extra time the host waits past a command's own timeout before giving up on the guest.
const HOST_GRACE: Duration = Duration::from_secs(10);

const SIGKILL: i32 = 9;

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
    pub async fn running_guest(&self, id: &str) -> Result<(Sandbox, GuestClient)> {
        let s = self.load(id).await?;
        require(&s, "this operation", &[SandboxState::Running])?;
        self.touch(&s).await;
        let guest = self.host.guest(id).await?;
        Ok((s, guest))
    }

    fn exec_spec(
        &self,
        req: &ExecRequest,
        default_timeout: Option<Duration>,
        opts: StreamOptions,
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
        if req
            .env
            .keys()
            .any(|k| k.is_empty() || k.contains('=') || k.contains('\0'))
        {
            return Err(Error::InvalidRequest(
                "invalid environment variable name".into(),
            ));
        }
        if let Some(cwd) = &req.cwd {
            check_guest_path(cwd)?;
        }
        let timeout_ms = match req.timeout_ms {
            Some(0) => None,
            Some(ms) => Some(ms),
            None => default_timeout.map(|d| d.as_millis() as u64),
        };
        Ok(ExecSpec {
            command,
            env: req.env.clone(),
            cwd: req.cwd.clone(),
            user: req.user.clone(),
            stdin: opts.stdin || req.stdin.is_some(),
            timeout_ms,
            pty: opts.pty,
            tag: opts.tag,
        })
    }

    /// Runs a command and returns its output once it ends (or, with `background`, its pid at once).
    pub async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult> {
        let (_, guest) = self.running_guest(id).await?;
        let default_timeout = if req.background {
            None
        } else {
            Some(self.config.default_exec_timeout)
        };
        let spec = self.exec_spec(&req, default_timeout, StreamOptions::default())?;
        let timeout_ms = spec.timeout_ms;
        let started = Instant::now();
        let stream = guest.exec(spec).await?;
        if let Some(input) = &req.stdin {
            let stdin = stream.stdin();
            stdin.write(input.as_bytes()).await?;
            stdin.close()?;
        }
        let pid = stream.pid();
        if req.background {
            return Ok(ExecResult {
                pid,
                exit_code: None,
                signal: None,
                timed_out: false,
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                duration_ms: started.elapsed().as_millis() as u64,
            });
        }
        let collect = stream.collect(self.config.exec_output_limit);
        let out = match timeout_ms {
            Some(ms) => {
                match tokio::time::timeout(Duration::from_millis(ms) + HOST_GRACE, collect).await {
                    Ok(r) => r?,
                    Err(_) => {
                        // The guest should have killed it; make sure, then report.
                        let _ = guest.signal(pid, SIGKILL).await;
                        return Err(Error::ExecTimeout(ms));
                    }
                }
            }
            None => collect.await?,
        };
        let limit = self.config.exec_output_limit;
        let mut truncated = out.truncated;
        let stdout = lossy_capped(&out.stdout, limit, &mut truncated);
        let stderr = lossy_capped(&out.stderr, limit, &mut truncated);
        Ok(ExecResult {
            pid,
            exit_code: Some(out.exit.shell_code()),
            signal: out.exit.signal,
            timed_out: out.exit.timed_out,
            stdout,
            stderr,
            truncated,
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
        let (_, guest) = self.running_guest(id).await?;
        let spec = self.exec_spec(&req, None, opts)?;
        let stream = guest.exec(spec).await?;
        if let Some(input) = &req.stdin {
            let stdin = stream.stdin();
            stdin.write(input.as_bytes()).await?;
            stdin.close()?;
        }
        Ok(stream)
    }

    /// Re-attaches to a process, optionally replaying the output it buffered.
    pub async fn attach(&self, id: &str, pid: u32, replay: bool) -> Result<ExecStream> {
        let (_, guest) = self.running_guest(id).await?;
        Ok(guest.attach(pid, replay).await?)
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
        Ok(guest.resize_pty(pid, size).await?)
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

    /// Round-trips a payload through the guest agent (measures the raw transport).
    pub async fn ping_guest(&self, id: &str, payload: String) -> Result<Duration> {
        let (_, guest) = self.running_guest(id).await?;
        let t = Instant::now();
        let reply = guest.ping(payload.clone()).await?;
        if reply.payload != payload {
            return Err(Error::GuestUnreachable(
                "ping payload came back altered".into(),
            ));
        }
        Ok(t.elapsed())
    }
}

/// Guest output as text within the output budget: each of stdout and stderr keeps its first
/// `limit` bytes (`exec_output_limit`), and since lossy decoding turns every invalid byte into
/// a 3-byte U+FFFD, the text is cut again at the last character boundary within `limit`;
/// `truncated` is set when anything was cut.
fn lossy_capped(bytes: &[u8], limit: usize, truncated: &mut bool) -> String {
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if text.len() > limit {
        let mut end = limit;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        *truncated = true;
    }
    text
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossy_output_stays_within_the_byte_budget() {
        let mut truncated = false;
        assert_eq!(lossy_capped(b"hello", 10, &mut truncated), "hello");
        assert!(!truncated);
        // 10 invalid bytes would decode to 30 bytes of U+FFFD.
        let text = lossy_capped(&[0xff; 10], 10, &mut truncated);
        assert_eq!(text, "\u{fffd}".repeat(3));
        assert!(text.len() <= 10 && truncated);
        let mut truncated = false;
        assert_eq!(lossy_capped("héllo".as_bytes(), 2, &mut truncated), "h");
        assert!(truncated);
    }
}
