//! Many request streams over one byte stream.
//!
//! One reader task decodes frames and routes them to per-stream queues; one writer task encodes
//! everything the streams send, in order. `DATA` is flow-controlled per stream and direction: a
//! sender may have at most [`INITIAL_WINDOW`] unacknowledged bytes in flight, and the receiver hands
//! credit back as the application consumes them ([`StreamReceiver::recv`]). A stream whose reader
//! stalls therefore stops its own sender and nobody else. Messages (`OPEN`, `MSG`) are small and not
//! flow-controlled.
//!
//! Ownership: a stream is torn down when both of its halves are dropped. If the local side never
//! sent `CLOSE`, the drop sends `RESET`, so an abandoned request never leaves the peer waiting.
//! When the connection fails, every stream's pending and future operations fail with
//! [`MuxError::ConnectionClosed`].
//!
//! # A hostile peer
//!
//! The host treats the guest as hostile ([`Limits::host`]):
//! - What waits unread is bounded: per stream, [`MAX_STREAM_MESSAGE_BYTES`] of messages; per
//!   connection, [`MAX_CONNECTION_QUEUED_BYTES`] of everything (messages and `DATA`). Messages have
//!   no flow control, so a backlog is not the peer's fault alone (the local reader may be slow):
//!   the stream that overflows is reset with [`MuxError::Backlog`] and the connection goes on.
//! - Breaking the protocol closes the whole connection with a reason that starts with
//!   `protocol violation: ` ([`Mux::violation`] tells it from other closes): a guest opening a
//!   stream (only the host opens streams), `DATA` past the credit granted, `CREDIT` that would
//!   raise the peer's window above [`INITIAL_WINDOW`] (more than it was ever sent). Bytes that
//!   do not parse as frames close the connection as a read failure, not a violation: on
//!   virtio-serial, stale bytes of an earlier session can legitimately reach a new one.
//! - Waiting for send credit has a deadline ([`CREDIT_WAIT`]): a peer that stops granting credit
//!   fails the send with [`MuxError::Timeout`] instead of hanging it.
//!
//! The guest side ([`Limits::guest`]) keeps its queues unbounded and waits for credit as long as
//! it takes: the host is trusted, and a slow host reader must never break a guest stream.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::frame::{
    Frame, FrameCodec, FrameError, FrameKind, HEADER_LEN, MAX_DATA_CHUNK, MAX_FRAME_LEN,
};

/// Bytes of `DATA` a sender may have in flight per stream before the receiver grants more.
pub const INITIAL_WINDOW: u32 = 1024 * 1024;

/// Credit is handed back in batches of at least this many consumed bytes.
const CREDIT_BATCH: u32 = INITIAL_WINDOW / 4;

/// Most bytes of messages (`MSG` payloads, `EOF` and `CLOSE` markers, each counted with
/// [`QUEUE_ENTRY_OVERHEAD`]) one stream may hold unread on the host before it is reset.
pub const MAX_STREAM_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

/// Most bytes one connection may hold unread on the host across all its streams: messages as
/// counted for [`MAX_STREAM_MESSAGE_BYTES`] plus `DATA` (payload and [`QUEUE_ENTRY_OVERHEAD`]).
/// `DATA` alone is bounded per stream by credit, but not across streams.
pub const MAX_CONNECTION_QUEUED_BYTES: usize = 64 * 1024 * 1024;

/// Bytes every queued item counts for beyond its payload (the bookkeeping of an empty `MSG` or a
/// one-byte `DATA` is not free).
pub const QUEUE_ENTRY_OVERHEAD: usize = 32;

/// Longest the host waits for send credit on one stream without any arriving.
pub const CREDIT_WAIT: Duration = Duration::from_secs(60);

/// Prefix of the close reason of a connection the peer broke the protocol on.
pub const VIOLATION_PREFIX: &str = "protocol violation: ";

/// Which end of the connection this is; decides stream id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd stream ids.
    Host,
    /// Opens even stream ids.
    Guest,
}

/// What a connection tolerates from its peer. [`Mux::new`] picks [`Limits::host`] or
/// [`Limits::guest`] by role; [`Mux::with_limits`] takes others (tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whether the peer may open streams.
    pub accept_streams: bool,
    /// Most message bytes one stream may hold unread (see [`MAX_STREAM_MESSAGE_BYTES`]).
    pub stream_message_bytes: usize,
    /// Most bytes the connection may hold unread (see [`MAX_CONNECTION_QUEUED_BYTES`]).
    pub connection_bytes: usize,
    /// Longest wait for send credit without progress; `None` waits for ever.
    pub credit_wait: Option<Duration>,
}

impl Limits {
    /// The host's side: the guest opens nothing, queues are bounded, credit waits end.
    pub fn host() -> Self {
        Limits {
            accept_streams: false,
            stream_message_bytes: MAX_STREAM_MESSAGE_BYTES,
            connection_bytes: MAX_CONNECTION_QUEUED_BYTES,
            credit_wait: Some(CREDIT_WAIT),
        }
    }

    /// The guest's side: the host opens streams, and is trusted not to flood them.
    pub fn guest() -> Self {
        Limits {
            accept_streams: true,
            stream_message_bytes: usize::MAX,
            connection_bytes: usize::MAX,
            credit_wait: None,
        }
    }

    /// The limits of a side by its role.
    pub fn for_role(role: Role) -> Self {
        match role {
            Role::Host => Limits::host(),
            Role::Guest => Limits::guest(),
        }
    }
}

