//! The control plane: E2B's `/sandboxes` API over the engine's sandbox commands.
//!
//! | E2B | engine |
//! |---|---|
//! | `POST /sandboxes`, `POST /v2/sandboxes` (201) | `create_sandbox` (`autoPause` -> `on_timeout: pause`, to disk with memory, or `stop` when `autoPauseMemory` is false; a `templateID` naming a snapshot restores it) |
//! | `POST [/v2]/sandboxes/{id}/connect` (200 running, 201 resumed) | `resume_sandbox` / `start_sandbox`, `set_timeout` |
//! | `GET /sandboxes/{id}`, `GET /sandboxes`, `GET /v2/sandboxes` | `get_sandbox`, `list_sandboxes` |
//! | `DELETE /sandboxes/{id}` (204) | `kill_sandbox` (its snapshots stay) |
//! | `POST /sandboxes/{id}/timeout` (204) | `set_timeout` |
//! | `POST /sandboxes/{id}/pause` (204, 409), `/resume` (201, 409) | `suspend_sandbox` (to disk, with memory unless `memory: false`), `resume_sandbox` |
//! | `GET /sandboxes/{id}/metrics` | `metrics_history` (samples every 5 s, the last hour) |
//! | snapshots and fork | see [`crate::snapshots`] |
//! | volumes (`/volumes`, `volumeMounts` at create) | see [`crate::volumes`] |
//! | templates and their builds | see [`crate::templates`] |
//!
//! States: creating, starting and running are E2B's `running`; paused, suspended, stopping,
//! stopped and archived are `paused` (`connect` brings them back); failed and deleted sandboxes
//! do not exist for E2B. Every route needs `X-API-KEY`.
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
use platinum_engine::model::{CreateSandbox, EgressPolicy, Sandbox, SandboxState, TimeoutAction};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::ApiError;
use crate::volumes::{self, Mounted, SandboxVolumeMount};
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

/// Attribute holding `network.maskRequestHost`: the `Host` a sandbox's services see for
/// requests routed to them (`${PORT}` stands for the port).
pub const ATTR_MASK_HOST: &str = "platinum.e2b/mask-request-host";
/// How snapshot ids begin (`Snapshot::id`).
const SNAPSHOT_ID_PREFIX: &str = "snap";
/// Templates whose sandboxes get their default Python context started right after create.
const CODE_INTERPRETER_TEMPLATES: &[&str] = &["code-interpreter-v1"];

type ApiResult<T> = Result<T, ApiError>;

/// The control-plane routes (API key required; the volume content routes check the volume's
/// token or an API key themselves).
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
        .merge(crate::snapshots::routes())
        .merge(crate::templates::routes())
        .merge(crate::volumes::routes())
        .merge(crate::secrets::routes())
        .merge(crate::network::routes())
        .route_layer(middleware::from_fn_with_state(ctx.clone(), require_key))
        .merge(crate::volume_content::routes())
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
pub(crate) struct Body<T>(pub(crate) T);

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

/// A time as E2B writes it (RFC 3339).
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
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
pub(crate) async fn load(ctx: &Ctx, id: &str) -> ApiResult<Sandbox> {
    let s = ctx.engine.get_sandbox(id).await?;
    match e2b_state(s.state) {
        Some(_) => Ok(s),
        None => Err(ApiError::sandbox_not_found(id)),
    }
}

/// The `Host` sandbox `s`'s service on `port` sees for routed requests, when it was created
/// with `network.maskRequestHost`.
pub fn request_host(s: &Sandbox, port: u16) -> Option<String> {
    s.attributes
        .get(ATTR_MASK_HOST)
        .map(|mask| mask.replace(crate::network::PORT_VARIABLE, &port.to_string()))
}

/// Whether a sandbox's service ports are open to requests without a token (created through E2B
/// with `network.allowPublicTraffic: true`).
pub fn is_public(s: &Sandbox) -> bool {
    s.attributes.get(ATTR_PUBLIC).is_some_and(|v| v == "true")
}

