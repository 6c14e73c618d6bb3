//! Session setup and the request/reply calls of the guest client.

use bytes::Bytes;
use platinum_protocol::handshake::host_handshake;
use platinum_protocol::{
    FileEntry, GuestMessage, Hello, HelloReply, MakeDirReply, MetricsReply, Mux, Outcome,
    PROTOCOL_VERSION, PathRequest, PingReply, ProcessInfo, PtySize, Request, Role, StreamReceiver,
    StreamSender,
};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::io::Cursor;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::error::{Error, Result};

/// How long the host waits for any one answer of the guest before giving up on it: the outcome
/// of a plain request (stat, mkdir, signal, ...), the first message of a streaming one (exec,
/// attach, read_file, connect_port, watch), each chunk of a file being read, the outcome of a
/// write. (Waits for send credit have their own deadline in the multiplexer,
/// [`platinum_protocol::mux::CREDIT_WAIT`].) Output of a running process, file system events and
/// port traffic may legitimately pause for ever and have none.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Waits for an answer of the guest at most [`DEFAULT_CALL_TIMEOUT`]; past it, fails with
/// [`Error::Timeout`] naming `what` (which the engine reports as `guest_unreachable`).
pub(crate) async fn guest_deadline<T>(
    what: impl FnOnce() -> String,
    answer: impl Future<Output = Result<T>>,
) -> Result<T> {
    tokio::time::timeout(DEFAULT_CALL_TIMEOUT, answer)
        .await
        .map_err(|_| Error::Timeout {
            what: what(),
            seconds: DEFAULT_CALL_TIMEOUT.as_secs(),
        })?
}

/// A session with one guest agent. Cheap to clone; all clones share the connection.
#[derive(Clone)]
pub struct GuestClient {
    mux: Mux,
    hello: HelloReply,
}

