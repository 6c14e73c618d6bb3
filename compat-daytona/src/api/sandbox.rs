//! `/api/sandbox/...`: Daytona sandboxes on Platinum sandboxes.
//!
//! Mapping:
//! - A Daytona snapshot is a Platinum template (built in, or built from an `Image`:
//!   [`super::snapshot_builds`]) or a snapshot taken of a sandbox ([`super::copies`]), restored
//!   with its memory and disk. An image (`buildInfo.dockerfileContent`) that is a bare `FROM` of
//!   what a template already is starts from that template; any other is built into a template
//!   first, once per Dockerfile, within the create ([`super::images`]).
//! - `volumes` (`[{volumeId, mountPath}]`) are mounted read-write at create ([`super::volumes`]);
//!   create and get report what is attached.
//! - Labels are the sandbox's metadata. Keys under `platinum.daytona/` are this front end's own
//!   (public flag, signing-key generation) and never shown as labels.
//! - `autoStopInterval` / `autoArchiveInterval` / `autoDeleteInterval` (minutes) are the engine's
//!   lifecycle rules, enforced by its lifecycle loop. Defaults as on Daytona: stop after 15
//!   minutes idle, archive after 7 days stopped (0 = the 30-day maximum), never delete (-1;
//!   0 = as soon as it stops).
//! - States: `running` is reported as `started`, `deleted` as `destroyed`, paused to disk
//!   (`pause`) as `stopped`; the others keep their names. Create returns `started` once the VM
//!   is up, so the SDKs never poll.
//! - Every response is a complete `Sandbox` with status 200 (the Python client deserialises
//!   only the statuses in its map, and a 201 would leave it with `None`).

use axum::Json;
use axum::extract::{FromRequestParts, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use platinum_engine::Engine;
use platinum_engine::model::ListQuery;
use platinum_engine::model::{
    BootMode, CreateSandbox, EgressDefault, EgressPolicy, LifecycleRules, Sandbox, SandboxState,
    TimeoutAction,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::builds::{self, BuildInfo};
use super::images;
use super::volumes::{self, SandboxVolume};
use crate::Ctx;
use crate::error::{DJson, DPath, DResult, DaytonaError};

/// Label the SDKs use to pick a sandbox's `code_run` language.
pub const LANGUAGE_LABEL: &str = "code-toolbox-language";
/// Attributes this front end keeps about a sandbox ([`Sandbox::attributes`], never labels).
const ATTR_PUBLIC: &str = "platinum.daytona/public";
const ATTR_SIGNING_GEN: &str = "platinum.daytona/signing-key-generation";

/// Daytona defaults and limits, minutes.
const DEFAULT_AUTO_STOP_MIN: i64 = 15;
const DEFAULT_AUTO_ARCHIVE_MIN: i64 = 7 * 24 * 60;
const MAX_AUTO_ARCHIVE_MIN: i64 = 30 * 24 * 60;
/// Largest interval accepted, minutes (ten years; keeps seconds far from overflow).
const MAX_INTERVAL_MIN: i64 = 10 * 365 * 24 * 60;
/// The OS user commands run as.
pub use platinum_engine::env::DEFAULT_USER as SANDBOX_USER;

/// The base URL a client reached this server at: the configured public URL, else
/// `http://<Host>` (or the forwarded host and scheme a reverse proxy set).
#[derive(Debug, Clone)]
pub struct BaseUrl(pub String);

impl FromRequestParts<Ctx> for BaseUrl {
    type Rejection = DaytonaError;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx) -> Result<Self, Self::Rejection> {
        Ok(BaseUrl(base_url(ctx, &parts.headers)))
    }
}

/// See [`BaseUrl`].
pub fn base_url(ctx: &Ctx, headers: &HeaderMap) -> String {
    if let Some(url) = &ctx.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    platinum_frontend_http::origin::request_base_url(headers)
}

/// The toolbox base for a base URL (never with a trailing slash: the Python SDK appends `/{id}`).
pub fn toolbox_url(base: &str) -> String {
    format!("{}/toolbox", base.trim_end_matches('/'))
}

/// Whether previews of the sandbox need no token.
pub fn is_public(s: &Sandbox) -> bool {
    s.attributes.get(ATTR_PUBLIC).is_some_and(|v| v == "true")
}

/// Which signing key the sandbox's file URLs use (bumped by rotation).
pub fn signing_generation(s: &Sandbox) -> u64 {
    s.attributes
        .get(ATTR_SIGNING_GEN)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The user-visible labels.
fn labels_of(s: &Sandbox) -> BTreeMap<String, String> {
    s.metadata.clone()
}

/// Daytona's name for a state.
pub fn state_name(s: SandboxState) -> &'static str {
    match s {
        SandboxState::Creating => "creating",
        SandboxState::Starting => "starting",
        SandboxState::Running => "started",
        SandboxState::Paused => "paused",
        SandboxState::Stopping => "stopping",
        SandboxState::Stopped | SandboxState::Suspended => "stopped",
        SandboxState::Archived => "archived",
        SandboxState::Error => "error",
        SandboxState::Deleted => "destroyed",
    }
}

fn desired_state(s: SandboxState) -> &'static str {
    match s {
        SandboxState::Creating | SandboxState::Starting | SandboxState::Running => "started",
        SandboxState::Paused => "paused",
        SandboxState::Stopping
        | SandboxState::Stopped
        | SandboxState::Suspended
        | SandboxState::Error => "stopped",
        SandboxState::Archived => "archived",
        SandboxState::Deleted => "destroyed",
    }
}