/// Failures of the multiplexer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MuxError {
    /// The underlying connection is gone. When the peer broke the protocol, the reason starts
    /// with [`VIOLATION_PREFIX`].
    #[error("guest connection closed: {0}")]
    ConnectionClosed(Arc<str>),
    /// The peer aborted this stream.
    #[error("stream reset by peer: {0}")]
    StreamReset(String),
    /// This side already closed or reset the stream.
    #[error("stream already closed")]
    StreamClosed,
    /// The peer broke the protocol on this stream.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// More was waiting unread on this stream (or the connection) than the limits allow; the
    /// stream was reset.
    #[error("stream backlog over its limit: {0}")]
    Backlog(String),
    /// The peer granted no send credit within the deadline.
    #[error("timed out: {0}")]
    Timeout(String),
}

impl MuxError {
    /// True when the connection closed because the peer broke the protocol.
    pub fn is_violation(&self) -> bool {
        matches!(self, MuxError::ConnectionClosed(reason) if reason.starts_with(VIOLATION_PREFIX))
    }
}

/// Something received on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound {
    /// A JSON message.
    Msg(Bytes),
    /// Bytes on a channel.
    Data {
        /// Channel number.
        channel: u8,
        /// The bytes.
        bytes: Bytes,
    },
    /// End of a channel.
    Eof {
        /// Channel number.
        channel: u8,
    },
}

enum Event {
    Frame(Inbound),
    Closed,
    Failed(MuxError),
}

impl Event {
    /// What this event counts for while it waits unread: (message bytes, connection bytes).
    fn cost(&self) -> (usize, usize) {
        match self {
            Event::Frame(Inbound::Msg(m)) => {
                let c = m.len() + QUEUE_ENTRY_OVERHEAD;
                (c, c)
            }
            Event::Frame(Inbound::Eof { .. }) | Event::Closed => {
                (QUEUE_ENTRY_OVERHEAD, QUEUE_ENTRY_OVERHEAD)
            }
            Event::Frame(Inbound::Data { bytes, .. }) => (0, bytes.len() + QUEUE_ENTRY_OVERHEAD),
            Event::Failed(_) => (0, 0),
        }
    }
}

/// Adds `n` to `counter` unless that would take it past `limit`.
fn charge(counter: &AtomicUsize, n: usize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
            q.checked_add(n).filter(|total| *total <= limit)
        })
        .is_ok()
}

struct StreamState {
    tx: mpsc::UnboundedSender<Event>,
    /// Credit for what this side may send.
    send_credit: Semaphore,
    /// Credit the peer still has for sending to us; going negative is a protocol violation.
    recv_budget: AtomicI64,
    failure: Mutex<Option<MuxError>>,
    /// Message bytes waiting unread (see [`Event::cost`]).
    queued_messages: AtomicUsize,
    /// The peer sent `CLOSE`; what it sends on this stream afterwards is dropped.
    peer_closed: AtomicBool,
}

impl StreamState {
    fn fail(&self, err: MuxError) {
        let mut f = self.failure.lock().expect("stream failure lock");
        if f.is_none() {
            *f = Some(err.clone());
        }
        drop(f);
        self.send_credit.close();
        let _ = self.tx.send(Event::Failed(err));
    }

    fn failure(&self) -> MuxError {
        self.failure
            .lock()
            .expect("stream failure lock")
            .clone()
            .unwrap_or(MuxError::StreamClosed)
    }
}

/// Why a connection closed.
struct Close {
    reason: Arc<str>,
    /// The peer broke the protocol.
    violation: bool,
}

struct Shared {
    out: mpsc::UnboundedSender<Frame>,
    streams: Mutex<HashMap<u32, Arc<StreamState>>>,
    next_id: AtomicU32,
    closed: Mutex<Option<Close>>,
    cancel: CancellationToken,
    limits: Limits,
    /// Bytes waiting unread across all streams (see [`Event::cost`]).
    queued: AtomicUsize,
}

/// Room for a message in one frame: the frame limit less the stream id and kind.
const MAX_MESSAGE_LEN: usize = MAX_FRAME_LEN - HEADER_LEN;

/// Refuses a message that cannot travel in one frame. Without this check the writer task would
/// fail to encode it and take the whole connection down with it.
fn check_message_len(len: usize) -> Result<(), MuxError> {
    if len > MAX_MESSAGE_LEN {
        return Err(MuxError::Protocol(format!(
            "message of {len} bytes exceeds the frame limit of {MAX_MESSAGE_LEN}"
        )));
    }
    Ok(())
}

impl Shared {
    fn send(&self, frame: Frame) -> Result<(), MuxError> {
        self.out.send(frame).map_err(|_| self.connection_error())
    }

    fn connection_error(&self) -> MuxError {
        let reason = self
            .closed
            .lock()
            .expect("mux closed lock")
            .as_ref()
            .map(|c| c.reason.clone());
        MuxError::ConnectionClosed(reason.unwrap_or_else(|| Arc::from("closed")))
    }

    fn fail_all(&self, reason: &str) {
        self.close(reason, false)
    }

    /// Closes the connection: the first reason given sticks, every stream fails with it.
    fn close(&self, reason: &str, violation: bool) {
        let reason = {
            let mut closed = self.closed.lock().expect("mux closed lock");
            closed
                .get_or_insert_with(|| Close {
                    reason: Arc::from(reason),
                    violation,
                })
                .reason
                .clone()
        };
        let streams: Vec<_> = self
            .streams
            .lock()
            .expect("mux streams lock")
            .drain()
            .collect();
        for (_, s) in streams {
            s.fail(MuxError::ConnectionClosed(reason.clone()));
        }
        self.cancel.cancel();
    }

