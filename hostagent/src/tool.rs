//! Running the external programs the host agent needs: for image builds apt, dpkg-deb, depmod,
//! mmdebstrap (or debootstrap), chroot and mkfs.ext4; for networking ip and nft.
//!
//! Programs are looked up on `PATH` and then in `/usr/sbin` and `/sbin`, where depmod and
//! mkfs.ext4 live but a normal user's `PATH` does not reach; a missing one is
//! [`Error::MissingProgram`] with the Debian package to install. Every child is killed when the
//! build future is dropped. A failing command becomes [`Error::Image`] carrying the command line,
//! its exit status and its last output lines, so the caller sees why apt or mkfs gave up without
//! digging through logs. Network setup reports the same details as [`Error::Network`]
//! ([`Tool::network`]).

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::error::{Error, Result};

/// Output lines kept for an error message.
const TAIL_LINES: usize = 25;

/// Directories searched after `PATH`.
const SBIN_DIRS: [&str; 2] = ["/usr/sbin", "/sbin"];

/// Finds `program` on `PATH`, then in the sbin directories.
pub(crate) fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// How to get a missing program, for [`Error::MissingProgram`].
fn install_hint(program: &str) -> String {
    let package = match program {
        "apt-get" | "apt-cache" => {
            return "image builds use apt: run them on a Debian or Ubuntu host".into();
        }
        "dpkg-deb" => "dpkg",
        "depmod" => "kmod",
        "mkfs.ext4" => "e2fsprogs",
        "chroot" => "coreutils",
        "ip" | "bridge" => "iproute2",
        "nft" => "nftables",
        other => other,
    };
    format!("apt-get install {package}")
}

/// One external command, with the build step its failure is reported under.
pub(crate) struct Tool {
    step: &'static str,
    command: Command,
    display: String,
    stdin: Option<std::fs::File>,
    network: bool,
}

impl Tool {
    /// Prepares `program`; fails with [`Error::MissingProgram`] when it is not installed.
    pub(crate) fn new(step: &'static str, program: &str) -> Result<Self> {
        let path = find_program(program).ok_or_else(|| Error::MissingProgram {
            program: program.to_owned(),
            hint: install_hint(program),
        })?;
        let mut command = Command::new(path);
        command.kill_on_drop(true).env("LC_ALL", "C.UTF-8");
        Ok(Self {
            step,
            command,
            display: program.to_owned(),
            stdin: None,
            network: false,
        })
    }

    /// Reports failures as [`Error::Network`] instead of [`Error::Image`].
    pub(crate) fn network(mut self) -> Self {
        self.network = true;
        self
    }

