//! Snapshots Platinum builds: Daytona names to template names, the builds this front end
//! started, and what state a build shows as.
//!
//! - Names ([`template_name`]): a Daytona snapshot name is free-form (`Team/py:3.12`); a
//!   Platinum template name is `[a-z0-9][a-z0-9._-]*`, at most 63 characters. The map is
//!   deterministic (lower case, every other character `-`, leading punctuation dropped; longer
//!   names cut and suffixed with a hash of the whole), so a snapshot is found by its Daytona name
//!   after a restart too. Two names that map to one template collide: the second create is
//!   refused. The Daytona name itself is kept in memory ([`Builds`]) and shown while the server
//!   runs; after a restart a snapshot shows its template name. Images in a sandbox create are
//!   templates named after their Dockerfile ([`image_template_name`]).
//! - [`Builds`]: the last build this front end started per template (bounded, in memory), so a
//!   snapshot whose build is running or failed (and so is no template) is found by its name.
//! - States ([`snapshot_state`]): building while a build runs, active once the template exists,
//!   `build_failed` when the build failed and left no template.

use platinum_engine::builds::model::{BuildFailure, BuildStatus, TemplateBuild};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use crate::Ctx;
use crate::error::{DResult, DaytonaError};

/// Longest template name the engine accepts.
const MAX_TEMPLATE_NAME: usize = 63;
/// Hex digits of the hash in shortened names and image templates.
const HASH_HEX: usize = 16;
/// Builds remembered; the oldest is forgotten past this.
const MAX_TRACKED: usize = 1024;
/// Lines of a failed step's output quoted in `errorReason`.
const REASON_LINES: usize = 5;
/// How long one wait on a build's log lasts before looking at the build again.
const WAIT_SLICE: Duration = Duration::from_secs(10);

/// Why a build with local files cannot run here (shared by `POST /snapshots`, image creates and
/// `GET /object-storage/push-access`).
pub const LOCAL_FILES_UNSUPPORTED: &str = "local files in images (add_local_file, add_local_dir) \
     need object storage to upload them to, which Platinum does not offer yet; copy files into \
     the sandbox after it starts (sandbox.fs.upload_file), or fetch them in a run_commands step";

/// The template a Daytona snapshot name maps to (see the module docs); 400 for a name with
/// nothing usable in it.
pub fn template_name(snapshot: &str) -> DResult<String> {
    let mapped: String = snapshot
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '.' | '_' | '-') => c,
            _ => '-',
        })
        .collect();
    let mapped = mapped.trim_start_matches(['.', '_', '-']);
    if !mapped.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err(DaytonaError::bad_request(format!(
            "snapshot name {snapshot:?} needs at least one letter or digit"
        )));
    }
    if mapped.len() <= MAX_TEMPLATE_NAME {
        return Ok(mapped.to_string());
    }
    let head = &mapped[..MAX_TEMPLATE_NAME - HASH_HEX - 1];
    Ok(format!("{head}-{}", short_hash(snapshot)))
}

/// The template an image (its Dockerfile) is built as: `img-` and a hash of the Dockerfile, so
/// the same image is built once and reused.
pub fn image_template_name(dockerfile: &str) -> String {
    format!("img-{}", short_hash(dockerfile))
}

fn short_hash(text: &str) -> String {
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    digest[..HASH_HEX].to_string()
}

/// `buildInfo` of a sandbox or snapshot create.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildInfo {
    /// The Dockerfile the SDK generated.
    #[serde(default)]
    pub dockerfile_content: Option<String>,
    /// Hashes of local build context (needs an object store Platinum does not have).
    #[serde(default)]
    pub context_hashes: Option<Vec<String>>,
}

/// Refuses build info Platinum cannot build: local files (context hashes), or no Dockerfile.
pub fn check_build_info(build: &BuildInfo) -> DResult<&str> {
    if build.context_hashes.as_ref().is_some_and(|h| !h.is_empty()) {
        return Err(DaytonaError::bad_request(LOCAL_FILES_UNSUPPORTED));
    }
    match build.dockerfile_content.as_deref() {
        Some(text) if !text.trim().is_empty() => Ok(text),
        _ => Err(DaytonaError::bad_request(
            "buildInfo.dockerfileContent must be a Dockerfile",
        )),
    }
}

/// Daytona's `SnapshotState`, as far as Platinum has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotState {
    /// A build of it runs.
    Building,
    /// Sandboxes can start from it.
    Active,
    /// Its build failed and left nothing to start from.
    BuildFailed,
}

impl SnapshotState {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            SnapshotState::Building => "building",
            SnapshotState::Active => "active",
            SnapshotState::BuildFailed => "build_failed",
        }
    }
}