    fn register(
        self: &Arc<Self>,
        id: u32,
    ) -> Result<(Arc<StreamState>, mpsc::UnboundedReceiver<Event>), MuxError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(StreamState {
            tx,
            send_credit: Semaphore::new(INITIAL_WINDOW as usize),
            recv_budget: AtomicI64::new(INITIAL_WINDOW as i64),
            failure: Mutex::new(None),
            queued_messages: AtomicUsize::new(0),
            peer_closed: AtomicBool::new(false),
        });
        let mut streams = self.streams.lock().expect("mux streams lock");
        if self.cancel.is_cancelled() {
            return Err(self.connection_error());
        }
        if streams.insert(id, state.clone()).is_some() {
            return Err(MuxError::Protocol(format!("stream {id} opened twice")));
        }
        Ok((state, rx))
    }

    /// Queues `event` for the stream's reader within the limits. `Ok(false)`: the receiving
    /// half is gone and the event was discarded.
    fn enqueue(&self, id: u32, state: &StreamState, event: Event) -> Result<bool, MuxError> {
        let (messages, total) = event.cost();
        let limits = &self.limits;
        if messages > 0
            && !charge(
                &state.queued_messages,
                messages,
                limits.stream_message_bytes,
            )
        {
            return Err(MuxError::Backlog(format!(
                "stream {id} would hold more than {} bytes of messages unread",
                limits.stream_message_bytes
            )));
        }
        if !charge(&self.queued, total, limits.connection_bytes) {
            state.queued_messages.fetch_sub(messages, Ordering::AcqRel);
            return Err(MuxError::Backlog(format!(
                "the connection would hold more than {} bytes unread (stream {id})",
                limits.connection_bytes
            )));
        }
        if let Err(mpsc::error::SendError(event)) = state.tx.send(event) {
            self.release(state, &event);
            return Ok(false);
        }
        Ok(true)
    }

    /// Uncounts an event its reader took (or dropped).
    fn release(&self, state: &StreamState, event: &Event) {
        let (messages, total) = event.cost();
        state.queued_messages.fetch_sub(messages, Ordering::AcqRel);
        self.queued.fetch_sub(total, Ordering::AcqRel);
    }

    /// Ends one stream, on both sides, with `err`.
    fn abort_stream(&self, id: u32, state: &StreamState, err: MuxError) {
        let _ = self.send(Frame::new(
            id,
            FrameKind::Reset,
            Bytes::from(err.to_string()),
        ));
        self.streams.lock().expect("mux streams lock").remove(&id);
        state.fail(err);
    }
}

/// Handle to a multiplexed connection. Cheap to clone.
#[derive(Clone)]
pub struct Mux {
    shared: Arc<Shared>,
    role: Role,
}

/// Streams the peer opens, in order.
pub struct Incoming {
    rx: mpsc::UnboundedReceiver<Stream>,
}

impl Incoming {
    /// The next stream the peer opened; `None` once the connection is closed (always `None`
    /// on a side that accepts no streams).
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

impl Mux {
    /// Starts the reader and writer tasks on the current tokio runtime, with the limits of
    /// `role` ([`Limits::for_role`]).
    pub fn new<R, W>(reader: R, writer: W, role: Role) -> (Mux, Incoming)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        Self::with_limits(reader, writer, role, Limits::for_role(role))
    }

