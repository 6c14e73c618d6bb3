//! The Platinum engine: the one typed command layer every front end calls.
//!
//! ```text
//! REST /v1 | MCP | E2B | Daytona | CLI  ->  Engine (commands)  ->  HostAgent  ->  VMM + guest agent
//! ```
//! - [`commands`]: the commands themselves (`impl Engine` methods with typed inputs and outputs).
//! - [`model`]: sandboxes, states and the command shapes (also the REST/MCP wire shapes).
//! - [`error`]: every failure with its stable machine code and HTTP status.
//! - [`store`]: the state store (SQLite embedded; PostgreSQL for multi-host).
//! - [`lifecycle`], [`reconciler`]: background loops for expiry and for VMs that die.
//! - [`auth`]: API keys.

pub mod auth;
mod code;
pub mod commands;
pub mod config;
mod engine;
pub mod error;
pub mod ids;
pub mod lifecycle;
pub mod model;
pub mod reconciler;
pub mod store;
pub mod text;

pub use commands::exec::StreamOptions;
pub use config::EngineConfig;
pub use engine::Engine;
pub use error::{Error, Result};
pub use platinum_hostagent::guest::{ExecEvent, ExecStream, FileDownload};
