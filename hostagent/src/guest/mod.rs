//! The host side of the guest agent protocol: a typed client over one multiplexed connection.
//!
//! [`GuestClient`] starts a session on any connected byte stream (the transport module decides how
//! to get one), checks the protocol version with `hello`, and offers one method per request.
//! Process output and file contents stream through [`ExecStream`] and [`FileDownload`]; nothing is
//! buffered whole on the host unless a caller asks for it ([`ExecStream::collect`]).

mod client;
mod clock;
mod exec;
mod files;
mod ports;
#[cfg(test)]
mod tests;
mod watch;

pub use client::{DEFAULT_CALL_TIMEOUT, GuestClient, unix_now_ns};
pub use clock::{CLOCK_TOLERANCE, ClockOffset};
pub use exec::{ExecEvent, ExecOutput, ExecStream, StdinWriter};
pub use files::FileDownload;
pub use watch::WatchStream;
