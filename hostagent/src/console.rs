//! The guest's serial console on disk, bounded, and reading the end of it (or of a VMM log) to
//! explain why a VM died.
//!
//! Writing: QEMU does not write the console log itself (a guest printing forever would fill
//! the host's disk). It serves the serial port on a Unix socket ([`socket_path`]), and
//! [`ConsoleCapture`] reads that socket into a [`CappedLog`]: `console.log` never exceeds
//! [`CONSOLE_LOG_CAP`] bytes. When a write would pass the cap, the file is rewritten to hold
//! only the newest half of the cap, after a one-line note of how many older bytes were dropped
//! (written to a temporary file, then renamed over `console.log`). The capture reconnects when
//! the connection drops (the VMM serves one client at a time and keeps serving), and stops once
//! the VMM has exited and the last bytes were read. VMMs drop serial output while no client is
//! connected, so nothing ever blocks the guest on the host's reading. (The Cloud Hypervisor
//! driver still has CH write the file directly: moving it to `--serial socket=` also needs the
//! snapshot re-homing of `config.json` to accept a socket serial.)
//!
//! Reading: logs can be large, so [`tail`] never reads more than [`MAX_TAIL_BYTES`] from the end
//! of the file.

use std::fs::File;
use std::future::Future;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::error::{IoContext, Result};

/// Largest `console.log`, bytes; on reaching it the newest half is kept.
pub const CONSOLE_LOG_CAP: u64 = 8 << 20;

/// Name of the console socket inside a VM directory.
pub const SOCKET_NAME: &str = "console.sock";

/// The console socket of the VM whose directory is `dir`.
pub fn socket_path(dir: &Path) -> PathBuf {
    dir.join(SOCKET_NAME)
}

/// Pause between reconnection attempts.
const RECONNECT: Duration = Duration::from_millis(100);

/// An append-only log file that never grows past a cap (see the module docs).
#[derive(Debug)]
pub struct CappedLog {
    path: PathBuf,
    file: File,
    len: u64,
    /// Length of the note at the start of the file (0 before the first trim).
    note_len: u64,
    cap: u64,
    dropped: u64,
}

/// Smallest cap a [`CappedLog`] takes (room for the note and some text).
const MIN_CAP: u64 = 1024;
/// Room reserved for the note in the newest half.
const NOTE_ROOM: u64 = 160;

fn open_log(path: &Path, truncate: bool) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(!truncate)
        .write(true)
        .truncate(truncate)
        .mode(0o600)
        .open(path)
}

impl CappedLog {
    /// Creates (or empties) the log at `path`, mode 0600; `cap` is raised to 1 KiB if smaller.
    pub fn create(path: &Path, cap: u64) -> Result<CappedLog> {
        let file = open_log(path, true).ctx(|| format!("creating {}", path.display()))?;
        Ok(CappedLog {
            path: path.to_path_buf(),
            file,
            len: 0,
            note_len: 0,
            cap: cap.max(MIN_CAP),
            dropped: 0,
        })
    }

    /// Bytes in the file now.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing is in the file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes dropped so far to stay under the cap.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Appends `data`, first dropping the oldest bytes when it would pass the cap.
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        if self.len + data.len() as u64 <= self.cap {
            self.file
                .write_all(data)
                .ctx(|| format!("writing {}", self.path.display()))?;
            self.len += data.len() as u64;
            return Ok(());
        }
        self.rotate(data)
            .ctx(|| format!("trimming {}", self.path.display()))
    }

    /// Rewrites the file as a note plus the newest bytes of (file + `data`), at most half the cap
    /// in all.
    fn rotate(&mut self, data: &[u8]) -> std::io::Result<()> {
        // The old note is not kept: its count is carried into the new one.
        let total = self.len - self.note_len + data.len() as u64;
        let room = self.cap / 2 - NOTE_ROOM;
        let keep = total.min(room);
        let from_file = keep.saturating_sub(data.len() as u64);
        let from_data = (keep - from_file) as usize;
        self.dropped += total - keep;
        let mut kept = Vec::with_capacity(keep as usize);
        if from_file > 0 {
            let mut f = File::open(&self.path)?;
            f.seek(SeekFrom::Start(self.len - from_file))?;
            f.take(from_file).read_to_end(&mut kept)?;
        }
        kept.extend_from_slice(&data[data.len() - from_data..]);
        let note = format!(
            "[platinum: {} earlier console bytes dropped; the log keeps its newest {} bytes]\n",
            self.dropped,
            self.cap / 2
        );
        let tmp = self.path.with_extension("log.tmp");
        let mut out = open_log(&tmp, true)?;
        out.write_all(note.as_bytes())?;
        out.write_all(&kept)?;
        drop(out);
        std::fs::rename(&tmp, &self.path)?;
        self.file = open_log(&self.path, false)?;
        self.note_len = note.len() as u64;
        self.len = self.note_len + kept.len() as u64;
        Ok(())
    }
}

/// Copies a VMM's serial console socket into a [`CappedLog`] (see the module docs).
#[derive(Debug)]
pub struct ConsoleCapture {
    socket: PathBuf,
    log: CappedLog,
    stream: UnixStream,
}

