//! The machinery behind code contexts ([`crate::commands::code`]): one kernel process per context
//! inside the sandbox, and the host side that talks to it.
//!
//! A kernel is a small program of ours ([`PYTHON_DRIVER`], [`JS_DRIVER`]), uploaded into the
//! sandbox and started as an ordinary guest process with stdin kept open, as root (like the
//! Jupyter kernels the E2B code interpreter runs), tagged `platinum-code:<id>:<language>:<kind>`.
//! It speaks JSON lines: the host writes `{"id", "code", "env"}` per cell; the kernel answers
//! `ready` once, then per cell `count`, `stdout`/`stderr`/`result`/`error` and always `done`.
//!
//! Ownership: each kernel has one pump task that owns the process's output stream, splits it
//! into lines and hands the lines of the running cell to that cell's channel. Cells run one at a
//! time: a cell holds the kernel's slot (a one-permit semaphore) from the moment it is sent until
//! `done` arrives or the kernel is lost, and the pump releases it. Whatever the kernel writes to
//! its raw stderr is reported as stderr of the running cell.
//!
//! Loss and recovery: if the kernel process exits, the context is `dead` and its next cell
//! starts a fresh kernel (state lost, as a Jupyter kernel restart). If only the connection to the
//! guest is lost (or the server restarted), the process still runs: the context is `detached`
//! and the next cell re-attaches to it by pid. Contexts are found again after a server restart
//! from the tags of the guest's running processes; they belong to one boot of the VM.

use crate::process::{ExecEvent, ExecStream, StdinWriter};
use bytes::BytesMut;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use crate::commands::code::{CodeContext, CodeError, CodeEvent, CodeLanguage, CodeResult};
use crate::error::Error;

/// The Python kernel (run with the sandbox's `python3`).
pub(crate) const PYTHON_DRIVER: &str = include_str!("kernel.py");
/// The JavaScript kernel (run with the sandbox's `node`).
pub(crate) const JS_DRIVER: &str = include_str!("kernel.js");

/// Tag prefix of kernel processes; front ends hide processes with this tag from process lists.
pub const TAG_PREFIX: &str = "platinum-code:";

/// Longest line a kernel may write (a large image result is a few MiB of base64).
const MAX_LINE: usize = 64 << 20;

/// The tag of a kernel process.
pub(crate) fn tag(info: &CodeContext, default: bool) -> String {
    let kind = if default { "default" } else { "named" };
    format!("{TAG_PREFIX}{}:{}:{kind}", info.id, info.language.as_str())
}

/// Parses a kernel tag: (context id, language, default).
pub(crate) fn parse_tag(tag: &str) -> Option<(String, CodeLanguage, bool)> {
    let mut parts = tag.strip_prefix(TAG_PREFIX)?.split(':');
    let id = parts.next()?.to_string();
    let language = CodeLanguage::parse(Some(parts.next()?)).ok()?;
    let default = match parts.next()? {
        "default" => true,
        "named" => false,
        _ => return None,
    };
    Some((id, language, default))
}

/// The engine's kernels, by sandbox.
#[derive(Default)]
pub(crate) struct Kernels {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Contexts>>>>,
}

impl Kernels {
    /// The contexts of one sandbox (created empty on first use).
    pub(crate) fn of(&self, sandbox: &str) -> Arc<tokio::sync::Mutex<Contexts>> {
        self.map
            .lock()
            .expect("kernel registry")
            .entry(sandbox.to_string())
            .or_default()
            .clone()
    }

    /// Forgets a sandbox's contexts (it was deleted).
    pub(crate) fn forget(&self, sandbox: &str) {
        self.map.lock().expect("kernel registry").remove(sandbox);
    }
}

/// The contexts of one sandbox.
#[derive(Default)]
pub(crate) struct Contexts {
    /// The VM boot these contexts belong to (`None`: not loaded yet).
    pub(crate) boot: Option<u32>,
    /// Contexts, oldest first.
    pub(crate) list: Vec<Arc<Kernel>>,
}

impl Contexts {
    /// A context by id.
    pub(crate) fn get(&self, id: &str) -> Option<Arc<Kernel>> {
        self.list.iter().find(|k| k.info.id == id).cloned()
    }

    /// The default context of a language, if it exists.
    pub(crate) fn default_for(&self, language: CodeLanguage) -> Option<Arc<Kernel>> {
        self.list
            .iter()
            .find(|k| k.default && k.info.language == language)
            .cloned()
    }
}

