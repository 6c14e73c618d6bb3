//! Volumes on E2B's control plane: the SDKs' `Volume.create` / `connect` / `get_info` / `list`
//! / `destroy`, and `Sandbox.create(volume_mounts={path: volume})`, over the engine's named
//! persistent volumes.
//!
//! | E2B | engine |
//! |---|---|
//! | `POST /volumes` `{name}` (201 `VolumeAndToken`; 409 for a name in use) | `create_volume` (the engine's default size: E2B volumes have none) |
//! | `GET /volumes` (200 `[Volume]`) | `list_volumes`, oldest first |
//! | `GET /volumes/{volumeID}` (200 `VolumeAndToken`, 404) | `get_volume` (id or name) |
//! | `DELETE /volumes/{volumeID}` (204, 404; 409 while a sandbox has it mounted) | `delete_volume` |
//! | `volumeMounts: [{name, path}]` of `POST /sandboxes` | `CreateSandbox.volumes`, read-write |
//! | `volumeMounts` of `GET /sandboxes/{id}` and the lists | the volumes' attachments |
//!
//! A volume is attached read-write to one sandbox at a time: mounting one that another sandbox
//! still has is a 409 (kill that sandbox first; its volumes are detached as it goes).
//!
//! Each `VolumeAndToken` carries the volume's `token`, an HMAC of its id (see [`crate::auth`]):
//! what the content API ([`crate::volume_content`], `volume.list(path)`, `read_file`,
//! `write_file`...) takes as `Authorization: Bearer`. No `domain` is returned: the SDKs send
//! content requests to `E2B_VOLUME_API_URL`, this server.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use platinum_engine::model::{CreateVolume, Volume, VolumeMount};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use crate::Ctx;
use crate::control::Body;
use crate::error::ApiError;

type ApiResult<T> = Result<T, ApiError>;

/// The volume routes (the caller adds the API-key check).
pub(crate) fn routes() -> Router<Ctx> {
    Router::new()
        .route("/volumes", get(list).post(create))
        .route("/volumes/{id}", get(get_one).delete(remove))
}

/// E2B's `Volume` (list items).
fn volume_json(v: &Volume) -> Value {
    json!({ "volumeID": v.id, "name": v.name })
}

/// E2B's `VolumeAndToken` (create, get), with the volume's token under `secret`.
fn volume_and_token_json(v: &Volume, secret: &[u8]) -> Value {
    let token = crate::auth::volume_token(secret, &v.id);
    json!({ "volumeID": v.id, "name": v.name, "token": token })
}

/// Body of `POST /volumes` (`NewVolume`).
#[derive(Debug, Default, Deserialize)]
struct NewVolume {
    name: Option<String>,
}

async fn create(State(ctx): State<Ctx>, Body(req): Body<NewVolume>) -> ApiResult<Response> {
    let Some(name) = req.name else {
        return Err(ApiError::bad_request("name is required"));
    };
    let volume = ctx
        .engine
        .create_volume(CreateVolume {
            name,
            size_mib: None,
        })
        .await?;
    tracing::info!(volume = %volume.id, name = %volume.name, "E2B volume created");
    Ok((
        StatusCode::CREATED,
        Json(volume_and_token_json(&volume, &ctx.config.secret)),
    )
        .into_response())
}

async fn list(State(ctx): State<Ctx>) -> ApiResult<Json<Value>> {
    let all = ctx.engine.list_volumes().await?;
    Ok(Json(Value::Array(all.iter().map(volume_json).collect())))
}