/// The engine state for a Daytona state name.
fn parse_state(name: &str) -> Option<SandboxState> {
    Some(match name {
        "creating" | "pending_build" | "building_snapshot" | "pulling_snapshot" => {
            SandboxState::Creating
        }
        "starting" | "restoring" | "resuming" => SandboxState::Starting,
        "started" => SandboxState::Running,
        "paused" | "pausing" => SandboxState::Paused,
        "stopping" => SandboxState::Stopping,
        "stopped" => SandboxState::Stopped,
        "archived" | "archiving" => SandboxState::Archived,
        "error" | "build_failed" => SandboxState::Error,
        "destroyed" | "destroying" => SandboxState::Deleted,
        _ => return None,
    })
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}

/// The `Sandbox` object (also used for list items, whose required fields are a subset).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SandboxDto {
    id: String,
    organization_id: &'static str,
    name: String,
    user: &'static str,
    env: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    public: bool,
    network_block_all: bool,
    kvm: bool,
    target: String,
    cpu: u32,
    gpu: u32,
    memory: u64,
    disk: u64,
    state: &'static str,
    desired_state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_reason: Option<String>,
    recoverable: bool,
    snapshot: String,
    auto_stop_interval: i64,
    auto_pause_interval: i64,
    auto_archive_interval: i64,
    auto_delete_interval: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    auto_destroy_at: Option<String>,
    volumes: Vec<Value>,
    created_at: String,
    updated_at: String,
    last_activity_at: String,
    sandbox_class: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    daemon_version: Option<String>,
    toolbox_proxy_url: String,
}

/// Renders a sandbox.
pub fn dto(ctx: &Ctx, base: &BaseUrl, s: &Sandbox) -> SandboxDto {
    let disk_mib = ctx
        .engine
        .templates()
        .into_iter()
        .find(|t| t.name == s.template)
        .map_or(
            platinum_engine::commands::settings::DEFAULT_TEMPLATE_DISK_MIB,
            |t| t.disk_mib,
        );
    let last_activity = s.last_activity_at.max(s.created_at);
    SandboxDto {
        id: s.id.clone(),
        organization_id: "local",
        name: s.name.clone().unwrap_or_else(|| s.id.clone()),
        user: SANDBOX_USER,
        env: s.env.clone(),
        labels: labels_of(s),
        public: is_public(s),
        network_block_all: s.runtime.as_ref().is_some_and(|r| !r.internet),
        kvm: false,
        target: ctx.config.target.clone(),
        cpu: s.vcpus,
        gpu: 0,
        memory: ceil_div(u64::from(s.memory_mib), 1024).max(1),
        disk: ceil_div(disk_mib, 1024).max(1),
        state: state_name(s.state),
        desired_state: desired_state(s.state),
        error_reason: s.error.clone(),
        recoverable: s.state == SandboxState::Error,
        snapshot: ctx
            .builds
            .get(&s.template)
            .map_or_else(|| s.template.clone(), |t| t.display),
        auto_stop_interval: s
            .lifecycle
            .stop_after_idle_secs
            .map_or(0, |t| (t / 60) as i64),
        auto_pause_interval: 0,
        auto_archive_interval: s
            .lifecycle
            .archive_after_stopped_secs
            .map_or(0, |t| (t / 60) as i64),
        auto_delete_interval: s
            .lifecycle
            .delete_after_stopped_secs
            .map_or(-1, |t| (t / 60) as i64),
        auto_destroy_at: s.expires_at.map(rfc3339),
        volumes: Vec::new(),
        created_at: rfc3339(s.created_at),
        updated_at: rfc3339(last_activity),
        last_activity_at: rfc3339(last_activity),
        sandbox_class: "linux-vm",
        daemon_version: s.runtime.as_ref().map(|r| r.agent_version.clone()),
        toolbox_proxy_url: toolbox_url(&base.0),
    }
}

/// `autoStopInterval` minutes to the idle-stop rule (0 = never).
fn stop_rule(minutes: i64) -> DResult<Option<u64>> {
    match minutes {
        m if m < 0 => Err(DaytonaError::bad_request(
            "autoStopInterval must be 0 (never) or a positive number of minutes",
        )),
        0 => Ok(None),
        m => Ok(Some(m.min(MAX_INTERVAL_MIN) as u64 * 60)),
    }
}

