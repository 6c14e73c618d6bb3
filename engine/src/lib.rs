//! The Platinum engine: the one typed command layer every front end calls.
//!
//! ```text
//! REST /v1 | MCP | E2B | Daytona | CLI  ->  Engine (commands)  ->  HostAgent  ->  VMM + guest agent
//! ```
//! - [`commands`]: the commands themselves (`impl Engine` methods with typed inputs and outputs).
//! - [`model`]: sandboxes, states and the command shapes (also the REST/MCP wire shapes).
//! - [`error`]: every failure with its stable machine code and HTTP status.
//! - [`store`]: the state store (SQLite, embedded; a PostgreSQL store for multi-host is planned,
//!   not yet written).
//! - [`lifecycle`], [`reconciler`]: background loops for expiry and for VMs that die; a third
//!   samples every running sandbox's metrics into a bounded history.
//! - [`auth`]: API keys.
//! - [`builds`]: custom templates: builds in builder VMs, layer cache, uploads, logs.
//! - [`process`]: a guest process as front ends see it (stream, stdin, exit status, PTY size).
//! - [`secrets`]: signing keys kept in the data directory.
//! - [`snapshots`]: snapshot manifests (file hashes) and the Ed25519 keys that sign them.
//! - [`env`]: the default user and home, and the rule for environment variable names.
//! - [`lsp`]: language servers running in sandboxes (the types; the commands are
//!   [`commands::lsp`]).

pub mod auth;
pub mod backups;
pub mod builds;
mod code;
pub mod commands;
pub mod config;
pub mod edge;
mod engine;
pub mod env;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod lsp;
mod metrics_history;
pub mod model;
mod pools;
pub mod process;
pub mod reconciler;
pub mod secrets;
mod sessions;
pub mod snapshots;
pub mod store;
#[cfg(test)]
mod testing;
pub mod text;
pub mod vault;

pub use commands::exec::StreamOptions;
pub use commands::files::CreateAs;
pub use commands::run::{HOST_GRACE, Retain, Run, RunEvent, RunOutput};
pub use config::EngineConfig;
pub use engine::Engine;
pub use error::{Error, ErrorCode, Result};
pub use process::{ExecEvent, ExecStream, ExitStatus, FileDownload, PtySize, SIGKILL, StdinWriter};
