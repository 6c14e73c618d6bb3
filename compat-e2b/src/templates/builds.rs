//! Template builds on E2B's wire: ask for a build (`POST /v3/templates`), start it with its
//! steps (`POST /v2/templates/{templateID}/builds/{buildID}`), follow it
//! (`GET /templates/{templateID}/builds/{buildID}/status` and `/logs`).
//!
//! E2B hands out the build id before the steps are known, so a requested build waits in memory
//! until it is started ([`super::requests`]); starting it is the engine's `build_template`, and
//! from then on the engine's build answers for it. The engine's own build ids (`bld…`) are
//! accepted wherever E2B's are, so a build stays reachable after E2B's id is forgotten.
//!
//! Status: `waiting` until started, then the engine's `building`, `ready` or `error`; an error
//! carries `reason` (the engine's failure message, which names the step and its exit code, the
//! step as E2B numbers it: 1 for the first step, and the step's last output lines). Log entries
//! are the engine's build log from `logsOffset`, at most `limit` (default and most 100), of at
//! least `level` when given (the offset then counts the entries of that level).

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use platinum_engine::ErrorCode;
use platinum_engine::builds::model::{
    BuildLogEntry, BuildStatus, LogLevel, RegistryAuth, TemplateBuild, TemplateBuildRequest,
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::requests::{Phase, Requested, build_not_found};
use super::steps::{E2bStep, engine_steps};
use super::{is_builtin, names_template};
use crate::Ctx;
use crate::control::{Body, rfc3339, split_reference, untagged};
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// Most log entries one answer carries (E2B's limit, and its default).
const MAX_LOG_PAGE: usize = 100;
/// The tag every template has (Platinum keeps one build per template).
const DEFAULT_TAG: &str = "default";

/// Body of `POST /v3/templates` (`TemplateBuildRequestV3`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct NewBuild {
    name: Option<String>,
    /// Deprecated spelling of `name`.
    alias: Option<String>,
    tags: Option<Vec<String>>,
    cpu_count: Option<i64>,
    #[serde(rename = "memoryMB")]
    memory_mb: Option<i64>,
}

/// A positive count from the wire, or a 400 naming `field`.
fn positive(value: Option<i64>, field: &str) -> ApiResult<Option<u32>> {
    value
        .map(|v| {
            u32::try_from(v)
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| ApiError::bad_request(format!("{field} must be positive, got {v}")))
        })
        .transpose()
}

/// `POST /v3/templates`: remembers the build (see the module docs); 202
/// `TemplateRequestResponseV3`.
pub(crate) async fn request(
    State(ctx): State<Ctx>,
    Body(req): Body<NewBuild>,
) -> ApiResult<Response> {
    let reference = req
        .name
        .or(req.alias)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::bad_request("name is required"))?;
    let (name, tag) = split_reference(&reference);
    let tags: Vec<String> = tag
        .into_iter()
        .map(str::to_string)
        .chain(req.tags.unwrap_or_default())
        .collect();
    if let Some(t) = tags.iter().find(|t| !untagged(Some(t.as_str()))) {
        return Err(ApiError::bad_request(format!(
            "tag {t:?}: this server keeps one build per template, so it has no tags but \
             {DEFAULT_TAG:?}; build under another name instead"
        )));
    }
    if is_builtin(&ctx, name) {
        return Err(ApiError::bad_request(format!(
            "'{name}' is a template built into this server; build under another name"
        )));
    }
    let requested = Requested::new(
        name,
        positive(req.cpu_count, "cpuCount")?,
        positive(req.memory_mb, "memoryMB")?,
    );
    let id = ctx.template_builds.insert(requested);
    tracing::info!(template = %name, build = %id, "E2B template build requested");
    let body = json!({
        "templateID": name,
        "buildID": id,
        "public": false,
        "aliases": [name],
        "names": [name],
        "tags": [DEFAULT_TAG],
    });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// Body of `POST /v2/templates/{templateID}/builds/{buildID}` (`TemplateBuildStartV2`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StartBuild {
    from_image: Option<String>,
    from_template: Option<String>,
    from_image_registry: Option<Value>,
    force: Option<bool>,
    steps: Option<Vec<E2bStep>>,
    start_cmd: Option<String>,
    ready_cmd: Option<String>,
}