/// `autoArchiveInterval` minutes to the archive rule (0 = the maximum).
fn archive_rule(minutes: i64) -> DResult<Option<u64>> {
    match minutes {
        m if m < 0 => Err(DaytonaError::bad_request(
            "autoArchiveInterval must be 0 (the maximum) or a positive number of minutes",
        )),
        0 => Ok(Some(MAX_AUTO_ARCHIVE_MIN as u64 * 60)),
        m => Ok(Some(m.min(MAX_AUTO_ARCHIVE_MIN) as u64 * 60)),
    }
}

/// `autoDeleteInterval` minutes to the delete rule (negative = never, 0 = once stopped).
fn delete_rule(minutes: i64) -> Option<u64> {
    (minutes >= 0).then(|| minutes.min(MAX_INTERVAL_MIN) as u64 * 60)
}

/// `CreateSandbox`; every field optional. Fields Platinum cannot honour are refused, not
/// ignored; purely informational ones (`target`, `kvm`, `linkedSandbox`...) are accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    name: Option<String>,
    snapshot: Option<String>,
    user: Option<String>,
    env: Option<BTreeMap<String, String>>,
    labels: Option<BTreeMap<String, String>>,
    public: Option<bool>,
    network_block_all: Option<bool>,
    network_allow_list: Option<String>,
    domain_allow_list: Option<String>,
    cpu: Option<i64>,
    gpu: Option<i64>,
    memory: Option<i64>,
    disk: Option<i64>,
    auto_stop_interval: Option<i64>,
    auto_pause_interval: Option<i64>,
    auto_archive_interval: Option<i64>,
    auto_delete_interval: Option<i64>,
    ttl_minutes: Option<i64>,
    volumes: Option<Vec<SandboxVolume>>,
    build_info: Option<BuildInfo>,
    secrets: Option<Vec<Value>>,
}

/// `cpu` of a create: a positive number of vCPUs.
pub(crate) fn vcpus_of(cpu: Option<i64>) -> DResult<Option<u32>> {
    match cpu {
        None => Ok(None),
        Some(c) if (1..=i64::from(u32::MAX)).contains(&c) => Ok(Some(c as u32)),
        Some(c) => Err(DaytonaError::bad_request(format!(
            "cpu {c} must be positive"
        ))),
    }
}

/// `memory` of a create (GiB), in MiB.
pub(crate) fn memory_mib_of(memory: Option<i64>) -> DResult<Option<u32>> {
    match memory {
        None => Ok(None),
        Some(m) if (1..=1024).contains(&m) => Ok(Some(m as u32 * 1024)),
        Some(m) => Err(DaytonaError::bad_request(format!(
            "memory {m} GiB must be positive"
        ))),
    }
}

/// Refuses a `disk` (GiB) larger than template `name`'s disk: Platinum does not resize disks.
pub(crate) fn check_disk(ctx: &Ctx, name: &str, disk: Option<i64>) -> DResult<()> {
    let Some(disk) = disk else { return Ok(()) };
    let have = ctx
        .engine
        .templates()
        .into_iter()
        .find(|t| t.name == name)
        .map_or(0, |t| ceil_div(t.disk_mib, 1024));
    if disk < 1 || disk as u64 > have {
        return Err(DaytonaError::bad_request(format!(
            "disk {disk} GiB: sandboxes of template {name:?} have a {have} GiB disk, which Platinum cannot resize"
        )));
    }
    Ok(())
}

/// A create translated: the engine's request, and the Dockerfile of an image that must be
/// built first (its template then goes into the request).
struct Prepared {
    create: CreateSandbox,
    image: Option<String>,
}

/// Daytona's `networkAllowList` (comma-separated IPv4 CIDRs) and `domainAllowList`
/// (comma-separated domain names, `*.` wildcards): only those are reachable (`None` when
/// neither list is given). The engine checks every entry.
fn allow_list_policy(network: Option<&str>, domain: Option<&str>) -> Option<EgressPolicy> {
    let lists: Vec<&str> = [network, domain].into_iter().flatten().collect();
    (!lists.is_empty()).then(|| EgressPolicy {
        default: EgressDefault::Deny,
        allow: lists
            .iter()
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect(),
        deny: Vec::new(),
        header_rules: Vec::new(),
    })
}