    /// [`Mux::new`] with explicit limits.
    pub fn with_limits<R, W>(reader: R, writer: W, role: Role, limits: Limits) -> (Mux, Incoming)
    where
        R: AsyncRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            out: out_tx,
            streams: Mutex::new(HashMap::new()),
            next_id: AtomicU32::new(match role {
                Role::Host => 1,
                Role::Guest => 2,
            }),
            closed: Mutex::new(None),
            cancel: CancellationToken::new(),
            limits,
            queued: AtomicUsize::new(0),
        });
        tokio::spawn(write_loop(
            shared.clone(),
            FramedWrite::new(writer, FrameCodec::default()),
            out_rx,
        ));
        tokio::spawn(read_loop(
            shared.clone(),
            FramedRead::new(reader, FrameCodec::default()),
            in_tx,
            role,
        ));
        (Mux { shared, role }, Incoming { rx: in_rx })
    }

    /// Opens a stream whose `OPEN` frame carries `payload`.
    pub fn open(&self, payload: Bytes) -> Result<Stream, MuxError> {
        check_message_len(payload.len())?;
        let id = self.shared.next_id.fetch_add(2, Ordering::Relaxed);
        let (state, rx) = self.shared.register(id)?;
        let stream = Stream::new(self.shared.clone(), id, state, rx, Bytes::new());
        self.shared.send(Frame::new(id, FrameKind::Open, payload))?;
        Ok(stream)
    }

    /// Opens a stream with a JSON request.
    pub fn open_json<T: serde::Serialize>(&self, request: &T) -> Result<Stream, MuxError> {
        let body = serde_json::to_vec(request).map_err(|e| MuxError::Protocol(e.to_string()))?;
        self.open(Bytes::from(body))
    }

    /// True once the connection has failed or been shut down.
    pub fn is_closed(&self) -> bool {
        self.shared.cancel.is_cancelled()
    }

    /// Waits until the connection has failed or been shut down.
    pub async fn closed(&self) {
        self.shared.cancel.cancelled().await
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<Arc<str>> {
        self.shared
            .closed
            .lock()
            .expect("mux closed lock")
            .as_ref()
            .map(|c| c.reason.clone())
    }

    /// The close reason (it starts with [`VIOLATION_PREFIX`]) when the connection closed
    /// because the peer broke the protocol; `None` while open or after any other close.
    pub fn violation(&self) -> Option<Arc<str>> {
        self.shared
            .closed
            .lock()
            .expect("mux closed lock")
            .as_ref()
            .filter(|c| c.violation)
            .map(|c| c.reason.clone())
    }

    /// Bytes received and waiting unread on this connection's streams, as the limits count
    /// them.
    pub fn queued_bytes(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// Tears the connection down; every stream fails with `reason`.
    pub fn shutdown(&self, reason: &str) {
        self.shared.fail_all(reason);
    }

    /// Which end this is.
    pub fn role(&self) -> Role {
        self.role
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut sink: FramedWrite<W, FrameCodec>,
    mut rx: mpsc::UnboundedReceiver<Frame>,
) {
    let result: Result<(), String> = async {
        loop {
            let frame = tokio::select! {
                f = rx.recv() => f,
                _ = shared.cancel.cancelled() => None,
            };
            let Some(frame) = frame else { return Ok(()) };
            sink.feed(frame).await.map_err(|e| e.to_string())?;
            while let Ok(more) = rx.try_recv() {
                sink.feed(more).await.map_err(|e| e.to_string())?;
            }
            sink.flush().await.map_err(|e| e.to_string())?;
        }
    }
    .await;
    match result {
        Ok(()) => shared.fail_all("connection shut down"),
        Err(e) => shared.fail_all(&format!("write failed: {e}")),
    }
}

async fn read_loop<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut source: FramedRead<R, FrameCodec>,
    incoming: mpsc::UnboundedSender<Stream>,
    role: Role,
) {
    let (reason, violation) = loop {
        let next = tokio::select! {
            n = source.next() => n,
            _ = shared.cancel.cancelled() => break ("connection shut down".to_string(), false),
        };
        match next {
            None => break ("peer closed the connection".to_string(), false),
            Some(Err(FrameError::Io(e))) => break (format!("read failed: {e}"), false),
            // Not a violation: on virtio-serial, bytes of an earlier session (another magic)
            // can reach a new one at its start. The connection closes; the host reconnects.
            Some(Err(e)) => break (format!("read failed: bad frame: {e}"), false),
            Some(Ok(frame)) => {
                if let Err(e) = dispatch(&shared, frame, &incoming, role) {
                    let violation = matches!(e, MuxError::Protocol(_));
                    break (e.to_string(), violation);
                }
            }
        }
    };
    if violation {
        tracing::warn!(%reason, "closing a connection whose peer broke the protocol");
    }
    shared.close(&reason, violation);
}

fn dispatch(
    shared: &Arc<Shared>,
    frame: Frame,
    incoming: &mpsc::UnboundedSender<Stream>,
    role: Role,
) -> Result<(), MuxError> {
    let id = frame.stream;
    if frame.kind == FrameKind::Open {
        if !shared.limits.accept_streams {
            return Err(MuxError::Protocol(format!(
                "the peer opened stream {id}, but only this side opens streams"
            )));
        }
        let peer_parity = match role {
            Role::Host => 0,
            Role::Guest => 1,
        };
        if id % 2 != peer_parity {
            return Err(MuxError::Protocol(format!(
                "peer opened stream {id} with our parity"
            )));
        }
        let (state, rx) = shared.register(id)?;
        let stream = Stream::new(shared.clone(), id, state, rx, frame.payload);
        // If nobody accepts streams, dropping it here resets it.
        let _ = incoming.send(stream);
        return Ok(());
    }
    let state = shared
        .streams
        .lock()
        .expect("mux streams lock")
        .get(&id)
        .cloned();
    let Some(state) = state else {
        // Frames for a stream this side already dropped are expected in flight: when it was
        // dropped a RESET went out, so the peer's sender is already failing and waits on nothing.
        return Ok(());
    };
    let after_close = state.peer_closed.load(Ordering::Acquire);
    let event = match frame.kind {
        FrameKind::Open => unreachable!("handled above"),
        // Nothing follows a CLOSE but CREDIT and RESET; the rest is dropped unqueued.
        FrameKind::Msg | FrameKind::Data | FrameKind::Eof | FrameKind::Close if after_close => {
            return Ok(());
        }
        FrameKind::Msg => Event::Frame(Inbound::Msg(frame.payload)),
        FrameKind::Data => {
            let (channel, bytes) = Frame::split_channel(&frame.payload)
                .map_err(|e| MuxError::Protocol(format!("stream {id}: bad DATA frame: {e}")))?;
            let len = bytes.len() as i64;
            if state.recv_budget.fetch_sub(len, Ordering::AcqRel) < len {
                return Err(MuxError::Protocol(format!(
                    "stream {id} sent DATA past its credit"
                )));
            }
            Event::Frame(Inbound::Data { channel, bytes })
        }
        FrameKind::Eof => {
            let (channel, _) = Frame::split_channel(&frame.payload)
                .map_err(|e| MuxError::Protocol(format!("stream {id}: bad EOF frame: {e}")))?;
            Event::Frame(Inbound::Eof { channel })
        }
        FrameKind::Credit => {
            let n = Frame::credit_amount(&frame.payload)
                .map_err(|e| MuxError::Protocol(format!("stream {id}: bad CREDIT frame: {e}")))?;
            // The sender's window never exceeds INITIAL_WINDOW: credit only returns bytes sent.
            let available = state.send_credit.available_permits() as u64;
            if available + u64::from(n) > u64::from(INITIAL_WINDOW) {
                return Err(MuxError::Protocol(format!(
                    "stream {id} granted {n} bytes of credit, more than the {} bytes outstanding",
                    u64::from(INITIAL_WINDOW).saturating_sub(available)
                )));
            }
            state.send_credit.add_permits(n as usize);
            return Ok(());
        }
        FrameKind::Close => {
            state.peer_closed.store(true, Ordering::Release);
            Event::Closed
        }
        FrameKind::Reset => {
            shared.streams.lock().expect("mux streams lock").remove(&id);
            let reason = String::from_utf8_lossy(&frame.payload).into_owned();
            state.fail(MuxError::StreamReset(reason));
            return Ok(());
        }
    };
    let data_len = match &event {
        Event::Frame(Inbound::Data { bytes, .. }) => bytes.len() as u32,
        _ => 0,
    };
    match shared.enqueue(id, &state, event) {
        Ok(true) => {}
        Ok(false) => {
            // The receiving half is gone: discard, and hand DATA's credit straight back.
            if data_len > 0 {
                state
                    .recv_budget
                    .fetch_add(i64::from(data_len), Ordering::AcqRel);
                let _ = shared.send(Frame::credit(id, data_len));
            }
        }
        Err(backlog) => {
            tracing::warn!(stream = id, error = %backlog, "resetting a stream with too much unread");
            shared.abort_stream(id, &state, backlog);
        }
    }
    Ok(())
}

struct StreamCore {
    id: u32,
    shared: Arc<Shared>,
    state: Arc<StreamState>,
    local_closed: AtomicBool,
}

impl Drop for StreamCore {
    fn drop(&mut self) {
        let was_open = self
            .shared
            .streams
            .lock()
            .expect("mux streams lock")
            .remove(&self.id)
            .is_some();
        if was_open && !self.local_closed.load(Ordering::Acquire) {
            let _ = self.shared.send(Frame::new(
                self.id,
                FrameKind::Reset,
                Bytes::from_static(b"dropped"),
            ));
        }
    }
}

/// One request stream (both halves).
pub struct Stream {
    /// Sending half.
    pub tx: StreamSender,
    /// Receiving half.
    pub rx: StreamReceiver,
    open_payload: Bytes,
}

impl Stream {
    fn new(
        shared: Arc<Shared>,
        id: u32,
        state: Arc<StreamState>,
        rx: mpsc::UnboundedReceiver<Event>,
        open_payload: Bytes,
    ) -> Self {
        let core = Arc::new(StreamCore {
            id,
            shared,
            state,
            local_closed: AtomicBool::new(false),
        });
        Stream {
            tx: StreamSender { core: core.clone() },
            rx: StreamReceiver {
                core,
                rx,
                consumed: 0,
                done: false,
            },
            open_payload,
        }
    }

    /// The payload of the `OPEN` frame (for streams the peer opened).
    pub fn open_payload(&self) -> &Bytes {
        &self.open_payload
    }

    /// Stream id.
    pub fn id(&self) -> u32 {
        self.tx.core.id
    }

    /// Splits into independently usable halves.
    pub fn split(self) -> (StreamSender, StreamReceiver) {
        (self.tx, self.rx)
    }
}

/// Sending half of a stream. Cheap to clone.
#[derive(Clone)]
pub struct StreamSender {
    core: Arc<StreamCore>,
}

impl StreamSender {
    fn check_open(&self) -> Result<(), MuxError> {
        if self.core.local_closed.load(Ordering::Acquire) {
            return Err(MuxError::StreamClosed);
        }
        if self.core.state.send_credit.is_closed() {
            return Err(self.core.state.failure());
        }
        Ok(())
    }

    /// Sends a JSON message (raw bytes).
    pub fn send_msg(&self, msg: Bytes) -> Result<(), MuxError> {
        self.check_open()?;
        check_message_len(msg.len())?;
        self.core
            .shared
            .send(Frame::new(self.core.id, FrameKind::Msg, msg))
    }

    /// Serializes and sends a JSON message.
    pub fn send_json<T: serde::Serialize>(&self, msg: &T) -> Result<(), MuxError> {
        let body = serde_json::to_vec(msg).map_err(|e| MuxError::Protocol(e.to_string()))?;
        self.send_msg(Bytes::from(body))
    }

    /// Sends bytes on `channel`, waiting for credit as needed. On a side with a credit deadline
    /// ([`Limits::credit_wait`]), a wait that long without credit fails with
    /// [`MuxError::Timeout`].
    pub async fn send_data(&self, channel: u8, data: &[u8]) -> Result<(), MuxError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.check_open()?;
            let acquire = self.core.state.send_credit.acquire_many(chunk.len() as u32);
            let acquired = match self.core.shared.limits.credit_wait {
                Some(wait) => tokio::time::timeout(wait, acquire).await.map_err(|_| {
                    MuxError::Timeout(format!(
                        "the peer granted no send credit on stream {} for {}s",
                        self.core.id,
                        wait.as_secs()
                    ))
                })?,
                None => acquire.await,
            };
            acquired.map_err(|_| self.core.state.failure())?.forget();
            self.check_open()?;
            self.core
                .shared
                .send(Frame::data(self.core.id, channel, chunk))?;
        }
        Ok(())
    }

    /// Ends `channel`.
    pub fn send_eof(&self, channel: u8) -> Result<(), MuxError> {
        self.check_open()?;
        self.core.shared.send(Frame::eof(self.core.id, channel))
    }

    /// Gracefully ends this side of the stream (once: a second close fails).
    pub fn close(&self) -> Result<(), MuxError> {
        self.check_open()?;
        if self.core.local_closed.swap(true, Ordering::AcqRel) {
            return Err(MuxError::StreamClosed);
        }
        self.core
            .shared
            .send(Frame::new(self.core.id, FrameKind::Close, Bytes::new()))
    }

    /// Aborts the stream.
    pub fn reset(&self, reason: &str) {
        if !self.core.local_closed.swap(true, Ordering::AcqRel) {
            let _ = self.core.shared.send(Frame::new(
                self.core.id,
                FrameKind::Reset,
                Bytes::copy_from_slice(reason.as_bytes()),
            ));
        }
        self.core
            .shared
            .streams
            .lock()
            .expect("mux streams lock")
            .remove(&self.core.id);
        self.core.state.fail(MuxError::StreamClosed);
    }

    /// Stream id.
    pub fn id(&self) -> u32 {
        self.core.id
    }
}