/// The credentials `fromImageRegistry` gives: `registry` (user name and password) as they are,
/// `gcp` as the service account key with the user name `_json_key` (what GCR and Artifact
/// Registry accept). `aws` would need an ECR token exchange, which this server does not do.
fn registry_auth(r: &Value) -> Result<RegistryAuth, String> {
    let field = |name: &str| {
        r.get(name)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| format!("fromImageRegistry: {name} is required"))
    };
    match r.get("type").and_then(Value::as_str) {
        Some("registry") => Ok(RegistryAuth {
            username: field("username")?,
            password: field("password")?,
        }),
        Some("gcp") => Ok(RegistryAuth {
            username: "_json_key".into(),
            password: field("serviceAccountJson")?,
        }),
        Some("aws") => Err(
            "fromImageRegistry: AWS access keys are not supported; pass \
             {type: registry, username: AWS, password: <aws ecr get-login-password>}"
                .into(),
        ),
        other => Err(format!(
            "fromImageRegistry: type {other:?} is not one of registry, gcp, aws"
        )),
    }
}

/// `POST /v2/templates/{templateID}/builds/{buildID}`: starts the engine's build; 202.
pub(crate) async fn trigger(
    State(ctx): State<Ctx>,
    Path((template_id, build_id)): Path<(String, String)>,
    Body(req): Body<StartBuild>,
) -> ApiResult<StatusCode> {
    let requested = ctx
        .template_builds
        .get(&build_id)
        .filter(|r| names_template(&ctx, &template_id, &r.name))
        .ok_or_else(|| build_not_found(&build_id))?;
    let registry_auth = match &req.from_image_registry {
        None | Some(Value::Null) => None,
        Some(r) => Some(registry_auth(r).map_err(ApiError::bad_request)?),
    };
    let steps =
        engine_steps(req.steps.as_deref().unwrap_or_default()).map_err(ApiError::bad_request)?;
    let build = TemplateBuildRequest {
        name: requested.name.clone(),
        from_image: req.from_image,
        registry_auth,
        from_template: req.from_template,
        steps,
        start_cmd: req.start_cmd.filter(|c| !c.is_empty()),
        ready_cmd: req.ready_cmd.filter(|c| !c.is_empty()),
        vcpus: requested.vcpus,
        memory_mib: requested.memory_mib,
        force: req.force.unwrap_or(false),
        ..TemplateBuildRequest::default()
    };
    ctx.template_builds.begin(&build_id)?;
    match ctx.engine.build_template(build).await {
        Ok(started) => {
            tracing::info!(template = %requested.name, build = %build_id, engine_build = %started.id, "E2B template build started");
            ctx.template_builds.started(&build_id, Some(started.id));
            Ok(StatusCode::ACCEPTED)
        }
        Err(e) => {
            ctx.template_builds.started(&build_id, None);
            Err(e.into())
        }
    }
}

/// A build `{templateID}/builds/{buildID}` names: the template it makes, and the engine's
/// build once it was started.
struct Found {
    name: String,
    engine_build: Option<String>,
}

/// The build of E2B id (or engine id) `build_id`, which must make template `template_id`.
async fn find(ctx: &Ctx, template_id: &str, build_id: &str) -> ApiResult<Found> {
    let found = match ctx.template_builds.get(build_id) {
        Some(r) => Found {
            name: r.name,
            engine_build: match r.phase {
                Phase::Started(id) => Some(id),
                Phase::Waiting | Phase::Starting => None,
            },
        },
        None => {
            let b = ctx
                .engine
                .template_build(build_id)
                .await
                .map_err(|e| match e.code() {
                    ErrorCode::BuildNotFound => build_not_found(build_id),
                    _ => e.into(),
                })?;
            Found {
                name: b.template,
                engine_build: Some(b.id),
            }
        }
    };
    if names_template(ctx, template_id, &found.name) {
        Ok(found)
    } else {
        Err(build_not_found(build_id))
    }
}

/// E2B's name of a build status.
pub(crate) fn status_name(status: BuildStatus) -> &'static str {
    match status {
        BuildStatus::Building => "building",
        BuildStatus::Ready => "ready",
        BuildStatus::Error => "error",
    }
}