/// One code context: its description, its cell slot and its process.
pub(crate) struct Kernel {
    pub(crate) info: CodeContext,
    /// The context the sandbox uses for cells that name only a language.
    pub(crate) default: bool,
    /// One cell at a time.
    pub(crate) slot: Arc<Semaphore>,
    pub(crate) proc: tokio::sync::Mutex<Proc>,
}

impl Kernel {
    pub(crate) fn new(info: CodeContext, default: bool, proc: Proc) -> Arc<Self> {
        Arc::new(Kernel {
            info,
            default,
            slot: Arc::new(Semaphore::new(1)),
            proc: tokio::sync::Mutex::new(proc),
        })
    }
}

/// Whether the kernel process can take cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Liveness {
    /// Its pump is reading it.
    Alive,
    /// It probably still runs, but nobody reads it (connection lost, or found after a restart).
    Detached,
    /// It exited.
    Dead,
}

/// A kernel process as the host sees it.
pub(crate) struct Proc {
    pub(crate) pid: u32,
    pub(crate) stdin: Option<StdinWriter>,
    pub(crate) shared: Arc<Shared>,
}

impl Proc {
    /// A process found running but not (yet) attached to.
    pub(crate) fn detached(pid: u32) -> Self {
        let shared = Arc::new(Shared::default());
        *shared.liveness.lock().expect("kernel liveness") = Liveness::Detached;
        Proc {
            pid,
            stdin: None,
            shared,
        }
    }

    /// Whether it can take cells.
    pub(crate) fn liveness(&self) -> Liveness {
        *self.shared.liveness.lock().expect("kernel liveness")
    }
}

/// What the pump and the cell starter share.
pub(crate) struct Shared {
    current: Mutex<Option<Current>>,
    liveness: Mutex<Liveness>,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            current: Mutex::new(None),
            liveness: Mutex::new(Liveness::Alive),
        }
    }
}

/// The running cell.
struct Current {
    id: String,
    tx: mpsc::Sender<Feed>,
    _slot: OwnedSemaphorePermit,
}

/// What a cell's channel carries.
pub(crate) enum Feed {
    /// Output, a result or the cell's error.
    Event(CodeEvent),
    /// The cell finished (`done`).
    Finished,
    /// The kernel was lost before the cell finished.
    Failed(Error),
}

impl Shared {
    /// Makes `id` the running cell; its events go to `tx` until it finishes.
    pub(crate) fn begin(&self, id: String, tx: mpsc::Sender<Feed>, slot: OwnedSemaphorePermit) {
        *self.current.lock().expect("kernel cell") = Some(Current {
            id,
            tx,
            _slot: slot,
        });
    }

    /// Forgets the running cell (it could not be sent).
    pub(crate) fn abandon(&self) {
        self.current.lock().expect("kernel cell").take();
    }

    fn sender_for(&self, id: Option<&str>) -> Option<mpsc::Sender<Feed>> {
        let current = self.current.lock().expect("kernel cell");
        current
            .as_ref()
            .filter(|c| id.is_none_or(|id| c.id == id))
            .map(|c| c.tx.clone())
    }

    async fn forward(&self, id: Option<&str>, event: CodeEvent) {
        if let Some(tx) = self.sender_for(id) {
            // A caller that went away gets nothing more; the cell still runs to its `done`.
            let _ = tx.send(Feed::Event(event)).await;
        }
    }

    async fn finish(&self, id: &str) {
        let current = {
            let mut slot = self.current.lock().expect("kernel cell");
            if slot.as_ref().is_some_and(|c| c.id == id) {
                slot.take()
            } else {
                None
            }
        };
        if let Some(c) = current {
            let _ = c.tx.send(Feed::Finished).await;
        }
    }

    async fn lose(&self, liveness: Liveness, error: Error) {
        *self.liveness.lock().expect("kernel liveness") = liveness;
        let current = self.current.lock().expect("kernel cell").take();
        if let Some(c) = current {
            let _ = c.tx.send(Feed::Failed(error)).await;
        }
    }
}

