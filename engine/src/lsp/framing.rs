//! The LSP base protocol on a byte stream: each message is a header block
//! (`Content-Length: N`, optionally `Content-Type`, `\r\n`-terminated lines, then an empty line)
//! followed by N bytes of JSON.
//!
//! A language server runs inside the sandbox, so what it writes is untrusted: a header block
//! longer than [`MAX_HEADER`] or a body longer than [`MAX_MESSAGE`] is an error (the caller
//! stops the server), never a buffer that grows without bound.

use bytes::{Buf, BytesMut};
use serde_json::Value;

/// Largest message body accepted from a language server.
pub const MAX_MESSAGE: usize = 16 << 20;
/// Largest header block accepted.
pub const MAX_HEADER: usize = 4096;
/// Header lines accepted in one block.
const MAX_HEADER_LINES: usize = 8;

/// What makes a language server's output unreadable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    /// The header block is malformed, too long, or has no usable `Content-Length`.
    #[error("bad LSP header: {0}")]
    Header(String),
    /// The body is larger than [`MAX_MESSAGE`].
    #[error("LSP message of {0} bytes is over the limit of {MAX_MESSAGE}")]
    TooLarge(usize),
    /// The body is not JSON.
    #[error("LSP message is not JSON: {0}")]
    Json(String),
}

/// One message, framed for a language server's stdin.
pub fn encode(message: &Value) -> Vec<u8> {
    let body = message.to_string();
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

/// Splits a language server's stdout into messages, as bytes arrive.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
    /// The body length of the message whose header has been read.
    body_len: Option<usize>,
}

impl Decoder {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Value>, FramingError> {
        let len = match self.body_len {
            Some(len) => len,
            None => match self.header()? {
                Some(len) => len,
                None => return Ok(None),
            },
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        self.body_len = None;
        let body = self.buf.split_to(len);
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| FramingError::Json(e.to_string()))
    }

    /// Reads a complete header block, if there is one, and returns the body length.
    fn header(&mut self) -> Result<Option<usize>, FramingError> {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADER_LINES];
        let parsed = httparse::parse_headers(&self.buf, &mut headers)
            .map_err(|e| FramingError::Header(e.to_string()))?;
        let (consumed, headers) = match parsed {
            httparse::Status::Complete(done) => done,
            httparse::Status::Partial if self.buf.len() > MAX_HEADER => {
                return Err(FramingError::Header(format!(
                    "no end of header in {MAX_HEADER} bytes"
                )));
            }
            httparse::Status::Partial => return Ok(None),
        };
        let len = headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .ok_or_else(|| FramingError::Header("no Content-Length".into()))?;
        let len: usize = std::str::from_utf8(len.value)
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| FramingError::Header("Content-Length is not a number".into()))?;
        if len > MAX_MESSAGE {
            return Err(FramingError::TooLarge(len));
        }
        self.buf.advance(consumed);
        self.body_len = Some(len);
        Ok(Some(len))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn messages_split_across_and_within_chunks_come_out_whole() {
        let a = encode(&json!({"jsonrpc": "2.0", "id": 1, "result": "é"}));
        let b = encode(&json!({"jsonrpc": "2.0", "method": "x"}));
        let stream = [a, b].concat();
        let mut d = Decoder::default();
        let mut seen = Vec::new();
        for chunk in stream.chunks(7) {
            d.push(chunk);
            while let Some(m) = d.next_message().unwrap() {
                seen.push(m);
            }
        }
        assert_eq!(
            seen,
            vec![
                json!({"jsonrpc": "2.0", "id": 1, "result": "é"}),
                json!({"jsonrpc": "2.0", "method": "x"})
            ]
        );
        // Content-Type is allowed, header names ignore case.
        d.push(b"content-length: 2\r\nContent-Type: application/vscode-jsonrpc; charset=utf-8\r\n\r\n{}");
        assert_eq!(d.next_message().unwrap(), Some(json!({})));
    }

    #[test]
    fn hostile_output_is_an_error_not_a_growing_buffer() {
        let mut d = Decoder::default();
        d.push(format!("Content-Length: {}\r\n\r\n", MAX_MESSAGE + 1).as_bytes());
        assert_eq!(
            d.next_message(),
            Err(FramingError::TooLarge(MAX_MESSAGE + 1))
        );
        let mut d = Decoder::default();
        d.push(&vec![b'a'; MAX_HEADER + 1]);
        assert!(matches!(d.next_message(), Err(FramingError::Header(_))));
        let mut d = Decoder::default();
        d.push(b"Content-Type: x\r\n\r\n{}");
        assert!(matches!(d.next_message(), Err(FramingError::Header(_))));
        let mut d = Decoder::default();
        d.push(b"Content-Length: 3\r\n\r\nnot");
        assert!(matches!(d.next_message(), Err(FramingError::Json(_))));
    }
}
