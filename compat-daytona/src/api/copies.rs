//! Copies of a sandbox: snapshots taken of it (`POST /sandbox/{idOrName}/snapshot`) and forks
//! (`POST /sandbox/{idOrName}/fork`).
//!
//! - A snapshot keeps the sandbox's memory and disk whatever `includeMemory` says: Platinum has
//!   no disk-only snapshot, so it is taken of a started (or paused) sandbox, where Daytona's
//!   `includeMemory: false`, the SDKs' default, would want it stopped. The sandbox runs on and is
//!   answered as it is (never `snapshotting`: the SDKs' wait ends at once). Its name must not be
//!   a template's or a built snapshot's (those win when a create names a snapshot).
//!   `create(snapshot=<name>)` restores it into a new sandbox ([`super::sandbox`]); `/snapshots`
//!   lists, reads and deletes it ([`super::catalog`]).
//! - A fork is one started copy with the source's memory, disk, labels, intervals and public
//!   flag, under a new id, and the name given (unique among sandboxes), if any.

use axum::Json;
use axum::extract::State;
use platinum_engine::model::{CreateSnapshot, ForkRequest, Sandbox};
use serde::Deserialize;

use super::builds;
use super::sandbox::{BaseUrl, SandboxDto, dto, is_public, set_public_flag};
use crate::Ctx;
use crate::error::{DJson, DPath, DResult, DaytonaError};

/// Body of `POST /sandbox/{idOrName}/snapshot`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotRequest {
    /// Name of the new snapshot.
    name: String,
    /// Whether Daytona should keep memory too (Platinum always does).
    #[serde(default)]
    include_memory: Option<bool>,
}

/// `POST /sandbox/{idOrName}/snapshot`: takes a named snapshot; answers the sandbox.
pub async fn snapshot(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
    DJson(req): DJson<SnapshotRequest>,
) -> DResult<Json<SandboxDto>> {
    if builds::known_template(&ctx, &req.name).is_some() {
        return Err(DaytonaError::bad_request(format!(
            "snapshot name {:?} is a Platinum template's (or a built snapshot's); choose another",
            req.name
        )));
    }
    let s = ctx.engine.find_sandbox(&id).await?;
    let snap = ctx
        .engine
        .create_snapshot(
            &s.id,
            CreateSnapshot {
                name: Some(req.name),
            },
        )
        .await?;
    tracing::info!(sandbox = %s.id, snapshot = %snap.id, include_memory = ?req.include_memory, "daytona snapshot taken");
    let s = ctx.engine.find_sandbox(&s.id).await?;
    Ok(Json(dto(&ctx, &base, &s)))
}

/// Body of `POST /sandbox/{idOrName}/fork`.
#[derive(Debug, Default, Deserialize)]
pub struct ForkBody {
    /// Name of the copy (unique among sandboxes).
    #[serde(default)]
    name: Option<String>,
}

/// `POST /sandbox/{idOrName}/fork`: one started copy of the sandbox.
pub async fn fork(
    State(ctx): State<Ctx>,
    base: BaseUrl,
    DPath(id): DPath<String>,
    DJson(req): DJson<ForkBody>,
) -> DResult<Json<SandboxDto>> {
    let source = ctx.engine.find_sandbox(&id).await?;
    let forked = ctx
        .engine
        .fork_sandbox(
            &source.id,
            ForkRequest {
                count: 1,
                name: req.name,
            },
        )
        .await?;
    let copy = forked
        .sandboxes
        .into_iter()
        .next()
        .ok_or_else(|| DaytonaError::internal("the fork returned no copy"))?;
    tracing::info!(sandbox = %source.id, copy = %copy.id, paused_ms = forked.source_paused_ms, "daytona sandbox forked");
    let copy = with_public_flag(&ctx, copy, is_public(&source)).await?;
    Ok(Json(dto(&ctx, &base, &copy)))
}

/// Gives a fresh copy its source's public flag; a copy that cannot take it is deleted.
async fn with_public_flag(ctx: &Ctx, copy: Sandbox, public: bool) -> DResult<Sandbox> {
    if !public {
        return Ok(copy);
    }
    match set_public_flag(ctx, &copy.id, true).await {
        Ok(s) => Ok(s),
        Err(e) => {
            if let Err(k) = ctx.engine.kill_sandbox(&copy.id).await {
                tracing::warn!(sandbox = %copy.id, error = %k, "removing a fork copy that could not be set up");
            }
            Err(e)
        }
    }
}
