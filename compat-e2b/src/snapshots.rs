//! Snapshots and fork on E2B's control plane.
//!
//! | E2B | engine |
//! |---|---|
//! | `POST /sandboxes/{id}/snapshots` `{name?, memory?}` (201 `{snapshotID, names}`) | `create_snapshot` (memory and disk; `memory: false` is refused) |
//! | `GET /snapshots?sandboxID=&name=&limit=&nextToken=` (200, `X-Next-Token`) | `list_snapshots`, oldest first |
//! | `DELETE /templates/{snapshotID}` (204, 404) | `delete_snapshot` when no template has that id or name (the route is [`crate::templates`]') |
//! | `POST /sandboxes/{id}/fork` `{timeout?, count?}` (201 `[{sandbox}]`) | `fork_sandbox`, then `set_timeout` on each copy |
//!
//! A snapshot's `names` is its name when it was given one. `Sandbox.create(<snapshot id or
//! name>)` restores it ([`crate::control`]); snapshots outlive the sandbox they were taken of.
//! A fork's copies keep the source's public-traffic flag.

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use platinum_engine::ErrorCode;
use platinum_engine::model::{CreateSnapshot, ForkRequest, Sandbox, Snapshot};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Ctx;
use crate::control::{
    ATTR_PUBLIC, Body, PageKey, is_public, load, next_token_headers, page, parse_limit,
    parse_token, sandbox_json, split_reference, timeout_secs, untagged,
};
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// Page size of a snapshot list that names none (the SDKs' default).
const DEFAULT_PAGE: usize = 100;

/// The snapshot and fork routes (the caller adds the API-key check).
pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/sandboxes/{id}/snapshots", post(create))
        .route("/sandboxes/{id}/fork", post(fork))
        .route("/snapshots", get(list))
}

/// A snapshot by id or name, `None` when there is none.
pub(crate) async fn find(ctx: &Ctx, id_or_name: &str) -> ApiResult<Option<Snapshot>> {
    match ctx.engine.get_snapshot(id_or_name).await {
        Ok(snap) => Ok(Some(snap)),
        Err(e) if e.code() == ErrorCode::SnapshotNotFound => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// E2B's `SnapshotInfo`.
fn info_json(snap: &Snapshot) -> Value {
    json!({ "snapshotID": snap.id, "names": snap.name.iter().collect::<Vec<_>>() })
}

/// Body of `POST /sandboxes/{id}/snapshots`.
#[derive(Debug, Default, Deserialize)]
struct NewSnapshot {
    name: Option<String>,
    memory: Option<bool>,
}

async fn create(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(req): Body<NewSnapshot>,
) -> ApiResult<Response> {
    if req.memory == Some(false) {
        return Err(ApiError::bad_request(
            "filesystem-only snapshots (memory: false) are not supported by this server: \
             Platinum snapshots keep memory and disk, and sandboxes created from them resume \
             where the source was",
        ));
    }
    load(&ctx, &id).await?;
    let snap = ctx
        .engine
        .create_snapshot(&id, CreateSnapshot { name: req.name })
        .await?;
    tracing::info!(sandbox = %id, snapshot = %snap.id, "E2B snapshot created");
    Ok((StatusCode::CREATED, Json(info_json(&snap))).into_response())
}

/// A parsed `GET /snapshots` query.
#[derive(Debug, PartialEq)]
struct ListQuery {
    sandbox: Option<String>,
    name: Option<String>,
    limit: usize,
    after: Option<PageKey>,
}

fn list_query(raw: Option<&str>) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        sandbox: None,
        name: None,
        limit: DEFAULT_PAGE,
        after: None,
    };
    for (key, value) in form_urlencoded::parse(raw.unwrap_or_default().as_bytes()) {
        if value.is_empty() {
            continue;
        }
        match key.as_ref() {
            "sandboxID" => q.sandbox = Some(value.into_owned()),
            "name" => q.name = Some(value.into_owned()),
            "limit" => q.limit = parse_limit(&value)?,
            "nextToken" => q.after = Some(parse_token(&value)?),
            _ => {}
        }
    }
    Ok(q)
}

/// Whether `snap` is the one `wanted` names: its id, or its name, optionally as
/// `namespace/name` with the default tag.
fn named(snap: &Snapshot, wanted: &str) -> bool {
    let (name, tag) = split_reference(wanted);
    snap.id == wanted || (untagged(tag) && snap.name.as_deref() == Some(name))
}

fn snapshot_key(snap: &Snapshot) -> PageKey {
    (snap.created_at.unix_timestamp_nanos(), snap.id.clone())
}

async fn list(State(ctx): State<Ctx>, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let q = list_query(raw.as_deref())?;
    let mut all = ctx.engine.list_snapshots(q.sandbox.as_deref()).await?;
    all.retain(|s| q.name.as_deref().is_none_or(|n| named(s, n)));
    all.sort_by_key(snapshot_key);
    let (items, next) = page(&all, snapshot_key, q.after.as_ref(), true, q.limit);
    let body = Value::Array(items.iter().map(info_json).collect());
    Ok((StatusCode::OK, next_token_headers(next), Json(body)).into_response())
}

