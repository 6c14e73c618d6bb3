//! The bounded, ordered log of one process's output, and the readers that follow it.
//!
//! Every byte a process writes gets an absolute offset (stdout and stderr share one sequence, in
//! the order the pump read them). The ring keeps the newest `capacity` bytes as `(channel, bytes)`
//! chunks; older bytes fall out of the front.
//!
//! Back-pressure rule: a [`RingReader`] is an *attached* reader (an exec or attach stream). The pump
//! that appends waits while appending would push bytes an attached reader has not read yet out of
//! the ring, so a foreground exec never loses output and the stream's flow control throttles the
//! process end to end. With no attached reader nothing ever waits: old output is simply dropped,
//! and a later replay reports how much is missing.

use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use tokio::sync::Notify;

/// Chunks of the same channel smaller than this are merged, so a process that writes a byte at a
/// time does not cost a chunk header per byte.
const COALESCE_BELOW: usize = 4096;

/// Where a new reader starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    /// The oldest byte still held (replay).
    Oldest,
    /// The next byte the process writes.
    Newest,
}

/// What a reader gets next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Bytes on a channel, in order.
    Data {
        /// Channel the bytes were written on.
        channel: u8,
        /// The bytes.
        bytes: Bytes,
    },
    /// The process's output has ended and the reader has read all of it.
    End,
}

struct Chunk {
    offset: u64,
    channel: u8,
    bytes: Bytes,
}

impl Chunk {
    fn end(&self) -> u64 {
        self.offset + self.bytes.len() as u64
    }
}

#[derive(Default)]
struct State {
    chunks: VecDeque<Chunk>,
    /// Offset of the oldest byte still held.
    start: u64,
    /// Offset one past the newest byte.
    end: u64,
    /// No more output will come.
    closed: bool,
    /// Attached readers and their positions.
    readers: HashMap<u64, u64>,
    next_reader: u64,
}

impl State {
    fn slowest_reader(&self) -> Option<u64> {
        self.readers.values().copied().min()
    }

    fn push(&mut self, channel: u8, bytes: Bytes, capacity: usize) {
        let len = bytes.len() as u64;
        match self.chunks.back_mut() {
            Some(last)
                if last.channel == channel && last.bytes.len() + bytes.len() <= COALESCE_BELOW =>
            {
                let mut merged = BytesMut::with_capacity(last.bytes.len() + bytes.len());
                merged.extend_from_slice(&last.bytes);
                merged.extend_from_slice(&bytes);
                last.bytes = merged.freeze();
            }
            _ => self.chunks.push_back(Chunk {
                offset: self.end,
                channel,
                bytes,
            }),
        }
        self.end += len;
        while self.end - self.start > capacity as u64 {
            let excess = (self.end - self.start - capacity as u64) as usize;
            let Some(front) = self.chunks.front_mut() else {
                break;
            };
            if front.bytes.len() <= excess {
                self.start = front.end();
                self.chunks.pop_front();
            } else {
                front.bytes = front.bytes.slice(excess..);
                front.offset += excess as u64;
                self.start = front.offset;
            }
        }
    }

    /// The bytes at `pos` up to the end of the chunk holding it.
    fn read_at(&self, pos: u64) -> Option<(u8, Bytes)> {
        let idx = self.chunks.partition_point(|c| c.end() <= pos);
        let chunk = self.chunks.get(idx)?;
        let skip = pos.checked_sub(chunk.offset)? as usize;
        Some((chunk.channel, chunk.bytes.slice(skip..)))
    }
}

/// A process's output log. Shared between the pump that appends and the readers.
pub struct OutputRing {
    capacity: usize,
    state: Mutex<State>,
    /// Wakes readers: new bytes, or the end of output.
    data: Notify,
    /// Wakes the pump: a reader advanced or went away.
    space: Notify,
}

impl OutputRing {
    /// An empty ring holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            capacity,
            state: Mutex::default(),
            data: Notify::new(),
            space: Notify::new(),
        })
    }

    /// Most bytes one append may carry (the pump reads in pieces of at most this size).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends output, waiting first while an attached reader would lose unread bytes.
    pub async fn append(&self, channel: u8, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let len = bytes.len() as u64;
        loop {
            let mut space = pin!(self.space.notified());
            space.as_mut().enable();
            {
                let mut state = self.lock();
                let must_wait = match state.slowest_reader() {
                    Some(pos) => pos < state.end && state.end + len - pos > self.capacity as u64,
                    None => false,
                };
                if !must_wait {
                    state.push(channel, bytes, self.capacity);
                    drop(state);
                    self.data.notify_waiters();
                    return;
                }
            }
            space.await;
        }
    }

    /// Marks the end of output; readers get [`Output::End`] once they have read everything.
    pub fn close(&self) {
        self.lock().closed = true;
        self.data.notify_waiters();
    }

    /// Attaches a reader. Returns it and the number of bytes that fell out of the ring before its
    /// first byte (non-zero only when replaying from [`StartAt::Oldest`]).
    pub fn attach(self: &Arc<Self>, at: StartAt) -> (RingReader, u64) {
        let mut state = self.lock();
        let (pos, lost) = match at {
            StartAt::Oldest => (state.start, state.start),
            StartAt::Newest => (state.end, 0),
        };
        let id = state.next_reader;
        state.next_reader += 1;
        state.readers.insert(id, pos);
        drop(state);
        (
            RingReader {
                ring: self.clone(),
                id,
                pos,
            },
            lost,
        )
    }
}

