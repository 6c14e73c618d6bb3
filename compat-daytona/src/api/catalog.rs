//! `/api/snapshots` and `/api/volumes`.
//!
//! Daytona snapshots are what sandboxes start from; on Platinum that is a template, so the
//! snapshot list is the host's templates (all `active`, all `general`). Building snapshots is
//! refused clearly. Platinum has no volumes: the list is empty, lookups are 404 and creating one
//! is refused (so `volume.get(name, create=True)` fails with the reason).

use axum::Json;
use axum::extract::{RawQuery, State};
use platinum_engine::commands::settings::TemplateInfo;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::error::{DPath, DResult, DaytonaError};

/// A template as a `SnapshotDto`. Templates have no creation record, so both dates are the Unix
/// epoch (the SDK requires valid datetimes).
fn snapshot_dto(ctx: &Ctx, t: &TemplateInfo) -> Value {
    let epoch = OffsetDateTime::UNIX_EPOCH
        .format(&Rfc3339)
        .unwrap_or_default();
    let cfg = ctx.engine.config();
    json!({
        "id": t.name,
        "organizationId": "local",
        "general": true,
        "name": t.name,
        "imageName": format!("platinum/{}", t.name),
        "state": "active",
        "size": t.disk_mib as f64 / 1024.0,
        "entrypoint": [],
        "cpu": cfg.default_vcpus,
        "gpu": 0,
        "mem": u64::from(cfg.default_memory_mib).div_ceil(1024),
        "disk": t.disk_mib.div_ceil(1024),
        "createdAt": epoch,
        "updatedAt": epoch,
        "sandboxClass": "linux-vm",
    })
}

/// `GET /snapshots?page&limit&name`: the templates, one page.
pub async fn list_snapshots(
    State(ctx): State<Ctx>,
    RawQuery(query): RawQuery,
) -> DResult<Json<Value>> {
    let (mut page, mut limit, mut name) = (1usize, 100usize, None::<String>);
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let n = || {
            v.parse::<usize>()
                .map_err(|_| DaytonaError::bad_request(format!("{k} must be a positive integer")))
        };
        match k.as_ref() {
            "page" => page = n()?.max(1),
            "limit" => limit = n()?.clamp(1, 200),
            "name" if !v.is_empty() => name = Some(v.into_owned()),
            _ => {}
        }
    }
    let all: Vec<Value> = ctx
        .engine
        .templates()
        .iter()
        .filter(|t| name.as_ref().is_none_or(|n| t.name.contains(n.as_str())))
        .map(|t| snapshot_dto(&ctx, t))
        .collect();
    let total = all.len();
    let items: Vec<Value> = all
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": total,
        "page": page,
        "totalPages": total.div_ceil(limit),
    })))
}

/// `GET /snapshots/{idOrName}`.
pub async fn get_snapshot(
    State(ctx): State<Ctx>,
    DPath(name): DPath<String>,
) -> DResult<Json<Value>> {
    ctx.engine
        .templates()
        .iter()
        .find(|t| t.name == name)
        .map(|t| Json(snapshot_dto(&ctx, t)))
        .ok_or_else(|| DaytonaError::not_found(format!("snapshot {name} not found")))
}

/// `POST /snapshots`: Platinum does not build snapshots.
pub async fn create_snapshot(State(ctx): State<Ctx>) -> DaytonaError {
    let names: Vec<String> = ctx.engine.templates().into_iter().map(|t| t.name).collect();
    DaytonaError::bad_request(format!(
        "Platinum does not build snapshots; its templates are the snapshots: {}",
        names.join(", ")
    ))
}

/// Delete, activate, deactivate: templates are built into Platinum.
pub async fn snapshot_unsupported(DPath(name): DPath<String>) -> DaytonaError {
    DaytonaError::bad_request(format!(
        "snapshot {name} is a Platinum template; templates cannot be removed, activated or deactivated here"
    ))
}

/// `GET /volumes`: none.
pub async fn list_volumes() -> Json<Value> {
    Json(json!([]))
}

/// `GET /volumes/{id}`, `/volumes/by-name/{name}`, `DELETE /volumes/{id}`: there are none.
pub async fn get_volume(DPath(id): DPath<String>) -> DaytonaError {
    DaytonaError::not_found(format!("volume {id} not found (Platinum has no volumes)"))
}

/// `POST /volumes`: refused.
pub async fn create_volume() -> DaytonaError {
    DaytonaError::bad_request(
        "Platinum does not offer volumes; keep data in the sandbox (its disk survives stop and start)",
    )
}