/// Receiving half of a stream.
pub struct StreamReceiver {
    core: Arc<StreamCore>,
    rx: mpsc::UnboundedReceiver<Event>,
    consumed: u32,
    done: bool,
}

impl Drop for StreamReceiver {
    fn drop(&mut self) {
        // What was never read stops counting against the limits.
        self.rx.close();
        while let Ok(event) = self.rx.try_recv() {
            self.core.shared.release(&self.core.state, &event);
        }
    }
}

impl StreamReceiver {
    /// The next item; `Ok(None)` once the peer closed its side. Consuming `DATA` returns credit to
    /// the peer.
    pub async fn recv(&mut self) -> Result<Option<Inbound>, MuxError> {
        if self.done {
            return Ok(None);
        }
        let event = self.rx.recv().await;
        if let Some(event) = &event {
            self.core.shared.release(&self.core.state, event);
        }
        match event {
            Some(Event::Frame(item)) => {
                if let Inbound::Data { bytes, .. } = &item {
                    self.grant(bytes.len() as u32);
                }
                Ok(Some(item))
            }
            Some(Event::Closed) => {
                self.done = true;
                Ok(None)
            }
            Some(Event::Failed(e)) => Err(e),
            None => Err(self.core.state.failure()),
        }
    }

    /// Receives the next JSON message, skipping nothing: any other item is a protocol error.
    pub async fn recv_json<T: serde::de::DeserializeOwned>(&mut self) -> Result<T, MuxError> {
        match self.recv().await? {
            Some(Inbound::Msg(m)) => serde_json::from_slice(&m)
                .map_err(|e| MuxError::Protocol(format!("bad message: {e}"))),
            Some(other) => Err(MuxError::Protocol(format!(
                "expected a message, got {other:?}"
            ))),
            None => Err(MuxError::Protocol("stream closed before a message".into())),
        }
    }