/// A line a kernel writes.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum KernelLine {
    Ready {
        #[allow(dead_code)]
        language: String,
    },
    Count {
        id: String,
        n: u32,
    },
    Stdout {
        id: String,
        text: String,
    },
    Stderr {
        id: String,
        text: String,
    },
    Result {
        id: String,
        data: serde_json::Map<String, serde_json::Value>,
        main: bool,
    },
    Error {
        id: String,
        name: String,
        value: String,
        traceback: String,
    },
    Done {
        id: String,
    },
}

/// One item [`Lines`] splits off a byte stream.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Line {
    /// A complete line, without its `\n`.
    Complete(BytesMut),
    /// A line grew past the limit: it is dropped, up to and including its `\n`.
    TooLong,
}

/// Splits a byte stream into lines, however it is chunked, looking at each byte once: a cursor
/// remembers how far the pending partial line has been searched for `\n`, so a kernel that
/// writes a long line one byte at a time costs linear, not quadratic, time. Memory is bounded
/// too: a partial line longer than `max` is dropped (reported once as [`Line::TooLong`]) and the
/// rest of it is skipped without being buffered.
#[derive(Debug)]
pub(crate) struct Lines {
    buf: BytesMut,
    /// `buf[..scanned]` holds no `\n`.
    scanned: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    max: usize,
    /// Bytes looked at so far, for tests of the linear bound.
    #[cfg_attr(not(test), allow(dead_code))]
    inspected: u64,
}

impl Default for Lines {
    fn default() -> Self {
        Lines::new(MAX_LINE)
    }
}

impl Lines {
    /// A splitter that drops lines longer than `max` bytes.
    pub(crate) fn new(max: usize) -> Self {
        Lines {
            buf: BytesMut::new(),
            scanned: 0,
            discarding: false,
            max,
            inspected: 0,
        }
    }

    /// Adds bytes (the rest of an over-long line is skipped here, never buffered).
    pub(crate) fn feed(&mut self, mut data: &[u8]) {
        if self.discarding {
            let found = memchr(data);
            self.inspected += found.map_or(data.len(), |p| p + 1) as u64;
            match found {
                Some(p) => {
                    self.discarding = false;
                    data = &data[p + 1..];
                }
                None => return,
            }
        }
        self.buf.extend_from_slice(data);
    }

    /// The next line, if a complete one (or an over-long one) is buffered. Only bytes not
    /// searched before are searched.
    pub(crate) fn next_line(&mut self) -> Option<Line> {
        match memchr(&self.buf[self.scanned..]) {
            Some(p) => {
                self.inspected += p as u64 + 1;
                let end = self.scanned + p;
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                self.scanned = 0;
                Some(Line::Complete(line))
            }
            None => {
                self.inspected += (self.buf.len() - self.scanned) as u64;
                self.scanned = self.buf.len();
                if self.buf.len() > self.max {
                    self.buf = BytesMut::new();
                    self.scanned = 0;
                    self.discarding = true;
                    return Some(Line::TooLong);
                }
                None
            }
        }
    }

    /// Bytes held for the pending partial line.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.buf.len()
    }
}

fn memchr(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}

/// Most kernel stderr bytes kept while waiting for `ready` (the newest are kept: a traceback
/// ends with its cause).
const MAX_START_STDERR: usize = 64 * 1024;

/// The newest `cap` bytes of a stream, and how many older ones were dropped.
#[derive(Debug, Default)]
struct Tail {
    bytes: std::collections::VecDeque<u8>,
    dropped: u64,
}

impl Tail {
    fn push(&mut self, data: &[u8], cap: usize) {
        let keep = &data[data.len().saturating_sub(cap)..];
        self.dropped += (data.len() - keep.len()) as u64;
        let over = (self.bytes.len() + keep.len()).saturating_sub(cap);
        self.bytes.drain(..over);
        self.dropped += over as u64;
        self.bytes.extend(keep);
    }

    /// Lossy text, starting with a note when older bytes were dropped.
    fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let text = String::from_utf8_lossy(&[a, b].concat()).trim().to_string();
        if self.dropped > 0 {
            format!("[{} earlier bytes of stderr dropped] {text}", self.dropped)
        } else {
            text
        }
    }
}