/// Translates a create request into the engine's.
fn create_request(ctx: &Ctx, req: CreateRequest) -> DResult<Prepared> {
    let refuse = |what: &str| {
        Err(DaytonaError::bad_request(format!(
            "{what} is not supported by Platinum"
        )))
    };
    if req.gpu.is_some_and(|g| g > 0) {
        return refuse("gpu");
    }
    let mounts = volumes::mounts(req.volumes.as_deref().unwrap_or_default())?;
    let secrets = super::secrets::grants(req.secrets.as_deref().unwrap_or_default())?;
    let egress = allow_list_policy(
        req.network_allow_list.as_deref(),
        req.domain_allow_list.as_deref(),
    );
    if req.auto_pause_interval.is_some_and(|m| m != 0) {
        return refuse("autoPauseInterval (use autoStopInterval)");
    }
    if let Some(user) = &req.user
        && user != SANDBOX_USER
        && user != "daytona"
    {
        return Err(DaytonaError::bad_request(format!(
            "user {user:?}: Platinum sandboxes run commands as {SANDBOX_USER:?} (with passwordless sudo)"
        )));
    }
    let templates: Vec<String> = ctx.engine.templates().into_iter().map(|t| t.name).collect();
    let mut restore = None;
    let mut image = None;
    let template = match (&req.snapshot, req.build_info) {
        (Some(_), Some(_)) => {
            return Err(DaytonaError::bad_request(
                "give either a snapshot or an image (buildInfo), not both",
            ));
        }
        // A Daytona snapshot is a template (by its name or the Daytona name it was built
        // under); a name that is none is a Platinum snapshot taken of a sandbox
        // (`sandbox.create_snapshot`), restored with its memory and disk. Its vCPUs and memory
        // are the snapshot's: `cpu`/`memory`, when given, must equal them.
        (Some(snapshot), None) => match builds::resolve_template(ctx, snapshot) {
            Some(t) if templates.contains(&t) => Some(t),
            Some(t) => {
                return Err(DaytonaError::bad_request(format!(
                    "snapshot {snapshot} is not active: its template {t:?} is being built, \
                     failed to build or was deleted (GET /snapshots/{t} tells which)"
                )));
            }
            None => {
                restore = Some(snapshot.clone());
                None
            }
        },
        // An image is a template when it is a bare FROM of one; else it is built below.
        (None, Some(build)) => {
            let dockerfile = builds::check_build_info(&build)?;
            let existing = images::existing_template(ctx, dockerfile);
            if existing.is_none() {
                image = Some(dockerfile.to_string());
            }
            existing
        }
        (None, None) => None,
    };
    let vcpus = vcpus_of(req.cpu)?;
    let memory_mib = memory_mib_of(req.memory)?;
    let disk_template = template
        .clone()
        .unwrap_or_else(|| ctx.engine.config().default_template.clone());
    check_disk(ctx, &disk_template, req.disk)?;
    let mut labels = req.labels.unwrap_or_default();
    labels
        .entry(LANGUAGE_LABEL.to_string())
        .or_insert_with(|| "python".into());
    let mut attributes = BTreeMap::new();
    if req.public == Some(true) {
        attributes.insert(ATTR_PUBLIC.into(), "true".into());
    }
    let lifecycle = LifecycleRules {
        stop_after_idle_secs: stop_rule(req.auto_stop_interval.unwrap_or(DEFAULT_AUTO_STOP_MIN))?,
        archive_after_stopped_secs: archive_rule(
            req.auto_archive_interval
                .unwrap_or(DEFAULT_AUTO_ARCHIVE_MIN),
        )?,
        delete_after_stopped_secs: delete_rule(req.auto_delete_interval.unwrap_or(-1)),
    };
    let timeout_secs = match req.ttl_minutes {
        Some(m) if m > 0 => m.min(MAX_INTERVAL_MIN) as u64 * 60,
        _ => 0,
    };
    let create = CreateSandbox {
        template,
        vcpus,
        memory_mib,
        env: req.env.unwrap_or_default(),
        metadata: labels,
        attributes,
        timeout_secs: Some(timeout_secs),
        on_timeout: Some(TimeoutAction::Kill),
        name: req.name,
        lifecycle,
        internet: req
            .network_block_all
            .and_then(|block| block.then_some(false)),
        snapshot: restore,
        lifecycle_type: None,
        auto_resume: false,
        boot: BootMode::Auto,
        volumes: mounts,
        backup: None,
        egress,
        secrets,
    };
    Ok(Prepared { create, image })
}

/// `POST /sandbox`: boots the sandbox and answers 200 with state `started`. An image that must
/// be built is built first, within the request ([`super::images`]).
pub async fn create(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DJson(req): DJson<CreateRequest>,
) -> DResult<Json<SandboxDto>> {
    let Prepared { mut create, image } = create_request(&ctx, req)?;
    if let Some(dockerfile) = image {
        let template =
            images::build_image(&ctx, &dockerfile, create.vcpus, create.memory_mib).await?;
        create.template = Some(template);
        // Sized as asked, else as any create: not as whoever built the image first asked.
        let cfg = ctx.engine.config();
        create.vcpus.get_or_insert(cfg.default_vcpus);
        create.memory_mib.get_or_insert(cfg.default_memory_mib);
    }
    let s = ctx.engine.create_sandbox(create).await?;
    tracing::info!(sandbox = %s.id, name = ?s.name, template = %s.template, "daytona sandbox created");
    with_volumes(&ctx, dto(&ctx, &base, &s)).await
}

/// A sandbox's DTO with the volumes attached to it.
async fn with_volumes(ctx: &Ctx, mut d: SandboxDto) -> DResult<Json<SandboxDto>> {
    d.volumes = volumes::attached(ctx, &d.id).await?;
    Ok(Json(d))
}

/// `GET /sandbox/{idOrName}`.
pub async fn get(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<SandboxDto>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    with_volumes(&ctx, dto(&ctx, &base, &s)).await
}

