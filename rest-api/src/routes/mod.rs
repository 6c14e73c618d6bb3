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
pub mod share;
pub mod snapshots;
pub mod templates;
pub mod volumes;

use axum::body::BodyDataStream;
use futures::StreamExt;
use serde::Deserialize;
use utoipa::IntoParams;

/// How long a refused upload's remaining body is read before answering.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads (and drops) a bounded rest of a refused upload's body, so the client is done sending
/// and sees the answer instead of a reset connection.
pub(crate) async fn drain_refused(stream: &mut BodyDataStream) {
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
}

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