/// The `Sandbox` model (create, connect, resume, fork).
pub(crate) fn sandbox_json(ctx: &Ctx, s: &Sandbox) -> Value {
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

/// The fields `SandboxDetail` and `ListedSandbox` share (`volumeMounts` from `mounted`).
fn listed_json(ctx: &Ctx, s: &Sandbox, mounted: &Mounted) -> Value {
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
        "volumeMounts": mounted.get(&s.id).cloned().unwrap_or_default(),
    })
}

/// `pauseMode` of a paused sandbox: `full` when it comes back with its memory, `filesystem` when
/// it boots from its disk. A sandbox paused to disk says which in the event that suspended it.
async fn pause_mode(ctx: &Ctx, s: &Sandbox) -> ApiResult<Option<&'static str>> {
    let full = |memory: bool| Some(if memory { "full" } else { "filesystem" });
    Ok(match s.state {
        SandboxState::Paused => full(true),
        SandboxState::Stopped | SandboxState::Archived => full(false),
        SandboxState::Suspended => {
            let events = ctx.engine.sandbox_events(&s.id).await?;
            let memory = events
                .iter()
                .rev()
                .find(|(_, kind, _)| kind == SandboxState::Suspended.as_str())
                .and_then(|(_, _, detail)| detail.get("memory"))
                .and_then(Value::as_bool);
            // No record of how: a pause to disk keeps memory unless asked otherwise.
            full(memory.unwrap_or(true))
        }
        _ => None,
    })
}

fn detail_json(
    ctx: &Ctx,
    s: &Sandbox,
    pause_mode: Option<&str>,
    mounted: &Mounted,
    egress: &EgressPolicy,
) -> Value {
    let mut v = listed_json(ctx, s, mounted);
    let on_timeout = match s.on_timeout {
        TimeoutAction::Kill => "kill",
        TimeoutAction::Pause | TimeoutAction::Stop => "pause",
    };
    let mut network = crate::network::network_json(egress);
    network["allowPublicTraffic"] = json!(is_public(s));
    if let Some(mask) = s.attributes.get(ATTR_MASK_HOST) {
        network["maskRequestHost"] = json!(mask);
    }
    let extra = json!({
        "envdAccessToken": auth::access_token(&ctx.config.secret, &s.id),
        "domain": ctx.config.domain,
        "allowInternetAccess": s.runtime.as_ref().map(|r| r.internet),
        "lifecycle": { "autoResume": s.auto_resume(), "onTimeout": on_timeout },
        "network": network,
    });
    if let (Some(v), Some(extra)) = (v.as_object_mut(), extra.as_object()) {
        v.extend(extra.clone());
        if let Some(mode) = pause_mode {
            v.insert("pauseMode".into(), json!(mode));
        }
    }
    v
}

/// A `namespace/name:tag` reference split into its name and tag.
pub(crate) fn split_reference(reference: &str) -> (&str, Option<&str>) {
    let name = reference.rsplit('/').next().unwrap_or(reference);
    match name.split_once(':') {
        Some((n, t)) => (n, Some(t)),
        None => (name, None),
    }
}

/// Whether a reference's tag is one Platinum answers for (none, `default` or `latest`: Platinum
/// templates and snapshots have no tags).
pub(crate) fn untagged(tag: Option<&str>) -> bool {
    tag.is_none_or(|t| matches!(t, "default" | "latest"))
}