fn level_name(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

fn parse_level(value: &str) -> ApiResult<LogLevel> {
    Ok(match value {
        "debug" => LogLevel::Debug,
        "info" => LogLevel::Info,
        "warn" => LogLevel::Warn,
        "error" => LogLevel::Error,
        other => {
            return Err(ApiError::bad_request(format!(
                "invalid level {other:?}: use debug, info, warn or error"
            )));
        }
    })
}

/// How severe a level is, for "at least this level".
fn severity(level: LogLevel) -> u8 {
    match level {
        LogLevel::Debug => 0,
        LogLevel::Info => 1,
        LogLevel::Warn => 2,
        LogLevel::Error => 3,
    }
}

/// E2B's `BuildLogEntry`.
fn entry_json(e: &BuildLogEntry) -> Value {
    let mut v = Map::new();
    v.insert("timestamp".into(), json!(rfc3339(e.timestamp)));
    v.insert("level".into(), json!(level_name(e.level)));
    v.insert("message".into(), json!(e.message));
    if let Some(step) = e.step {
        v.insert("step".into(), json!(step.to_string()));
    }
    Value::Object(v)
}

/// E2B's `BuildStatusReason` of a failed build.
fn reason_json(b: &TemplateBuild) -> Option<Value> {
    let f = b.failure.as_ref()?;
    let at = b.finished_at.unwrap_or(b.created_at);
    let entries: Vec<Value> = f
        .last_output
        .iter()
        .map(|line| {
            entry_json(&BuildLogEntry {
                timestamp: at,
                level: LogLevel::Error,
                message: line.clone(),
                step: f.step,
            })
        })
        .collect();
    let mut v = Map::new();
    v.insert("message".into(), json!(f.message));
    if let Some(step) = f.step {
        v.insert("step".into(), json!(step.to_string()));
    }
    v.insert("logEntries".into(), Value::Array(entries));
    Some(Value::Object(v))
}

/// A parsed query of the status and logs routes.
#[derive(Debug, Default, PartialEq)]
struct LogQuery {
    offset: usize,
    limit: Option<usize>,
    level: Option<LogLevel>,
    /// `/logs`: first (or, backwards, last) time, Unix ms.
    cursor: Option<i64>,
    backward: bool,
}

impl LogQuery {
    fn limit(&self) -> usize {
        self.limit.unwrap_or(MAX_LOG_PAGE)
    }
}

fn log_query(raw: Option<&str>) -> ApiResult<LogQuery> {
    let mut q = LogQuery::default();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if value.is_empty() {
            continue;
        }
        let number = |what: &str| {
            value.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("{what} must be a non-negative integer"))
            })
        };
        match key.as_ref() {
            "logsOffset" => q.offset = number("logsOffset")? as usize,
            "limit" => q.limit = Some((number("limit")? as usize).min(MAX_LOG_PAGE)),
            "level" => q.level = Some(parse_level(&value)?),
            "cursor" => q.cursor = Some(number("cursor")?.try_into().unwrap_or(i64::MAX)),
            "direction" => match value.as_ref() {
                "forward" => q.backward = false,
                "backward" => q.backward = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid direction {other:?}: use forward or backward"
                    )));
                }
            },
            _ => {}
        }
    }
    Ok(q)
}

/// The build and its log entries from `q.offset` (of `q.level` or worse), at most `q.limit`.
async fn log_page(
    ctx: &Ctx,
    engine_build: &str,
    q: &LogQuery,
) -> ApiResult<(TemplateBuild, Vec<BuildLogEntry>)> {
    let Some(level) = q.level else {
        let page = ctx
            .engine
            .template_build_logs(engine_build, q.offset, q.limit())
            .await?;
        return Ok((page.build, page.entries));
    };
    let page = ctx
        .engine
        .template_build_logs(engine_build, 0, usize::MAX)
        .await?;
    let entries = page
        .entries
        .into_iter()
        .filter(|e| severity(e.level) >= severity(level))
        .skip(q.offset)
        .take(q.limit())
        .collect();
    Ok((page.build, entries))
}