impl GuestClient {
    /// Starts a session on a connected byte stream: magic handshake, then `hello`, whose clock
    /// (`unix_ns`) is stamped here, once the agent has answered the handshake (a guest that is
    /// still booting can take seconds to).
    pub async fn start<S>(stream: S, hello: Hello, timeout: Duration) -> Result<Self>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (mut reader, mut writer) = tokio::io::split(stream);
        let leftover = host_handshake(&mut reader, &mut writer, timeout)
            .await
            .map_err(|e| Error::GuestUnreachable(e.to_string()))?;
        let reader = Cursor::new(leftover.freeze()).chain(reader);
        let (mux, _incoming) = Mux::new(reader, writer, Role::Host);
        let protocol = hello.protocol;
        let mut client = GuestClient {
            mux,
            hello: HelloReply {
                protocol,
                agent_version: String::new(),
                boot_id: String::new(),
                kernel: String::new(),
            },
        };
        let hello = Hello {
            unix_ns: unix_now_ns(),
            ..hello
        };
        // A session that fails here is torn down, not just dropped: the mux's tasks hold the
        // connection, and a virtio-serial chardev takes no new connection while one is open.
        let reply: HelloReply =
            match tokio::time::timeout(timeout, client.call(&Request::Hello(hello))).await {
                Ok(Ok(reply)) => reply,
                Ok(Err(e)) => {
                    client.mux.shutdown("hello failed");
                    return Err(e);
                }
                Err(_) => {
                    client.mux.shutdown("no answer to hello");
                    return Err(Error::GuestUnreachable("no answer to hello".into()));
                }
            };
        if reply.protocol != PROTOCOL_VERSION {
            client.mux.shutdown("protocol mismatch");
            return Err(Error::ProtocolMismatch {
                guest: reply.protocol,
                host: PROTOCOL_VERSION,
            });
        }
        client.hello = reply;
        Ok(client)
    }

    /// Sends `hello` again on this session with new session defaults (environment, default
    /// user): what processes started from now on get. The clock is left alone.
    pub async fn update_defaults(&self, hello: Hello) -> Result<()> {
        let hello = Hello {
            unix_ns: 0,
            ..hello
        };
        let _: HelloReply = self.call(&Request::Hello(hello)).await?;
        Ok(())
    }

    /// What the guest said in answer to `hello`.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// True once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.mux.is_closed()
    }

    /// Resolves when the connection is gone.
    pub async fn closed(&self) {
        self.mux.closed().await
    }

    /// Closes the connection; in-flight requests fail.
    pub fn shutdown(&self, reason: &str) {
        self.mux.shutdown(reason)
    }

    pub(crate) fn mux(&self) -> &Mux {
        &self.mux
    }

    /// Why the connection closed, when it closed because the guest broke the protocol (see
    /// [`Mux::violation`]); `None` while it is open or after any other close.
    pub fn violation(&self) -> Option<std::sync::Arc<str>> {
        self.mux.violation()
    }

    /// Opens a streaming request and waits (within [`DEFAULT_CALL_TIMEOUT`]) for its first
    /// message.
    pub(crate) async fn open_streaming(
        &self,
        request: &Request,
    ) -> Result<(StreamSender, StreamReceiver, GuestMessage)> {
        let stream = self.mux.open_json(request)?;
        let (tx, mut rx) = stream.split();
        let first = guest_deadline(
            || format!("the first answer to guest request {}", request.op()),
            next_message(&mut rx),
        )
        .await?;
        Ok((tx, rx, first))
    }

    /// Sends a request and waits for its outcome, ignoring nothing: an event on a plain request is
    /// a protocol error.
    pub async fn call<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        let stream = self.mux.open_json(request)?;
        let (_tx, mut rx) = stream.split();
        let value = expect_outcome(&mut rx).await?;
        decode(value)
    }

    /// [`Self::call`] with [`DEFAULT_CALL_TIMEOUT`].
    pub async fn call_timed<T: DeserializeOwned>(&self, request: &Request) -> Result<T> {
        guest_deadline(
            || format!("guest request {}", request.op()),
            self.call(request),
        )
        .await
    }

    /// Round-trips `payload` through the agent.
    pub async fn ping(&self, payload: impl Into<String>) -> Result<PingReply> {
        self.call_timed(&Request::Ping {
            payload: payload.into(),
        })
        .await
    }

    /// Agent health.
    pub async fn health(&self) -> Result<platinum_protocol::HealthReply> {
        self.call_timed(&Request::Health).await
    }

    /// CPU, memory and disk usage.
    pub async fn metrics(&self) -> Result<MetricsReply> {
        self.call_timed(&Request::Metrics).await
    }

    /// Processes started through the agent.
    pub async fn list_processes(&self) -> Result<Vec<ProcessInfo>> {
        self.call_timed(&Request::ListProcesses).await
    }

    /// Signals a process group.
    pub async fn signal(&self, pid: u32, signal: i32) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::Signal { pid, signal })
            .await
            .map(drop)
    }

    /// Closes a process's stdin.
    pub async fn close_stdin(&self, pid: u32) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::CloseStdin { pid })
            .await
            .map(drop)
    }

    /// Resizes a process's PTY.
    pub async fn resize_pty(&self, pid: u32, size: PtySize) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::ResizePty { pid, size })
            .await
            .map(drop)
    }

    /// Writes bytes to a running process's stdin (without attaching to it).
    pub async fn write_stdin(&self, pid: u32, data: Bytes) -> Result<()> {
        let stream = self.mux.open_json(&Request::WriteStdin { pid })?;
        let (tx, mut rx) = stream.split();
        tx.send_data(platinum_protocol::channel::STDIN, &data)
            .await?;
        tx.close()?;
        let value = guest_deadline(
            || "the outcome of guest request write_stdin".into(),
            expect_outcome(&mut rx),
        )
        .await?;
        decode::<serde_json::Value>(value).map(drop)
    }

    /// Lists a directory.
    pub async fn list_dir(&self, at: PathRequest, depth: u32) -> Result<Vec<FileEntry>> {
        self.call_timed(&Request::ListDir { at, depth }).await
    }

    /// Describes a path.
    pub async fn stat(&self, at: PathRequest) -> Result<FileEntry> {
        self.call_timed(&Request::Stat(at)).await
    }

    /// `mkdir -p`; with `owner`, the directory and the parents it creates are handed to them.
    pub async fn make_dir(
        &self,
        at: PathRequest,
        mode: Option<u32>,
        owner: Option<String>,
    ) -> Result<MakeDirReply> {
        self.call_timed(&Request::MakeDir { at, mode, owner }).await
    }

    /// Removes a path.
    pub async fn remove(&self, at: PathRequest, recursive: bool) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::Remove { at, recursive })
            .await
            .map(drop)
    }

    /// Moves a path.
    pub async fn rename(
        &self,
        from: String,
        to: String,
        user: Option<String>,
        overwrite: bool,
    ) -> Result<FileEntry> {
        self.call_timed(&Request::Rename {
            from,
            to,
            user,
            overwrite,
        })
        .await
    }

    /// Changes permission bits.
    pub async fn chmod(&self, at: PathRequest, mode: u32) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::Chmod { at, mode })
            .await
            .map(drop)
    }

    /// Changes owner and group.
    pub async fn chown(
        &self,
        at: PathRequest,
        owner: Option<String>,
        group: Option<String>,
    ) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::Chown { at, owner, group })
            .await
            .map(drop)
    }

    /// Flushes guest filesystems.
    pub async fn sync(&self) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::Sync)
            .await
            .map(drop)
    }

    /// Gives a restored copy its own identity (hostname, MAC and address, reseeded RNG).
    pub async fn reidentify(&self, identity: platinum_protocol::Identity) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::Reidentify(identity))
            .await
            .map(drop)
    }

    /// Mounts the volume on the disk with serial `serial` at `path` (the agent waits a few
    /// seconds for a hot-added disk to appear).
    pub async fn mount_volume(&self, serial: &str, path: &str, readonly: bool) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::MountVolume {
            serial: serial.to_string(),
            path: path.to_string(),
            readonly,
        })
        .await
        .map(drop)
    }

    /// Flushes and unmounts the volume at `path` (fails while it is busy).
    pub async fn unmount_volume(&self, path: &str) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::UnmountVolume {
            path: path.to_string(),
        })
        .await
        .map(drop)
    }

    /// Asks the guest to power off. Returns once the agent acknowledged.
    pub async fn shutdown_guest(&self, reboot: bool) -> Result<()> {
        self.call_timed::<serde_json::Value>(&Request::Shutdown { reboot })
            .await
            .map(drop)
    }
}

