//! `/api/snapshots`: list, get and delete.
//!
//! Daytona snapshots are what sandboxes start from. On Platinum that is a template, built in
//! (listed as a `general` snapshot) or built from a Daytona `Image` ([`super::snapshot_builds`],
//! listed under the name it was asked for, `building` while its build runs and `build_failed`
//! with the failure as `errorReason` when it failed), or a snapshot taken of a sandbox
//! (`sandbox.create_snapshot(name)`, restored with its memory and disk; listed under its name,
//! or its id when it has none, with `sourceSandboxId`, always `active`). A snapshot Platinum
//! built has its template name as id ([`super::builds`] maps Daytona names to template names).
//! Deleting works for built snapshots (refused while sandboxes or pools use them) and snapshots
//! taken of sandboxes, not for built-in templates.

use axum::Json;
use axum::extract::{RawQuery, State};
use platinum_engine::builds::model::TemplateBuild;
use platinum_engine::commands::settings::DEFAULT_TEMPLATE_DISK_MIB;
use platinum_engine::model::{Snapshot, SnapshotKind};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::builds::{self, SnapshotState};
use crate::Ctx;
use crate::error::{DPath, DResult, DaytonaError};

/// MiB in a GiB.
const MIB_PER_GIB: u64 = 1024;
/// Bytes in a MiB.
const BYTES_PER_MIB: u64 = 1024 * 1024;

/// The Dockerfile a snapshot was built from (`BuildInfo`).
#[derive(Debug, Clone, PartialEq)]
struct BuildInfoView {
    dockerfile: String,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
}

/// What a `SnapshotDto` shows, from a template, a build or a snapshot of a sandbox.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotView {
    id: String,
    name: String,
    /// A built-in template (shared by everyone).
    general: bool,
    /// The image it stands for (`platinum/<template>`, what an image spec may name).
    image: Option<String>,
    state: SnapshotState,
    error_reason: Option<String>,
    size_bytes: u64,
    vcpus: u32,
    memory_mib: u64,
    disk_mib: u64,
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    source_sandbox: Option<String>,
    build_info: Option<BuildInfoView>,
}

impl SnapshotView {
    /// A snapshot taken of a sandbox: its sandbox's size and template disk.
    fn of_snapshot(ctx: &Ctx, s: &Snapshot) -> Self {
        SnapshotView {
            id: s.id.clone(),
            name: s.name.clone().unwrap_or_else(|| s.id.clone()),
            general: false,
            image: None,
            state: SnapshotState::Active,
            error_reason: None,
            size_bytes: s.size_bytes,
            vcpus: s.vcpus,
            memory_mib: u64::from(s.memory_mib),
            disk_mib: template_disk_mib(ctx, &s.template),
            created_at: s.created_at,
            updated_at: s.created_at,
            source_sandbox: Some(s.sandbox_id.clone()),
            build_info: None,
        }
    }

