//! Route handlers of `/v1`, one module per resource. Every handler carries `#[utoipa::path]` and is
//! registered only through `utoipa_axum::routes!`, so an undocumented route cannot exist.

pub mod capacity;
pub mod exec;
pub mod files;
pub mod keys;
pub mod pools;
pub mod ports;
pub mod processes;
pub mod sandboxes;
pub mod snapshots;
pub mod templates;

use serde::Deserialize;
use utoipa::IntoParams;

/// The `{id}` path parameter.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SandboxPath {
    /// Sandbox id.
    pub id: String,
}

/// The `{id}` and `{pid}` path parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ProcessPath {
    /// Sandbox id.
    pub id: String,
    /// Guest process id.
    pub pid: u32,
}