/// Host wall clock, nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A protocol violation by the guest (an unexpected message, a malformed reply).
pub(crate) fn protocol(msg: &str) -> Error {
    Error::Transport(platinum_protocol::MuxError::Protocol(msg.to_string()))
}

/// Reads the next message of a stream as a [`GuestMessage`].
pub(crate) async fn next_message(rx: &mut StreamReceiver) -> Result<GuestMessage> {
    loop {
        match rx.recv().await? {
            Some(platinum_protocol::Inbound::Msg(m)) => {
                return serde_json::from_slice(&m)
                    .map_err(|e| protocol(&format!("bad guest message: {e}")));
            }
            // Channel ends carry no information for callers that only want messages.
            Some(platinum_protocol::Inbound::Eof { .. }) => continue,
            Some(other) => {
                return Err(protocol(&format!(
                    "unexpected {other:?} while waiting for a message"
                )));
            }
            None => return Err(protocol("guest closed the stream without an outcome")),
        }
    }
}

/// A frame of a streaming request (exec, file read, watch), as its reader sees it: channel ends
/// carry nothing for these readers and are skipped.
#[derive(Debug)]
pub(crate) enum Frame {
    /// Bytes on a channel.
    Data {
        /// Channel number.
        channel: u8,
        /// The bytes.
        bytes: Bytes,
    },
    /// A JSON message, still encoded (see [`parse_message`]).
    Msg(Bytes),
}

/// Reads the next data or message frame of a stream; `None` when the guest closed it.
pub(crate) async fn next_frame(rx: &mut StreamReceiver) -> Result<Option<Frame>> {
    loop {
        match rx.recv().await? {
            Some(platinum_protocol::Inbound::Data { channel, bytes }) => {
                return Ok(Some(Frame::Data { channel, bytes }));
            }
            Some(platinum_protocol::Inbound::Msg(m)) => return Ok(Some(Frame::Msg(m))),
            Some(platinum_protocol::Inbound::Eof { .. }) => continue,
            None => return Ok(None),
        }
    }
}

/// Decodes a message frame of a streaming request.
pub(crate) fn parse_message(m: &[u8]) -> Result<GuestMessage> {
    serde_json::from_slice(m).map_err(|e| protocol(&format!("bad message: {e}")))
}

/// Waits for the outcome of a plain request.
pub(crate) async fn expect_outcome(rx: &mut StreamReceiver) -> Result<serde_json::Value> {
    match next_message(rx).await? {
        GuestMessage::Outcome(o) => outcome(o),
        GuestMessage::Event(e) => Err(protocol(&format!("unexpected event {e:?}"))),
    }
}

pub(crate) fn outcome(o: Outcome) -> Result<serde_json::Value> {
    match o {
        Outcome::Ok(v) => Ok(v),
        Outcome::Error(e) => Err(Error::Guest(e)),
    }
}

pub(crate) fn decode<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| protocol(&format!("bad guest reply: {e}")))
}
