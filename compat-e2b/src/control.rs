//! The control plane: E2B's `/sandboxes` API over the engine's sandbox commands.
//!
//! | E2B | engine |
//! |---|---|
//! | `POST /sandboxes`, `POST /v2/sandboxes` (201) | `create_sandbox` (`autoPause` -> `on_timeout: pause`, or `stop` when `autoPauseMemory` is false) |
//! | `POST [/v2]/sandboxes/{id}/connect` (200 running, 201 resumed) | `resume_sandbox` / `start_sandbox`, `set_timeout` |
//! | `GET /sandboxes/{id}`, `GET /sandboxes`, `GET /v2/sandboxes` | `get_sandbox`, `list_sandboxes` |
//! | `DELETE /sandboxes/{id}` (204) | `kill_sandbox` |
//! | `POST /sandboxes/{id}/timeout` (204) | `set_timeout` |
//! | `POST /sandboxes/{id}/pause` (204, 409), `/resume` (201, 409) | `pause_sandbox` (`stop_sandbox` for `memory: false`), `resume_sandbox` |
//! | `GET /sandboxes/{id}/metrics` | `metrics_history` (samples every 5 s, the last hour) |
//!
//! States: creating, starting and running are E2B's `running`; paused, stopping, stopped and
//! archived are `paused` (`connect` brings them back); failed and deleted sandboxes do not
//! exist for E2B. Every route needs `X-API-KEY`.
//!
//! Public traffic: E2B's `network.allowPublicTraffic` defaults to true, so E2B serves a
//! sandbox's ports to anyone who knows its id. Platinum does not: a sandbox's service ports (all
//! but envd and the interpreter) need its traffic access token (returned as `trafficAccessToken`,
//! sent as `E2B-Traffic-Access-Token`) or its envd access token, unless it was created here with
//! an explicit `"network": {"allowPublicTraffic": true}` (kept as the sandbox attribute
//! [`ATTR_PUBLIC`], never in its metadata). Sandboxes created by other front ends are never public to E2B routing.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platinum_engine::commands::code::CodeLanguage;
use platinum_engine::model::ListQuery;
use platinum_engine::model::{CreateSandbox, Sandbox, SandboxState, TimeoutAction};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;
use crate::{Ctx, ENVD_VERSION, auth};

/// Timeout of a create or resume that names none (E2B's default), seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 300;
/// Page size of a list that names none.
const DEFAULT_PAGE: usize = 100;
/// Largest page.
const MAX_PAGE: usize = 1000;
/// E2B's deprecated `clientID`: E2B itself sends this constant.
const CLIENT_ID: &str = "6532622b";
/// `endAt` of a sandbox without a timeout.
const NEVER: &str = "9999-12-31T23:59:59Z";
/// Attribute marking a sandbox created with `network.allowPublicTraffic: true`.
pub const ATTR_PUBLIC: &str = "platinum.e2b/public";
/// Templates whose sandboxes get their default Python context started right after create.
const CODE_INTERPRETER_TEMPLATES: &[&str] = &["code-interpreter-v1"];

type ApiResult<T> = Result<T, ApiError>;

/// The control-plane routes (API key required).
pub fn router(ctx: Ctx) -> Router {
    Router::new()
        .route("/sandboxes", post(create).get(list_v1))
        .route("/v2/sandboxes", post(create).get(list_v2))
        .route("/sandboxes/{id}", get(get_one).delete(kill))
        .route("/sandboxes/{id}/connect", post(connect))
        .route("/v2/sandboxes/{id}/connect", post(connect))
        .route("/sandboxes/{id}/timeout", post(set_timeout))
        .route("/sandboxes/{id}/pause", post(pause))
        .route("/sandboxes/{id}/resume", post(resume))
        .route("/sandboxes/{id}/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_key))
        .with_state(ctx)
}

async fn require_key(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    match auth::api_key(req.headers()) {
        Some(key) if ctx.engine.api_keys().verify(key) => next.run(req).await,
        Some(_) => ApiError {
            status: 401,
            message: "Invalid API key".into(),
        }
        .into_response(),
        None => ApiError {
            status: 401,
            message: "Missing API key (X-API-KEY header)".into(),
        }
        .into_response(),
    }
}

/// A JSON body in E2B's error shape when it does not parse (an empty body is `{}`).
struct Body<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|e| ApiError::bad_request(format!("Error when reading the request: {e}")))?;
        let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
            Bytes::from_static(b"{}")
        } else {
            bytes
        };
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| ApiError::bad_request(format!("Error when parsing request: {e}")))
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| NEVER.into())
}

