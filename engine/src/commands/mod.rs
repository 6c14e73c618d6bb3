//! The command layer. Each submodule adds `impl Engine` methods for one area; every front end calls
//! these and nothing lower.
//!
//! - [`sandbox`]: create, get, list, kill, pause, resume, stop, start, timeout, metrics, console.
//! - [`exec`]: run commands (buffered and streaming), background processes, signals, stdin.
//! - [`files`]: read and write (streamed), list, stat, mkdir, remove, move, chmod, chown.
//! - [`sessions`]: named background shells; commands run in them with their own exit codes and logs.
//! - [`settings`]: names, labels, lifecycle rules, archive, activity, templates.
//! - [`tokens`]: revoked tokens (kept by hash until they expire; survive restarts).
//! - [`watch`]: directory watching (changes streamed as they happen).
//! - [`code`]: stateful Python and JavaScript code contexts (the E2B code interpreter's `run_code`).
//! - [`keys`]: API keys: list, create, revoke, rotate.

pub mod code;
pub mod exec;
pub mod files;
pub mod keys;
pub mod sandbox;
pub mod sessions;
pub mod settings;
pub mod tokens;
pub mod watch;
