//! `/api/snapshots` and `/api/volumes`.
//!
//! Daytona snapshots are what sandboxes start from. On Platinum that is a template (listed as a
//! `general` snapshot) or a snapshot taken of a sandbox (`sandbox.create_snapshot(name)`,
//! restored with its memory and disk; listed under its name, or its id when it has none, with
//! `sourceSandboxId`). All are `active`. Building snapshots is refused clearly; deleting one
//! works for snapshots taken of sandboxes, not for templates. Platinum has no volumes: the list
//! is empty, lookups are 404 and creating one is refused (so `volume.get(name, create=True)`
//! fails with the reason).

use axum::Json;
use axum::extract::{RawQuery, State};
use platinum_engine::commands::settings::{DEFAULT_TEMPLATE_DISK_MIB, TemplateInfo};
use platinum_engine::model::{Snapshot, SnapshotKind};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::error::{DPath, DResult, DaytonaError};

/// MiB in a GiB.
const MIB_PER_GIB: u64 = 1024;
/// Bytes in a MiB.
const BYTES_PER_MIB: u64 = 1024 * 1024;

/// What a `SnapshotDto` shows, from a template or a snapshot of a sandbox.
#[derive(Debug, Clone, PartialEq)]
struct SnapshotView {
    id: String,
    name: String,
    /// A template (shared by everyone) rather than a snapshot taken of a sandbox.
    general: bool,
    /// The image it stands for (`platinum/<template>`, what an image spec may name).
    image: Option<String>,
    size_bytes: u64,
    vcpus: u32,
    memory_mib: u64,
    disk_mib: u64,
    created_at: OffsetDateTime,
    source_sandbox: Option<String>,
}

impl SnapshotView {
    /// A template. Templates have no creation record: their dates are the Unix epoch (the SDK
    /// requires valid datetimes); their size is the engine's default.
    fn of_template(ctx: &Ctx, t: &TemplateInfo) -> Self {
        let cfg = ctx.engine.config();
        SnapshotView {
            id: t.name.clone(),
            name: t.name.clone(),
            general: true,
            image: Some(format!("platinum/{}", t.name)),
            size_bytes: t.disk_mib * BYTES_PER_MIB,
            vcpus: cfg.default_vcpus,
            memory_mib: u64::from(cfg.default_memory_mib),
            disk_mib: t.disk_mib,
            created_at: OffsetDateTime::UNIX_EPOCH,
            source_sandbox: None,
        }
    }

    /// A snapshot taken of a sandbox: its sandbox's size and template disk.
    fn of_snapshot(ctx: &Ctx, s: &Snapshot) -> Self {
        SnapshotView {
            id: s.id.clone(),
            name: s.name.clone().unwrap_or_else(|| s.id.clone()),
            general: false,
            image: None,
            size_bytes: s.size_bytes,
            vcpus: s.vcpus,
            memory_mib: u64::from(s.memory_mib),
            disk_mib: template_disk_mib(ctx, &s.template),
            created_at: s.created_at,
            source_sandbox: Some(s.sandbox_id.clone()),
        }
    }

    /// The `SnapshotDto`.
    fn dto(&self) -> Value {
        let at = self.created_at.format(&Rfc3339).unwrap_or_default();
        json!({
            "id": self.id,
            "organizationId": "local",
            "general": self.general,
            "name": self.name,
            "imageName": self.image,
            "state": "active",
            "size": self.size_bytes as f64 / (MIB_PER_GIB * BYTES_PER_MIB) as f64,
            "entrypoint": [],
            "cpu": self.vcpus,
            "gpu": 0,
            "mem": self.memory_mib.div_ceil(MIB_PER_GIB),
            "disk": self.disk_mib.div_ceil(MIB_PER_GIB),
            "createdAt": at,
            "updatedAt": at,
            "sourceSandboxId": self.source_sandbox,
            "sandboxClass": "linux-vm",
        })
    }
}

/// Root disk of a template's sandboxes, MiB.
fn template_disk_mib(ctx: &Ctx, template: &str) -> u64 {
    ctx.engine
        .templates()
        .into_iter()
        .find(|t| t.name == template)
        .map_or(DEFAULT_TEMPLATE_DISK_MIB, |t| t.disk_mib)
}

/// A template by name.
fn template(ctx: &Ctx, name: &str) -> Option<TemplateInfo> {
    ctx.engine.templates().into_iter().find(|t| t.name == name)
}

