//! The `platinum` binary's library: the server assembly and the CLI commands.
//!
//! - [`server`]: wires store, host agent, engine and front ends into one HTTP server.
//! - [`agent_binary`]: finds the static guest agent to pack into images.
//! - [`deps`]: host dependency checks and installation (`platinum up`, `platinum doctor`).
//! - [`cli`]: the command-line interface.
//! - [`client`]: the HTTP client the CLI uses to talk to a server.
//! - [`logging`]: tracing setup.

pub mod agent_binary;
pub mod cli;
pub mod client;
pub mod deps;
pub mod logging;
pub mod server;
