//! `filesystem.Filesystem`: files and directories over the engine's file commands, and watching
//! over `watch_dir`.
//!
//! Entries are rendered as envd's `EntryInfo` (a symlink is `FILE_TYPE_SYMLINK` with
//! `isSymlink`; sizes are 64-bit, so strings). envd semantics kept: `MakeDir` creates parents and
//! answers `already_exists` for an existing directory; `Remove` removes trees and succeeds for a
//! missing path; `Move` replaces the destination; `ListDir` depth 0 means 1.
//!
//! Watching comes in two forms: `WatchDir` streams `start`, then `filesystem{name, type}` per
//! change (and `keepalive`s); `CreateWatcher` starts a watch whose events are buffered here and
//! drained by `GetWatcherEvents` until `RemoveWatcher`. Buffered watchers live in memory: they
//! end with the server, as envd's end with envd.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use platinum_engine::ErrorCode;
use platinum_engine::commands::watch::{DirWatch, FsEvent, FsOp, WatchOptions};
use platinum_engine::model::FileInfo;
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::format_description::well_known::Rfc3339;

use crate::Ctx;
use crate::connect::{self, flexible_u32};
use crate::envd::process::{server_stream, unary};
use crate::envd::{acting_user, authorize, create_as, stream_broken};
use crate::error::{ConnectCode, ConnectError};
use crate::routing::SandboxId;

/// Events a polled watcher keeps between polls; older ones are dropped first.
const MAX_BUFFERED_EVENTS: usize = 10_000;
/// Polled watchers one sandbox may have.
const MAX_WATCHERS: usize = 64;

/// envd's `EntryInfo` of an engine entry. As envd does, a symlink reports what it finally leads
/// to: that entry's type and permission bits, and its absolute path as `symlinkTarget` (a
/// dangling link: no type, mode 0, and its own path).
pub fn entry_json(f: &FileInfo) -> Value {
    let file_type = |kind: &str| match kind {
        "dir" => "FILE_TYPE_DIRECTORY",
        "file" => "FILE_TYPE_FILE",
        "symlink" => "FILE_TYPE_SYMLINK",
        _ => "FILE_TYPE_UNSPECIFIED",
    };
    let (kind, mode, target) = match (f.kind.as_str(), &f.resolved) {
        ("symlink", Some(r)) => (file_type(&r.kind), r.mode, Some(r.path.as_str())),
        ("symlink", None) => ("FILE_TYPE_UNSPECIFIED", 0, Some(f.path.as_str())),
        ("other", _) => ("FILE_TYPE_FILE", f.mode, None),
        (kind, _) => (file_type(kind), f.mode, None),
    };
    let mut v = json!({
        "name": f.name,
        "type": kind,
        "path": f.path,
        "size": f.size.to_string(),
        "mode": mode,
        "permissions": f.permissions,
        "owner": f.owner,
        "group": f.group,
        "modifiedTime": f.modified_at.format(&Rfc3339).unwrap_or_default(),
        "isSymlink": f.kind == "symlink",
        "metadata": f.metadata,
    });
    if let Some(target) = target {
        v["symlinkTarget"] = json!(target);
    }
    v
}

