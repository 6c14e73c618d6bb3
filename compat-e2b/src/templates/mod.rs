//! Templates on E2B's control plane: the SDKs' `Template.build` / `build_in_background` /
//! `get_build_status` / `exists`, listing, and deletion, over the engine's custom templates.
//!
//! | E2B | engine |
//! |---|---|
//! | `POST /v3/templates` `{name, tags?, cpuCount?, memoryMB?}` (202) | none yet: the build is remembered ([`requests`]) |
//! | `GET /templates/{templateID}/files/{hash}` (201 `{present, url}`), `PUT` the url | `has_template_files`, `upload_template_files` ([`files`]) |
//! | `POST /v2/templates/{templateID}/builds/{buildID}` `{fromImage?, fromImageRegistry?, fromTemplate?, steps, startCmd?, readyCmd?, force?}` (202) | `build_template` (steps: [`steps`]) |
//! | `GET /templates/{templateID}/builds/{buildID}/status`, `/logs` | `template_build_logs` |
//! | `GET /templates/aliases/{alias}` (200, 404) | `get_template` |
//! | `GET /templates`, `GET /v2/templates` (`X-Next-Token`), `GET /templates/{templateID}` | `list_templates`, `get_template`, `template_build` |
//! | `DELETE /templates/{templateID}` (204; 409 while sandboxes or pools use it) | `delete_template`; a snapshot's id or name: `delete_snapshot` ([`crate::snapshots`]) |
//!
//! A template's E2B id is its name, so `Sandbox.create("<name>")` starts it; a custom
//! template's engine id (`tpl…`) is accepted too. Built-in templates are listed as public, cannot
//! be built over and cannot be deleted. Platinum keeps one build per template: the only tag is
//! `default` (and `latest`), and other tags are refused. `minFreeDiskMb` (best effort in E2B) is
//! ignored. `fromImage` may name any image, which the host pulls from its registry; private
//! registries' credentials (`fromImageRegistry`: `registry`, `gcp`) are used for that pull only
//! (AWS access keys are refused: ECR's token, as a `registry` password, works).

pub mod builds;
pub mod files;
pub mod requests;
pub mod steps;

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use platinum_engine::builds::model::{TemplateBuild, TemplateSummary};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::control::{
    PageKey, next_token_headers, page, parse_limit, parse_token, rfc3339, split_reference, untagged,
};
use crate::error::ApiError;
use crate::{Ctx, ENVD_VERSION};

type ApiResult<T> = Result<T, ApiError>;

/// Page size of a template list that names none.
const DEFAULT_PAGE: usize = 100;

/// The template routes behind the API key (the caller adds the check).
pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/templates", get(list_v1))
        .route("/v2/templates", get(list_v2))
        .route("/templates/{id}", get(get_one).delete(remove))
        .route("/templates/aliases/{alias}", get(alias))
        .route("/v3/templates", post(builds::request))
        .route("/v2/templates/{id}/builds/{build}", post(builds::trigger))
        .route("/templates/{id}/builds/{build}/status", get(builds::status))
        .route("/templates/{id}/builds/{build}/logs", get(builds::logs))
        .route("/templates/{id}/files/{hash}", get(files::link))
}

/// The routes that authorize themselves (the signed upload URL), without the API key.
pub(crate) fn public_routes(ctx: Ctx) -> Router {
    Router::new()
        .route(files::UPLOAD_PATH, put(files::upload))
        .with_state(ctx)
}

/// A 404 for a template.
pub(crate) fn template_not_found(id: &str) -> ApiError {
    ApiError {
        status: 404,
        message: format!("template '{id}' not found"),
    }
}

/// The template `reference` (a name, `namespace/name[:default]`, or a custom template's id).
fn lookup(ctx: &Ctx, reference: &str) -> Option<TemplateSummary> {
    if let Ok(t) = ctx.engine.get_template(reference) {
        return Some(t);
    }
    let (name, tag) = split_reference(reference);
    untagged(tag)
        .then(|| ctx.engine.get_template(name).ok())
        .flatten()
}