/// A snapshot taken of a sandbox, by id or name (`None` when there is none).
async fn taken_snapshot(ctx: &Ctx, id_or_name: &str) -> DResult<Option<Snapshot>> {
    match ctx.engine.get_snapshot(id_or_name).await {
        Ok(s) if s.kind == SnapshotKind::Snapshot => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(e) if e.code() == platinum_engine::ErrorCode::SnapshotNotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A parsed `GET /snapshots` query.
#[derive(Debug, PartialEq, Eq)]
struct ListQuery {
    page: usize,
    limit: usize,
    name: Option<String>,
    source_sandbox: Option<String>,
}

fn list_query(query: Option<&str>) -> DResult<ListQuery> {
    let mut q = ListQuery {
        page: 1,
        limit: 100,
        name: None,
        source_sandbox: None,
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let n = || {
            v.parse::<usize>()
                .map_err(|_| DaytonaError::bad_request(format!("{k} must be a positive integer")))
        };
        match k.as_ref() {
            "page" => q.page = n()?.max(1),
            "limit" => q.limit = n()?.clamp(1, 200),
            "name" if !v.is_empty() => q.name = Some(v.into_owned()),
            "sourceSandboxId" if !v.is_empty() => q.source_sandbox = Some(v.into_owned()),
            _ => {}
        }
    }
    Ok(q)
}

/// `GET /snapshots?page&limit&name&sourceSandboxId`: the templates, then the snapshots taken of
/// sandboxes (oldest first), one page.
pub async fn list_snapshots(
    State(ctx): State<Ctx>,
    RawQuery(query): RawQuery,
) -> DResult<Json<Value>> {
    let q = list_query(query.as_deref())?;
    let mut views: Vec<SnapshotView> = Vec::new();
    if q.source_sandbox.is_none() {
        let templates = ctx.engine.templates();
        views.extend(templates.iter().map(|t| SnapshotView::of_template(&ctx, t)));
    }
    let taken = ctx
        .engine
        .list_snapshots(q.source_sandbox.as_deref())
        .await?;
    views.extend(taken.iter().map(|s| SnapshotView::of_snapshot(&ctx, s)));
    views.retain(|v| q.name.as_ref().is_none_or(|n| v.name.contains(n.as_str())));
    let total = views.len();
    let items: Vec<Value> = views
        .iter()
        .skip((q.page - 1) * q.limit)
        .take(q.limit)
        .map(SnapshotView::dto)
        .collect();
    Ok(Json(json!({
        "items": items,
        "total": total,
        "page": q.page,
        "totalPages": total.div_ceil(q.limit),
    })))
}

/// `GET /snapshots/{idOrName}`: a template by name, else a snapshot taken of a sandbox.
pub async fn get_snapshot(
    State(ctx): State<Ctx>,
    DPath(name): DPath<String>,
) -> DResult<Json<Value>> {
    if let Some(t) = template(&ctx, &name) {
        return Ok(Json(SnapshotView::of_template(&ctx, &t).dto()));
    }
    match taken_snapshot(&ctx, &name).await? {
        Some(s) => Ok(Json(SnapshotView::of_snapshot(&ctx, &s).dto())),
        None => Err(DaytonaError::not_found(format!(
            "snapshot {name} not found"
        ))),
    }
}

/// `POST /snapshots`: Platinum does not build snapshots.
pub async fn create_snapshot(State(ctx): State<Ctx>) -> DaytonaError {
    let names: Vec<String> = ctx.engine.templates().into_iter().map(|t| t.name).collect();
    DaytonaError::bad_request(format!(
        "Platinum does not build snapshots; its templates are snapshots ({}), and \
         sandbox.create_snapshot(name) takes one of a sandbox",
        names.join(", ")
    ))
}

/// `DELETE /snapshots/{idOrName}`: removes a snapshot taken of a sandbox (200, no body);
/// templates cannot be removed.
pub async fn delete_snapshot(State(ctx): State<Ctx>, DPath(name): DPath<String>) -> DResult<()> {
    if template(&ctx, &name).is_some() {
        return Err(DaytonaError::bad_request(format!(
            "snapshot {name} is a Platinum template; templates cannot be removed"
        )));
    }
    match taken_snapshot(&ctx, &name).await? {
        Some(s) => Ok(ctx.engine.delete_snapshot(&s.id).await?),
        None => Err(DaytonaError::not_found(format!(
            "snapshot {name} not found"
        ))),
    }
}

/// Activate, deactivate: every snapshot here is always active.
pub async fn snapshot_unsupported(DPath(name): DPath<String>) -> DaytonaError {
    DaytonaError::bad_request(format!(
        "snapshot {name}: Platinum templates and snapshots are always active; they cannot be \
         activated or deactivated"
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_dtos_carry_every_required_field() {
        let view = SnapshotView {
            id: "snapabc".into(),
            name: "mine".into(),
            general: false,
            image: None,
            size_bytes: 3 * BYTES_PER_MIB * MIB_PER_GIB / 2,
            vcpus: 2,
            memory_mib: 1536,
            disk_mib: 4096,
            created_at: OffsetDateTime::UNIX_EPOCH,
            source_sandbox: Some("sb1".into()),
        };
        let dto = view.dto();
        for field in [
            "id",
            "general",
            "name",
            "state",
            "cpu",
            "gpu",
            "mem",
            "disk",
            "createdAt",
            "updatedAt",
        ] {
            assert!(!dto[field].is_null(), "{field} in {dto}");
        }
        assert_eq!(
            (&dto["state"], &dto["mem"], &dto["disk"], &dto["size"]),
            (&json!("active"), &json!(2), &json!(4), &json!(1.5))
        );
        assert_eq!(dto["sourceSandboxId"], "sb1");
    }

    #[test]
    fn list_queries_parse() {
        let q = list_query(Some("page=2&limit=500&name=snap&sourceSandboxId=sb1")).unwrap();
        assert_eq!(
            q,
            ListQuery {
                page: 2,
                limit: 200,
                name: Some("snap".into()),
                source_sandbox: Some("sb1".into()),
            }
        );
        assert_eq!(list_query(None).unwrap().page, 1);
        assert!(list_query(Some("limit=x")).is_err());
    }
}
