//! Watching a guest directory: the `watch` request as a stream of [`FsEvent`]s.
//!
//! [`GuestClient::watch`] returns once the guest reports the watches in place (`watching`), so a
//! change made after it returns is always seen. Dropping the [`WatchStream`] resets the request,
//! which ends the watch in the guest.

use platinum_protocol::{
    FsEvent, GuestEvent, GuestMessage, PathRequest, Request, StreamReceiver, StreamSender,
};

use super::client::{Frame, GuestClient, next_frame, outcome, parse_message, protocol};
use crate::error::Result;

/// Changes under a watched guest directory. Dropping it stops the watch.
pub struct WatchStream {
    // Held so the request stays open: dropping both halves resets it, which stops the guest.
    _tx: StreamSender,
    rx: StreamReceiver,
    done: bool,
}

impl GuestClient {
    /// Watches a directory (and, with `recursive`, everything below it). A directory on a
    /// network or FUSE filesystem is refused unless `allow_network_mounts`.
    pub async fn watch(
        &self,
        at: PathRequest,
        recursive: bool,
        allow_network_mounts: bool,
    ) -> Result<WatchStream> {
        let (tx, rx, first) = self
            .open_streaming(&Request::Watch {
                at,
                recursive,
                allow_network_mounts,
            })
            .await?;
        match first {
            GuestMessage::Event(GuestEvent::Watching) => Ok(WatchStream {
                _tx: tx,
                rx,
                done: false,
            }),
            GuestMessage::Outcome(o) => {
                outcome(o)?;
                Err(protocol("watch ended before it started"))
            }
            GuestMessage::Event(e) => Err(protocol(&format!("expected watching, got {e:?}"))),
        }
    }
}

impl WatchStream {
    /// The next change; `None` once the watched directory itself is gone.
    pub async fn next(&mut self) -> Result<Option<FsEvent>> {
        if self.done {
            return Ok(None);
        }
        match next_frame(&mut self.rx).await? {
            Some(Frame::Msg(m)) => match parse_message(&m)? {
                GuestMessage::Event(GuestEvent::FsEvent(event)) => Ok(Some(event)),
                GuestMessage::Event(other) => Err(protocol(&format!("unexpected event {other:?}"))),
                GuestMessage::Outcome(o) => {
                    self.done = true;
                    outcome(o)?;
                    Ok(None)
                }
            },
            Some(other) => Err(protocol(&format!("unexpected {other:?} in a watch stream"))),
            None => Err(protocol("watch stream closed without an outcome")),
        }
    }
}
