//! Guest streams as front ends see them: the live output stream of a guest process, its stdin,
//! how it ended and its terminal size, and a file being read. Engine-owned, so front ends never depend on the host↔guest
//! protocol; each type wraps or mirrors its `platinum-protocol` / `platinum-hostagent` twin.

use bytes::Bytes;
use platinum_hostagent::guest as host;

use crate::error::Result;

/// `SIGKILL`, the signal the engine sends to a process it gives up on.
pub const SIGKILL: i32 = 9;

/// Terminal size of a process running on a PTY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PtySize {
    /// Columns.
    pub cols: u16,
    /// Rows.
    pub rows: u16,
}

impl From<PtySize> for platinum_protocol::PtySize {
    fn from(s: PtySize) -> Self {
        platinum_protocol::PtySize {
            cols: s.cols,
            rows: s.rows,
        }
    }
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitStatus {
    /// Exit code, when it exited normally.
    pub code: Option<i32>,
    /// Signal number (1..=64), when a signal ended it.
    pub signal: Option<i32>,
    /// Its timeout fired and the guest killed it.
    pub timed_out: bool,
    /// From the guest agent starting the spawn to its collecting the exit status, timed in the
    /// guest (`None` from an agent that does not report it).
    pub guest_elapsed: Option<std::time::Duration>,
    /// From the guest agent taking up the request to its sending this status, timed in the
    /// guest (includes `guest_elapsed`; `None` but for the stream that started the process).
    pub guest_handled: Option<std::time::Duration>,
}

impl ExitStatus {
    /// Shell convention: the code, or 128 + signal; -1 when neither is known.
    pub fn shell_code(&self) -> i32 {
        platinum_protocol::ExitStatus::from(*self).shell_code()
    }
}

impl From<platinum_protocol::ExitStatus> for ExitStatus {
    fn from(s: platinum_protocol::ExitStatus) -> Self {
        ExitStatus {
            code: s.code,
            signal: s.signal,
            timed_out: s.timed_out,
            guest_elapsed: s.elapsed_us.map(std::time::Duration::from_micros),
            guest_handled: s.handled_us.map(std::time::Duration::from_micros),
        }
    }
}

impl From<ExitStatus> for platinum_protocol::ExitStatus {
    fn from(s: ExitStatus) -> Self {
        platinum_protocol::ExitStatus {
            code: s.code,
            signal: s.signal,
            timed_out: s.timed_out,
            elapsed_us: s.guest_elapsed.map(micros),
            handled_us: s.guest_handled.map(micros),
        }
    }
}

/// Something a running process produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes on stdout (or the PTY).
    Stdout(Bytes),
    /// Bytes on stderr.
    Stderr(Bytes),
    /// Replayed output began after this many bytes had been dropped from the guest's buffer.
    Lost(u64),
    /// The process ended; the last event of a stream.
    Exited(ExitStatus),
}

impl From<host::ExecEvent> for ExecEvent {
    fn from(e: host::ExecEvent) -> Self {
        match e {
            host::ExecEvent::Stdout(b) => ExecEvent::Stdout(b),
            host::ExecEvent::Stderr(b) => ExecEvent::Stderr(b),
            host::ExecEvent::Lost(n) => ExecEvent::Lost(n),
            host::ExecEvent::Exited(s) => ExecEvent::Exited(s.into()),
        }
    }
}

/// Whole microseconds in `d`, saturating.
fn micros(d: std::time::Duration) -> u64 {
    d.as_micros().try_into().unwrap_or(u64::MAX)
}

/// Live output of one process, plus its stdin. Dropping it detaches: the process keeps running
/// (re-attach with [`crate::Engine::attach`]); [`crate::Engine::run`] is the form that kills.
pub struct ExecStream {
    inner: host::ExecStream,
}

impl ExecStream {
    pub(crate) fn new(inner: host::ExecStream) -> Self {
        ExecStream { inner }
    }

    /// Guest pid.
    pub fn pid(&self) -> u32 {
        self.inner.pid()
    }

    /// A writer for this process's stdin.
    pub fn stdin(&self) -> StdinWriter {
        StdinWriter {
            inner: self.inner.stdin(),
        }
    }

    /// The next event; `None` after [`ExecEvent::Exited`] has been returned.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        Ok(self.inner.next().await?.map(Into::into))
    }
}

/// Writes a process's stdin while another task reads its output.
#[derive(Clone)]
pub struct StdinWriter {
    inner: host::StdinWriter,
}

impl StdinWriter {
    /// Writes bytes to stdin (waits for flow-control credit).
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        Ok(self.inner.write(data).await?)
    }

    /// Closes stdin.
    pub fn close(&self) -> Result<()> {
        Ok(self.inner.close()?)
    }
}

/// A file being read from a sandbox: what it is, then its contents chunk by chunk.
pub struct FileDownload {
    /// The file (resolved path, size, ...).
    pub entry: crate::model::FileInfo,
    inner: host::FileDownload,
}

impl FileDownload {
    pub(crate) fn new(inner: host::FileDownload) -> Self {
        FileDownload {
            entry: inner.entry.clone().into(),
            inner,
        }
    }

    /// The next chunk; `None` at the end of the file (after the guest confirmed success).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        Ok(self.inner.chunk().await?)
    }

    /// The contents as a `Stream` (for HTTP bodies); it ends after the first error.
    pub fn into_stream(self) -> impl futures::Stream<Item = Result<Bytes>> + Send + 'static {
        use futures::TryStreamExt;
        self.inner.into_stream().map_err(Into::into)
    }
}

/// Whether a process tag marks one of Platinum's own processes in a sandbox (a code-context
/// kernel or a language server), which front ends leave out of the user's process lists.
pub fn is_internal_tag(tag: &str) -> bool {
    tag.starts_with(crate::code::TAG_PREFIX) || tag.starts_with(crate::lsp::TAG_PREFIX)
}