/// `templateID` as a Platinum template name: `namespace/name:tag` is accepted for the default
/// tag only.
fn template_name(reference: &str) -> ApiResult<String> {
    let (name, tag) = split_reference(reference);
    if let Some(tag) = tag.filter(|_| !untagged(tag)) {
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

/// A timeout in seconds: E2B's default when none is given, at least 1 second.
pub(crate) fn timeout_secs(timeout: Option<i64>) -> ApiResult<u64> {
    match timeout {
        None => Ok(DEFAULT_TIMEOUT_SECS),
        Some(t) if t >= 1 => Ok(t as u64),
        Some(t) => Err(ApiError::bad_request(format!(
            "timeout must be at least 1 second, got {t}"
        ))),
    }
}

/// What a create's `templateID` starts the sandbox from.
#[derive(Debug)]
enum Source {
    /// A template, by name (booted).
    Template(String),
    /// A snapshot, by id (restored with its memory and disk).
    Snapshot(String),
}

/// `templateID` as a template or a snapshot: a snapshot id (`snap…`, what `create_snapshot`
/// returns) or the name of a snapshot when no template has that name. Anything else is a
/// template name (an unknown one is the engine's `template_not_found`).
async fn source(ctx: &Ctx, reference: &str) -> ApiResult<Source> {
    let name = template_name(reference)?;
    let is_template = ctx.engine.templates().iter().any(|t| t.name == name);
    if is_template && !name.starts_with(SNAPSHOT_ID_PREFIX) {
        return Ok(Source::Template(name));
    }
    Ok(match crate::snapshots::find(ctx, &name).await? {
        Some(snap) => Source::Snapshot(snap.id),
        None => Source::Template(name),
    })
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
    volume_mounts: Option<Vec<SandboxVolumeMount>>,
}

#[derive(Debug, Default, Deserialize)]
struct AutoResume {
    #[serde(default)]
    enabled: bool,
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
    let source = source(&ctx, reference).await?;
    let timeout = timeout_secs(req.timeout)?;
    for (field, present) in [("mcp", req.mcp.is_some()), ("iam", req.iam.is_some())] {
        if present {
            return Err(ApiError::bad_request(format!(
                "{field} is not supported by this server"
            )));
        }
    }
    let auto_resume = req.auto_resume.as_ref().is_some_and(|a| a.enabled);
    if auto_resume && req.auto_pause_memory == Some(false) {
        return Err(ApiError::bad_request(
            "autoResume cannot be combined with autoPauseMemory=false.",
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
    if let Some(mask) = crate::network::mask_request_host(req.network.as_ref())? {
        attributes.insert(ATTR_MASK_HOST.to_string(), mask);
    }
    let (template, snapshot) = match source {
        Source::Template(name) => (Some(name), None),
        // Template, vCPUs and memory are the snapshot's.
        Source::Snapshot(id) => (None, Some(id)),
    };
    let create = CreateSandbox {
        template,
        snapshot,
        env: req.env_vars.clone().unwrap_or_default(),
        metadata: req.metadata.clone().unwrap_or_default(),
        attributes,
        timeout_secs: Some(timeout),
        on_timeout: Some(on_timeout),
        internet: req.allow_internet_access.filter(|allowed| *allowed),
        egress: crate::network::egress_policy(
            req.allow_internet_access,
            req.network.as_ref(),
            true,
        )?,
        auto_resume,
        volumes: volumes::mounts(req.volume_mounts.as_deref().unwrap_or_default()),
        ..CreateSandbox::default()
    };
    let sandbox = ctx.engine.create_sandbox(create).await?;
    tracing::info!(sandbox = %sandbox.id, template = %sandbox.template, timeout, ?on_timeout, "E2B sandbox created");
    if CODE_INTERPRETER_TEMPLATES.contains(&sandbox.template.as_str()) {
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
    let mode = pause_mode(&ctx, &s).await?;
    let mounted = volumes::mounted(&ctx).await?;
    let egress = ctx.engine.get_egress_policy(&s.id).await?;
    Ok(Json(detail_json(&ctx, &s, mode, &mounted, &egress)))
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

/// Brings a paused sandbox back ([`Engine::resume_sandbox`] for one paused in memory or to disk,
/// [`Engine::start_sandbox`] for a stopped or archived one). `memory: false` (E2B's "reboot")
/// boots one paused in memory from its disk instead; one paused to disk with its memory comes
/// back with it all the same (the engine keeps no disk-only path for such an image).
///
/// [`Engine::resume_sandbox`]: platinum_engine::Engine::resume_sandbox
/// [`Engine::start_sandbox`]: platinum_engine::Engine::start_sandbox
async fn bring_back(ctx: &Ctx, s: &Sandbox, memory: bool) -> ApiResult<Sandbox> {
    let id = s.id.as_str();
    Ok(match s.state {
        SandboxState::Paused if !memory => {
            ctx.engine.stop_sandbox(id).await?;
            ctx.engine.start_sandbox(id).await?
        }
        SandboxState::Paused | SandboxState::Suspended => ctx.engine.resume_sandbox(id).await?,
        _ => ctx.engine.start_sandbox(id).await?,
    })
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
            let s = bring_back(&ctx, &s, body.memory != Some(false)).await?;
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
    // To disk either way: the VM process exits and frees its memory.
    let memory = body.memory != Some(false);
    ctx.engine.suspend_sandbox(&id, memory).await?;
    tracing::info!(sandbox = %id, memory, "E2B sandbox paused");
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
    let s = bring_back(&ctx, &s, true).await?;
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
    after: Option<PageKey>,
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

/// Where an item stands in a paged list: its creation time (Unix ns) and its id.
pub(crate) type PageKey = (i128, String);

/// A sandbox's [`PageKey`].
fn sandbox_key(s: &Sandbox) -> PageKey {
    (s.created_at.unix_timestamp_nanos(), s.id.clone())
}

/// Page tokens: `<created unix ns>-<id>` of the last item of the previous page.
fn page_token((ns, id): &PageKey) -> String {
    format!("{ns}-{id}")
}

/// A `nextToken` back to the [`PageKey`] it was made of.
pub(crate) fn parse_token(token: &str) -> ApiResult<PageKey> {
    let bad = || ApiError::bad_request(format!("invalid nextToken {token:?}"));
    let (ns, id) = token.split_once('-').ok_or_else(bad)?;
    Ok((ns.parse().map_err(|_| bad())?, id.to_string()))
}

/// A page size (`limit=`), 1 to [`MAX_PAGE`].
pub(crate) fn parse_limit(value: &str) -> ApiResult<usize> {
    value
        .parse::<usize>()
        .ok()
        .filter(|l| (1..=MAX_PAGE).contains(l))
        .ok_or_else(|| ApiError::bad_request(format!("limit must be 1..={MAX_PAGE}")))
}

/// One page of `all` (sorted by `key`, ascending or not): up to `limit` items after the one
/// `after` names, and the token of the next page when more follow.
pub(crate) fn page<'a, T>(
    all: &'a [T],
    key: impl Fn(&T) -> PageKey,
    after: Option<&PageKey>,
    ascending: bool,
    limit: usize,
) -> (&'a [T], Option<String>) {
    let start = after.map_or(0, |after| {
        all.iter()
            .position(|x| {
                let k = key(x);
                if ascending { &k > after } else { &k < after }
            })
            .unwrap_or(all.len())
    });
    let end = start.saturating_add(limit).min(all.len());
    let items = &all[start..end];
    let next = items
        .last()
        .filter(|_| end < all.len())
        .map(|x| page_token(&key(x)));
    (items, next)
}

/// Response headers carrying the next page's token, if any (`X-Next-Token`).
pub(crate) fn next_token_headers(next: Option<String>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(v) = next.and_then(|t| HeaderValue::from_str(&t).ok()) {
        headers.insert("x-next-token", v);
    }
    headers
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
            "limit" if v2 => f.limit = parse_limit(&value)?,
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
        if f.ascending {
            sandbox_key(a).cmp(&sandbox_key(b))
        } else {
            sandbox_key(b).cmp(&sandbox_key(a))
        }
    });
    Ok(all)
}

async fn list_v1(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> ApiResult<Json<Value>> {
    let f = list_filter(raw.as_deref(), false)?;
    let all = matching(&ctx, &f).await?;
    let mounted = volumes::mounted(&ctx).await?;
    Ok(Json(Value::Array(
        all.iter().map(|s| listed_json(&ctx, s, &mounted)).collect(),
    )))
}

async fn list_v2(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let f = list_filter(raw.as_deref(), true)?;
    let all = matching(&ctx, &f).await?;
    let (items, next) = page(&all, sandbox_key, f.after.as_ref(), f.ascending, f.limit);
    let running = all
        .iter()
        .filter(|s| e2b_state(s.state) == Some("running"))
        .count();
    let mounted = volumes::mounted(&ctx).await?;
    let body = Value::Array(
        items
            .iter()
            .map(|s| listed_json(&ctx, s, &mounted))
            .collect(),
    );
    let mut headers = next_token_headers(next);
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
        assert_eq!(f.states.len(), 8);
        assert_eq!(
            list_filter(Some("state=dead"), true).unwrap_err().status,
            400
        );
        assert_eq!(list_filter(Some("limit=0"), true).unwrap_err().status, 400);
        assert!(parse_token("12-abc").is_ok() && parse_token("x").is_err());
    }

    #[test]
    fn pages_follow_their_tokens() {
        let all: Vec<PageKey> = (1..=5).map(|n| (n, format!("id{n}"))).collect();
        let key = |k: &PageKey| k.clone();
        let (items, next) = page(&all, key, None, true, 2);
        assert_eq!((items.len(), next.as_deref()), (2, Some("2-id2")));
        let after = parse_token(next.as_deref().unwrap()).unwrap();
        let (items, next) = page(&all, key, Some(&after), true, 2);
        assert_eq!(items, &all[2..4]);
        let after = parse_token(next.as_deref().unwrap()).unwrap();
        let (items, next) = page(&all, key, Some(&after), true, 2);
        assert_eq!((items, next), (&all[4..], None));
        // Descending: after item 4 come 3, 2, 1.
        let desc: Vec<PageKey> = all.iter().rev().cloned().collect();
        let (items, _) = page(&desc, key, Some(&(4, "id4".into())), false, 10);
        assert_eq!(items, &desc[2..]);
        assert_eq!(parse_limit("1001").unwrap_err().status, 400);
    }

    #[test]
    fn volume_mounts_of_a_create_are_engine_volumes() {
        // The Python SDK's body for `Sandbox.create(volume_mounts={"/data": vol})`.
        let req: NewSandbox = serde_json::from_value(json!({
            "templateID": "base",
            "volumeMounts": [{"name": "data", "path": "/data"}],
        }))
        .unwrap();
        let mounts = volumes::mounts(req.volume_mounts.as_deref().unwrap_or_default());
        assert_eq!(
            mounts,
            [platinum_engine::model::VolumeMount {
                volume: "data".into(),
                path: "/data".into(),
                readonly: false,
            }]
        );
        for none in [
            json!({}),
            json!({"volumeMounts": null}),
            json!({"volumeMounts": []}),
        ] {
            let req: NewSandbox = serde_json::from_value(none).unwrap();
            assert!(volumes::mounts(req.volume_mounts.as_deref().unwrap_or_default()).is_empty());
        }
        assert!(
            serde_json::from_value::<NewSandbox>(json!({"volumeMounts": [{"path": "/data"}]}))
                .is_err()
        );
    }

    #[test]
    fn public_traffic_only_when_asked_for() {
        let req = |v: Value| NewSandbox {
            network: Some(v),
            ..NewSandbox::default()
        };
        // Public only when asked for explicitly (E2B's default is not Platinum's).
        assert!(public_traffic(&req(json!({"allowPublicTraffic": true}))));
        assert!(!public_traffic(&req(json!({"allowPublicTraffic": false}))));
        assert!(!public_traffic(&req(json!({"allowOut": []}))));
        assert!(!public_traffic(&NewSandbox::default()));
    }
}
