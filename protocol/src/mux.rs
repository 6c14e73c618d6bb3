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

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::frame::{Frame, FrameCodec, FrameKind, HEADER_LEN, MAX_DATA_CHUNK, MAX_FRAME_LEN};

/// Bytes of `DATA` a sender may have in flight per stream before the receiver grants more.
pub const INITIAL_WINDOW: u32 = 1024 * 1024;

/// Credit is handed back in batches of at least this many consumed bytes.
const CREDIT_BATCH: u32 = INITIAL_WINDOW / 4;

/// Which end of the connection this is; decides stream id parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens odd stream ids.
    Host,
    /// Opens even stream ids.
    Guest,
}

/// Failures of the multiplexer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum MuxError {
    /// The underlying connection is gone.
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

struct StreamState {
    tx: mpsc::UnboundedSender<Event>,
    /// Credit for what this side may send.
    send_credit: Semaphore,
    /// Credit the peer still has for sending to us; going negative is a protocol violation.
    recv_budget: AtomicI64,
    failure: Mutex<Option<MuxError>>,
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

struct Shared {
    out: mpsc::UnboundedSender<Frame>,
    streams: Mutex<HashMap<u32, Arc<StreamState>>>,
    next_id: AtomicU32,
    closed: Mutex<Option<Arc<str>>>,
    cancel: CancellationToken,
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
        let reason = self.closed.lock().expect("mux closed lock").clone();
        MuxError::ConnectionClosed(reason.unwrap_or_else(|| Arc::from("closed")))
    }

    fn fail_all(&self, reason: &str) {
        let reason: Arc<str> = Arc::from(reason);
        {
            let mut closed = self.closed.lock().expect("mux closed lock");
            if closed.is_none() {
                *closed = Some(reason.clone());
            }
        }
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
    /// The next stream the peer opened; `None` once the connection is closed.
    pub async fn accept(&mut self) -> Option<Stream> {
        self.rx.recv().await
    }
}

impl Mux {
    /// Starts the reader and writer tasks on the current tokio runtime.
    pub fn new<R, W>(reader: R, writer: W, role: Role) -> (Mux, Incoming)
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
        self.shared.closed.lock().expect("mux closed lock").clone()
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
    let reason = loop {
        let next = tokio::select! {
            n = source.next() => n,
            _ = shared.cancel.cancelled() => break "connection shut down".to_string(),
        };
        match next {
            None => break "peer closed the connection".to_string(),
            Some(Err(e)) => break format!("read failed: {e}"),
            Some(Ok(frame)) => {
                if let Err(e) = dispatch(&shared, frame, &incoming, role) {
                    break e.to_string();
                }
            }
        }
    };
    shared.fail_all(&reason);
}

fn dispatch(
    shared: &Arc<Shared>,
    frame: Frame,
    incoming: &mpsc::UnboundedSender<Stream>,
    role: Role,
) -> Result<(), MuxError> {
    let id = frame.stream;
    if frame.kind == FrameKind::Open {
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
    match frame.kind {
        FrameKind::Open => unreachable!("handled above"),
        FrameKind::Msg => {
            let _ = state.tx.send(Event::Frame(Inbound::Msg(frame.payload)));
        }
        FrameKind::Data => {
            let (channel, bytes) = Frame::split_channel(&frame.payload)
                .map_err(|e| MuxError::Protocol(e.to_string()))?;
            let len = bytes.len() as i64;
            if state.recv_budget.fetch_sub(len, Ordering::AcqRel) < len {
                let err = MuxError::Protocol(format!("stream {id} sent past its credit"));
                let _ = shared.send(Frame::new(
                    id,
                    FrameKind::Reset,
                    Bytes::from(err.to_string()),
                ));
                shared.streams.lock().expect("mux streams lock").remove(&id);
                state.fail(err);
                return Ok(());
            }
            if state
                .tx
                .send(Event::Frame(Inbound::Data { channel, bytes }))
                .is_err()
            {
                // The receiving half is gone: discard, and hand the credit straight back.
                state.recv_budget.fetch_add(len, Ordering::AcqRel);
                let _ = shared.send(Frame::credit(id, len as u32));
            }
        }
        FrameKind::Eof => {
            let (channel, _) = Frame::split_channel(&frame.payload)
                .map_err(|e| MuxError::Protocol(e.to_string()))?;
            let _ = state.tx.send(Event::Frame(Inbound::Eof { channel }));
        }
        FrameKind::Credit => {
            let n = Frame::credit_amount(&frame.payload)
                .map_err(|e| MuxError::Protocol(e.to_string()))?;
            state.send_credit.add_permits(n as usize);
        }
        FrameKind::Close => {
            let _ = state.tx.send(Event::Closed);
        }
        FrameKind::Reset => {
            shared.streams.lock().expect("mux streams lock").remove(&id);
            let reason = String::from_utf8_lossy(&frame.payload).into_owned();
            state.fail(MuxError::StreamReset(reason));
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

    /// Sends bytes on `channel`, waiting for credit as needed.
    pub async fn send_data(&self, channel: u8, data: &[u8]) -> Result<(), MuxError> {
        for chunk in data.chunks(MAX_DATA_CHUNK) {
            self.check_open()?;
            let permit = self
                .core
                .state
                .send_credit
                .acquire_many(chunk.len() as u32)
                .await
                .map_err(|_| self.core.state.failure())?;
            permit.forget();
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

    /// Gracefully ends this side of the stream.
    pub fn close(&self) -> Result<(), MuxError> {
        self.check_open()?;
        self.core.local_closed.store(true, Ordering::Release);
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

impl StreamReceiver {
    /// The next item; `Ok(None)` once the peer closed its side. Consuming `DATA` returns credit to
    /// the peer.
    pub async fn recv(&mut self) -> Result<Option<Inbound>, MuxError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
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

    #[tokio::test]
    async fn sending_past_credit_is_a_protocol_violation() {
        // A raw peer that ignores credit.
        let (a, b) = tokio::io::duplex(8 * 1024 * 1024);
        let (ar, aw) = tokio::io::split(a);
        let (host, _hi) = Mux::new(ar, aw, Role::Host);
        let mut s = host.open(Bytes::new()).unwrap();
        let mut raw = FramedWrite::new(b, FrameCodec::default());
        let chunk = vec![0u8; MAX_DATA_CHUNK];
        for _ in 0..(INITIAL_WINDOW as usize / MAX_DATA_CHUNK + 1) {
            raw.send(Frame::data(s.id(), 1, &chunk)).await.unwrap();
        }
        let mut saw_violation = false;
        for _ in 0..64 {
            match s.rx.recv().await {
                Ok(Some(_)) => continue,
                Err(MuxError::Protocol(_)) => {
                    saw_violation = true;
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(saw_violation);
    }
}
