//! Frame layout and the codec that reads and writes it.
//!
//! ```text
//! +----------------+----------------+--------+-----------------------+
//! | length: u32 BE | stream: u32 BE | kind u8| payload (length-5 B)  |
//! +----------------+----------------+--------+-----------------------+
//! ```
//! The length prefix is handled by `tokio_util`'s `LengthDelimitedCodec` and counts everything after
//! itself. `DATA` and `EOF` payloads start with a one-byte channel number; `CREDIT` carries a `u32 BE`
//! byte count; `OPEN` and `MSG` carry JSON; `CLOSE` is empty; `RESET` carries an optional UTF-8 reason.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Largest frame accepted on the wire (header included).
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Largest payload a single `DATA` frame carries; bigger writes are split.
pub const MAX_DATA_CHUNK: usize = 64 * 1024;

pub(crate) const HEADER_LEN: usize = 5;

/// What a frame does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Opens a stream; payload is the JSON request.
    Open = 1,
    /// A JSON message on an open stream.
    Msg = 2,
    /// Raw bytes on a channel: `[channel u8][bytes]`.
    Data = 3,
    /// End of a channel: `[channel u8]`.
    Eof = 4,
    /// Grants the peer more send credit for `DATA` on this stream: `[u32 BE bytes]`.
    Credit = 5,
    /// The sender will send nothing more on this stream.
    Close = 6,
    /// The stream is aborted; payload is an optional reason.
    Reset = 7,
}

impl TryFrom<u8> for FrameKind {
    type Error = FrameError;
    fn try_from(v: u8) -> Result<Self, FrameError> {
        Ok(match v {
            1 => Self::Open,
            2 => Self::Msg,
            3 => Self::Data,
            4 => Self::Eof,
            5 => Self::Credit,
            6 => Self::Close,
            7 => Self::Reset,
            other => return Err(FrameError::UnknownKind(other)),
        })
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Stream the frame belongs to.
    pub stream: u32,
    /// What the frame does.
    pub kind: FrameKind,
    /// Kind-specific payload.
    pub payload: Bytes,
}

impl Frame {
    /// A frame with a raw payload.
    pub fn new(stream: u32, kind: FrameKind, payload: Bytes) -> Self {
        Self {
            stream,
            kind,
            payload,
        }
    }

    /// A `DATA` frame for `channel`.
    pub fn data(stream: u32, channel: u8, bytes: &[u8]) -> Self {
        let mut p = BytesMut::with_capacity(1 + bytes.len());
        p.put_u8(channel);
        p.put_slice(bytes);
        Self::new(stream, FrameKind::Data, p.freeze())
    }

    /// An `EOF` frame for `channel`.
    pub fn eof(stream: u32, channel: u8) -> Self {
        Self::new(stream, FrameKind::Eof, Bytes::copy_from_slice(&[channel]))
    }

    /// A `CREDIT` frame granting `bytes`.
    pub fn credit(stream: u32, bytes: u32) -> Self {
        Self::new(
            stream,
            FrameKind::Credit,
            Bytes::copy_from_slice(&bytes.to_be_bytes()),
        )
    }

    /// Splits a `DATA` payload into channel and bytes.
    pub fn split_channel(payload: &Bytes) -> Result<(u8, Bytes), FrameError> {
        if payload.is_empty() {
            return Err(FrameError::Truncated);
        }
        Ok((payload[0], payload.slice(1..)))
    }

    /// Reads a `CREDIT` payload.
    pub fn credit_amount(payload: &[u8]) -> Result<u32, FrameError> {
        let b: [u8; 4] = payload.try_into().map_err(|_| FrameError::Truncated)?;
        Ok(u32::from_be_bytes(b))
    }
}

/// Malformed input on the wire.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// I/O on the underlying byte stream failed.
    #[error("transport I/O")]
    Io(#[from] std::io::Error),
    /// A frame's kind byte is not one this version knows.
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    /// A frame is shorter than its kind requires.
    #[error("truncated frame")]
    Truncated,
}

/// Codec for [`Frame`]s on top of a length-delimited byte stream.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
}

impl Default for FrameCodec {
    fn default() -> Self {
        Self {
            inner: LengthDelimitedCodec::builder()
                .big_endian()
                .length_field_length(4)
                .max_frame_length(MAX_FRAME_LEN)
                .new_codec(),
        }
    }
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        let Some(mut body) = self.inner.decode(src)? else {
            return Ok(None);
        };
        if body.len() < HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        let stream = body.get_u32();
        let kind = FrameKind::try_from(body.get_u8())?;
        Ok(Some(Frame::new(stream, kind, body.freeze())))
    }
}

impl Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        let mut body = BytesMut::with_capacity(HEADER_LEN + frame.payload.len());
        body.put_u32(frame.stream);
        body.put_u8(frame.kind as u8);
        body.put_slice(&frame.payload);
        self.inner.encode(body.freeze(), dst)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_kind() {
        let mut codec = FrameCodec::default();
        let frames = vec![
            Frame::new(1, FrameKind::Open, Bytes::from_static(b"{\"op\":\"ping\"}")),
            Frame::data(3, 2, b"hello"),
            Frame::eof(3, 1),
            Frame::credit(3, 65536),
            Frame::new(5, FrameKind::Close, Bytes::new()),
            Frame::new(5, FrameKind::Reset, Bytes::from_static(b"bye")),
        ];
        let mut buf = BytesMut::new();
        for f in &frames {
            codec.encode(f.clone(), &mut buf).unwrap();
        }
        let mut out = Vec::new();
        while let Some(f) = codec.decode(&mut buf).unwrap() {
            out.push(f);
        }
        assert_eq!(out, frames);
        let (ch, data) = Frame::split_channel(&out[1].payload).unwrap();
        assert_eq!((ch, &data[..]), (2, &b"hello"[..]));
        assert_eq!(Frame::credit_amount(&out[3].payload).unwrap(), 65536);
    }

    #[test]
    fn rejects_oversized_and_unknown_frames() {
        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::from(&crate::HOST_MAGIC[..]);
        assert!(
            codec.decode(&mut buf).is_err(),
            "the host magic must never parse as a frame"
        );

        let mut codec = FrameCodec::default();
        let mut buf = BytesMut::new();
        buf.put_u32(5);
        buf.put_u32(1);
        buf.put_u8(99);
        assert!(matches!(
            codec.decode(&mut buf),
            Err(FrameError::UnknownKind(99))
        ));
    }
}