/// Whether `name` is one of the server's built-in templates.
pub(crate) fn is_builtin(ctx: &Ctx, name: &str) -> bool {
    ctx.engine
        .get_template(name)
        .is_ok_and(|t| t.builtin && t.name == name)
}

/// Whether E2B's `templateID` names template `name`.
pub(crate) fn names_template(ctx: &Ctx, template_id: &str, name: &str) -> bool {
    let (n, tag) = split_reference(template_id);
    (n == name && untagged(tag))
        || ctx
            .engine
            .custom_template(template_id)
            .is_ok_and(|t| t.name == name)
}

/// Whether `template_id` is a template, or one with a build asked for.
pub(crate) fn is_known(ctx: &Ctx, template_id: &str) -> bool {
    lookup(ctx, template_id).is_some() || {
        let (name, _) = split_reference(template_id);
        !ctx.template_builds.of_template(name).is_empty()
    }
}

/// Creation and last build of a template (built-in ones: the epoch).
fn times(t: &TemplateSummary) -> (OffsetDateTime, OffsetDateTime) {
    t.custom.as_ref().map_or(
        (OffsetDateTime::UNIX_EPOCH, OffsetDateTime::UNIX_EPOCH),
        |c| (c.created_at, c.updated_at),
    )
}

/// vCPUs and memory (MiB) of a template's sandboxes.
fn size(ctx: &Ctx, t: &TemplateSummary) -> (u32, u32) {
    let config = ctx.engine.config();
    t.custom
        .as_ref()
        .map_or((config.default_vcpus, config.default_memory_mib), |c| {
            (c.vcpus, c.memory_mib)
        })
}

/// The id E2B knows a build by: the one it was asked for under, else the engine's.
fn e2b_build_id(ctx: &Ctx, engine_id: &str) -> String {
    ctx.template_builds
        .e2b_id(engine_id)
        .unwrap_or_else(|| engine_id.to_string())
}

/// E2B's `Template`.
fn template_json(ctx: &Ctx, t: &TemplateSummary) -> Value {
    let (created, updated) = times(t);
    let (vcpus, memory) = size(ctx, t);
    let (build_id, build_count) = match &t.custom {
        Some(c) => (e2b_build_id(ctx, &c.build_id), c.build_count),
        None => (t.name.clone(), 1),
    };
    json!({
        "templateID": t.name,
        "buildID": build_id,
        "cpuCount": vcpus,
        "memoryMB": memory,
        "diskSizeMB": t.disk_mib,
        "public": t.builtin,
        "aliases": [t.name],
        "names": [t.name],
        "createdAt": rfc3339(created),
        "updatedAt": rfc3339(updated),
        "createdBy": null,
        "lastSpawnedAt": null,
        "spawnCount": 0,
        "buildCount": build_count,
        "envdVersion": ENVD_VERSION,
        "buildStatus": "ready",
    })
}

fn template_key(t: &TemplateSummary) -> PageKey {
    (times(t).0.unix_timestamp_nanos(), t.name.clone())
}

/// Every template, oldest first (built-in ones first).
fn all_templates(ctx: &Ctx) -> Vec<TemplateSummary> {
    let mut all = ctx.engine.list_templates();
    all.sort_by_key(template_key);
    all
}

async fn list_v1(State(ctx): State<Ctx>) -> Json<Value> {
    let all = all_templates(&ctx);
    Json(Value::Array(
        all.iter().map(|t| template_json(&ctx, t)).collect(),
    ))
}

async fn list_v2(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let (mut limit, mut after) = (DEFAULT_PAGE, None);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "limit" => limit = parse_limit(&value)?,
            "nextToken" if !value.is_empty() => after = Some(parse_token(&value)?),
            _ => {}
        }
    }
    let all = all_templates(&ctx);
    let (items, next) = page(&all, template_key, after.as_ref(), true, limit);
    let body = Value::Array(items.iter().map(|t| template_json(&ctx, t)).collect());
    Ok((StatusCode::OK, next_token_headers(next), Json(body)).into_response())
}