    fn grant(&mut self, n: u32) {
        self.consumed += n;
        if self.consumed >= CREDIT_BATCH {
            let amount = std::mem::take(&mut self.consumed);
            self.core
                .state
                .recv_budget
                .fetch_add(amount as i64, Ordering::AcqRel);
            let _ = self.core.shared.send(Frame::credit(self.core.id, amount));
        }
    }

    /// Stream id.
    pub fn id(&self) -> u32 {
        self.core.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn pair() -> (Mux, Incoming, Mux, Incoming) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (host, host_in) = Mux::new(ar, aw, Role::Host);
        let (guest, guest_in) = Mux::new(br, bw, Role::Guest);
        (host, host_in, guest, guest_in)
    }

    #[tokio::test]
    async fn request_reply_and_data_round_trip() {
        let (host, _hi, _guest, mut gi) = pair();
        let server = tokio::spawn(async move {
            let mut s = gi.accept().await.unwrap();
            assert_eq!(&s.open_payload()[..], b"hello");
            let mut got = Vec::new();
            loop {
                match s.rx.recv().await.unwrap() {
                    Some(Inbound::Data { channel: 0, bytes }) => got.extend_from_slice(&bytes),
                    Some(Inbound::Eof { channel: 0 }) => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            s.tx.send_data(1, &got).await.unwrap();
            s.tx.send_msg(Bytes::from_static(b"done")).unwrap();
            s.tx.close().unwrap();
        });
        let mut s = host.open(Bytes::from_static(b"hello")).unwrap();
        // More than the window, so credit must flow back for this to finish.
        let payload: Vec<u8> = (0..3 * INITIAL_WINDOW as usize)
            .map(|i| (i % 251) as u8)
            .collect();
        let tx = s.tx.clone();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            tx.send_data(0, &p2).await.unwrap();
            tx.send_eof(0).unwrap();
        });
        let mut echoed = Vec::new();
        loop {
            match s.rx.recv().await.unwrap() {
                Some(Inbound::Data { channel: 1, bytes }) => echoed.extend_from_slice(&bytes),
                Some(Inbound::Msg(m)) => assert_eq!(&m[..], b"done"),
                None => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        writer.await.unwrap();
        server.await.unwrap();
        assert_eq!(echoed, payload);
    }

    #[tokio::test]
    async fn a_stalled_stream_does_not_block_others() {
        let (host, _hi, _guest, mut gi) = pair();
        tokio::spawn(async move {
            while let Some(s) = gi.accept().await {
                tokio::spawn(async move {
                    let (tx, _rx) = s.split();
                    // Push far more than one window; only credit from the host lets it finish.
                    let big = vec![7u8; 4 * INITIAL_WINDOW as usize];
                    let _ = tx.send_data(1, &big).await;
                    let _ = tx.close();
                });
            }
        });
        let _stalled = host.open(Bytes::from_static(b"a")).unwrap(); // never read
        let mut live = host.open(Bytes::from_static(b"b")).unwrap();
        let mut total = 0usize;
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(item) = live.rx.recv().await.unwrap() {
                if let Inbound::Data { bytes, .. } = item {
                    total += bytes.len();
                }
            }
        })
        .await
        .expect("the live stream must finish while the other one is stalled");
        assert_eq!(total, 4 * INITIAL_WINDOW as usize);
    }

