//! The host <-> guest protocol of Platinum.
//!
//! Both the guest agent (PID 1 inside every microVM) and the host agent depend on this crate, and on
//! nothing else of Platinum's, so the wire surface lives in exactly one place.
//!
//! # Primer
//!
//! One byte stream carries everything: an `AF_VSOCK` connection to guest port [`VSOCK_PORT`] (reached
//! from the host through the hybrid `CONNECT <port>` Unix socket of Cloud Hypervisor or
//! vhost-device-vsock), or the virtio-serial port named [`VIRTIO_SERIAL_PORT_NAME`] (QEMU, where the
//! VM must stay migratable for snapshots).
//!
//! 1. **Sync** ([`handshake`]): the host writes [`HOST_MAGIC`]; the guest skips bytes until it sees it
//!    and answers [`GUEST_MAGIC`]; the host skips bytes until it sees that. A virtio-serial port has no
//!    connection semantics, so stale bytes from an earlier host connection can sit in either
//!    direction; the magic lets both sides find the start of a fresh session.
//! 2. **Frames** ([`frame`]): a big-endian `u32` length, then `stream: u32`, `kind: u8`, payload.
//! 3. **Streams** ([`mux`]): the host opens a stream per request with an `OPEN` frame whose payload is
//!    a JSON [`Request`]. Both sides then exchange JSON messages (`MSG`), raw bytes on numbered
//!    channels (`DATA`, flow-controlled by per-stream credit, so one slow reader never stalls the
//!    others), end-of-channel markers (`EOF`), and finally `CLOSE` (graceful) or `RESET` (abort).
//! 4. **Replies** ([`messages`]): the guest sends zero or more [`GuestEvent`]s and exactly one final
//!    [`Outcome`] per request. The first request of a session is [`Request::Hello`], which carries the
//!    protocol version; a host refuses a guest whose [`PROTOCOL_VERSION`] it does not speak.
//!
//! Versioning: `PROTOCOL_VERSION` changes only when an existing message changes meaning. Adding an
//! optional field or a new request keeps the version (unknown requests get
//! [`GuestErrorCode::Unsupported`]), which matters because a sandbox restored from a snapshot keeps
//! running the guest agent it was snapshotted with.

pub mod frame;
pub mod handshake;
pub mod messages;
pub mod mux;

pub use frame::{Frame, FrameCodec, FrameKind, MAX_DATA_CHUNK, MAX_FRAME_LEN};
pub use messages::*;
pub use mux::{Inbound, Mux, MuxError, Role, Stream, StreamReceiver, StreamSender};

/// Guest `AF_VSOCK` port the agent listens on.
pub const VSOCK_PORT: u32 = 18047;

/// Name of the virtio-serial port the agent serves (`/sys/class/virtio-ports/*/name`).
pub const VIRTIO_SERIAL_PORT_NAME: &str = "org.platinum.agent.0";

/// Protocol generation spoken by this build. See the crate docs for when it changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// Where the guest agent writes the host's egress CA ([`Hello::trust_pem`]), below `/`.
pub const EGRESS_CA_FILE: &str = "usr/local/share/ca-certificates/platinum-egress.crt";

/// Bytes the host writes to start a session.
///
/// Read as a frame header, its first four bytes give a length far above [`MAX_FRAME_LEN`], so a guest
/// that is still mid-session when a new host connects fails fast instead of misreading it.
pub const HOST_MAGIC: &[u8; 16] = b"\xffPLATINUM-HOST\x01\n";

/// Bytes the guest answers [`HOST_MAGIC`] with.
pub const GUEST_MAGIC: &[u8; 16] = b"\xffPLATINUM-GUEST\x01";

/// Data channel numbers used on streams.
pub mod channel {
    /// Host -> guest: process stdin or file contents being written.
    pub const STDIN: u8 = 0;
    /// Guest -> host: process stdout (or PTY output) or file contents being read.
    pub const STDOUT: u8 = 1;
    /// Guest -> host: process stderr.
    pub const STDERR: u8 = 2;
}
