//! Moving file contents in and out of the guest, streamed in both directions.

use bytes::Bytes;
use futures::{Stream, StreamExt};
use platinum_protocol::{
    FileEntry, GuestEvent, GuestMessage, PathRequest, Request, StreamReceiver, WriteFile, channel,
};

use super::client::{
    Frame, GuestClient, decode, expect_outcome, guest_deadline, next_frame, next_message, outcome,
    parse_message, protocol,
};
use crate::error::{Error, Result};

/// A file being read from the guest: its entry, then its bytes.
pub struct FileDownload {
    /// The file.
    pub entry: FileEntry,
    rx: StreamReceiver,
    done: bool,
}

impl FileDownload {
    /// The next chunk; `None` at the end of the file (after the guest confirmed success).
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        let next = guest_deadline(
            || format!("the next chunk of {}", self.entry.path),
            next_frame(&mut self.rx),
        )
        .await?;
        match next {
            Some(Frame::Data {
                channel: channel::STDOUT,
                bytes,
            }) => Ok(Some(bytes)),
            Some(Frame::Msg(m)) => {
                self.done = true;
                match parse_message(&m)? {
                    GuestMessage::Outcome(o) => outcome(o).map(|_| None),
                    GuestMessage::Event(e) => Err(protocol(&format!("unexpected event {e:?}"))),
                }
            }
            Some(other) => Err(protocol(&format!("unexpected {other:?} in a file stream"))),
            None => Err(protocol("file stream closed early")),
        }
    }

    /// The contents as a `Stream` (for HTTP bodies).
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> + Send + 'static {
        futures::stream::unfold(self, |mut dl| async move {
            match dl.chunk().await {
                Ok(Some(b)) => Some((Ok(b), dl)),
                Ok(None) => None,
                Err(e) => {
                    dl.done = true;
                    Some((Err(e), dl))
                }
            }
        })
    }
}

impl GuestClient {
    /// Opens a file for reading.
    pub async fn read_file(&self, at: PathRequest) -> Result<FileDownload> {
        let (_tx, rx, first) = self.open_streaming(&Request::ReadFile(at)).await?;
        match first {
            GuestMessage::Event(GuestEvent::FileInfo(entry)) => Ok(FileDownload {
                entry,
                rx,
                done: false,
            }),
            GuestMessage::Outcome(o) => {
                outcome(o)?;
                Err(protocol("read_file ended before file_info"))
            }
            GuestMessage::Event(e) => Err(protocol(&format!("unexpected event {e:?}"))),
        }
    }

    /// Writes a file from a stream of chunks. If `body` fails, the write is aborted and the guest
    /// discards the partial file (the destination keeps its old content).
    pub async fn write_file<S, E>(&self, req: WriteFile, body: S) -> Result<FileEntry>
    where
        S: Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<Error>,
    {
        let stream = self.mux().open_json(&Request::WriteFile(req))?;
        let (tx, mut rx) = stream.split();
        let mut body = std::pin::pin!(body);
        loop {
            tokio::select! {
                biased;
                // The guest answers early only on failure (bad path, permission denied, disk full).
                early = expect_outcome(&mut rx) => {
                    tx.reset("write aborted");
                    let value = early?;
                    return Err(protocol(&format!("guest finished a write before its end: {value}")));
                }
                next = body.next() => match next {
                    Some(Ok(chunk)) => {
                        if let Err(e) = tx.send_data(channel::STDIN, &chunk).await {
                            return Err(early_error(&mut rx).await.unwrap_or(e.into()));
                        }
                    }
                    Some(Err(e)) => {
                        tx.reset("body failed");
                        return Err(e.into());
                    }
                    None => break,
                }
            }
        }
        tx.send_eof(channel::STDIN)?;
        decode(
            guest_deadline(
                || "the outcome of guest request write_file".into(),
                expect_outcome(&mut rx),
            )
            .await?,
        )
    }
}

/// After a failed send, the guest's own explanation (if it sent one) beats the transport error.
async fn early_error(rx: &mut StreamReceiver) -> Option<Error> {
    match tokio::time::timeout(std::time::Duration::from_secs(1), next_message(rx)).await {
        Ok(Ok(GuestMessage::Outcome(o))) => outcome(o).err(),
        _ => None,
    }
}