/// Reads a freshly started kernel until its `ready` line. Returns the line splitter holding
/// what followed it, or why the kernel did not come up (the newest [`MAX_START_STDERR`] bytes
/// of its stderr included).
pub(crate) async fn wait_ready(
    stream: &mut ExecStream,
    language: CodeLanguage,
) -> Result<Lines, Error> {
    let mut lines = Lines::default();
    let mut stderr = Tail::default();
    loop {
        match stream.next().await? {
            Some(ExecEvent::Stdout(b)) => {
                lines.feed(&b);
                // Lines after `ready` stay in `lines` for the pump.
                match lines.next_line() {
                    None => {}
                    Some(Line::Complete(line)) => {
                        return match serde_json::from_slice::<KernelLine>(&line) {
                            Ok(KernelLine::Ready { .. }) => Ok(lines),
                            _ => Err(Error::Internal(format!(
                                "the {} kernel said {:?} instead of ready",
                                language.as_str(),
                                String::from_utf8_lossy(&line[..line.len().min(1024)])
                            ))),
                        };
                    }
                    Some(Line::TooLong) => {
                        return Err(Error::Internal("the kernel wrote an endless line".into()));
                    }
                }
            }
            Some(ExecEvent::Stderr(b)) => stderr.push(&b, MAX_START_STDERR),
            Some(ExecEvent::Lost(_)) => {}
            Some(ExecEvent::Exited(status)) => {
                return Err(Error::InvalidRequest(format!(
                    "the {} kernel exited at start (code {}): {}",
                    language.as_str(),
                    status.shell_code(),
                    stderr.text()
                )));
            }
            None => return Err(Error::Internal("the kernel stream ended at start".into())),
        }
    }
}

/// Starts the pump of a kernel: reads its output until it exits or the connection is lost.
pub(crate) fn spawn_pump(mut stream: ExecStream, lines: Lines, shared: Arc<Shared>, label: String) {
    tokio::spawn(async move {
        let mut lines = lines;
        let (liveness, error) = loop {
            while let Some(line) = lines.next_line() {
                match line {
                    Line::Complete(line) => dispatch(&shared, &line).await,
                    Line::TooLong => tracing::warn!(
                        kernel = %label,
                        "kernel line longer than {MAX_LINE} bytes dropped"
                    ),
                }
            }
            match stream.next().await {
                Ok(Some(ExecEvent::Stdout(b))) => lines.feed(&b),
                Ok(Some(ExecEvent::Stderr(b))) => {
                    let text = String::from_utf8_lossy(&b).into_owned();
                    shared.forward(None, CodeEvent::Stderr(text)).await;
                }
                Ok(Some(ExecEvent::Lost(_))) => {}
                Ok(Some(ExecEvent::Exited(status))) => {
                    break (
                        Liveness::Dead,
                        Error::Internal(format!(
                            "the kernel exited (code {}); its state is lost and the next run starts a new one",
                            status.shell_code()
                        )),
                    );
                }
                Ok(None) => {
                    break (
                        Liveness::Dead,
                        Error::Internal("the kernel stream ended".into()),
                    );
                }
                Err(e) => break (Liveness::Detached, e),
            }
        };
        tracing::debug!(kernel = %label, ?liveness, error = %error, "kernel pump ended");
        shared.lose(liveness, error).await;
    });
}

