//! Running processes in the guest: the exec/attach stream and its buffered form.

use bytes::{Bytes, BytesMut};
use platinum_protocol::{
    ExecSpec, ExitStatus, GuestEvent, GuestMessage, Request, StreamReceiver, StreamSender, channel,
};

use super::client::{
    Frame, GuestClient, decode, guest_deadline, next_frame, next_message, outcome, parse_message,
    protocol,
};
use crate::error::Result;

/// Something a running process produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecEvent {
    /// Bytes on stdout (or the PTY).
    Stdout(Bytes),
    /// Bytes on stderr.
    Stderr(Bytes),
    /// Replayed output began after this many bytes had been dropped from the guest's buffer.
    Lost(u64),
    /// The process ended; the last event of a stream.
    Exited(ExitStatus),
}

/// Live output of one process, plus its stdin. Dropping it detaches: the process keeps running.
pub struct ExecStream {
    pid: u32,
    tx: StreamSender,
    rx: StreamReceiver,
    done: bool,
}

/// A handle for writing a process's stdin while another task reads its output.
#[derive(Clone)]
pub struct StdinWriter {
    tx: StreamSender,
}

impl StdinWriter {
    /// Writes bytes to stdin (waits for flow-control credit).
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        Ok(self.tx.send_data(channel::STDIN, data).await?)
    }

    /// Closes stdin.
    pub fn close(&self) -> Result<()> {
        Ok(self.tx.send_eof(channel::STDIN)?)
    }
}

/// Everything a finished process wrote, as a caller with a byte limit saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// Guest pid.
    pub pid: u32,
    /// stdout (truncated at the limit).
    pub stdout: Bytes,
    /// stderr (truncated at the limit).
    pub stderr: Bytes,
    /// True when output beyond the limit was discarded.
    pub truncated: bool,
    /// How it ended.
    pub exit: ExitStatus,
}

impl GuestClient {
    /// Starts a process. Returns once the guest reports it running (spawn errors come back here).
    pub async fn exec(&self, spec: ExecSpec) -> Result<ExecStream> {
        self.open_process(&Request::Exec(spec)).await
    }

    /// Attaches to a process started earlier.
    pub async fn attach(&self, pid: u32, replay: bool) -> Result<ExecStream> {
        self.open_process(&Request::Attach { pid, replay }).await
    }

    async fn open_process(&self, request: &Request) -> Result<ExecStream> {
        let (tx, rx, first) = self.open_streaming(request).await?;
        match first {
            GuestMessage::Event(GuestEvent::Started { pid }) => Ok(ExecStream {
                pid,
                tx,
                rx,
                done: false,
            }),
            GuestMessage::Outcome(o) => {
                // A failure before start; an `ok` here would be a protocol error.
                outcome(o)?;
                Err(protocol("process stream ended before it started"))
            }
            GuestMessage::Event(other) => {
                Err(protocol(&format!("expected started, got {other:?}")))
            }
        }
    }
}

impl ExecStream {
    /// Guest pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A writer for this process's stdin.
    pub fn stdin(&self) -> StdinWriter {
        StdinWriter {
            tx: self.tx.clone(),
        }
    }

    /// The next event; `None` after [`ExecEvent::Exited`] has been returned.
    pub async fn next(&mut self) -> Result<Option<ExecEvent>> {
        if self.done {
            return Ok(None);
        }
        match next_frame(&mut self.rx).await? {
            Some(Frame::Data {
                channel: channel::STDOUT,
                bytes,
            }) => Ok(Some(ExecEvent::Stdout(bytes))),
            Some(Frame::Data {
                channel: channel::STDERR,
                bytes,
            }) => Ok(Some(ExecEvent::Stderr(bytes))),
            Some(Frame::Data { channel, .. }) => {
                Err(protocol(&format!("data on unknown channel {channel}")))
            }
            Some(Frame::Msg(m)) => match parse_message(&m)? {
                GuestMessage::Event(GuestEvent::Lost { bytes }) => Ok(Some(ExecEvent::Lost(bytes))),
                GuestMessage::Event(GuestEvent::Exited(status)) => {
                    // The outcome that follows repeats the status; read it so the stream ends cleanly.
                    self.done = true;
                    let last = guest_deadline(
                        || "the outcome after a process exit".into(),
                        next_message(&mut self.rx),
                    )
                    .await?;
                    if let GuestMessage::Outcome(o) = last {
                        decode::<ExitStatus>(outcome(o)?)?;
                    }
                    Ok(Some(ExecEvent::Exited(status)))
                }
                GuestMessage::Event(other) => Err(protocol(&format!("unexpected event {other:?}"))),
                GuestMessage::Outcome(o) => {
                    self.done = true;
                    outcome(o)?;
                    Err(protocol("process stream ended without an exit event"))
                }
            },
            None => Err(protocol("process stream closed without an exit event")),
        }
    }

    /// Reads until exit, keeping at most `limit` bytes of each of stdout and stderr.
    pub async fn collect(mut self, limit: usize) -> Result<ExecOutput> {
        let (mut out, mut err) = (BytesMut::new(), BytesMut::new());
        let mut truncated = false;
        loop {
            match self.next().await? {
                Some(ExecEvent::Stdout(b)) => truncated |= append_capped(&mut out, &b, limit),
                Some(ExecEvent::Stderr(b)) => truncated |= append_capped(&mut err, &b, limit),
                Some(ExecEvent::Lost(_)) => truncated = true,
                Some(ExecEvent::Exited(exit)) => {
                    return Ok(ExecOutput {
                        pid: self.pid,
                        stdout: out.freeze(),
                        stderr: err.freeze(),
                        truncated,
                        exit,
                    });
                }
                None => return Err(protocol("process stream ended twice")),
            }
        }
    }
}

fn append_capped(buf: &mut BytesMut, bytes: &[u8], limit: usize) -> bool {
    let room = limit.saturating_sub(buf.len());
    buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
    bytes.len() > room
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capping_keeps_the_prefix_and_reports_truncation() {
        let mut b = BytesMut::new();
        assert!(!append_capped(&mut b, b"abc", 5));
        assert!(append_capped(&mut b, b"defg", 5));
        assert_eq!(&b[..], b"abcde");
        assert!(append_capped(&mut b, b"x", 5));
    }
}
