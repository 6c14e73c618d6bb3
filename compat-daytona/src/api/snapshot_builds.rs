//! `POST /snapshots`: `daytona.snapshot.create(CreateSnapshotParams(name, image=Image...))`.
//!
//! The SDK sends the `Image` as a Dockerfile (`buildInfo.dockerfileContent`); the engine builds
//! it into a template named after the snapshot ([`super::builds::template_name`]), with
//! `cpu` and `memory` (GiB) as the builder's and the template's sandboxes' size. The answer is
//! the snapshot in state `building`; the SDK then follows the build log
//! ([`super::build_logs`]) and polls `GET /snapshots/{id}` until it is `active` or
//! `build_failed` (with the failure as `errorReason`).
//!
//! Refused: a name that is a built-in template's, or maps to the template of another snapshot
//! (400); a name a snapshot has already (409); local files (`contextHashes`, 400: Platinum has
//! no object storage for them); `gpu`; a `disk` larger than the base's. A snapshot of a
//! registry image by name (`imageName`, no `buildInfo`) is a build of that image alone: the host
//! pulls it (an image it cannot pull fails the build, naming the image).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use platinum_engine::builds::model::TemplateBuildRequest;
use serde::Deserialize;
use serde_json::Value;

use super::builds::{self, BuildInfo};
use super::catalog::{taken_snapshot, template_view};
use super::sandbox::{check_disk, memory_mib_of, vcpus_of};
use crate::Ctx;
use crate::error::{DJson, DResult, DaytonaError};

/// Body of `POST /snapshots` (`CreateSnapshot`). `regionId`, `sandboxClass` and `gpuType` have
/// one answer on a single host and are not read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSnapshotRequest {
    /// The snapshot's name.
    name: String,
    /// A registry image to make the snapshot of.
    #[serde(default)]
    image_name: Option<String>,
    /// vCPUs of its sandboxes.
    #[serde(default)]
    cpu: Option<i64>,
    /// GPUs (none here).
    #[serde(default)]
    gpu: Option<i64>,
    /// Memory of its sandboxes, GiB.
    #[serde(default)]
    memory: Option<i64>,
    /// Disk of its sandboxes, GiB (at most the base's).
    #[serde(default)]
    disk: Option<i64>,
    /// The image to build.
    #[serde(default)]
    build_info: Option<BuildInfo>,
}

/// A 409 in Daytona's shape.
fn conflict(message: String) -> DaytonaError {
    DaytonaError::new(StatusCode::CONFLICT, "CONFLICT", message)
}

/// Refuses a name that is taken, or maps to a template another snapshot has.
async fn check_free(ctx: &Ctx, name: &str, template: &str) -> DResult<()> {
    let summary = ctx.engine.get_template(template).ok();
    if summary.as_ref().is_some_and(|s| s.builtin) {
        return Err(DaytonaError::bad_request(format!(
            "snapshot name {name:?} is a Platinum template's; choose another"
        )));
    }
    if let Some(t) = ctx.builds.get(template).filter(|t| t.display != name) {
        return Err(DaytonaError::bad_request(format!(
            "snapshot name {name:?} maps to the Platinum template {template:?}, which snapshot \
             {:?} has; choose another name (template names are lower case letters, digits, \
             '.', '_' and '-')",
            t.display
        )));
    }
    if summary.is_some() || taken_snapshot(ctx, name).await?.is_some() {
        return Err(conflict(format!("snapshot {name} already exists")));
    }
    Ok(())
}

/// `POST /snapshots`: starts building the image; answers the snapshot, `building`.
pub async fn create_snapshot(
    State(ctx): State<Ctx>,
    DJson(req): DJson<CreateSnapshotRequest>,
) -> DResult<Json<Value>> {
    let (dockerfile, from_image) = match (&req.build_info, &req.image_name) {
        (Some(build), _) => (Some(builds::check_build_info(build)?.to_string()), None),
        (None, Some(image)) if !image.trim().is_empty() => (None, Some(image.trim().to_string())),
        (None, _) => {
            return Err(DaytonaError::bad_request(format!(
                "snapshot {}: give an image (imageName, e.g. ubuntu:24.04) or an Image \
                 (Image.base(...).run_commands(...))",
                req.name
            )));
        }
    };
    if req.gpu.is_some_and(|g| g > 0) {
        return Err(DaytonaError::bad_request(
            "gpu is not supported by Platinum",
        ));
    }
    let vcpus = vcpus_of(req.cpu)?;
    let memory_mib = memory_mib_of(req.memory)?;
    check_disk(&ctx, &ctx.engine.config().default_template, req.disk)?;
    let template = builds::template_name(&req.name)?;
    {
        let _starting = ctx.builds.starting().await;
        check_free(&ctx, &req.name, &template).await?;
        let build = ctx
            .engine
            .build_template(TemplateBuildRequest {
                name: template.clone(),
                dockerfile,
                from_image,
                vcpus,
                memory_mib,
                ..Default::default()
            })
            .await?;
        ctx.builds.record(&template, &build.id, &req.name);
        tracing::info!(snapshot = %req.name, template = %template, build = %build.id, "daytona snapshot build started");
    }
    let view = template_view(&ctx, &template)
        .await
        .ok_or_else(|| DaytonaError::internal(format!("the build of {template} vanished")))?;
    Ok(Json(view.dto()))
}