    #[tokio::test]
    async fn dropping_a_stream_resets_it_and_connection_loss_fails_everything() {
        let (host, _hi, guest, mut gi) = pair();
        let s = host.open(Bytes::from_static(b"x")).unwrap();
        let mut accepted = gi.accept().await.unwrap();
        drop(s);
        let err = accepted.rx.recv().await.unwrap_err();
        assert!(matches!(err, MuxError::StreamReset(_)), "{err:?}");

        let mut s2 = host.open(Bytes::from_static(b"y")).unwrap();
        let _a2 = gi.accept().await.unwrap();
        guest.shutdown("guest went away");
        let err = s2.rx.recv().await.unwrap_err();
        assert!(matches!(err, MuxError::ConnectionClosed(_)), "{err:?}");
        host.closed().await;
        assert!(host.open(Bytes::new()).is_err());
    }

    #[tokio::test]
    async fn an_oversized_message_is_refused_and_the_connection_survives() {
        let (host, _hi, _guest, mut gi) = pair();
        let too_big = Bytes::from(vec![b'x'; MAX_FRAME_LEN]);
        assert!(matches!(
            host.open(too_big.clone()),
            Err(MuxError::Protocol(_))
        ));
        let s = host.open(Bytes::from_static(b"small")).unwrap();
        let accepted = gi.accept().await.unwrap();
        assert!(matches!(
            accepted.tx.send_msg(too_big),
            Err(MuxError::Protocol(_))
        ));
        accepted.tx.send_msg(Bytes::from_static(b"fits")).unwrap();
        let (_tx, mut rx) = s.split();
        assert_eq!(
            rx.recv().await.unwrap(),
            Some(Inbound::Msg(Bytes::from_static(b"fits")))
        );
        assert!(!host.is_closed());
    }