/// Body of `PUT /sandbox/{idOrName}/secrets` (`UpdateSandboxSecrets`).
#[derive(Debug, Deserialize)]
pub struct UpdateSecretsRequest {
    secrets: Vec<Value>,
}

/// `PUT /sandbox/{idOrName}/secrets`: the secrets the sandbox holds, replaced
/// (`[{ENV: secretName}]`; empty detaches all).
pub async fn update_secrets(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
    DJson(req): DJson<UpdateSecretsRequest>,
) -> DResult<Json<SandboxDto>> {
    let found = ctx.engine.find_sandbox(&id).await?;
    let grants = super::secrets::grants(&req.secrets)?;
    let s = ctx.engine.set_sandbox_secrets(&found.id, grants).await?;
    with_volumes(&ctx, dto(&ctx, &base, &s)).await
}

/// Query of `GET /sandbox` (repeated keys allowed).
#[derive(Debug, Default)]
struct ListParams {
    cursor: Option<String>,
    limit: u32,
    id: Option<String>,
    name: Option<String>,
    labels: Vec<(String, String)>,
    states: Vec<SandboxState>,
    snapshots: Vec<String>,
    min_cpu: Option<u32>,
    max_cpu: Option<u32>,
    min_memory: Option<u64>,
    max_memory: Option<u64>,
}

fn parse_list(query: Option<&str>) -> DResult<ListParams> {
    let mut p = ListParams {
        limit: 100,
        ..Default::default()
    };
    let num = |k: &str, v: &str| {
        v.parse::<u64>()
            .map_err(|_| DaytonaError::bad_request(format!("{k} must be a non-negative integer")))
    };
    for (k, v) in form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let v = v.into_owned();
        match k.as_ref() {
            "cursor" if !v.is_empty() => p.cursor = Some(v),
            "limit" => p.limit = num("limit", &v)?.clamp(1, 200) as u32,
            "id" if !v.is_empty() => p.id = Some(v),
            "name" if !v.is_empty() => p.name = Some(v),
            "labels" if !v.is_empty() => {
                let map: BTreeMap<String, String> = serde_json::from_str(&v).map_err(|_| {
                    DaytonaError::bad_request("labels must be a JSON object of strings")
                })?;
                p.labels.extend(map);
            }
            "states" | "states[]" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    match parse_state(s) {
                        Some(st) => p.states.push(st),
                        None => {
                            return Err(DaytonaError::bad_request(format!("unknown state {s:?}")));
                        }
                    }
                }
            }
            "snapshots" | "snapshots[]" => p.snapshots.extend(v.split(',').map(str::to_owned)),
            "minCpu" => p.min_cpu = Some(num(&k, &v)? as u32),
            "maxCpu" => p.max_cpu = Some(num(&k, &v)? as u32),
            "minMemoryGiB" => p.min_memory = Some(num(&k, &v)?),
            "maxMemoryGiB" => p.max_memory = Some(num(&k, &v)?),
            // Sorting, regions, classes and time filters have one answer on a single host.
            _ => {}
        }
    }
    p.states.dedup();
    Ok(p)
}

/// `GET /sandbox`: cursor-paged, newest first, filtered by labels, states, name and id
/// prefixes, snapshots, cpu and memory.
pub async fn list(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    RawQuery(query): RawQuery,
) -> DResult<Json<Value>> {
    let p = parse_list(query.as_deref())?;
    let id_prefix = p.id.as_ref().map(|i| i.to_ascii_lowercase());
    let mut states = p.states.clone();
    states.retain(|s| *s != SandboxState::Deleted);
    if !p.states.is_empty() && states.is_empty() {
        // Only destroyed ones were asked for: they are gone.
        return Ok(Json(serde_json::json!({ "items": [], "nextCursor": null })));
    }
    let page = ctx
        .engine
        .list_sandboxes(ListQuery {
            states,
            metadata: p.labels.clone(),
            name_prefix: p.name.clone(),
            limit: p.limit,
            cursor: p.cursor.clone(),
        })
        .await?;
    let items: Vec<SandboxDto> = page
        .items
        .iter()
        .filter(|s| {
            id_prefix
                .as_ref()
                .is_none_or(|i| s.id.starts_with(i.as_str()))
        })
        .filter(|s| p.snapshots.is_empty() || p.snapshots.contains(&s.template))
        .filter(|s| {
            p.min_cpu.is_none_or(|c| s.vcpus >= c) && p.max_cpu.is_none_or(|c| s.vcpus <= c)
        })
        .map(|s| dto(&ctx, &base, s))
        .filter(|d| {
            p.min_memory.is_none_or(|m| d.memory >= m) && p.max_memory.is_none_or(|m| d.memory <= m)
        })
        .collect();
    Ok(Json(
        serde_json::json!({ "items": items, "nextCursor": page.next_cursor }),
    ))
}