/// E2B's state of a sandbox; `None` for sandboxes E2B would not know (failed, deleted).
fn e2b_state(s: SandboxState) -> Option<&'static str> {
    match s {
        SandboxState::Creating | SandboxState::Starting | SandboxState::Running => Some("running"),
        SandboxState::Paused
        | SandboxState::Suspended
        | SandboxState::Stopping
        | SandboxState::Stopped
        | SandboxState::Archived => Some("paused"),
        SandboxState::Error | SandboxState::Deleted => None,
    }
}

fn engine_states(e2b: &str) -> ApiResult<&'static [SandboxState]> {
    match e2b {
        "running" => Ok(&[
            SandboxState::Creating,
            SandboxState::Starting,
            SandboxState::Running,
        ]),
        "paused" => Ok(&[
            SandboxState::Paused,
            SandboxState::Suspended,
            SandboxState::Stopping,
            SandboxState::Stopped,
            SandboxState::Archived,
        ]),
        other => Err(ApiError::bad_request(format!(
            "invalid state {other:?}: use running or paused"
        ))),
    }
}

/// A sandbox as E2B sees it, or 404.
async fn load(ctx: &Ctx, id: &str) -> ApiResult<Sandbox> {
    let s = ctx.engine.get_sandbox(id).await?;
    match e2b_state(s.state) {
        Some(_) => Ok(s),
        None => Err(ApiError::sandbox_not_found(id)),
    }
}

/// Whether a sandbox's service ports are open to requests without a token (created through E2B
/// with `network.allowPublicTraffic: true`).
pub fn is_public(s: &Sandbox) -> bool {
    s.attributes.get(ATTR_PUBLIC).is_some_and(|v| v == "true")
}

/// The `Sandbox` model (create, connect, resume).
fn sandbox_json(ctx: &Ctx, s: &Sandbox) -> Value {
    let traffic = (!is_public(s)).then(|| auth::traffic_token(&ctx.config.secret, &s.id));
    json!({
        "templateID": s.template,
        "sandboxID": s.id,
        "alias": s.template,
        "clientID": CLIENT_ID,
        "envdVersion": ENVD_VERSION,
        "envdAccessToken": auth::access_token(&ctx.config.secret, &s.id),
        "trafficAccessToken": traffic,
        "domain": ctx.config.domain,
    })
}

/// The fields `SandboxDetail` and `ListedSandbox` share.
fn listed_json(ctx: &Ctx, s: &Sandbox) -> Value {
    let disk_mb = ctx
        .engine
        .templates()
        .into_iter()
        .find(|t| t.name == s.template)
        .map_or(0, |t| t.disk_mib);
    json!({
        "templateID": s.template,
        "sandboxID": s.id,
        "alias": s.template,
        "clientID": CLIENT_ID,
        "startedAt": rfc3339(s.created_at),
        "endAt": s.expires_at.map(rfc3339).unwrap_or_else(|| NEVER.into()),
        "envdVersion": ENVD_VERSION,
        "cpuCount": s.vcpus,
        "memoryMB": s.memory_mib,
        "diskSizeMB": disk_mb,
        "state": e2b_state(s.state).unwrap_or("paused"),
        "metadata": s.metadata,
    })
}

