//! Route handlers of `/v1`, one module per resource. Every handler carries `#[utoipa::path]` and is
//! registered only through `utoipa_axum::routes!`, so an undocumented route cannot exist.

pub mod backups;
pub mod capacity;
pub mod edge;
pub mod egress;
pub mod exec;
pub mod files;
pub mod keys;
pub mod pools;
pub mod ports;
pub mod processes;
pub mod sandboxes;
pub mod secrets;
pub mod share;
pub mod snapshots;
pub mod templates;
pub mod volumes;

use std::sync::Arc;

use axum::body::{Body, BodyDataStream};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::Deserialize;
use tokio::sync::Mutex;
use utoipa::IntoParams;

/// How long a refused upload's remaining body is read before answering.
const DRAIN_LIMIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Reads (and drops) a bounded rest of a refused upload's body, so the client is done sending
/// and sees the answer instead of a reset connection.
pub(crate) async fn drain_refused(stream: &mut BodyDataStream) {
    let drain = async { while let Some(Ok(_)) = stream.next().await {} };
    let _ = tokio::time::timeout(DRAIN_LIMIT, drain).await;
}

/// A request body lent to a command that needs an owned (`'static`) stream, while the handler
/// keeps the means to drain what the command left unread when it refuses.
pub(crate) struct LentBody(Arc<Mutex<BodyDataStream>>);

impl LentBody {
    pub(crate) fn new(body: Body) -> Self {
        Self(Arc::new(Mutex::new(body.into_data_stream())))
    }

    /// The body as an owned stream; each item is read through the shared handle.
    pub(crate) fn stream(&self) -> impl Stream<Item = Result<Bytes, axum::Error>> + Send + 'static {
        futures::stream::unfold(self.0.clone(), |body| async move {
            let item = body.lock().await.next().await;
            item.map(|item| (item, body))
        })
    }

    /// Drains the rest after a refusal (see [`drain_refused`]).
    pub(crate) async fn drain(&self) {
        drain_refused(&mut *self.0.lock().await).await;
    }
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