/// `DELETE /sandbox/{idOrName}`: 200 with the sandbox in state `destroyed`.
pub async fn delete(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<SandboxDto>> {
    let mut s = ctx.engine.find_sandbox(&id).await?;
    ctx.engine.kill_sandbox(&s.id).await?;
    ctx.ptys.forget(&s.id);
    tracing::info!(sandbox = %s.id, "daytona sandbox deleted");
    s.state = SandboxState::Deleted;
    s.runtime = None;
    Ok(Json(dto(&ctx, &base, &s)))
}

/// Finds sandbox `id` and moves it on with `op`, unless it already is in one of the `settled`
/// states; answers the sandbox as it ends up.
async fn transition(
    ctx: &Ctx,
    base: &BaseUrl,
    id: &str,
    settled: &[SandboxState],
    op: impl AsyncFnOnce(&Engine, &str) -> platinum_engine::Result<Sandbox>,
) -> DResult<Json<SandboxDto>> {
    let s = ctx.engine.find_sandbox(id).await?;
    let s = if settled.contains(&s.state) {
        s
    } else {
        op(&ctx.engine, &s.id).await?
    };
    Ok(Json(dto(ctx, base, &s)))
}

/// `POST /sandbox/{idOrName}/start`: boots a stopped, archived or failed sandbox (resumes a
/// paused one, in memory or on disk); a started one is returned as it is.
pub async fn start(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<SandboxDto>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    let s = match s.state {
        SandboxState::Running => s,
        SandboxState::Paused => ctx.engine.resume_sandbox(&s.id).await?,
        _ => ctx.engine.start_sandbox(&s.id).await?,
    };
    Ok(Json(dto(&ctx, &base, &s)))
}

/// `POST /sandbox/{idOrName}/stop`: shuts the VM down, disk kept; a stopped one is returned as
/// it is.
pub async fn stop(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<SandboxDto>> {
    let settled = [SandboxState::Stopped, SandboxState::Archived];
    transition(&ctx, &base, &id, &settled, Engine::stop_sandbox).await
}

/// `POST /sandbox/{idOrName}/archive` (stopped sandboxes only).
pub async fn archive(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<SandboxDto>> {
    let settled = [SandboxState::Archived];
    transition(&ctx, &base, &id, &settled, Engine::archive_sandbox).await
}

/// `POST /sandbox/{idOrName}/recover`: boots a sandbox in `error` again from its disk.
pub async fn recover(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<SandboxDto>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    if s.state != SandboxState::Error {
        return Err(DaytonaError::bad_request(format!(
            "sandbox {} is {}, only sandboxes in error can be recovered",
            s.id,
            state_name(s.state)
        )));
    }
    let s = ctx.engine.start_sandbox(&s.id).await?;
    Ok(Json(dto(&ctx, &base, &s)))
}

/// `POST /sandbox/{idOrName}/pause`: pauses the sandbox to disk with its memory (the VM exits
/// and frees its RAM; reported as `stopped`); `start` brings it back where it was.
pub async fn pause(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<SandboxDto>> {
    let settled = [SandboxState::Suspended];
    let to_disk = async |engine: &Engine, id: &str| engine.suspend_sandbox(id, true).await;
    transition(&ctx, &base, &id, &settled, to_disk).await
}

/// Body of `PUT /sandbox/{idOrName}/labels`.
#[derive(Debug, Deserialize)]
pub struct LabelsRequest {
    labels: BTreeMap<String, String>,
}

/// `PUT /sandbox/{idOrName}/labels`: replaces all labels; answers `{"labels"}`.
pub async fn set_labels(
    State(ctx): State<Ctx>,
    DPath(id): DPath<String>,
    DJson(req): DJson<LabelsRequest>,
) -> DResult<Json<Value>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    let s = ctx.engine.set_metadata(&s.id, req.labels).await?;
    Ok(Json(serde_json::json!({ "labels": labels_of(&s) })))
}

async fn change_rules(
    ctx: &Ctx,
    base: &BaseUrl,
    id: &str,
    change: impl FnOnce(&mut LifecycleRules),
) -> DResult<Json<SandboxDto>> {
    let s = ctx.engine.find_sandbox(id).await?;
    let mut rules = s.lifecycle;
    change(&mut rules);
    let s = ctx.engine.set_lifecycle_rules(&s.id, rules).await?;
    Ok(Json(dto(ctx, base, &s)))
}

/// `POST /sandbox/{idOrName}/autostop/{minutes}` (0 = never).
pub async fn set_autostop(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, minutes)): DPath<(String, i64)>,
) -> DResult<Json<SandboxDto>> {
    let rule = stop_rule(minutes)?;
    change_rules(&ctx, &base, &id, |r| r.stop_after_idle_secs = rule).await
}

/// `POST /sandbox/{idOrName}/autoarchive/{minutes}` (0 = the maximum, 30 days).
pub async fn set_autoarchive(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, minutes)): DPath<(String, i64)>,
) -> DResult<Json<SandboxDto>> {
    let rule = archive_rule(minutes)?;
    change_rules(&ctx, &base, &id, |r| r.archive_after_stopped_secs = rule).await
}

