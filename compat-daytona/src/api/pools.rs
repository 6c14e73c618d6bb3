//! Daytona's warm pools (`/warm-pools`, `daytona.warm_pool.list/create/update/delete`) over the
//! engine's pools. A Daytona snapshot is a Platinum template (pooled at the server's default
//! size, what a Daytona create without resources gets) or a snapshot taken of a sandbox (pooled
//! at its size); creates of that snapshot then claim a warm sandbox.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platinum_engine::model::{CreatePool, Pool, UpdatePool};
use serde::Deserialize;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::error::{DJson, DPath, DResult, DaytonaError};

/// Body of `POST /warm-pools`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateWarmPool {
    /// Snapshot (template) name or id.
    snapshot: String,
    /// Sandboxes to keep ready (at least 1).
    pool: u32,
    /// Region: this host is the only one.
    #[serde(default)]
    target: Option<String>,
}

/// Body of `PATCH /warm-pools/{id}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateWarmPool {
    /// New size; 0 drains the pool.
    pool: u32,
}

/// The `WarmPool` DTO.
fn dto(ctx: &Ctx, p: &Pool) -> Value {
    let at = |t: time::OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
    let disk_gib = ctx
        .engine
        .templates()
        .into_iter()
        .find(|t| t.name == p.template)
        .map_or(0, |t| t.disk_mib.div_ceil(1024));
    json!({
        "id": p.id,
        "organizationId": "local",
        "snapshot": p.snapshot.clone().unwrap_or_else(|| p.template.clone()),
        "target": ctx.config.target,
        "pool": p.size,
        "currentSize": p.ready,
        "cpu": p.vcpus,
        "mem": u64::from(p.memory_mib).div_ceil(1024),
        "disk": disk_gib,
        "osUser": "user",
        "env": {},
        "errorReason": p.error,
        "createdAt": at(p.created_at),
        "updatedAt": at(p.updated_at),
    })
}

/// `GET /warm-pools`.
pub async fn list(State(ctx): State<Ctx>) -> DResult<Json<Value>> {
    let pools = ctx.engine.list_pools().await?;
    Ok(Json(Value::Array(
        pools.iter().map(|p| dto(&ctx, p)).collect(),
    )))
}

/// `POST /warm-pools`: 201 with the pool, which fills in the background.
pub async fn create(
    State(ctx): State<Ctx>,
    DJson(req): DJson<CreateWarmPool>,
) -> DResult<(StatusCode, Json<Value>)> {
    if req.pool == 0 {
        return Err(DaytonaError::bad_request("pool must be at least 1"));
    }
    if let Some(target) = req.target.as_deref()
        && target != ctx.config.target
    {
        return Err(DaytonaError::bad_request(format!(
            "target {target:?}: this server is the only region, {:?}",
            ctx.config.target
        )));
    }
    let is_template = ctx
        .engine
        .templates()
        .iter()
        .any(|t| t.name == req.snapshot);
    let create = if is_template {
        CreatePool {
            template: Some(req.snapshot),
            size: req.pool,
            ..CreatePool::default()
        }
    } else {
        CreatePool {
            snapshot: Some(req.snapshot),
            size: req.pool,
            ..CreatePool::default()
        }
    };
    let pool = ctx.engine.create_pool(create).await?;
    Ok((StatusCode::CREATED, Json(dto(&ctx, &pool))))
}

/// `PATCH /warm-pools/{id}`.
pub async fn update(
    State(ctx): State<Ctx>,
    DPath(id): DPath<String>,
    DJson(req): DJson<UpdateWarmPool>,
) -> DResult<Json<Value>> {
    let pool = ctx
        .engine
        .resize_pool(&id, UpdatePool { size: req.pool })
        .await?;
    Ok(Json(dto(&ctx, &pool)))
}

/// `DELETE /warm-pools/{id}`: 204.
pub async fn delete(State(ctx): State<Ctx>, DPath(id): DPath<String>) -> DResult<StatusCode> {
    ctx.engine.delete_pool(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