fn detail_json(ctx: &Ctx, s: &Sandbox) -> Value {
    let mut v = listed_json(ctx, s);
    let on_timeout = match s.on_timeout {
        TimeoutAction::Kill => "kill",
        TimeoutAction::Pause | TimeoutAction::Stop => "pause",
    };
    let extra = json!({
        "envdAccessToken": auth::access_token(&ctx.config.secret, &s.id),
        "domain": ctx.config.domain,
        "allowInternetAccess": s.runtime.as_ref().map(|r| r.internet),
        "lifecycle": { "autoResume": false, "onTimeout": on_timeout },
    });
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
        match s.state {
            SandboxState::Paused => {
                v.insert("pauseMode".into(), json!("full"));
            }
            SandboxState::Stopped | SandboxState::Archived => {
                v.insert("pauseMode".into(), json!("filesystem"));
            }
            _ => {}
        }
    }
    v
}

/// `templateID` as a Platinum template name: `namespace/name:tag` is accepted for the default
/// tag only (Platinum templates have no tags).
fn template_name(reference: &str) -> ApiResult<String> {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    let (name, tag) = match name.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (name, None),
    };
    if let Some(tag) = tag.filter(|t| !matches!(*t, "default" | "latest")) {
        return Err(ApiError {
            status: 404,
            message: format!("tag '{tag}' does not exist for template '{name}'"),
        });
    }
    if name.is_empty() {
        return Err(ApiError::bad_request("templateID is empty"));
    }
    Ok(name.to_string())
}