/// What a template (`exists`: sandboxes can start from it) with its latest known build shows;
/// `None`: there is nothing to show (a build made it, and it was deleted since).
pub fn snapshot_state(exists: bool, build: Option<BuildStatus>) -> Option<SnapshotState> {
    match (exists, build) {
        (_, Some(BuildStatus::Building)) => Some(SnapshotState::Building),
        (true, _) => Some(SnapshotState::Active),
        (false, Some(BuildStatus::Error)) => Some(SnapshotState::BuildFailed),
        (false, Some(BuildStatus::Ready) | None) => None,
    }
}

/// `errorReason` of a failed build: what went wrong and the last lines its step wrote.
pub fn failure_reason(failure: &BuildFailure) -> String {
    let tail = &failure.last_output[failure.last_output.len().saturating_sub(REASON_LINES)..];
    if tail.is_empty() {
        failure.message.clone()
    } else {
        format!("{}; last output: {}", failure.message, tail.join(" | "))
    }
}

/// The error a create from an image answers when the image's build failed.
pub fn build_failed(build: &TemplateBuild) -> DaytonaError {
    let reason = build
        .failure
        .as_ref()
        .map_or_else(|| "no reason recorded".to_string(), failure_reason);
    DaytonaError::bad_request(format!(
        "building the image failed (build {}, template {}): {reason}",
        build.id, build.template
    ))
}

/// A build this front end started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The engine's build id.
    pub build_id: String,
    /// The Daytona name it was asked under.
    pub display: String,
}

/// The builds this front end started, by template name (bounded; see the module docs).
#[derive(Debug, Default)]
pub struct Builds {
    tracked: Mutex<TrackedMap>,
    /// Held while a create checks names and starts a build, so two creates never race.
    starting: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct TrackedMap {
    by_template: HashMap<String, Tracked>,
    /// Templates, oldest entry first.
    order: VecDeque<String>,
}

impl Builds {
    fn map(&self) -> std::sync::MutexGuard<'_, TrackedMap> {
        self.tracked.lock().expect("tracked builds")
    }

    /// Records that `build_id` builds `template` for the Daytona name `display`.
    pub fn record(&self, template: &str, build_id: &str, display: &str) {
        let mut m = self.map();
        m.order.retain(|t| t != template);
        m.order.push_back(template.to_string());
        m.by_template.insert(
            template.to_string(),
            Tracked {
                build_id: build_id.to_string(),
                display: display.to_string(),
            },
        );
        while m.order.len() > MAX_TRACKED {
            if let Some(old) = m.order.pop_front() {
                m.by_template.remove(&old);
            }
        }
    }

    /// The last build started for `template`.
    pub fn get(&self, template: &str) -> Option<Tracked> {
        self.map().by_template.get(template).cloned()
    }

    /// The template whose snapshot was asked for under the Daytona name `display`.
    pub fn template_of(&self, display: &str) -> Option<String> {
        self.map()
            .by_template
            .iter()
            .find(|(_, t)| t.display == display)
            .map(|(name, _)| name.clone())
    }

    /// Every template with a remembered build.
    pub fn templates(&self) -> Vec<String> {
        self.map().order.iter().cloned().collect()
    }

    /// Forgets `template`'s build (its snapshot was deleted).
    pub fn forget(&self, template: &str) {
        let mut m = self.map();
        m.by_template.remove(template);
        m.order.retain(|t| t != template);
    }

    /// Serialises name checks and build starts.
    pub async fn starting(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.starting.lock().await
    }
}

/// Whether `template` is a template, or has a remembered build.
fn is_known(ctx: &Ctx, template: &str) -> bool {
    ctx.builds.get(template).is_some() || ctx.engine.templates().iter().any(|i| i.name == template)
}

/// The template a snapshot name stands for exactly: a template (or a remembered build) of that
/// name, or the snapshot asked for under that Daytona name.
pub fn known_template(ctx: &Ctx, name: &str) -> Option<String> {
    if is_known(ctx, name) {
        return Some(name.to_string());
    }
    ctx.builds.template_of(name)
}

/// The template a snapshot name maps to ([`template_name`]), when there is one (a Daytona name
/// the server no longer remembers, after a restart).
pub fn mapped_template(ctx: &Ctx, name: &str) -> Option<String> {
    template_name(name).ok().filter(|t| is_known(ctx, t))
}

/// [`known_template`], else [`mapped_template`].
pub fn resolve_template(ctx: &Ctx, name: &str) -> Option<String> {
    known_template(ctx, name).or_else(|| mapped_template(ctx, name))
}

/// The build behind `template`: the last one this front end started, else the one that made
/// the custom template as it is.
pub async fn latest_build(ctx: &Ctx, template: &str) -> Option<TemplateBuild> {
    let id = match ctx.builds.get(template) {
        Some(t) => t.build_id,
        None => ctx.engine.custom_template(template).ok()?.build_id,
    };
    ctx.engine.template_build(&id).await.ok()
}