/// `POST /sandbox/{idOrName}/autodelete/{minutes}` (negative = never, 0 = once stopped).
pub async fn set_autodelete(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, minutes)): DPath<(String, i64)>,
) -> DResult<Json<SandboxDto>> {
    let rule = delete_rule(minutes);
    change_rules(&ctx, &base, &id, |r| r.delete_after_stopped_secs = rule).await
}

/// `POST /sandbox/{idOrName}/autopause/{minutes}`: only 0 (off); Platinum stops idle sandboxes
/// instead (`autostop`).
pub async fn set_autopause(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, minutes)): DPath<(String, i64)>,
) -> DResult<Json<SandboxDto>> {
    if minutes != 0 {
        return Err(DaytonaError::bad_request(
            "autoPauseInterval is not supported by Platinum; use autoStopInterval",
        ));
    }
    let s = ctx.engine.find_sandbox(&id).await?;
    Ok(Json(dto(&ctx, &base, &s)))
}

/// `POST /sandbox/{idOrName}/ttl/{minutes}`: deleted that many minutes from now (0 = never).
pub async fn set_ttl(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, minutes)): DPath<(String, i64)>,
) -> DResult<Json<SandboxDto>> {
    if minutes < 0 {
        return Err(DaytonaError::bad_request(
            "ttl must be 0 (none) or positive minutes",
        ));
    }
    let s = ctx.engine.find_sandbox(&id).await?;
    let s = ctx
        .engine
        .set_timeout(&s.id, minutes.min(MAX_INTERVAL_MIN) as u64 * 60)
        .await?;
    Ok(Json(dto(&ctx, &base, &s)))
}

/// Sets whether sandbox `id`'s previews need a token; answers the sandbox.
pub(crate) async fn set_public_flag(ctx: &Ctx, id: &str, public: bool) -> DResult<Sandbox> {
    Ok(ctx
        .engine
        .update_attributes(id, |a| {
            if public {
                a.insert(ATTR_PUBLIC.into(), "true".into());
            } else {
                a.remove(ATTR_PUBLIC);
            }
        })
        .await?)
}

/// `POST /sandbox/{idOrName}/public/{true|false}`: whether preview links need a token.
pub async fn set_public(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath((id, public)): DPath<(String, bool)>,
) -> DResult<Json<SandboxDto>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    let s = set_public_flag(&ctx, &s.id, public).await?;
    Ok(Json(dto(&ctx, &base, &s)))
}

/// `POST /sandbox/{id}/last-activity`: 201, no body.
pub async fn last_activity(
    State(ctx): State<Ctx>,
    DPath(id): DPath<String>,
) -> DResult<StatusCode> {
    let s = ctx.engine.find_sandbox(&id).await?;
    ctx.engine.record_activity(&s.id).await?;
    Ok(StatusCode::CREATED)
}

/// `GET /sandbox/{id}/toolbox-proxy-url`.
pub async fn toolbox_proxy_url(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
) -> DResult<Json<Value>> {
    ctx.engine.find_sandbox(&id).await?;
    Ok(Json(serde_json::json!({ "url": toolbox_url(&base.0) })))
}

/// `GET /sandbox/{id}/signing-key`: the key the SDK signs file URLs with (a JSON string).
pub async fn signing_key(
    State(ctx): State<Ctx>,
    DPath(id): DPath<String>,
) -> DResult<Json<String>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    Ok(Json(ctx.tokens.signing_key(&s.id, signing_generation(&s))))
}

/// `POST /sandbox/{id}/signing-key/rotate`: a new key; URLs signed with the old one stop working.
pub async fn rotate_signing_key(
    State(ctx): State<Ctx>,
    DPath(id): DPath<String>,
) -> DResult<Json<String>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    // Read and bump under the sandbox lock: two rotations, or a rotation and a labels update,
    // never roll the generation back (which would make revoked URLs valid again).
    let s = ctx
        .engine
        .update_attributes(&s.id, |a| {
            let next = a
                .get(ATTR_SIGNING_GEN)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
                + 1;
            a.insert(ATTR_SIGNING_GEN.into(), next.to_string());
        })
        .await?;
    Ok(Json(ctx.tokens.signing_key(&s.id, signing_generation(&s))))
}

/// Body of `POST /sandbox/{idOrName}/network-settings`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkSettings {
    network_block_all: Option<bool>,
    network_allow_list: Option<String>,
    domain_allow_list: Option<String>,
}