fn timeout_secs(timeout: Option<i64>) -> ApiResult<u64> {
    match timeout {
        None => Ok(DEFAULT_TIMEOUT_SECS),
        Some(t) if t >= 1 => Ok(t as u64),
        Some(t) => Err(ApiError::bad_request(format!(
            "timeout must be at least 1 second, got {t}"
        ))),
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct NewSandbox {
    #[serde(rename = "templateID")]
    template_id: Option<String>,
    timeout: Option<i64>,
    auto_pause: Option<bool>,
    auto_pause_memory: Option<bool>,
    auto_resume: Option<AutoResume>,
    /// v1 only; every sandbox gets an access token, so it changes nothing.
    #[allow(dead_code)]
    secure: Option<bool>,
    #[serde(rename = "allow_internet_access")]
    allow_internet_access: Option<bool>,
    network: Option<Value>,
    metadata: Option<BTreeMap<String, String>>,
    env_vars: Option<BTreeMap<String, String>>,
    mcp: Option<Value>,
    iam: Option<Value>,
    volume_mounts: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
struct AutoResume {
    #[serde(default)]
    enabled: bool,
}

/// Internet access asked for by `allow_internet_access` and `network`; anything Platinum cannot
/// enforce is refused rather than ignored.
fn internet(req: &NewSandbox) -> ApiResult<Option<bool>> {
    let mut internet = req.allow_internet_access;
    let Some(network) = req.network.as_ref().and_then(Value::as_object) else {
        return Ok(internet);
    };
    for (key, value) in network {
        match key.as_str() {
            "denyOut" => {
                let deny: Vec<&str> = value
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                match deny.as_slice() {
                    [] => {}
                    ["0.0.0.0/0"] => internet = Some(false),
                    _ => {
                        return Err(ApiError::bad_request(
                            "network.denyOut supports only [\"0.0.0.0/0\"] (no internet access)",
                        ));
                    }
                }
            }
            // Read by `public_traffic`.
            "allowPublicTraffic" if value.is_boolean() || value.is_null() => {}
            _ if value.is_null()
                || value.as_array().is_some_and(|a| a.is_empty())
                || value.as_object().is_some_and(|o| o.is_empty()) => {}
            other => {
                return Err(ApiError::bad_request(format!(
                    "network.{other} is not supported by this server"
                )));
            }
        }
    }
    Ok(internet)
}

/// Whether the sandbox's ports are public: only an explicit `network.allowPublicTraffic: true`
/// (E2B's default of true is not Platinum's; see the module documentation).
fn public_traffic(req: &NewSandbox) -> bool {
    req.network
        .as_ref()
        .and_then(|n| n.get("allowPublicTraffic"))
        .and_then(Value::as_bool)
        == Some(true)
}

async fn create(State(ctx): State<Ctx>, Body(req): Body<NewSandbox>) -> ApiResult<Response> {
    let Some(reference) = req.template_id.as_deref() else {
        return Err(ApiError::bad_request("templateID is required"));
    };
    let template = template_name(reference)?;
    let timeout = timeout_secs(req.timeout)?;
    for (field, present) in [
        ("mcp", req.mcp.is_some()),
        ("iam", req.iam.is_some()),
        (
            "volumeMounts",
            req.volume_mounts
                .as_ref()
                .is_some_and(|v| v.as_array().is_none_or(|a| !a.is_empty())),
        ),
    ] {
        if present {
            return Err(ApiError::bad_request(format!(
                "{field} is not supported by this server"
            )));
        }
    }
    if req.auto_resume.as_ref().is_some_and(|a| a.enabled) {
        return Err(ApiError::bad_request(
            "autoResume is not supported by this server; resume with connect",
        ));
    }
    let auto_pause = req.auto_pause.unwrap_or(false);
    if req.auto_pause_memory == Some(false) && !auto_pause {
        return Err(ApiError::bad_request(
            "autoPauseMemory=false only applies when autoPause is true.",
        ));
    }
    let on_timeout = match (auto_pause, req.auto_pause_memory) {
        (false, _) => TimeoutAction::Kill,
        (true, Some(false)) => TimeoutAction::Stop,
        (true, _) => TimeoutAction::Pause,
    };
    let mut attributes = BTreeMap::new();
    if public_traffic(&req) {
        attributes.insert(ATTR_PUBLIC.to_string(), "true".to_string());
    }
    let create = CreateSandbox {
        template: Some(template.clone()),
        env: req.env_vars.clone().unwrap_or_default(),
        metadata: req.metadata.clone().unwrap_or_default(),
        attributes,
        timeout_secs: Some(timeout),
        on_timeout: Some(on_timeout),
        internet: internet(&req)?,
        ..CreateSandbox::default()
    };
    let sandbox = ctx.engine.create_sandbox(create).await?;
    tracing::info!(sandbox = %sandbox.id, %template, timeout, ?on_timeout, "E2B sandbox created");
    if CODE_INTERPRETER_TEMPLATES.contains(&template.as_str()) {
        // The first run_code should not wait for the kernel to start.
        let engine = ctx.engine.clone();
        let id = sandbox.id.clone();
        tokio::spawn(async move {
            if let Err(e) = engine.default_code_context(&id, CodeLanguage::Python).await {
                tracing::warn!(sandbox = %id, error = %e, "could not start the default Python context");
            }
        });
    }
    Ok((StatusCode::CREATED, Json(sandbox_json(&ctx, &sandbox))).into_response())
}

async fn get_one(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let s = load(&ctx, &id).await?;
    Ok(Json(detail_json(&ctx, &s)))
}

async fn kill(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    // A failed sandbox is invisible to E2B's other calls, but killing it still cleans it up.
    ctx.engine.kill_sandbox(&id).await?;
    tracing::info!(sandbox = %id, "E2B sandbox killed");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
struct TimeoutBody {
    timeout: Option<i64>,
}

async fn set_timeout(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(body): Body<TimeoutBody>,
) -> ApiResult<StatusCode> {
    let Some(secs) = body.timeout else {
        return Err(ApiError::bad_request("timeout is required"));
    };
    let secs = timeout_secs(Some(secs))?;
    load(&ctx, &id).await?;
    ctx.engine.set_timeout(&id, secs).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
struct ConnectBody {
    timeout: Option<i64>,
    memory: Option<bool>,
}

/// Connect: running sandboxes get a longer timeout if asked (200); paused or stopped ones are
/// brought back with the timeout (201).
async fn connect(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(body): Body<ConnectBody>,
) -> ApiResult<Response> {
    let s = load(&ctx, &id).await?;
    let (s, status) = match s.state {
        SandboxState::Running | SandboxState::Creating | SandboxState::Starting => {
            let mut s = s;
            if let Some(t) = body.timeout {
                let secs = timeout_secs(Some(t))?;
                let wanted = OffsetDateTime::now_utc() + std::time::Duration::from_secs(secs);
                if s.expires_at.is_some_and(|end| end < wanted) {
                    s = ctx.engine.set_timeout(&id, secs).await?;
                }
            }
            (s, StatusCode::OK)
        }
        state => {
            let secs = timeout_secs(body.timeout)?;
            // A paused sandbox's old timeout has passed (or is about to); set the new one first so
            // the lifecycle loop does not pause it again the moment it runs.
            ctx.engine.set_timeout(&id, secs).await?;
            if state == SandboxState::Paused && body.memory == Some(false) {
                ctx.engine.stop_sandbox(&id).await?;
            }
            let s = if state == SandboxState::Paused && body.memory != Some(false) {
                ctx.engine.resume_sandbox(&id).await?
            } else {
                ctx.engine.start_sandbox(&id).await?
            };
            tracing::info!(sandbox = %id, from = %state, "E2B sandbox resumed");
            (
                ctx.engine.set_timeout(&id, secs).await.unwrap_or(s),
                StatusCode::CREATED,
            )
        }
    };
    Ok((status, Json(sandbox_json(&ctx, &s))).into_response())
}

#[derive(Debug, Default, Deserialize)]
struct PauseBody {
    memory: Option<bool>,
}

async fn pause(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(body): Body<PauseBody>,
) -> ApiResult<StatusCode> {
    let s = load(&ctx, &id).await?;
    if e2b_state(s.state) == Some("paused") {
        return Err(ApiError {
            status: 409,
            message: format!("sandbox {id} is already paused"),
        });
    }
    if body.memory == Some(false) {
        ctx.engine.stop_sandbox(&id).await?;
    } else {
        ctx.engine.pause_sandbox(&id).await?;
    }
    tracing::info!(sandbox = %id, memory = body.memory != Some(false), "E2B sandbox paused");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize)]
struct ResumeBody {
    timeout: Option<i64>,
}

async fn resume(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(body): Body<ResumeBody>,
) -> ApiResult<Response> {
    let s = load(&ctx, &id).await?;
    if e2b_state(s.state) == Some("running") {
        return Err(ApiError {
            status: 409,
            message: format!("sandbox {id} is already running"),
        });
    }
    let secs = timeout_secs(body.timeout)?;
    ctx.engine.set_timeout(&id, secs).await?;
    let s = if s.state == SandboxState::Paused {
        ctx.engine.resume_sandbox(&id).await?
    } else {
        ctx.engine.start_sandbox(&id).await?
    };
    let s = ctx.engine.set_timeout(&id, secs).await.unwrap_or(s);
    Ok((StatusCode::CREATED, Json(sandbox_json(&ctx, &s))).into_response())
}

/// `GET /sandboxes/{id}/metrics?start=&end=` (Unix seconds, both optional): the samples the
/// engine kept in that range ([`platinum_engine::Engine::metrics_history`]), oldest first.
async fn metrics(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    load(&ctx, &id).await?;
    let (mut start, mut end) = (None, None);
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        let bound = match key.as_ref() {
            "start" => &mut start,
            "end" => &mut end,
            _ => continue,
        };
        let at = value
            .parse::<i64>()
            .ok()
            .and_then(|secs| OffsetDateTime::from_unix_timestamp(secs).ok())
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{key} must be a Unix time in seconds, not {value:?}"
                ))
            })?;
        *bound = Some(at);
    }
    let samples = ctx.engine.metrics_history(&id, start, end).await?;
    Ok(Json(Value::Array(
        samples
            .iter()
            .map(|s| {
                let m = &s.metrics;
                json!({
                    "timestamp": rfc3339(s.at),
                    "timestampUnix": s.at.unix_timestamp(),
                    "cpuCount": m.cpu_count,
                    "cpuUsedPct": m.cpu_used_pct,
                    "memUsed": m.mem_used,
                    "memTotal": m.mem_total,
                    "memCache": m.mem_cache,
                    "diskUsed": m.disk_used,
                    "diskTotal": m.disk_total,
                })
            })
            .collect(),
    )))
}