/// Waits until build `id` ends (at most `limit`); answers it as it ended.
pub async fn wait_build(ctx: &Ctx, id: &str, limit: Duration) -> DResult<TemplateBuild> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let build = ctx.engine.template_build(id).await?;
        if build.status != BuildStatus::Building {
            return Ok(build);
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            return Err(DaytonaError::new(
                axum::http::StatusCode::GATEWAY_TIMEOUT,
                "TIMEOUT",
                format!(
                    "the image is still being built (build {id}, template {}); it goes on, \
                     and a create with the same image once it is done starts at once",
                    build.template
                ),
            ));
        }
        ctx.engine
            .wait_template_build(id, build.log_lines as usize, left.min(WAIT_SLICE))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_names_map_to_template_names() {
        for (daytona, template) in [
            ("my-snap", "my-snap"),
            ("MySnap", "mysnap"),
            ("team/py:3.12", "team-py-3.12"),
            ("ubuntu-4vcpu-8ram-100gb", "ubuntu-4vcpu-8ram-100gb"),
            ("_x", "x"),
            ("héllo wörld", "h-llo-w-rld"),
            ("0x", "0x"),
        ] {
            assert_eq!(template_name(daytona).unwrap(), template, "{daytona}");
        }
        for bad in ["", "---", "::", "ü"] {
            assert!(template_name(bad).is_err(), "{bad:?}");
        }
        let long = "A".repeat(100);
        let mapped = template_name(&long).unwrap();
        assert_eq!(mapped.len(), MAX_TEMPLATE_NAME);
        assert!(mapped.starts_with("aaaa"), "{mapped}");
        assert_ne!(mapped, template_name(&"a".repeat(100)).unwrap());
        // Mapping a mapped name changes nothing, so ids (template names) resolve to themselves.
        for name in ["Team/Py:3.12", &long, "x"] {
            let once = template_name(name).unwrap();
            assert_eq!(template_name(&once).unwrap(), once);
        }
    }

    #[test]
    fn image_templates_are_named_by_their_dockerfile() {
        let a = image_template_name("FROM debian:12\nRUN echo a\n");
        assert!(a.starts_with("img-") && a.len() == 4 + HASH_HEX, "{a}");
        assert_eq!(a, image_template_name("FROM debian:12\nRUN echo a\n"));
        assert_ne!(a, image_template_name("FROM debian:12\nRUN echo b\n"));
        assert_eq!(template_name(&a).unwrap(), a);
    }

    #[test]
    fn build_states_map_to_snapshot_states() {
        use BuildStatus::*;
        use SnapshotState as S;
        assert_eq!(snapshot_state(false, Some(Building)), Some(S::Building));
        assert_eq!(snapshot_state(true, Some(Building)), Some(S::Building));
        assert_eq!(snapshot_state(true, Some(Ready)), Some(S::Active));
        assert_eq!(snapshot_state(true, None), Some(S::Active));
        // A rebuild that failed leaves the template as it was.
        assert_eq!(snapshot_state(true, Some(Error)), Some(S::Active));
        assert_eq!(snapshot_state(false, Some(Error)), Some(S::BuildFailed));
        assert_eq!(snapshot_state(false, Some(Ready)), None);
        assert_eq!(snapshot_state(false, None), None);
        assert_eq!(S::BuildFailed.name(), "build_failed");
    }

    #[test]
    fn failure_reasons_quote_the_last_lines() {
        let mut f = BuildFailure {
            message: "step 1 exited with code 3: exit 3".into(),
            step: Some(1),
            command: Some("exit 3".into()),
            exit_code: Some(3),
            last_output: Vec::new(),
        };
        assert_eq!(failure_reason(&f), "step 1 exited with code 3: exit 3");
        f.last_output = (1..=7).map(|i| format!("l{i}")).collect();
        assert_eq!(
            failure_reason(&f),
            "step 1 exited with code 3: exit 3; last output: l3 | l4 | l5 | l6 | l7"
        );
    }

    #[test]
    fn tracked_builds_are_bounded_and_found_by_name() {
        let b = Builds::default();
        b.record("team-py", "bld1", "Team/Py");
        assert_eq!(b.template_of("Team/Py").as_deref(), Some("team-py"));
        assert_eq!(b.get("team-py").unwrap().build_id, "bld1");
        b.record("team-py", "bld2", "Team/Py");
        assert_eq!(b.get("team-py").unwrap().build_id, "bld2");
        assert_eq!(b.templates(), ["team-py"]);
        for i in 0..MAX_TRACKED {
            b.record(&format!("t{i}"), "bld", "x");
        }
        assert!(b.get("team-py").is_none(), "the oldest is forgotten");
        assert_eq!(b.templates().len(), MAX_TRACKED);
        b.forget("t5");
        assert!(b.get("t5").is_none());
    }
}
