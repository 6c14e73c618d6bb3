//! The virtio-serial port named [`VIRTIO_SERIAL_PORT_NAME`] (QEMU, where the VM must stay
//! migratable for snapshots).
//!
//! A virtio-serial port has no connections: while no host is attached, `read` returns 0 (end of
//! file) again and again until one attaches, and writes are discarded. So the port is one endless
//! byte stream, and the agent loops forever: scan for the host's magic, serve a session, tear the
//! session down (its streams end, its processes keep running), start over. A session ends on
//! * end of file: the host went away;
//! * a frame header that cannot be one: every valid length is below 16 MiB, so a frame's first
//!   byte is 0, while [`platinum_protocol::HOST_MAGIC`] starts with `0xff`. A host that attached
//!   before the agent saw the old one leave is noticed right at the frame boundary where its magic
//!   begins, and those bytes are handed to the next scan untouched (`FrameBoundaries`).
//!
//! The port is read and written with blocking calls on two dedicated threads, bridged to tokio by
//! channels (the kernel's readiness reporting for these ports is not something to lean on):
//! * the reader thread turns each end of file into `PortEvent::Closed` and then sleeps
//!   [`EOF_RETRY_DELAY`] before reading again, which paces the loop while no host is attached: it
//!   never spins;
//! * the writer thread writes what sessions send, tagged with the session's generation, and drops
//!   anything an ended session still had in flight, so it never lands after a newer session's
//!   magic.
//!
//! Each session takes the port's input exclusively for its lifetime (`ConnectionReader` holds
//! the lock) and returns what it did not consume when dropped, so the next one starts exactly
//! where the last one stopped.

use crate::agent::Agent;
use crate::transport::{run_session, wait_for};
use bytes::{Bytes, BytesMut};
use platinum_protocol::handshake::guest_handshake;
use platinum_protocol::{MAX_DATA_CHUNK, VIRTIO_SERIAL_PORT_NAME};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Mutex, OwnedMutexGuard, mpsc};
use tokio_util::sync::PollSender;
use tracing::{debug, error, info, warn};

/// Where the kernel lists virtio-serial ports and their names.
const PORTS_DIR: &str = "/sys/class/virtio-ports";

/// Pause after reading end of file before reading again.
pub const EOF_RETRY_DELAY: Duration = Duration::from_millis(30);

/// Chunks in flight between each port thread and the async side.
const CHANNEL_DEPTH: usize = 16;

/// What the reader thread saw on the port.
#[derive(Debug)]
enum PortEvent {
    /// Bytes from the host.
    Data(Bytes),
    /// End of file: no host is attached (any more).
    Closed,
}

/// The port's input, owned by one session at a time.
struct PortInput {
    events: mpsc::Receiver<PortEvent>,
    /// Bytes the previous session read but did not consume.
    leftover: Bytes,
}

/// The device node of the port named `name`, found through sysfs (there is no udev to make a
/// by-name link): `/sys/class/virtio-ports/vportNpM/name` → `/dev/vportNpM`.
pub fn find_port(name: &str) -> Option<PathBuf> {
    std::fs::read_dir(PORTS_DIR)
        .ok()?
        .flatten()
        .find_map(|entry| {
            let port_name = std::fs::read_to_string(entry.path().join("name")).ok()?;
            (port_name.trim() == name).then(|| Path::new("/dev").join(entry.file_name()))
        })
}

/// Waits for the agent's port to appear (its name arrives from the host some time after the
/// driver loads), then serves it forever. Returns only if the port fails.
pub async fn serve_when_available(agent: Arc<Agent>) {
    let device = wait_for("virtio-serial port", || find_port(VIRTIO_SERIAL_PORT_NAME)).await;
    let opened = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&device)
        .and_then(|port| {
            let writer = port.try_clone()?;
            Ok((port, writer))
        });
    let (reader, writer) = match opened {
        Ok(pair) => pair,
        Err(e) => {
            error!(device = %device.display(), error = %e, "cannot open the virtio-serial port");
            return;
        }
    };
    info!(device = %device.display(), "serving the virtio-serial port");
    let e = serve_port(agent, reader, writer).await;
    error!(device = %device.display(), error = %e, "virtio-serial port failed");
}

