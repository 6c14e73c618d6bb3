//! The Daytona control plane under `/api` (paths as in `daytona-api-client`).
//!
//! - [`sandbox`]: `/sandbox/...`: create, get (id or name), list, delete, start, stop, pause,
//!   archive, labels, lifecycle intervals, activity, toolbox URL, signing keys; clear refusals
//!   for what Platinum does not offer (resize, backups, SSH, secrets, ...).
//! - [`copies`]: `/sandbox/{id}/snapshot` and `/sandbox/{id}/fork`.
//! - [`catalog`]: `/snapshots` list, get, delete (Platinum's templates, the snapshots it builds
//!   and the snapshots taken of sandboxes); [`snapshot_builds`]: `POST /snapshots`, building a
//!   Daytona `Image`; [`build_logs`]: their build logs; [`builds`]: names and states of builds.
//! - [`images`]: sandboxes created from an `Image` (built once per Dockerfile), and
//!   `/object-storage/push-access` (none).
//! - [`volumes`]: `/volumes` over the engine's named persistent volumes.
//! - [`secrets`]: `/secret` over the engine's secrets brokered at egress.
//! - [`preview`]: preview links (`/sandbox/{id}/ports/{port}/...`) and the proxy they point at.
//! - [`pools`]: `/warm-pools` over the engine's warm pools.

pub mod build_logs;
pub mod builds;
pub mod catalog;
pub mod copies;
pub mod images;
pub mod pools;
pub mod preview;
pub mod sandbox;
pub mod secrets;
pub mod snapshot_builds;
pub mod volumes;

use axum::Router;
use axum::routing::{any, get, patch, post, put};

use crate::Ctx;
use crate::error::route_not_found;

/// Every `/api` route (authentication is added by the caller).
pub fn routes() -> Router<Ctx> {
    use sandbox as s;
    Router::new()
        .route("/api/sandbox", post(s::create).get(s::list))
        .route("/api/sandbox/{idOrName}", get(s::get).delete(s::delete))
        .route("/api/sandbox/{idOrName}/start", post(s::start))
        .route("/api/sandbox/{idOrName}/stop", post(s::stop))
        .route("/api/sandbox/{idOrName}/archive", post(s::archive))
        .route("/api/sandbox/{idOrName}/recover", post(s::recover))
        .route("/api/sandbox/{idOrName}/pause", post(s::pause))
        .route("/api/sandbox/{idOrName}/labels", put(s::set_labels))
        .route(
            "/api/sandbox/{idOrName}/autostop/{interval}",
            post(s::set_autostop),
        )
        .route(
            "/api/sandbox/{idOrName}/autoarchive/{interval}",
            post(s::set_autoarchive),
        )
        .route(
            "/api/sandbox/{idOrName}/autodelete/{interval}",
            post(s::set_autodelete),
        )
        .route(
            "/api/sandbox/{idOrName}/autopause/{interval}",
            post(s::set_autopause),
        )
        .route("/api/sandbox/{idOrName}/ttl/{minutes}", post(s::set_ttl))
        .route(
            "/api/sandbox/{idOrName}/public/{isPublic}",
            post(s::set_public),
        )
        .route(
            "/api/sandbox/{idOrName}/last-activity",
            post(s::last_activity),
        )
        .route(
            "/api/sandbox/{idOrName}/toolbox-proxy-url",
            get(s::toolbox_proxy_url),
        )
        .route("/api/sandbox/{idOrName}/signing-key", get(s::signing_key))
        .route(
            "/api/sandbox/{idOrName}/signing-key/rotate",
            post(s::rotate_signing_key),
        )
        .route(
            "/api/sandbox/{idOrName}/build-logs-url",
            get(build_logs::sandbox_logs_url),
        )
        .route(
            "/api/sandbox/{idOrName}/build-logs",
            get(build_logs::sandbox_logs),
        )
        .route(
            "/api/sandbox/{idOrName}/ports/{port}/preview-url",
            get(preview::preview_url),
        )
        .route(
            "/api/sandbox/{idOrName}/ports/{port}/signed-preview-url",
            get(preview::signed_preview_url),
        )
        .route(
            "/api/sandbox/{idOrName}/ports/{port}/signed-preview-url/{token}/expire",
            post(preview::expire_signed_preview_url),
        )
        .route("/api/sandbox/{idOrName}/resize", post(s::unsupported))
        .route("/api/sandbox/{idOrName}/fork", post(copies::fork))
        .route("/api/sandbox/{idOrName}/snapshot", post(copies::snapshot))
        .route("/api/sandbox/{idOrName}/backup", post(s::unsupported))
        .route(
            "/api/sandbox/{idOrName}/network-settings",
            post(s::update_network_settings),
        )
        .route("/api/sandbox/{idOrName}/secrets", put(s::update_secrets))
        .route(
            "/api/sandbox/{idOrName}/ssh-access",
            post(s::unsupported).delete(s::unsupported),
        )
        .route(
            "/api/snapshots",
            get(catalog::list_snapshots).post(snapshot_builds::create_snapshot),
        )
        .route(
            "/api/snapshots/{idOrName}",
            get(catalog::get_snapshot).delete(catalog::delete_snapshot),
        )
        .route(
            "/api/snapshots/{idOrName}/build-logs-url",
            get(build_logs::snapshot_logs_url),
        )
        .route(
            "/api/snapshots/{idOrName}/build-logs",
            get(build_logs::snapshot_logs),
        )
        .route(
            "/api/snapshots/{idOrName}/activate",
            post(catalog::snapshot_unsupported),
        )
        .route(
            "/api/snapshots/{idOrName}/deactivate",
            post(catalog::snapshot_unsupported),
        )
        .route(
            "/api/volumes",
            get(volumes::list_volumes).post(volumes::create_volume),
        )
        .route("/api/volumes/by-name/{name}", get(volumes::get_volume))
        .route(
            "/api/volumes/{id}",
            get(volumes::get_volume).delete(volumes::delete_volume),
        )
        .route("/api/secret", get(secrets::list).post(secrets::create))
        .route("/api/secret/paginated", get(secrets::paginated))
        .route(
            "/api/secret/{secretId}",
            get(secrets::get)
                .patch(secrets::update)
                .delete(secrets::delete),
        )
        .route("/api/object-storage/push-access", get(images::push_access))
        .route("/api/warm-pools", get(pools::list).post(pools::create))
        .route(
            "/api/warm-pools/{id}",
            patch(pools::update).delete(pools::delete),
        )
        .route("/api/{*rest}", any(route_not_found))
}
