//! The Connect protocol with its JSON codec, the way envd and the E2B SDKs speak it.
//!
//! 1. Every RPC is `POST /{package.Service}/{Method}`.
//! 2. Unary: `Content-Type: application/json`, the body is one JSON message; success is 200 with
//!    a JSON message, failure the Connect status of the code with `{"code", "message"}`.
//! 3. Streaming (`application/connect+json`): bodies are envelopes, a flag byte, a 4-byte
//!    big-endian length and a JSON message. The response is always 200; messages have flag 0 and
//!    the stream ends with one envelope of flag 2 carrying `{}` or `{"error": {...}}`, so errors
//!    after (or instead of) the first message travel in that last envelope.
//! 4. Requests are parsed leniently (proto3 JSON): camelCase and snake_case names, `bytes` as
//!    base64, enums by name or number, 64-bit integers as strings or numbers; unknown fields are
//!    ignored. Replies use camelCase, enum names and 64-bit integers as strings.
//!
//! The binary codec (`application/proto`) is not spoken: such requests get 415.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer, Error as _};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::error::{ConnectCode, ConnectError};

/// Envelope flag of the end-of-stream message.
pub const FLAG_END: u8 = 0x02;
/// Envelope flag of a compressed message (never sent; refused when received).
const FLAG_COMPRESSED: u8 = 0x01;
/// Largest message accepted.
pub const MAX_MESSAGE: usize = 32 << 20;
/// Silence on a stream after which a keepalive is sent when the client names no interval.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(90);
/// Envelopes buffered for a slow client before the producer waits.
const STREAM_BUFFER: usize = 32;

/// Frames `payload` as an envelope.
pub fn envelope(flag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(flag);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

/// Splits a byte stream into envelopes.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete envelope (flag, message), if one is buffered.
    pub fn next_envelope(&mut self) -> Result<Option<(u8, Bytes)>, ConnectError> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        let flag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(ConnectError::new(
                ConnectCode::ResourceExhausted,
                format!("message of {len} bytes is larger than {MAX_MESSAGE}"),
            ));
        }
        if flag & FLAG_COMPRESSED != 0 {
            return Err(ConnectError::new(
                ConnectCode::Unimplemented,
                "compressed messages are not supported",
            ));
        }
        if self.buf.len() < 5 + len {
            return Ok(None);
        }
        self.buf.advance(5);
        Ok(Some((flag, self.buf.split_to(len).freeze())))
    }

    /// Bytes received that do not form a whole envelope.
    pub fn leftover(&self) -> usize {
        self.buf.len()
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim())
        .unwrap_or_default()
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ConnectError> {
    let bytes = if bytes.is_empty() { &b"{}"[..] } else { bytes };
    serde_json::from_slice(bytes).map_err(|e| ConnectError::invalid(format!("bad message: {e}")))
}

/// A request the codec cannot read; answered with 415, as Connect says.
#[derive(Debug)]
pub struct Refused(String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, self.0).into_response()
    }
}

fn unsupported_media_type(headers: &HeaderMap) -> Refused {
    Refused(format!(
        "content type {:?} is not supported; use the JSON codec",
        content_type(headers)
    ))
}

/// Reads a unary request.
pub async fn unary_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<Result<T, ConnectError>, Refused> {
    if content_type(headers) != "application/json" {
        return Err(unsupported_media_type(headers));
    }
    Ok(match axum::body::to_bytes(body, MAX_MESSAGE).await {
        Ok(bytes) => parse(&bytes),
        Err(e) => Err(ConnectError::invalid(format!("reading the request: {e}"))),
    })
}

/// Reads the single message of a server-streaming request.
pub async fn stream_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<Result<T, ConnectError>, Refused> {
    if content_type(headers) != "application/connect+json" {
        return Err(unsupported_media_type(headers));
    }
    let bytes = match axum::body::to_bytes(body, MAX_MESSAGE + 5).await {
        Ok(b) => b,
        Err(e) => {
            return Ok(Err(ConnectError::invalid(format!(
                "reading the request: {e}"
            ))));
        }
    };
    let mut decoder = Decoder::default();
    decoder.push(&bytes);
    Ok(match decoder.next_envelope() {
        Ok(Some((_, message))) => parse(&message),
        Ok(None) => Err(ConnectError::invalid("the request has no message")),
        Err(e) => Err(e),
    })
}

/// Reads the envelopes of a client-streaming request as they arrive.
pub struct RequestStream {
    body: axum::body::BodyDataStream,
    decoder: Decoder,
}

impl RequestStream {
    /// Starts reading; the content type must be `application/connect+json`.
    pub fn new(headers: &HeaderMap, body: Body) -> Result<Self, Refused> {
        if content_type(headers) != "application/connect+json" {
            return Err(unsupported_media_type(headers));
        }
        Ok(RequestStream {
            body: body.into_data_stream(),
            decoder: Decoder::default(),
        })
    }

    /// The next message; `None` when the client closed the body (or sent end-of-stream).
    pub async fn next<T: DeserializeOwned>(&mut self) -> Result<Option<T>, ConnectError> {
        loop {
            if let Some((flag, message)) = self.decoder.next_envelope()? {
                if flag & FLAG_END != 0 {
                    return Ok(None);
                }
                return parse(&message).map(Some);
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.decoder.push(&chunk),
                Some(Err(e)) => {
                    return Err(ConnectError::new(
                        ConnectCode::Canceled,
                        format!("reading the request stream: {e}"),
                    ));
                }
                None if self.decoder.leftover() == 0 => return Ok(None),
                None => return Err(ConnectError::invalid("the request ended inside a message")),
            }
        }
    }
}