async fn dispatch(shared: &Shared, line: &[u8]) {
    let msg = match serde_json::from_slice::<KernelLine>(line) {
        Ok(m) => m,
        Err(e) => {
            tracing::debug!(error = %e, "unreadable kernel line");
            return;
        }
    };
    let (id, event) = match msg {
        KernelLine::Ready { .. } => return,
        KernelLine::Done { id } => return shared.finish(&id).await,
        KernelLine::Count { id, n } => (id, CodeEvent::ExecutionCount(n)),
        KernelLine::Stdout { id, text } => (id, CodeEvent::Stdout(text)),
        KernelLine::Stderr { id, text } => (id, CodeEvent::Stderr(text)),
        KernelLine::Result { id, data, main } => (
            id,
            CodeEvent::Result(CodeResult {
                data,
                is_main: main,
            }),
        ),
        KernelLine::Error {
            id,
            name,
            value,
            traceback,
        } => (
            id,
            CodeEvent::Error(CodeError {
                name,
                value,
                traceback,
            }),
        ),
    };
    shared.forward(Some(&id), event).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip() {
        let info = CodeContext {
            id: "abc".into(),
            language: CodeLanguage::JavaScript,
            cwd: "/home/user".into(),
        };
        assert_eq!(
            parse_tag(&tag(&info, true)),
            Some(("abc".into(), CodeLanguage::JavaScript, true))
        );
        assert_eq!(parse_tag("platinum-code:x:cobol:named"), None);
        assert_eq!(parse_tag("session:x"), None);
    }

    fn drain(lines: &mut Lines) -> Vec<Line> {
        std::iter::from_fn(|| lines.next_line()).collect()
    }

    #[test]
    fn lines_are_split_and_partial_lines_kept() {
        let mut lines = Lines::new(100);
        lines.feed(b"{\"a\":1}\n{\"b\":2}\n{\"c\"");
        let got = drain(&mut lines);
        assert_eq!(got.len(), 2);
        assert_eq!(got[1], Line::Complete(BytesMut::from(&b"{\"b\":2}"[..])));
        assert_eq!(lines.pending(), 4);
        lines.feed(b":3}\n");
        assert_eq!(
            drain(&mut lines),
            [Line::Complete(BytesMut::from(&b"{\"c\":3}"[..]))]
        );
    }

    #[test]
    fn one_byte_chunks_are_scanned_once_and_memory_stays_bounded() {
        // 200k one-byte chunks without a newline: each byte is looked at once (the old splitter
        // rescanned the whole pending line per chunk: ~2e10 byte reads), and the over-long line
        // is dropped at the limit instead of growing without bound.
        const N: usize = 200_000;
        let started = std::time::Instant::now();
        let mut lines = Lines::new(64 * 1024);
        let mut too_long = 0;
        for _ in 0..N {
            lines.feed(b"x");
            for line in drain(&mut lines) {
                assert_eq!(line, Line::TooLong);
                too_long += 1;
            }
            assert!(lines.pending() <= 64 * 1024 + 1);
        }
        assert_eq!(too_long, 1, "an over-long line is reported once");
        assert!(
            lines.inspected <= N as u64,
            "{} bytes inspected",
            lines.inspected
        );
        // Its end, and the next line, come through intact.
        lines.feed(b"tail\n{\"ok\":1}\n");
        assert_eq!(
            drain(&mut lines),
            [Line::Complete(BytesMut::from(&b"{\"ok\":1}"[..]))]
        );
        // Same bound when the long line stays under the limit.
        let mut lines = Lines::new(MAX_LINE);
        for _ in 0..N {
            lines.feed(b"y");
            assert!(lines.next_line().is_none());
        }
        lines.feed(b"\n");
        assert!(matches!(lines.next_line(), Some(Line::Complete(l)) if l.len() == N));
        assert!(lines.inspected <= N as u64 + 1, "{}", lines.inspected);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn start_stderr_keeps_the_newest_bytes_and_says_so() {
        let mut tail = Tail::default();
        tail.push(b"hello ", 8);
        assert_eq!(tail.text(), "hello");
        tail.push(b"world", 8);
        assert_eq!(tail.text(), "[3 earlier bytes of stderr dropped] lo world");
        tail.push(&[b'z'; 20], 8);
        assert_eq!(tail.bytes.len(), 8);
        assert_eq!(tail.dropped, 23);
    }

    #[tokio::test]
    async fn lines_of_the_running_cell_reach_it_in_order() {
        let shared = Shared::default();
        let slot = Arc::new(Semaphore::new(1));
        let (tx, mut rx) = mpsc::channel(16);
        shared.begin("c1".into(), tx, slot.clone().try_acquire_owned().unwrap());
        for line in [
            r#"{"type":"count","id":"c1","n":3}"#,
            r#"{"type":"stdout","id":"old","text":"stale"}"#,
            r#"{"type":"stdout","id":"c1","text":"hi\n"}"#,
            r#"{"type":"result","id":"c1","data":{"text/plain":"2"},"main":true}"#,
            r#"{"type":"done","id":"c1"}"#,
        ] {
            dispatch(&shared, line.as_bytes()).await;
        }
        assert!(matches!(
            rx.recv().await,
            Some(Feed::Event(CodeEvent::ExecutionCount(3)))
        ));
        assert!(matches!(rx.recv().await, Some(Feed::Event(CodeEvent::Stdout(t))) if t == "hi\n"));
        assert!(
            matches!(rx.recv().await, Some(Feed::Event(CodeEvent::Result(r))) if r.is_main && r.data["text/plain"] == "2")
        );
        assert!(matches!(rx.recv().await, Some(Feed::Finished)));
        // `done` released the slot for the next cell.
        assert!(slot.try_acquire().is_ok());
    }
}