fn event_type(op: FsOp) -> &'static str {
    match op {
        FsOp::Create => "EVENT_TYPE_CREATE",
        FsOp::Write => "EVENT_TYPE_WRITE",
        FsOp::Remove => "EVENT_TYPE_REMOVE",
        FsOp::Rename => "EVENT_TYPE_RENAME",
        FsOp::Chmod => "EVENT_TYPE_CHMOD",
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PathRequest {
    path: String,
    #[serde(deserialize_with = "flexible_u32")]
    depth: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct MoveRequest {
    source: String,
    destination: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WatchRequest {
    path: String,
    recursive: bool,
    #[serde(alias = "include_entry")]
    include_entry: bool,
    #[serde(alias = "allow_network_mounts")]
    allow_network_mounts: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
struct WatcherRequest {
    #[serde(alias = "watcher_id")]
    watcher_id: String,
}

fn need_path(path: &str) -> Result<(), ConnectError> {
    if path.is_empty() {
        Err(ConnectError::invalid("path is required"))
    } else {
        Ok(())
    }
}

/// One `filesystem.Filesystem` RPC.
pub async fn rpc(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = match authorize(&ctx, &id, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    tracing::debug!(sandbox = %id, method, "envd filesystem RPC");
    let user = &user;
    match method.as_str() {
        "Stat" => unary(&headers, body, |r: PathRequest| stat(&ctx, &id, user, r)).await,
        "MakeDir" => {
            unary(&headers, body, |r: PathRequest| {
                make_dir(&ctx, &id, user, r)
            })
            .await
        }
        "Move" => unary(&headers, body, |r: MoveRequest| rename(&ctx, &id, user, r)).await,
        "ListDir" => {
            unary(&headers, body, |r: PathRequest| {
                list_dir(&ctx, &id, user, r)
            })
            .await
        }
        "Remove" => unary(&headers, body, |r: PathRequest| remove(&ctx, &id, user, r)).await,
        "WatchDir" => {
            server_stream(&headers, body, async |r: WatchRequest| {
                watch_dir(ctx.clone(), id.clone(), user.clone(), &headers, r).await
            })
            .await
        }
        "CreateWatcher" => {
            unary(&headers, body, |r: WatchRequest| {
                create_watcher(&ctx, &id, user, r)
            })
            .await
        }
        "GetWatcherEvents" => {
            unary(&headers, body, |r: WatcherRequest| {
                watcher_events(&ctx, &id, r)
            })
            .await
        }
        "RemoveWatcher" => {
            unary(&headers, body, |r: WatcherRequest| {
                remove_watcher(&ctx, &id, r)
            })
            .await
        }
        other => ConnectError::new(
            ConnectCode::Unimplemented,
            format!("filesystem.Filesystem/{other} is not implemented"),
        )
        .into_response(),
    }
}

async fn stat(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    r: PathRequest,
) -> Result<Value, ConnectError> {
    need_path(&r.path)?;
    entry_of(ctx, id, user, &r.path).await
}

/// `{entry}` of `path`, looked up as the user acting on it.
async fn entry_of(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    path: &str,
) -> Result<Value, ConnectError> {
    let entry = ctx.engine.stat(id, path, acting_user(user, path)).await?;
    Ok(json!({ "entry": entry_json(&entry) }))
}

async fn make_dir(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    r: PathRequest,
) -> Result<Value, ConnectError> {
    need_path(&r.path)?;
    let (entry, made) = ctx
        .engine
        .make_dir(id, &r.path, create_as(user, &r.path))
        .await?;
    if !made {
        return Err(ConnectError::new(
            ConnectCode::AlreadyExists,
            format!("directory {} already exists", entry.path),
        ));
    }
    entry_of(ctx, id, user, &entry.path).await
}

async fn rename(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    r: MoveRequest,
) -> Result<Value, ConnectError> {
    if r.source.is_empty() || r.destination.is_empty() {
        return Err(ConnectError::invalid("source and destination are required"));
    }
    // Both paths must resolve alike: relative ones in the user's home, as the user.
    let acting = if r.source.starts_with('/') && r.destination.starts_with('/') {
        acting_user(user, &r.source)
    } else {
        user.clone()
    };
    let entry = ctx
        .engine
        .rename(id, &r.source, &r.destination, true, acting)
        .await?;
    Ok(json!({ "entry": entry_json(&entry) }))
}

async fn list_dir(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    r: PathRequest,
) -> Result<Value, ConnectError> {
    need_path(&r.path)?;
    let depth = r.depth.filter(|d| *d > 0).unwrap_or(1);
    let entries = ctx
        .engine
        .list_dir(id, &r.path, depth, acting_user(user, &r.path))
        .await?;
    Ok(json!({ "entries": entries.iter().map(entry_json).collect::<Vec<_>>() }))
}

async fn remove(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    r: PathRequest,
) -> Result<Value, ConnectError> {
    need_path(&r.path)?;
    match ctx
        .engine
        .remove(id, &r.path, true, acting_user(user, &r.path))
        .await
    {
        Ok(()) => Ok(json!({})),
        // envd removes with RemoveAll, which succeeds for a path that is not there.
        Err(e) if e.code() == ErrorCode::FileNotFound => Ok(json!({})),
        Err(e) => Err(e.into()),
    }
}

/// An event as envd sends it, with the entry when asked for and the change leaves one.
async fn event_json(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    root: &str,
    include_entry: bool,
    event: &FsEvent,
) -> Value {
    let mut v = json!({ "name": event.name, "type": event_type(event.op) });
    if include_entry && matches!(event.op, FsOp::Create | FsOp::Write | FsOp::Chmod) {
        let path = format!("{}/{}", root.trim_end_matches('/'), event.name);
        if let Ok(entry) = ctx.engine.stat(id, &path, acting_user(user, &path)).await {
            v["entry"] = entry_json(&entry);
        }
    }
    v
}

async fn start_watch(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    req: &WatchRequest,
) -> Result<DirWatch, ConnectError> {
    need_path(&req.path)?;
    Ok(ctx
        .engine
        .watch_dir(
            id,
            &req.path,
            WatchOptions {
                recursive: req.recursive,
                allow_network_mounts: req.allow_network_mounts,
            },
            acting_user(user, &req.path),
        )
        .await?)
}

async fn watch_dir(
    ctx: Ctx,
    id: String,
    user: Option<String>,
    headers: &HeaderMap,
    req: WatchRequest,
) -> Response {
    let mut watch = match start_watch(&ctx, &id, &user, &req).await {
        Ok(w) => w,
        Err(e) => return connect::stream_error(e).await,
    };
    let keepalive = connect::keepalive_interval(headers);
    let (sink, response) = connect::streaming();
    tokio::spawn(async move {
        if sink.send(&json!({ "start": {} })).await.is_err() {
            return;
        }
        let end = loop {
            let next = tokio::select! {
                next = watch.next() => next,
                _ = tokio::time::sleep(keepalive) => {
                    if sink.send(&json!({ "keepalive": {} })).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = sink.closed() => return,
            };
            match next {
                Ok(Some(event)) => {
                    let v =
                        event_json(&ctx, &id, &user, &req.path, req.include_entry, &event).await;
                    if sink.send(&json!({ "filesystem": v })).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break None,
                Err(e) => break Some(stream_broken(&ctx, &id, e).await),
            }
        };
        sink.finish(end).await;
    });
    response
}

/// Polled watchers (`CreateWatcher` / `GetWatcherEvents` / `RemoveWatcher`).
#[derive(Default)]
pub struct Watchers {
    map: Mutex<HashMap<String, Arc<Watcher>>>,
}

/// One polled watcher: events collected by a background task, which stops when it is dropped.
pub struct Watcher {
    sandbox: String,
    events: Arc<Mutex<Buffered>>,
    task: tokio::task::AbortHandle,
}

#[derive(Default)]
struct Buffered {
    events: std::collections::VecDeque<Value>,
    /// Why the watch ended, once it did.
    ended: Option<ConnectError>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn create_watcher(
    ctx: &Ctx,
    id: &str,
    user: &Option<String>,
    req: WatchRequest,
) -> Result<Value, ConnectError> {
    {
        let mut map = ctx.watchers.map.lock().expect("watchers");
        // Watchers whose watch ended and whose events were all read go first.
        map.retain(|_, w| {
            let b = w.events.lock().expect("watcher events");
            b.ended.is_none() || !b.events.is_empty()
        });
        if map.values().filter(|w| w.sandbox == id).count() >= MAX_WATCHERS {
            return Err(ConnectError::new(
                ConnectCode::ResourceExhausted,
                format!("a sandbox has at most {MAX_WATCHERS} watchers"),
            ));
        }
    }
    let mut watch = start_watch(ctx, id, user, &req).await?;
    let watcher_id = hex::encode(rand::random::<[u8; 12]>());
    let events = Arc::new(Mutex::new(Buffered::default()));
    let buffer = events.clone();
    let (ctx2, id2, user2) = (ctx.clone(), id.to_string(), user.clone());
    let task = tokio::spawn(async move {
        let ended = loop {
            match watch.next().await {
                Ok(Some(event)) => {
                    let v =
                        event_json(&ctx2, &id2, &user2, &req.path, req.include_entry, &event).await;
                    let mut b = buffer.lock().expect("watcher events");
                    if b.events.len() >= MAX_BUFFERED_EVENTS {
                        b.events.pop_front();
                    }
                    b.events.push_back(v);
                }
                Ok(None) => {
                    break ConnectError::new(
                        ConnectCode::NotFound,
                        "the watched directory was removed",
                    );
                }
                Err(e) => break stream_broken(&ctx2, &id2, e).await,
            }
        };
        buffer.lock().expect("watcher events").ended = Some(ended);
    });
    let watcher = Arc::new(Watcher {
        sandbox: id.to_string(),
        events,
        task: task.abort_handle(),
    });
    ctx.watchers
        .map
        .lock()
        .expect("watchers")
        .insert(watcher_id.clone(), watcher);
    tracing::debug!(sandbox = %id, watcher = %watcher_id, "watcher created");
    Ok(json!({ "watcherId": watcher_id }))
}

fn find(ctx: &Ctx, id: &str, watcher: &str) -> Result<Arc<Watcher>, ConnectError> {
    ctx.watchers
        .map
        .lock()
        .expect("watchers")
        .get(watcher)
        .filter(|w| w.sandbox == id)
        .cloned()
        .ok_or_else(|| {
            ConnectError::new(
                ConnectCode::NotFound,
                format!("watcher {watcher} not found"),
            )
        })
}

async fn watcher_events(ctx: &Ctx, id: &str, req: WatcherRequest) -> Result<Value, ConnectError> {
    let watcher = find(ctx, id, &req.watcher_id)?;
    let mut b = watcher.events.lock().expect("watcher events");
    if b.events.is_empty()
        && let Some(e) = &b.ended
    {
        return Err(e.clone());
    }
    let events: Vec<Value> = b.events.drain(..).collect();
    Ok(json!({ "events": events }))
}

async fn remove_watcher(ctx: &Ctx, id: &str, req: WatcherRequest) -> Result<Value, ConnectError> {
    find(ctx, id, &req.watcher_id)?;
    ctx.watchers
        .map
        .lock()
        .expect("watchers")
        .remove(&req.watcher_id);
    Ok(json!({}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use platinum_engine::model::ResolvedLink;

    #[test]
    fn entries_render_as_envd_entry_info() {
        let f = FileInfo {
            name: "l".into(),
            path: "/home/user/l".into(),
            kind: "symlink".into(),
            size: 12,
            mode: 0o777,
            permissions: "lrwxrwxrwx".into(),
            owner: "user".into(),
            group: "user".into(),
            modified_at: time::OffsetDateTime::UNIX_EPOCH,
            symlink_target: Some("../../etc".into()),
            resolved: Some(ResolvedLink {
                path: "/etc".into(),
                kind: "dir".into(),
                mode: 0o755,
            }),
            metadata: [("owner".to_string(), "ada".to_string())].into(),
        };
        let v = entry_json(&f);
        assert_eq!(v["metadata"]["owner"], "ada");
        assert_eq!(v["type"], "FILE_TYPE_DIRECTORY");
        assert_eq!(v["mode"], 0o755);
        assert_eq!(v["size"], "12");
        assert_eq!(v["isSymlink"], true);
        assert_eq!(v["symlinkTarget"], "/etc");
        assert_eq!(v["modifiedTime"], "1970-01-01T00:00:00Z");
        let dangling = FileInfo {
            resolved: None,
            ..f.clone()
        };
        let v = entry_json(&dangling);
        assert_eq!(v["type"], "FILE_TYPE_UNSPECIFIED");
        assert_eq!(v["symlinkTarget"], "/home/user/l");
        assert_eq!(event_type(FsOp::Rename), "EVENT_TYPE_RENAME");
    }

    #[test]
    fn requests_accept_both_spellings() {
        let r: WatcherRequest = serde_json::from_str(r#"{"watcher_id":"w1"}"#).unwrap();
        assert_eq!(r.watcher_id, "w1");
        let r: WatcherRequest = serde_json::from_str(r#"{"watcherId":"w2"}"#).unwrap();
        assert_eq!(r.watcher_id, "w2");
        let r: WatchRequest =
            serde_json::from_str(r#"{"path":"/x","recursive":true,"includeEntry":true}"#).unwrap();
        assert!(r.recursive && r.include_entry && !r.allow_network_mounts);
        let r: WatchRequest =
            serde_json::from_str(r#"{"path":"/x","allowNetworkMounts":true}"#).unwrap();
        assert!(r.allow_network_mounts);
        let r: PathRequest = serde_json::from_str(r#"{"path":"/x","depth":0}"#).unwrap();
        assert_eq!(r.depth, Some(0));
    }
}