/// A unary success.
pub fn unary_ok(message: serde_json::Value) -> Response {
    (
        StatusCode::OK,
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        message.to_string(),
    )
        .into_response()
}

/// The sending side of a streaming response.
pub struct StreamSink {
    tx: mpsc::Sender<Bytes>,
}

/// The client went away; stop producing.
#[derive(Debug)]
pub struct Gone;

impl StreamSink {
    /// Sends one message.
    pub async fn send(&self, message: &serde_json::Value) -> Result<(), Gone> {
        let payload = message.to_string();
        self.tx
            .send(envelope(0, payload.as_bytes()))
            .await
            .map_err(|_| Gone)
    }

    /// Ends the stream, successfully or with an error.
    pub async fn finish(self, error: Option<ConnectError>) {
        let end = match &error {
            None => serde_json::json!({}),
            Some(e) => serde_json::json!({ "error": e.body() }),
        };
        let _ = self
            .tx
            .send(envelope(FLAG_END, end.to_string().as_bytes()))
            .await;
    }

    /// Resolves when the client has gone away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

/// A streaming response and the sink that feeds it. Dropping the sink without `finish` cuts the
/// response off; the client then sees a broken stream.
pub fn streaming() -> (StreamSink, Response) {
    let (tx, rx) = mpsc::channel::<Bytes>(STREAM_BUFFER);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    let response = (
        StatusCode::OK,
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("application/connect+json"),
        )],
        Body::from_stream(body),
    )
        .into_response();
    (StreamSink { tx }, response)
}

/// A streaming response that only carries `error` (a failure before the first message).
pub async fn stream_error(error: ConnectError) -> Response {
    let (sink, response) = streaming();
    sink.finish(Some(error)).await;
    response
}

/// `Connect-Timeout-Ms`, if the client set one.
pub fn timeout_ms(headers: &HeaderMap) -> Option<u64> {
    headers
        .get("connect-timeout-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ms| *ms > 0)
}

/// How long a stream may stay silent before a keepalive (`Keepalive-Ping-Interval`, seconds).
pub fn keepalive_interval(headers: &HeaderMap) -> Duration {
    headers
        .get("keepalive-ping-interval")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_KEEPALIVE)
}

/// `bytes` fields: base64 (standard or URL-safe, padded or not).
pub fn base64_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Bytes>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    let trimmed = text.trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(trimmed))
        .map(|b| Some(Bytes::from(b)))
        .map_err(|e| D::Error::custom(format!("bad base64: {e}")))
}

/// Encodes `bytes` fields.
pub fn to_base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Integers that may come as JSON numbers or strings.
pub fn flexible_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        Num(u32),
        Text(String),
    }
    match Option::<N>::deserialize(d)? {
        None => Ok(None),
        Some(N::Num(n)) => Ok(Some(n)),
        Some(N::Text(t)) => t
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("{t:?} is not a number"))),
    }
}

/// Enums that may come by name (`SIGNAL_SIGKILL`) or by number (9); returns the number, or the
/// name's value from `names`.
pub fn enum_value(value: &serde_json::Value, names: &[(&str, i64)]) -> Option<i64> {
    match value {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => names.iter().find(|(n, _)| n == s).map(|(_, v)| *v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_round_trip_across_chunk_boundaries() {
        let mut wire = envelope(0, br#"{"a":1}"#).to_vec();
        wire.extend_from_slice(&envelope(FLAG_END, b"{}"));
        let mut d = Decoder::default();
        for chunk in wire.chunks(3) {
            d.push(chunk);
        }
        assert_eq!(
            d.next_envelope().unwrap(),
            Some((0, Bytes::from_static(br#"{"a":1}"#)))
        );
        assert_eq!(
            d.next_envelope().unwrap(),
            Some((FLAG_END, Bytes::from_static(b"{}")))
        );
        assert_eq!(d.next_envelope().unwrap(), None);
        let mut d = Decoder::default();
        d.push(&[1, 0, 0, 0, 1, b'x']);
        assert_eq!(
            d.next_envelope().unwrap_err().code,
            ConnectCode::Unimplemented
        );
    }

    #[test]
    fn proto3_json_inputs_are_accepted() {
        #[derive(Deserialize)]
        struct M {
            #[serde(default, deserialize_with = "base64_bytes")]
            data: Option<Bytes>,
            #[serde(default, deserialize_with = "flexible_u32")]
            pid: Option<u32>,
        }
        let m: M = serde_json::from_str(r#"{"data":"aGk=","pid":"12"}"#).unwrap();
        assert_eq!(
            (m.data.unwrap(), m.pid),
            (Bytes::from_static(b"hi"), Some(12))
        );
        let m: M = serde_json::from_str(r#"{"data":"aGk","pid":7}"#).unwrap();
        assert_eq!(
            (m.data.unwrap(), m.pid),
            (Bytes::from_static(b"hi"), Some(7))
        );
        let names = [("SIGNAL_SIGKILL", 9)];
        assert_eq!(
            enum_value(&serde_json::json!("SIGNAL_SIGKILL"), &names),
            Some(9)
        );
        assert_eq!(enum_value(&serde_json::json!(15), &names), Some(15));
        assert_eq!(enum_value(&serde_json::json!("NOPE"), &names), None);
    }

    #[test]
    fn headers_give_deadlines_and_keepalives() {
        let mut h = HeaderMap::new();
        assert_eq!(
            (timeout_ms(&h), keepalive_interval(&h)),
            (None, DEFAULT_KEEPALIVE)
        );
        h.insert("connect-timeout-ms", "60000".parse().unwrap());
        h.insert("keepalive-ping-interval", "50".parse().unwrap());
        assert_eq!(timeout_ms(&h), Some(60_000));
        assert_eq!(keepalive_interval(&h), Duration::from_secs(50));
    }
}
