//! The host's capacity: `/v1/capacity`.

use axum::Json;
use axum::extract::State;
use platinum_engine::Engine;
use platinum_engine::model::Capacity;
use std::sync::Arc;

use crate::error::{ApiResult, ErrorBody};

/// The host's capacity.
///
/// What holds a VM now — callers' sandboxes and warm pools' sandboxes apart (pooled sandboxes are
/// not listed, but they count) — against the limits a new sandbox is admitted against; a create
/// past them gets `503 capacity_exhausted`.
#[utoipa::path(get, path = "/v1/capacity", tag = "system", operation_id = "getCapacity",
    responses(
        (status = 200, description = "Usage and limits", body = Capacity),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn capacity(State(engine): State<Arc<Engine>>) -> ApiResult<Json<Capacity>> {
    Ok(Json(engine.capacity().await?))
}