impl ConsoleCapture {
    /// Creates the log and connects to the socket, retrying until `timeout`: the VMM creates the
    /// socket while it starts, and output written before this returns is lost, so a driver
    /// connects before it lets the guest run.
    pub async fn connect(
        socket: &Path,
        log: &Path,
        cap: u64,
        timeout: Duration,
    ) -> Result<ConsoleCapture> {
        let log = CappedLog::create(log, cap)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match UnixStream::connect(socket).await {
                Ok(stream) => {
                    return Ok(ConsoleCapture {
                        socket: socket.to_path_buf(),
                        log,
                        stream,
                    });
                }
                Err(e) if tokio::time::Instant::now() >= deadline => {
                    return Err(crate::Error::io(
                        format!("connecting to the console socket {}", socket.display()),
                        e,
                    ));
                }
                Err(_) => tokio::time::sleep(RECONNECT / 5).await,
            }
        }
    }

    /// Copies console output until `vmm_exited` resolves and the connection has ended, then
    /// returns the log. Run it as its own task.
    pub async fn run(mut self, vmm_exited: impl Future<Output = ()>) -> CappedLog {
        let mut vmm_exited = std::pin::pin!(vmm_exited);
        let mut buf = vec![0u8; 64 * 1024];
        let mut stream = Some(self.stream);
        loop {
            if let Some(s) = stream.as_mut() {
                // Read to the end even once the VMM exited: its last words are in the socket.
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => stream = None,
                    Ok(n) => {
                        if let Err(e) = self.log.write(&buf[..n]) {
                            tracing::warn!(error = %e, "console log write failed; console output is dropped");
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                () = &mut vmm_exited => break,
                () = tokio::time::sleep(RECONNECT) => {
                    stream = UnixStream::connect(&self.socket).await.ok();
                }
            }
        }
        self.log
    }
}

/// Upper bound on the bytes [`tail`] reads, whatever `lines` asks for.
pub const MAX_TAIL_BYTES: u64 = 256 * 1024;

/// Bytes budgeted per requested line before the [`MAX_TAIL_BYTES`] cap.
const BYTES_PER_LINE: u64 = 512;

/// The last `lines` lines of the file at `path` (lossy UTF-8, `\n`-joined, no trailing newline).
/// A file that does not exist yet reads as empty: a VM that died before writing anything has
/// nothing to show.
pub fn tail(path: &Path, lines: usize) -> Result<String> {
    if lines == 0 {
        return Ok(String::new());
    }
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(crate::Error::io(format!("opening {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let budget = (lines as u64)
        .saturating_mul(BYTES_PER_LINE)
        .min(MAX_TAIL_BYTES);
    let start = len.saturating_sub(budget);
    file.seek(SeekFrom::Start(start))
        .ctx(|| format!("seeking in {}", path.display()))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.take(budget)
        .read_to_end(&mut buf)
        .ctx(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    let mut all: Vec<&str> = text.lines().collect();
    // A read that started mid-file may begin mid-line; drop that partial first line.
    if start > 0 && all.len() > 1 {
        all.remove(0);
    }
    let skip = all.len().saturating_sub(lines);
    Ok(all[skip..].join("\n"))
}

/// The last `lines` non-empty lines of a console tail as one line for an error message: joined
/// with ` | `, control characters removed (a terminal escape's ESC among them), at most about
/// `max_chars` characters (the newest kept). A kernel panic's own line leads when the last lines
/// are its stack trace. `None` when the guest printed nothing.
pub fn last_words(tail: &str, lines: usize, max_chars: usize) -> Option<String> {
    let said: Vec<String> = tail
        .lines()
        .map(|l| l.chars().filter(|c| !c.is_control()).collect::<String>())
        .filter(|l| !l.trim().is_empty())
        .collect();
    if said.is_empty() {
        return None;
    }
    let from = said.len().saturating_sub(lines);
    let newest = newest_chars(&said[from..].join(" | "), max_chars);
    match said[..from]
        .iter()
        .rposition(|l| l.contains("Kernel panic"))
    {
        Some(i) => Some(format!(
            "{} | … | {newest}",
            newest_chars(&said[i], max_chars / 2)
        )),
        None => Some(newest),
    }
}

/// The last `max` characters of `s`, with `…` in front when some were cut.
fn newest_chars(s: &str, max: usize) -> String {
    let count = s.chars().count();
    if count <= max {
        return s.to_string();
    }
    format!("…{}", s.chars().skip(count - max).collect::<String>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write");
        assert_eq!(tail(&path, 3).expect("tail"), "line 97\nline 98\nline 99");
        assert_eq!(tail(&path, 0).expect("tail"), "");
        assert_eq!(tail(&path, 1000).expect("tail").lines().count(), 100);
    }

    #[test]
    fn the_capped_log_keeps_the_newest_bytes_under_a_flood() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let cap = 4096;
        let mut log = CappedLog::create(&path, cap).expect("create");
        log.write(b"boot line\n").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"boot line\n");
        // 1 MiB in chunks of every size: the file never passes the cap.
        let mut written = 10u64;
        for i in 0..2000u64 {
            let chunk = format!("{i:06} {}\n", "x".repeat((i % 700) as usize));
            log.write(chunk.as_bytes()).expect("write");
            written += chunk.len() as u64;
            let on_disk = std::fs::metadata(&path).expect("stat").len();
            assert!(on_disk <= cap, "{on_disk} bytes after chunk {i}");
            assert_eq!(on_disk, log.len());
        }
        // One write bigger than the cap.
        let big = vec![b'y'; 3 * cap as usize];
        log.write(&big).expect("write");
        written += big.len() as u64;
        log.write(b"\nlast line\n").expect("write");
        written += 11;
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.len() as u64 <= cap);
        assert!(text.starts_with("[platinum: "), "{}", &text[..80]);
        assert!(text.ends_with("yyy\nlast line\n"));
        // What is kept plus what was dropped is everything written (the note aside).
        let note = text.lines().next().expect("note").len() as u64 + 1;
        assert_eq!(log.dropped() + log.len() - note, written);
        assert_eq!(tail(&path, 1).expect("tail"), "last line");
        assert!(!dir.path().join("console.log.tmp").exists());
    }

    #[tokio::test]
    async fn a_capture_reconnects_and_stops_after_the_vmm_exits() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (sock, log) = (socket_path(dir.path()), dir.path().join("console.log"));
        let listener = tokio::net::UnixListener::bind(&sock).expect("bind");
        let (exited_tx, exited_rx) = tokio::sync::oneshot::channel::<()>();
        let capture = tokio::spawn({
            let (sock, log) = (sock.clone(), log.clone());
            async move {
                let c = ConsoleCapture::connect(&sock, &log, 1024, Duration::from_secs(5))
                    .await
                    .expect("connect");
                c.run(async {
                    let _ = exited_rx.await;
                })
                .await
            }
        });
        use tokio::io::AsyncWriteExt;
        // First client: a flood far over the cap, then the VMM drops the connection.
        let (mut first, _) = listener.accept().await.expect("accept");
        for _ in 0..100 {
            first.write_all(&[b'a'; 1000]).await.expect("write");
        }
        first.write_all(b"\nfirst\n").await.expect("write");
        drop(first);
        // The capture comes back on its own.
        let (mut second, _) = listener.accept().await.expect("reconnect");
        second.write_all(b"second\n").await.expect("write");
        exited_tx.send(()).expect("signal exit");
        second.write_all(b"last words\n").await.expect("write");
        drop(second);
        let log_after = tokio::time::timeout(Duration::from_secs(5), capture)
            .await
            .expect("the capture ends after the VMM exited")
            .expect("join");
        assert!(log_after.len() <= 1024);
        assert!(log_after.dropped() > 0);
        assert_eq!(tail(&log, 3).expect("tail"), "first\nsecond\nlast words");
    }

    #[test]
    fn last_words_are_the_newest_clean_lines() {
        let tail = "booting\n\n[    1.2] Kernel panic - not syncing: Attempted to kill init!\x1b[0m\n\r\n[    1.3] Rebooting in 1 seconds..\n";
        assert_eq!(
            last_words(tail, 2, 400).as_deref(),
            Some(
                "[    1.2] Kernel panic - not syncing: Attempted to kill init![0m | [    1.3] Rebooting in 1 seconds.."
            )
        );
        assert_eq!(
            last_words(tail, 1, 10).as_deref(),
            Some("…t![0m | … | … seconds..")
        );
        assert_eq!(last_words("\n \n\x07\n", 3, 400), None);
        let trace = "[ 2.30] Kernel panic - not syncing: VFS: Unable to mount root fs\n[ 2.31]  dump_stack\n[ 2.32]  </TASK>\n[ 2.33] Kernel Offset: disabled\n";
        assert_eq!(
            last_words(trace, 2, 400).as_deref(),
            Some(
                "[ 2.30] Kernel panic - not syncing: VFS: Unable to mount root fs | … | [ 2.32]  </TASK> | [ 2.33] Kernel Offset: disabled"
            )
        );
        assert_eq!(last_words("", 3, 400), None);
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(tail(&dir.path().join("absent"), 5).expect("tail"), "");
    }

    #[test]
    fn huge_files_are_read_only_from_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.log");
        let mut text = "x".repeat(2 * MAX_TAIL_BYTES as usize);
        text.push_str("\nlast line\n");
        std::fs::write(&path, text).expect("write");
        let out = tail(&path, 1_000_000).expect("tail");
        assert!(out.len() as u64 <= MAX_TAIL_BYTES);
        assert!(out.ends_with("last line"));
    }

    #[test]
    fn partial_first_line_is_dropped_and_bad_utf8_is_lossy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let mut bytes = b"a".repeat(2000);
        bytes.extend_from_slice(b"\nok \xff\nend\n");
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(tail(&path, 2).expect("tail"), "ok \u{fffd}\nend");
    }
}