    /// A host-side mux whose peer is a raw frame writer (a hostile guest). Whatever the host
    /// writes is collected by a task and handed back by the returned receiver.
    fn hostile_pair(
        limits: Limits,
    ) -> (
        Mux,
        FramedWrite<tokio::io::WriteHalf<tokio::io::DuplexStream>, FrameCodec>,
        mpsc::UnboundedReceiver<Frame>,
    ) {
        let (a, b) = tokio::io::duplex(8 * 1024 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (br, bw) = tokio::io::split(b);
        let (host, _incoming) = Mux::with_limits(ar, aw, Role::Host, limits);
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut frames = FramedRead::new(br, FrameCodec::default());
            while let Some(Ok(f)) = frames.next().await {
                let _ = seen_tx.send(f);
            }
        });
        (host, FramedWrite::new(bw, FrameCodec::default()), seen_rx)
    }

    async fn wait_closed(mux: &Mux) {
        tokio::time::timeout(Duration::from_secs(10), mux.closed())
            .await
            .expect("the connection must close");
    }

    async fn reset_of(seen: &mut mpsc::UnboundedReceiver<Frame>, id: u32) -> Frame {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let f = seen.recv().await.expect("host output");
                if f.stream == id && f.kind == FrameKind::Reset {
                    return f;
                }
            }
        })
        .await
        .expect("a RESET for the stream")
    }

    #[tokio::test]
    async fn sending_past_credit_is_a_protocol_violation() {
        let (host, mut raw, _seen) = hostile_pair(Limits::host());
        let mut s = host.open(Bytes::new()).unwrap();
        let chunk = vec![0u8; MAX_DATA_CHUNK];
        for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA_CHUNK + 1) {
            raw.send(Frame::data(s.id(), 1, &chunk)).await.unwrap();
        }
        let err = loop {
            match s.rx.recv().await {
                Ok(Some(_)) => continue,
                Err(e) => break e,
                Ok(None) => panic!("stream ended cleanly"),
            }
        };
        assert!(err.is_violation(), "{err:?}");
        wait_closed(&host).await;
        assert!(host.violation().unwrap().contains("past its credit"));
    }

    #[tokio::test]
    async fn a_guest_opening_streams_is_a_violation() {
        let (host, mut raw, _seen) = hostile_pair(Limits::host());
        let mut pending = host.open(Bytes::from_static(b"req")).unwrap();
        let flood = async {
            for i in 0..10_000u32 {
                if raw
                    .send(Frame::new(
                        2 * i + 2,
                        FrameKind::Open,
                        Bytes::from_static(b"{}"),
                    ))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        };
        // The host stops reading at the first OPEN; the flood may not get far.
        let _ = tokio::time::timeout(Duration::from_secs(2), flood).await;
        wait_closed(&host).await;
        let reason = host.violation().expect("closed as a violation");
        assert!(reason.starts_with(VIOLATION_PREFIX), "{reason}");
        assert!(reason.contains("opened stream 2"), "{reason}");
        let err = pending.rx.recv().await.unwrap_err();
        assert!(err.is_violation(), "{err:?}");
        assert!(err.to_string().contains("protocol violation"), "{err}");
        assert_eq!(host.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn the_guest_side_still_accepts_streams_from_the_host() {
        let (host, _hi, guest, mut gi) = pair();
        let h = host.open(Bytes::from_static(b"x")).unwrap();
        let s = gi.accept().await.expect("accepted");
        assert_eq!(&s.open_payload()[..], b"x");
        assert!(guest.violation().is_none() && !guest.is_closed());
        drop(h);
    }

    #[tokio::test]
    async fn a_message_flood_on_an_unread_stream_stays_within_its_budget() {
        let (host, mut raw, mut seen) = hostile_pair(Limits::host());
        let unread = host.open(Bytes::new()).unwrap();
        let id = unread.id();
        let msg = Bytes::from(vec![b'm'; 64 * 1024]);
        let per_msg = msg.len() + QUEUE_ENTRY_OVERHEAD;
        // 8 MiB of messages: twice the budget.
        for _ in 0..128 {
            raw.send(Frame::new(id, FrameKind::Msg, msg.clone()))
                .await
                .unwrap();
        }
        let reset = reset_of(&mut seen, id).await;
        assert!(String::from_utf8_lossy(&reset.payload).contains("unread"));
        let queued = host.queued_bytes();
        assert!(queued <= MAX_STREAM_MESSAGE_BYTES, "{queued} bytes queued");
        assert!(
            queued > MAX_STREAM_MESSAGE_BYTES - per_msg,
            "{queued} bytes queued"
        );
        // The reader gets what was queued, then the reason; the connection goes on.
        let (_tx, mut rx) = unread.split();
        let mut got = 0;
        let err = loop {
            match rx.recv().await {
                Ok(Some(Inbound::Msg(_))) => got += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(e) => break e,
            }
        };
        assert!(matches!(err, MuxError::Backlog(_)), "{err:?}");
        assert_eq!(got, MAX_STREAM_MESSAGE_BYTES / per_msg);
        assert_eq!(host.queued_bytes(), 0);
        assert!(!host.is_closed());
        let mut other = host.open(Bytes::new()).unwrap();
        raw.send(Frame::new(
            other.id(),
            FrameKind::Msg,
            Bytes::from_static(b"ok"),
        ))
        .await
        .unwrap();
        assert_eq!(
            other.rx.recv().await.unwrap(),
            Some(Inbound::Msg(Bytes::from_static(b"ok")))
        );
    }

    #[tokio::test]
    async fn the_connection_total_bounds_data_and_messages_across_streams() {
        let limits = Limits {
            connection_bytes: 3 * 1024 * 1024,
            ..Limits::host()
        };
        let (host, mut raw, mut seen) = hostile_pair(limits);
        let streams: Vec<Stream> = (0..4).map(|_| host.open(Bytes::new()).unwrap()).collect();
        let chunk = vec![1u8; MAX_DATA_CHUNK];
        // A full window of DATA on each stream: within credit, but 4 MiB in all.
        for s in &streams {
            for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA_CHUNK) {
                raw.send(Frame::data(s.id(), 1, &chunk)).await.unwrap();
            }
        }
        let reset = reset_of(&mut seen, streams[2].id()).await;
        assert!(String::from_utf8_lossy(&reset.payload).contains("connection"));
        assert!(host.queued_bytes() <= limits.connection_bytes);
        assert!(!host.is_closed());
        drop(streams);
        assert_eq!(host.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn credit_beyond_the_window_is_a_violation_without_a_panic() {
        let (host, mut raw, _seen) = hostile_pair(Limits::host());
        let s = host.open(Bytes::new()).unwrap();
        let id = s.id();
        let (tx, mut rx) = s.split();
        let pending = tokio::spawn(async move { rx.recv().await });
        // A sender blocked on credit fails too.
        let sender = tokio::spawn(async move {
            tx.send_data(0, &vec![0u8; 2 * INITIAL_WINDOW as usize])
                .await
        });
        raw.send(Frame::credit(id, u32::MAX)).await.unwrap();
        wait_closed(&host).await;
        let reason = host.violation().expect("a violation");
        assert!(reason.contains("credit"), "{reason}");
        let err = pending.await.expect("no panic").unwrap_err();
        assert!(
            err.is_violation() && err.to_string().contains("credit"),
            "{err}"
        );
        let err = sender.await.expect("no panic").unwrap_err();
        assert!(err.is_violation(), "{err:?}");
    }

    #[tokio::test]
    async fn credit_for_bytes_never_sent_is_a_violation() {
        let (host, mut raw, _seen) = hostile_pair(Limits::host());
        let s = host.open(Bytes::new()).unwrap();
        s.tx.send_data(0, &[0u8; 1000]).await.unwrap();
        // Returning what was sent is fine; one byte more is not.
        raw.send(Frame::credit(s.id(), 1000)).await.unwrap();
        raw.send(Frame::credit(s.id(), 1)).await.unwrap();
        wait_closed(&host).await;
        assert!(host.violation().unwrap().contains("credit"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_grants_no_credit_times_the_send_out() {
        let (host, _raw, _seen) = hostile_pair(Limits::host());
        let s = host.open(Bytes::new()).unwrap();
        let started = tokio::time::Instant::now();
        let err =
            s.tx.send_data(0, &vec![0u8; 2 * INITIAL_WINDOW as usize])
                .await
                .unwrap_err();
        assert!(matches!(err, MuxError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() >= CREDIT_WAIT);
        assert!(!host.is_closed());
    }

    #[tokio::test]
    async fn guest_limits_keep_unbounded_queues_and_no_credit_deadline() {
        let g = Limits::guest();
        assert!(g.accept_streams && g.credit_wait.is_none());
        assert_eq!(g.stream_message_bytes, usize::MAX);
        assert_eq!(Limits::for_role(Role::Host), Limits::host());
    }
}