/// A list query after parsing.
#[derive(Debug, Default)]
struct ListFilter {
    states: Vec<SandboxState>,
    metadata: Vec<(String, String)>,
    template: Option<String>,
    started_after: Option<OffsetDateTime>,
    ascending: bool,
    limit: usize,
    after: Option<(i128, String)>,
}

/// `metadata=`: one parameter whose (already query-decoded) value is itself percent-encoded
/// `k=v&k2=v2`, each key and value percent-encoded once more (what both SDKs send).
fn parse_metadata(value: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(&percent_decode(value))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// Decodes `%XX` escapes (and nothing else).
fn percent_decode(text: &str) -> Vec<u8> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Page tokens: `<created unix ns>-<id>` of the last sandbox of the previous page.
fn page_token(s: &Sandbox) -> String {
    format!("{}-{}", s.created_at.unix_timestamp_nanos(), s.id)
}

fn parse_token(token: &str) -> ApiResult<(i128, String)> {
    let bad = || ApiError::bad_request(format!("invalid nextToken {token:?}"));
    let (ns, id) = token.split_once('-').ok_or_else(bad)?;
    Ok((ns.parse().map_err(|_| bad())?, id.to_string()))
}

fn list_filter(raw: Option<&str>, v2: bool) -> ApiResult<ListFilter> {
    let mut f = ListFilter {
        limit: DEFAULT_PAGE,
        ..ListFilter::default()
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "metadata" => f.metadata.extend(parse_metadata(&value)),
            "state" if v2 => {
                for s in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    f.states.extend_from_slice(engine_states(s)?);
                }
            }
            "template" if v2 => f.template = Some(template_name(&value)?),
            "startedAfter" if v2 => {
                f.started_after = Some(OffsetDateTime::parse(&value, &Rfc3339).map_err(|e| {
                    ApiError::bad_request(format!("invalid startedAfter {value:?}: {e}"))
                })?);
            }
            "order" if v2 => match value.as_ref() {
                "asc" => f.ascending = true,
                "desc" => f.ascending = false,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "invalid order {other:?}: use asc or desc"
                    )));
                }
            },
            "limit" if v2 => {
                f.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|l| (1..=MAX_PAGE).contains(l))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}"))
                    })?;
            }
            "nextToken" if v2 && !value.is_empty() => f.after = Some(parse_token(&value)?),
            _ => {}
        }
    }
    if f.states.is_empty() {
        f.states.extend_from_slice(engine_states("running")?);
        if v2 {
            f.states.extend_from_slice(engine_states("paused")?);
        }
    }
    Ok(f)
}