    /// Appends one argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        let arg = arg.as_ref();
        let shown = arg.to_string_lossy();
        if shown.is_empty() || shown.contains(char::is_whitespace) {
            self.display.push_str(&format!(" '{shown}'"));
        } else {
            self.display.push(' ');
            self.display.push_str(&shown);
        }
        self.command.arg(arg);
        self
    }

    /// Appends arguments.
    pub(crate) fn args<I: IntoIterator<Item = S>, S: AsRef<OsStr>>(self, args: I) -> Self {
        args.into_iter().fold(self, Tool::arg)
    }

    /// Runs the command in `dir`.
    pub(crate) fn current_dir(mut self, dir: &Path) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Sets an environment variable for the command.
    pub(crate) fn env(mut self, key: &str, value: &str) -> Self {
        self.command.env(key, value);
        self
    }

    /// Feeds `file` to the command's stdin (stdin is empty otherwise).
    pub(crate) fn stdin(mut self, file: std::fs::File) -> Self {
        self.stdin = Some(file);
        self
    }

    /// Runs to completion and returns stdout; a non-zero exit is an error with stderr's tail.
    pub(crate) async fn output(mut self) -> Result<String> {
        self.command
            .stdin(self.stdin.take().map_or_else(Stdio::null, Stdio::from));
        tracing::debug!(command = %self.display, "running");
        let output = self
            .command
            .output()
            .await
            .map_err(|e| self.spawn_error(e))?;
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let shown = if stderr.trim().is_empty() {
            stdout.as_str()
        } else {
            &stderr
        };
        let tail: Vec<&str> = shown.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(TAIL_LINES)..]
            .iter()
            .map(|l| l.to_string());
        Err(self.failure(output.status, tail))
    }

    /// Runs to completion, handing every line of stdout and stderr to `on_line` as it arrives
    /// (long-running tools report progress this way). A non-zero exit is an error with the last
    /// lines of output.
    pub(crate) async fn run_lines(mut self, mut on_line: impl FnMut(&str)) -> Result<()> {
        self.command
            .stdin(self.stdin.take().map_or_else(Stdio::null, Stdio::from))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tracing::debug!(command = %self.display, "running");
        let mut child = self.command.spawn().map_err(|e| self.spawn_error(e))?;
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Err(self.image_error("the child's output pipes are missing".into()));
        };
        let (mut stdout, mut stderr) = (BufReader::new(stdout), BufReader::new(stderr));
        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let (mut out_open, mut err_open) = (true, true);
        let (mut out_buf, mut err_buf) = (Vec::new(), Vec::new());
        while out_open || err_open {
            let (line, from_stdout) = tokio::select! {
                read = read_line(&mut stdout, &mut out_buf), if out_open => (read, true),
                read = read_line(&mut stderr, &mut err_buf), if err_open => (read, false),
            };
            match line.map_err(|e| self.io_error("reading the output of", e))? {
                Some(line) => {
                    let line = line.trim_end();
                    if !line.trim().is_empty() {
                        on_line(line);
                        if tail.len() == TAIL_LINES {
                            tail.pop_front();
                        }
                        tail.push_back(line.to_owned());
                    }
                }
                None if from_stdout => out_open = false,
                None => err_open = false,
            }
        }
        let status = child
            .wait()
            .await
            .map_err(|e| self.io_error("waiting for", e))?;
        if status.success() {
            Ok(())
        } else {
            Err(self.failure(status, tail.into_iter()))
        }
    }

    fn failure(&self, status: ExitStatus, tail: impl Iterator<Item = String>) -> Error {
        let tail: Vec<String> = tail.collect();
        let mut message = format!("`{}` failed ({status})", self.display);
        if !tail.is_empty() {
            message.push_str(":\n  ");
            message.push_str(&tail.join("\n  "));
        }
        self.image_error(message)
    }

    fn spawn_error(&self, error: std::io::Error) -> Error {
        self.io_error("starting", error)
    }

    fn io_error(&self, doing: &str, error: std::io::Error) -> Error {
        self.image_error(format!("{doing} `{}`: {error}", self.display))
    }

    fn image_error(&self, message: String) -> Error {
        let step = self.step.to_owned();
        if self.network {
            Error::Network { step, message }
        } else {
            Error::Image { step, message }
        }
    }
}

/// Reads one line (lossy UTF-8, `\r` and `\n` both end a line so progress counters show up);
/// `None` at end of stream. Cancel-safe: a partial line stays in `buf` for the next call, which
/// matters because `select!` drops the read of the pipe that did not win.
async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<String>> {
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            let rest = std::mem::take(buf);
            return Ok((!rest.is_empty()).then(|| String::from_utf8_lossy(&rest).into_owned()));
        }
        match available.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(end) => {
                buf.extend_from_slice(&available[..end]);
                reader.consume(end + 1);
                let line = std::mem::take(buf);
                return Ok(Some(String::from_utf8_lossy(&line).into_owned()));
            }
            None => {
                let len = available.len();
                buf.extend_from_slice(available);
                reader.consume(len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failure_carries_command_and_stderr_tail() {
        let err = Tool::new("test", "sh")
            .unwrap()
            .args(["-c", "echo one >&2; echo two >&2; exit 3"])
            .output()
            .await
            .unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("`sh -c 'echo one >&2; echo two >&2; exit 3'`"),
            "{message}"
        );
        assert!(message.contains("exit status: 3"), "{message}");
        assert!(message.contains("one\n  two"), "{message}");
    }

    #[tokio::test]
    async fn lines_are_streamed_from_both_pipes() {
        let mut lines = Vec::new();
        Tool::new("test", "sh")
            .unwrap()
            .args(["-c", "echo out; echo err >&2; printf 'a\\rb'"])
            .run_lines(|l| lines.push(l.to_owned()))
            .await
            .unwrap();
        lines.sort();
        assert_eq!(lines, ["a", "b", "err", "out"]);
    }

    #[test]
    fn missing_program_names_the_package() {
        let err = Tool::new("test", "platinum-no-such-program").err().unwrap();
        assert!(matches!(err, Error::MissingProgram { .. }), "{err}");
        assert!(install_hint("depmod").contains("kmod"));
    }
}