/// Serves sessions on a port read through `reader` and written through `writer` (usually the same
/// device opened twice), one after another, forever. Returns only when the port itself fails,
/// with the reason.
pub async fn serve_port(agent: Arc<Agent>, reader: File, writer: File) -> std::io::Error {
    let (event_tx, events) = mpsc::channel(CHANNEL_DEPTH);
    let (out_tx, out_rx) = mpsc::channel(CHANNEL_DEPTH);
    let generation = Arc::new(AtomicU64::new(0));
    let writer_generation = generation.clone();
    let threads = std::thread::Builder::new()
        .name("serial-read".into())
        .spawn(move || read_port(reader, event_tx))
        .and_then(|_| {
            std::thread::Builder::new()
                .name("serial-write".into())
                .spawn(move || write_port(writer, out_rx, &writer_generation))
        });
    if let Err(e) = threads {
        return e;
    }
    let input = Arc::new(Mutex::new(PortInput {
        events,
        leftover: Bytes::new(),
    }));
    loop {
        // From here on the writer thread drops whatever an earlier session still sends.
        let current = generation.fetch_add(1, Ordering::AcqRel) + 1;
        let mut reader = ConnectionReader::new(input.clone().lock_owned().await);
        let mut writer = ConnectionWriter {
            tx: PollSender::new(out_tx.clone()),
            generation: current,
        };
        let mut early = BytesMut::new();
        match guest_handshake(&mut reader, &mut writer, &mut early).await {
            Ok(()) => {
                reader.start_framing(early.freeze());
                run_session(agent.clone(), reader, writer).await;
            }
            // No host before the end of file: the reader thread's pause paces this loop.
            Err(e) if e.kind() == ErrorKind::UnexpectedEof => {}
            Err(e) if e.kind() == ErrorKind::BrokenPipe => return e,
            Err(e) => debug!(error = %e, "serial handshake failed"),
        }
    }
}

fn read_port(mut port: File, events: mpsc::Sender<PortEvent>) {
    let mut buf = vec![0u8; MAX_DATA_CHUNK];
    loop {
        let event = match port.read(&mut buf) {
            Ok(0) => PortEvent::Closed,
            Ok(n) => PortEvent::Data(Bytes::copy_from_slice(&buf[..n])),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                warn!(error = %e, "reading the serial port failed; no more sessions on it");
                return;
            }
        };
        let closed = matches!(event, PortEvent::Closed);
        if events.blocking_send(event).is_err() {
            return;
        }
        if closed {
            std::thread::sleep(EOF_RETRY_DELAY);
        }
    }
}

fn write_port(mut port: File, mut out: mpsc::Receiver<(u64, Bytes)>, generation: &AtomicU64) {
    while let Some((sent_by, bytes)) = out.blocking_recv() {
        if sent_by != generation.load(Ordering::Acquire) {
            debug!(len = bytes.len(), "dropped output of an ended session");
            continue;
        }
        // With no host attached the write fails or vanishes; either way the bytes are gone.
        if let Err(e) = port.write_all(&bytes) {
            debug!(error = %e, len = bytes.len(), "serial write dropped");
        }
    }
}

/// Tracks frame boundaries in the bytes a session reads, to stop at a header that cannot be one.
#[derive(Default)]
struct FrameBoundaries {
    /// Header bytes seen of the frame being read (0 at a boundary).
    header_len: usize,
    header: [u8; 4],
    /// Body bytes still to come of the current frame.
    body_left: u64,
}

impl FrameBoundaries {
    /// How many bytes of `data` belong to frames; stops before a frame header whose first byte is
    /// not 0 (a length of 16 MiB or more, which no frame has).
    fn admit(&mut self, data: &[u8]) -> usize {
        let mut i = 0;
        while i < data.len() {
            if self.body_left > 0 {
                let take = self.body_left.min((data.len() - i) as u64);
                self.body_left -= take;
                i += take as usize;
                continue;
            }
            if self.header_len == 0 && data[i] != 0 {
                return i;
            }
            self.header[self.header_len] = data[i];
            self.header_len += 1;
            i += 1;
            if self.header_len == self.header.len() {
                self.body_left = u64::from(u32::from_be_bytes(self.header));
                self.header_len = 0;
            }
        }
        i
    }
}