/// `POST /sandbox/{idOrName}/network-settings` (the SDK's `update_network_settings`): the
/// sandbox's egress policy replaced, from its next connection on. Allow lists (CIDRs and
/// domains) deny everything else; `networkBlockAll: true` denies everything; `false` alone opens
/// everything again (clearing an allow list).
pub async fn update_network_settings(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
    DJson(body): DJson<NetworkSettings>,
) -> DResult<Json<SandboxDto>> {
    let s = ctx.engine.find_sandbox(&id).await?;
    let allowed = allow_list_policy(
        body.network_allow_list.as_deref(),
        body.domain_allow_list.as_deref(),
    );
    let block_all = body.network_block_all == Some(true);
    let policy = match (block_all, allowed) {
        (true, Some(_)) => {
            return Err(DaytonaError::bad_request(
                "networkBlockAll cannot be combined with an allow list",
            ));
        }
        (true, None) => EgressPolicy {
            default: EgressDefault::Deny,
            ..EgressPolicy::default()
        },
        (false, Some(allowed)) => allowed,
        (false, None) if body.network_block_all.is_some() => EgressPolicy::default(),
        (false, None) => {
            return Err(DaytonaError::bad_request(
                "give networkBlockAll, networkAllowList or domainAllowList",
            ));
        }
    };
    // Header rules (set through the native API) are kept: Daytona has no word for them.
    ctx.engine.set_egress_destinations(&s.id, policy).await?;
    let mut d = dto(&ctx, &base, &ctx.engine.get_sandbox(&s.id).await?);
    d.network_block_all |= block_all;
    with_volumes(&ctx, d).await
}

/// Daytona sandbox operations Platinum does not offer: a clear 501.
pub async fn unsupported(req: axum::extract::Request) -> DaytonaError {
    let what = req
        .uri()
        .path()
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    DaytonaError::unsupported(format!(
        "{what} is not supported by Platinum (resize, backups and SSH access are Daytona \
         features Platinum does not have)"
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_network_allow_list_denies_everything_else() {
        use super::{EgressDefault, allow_list_policy};
        let p = allow_list_policy(Some(" 203.0.113.0/24, 198.51.100.7/32,,"), None).unwrap();
        assert_eq!(p.default, EgressDefault::Deny);
        assert_eq!(p.allow, ["203.0.113.0/24", "198.51.100.7/32"]);
        assert!(p.deny.is_empty());
        // An empty list: nothing but the host's DNS.
        assert!(allow_list_policy(Some(""), None).unwrap().allow.is_empty());
        assert!(allow_list_policy(None, None).is_none());
        let both = allow_list_policy(
            Some("203.0.113.0/24"),
            Some("api.example.com, *.example.org"),
        )
        .unwrap();
        assert_eq!(
            both.allow,
            ["203.0.113.0/24", "api.example.com", "*.example.org"]
        );
    }

    use super::*;

    #[test]
    fn intervals_follow_daytona_semantics() {
        assert_eq!(stop_rule(0).unwrap(), None);
        assert_eq!(stop_rule(1).unwrap(), Some(60));
        assert!(stop_rule(-1).is_err());
        assert_eq!(archive_rule(0).unwrap(), Some(43_200 * 60));
        assert_eq!(archive_rule(999_999).unwrap(), Some(43_200 * 60));
        assert_eq!(archive_rule(60).unwrap(), Some(3600));
        assert_eq!(delete_rule(-1), None);
        assert_eq!(delete_rule(0), Some(0));
        assert_eq!(delete_rule(5), Some(300));
    }

    #[test]
    fn list_queries_parse_repeated_states_and_json_labels() {
        let p = parse_list(Some(
            "states=started&states=stopped&labels=%7B%22env%22%3A%22dev%22%7D&limit=5&cursor=abc",
        ))
        .unwrap();
        assert_eq!(p.states, [SandboxState::Running, SandboxState::Stopped]);
        assert_eq!(p.labels, [("env".to_string(), "dev".to_string())]);
        assert_eq!((p.limit, p.cursor.as_deref()), (5, Some("abc")));
        assert!(parse_list(Some("states=bogus")).is_err());
        assert!(parse_list(Some("labels=notjson")).is_err());
        assert_eq!(parse_list(None).unwrap().limit, 100);
    }

    #[test]
    fn create_bodies_carry_volume_mounts() {
        // The Python SDK's body for `volumes=[VolumeMount(volume_id="data", mount_path="/data")]`.
        let req: CreateRequest = serde_json::from_value(serde_json::json!({
            "env": {}, "labels": {}, "target": "local",
            "volumes": [{"volumeId": "data", "mountPath": "/data"}],
        }))
        .unwrap();
        let mounts = volumes::mounts(req.volumes.as_deref().unwrap_or_default()).unwrap();
        assert_eq!(
            mounts,
            [platinum_engine::model::VolumeMount {
                volume: "data".into(),
                path: "/data".into(),
                readonly: false,
            }]
        );
        // What the SDK always sends without volumes.
        let req: CreateRequest =
            serde_json::from_value(serde_json::json!({ "volumes": [] })).unwrap();
        assert!(volumes::mounts(&req.volumes.unwrap()).unwrap().is_empty());
        // A mount without a path is a malformed body.
        assert!(
            serde_json::from_value::<CreateRequest>(serde_json::json!({
                "volumes": [{"volumeId": "data"}]
            }))
            .is_err()
        );
    }

    #[test]
    fn every_state_has_a_daytona_name_that_parses_back() {
        use SandboxState::*;
        for s in [
            Creating, Starting, Running, Paused, Stopping, Stopped, Archived, Error, Deleted,
        ] {
            assert_eq!(parse_state(state_name(s)), Some(s));
        }
    }
}