async fn get_one(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<Json<Value>> {
    let volume = ctx.engine.get_volume(&id).await?;
    Ok(Json(volume_and_token_json(&volume, &ctx.config.secret)))
}

async fn remove(State(ctx): State<Ctx>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    ctx.engine.delete_volume(&id).await?;
    tracing::info!(volume = %id, "E2B volume deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// One entry of a sandbox create's `volumeMounts` (`SandboxVolumeMount`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct SandboxVolumeMount {
    /// The volume's name (its id works too).
    name: String,
    /// Where it is mounted in the sandbox.
    path: String,
}

/// `volumeMounts` of a sandbox create as the engine's mounts: every volume read-write (E2B
/// has no read-only mounts). Names and paths are checked by the engine.
pub(crate) fn mounts(requested: &[SandboxVolumeMount]) -> Vec<VolumeMount> {
    requested
        .iter()
        .map(|m| VolumeMount {
            volume: m.name.clone(),
            path: m.path.clone(),
            readonly: false,
        })
        .collect()
}

/// `volumeMounts` (`[{name, path}]`) of every sandbox with volumes attached, by sandbox id.
pub(crate) type Mounted = BTreeMap<String, Vec<Value>>;

/// The mounts of every sandbox, from one listing of the volumes.
pub(crate) async fn mounted(ctx: &Ctx) -> ApiResult<Mounted> {
    Ok(mounted_of(&ctx.engine.list_volumes().await?))
}

fn mounted_of(volumes: &[Volume]) -> Mounted {
    let mut by_sandbox = Mounted::new();
    for v in volumes {
        for a in &v.attachments {
            by_sandbox
                .entry(a.sandbox_id.clone())
                .or_default()
                .push(json!({ "name": v.name, "path": a.path }));
        }
    }
    by_sandbox
}

#[cfg(test)]
mod tests {
    use super::*;
    use platinum_engine::model::VolumeAttachment;

    fn volume(id: &str, name: &str, attached: &[(&str, &str)]) -> Volume {
        Volume {
            id: id.into(),
            name: name.into(),
            size_mib: 1024,
            attachments: attached
                .iter()
                .map(|(sandbox, path)| VolumeAttachment {
                    sandbox_id: (*sandbox).into(),
                    path: (*path).into(),
                    readonly: false,
                })
                .collect(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn volumes_render_as_e2b_models() {
        let v = volume("vol0123456789abcdef", "data", &[]);
        assert_eq!(
            volume_json(&v),
            json!({"volumeID": "vol0123456789abcdef", "name": "data"})
        );
        // What the SDKs parse: volumeID, name and token required; no domain (not BYOC).
        let token = crate::auth::volume_token(b"key", "vol0123456789abcdef");
        assert_eq!(token.len(), 64);
        assert_eq!(
            volume_and_token_json(&v, b"key"),
            json!({"volumeID": "vol0123456789abcdef", "name": "data", "token": token})
        );
    }

    #[test]
    fn create_bodies_parse() {
        let req: NewVolume = serde_json::from_value(json!({"name": "data"})).unwrap();
        assert_eq!(req.name.as_deref(), Some("data"));
        let req: NewVolume = serde_json::from_value(json!({})).unwrap();
        assert!(req.name.is_none());
    }

    #[test]
    fn volume_mounts_become_read_write_engine_mounts() {
        // What `Sandbox.create(volume_mounts={"/data": vol, "/cache": "cache"})` sends.
        let requested: Vec<SandboxVolumeMount> = serde_json::from_value(json!([
            {"name": "data", "path": "/data"},
            {"name": "cache", "path": "/cache"},
        ]))
        .unwrap();
        assert_eq!(
            mounts(&requested),
            vec![
                VolumeMount {
                    volume: "data".into(),
                    path: "/data".into(),
                    readonly: false,
                },
                VolumeMount {
                    volume: "cache".into(),
                    path: "/cache".into(),
                    readonly: false,
                },
            ]
        );
        assert!(mounts(&[]).is_empty());
        assert!(serde_json::from_value::<Vec<SandboxVolumeMount>>(json!([{"name": "x"}])).is_err());
    }

    #[test]
    fn attachments_become_each_sandboxs_volume_mounts() {
        let all = [
            volume("vol1", "data", &[("sb1", "/data")]),
            volume("vol2", "logs", &[("sb1", "/logs"), ("sb2", "/mnt/logs")]),
            volume("vol3", "idle", &[]),
        ];
        let m = mounted_of(&all);
        assert_eq!(
            m["sb1"],
            vec![
                json!({"name": "data", "path": "/data"}),
                json!({"name": "logs", "path": "/logs"})
            ]
        );
        assert_eq!(m["sb2"], vec![json!({"name": "logs", "path": "/mnt/logs"})]);
        assert_eq!(m.len(), 2);
    }
}