/// The reading side of one session. Holds the port's input until dropped, then gives back what
/// it did not deliver.
struct ConnectionReader {
    input: OwnedMutexGuard<PortInput>,
    pending: Bytes,
    /// The port reported end of file.
    ended: bool,
    /// Set once the handshake is done.
    frames: Option<FrameBoundaries>,
    /// A header that cannot be one is next: report end of stream, keep the bytes.
    stopped: bool,
}

impl ConnectionReader {
    fn new(mut input: OwnedMutexGuard<PortInput>) -> Self {
        let pending = std::mem::take(&mut input.leftover);
        Self {
            input,
            pending,
            ended: false,
            frames: None,
            stopped: false,
        }
    }

    /// Puts back the bytes the handshake read past the magic and starts tracking frames.
    fn start_framing(&mut self, early: Bytes) {
        if !early.is_empty() {
            let mut joined = BytesMut::with_capacity(early.len() + self.pending.len());
            joined.extend_from_slice(&early);
            joined.extend_from_slice(&self.pending);
            self.pending = joined.freeze();
        }
        self.frames = Some(FrameBoundaries::default());
    }
}

impl AsyncRead for ConnectionReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        if this.stopped {
            return Poll::Ready(Ok(()));
        }
        if this.pending.is_empty() && !this.ended {
            match ready!(this.input.events.poll_recv(cx)) {
                Some(PortEvent::Data(bytes)) => this.pending = bytes,
                Some(PortEvent::Closed) => this.ended = true,
                None => return Poll::Ready(Err(ErrorKind::BrokenPipe.into())),
            }
        }
        let mut n = this.pending.len().min(buf.remaining());
        if let Some(frames) = &mut this.frames {
            n = frames.admit(&this.pending[..n]);
            if n == 0 && !this.pending.is_empty() {
                debug!("a host magic (or garbage) where a frame should start; ending the session");
                this.stopped = true;
                return Poll::Ready(Ok(()));
            }
        }
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl Drop for ConnectionReader {
    fn drop(&mut self) {
        self.input.leftover = std::mem::take(&mut self.pending);
    }
}

/// The writing side of one session: hands bytes, tagged with its generation, to the writer thread.
struct ConnectionWriter {
    tx: PollSender<(u64, Bytes)>,
    generation: u64,
}

impl AsyncWrite for ConnectionWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let gone = |_| std::io::Error::from(ErrorKind::BrokenPipe);
        ready!(self.tx.poll_reserve(cx)).map_err(gone)?;
        let item = (self.generation, Bytes::copy_from_slice(buf));
        self.tx.send_item(item).map_err(gone)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // The writer thread writes everything it is handed, in order; there is nothing to wait for.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_boundaries_stop_only_where_a_header_cannot_be() {
        let mut frames = FrameBoundaries::default();
        // A 7-byte frame, then the host magic.
        let mut stream = vec![0, 0, 0, 7, 1, 2, 3, 4, 5, 6, 7];
        stream.extend_from_slice(platinum_protocol::HOST_MAGIC);
        assert_eq!(frames.admit(&stream), 11);
        assert_eq!(frames.admit(&stream[11..]), 0);

        // The same, split mid-header and mid-body; 0xff inside a body is just data.
        let mut frames = FrameBoundaries::default();
        assert_eq!(frames.admit(&[0, 0]), 2);
        assert_eq!(frames.admit(&[0, 3, 0xff]), 3);
        assert_eq!(
            frames.admit(&[0xff, 0xff, 0, 0, 0, 0]),
            6,
            "a zero-length frame is the codec's problem"
        );
        assert_eq!(frames.admit(&[0xff]), 0);
    }
}
