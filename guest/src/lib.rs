//! Platinum's guest agent: PID 1 inside every sandbox VM, serving the host <-> guest protocol
//! (`platinum-protocol`).
//!
//! As PID 1 ([`init::run`]) it boots the VM (modules, root filesystem, pseudo-filesystems,
//! loopback) and serves vsock and virtio-serial. As an ordinary process ([`serve::run`]) it serves
//! the same protocol on Unix sockets, which is how tests drive it without a VM. Either way one
//! [`Agent`] holds the shared state and every connection runs a session over it.

mod agent;
mod exec;
mod files;
mod identity;
pub mod init;
pub mod logging;
mod metrics;
mod ports;
mod reaper;
pub mod serve;
mod session;
mod system;
pub mod transport;
mod trust;
mod users;
mod volumes;

pub use agent::{Agent, AgentConfig, DEFAULT_OUTPUT_RING_BYTES, Mode};

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
