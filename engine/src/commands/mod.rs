//! The command layer. Each submodule adds `impl Engine` methods for one area; every front end calls
//! these and nothing lower.
//!
//! - [`sandbox`]: create, get, list, kill, pause, resume, stop, start, timeout, metrics, console.
//! - [`exec`]: run commands (buffered and streaming), background processes, signals, stdin.
//! - [`guest`]: probes of the guest agent (transport round trip, clock skew).
//! - [`run`]: a command run to completion (output budget, grace period, killed when abandoned).
//! - [`files`]: read and write (streamed), list, stat, mkdir, remove, move, chmod, chown.
//! - [`search`]: lines matching a regex, files matching a glob, replace in files, listening ports.
//! - [`sessions`]: named background shells; commands run in them with their own exit codes and logs.
//! - [`settings`]: names, labels, lifecycle rules, activity, templates.
//! - [`tokens`]: revoked tokens (kept by hash until they expire; survive restarts).
//! - [`watch`]: directory watching (changes streamed as they happen).
//! - [`code`]: stateful Python and JavaScript code contexts (the E2B code interpreter's `run_code`).
//! - [`keys`]: API keys: list, create, revoke, rotate.
//! - [`lsp`]: language servers: start, stop, open and close documents, symbols, completions.
//! - [`snapshots`]: signed snapshots and checkpoints: take, list, delete, roll back.
//! - [`suspend`]: pause to disk (with or without memory); resume goes through `start`.
//! - [`archive`]: archive to object storage (disk, memory image) and back, onto any host.
//! - [`backups`]: continuous backup: snapshots of running sandboxes in object storage, restored
//!   as new sandboxes.
//! - [`fork`]: copies of a running sandbox, each restored from one save of it.
//! - [`templates`]: template ready snapshots, which creates restore instead of booting.
//! - [`custom_templates`]: template builds, custom templates, uploads for their `copy` steps.
//! - [`pools`]: warm pools: running sandboxes a create claims in one store transaction.
//! - [`capacity`]: what holds a VM against the host's limits; admission.
//! - [`share`]: the host share: files read and written on the host, whatever the VM's state.
//! - [`edge`]: the edge proxy: tokens and their keys, exposed ports, waking for traffic.
//! - [`egress`]: egress policies: what a sandbox may reach beyond the host, changed at runtime.
//! - [`egress_headers`]: egress policies' header rules: headers (secrets among them) the host
//!   sets on a sandbox's HTTPS requests to given hosts.
//! - [`volumes`]: named persistent volumes, attached (hot, or at create) and mounted in sandboxes.
//! - [`volume_files`]: files in a volume, through the sandbox that has it mounted or in its image.
//! - [`secrets`]: secrets brokered at egress: stored encrypted, granted to sandboxes as
//!   placeholders, handed to the host's egress broker.

pub mod archive;
pub mod backups;
pub mod capacity;
pub mod code;
pub mod custom_templates;
pub mod edge;
pub mod egress;
pub mod egress_headers;
pub mod exec;
pub mod files;
pub mod fork;
pub mod guest;
pub mod keys;
pub mod lsp;
pub mod pools;
pub mod run;
pub mod sandbox;
pub mod search;
pub mod secrets;
pub mod sessions;
pub mod settings;
pub mod share;
pub mod snapshots;
pub mod suspend;
pub mod templates;
pub mod tokens;
pub mod volume_files;
pub mod volumes;
pub mod watch;