/// An attached reader. Dropping it detaches, which may let a waiting pump continue.
pub struct RingReader {
    ring: Arc<OutputRing>,
    id: u64,
    pos: u64,
}

impl RingReader {
    /// The next piece of output, waiting for the process to write it.
    pub async fn next(&mut self) -> Output {
        loop {
            let mut data = pin!(self.ring.data.notified());
            data.as_mut().enable();
            {
                let mut state = self.ring.lock();
                // An attached reader is never overtaken (see the module docs); clamp anyway.
                self.pos = self.pos.max(state.start);
                if let Some((channel, bytes)) = state.read_at(self.pos) {
                    self.pos += bytes.len() as u64;
                    state.readers.insert(self.id, self.pos);
                    drop(state);
                    self.ring.space.notify_waiters();
                    return Output::Data { channel, bytes };
                }
                if state.closed {
                    return Output::End;
                }
            }
            data.await;
        }
    }
}

impl Drop for RingReader {
    fn drop(&mut self) {
        self.ring.lock().readers.remove(&self.id);
        self.ring.space.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn data(channel: u8, s: &str) -> Output {
        Output::Data {
            channel,
            bytes: Bytes::copy_from_slice(s.as_bytes()),
        }
    }

    #[tokio::test]
    async fn readers_see_chunks_in_order_then_end() {
        let ring = OutputRing::new(1024);
        let (mut r, lost) = ring.attach(StartAt::Oldest);
        assert_eq!(lost, 0);
        ring.append(1, Bytes::from_static(b"out")).await;
        ring.append(2, Bytes::from_static(b"err")).await;
        ring.append(2, Bytes::from_static(b"!")).await;
        ring.close();
        assert_eq!(r.next().await, data(1, "out"));
        assert_eq!(
            r.next().await,
            data(2, "err!"),
            "small chunks of one channel coalesce"
        );
        assert_eq!(r.next().await, Output::End);
    }

    #[tokio::test]
    async fn without_readers_old_output_falls_out_and_replay_reports_the_loss() {
        let ring = OutputRing::new(8);
        ring.append(1, Bytes::from_static(b"0123456789")).await;
        ring.append(2, Bytes::from_static(b"abc")).await;
        ring.close();
        let (mut r, lost) = ring.attach(StartAt::Oldest);
        assert_eq!(lost, 5);
        assert_eq!(r.next().await, data(1, "56789"));
        assert_eq!(r.next().await, data(2, "abc"));
        assert_eq!(r.next().await, Output::End);
        let (mut fresh, lost) = ring.attach(StartAt::Newest);
        assert_eq!(lost, 0);
        assert_eq!(fresh.next().await, Output::End);
    }

    #[tokio::test]
    async fn an_attached_reader_holds_the_pump_back_and_loses_nothing() {
        let ring = OutputRing::new(8);
        let (mut r, _) = ring.attach(StartAt::Oldest);
        ring.append(1, Bytes::from_static(b"aaaaaa")).await;
        let mut pump = {
            let ring = ring.clone();
            tokio::spawn(async move {
                ring.append(2, Bytes::from_static(b"bbbbbb")).await;
                ring.close();
            })
        };
        // The second append would evict unread bytes, so it must wait for the reader.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), &mut pump)
                .await
                .is_err()
        );
        assert_eq!(r.next().await, data(1, "aaaaaa"));
        assert_eq!(r.next().await, data(2, "bbbbbb"));
        assert_eq!(r.next().await, Output::End);
        pump.await.expect("pump task");
    }

    #[tokio::test]
    async fn detaching_releases_a_waiting_pump() {
        let ring = OutputRing::new(8);
        let (r, _) = ring.attach(StartAt::Oldest);
        ring.append(1, Bytes::from_static(b"aaaaaa")).await;
        let pump = {
            let ring = ring.clone();
            tokio::spawn(async move { ring.append(1, Bytes::from_static(b"bbbbbbbbbbbbb")).await })
        };
        tokio::task::yield_now().await;
        drop(r);
        tokio::time::timeout(Duration::from_secs(5), pump)
            .await
            .expect("pump released")
            .expect("pump task");
        let (mut replay, lost) = ring.attach(StartAt::Oldest);
        assert_eq!(lost, 11);
        assert_eq!(replay.next().await, data(1, "bbbbbbbb"));
    }
}
