//! Newline-delimited JSON (`application/x-ndjson`) responses: one JSON value per line, each
//! written as soon as it is produced.

use axum::body::Body;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc;

/// The media type of every NDJSON response.
pub const CONTENT_TYPE_NDJSON: &str = "application/x-ndjson";

/// `value` as one NDJSON line (JSON plus `\n`).
pub fn line<T: Serialize + ?Sized>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// A `200` response streaming `body` (lines made with [`line`]); an `Err` item cuts the
/// response short, which clients see as a broken stream.
pub fn response<S>(body: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    (
        [(CONTENT_TYPE, CONTENT_TYPE_NDJSON)],
        Body::from_stream(body),
    )
        .into_response()
}

/// A `200` response streaming what is sent on the returned channel's receiver, until every
/// sender is dropped; the sender's `closed()` tells a producer that the client went away.
pub fn channel_response(rx: mpsc::Receiver<Result<Bytes, std::io::Error>>) -> Response {
    response(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (b, rx))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_json_and_a_newline() {
        assert_eq!(
            line(&serde_json::json!({"a": 1})),
            Bytes::from_static(b"{\"a\":1}\n")
        );
    }

    #[tokio::test]
    async fn a_channel_streams_until_its_senders_are_gone() {
        let (tx, rx) = mpsc::channel(4);
        let resp = channel_response(rx);
        assert_eq!(resp.headers()[CONTENT_TYPE], CONTENT_TYPE_NDJSON);
        tx.send(Ok(line(&1))).await.unwrap();
        tx.send(Ok(line(&"two"))).await.unwrap();
        drop(tx);
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        assert_eq!(&body[..], b"1\n\"two\"\n");
    }
}