/// `GET /templates/{templateID}/builds/{buildID}/status`: `TemplateBuildInfo`.
pub(crate) async fn status(
    State(ctx): State<Ctx>,
    Path((template_id, build_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let q = log_query(raw.as_deref())?;
    let found = find(&ctx, &template_id, &build_id).await?;
    let (status, entries, reason) = match &found.engine_build {
        None => ("waiting", Vec::new(), None),
        Some(id) => {
            let (b, entries) = log_page(&ctx, id, &q).await?;
            (status_name(b.status), entries, reason_json(&b))
        }
    };
    let mut body = json!({
        "templateID": found.name,
        "buildID": build_id,
        "status": status,
        "logs": entries.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(),
        "logEntries": entries.iter().map(entry_json).collect::<Vec<_>>(),
    });
    if let (Some(reason), Some(body)) = (reason, body.as_object_mut()) {
        body.insert("reason".into(), reason);
    }
    Ok(Json(body))
}

/// `GET /templates/{templateID}/builds/{buildID}/logs?cursor=&limit=&direction=&level=`:
/// `TemplateBuildLogsResponse`, the entries from `cursor` (Unix ms) on, oldest first, or up to
/// it, newest first.
pub(crate) async fn logs(
    State(ctx): State<Ctx>,
    Path((template_id, build_id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let q = log_query(raw.as_deref())?;
    let Some(id) = find(&ctx, &template_id, &build_id).await?.engine_build else {
        return Ok(Json(json!({ "logs": [] })));
    };
    let all = LogQuery {
        limit: Some(usize::MAX),
        level: q.level,
        ..LogQuery::default()
    };
    let (_, mut entries) = log_page(&ctx, &id, &all).await?;
    let ms = |e: &BuildLogEntry| (e.timestamp.unix_timestamp_nanos() / 1_000_000) as i64;
    if q.backward {
        entries.retain(|e| q.cursor.is_none_or(|c| ms(e) <= c));
        entries.reverse();
    } else {
        entries.retain(|e| q.cursor.is_none_or(|c| ms(e) >= c));
    }
    entries.truncate(q.limit());
    Ok(Json(
        json!({ "logs": entries.iter().map(entry_json).collect::<Vec<_>>() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registries_credentials_map_to_a_user_and_password() {
        let r = registry_auth(&json!({"type": "registry", "username": "u", "password": "p"}));
        assert_eq!(
            r.unwrap(),
            RegistryAuth {
                username: "u".into(),
                password: "p".into()
            }
        );
        let g = registry_auth(&json!({"type": "gcp", "serviceAccountJson": "{}"})).unwrap();
        assert_eq!(
            (g.username.as_str(), g.password.as_str()),
            ("_json_key", "{}")
        );
        for bad in [
            json!({"type": "aws", "awsAccessKeyId": "a", "awsSecretAccessKey": "b", "awsRegion": "c"}),
            json!({"type": "registry", "username": "u"}),
            json!({"type": "ftp"}),
        ] {
            assert!(registry_auth(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn log_queries_parse() {
        let q = log_query(Some("logsOffset=5&limit=500&level=warn")).unwrap();
        assert_eq!(
            (q.offset, q.limit(), q.level),
            (5, 100, Some(LogLevel::Warn))
        );
        assert_eq!(log_query(None).unwrap().limit(), 100);
        let q = log_query(Some("cursor=1700000000000&direction=backward")).unwrap();
        assert!(q.backward && q.cursor == Some(1_700_000_000_000));
        for bad in ["logsOffset=-1", "level=loud", "direction=up", "limit=x"] {
            assert_eq!(log_query(Some(bad)).unwrap_err().status, 400, "{bad}");
        }
    }

    #[test]
    fn entries_and_reasons_have_e2b_shapes() {
        let at = time::OffsetDateTime::UNIX_EPOCH;
        let e = BuildLogEntry {
            timestamp: at,
            level: LogLevel::Warn,
            message: "hi".into(),
            step: Some(3),
        };
        assert_eq!(
            entry_json(&e),
            json!({"timestamp": "1970-01-01T00:00:00Z", "level": "warn", "message": "hi", "step": "3"})
        );
        let no_step = BuildLogEntry { step: None, ..e };
        assert!(entry_json(&no_step).get("step").is_none());
        assert_eq!(positive(Some(0), "cpuCount").unwrap_err().status, 400);
        assert_eq!(positive(Some(2), "cpuCount").unwrap(), Some(2));
        assert_eq!(positive(None, "cpuCount").unwrap(), None);
    }
}
