//! Warm pools: `/v1/pools`. A pool keeps sandboxes of one template (or snapshot) and size
//! running; a create of that kind claims one instead of starting a VM.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use platinum_engine::Engine;
use platinum_engine::model::{CreatePool, Pool, PoolList, UpdatePool};
use serde::Deserialize;
use std::sync::Arc;
use utoipa::IntoParams;

use crate::error::{ApiJson, ApiResult, ErrorBody};

/// The `{id}` of a pool.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct PoolPath {
    /// Pool id.
    pub id: String,
}

/// Create a warm pool.
///
/// Keeps `size` sandboxes of a template (default: the server's) or of a named snapshot running,
/// at one size; creates of that template (or snapshot) and size with no `boot: cold` and no
/// `internet: false` claim one of them — one store transaction, no VM work — and get the
/// caller's name, environment, metadata, timeout and lifecycle. The pool refills in the
/// background. Its sandboxes count against the host's capacity and are not listed.
#[utoipa::path(post, path = "/v1/pools", tag = "pools", operation_id = "createPool",
    request_body = CreatePool,
    responses(
        (status = 201, description = "Created; it fills in the background", body = Pool),
        (status = 400, description = "Invalid size or template", body = ErrorBody),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such template or snapshot", body = ErrorBody),
        (status = 409, description = "A pool of that kind and size exists", body = ErrorBody),
        (status = 503, description = "The pool alone would exceed the host's capacity", body = ErrorBody)))]
pub async fn create_pool(
    State(engine): State<Arc<Engine>>,
    ApiJson(req): ApiJson<CreatePool>,
) -> ApiResult<(StatusCode, Json<Pool>)> {
    Ok((StatusCode::CREATED, Json(engine.create_pool(req).await?)))
}

/// List warm pools.
#[utoipa::path(get, path = "/v1/pools", tag = "pools", operation_id = "listPools",
    responses(
        (status = 200, description = "Pools, oldest first, with how many sandboxes are ready", body = PoolList),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody)))]
pub async fn list_pools(State(engine): State<Arc<Engine>>) -> ApiResult<Json<PoolList>> {
    Ok(Json(PoolList {
        pools: engine.list_pools().await?,
    }))
}

/// Get a warm pool.
#[utoipa::path(get, path = "/v1/pools/{id}", tag = "pools", operation_id = "getPool",
    params(PoolPath),
    responses(
        (status = 200, description = "The pool", body = Pool),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody)))]
pub async fn get_pool(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<PoolPath>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(engine.get_pool(&p.id).await?))
}

/// Resize a warm pool.
///
/// 0 drains it. It refills or drains in the background.
#[utoipa::path(patch, path = "/v1/pools/{id}", tag = "pools", operation_id = "updatePool",
    params(PoolPath),
    request_body = UpdatePool,
    responses(
        (status = 200, description = "Resized", body = Pool),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody),
        (status = 503, description = "The pool alone would exceed the host's capacity", body = ErrorBody)))]
pub async fn update_pool(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<PoolPath>,
    ApiJson(req): ApiJson<UpdatePool>,
) -> ApiResult<Json<Pool>> {
    Ok(Json(engine.resize_pool(&p.id, req).await?))
}

/// Delete a warm pool.
///
/// The sandboxes waiting in it are deleted; sandboxes claimed from it are not affected.
#[utoipa::path(delete, path = "/v1/pools/{id}", tag = "pools", operation_id = "deletePool",
    params(PoolPath),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "Missing or invalid API key", body = ErrorBody),
        (status = 404, description = "No such pool", body = ErrorBody)))]
pub async fn delete_pool(
    State(engine): State<Arc<Engine>>,
    Path(p): Path<PoolPath>,
) -> ApiResult<StatusCode> {
    engine.delete_pool(&p.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