    /// The `SnapshotDto`.
    pub fn dto(&self) -> Value {
        let at = |t: OffsetDateTime| t.format(&Rfc3339).unwrap_or_default();
        let mut dto = json!({
            "id": self.id,
            "organizationId": "local",
            "general": self.general,
            "name": self.name,
            "imageName": self.image,
            "state": self.state.name(),
            "errorReason": self.error_reason,
            "size": self.size_bytes as f64 / (MIB_PER_GIB * BYTES_PER_MIB) as f64,
            "entrypoint": [],
            "cpu": self.vcpus,
            "gpu": 0,
            "mem": self.memory_mib.div_ceil(MIB_PER_GIB),
            "disk": self.disk_mib.div_ceil(MIB_PER_GIB),
            "createdAt": at(self.created_at),
            "updatedAt": at(self.updated_at),
            "sourceSandboxId": self.source_sandbox,
            "sandboxClass": "linux-vm",
        });
        if let Some(b) = &self.build_info {
            dto["buildInfo"] = json!({
                "dockerfileContent": b.dockerfile,
                "contextHashes": [],
                "createdAt": at(b.created_at),
                "updatedAt": at(b.updated_at),
                "snapshotRef": self.image,
            });
        }
        dto
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

/// Template `name`'s snapshot as it stands: built in, custom, or a build that made no template
/// (yet); `None` when there is none. Templates built in have no creation record: their dates
/// are the Unix epoch (the SDK requires valid datetimes).
pub async fn template_view(ctx: &Ctx, name: &str) -> Option<SnapshotView> {
    let summary = ctx.engine.get_template(name).ok();
    let build = builds::latest_build(ctx, name).await;
    let state = builds::snapshot_state(summary.is_some(), build.as_ref().map(|b| b.status))?;
    let cfg = ctx.engine.config();
    let custom = summary.as_ref().and_then(|s| s.custom.as_ref());
    let asked = build.as_ref().map(|b| &b.request);
    let (vcpus, memory_mib) = match (custom, asked) {
        (Some(c), _) => (c.vcpus, c.memory_mib),
        (None, Some(r)) => (
            r.vcpus.unwrap_or(cfg.default_vcpus),
            r.memory_mib.unwrap_or(cfg.default_memory_mib),
        ),
        (None, None) => (cfg.default_vcpus, cfg.default_memory_mib),
    };
    let disk_mib = summary.as_ref().map_or_else(
        || template_disk_mib(ctx, &cfg.default_template),
        |s| s.disk_mib,
    );
    let ended = |b: &TemplateBuild| b.finished_at.unwrap_or(b.created_at);
    let (created_at, updated_at) = match (custom, &build) {
        (Some(c), _) => (c.created_at, c.updated_at),
        (None, Some(b)) => (b.created_at, ended(b)),
        (None, None) => (OffsetDateTime::UNIX_EPOCH, OffsetDateTime::UNIX_EPOCH),
    };
    let error_reason = match (state, &build) {
        (SnapshotState::BuildFailed, Some(b)) => b.failure.as_ref().map(builds::failure_reason),
        _ => None,
    };
    let build_info = build.as_ref().and_then(|b| {
        Some(BuildInfoView {
            dockerfile: b.request.dockerfile.clone()?,
            created_at: b.created_at,
            updated_at: ended(b),
        })
    });
    Some(SnapshotView {
        id: name.to_string(),
        name: ctx
            .builds
            .get(name)
            .map_or_else(|| name.to_string(), |t| t.display),
        general: summary.as_ref().is_some_and(|s| s.builtin),
        image: Some(format!("platinum/{name}")),
        state,
        error_reason,
        size_bytes: disk_mib * BYTES_PER_MIB,
        vcpus,
        memory_mib: u64::from(memory_mib),
        disk_mib,
        created_at,
        updated_at,
        source_sandbox: None,
        build_info,
    })
}

/// A snapshot taken of a sandbox, by id or name (`None` when there is none).
pub async fn taken_snapshot(ctx: &Ctx, id_or_name: &str) -> DResult<Option<Snapshot>> {
    match ctx.engine.get_snapshot(id_or_name).await {
        Ok(s) if s.kind == SnapshotKind::Snapshot => Ok(Some(s)),
        Ok(_) => Ok(None),
        Err(e) if e.code() == platinum_engine::ErrorCode::SnapshotNotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// What a snapshot id or name names.
enum Found {
    /// A template's snapshot (or a build's).
    Template(SnapshotView),
    /// A snapshot taken of a sandbox.
    Taken(Snapshot),
}

/// Finds a snapshot: a template or remembered Daytona name first, then a snapshot taken of a
/// sandbox, then the template the name maps to.
async fn find(ctx: &Ctx, id_or_name: &str) -> DResult<Option<Found>> {
    if let Some(t) = builds::known_template(ctx, id_or_name)
        && let Some(v) = template_view(ctx, &t).await
    {
        return Ok(Some(Found::Template(v)));
    }
    if let Some(s) = taken_snapshot(ctx, id_or_name).await? {
        return Ok(Some(Found::Taken(s)));
    }
    match builds::mapped_template(ctx, id_or_name) {
        Some(t) => Ok(template_view(ctx, &t).await.map(Found::Template)),
        None => Ok(None),
    }
}

fn not_found(name: &str) -> DaytonaError {
    DaytonaError::not_found(format!("snapshot {name} not found"))
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

/// `GET /snapshots?page&limit&name&sourceSandboxId`: the templates (built in, then custom),
/// the builds that made no template (yet), then the snapshots taken of sandboxes (oldest
/// first), one page.
pub async fn list_snapshots(
    State(ctx): State<Ctx>,
    RawQuery(query): RawQuery,
) -> DResult<Json<Value>> {
    let q = list_query(query.as_deref())?;
    let mut views: Vec<SnapshotView> = Vec::new();
    if q.source_sandbox.is_none() {
        let mut names: Vec<String> = ctx.engine.templates().into_iter().map(|t| t.name).collect();
        for t in ctx.builds.templates() {
            if !names.contains(&t) {
                names.push(t);
            }
        }
        for name in names {
            views.extend(template_view(&ctx, &name).await);
        }
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

/// `GET /snapshots/{idOrName}`.
pub async fn get_snapshot(
    State(ctx): State<Ctx>,
    DPath(name): DPath<String>,
) -> DResult<Json<Value>> {
    match find(&ctx, &name).await? {
        Some(Found::Template(v)) => Ok(Json(v.dto())),
        Some(Found::Taken(s)) => Ok(Json(SnapshotView::of_snapshot(&ctx, &s).dto())),
        None => Err(not_found(&name)),
    }
}

/// `DELETE /snapshots/{idOrName}` (200, no body): removes a built snapshot's template (409
/// while sandboxes or pools use it, or while it is being built; a failed build is forgotten)
/// or a snapshot taken of a sandbox. Built-in templates cannot be removed.
pub async fn delete_snapshot(State(ctx): State<Ctx>, DPath(name): DPath<String>) -> DResult<()> {
    let view = match find(&ctx, &name).await? {
        Some(Found::Template(v)) => v,
        Some(Found::Taken(s)) => return Ok(ctx.engine.delete_snapshot(&s.id).await?),
        None => return Err(not_found(&name)),
    };
    if view.general {
        return Err(DaytonaError::bad_request(format!(
            "snapshot {name} is a Platinum template; built-in templates cannot be removed"
        )));
    }
    match view.state {
        SnapshotState::Building => {
            return Err(DaytonaError::from(platinum_engine::Error::Conflict(
                format!("snapshot {name} is being built; delete it once the build ended"),
            )));
        }
        SnapshotState::Active => ctx.engine.delete_template(&view.id).await?,
        SnapshotState::BuildFailed => {}
    }
    ctx.builds.forget(&view.id);
    tracing::info!(snapshot = %view.name, template = %view.id, "daytona snapshot deleted");
    Ok(())
}

/// Activate, deactivate: every snapshot here is always active.
pub async fn snapshot_unsupported(DPath(name): DPath<String>) -> DaytonaError {
    DaytonaError::bad_request(format!(
        "snapshot {name}: Platinum templates and snapshots are always active; they cannot be \
         activated or deactivated"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> SnapshotView {
        SnapshotView {
            id: "snapabc".into(),
            name: "mine".into(),
            general: false,
            image: None,
            state: SnapshotState::Active,
            error_reason: None,
            size_bytes: 3 * BYTES_PER_MIB * MIB_PER_GIB / 2,
            vcpus: 2,
            memory_mib: 1536,
            disk_mib: 4096,
            created_at: OffsetDateTime::UNIX_EPOCH,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            source_sandbox: Some("sb1".into()),
            build_info: None,
        }
    }

    #[test]
    fn snapshot_dtos_carry_every_required_field() {
        let dto = view().dto();
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
        assert!(dto.get("buildInfo").is_none());
    }

    #[test]
    fn built_snapshots_show_their_build() {
        let v = SnapshotView {
            image: Some("platinum/py".into()),
            state: SnapshotState::BuildFailed,
            error_reason: Some("step 1 exited with code 3: exit 3".into()),
            build_info: Some(BuildInfoView {
                dockerfile: "FROM debian:12\nRUN exit 3\n".into(),
                created_at: OffsetDateTime::UNIX_EPOCH,
                updated_at: OffsetDateTime::UNIX_EPOCH,
            }),
            ..view()
        };
        let dto = v.dto();
        assert_eq!(dto["state"], "build_failed");
        assert_eq!(dto["errorReason"], "step 1 exited with code 3: exit 3");
        let b = &dto["buildInfo"];
        for field in ["dockerfileContent", "createdAt", "updatedAt", "snapshotRef"] {
            assert!(!b[field].is_null(), "{field} in {b}");
        }
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