/// Deletes snapshot `id` (E2B's `DELETE /templates/{id}` when `id` is no template).
pub(crate) async fn delete(ctx: &Ctx, id: &str) -> ApiResult<()> {
    ctx.engine.delete_snapshot(id).await?;
    tracing::info!(snapshot = %id, "E2B snapshot deleted");
    Ok(())
}

/// Body of `POST /sandboxes/{id}/fork`.
#[derive(Debug, Default, Deserialize)]
struct ForkBody {
    timeout: Option<i64>,
    count: Option<u32>,
}

async fn fork(
    State(ctx): State<Ctx>,
    Path(id): Path<String>,
    Body(req): Body<ForkBody>,
) -> ApiResult<Response> {
    let timeout = req.timeout.map(|t| timeout_secs(Some(t))).transpose()?;
    let source = load(&ctx, &id).await?;
    let count = req.count.unwrap_or(ForkRequest::default().count);
    let forked = ctx
        .engine
        .fork_sandbox(&id, ForkRequest { count, name: None })
        .await?;
    tracing::info!(sandbox = %id, count, paused_ms = forked.source_paused_ms, "E2B sandbox forked");
    let mut entries = Vec::with_capacity(forked.sandboxes.len());
    for copy in forked.sandboxes {
        entries.push(fork_entry(&ctx, copy, timeout, is_public(&source)).await);
    }
    Ok((StatusCode::CREATED, Json(Value::Array(entries))).into_response())
}

/// One copy as an entry of E2B's fork result: `{"sandbox"}` once its timeout and public flag
/// are set, else `{"error"}` (and the copy is killed).
async fn fork_entry(ctx: &Ctx, copy: Sandbox, timeout: Option<u64>, public: bool) -> Value {
    let id = copy.id.clone();
    match settle_copy(ctx, copy, timeout, public).await {
        Ok(s) => json!({ "sandbox": sandbox_json(ctx, &s) }),
        Err(e) => {
            if let Err(k) = ctx.engine.kill_sandbox(&id).await {
                tracing::warn!(sandbox = %id, error = %k, "removing a fork copy that could not be set up");
            }
            json!({ "error": { "code": e.status, "message": e.message } })
        }
    }
}

async fn settle_copy(
    ctx: &Ctx,
    mut copy: Sandbox,
    timeout: Option<u64>,
    public: bool,
) -> ApiResult<Sandbox> {
    if let Some(secs) = timeout {
        copy = ctx.engine.set_timeout(&copy.id, secs).await?;
    }
    if public {
        copy = ctx
            .engine
            .update_attributes(&copy.id, |a| {
                a.insert(ATTR_PUBLIC.into(), "true".into());
            })
            .await?;
    }
    Ok(copy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use platinum_engine::model::SnapshotKind;

    fn snapshot(id: &str, name: Option<&str>) -> Snapshot {
        Snapshot {
            id: id.into(),
            name: name.map(Into::into),
            kind: SnapshotKind::Snapshot,
            sandbox_id: "sb".into(),
            template: "base".into(),
            vcpus: 1,
            memory_mib: 512,
            size_bytes: 0,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            vmm: "qemu".into(),
            accel: "tcg".into(),
            key_id: "k".into(),
            timings: Default::default(),
            env: Default::default(),
            metadata: Default::default(),
        }
    }

    #[test]
    fn snapshots_are_found_by_id_or_name() {
        let s = snapshot("snapabc", Some("mine"));
        for yes in [
            "snapabc",
            "mine",
            "team/mine",
            "mine:default",
            "team/mine:latest",
        ] {
            assert!(named(&s, yes), "{yes}");
        }
        for no in ["other", "mine:v2", "snapab"] {
            assert!(!named(&s, no), "{no}");
        }
        assert!(!named(&snapshot("snapabc", None), "mine"));
    }

    #[test]
    fn info_lists_the_name() {
        assert_eq!(
            info_json(&snapshot("snapabc", Some("mine"))),
            json!({"snapshotID": "snapabc", "names": ["mine"]})
        );
        assert_eq!(info_json(&snapshot("snapabc", None))["names"], json!([]));
    }

    #[test]
    fn list_queries_parse() {
        let q = list_query(Some("sandboxID=sb1&name=mine&limit=2&nextToken=5-snapx")).unwrap();
        assert_eq!(
            q,
            ListQuery {
                sandbox: Some("sb1".into()),
                name: Some("mine".into()),
                limit: 2,
                after: Some((5, "snapx".into())),
            }
        );
        assert_eq!(list_query(None).unwrap().limit, DEFAULT_PAGE);
        assert_eq!(list_query(Some("limit=0")).unwrap_err().status, 400);
        assert_eq!(list_query(Some("nextToken=x")).unwrap_err().status, 400);
    }
}