/// E2B's `TemplateBuild` of an engine build.
fn build_json(ctx: &Ctx, t: &TemplateSummary, b: &TemplateBuild) -> Value {
    let (vcpus, memory) = size(ctx, t);
    let mut v = json!({
        "buildID": e2b_build_id(ctx, &b.id),
        "status": builds::status_name(b.status),
        "createdAt": rfc3339(b.created_at),
        "updatedAt": rfc3339(b.finished_at.unwrap_or(b.created_at)),
        "cpuCount": b.request.vcpus.unwrap_or(vcpus),
        "memoryMB": b.request.memory_mib.unwrap_or(memory),
        "diskSizeMB": t.disk_mib,
        "envdVersion": ENVD_VERSION,
    });
    if let (Some(at), Some(v)) = (b.finished_at, v.as_object_mut()) {
        v.insert("finishedAt".into(), json!(rfc3339(at)));
    }
    v
}

/// `GET /templates/{templateID}`: `TemplateWithBuilds`, with the build that made it as it is
/// and the builds asked for through E2B that are still remembered, newest first.
async fn get_one(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let t = lookup(&ctx, &id).ok_or_else(|| template_not_found(&id))?;
    let (vcpus, memory) = size(&ctx, &t);
    let mut engine_ids: Vec<String> = t.custom.iter().map(|c| c.build_id.clone()).collect();
    let mut listed: Vec<(OffsetDateTime, Value)> = Vec::new();
    for (e2b_id, r) in ctx.template_builds.of_template(&t.name) {
        match r.phase {
            requests::Phase::Started(engine_id) => {
                if !engine_ids.contains(&engine_id) {
                    engine_ids.push(engine_id);
                }
            }
            requests::Phase::Waiting | requests::Phase::Starting => listed.push((
                r.created_at,
                json!({
                    "buildID": e2b_id,
                    "status": "waiting",
                    "createdAt": rfc3339(r.created_at),
                    "updatedAt": rfc3339(r.created_at),
                    "cpuCount": r.vcpus.unwrap_or(vcpus),
                    "memoryMB": r.memory_mib.unwrap_or(memory),
                    "envdVersion": ENVD_VERSION,
                }),
            )),
        }
    }
    for engine_id in engine_ids {
        let b = ctx.engine.template_build(&engine_id).await?;
        listed.push((b.created_at, build_json(&ctx, &t, &b)));
    }
    listed.sort_by_key(|(at, _)| std::cmp::Reverse(*at));
    let mut view = template_json(&ctx, &t);
    view["builds"] = listed.into_iter().map(|(_, v)| v).collect();
    Ok(Json(view))
}

/// `GET /templates/aliases/{alias}`: `TemplateAliasResponse`, 404 when no template has the name.
async fn alias(State(ctx): State<Ctx>, Path(alias): Path<String>) -> ApiResult<Json<Value>> {
    let (name, tag) = split_reference(&alias);
    let t = ctx
        .engine
        .get_template(name)
        .ok()
        .filter(|t| t.name == name && untagged(tag))
        .ok_or_else(|| template_not_found(&alias))?;
    Ok(Json(json!({ "templateID": t.name, "public": t.builtin })))
}

/// `DELETE /templates/{templateID}`: a template (refused for built-in ones and, with 409,
/// while sandboxes or pools use it), else a snapshot.
async fn remove(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    match lookup(&ctx, &id) {
        Some(t) => {
            ctx.engine.delete_template(&t.name).await?;
            tracing::info!(template = %t.name, "E2B template deleted");
        }
        None => crate::snapshots::delete(&ctx, &id).await?,
    }
    Ok(StatusCode::NO_CONTENT)
}
