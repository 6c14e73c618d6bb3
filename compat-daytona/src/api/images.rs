//! Sandboxes from images: `daytona.create(CreateSandboxFromImageParams(image=...))`, which
//! sends `POST /sandbox` with `buildInfo.dockerfileContent`.
//!
//! - An image that is a bare `FROM` of what a template already is (`debian:12`, `python:3.11`
//!   and the other bases the engine maps to a built-in template, `platinum/<template>`, a
//!   template's name) starts from that template: nothing is built.
//! - Any other image (a registry's, pulled by the host, or a Dockerfile with steps) is built by
//!   the engine into a template named after its Dockerfile
//!   (`img-<hash>`, [`super::builds::image_template_name`]), once: a later create with the same
//!   image finds the template and starts at once. Concurrent creates of one image wait for the
//!   same build.
//! - The create waits for the build within the request (up to 31 minutes; the engine stops a
//!   build at 30). A client that goes away cancels nothing: the build goes on and its template
//!   serves the next create. A failed build answers 400 with the failure (step, exit code, last
//!   output lines).
//! - So creates from images answer once the sandbox runs, in state `started`, never
//!   `pending_build`: the SDKs skip their pending-build polling, and `on_snapshot_create_logs`
//!   is not called. The build's log is still there: `GET /sandbox/{id}/build-logs-url` and
//!   `/snapshots/{img-...}/build-logs-url` point at it.
//! - Local files (`add_local_file`, `add_local_dir`) would be uploaded to S3 object storage
//!   first (`GET /object-storage/push-access`); Platinum has none, so that call and any create
//!   with `contextHashes` are refused, saying so.

use platinum_engine::builds::base::{Base, resolve_base};
use platinum_engine::builds::model::{BuildStatus, TemplateBuildRequest};
use std::time::Duration;

use super::builds;
use crate::Ctx;
use crate::error::{DResult, DaytonaError};

/// Longest a create waits for its image's build (the engine stops builds at 30 minutes).
const IMAGE_BUILD_WAIT: Duration = Duration::from_secs(31 * 60);

/// The image a Dockerfile names when `FROM` is all it says.
fn bare_from(dockerfile: &str) -> Option<&str> {
    let mut instructions = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let from = instructions.next()?;
    if instructions.next().is_some() || from.len() <= 5 || !from[..5].eq_ignore_ascii_case("FROM ")
    {
        return None;
    }
    from[5..].split_whitespace().find(|t| !t.starts_with("--"))
}

/// The template an image already is, when it is a bare `FROM` of one (see the module docs).
pub fn existing_template(ctx: &Ctx, dockerfile: &str) -> Option<String> {
    let image = bare_from(dockerfile)?;
    let summaries = ctx.engine.list_templates();
    let is_template = |t: &str| summaries.iter().any(|s| s.name == t);
    if let Some(t) = image.strip_prefix("platinum/").filter(|t| is_template(t)) {
        return Some(t.to_string());
    }
    if is_template(image) {
        return Some(image.to_string());
    }
    let builtin: Vec<String> = summaries
        .into_iter()
        .filter(|s| s.builtin)
        .map(|s| s.name)
        .collect();
    match resolve_base(image, &builtin) {
        Ok(Base::Builtin(r)) => Some(r.template),
        Ok(Base::Registry(_)) | Err(_) => None,
    }
}

/// Whether template `name` exists.
fn template_exists(ctx: &Ctx, name: &str) -> bool {
    ctx.engine.templates().iter().any(|t| t.name == name)
}

/// The build of `template` this front end started, when it still runs.
async fn running_build(ctx: &Ctx, template: &str) -> Option<String> {
    let tracked = ctx.builds.get(template)?;
    let build = ctx.engine.template_build(&tracked.build_id).await.ok()?;
    (build.status == BuildStatus::Building).then_some(tracked.build_id)
}

/// The template of the image `dockerfile`: built now (or waited for, when a build of it runs),
/// or as built before. The builder VM gets `vcpus` and `memory_mib` when given.
pub async fn build_image(
    ctx: &Ctx,
    dockerfile: &str,
    vcpus: Option<u32>,
    memory_mib: Option<u32>,
) -> DResult<String> {
    let name = builds::image_template_name(dockerfile);
    let build_id = {
        let _starting = ctx.builds.starting().await;
        if template_exists(ctx, &name) {
            tracing::info!(template = %name, "daytona image built before; no build");
            return Ok(name);
        }
        match running_build(ctx, &name).await {
            Some(id) => id,
            None => {
                let build = ctx
                    .engine
                    .build_template(TemplateBuildRequest {
                        name: name.clone(),
                        dockerfile: Some(dockerfile.to_string()),
                        vcpus,
                        memory_mib,
                        ..Default::default()
                    })
                    .await?;
                ctx.builds.record(&name, &build.id, &name);
                tracing::info!(template = %name, build = %build.id, "daytona image build started");
                build.id
            }
        }
    };
    let build = builds::wait_build(ctx, &build_id, IMAGE_BUILD_WAIT).await?;
    match build.status {
        BuildStatus::Error => Err(builds::build_failed(&build)),
        _ if template_exists(ctx, &name) => Ok(name),
        _ => Err(DaytonaError::from(platinum_engine::Error::Conflict(
            format!("the image's template {name} was deleted as its build ended; create again"),
        ))),
    }
}

/// `GET /object-storage/push-access`: Platinum has no object storage for local files (400, as
/// the create that would follow would be).
pub async fn push_access() -> DaytonaError {
    DaytonaError::bad_request(builds::LOCAL_FILES_UNSUPPORTED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_froms_are_recognised() {
        for (dockerfile, image) in [
            ("FROM debian:12\n", Some("debian:12")),
            ("# base\n\nfrom python:3.11 AS app\n", Some("python:3.11")),
            ("FROM --platform=linux/amd64 node:20", Some("node:20")),
            ("FROM debian:12\nRUN echo hi\n", None),
            ("RUN echo hi\n", None),
            ("", None),
            ("FROM", None),
        ] {
            assert_eq!(bare_from(dockerfile), image, "{dockerfile:?}");
        }
    }
}
