//! End-to-end tests of the agent: each test starts `platinum-guest serve --unix` and drives it
//! through `platinum_protocol::Mux` exactly as the host agent does.

mod common;
mod exec;
mod files;
mod ports;
mod session;
#[path = "../support/mod.rs"]
mod support;
mod watch;