/// Every sandbox matching the filter, in the requested order.
async fn matching(ctx: &Ctx, f: &ListFilter) -> ApiResult<Vec<Sandbox>> {
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = ctx
            .engine
            .list_sandboxes(ListQuery {
                states: f.states.clone(),
                metadata: f.metadata.clone(),
                limit: 1000,
                cursor,
                ..ListQuery::default()
            })
            .await?;
        all.extend(page.items.into_iter().filter(|s| {
            f.template.as_ref().is_none_or(|t| &s.template == t)
                && f.started_after.is_none_or(|t| s.created_at >= t)
        }));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    all.sort_by(|a, b| {
        let key = |s: &Sandbox| (s.created_at.unix_timestamp_nanos(), s.id.clone());
        if f.ascending {
            key(a).cmp(&key(b))
        } else {
            key(b).cmp(&key(a))
        }
    });
    Ok(all)
}

async fn list_v1(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let f = list_filter(raw.as_deref(), false)?;
    let all = matching(&ctx, &f).await?;
    Ok(Json(Value::Array(
        all.iter().map(|s| listed_json(&ctx, s)).collect(),
    )))
}

async fn list_v2(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let f = list_filter(raw.as_deref(), true)?;
    let all = matching(&ctx, &f).await?;
    let start = match &f.after {
        None => 0,
        Some((ns, id)) => all
            .iter()
            .position(|s| {
                let key = (s.created_at.unix_timestamp_nanos(), s.id.clone());
                let after = (*ns, id.clone());
                if f.ascending {
                    key > after
                } else {
                    key < after
                }
            })
            .unwrap_or(all.len()),
    };
    let page: Vec<&Sandbox> = all.iter().skip(start).take(f.limit).collect();
    let more = start + page.len() < all.len();
    let running = all
        .iter()
        .filter(|s| e2b_state(s.state) == Some("running"))
        .count();
    let body = Value::Array(page.iter().map(|s| listed_json(&ctx, s)).collect());
    let mut headers = HeaderMap::new();
    if let Some(last) = page.last().filter(|_| more)
        && let Ok(v) = HeaderValue::from_str(&page_token(last))
    {
        headers.insert("x-next-token", v);
    }
    headers.insert("x-total-running", HeaderValue::from(running));
    Ok((StatusCode::OK, headers, Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_references_resolve_to_names() {
        assert_eq!(template_name("base").unwrap(), "base");
        assert_eq!(
            template_name("e2b/code-interpreter-v1:default").unwrap(),
            "code-interpreter-v1"
        );
        assert_eq!(template_name("base:v2").unwrap_err().status, 404);
        assert_eq!(template_name("").unwrap_err().status, 400);
    }

    #[test]
    fn list_queries_parse_like_e2b() {
        // What the Python SDK sends for metadata={"a b": "x&y", "k": "v"}, state=[running].
        let f = list_filter(
            Some("metadata=a%252520b%3Dx%252526y%26k%3Dv&state=running&limit=2&order=asc"),
            true,
        )
        .unwrap();
        assert_eq!(
            f.metadata,
            vec![("a b".into(), "x&y".into()), ("k".into(), "v".into())]
        );
        assert_eq!(f.states, engine_states("running").unwrap());
        assert!(f.ascending && f.limit == 2);
        let f = list_filter(None, true).unwrap();
        assert_eq!(f.states.len(), 7);
        assert_eq!(
            list_filter(Some("state=dead"), true).unwrap_err().status,
            400
        );
        assert_eq!(list_filter(Some("limit=0"), true).unwrap_err().status, 400);
        assert!(parse_token("12-abc").is_ok() && parse_token("x").is_err());
    }

    #[test]
    fn network_options_map_to_internet_access() {
        let req = |v: Value| NewSandbox {
            network: Some(v),
            ..NewSandbox::default()
        };
        assert_eq!(
            internet(&req(json!({"denyOut": ["0.0.0.0/0"]}))).unwrap(),
            Some(false)
        );
        assert_eq!(internet(&req(json!({"allowOut": []}))).unwrap(), None);
        assert!(internet(&req(json!({"allowOut": ["1.1.1.1"]}))).is_err());
        assert_eq!(
            internet(&req(json!({"allowPublicTraffic": false}))).unwrap(),
            None
        );
        assert!(internet(&req(json!({"allowPublicTraffic": "yes"}))).is_err());
        // Public only when asked for explicitly (E2B's default is not Platinum's).
        assert!(public_traffic(&req(json!({"allowPublicTraffic": true}))));
        assert!(!public_traffic(&req(json!({"allowPublicTraffic": false}))));
        assert!(!public_traffic(&req(json!({"allowOut": []}))));
        assert!(!public_traffic(&NewSandbox::default()));
        let plain = NewSandbox {
            allow_internet_access: Some(true),
            ..NewSandbox::default()
        };
        assert_eq!(internet(&plain).unwrap(), Some(true));
    }
}
