//! Platinum's native REST API: `/v1`, documented by an OpenAPI 3.1 document generated from this
//! code (utoipa). Handlers are thin: parse, call one engine command, render.
//!
//! - [`routes`]: one module per resource (sandboxes, exec, processes, files, ports, keys).
//! - [`error`]: the typed error body and extractors that produce it.
//! - [`auth`]: the Bearer API key check.
//! - [`ndjson`]: streamed process output.

pub mod auth;
pub mod error;
pub mod ndjson;
pub mod routes;

use axum::Json;
use axum::Router;
use axum::middleware;
use platinum_engine::Engine;
use serde::Serialize;
use std::sync::Arc;
use utoipa::openapi::OpenApi as OpenApiDoc;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use routes::{
    backups, capacity, edge, egress, exec, files, keys, pools, ports, processes, sandboxes,
    secrets, share, snapshots, templates, volumes,
};

/// Top-level facts of the document; paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Platinum API",
        description = "Hardware-isolated sandboxes for AI agents. Every sandbox is its own microVM. \
                       Authenticate with `Authorization: Bearer <api key>`. Errors are JSON \
                       `{\"code\", \"message\"}` with a stable `code`.",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    servers((url = "http://127.0.0.1:7070", description = "Local server (`platinum up`)")),
    tags(
        (name = "sandboxes", description = "Create, inspect and control sandboxes"),
        (name = "exec", description = "Run commands"),
        (name = "processes", description = "Background processes: re-attach, signal, stdin"),
        (name = "files", description = "Files inside a sandbox"),
        (name = "ports", description = "HTTP and WebSocket to services inside a sandbox"),
        (name = "edge", description = "The edge proxy: exposed ports, edge tokens and their signing keys"),
        (name = "snapshots", description = "Signed snapshots, restore, fork, checkpoints and rollback"),
        (name = "pools", description = "Warm pools: running sandboxes a create claims without starting a VM"),
        (name = "share", description = "The host share (`/mnt/dnah-share` in the guest), read and written on the host in any state"),
        (name = "network", description = "Egress policies: what a sandbox may reach beyond the host, changed at runtime"),
        (name = "backups", description = "Continuous backup: snapshots of running sandboxes in object storage, restored as new sandboxes"),
        (name = "secrets", description = "Secrets brokered at egress: write-only values, placeholders in sandboxes, replaced on the host in HTTPS requests to the secret's hosts, or put into headers by egress header rules"),
        (name = "volumes", description = "Named persistent volumes, attached to sandboxes at create or while they run"),
        (name = "templates", description = "Templates: built-in ones, and custom ones built from steps in a builder VM"),
        (name = "keys", description = "API keys: list, create (Platinum or E2B form), revoke, rotate"),
        (name = "system", description = "Server health and capacity")
    ),
    security(("api_key" = [])),
    modifiers(&BearerAuth),
    components(schemas(error::ErrorBody))
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A Platinum API key"))
                    .build(),
            ),
        );
    }
}

/// Server health.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `ok` when the server answers.
    pub status: String,
    /// Server version.
    pub version: String,
}

/// Health check (no API key needed).
#[utoipa::path(get, path = "/health", tag = "system", operation_id = "health", security(()),
    responses(
        (status = 200, description = "Serving", body = Health),
        (status = 503, description = "Starting or shutting down", body = error::ErrorBody)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// The `/v1` router (every route needs an API key), the open `/health` router, and the document
/// describing both.
fn build() -> (Router<Arc<Engine>>, Router<Arc<Engine>>, OpenApiDoc) {
    let (v1, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(
            sandboxes::create_sandbox,
            sandboxes::list_sandboxes
        ))
        .routes(routes!(sandboxes::get_sandbox, sandboxes::delete_sandbox))
        .routes(routes!(sandboxes::pause_sandbox))
        .routes(routes!(sandboxes::resume_sandbox))
        .routes(routes!(sandboxes::stop_sandbox))
        .routes(routes!(sandboxes::archive_sandbox))
        .routes(routes!(sandboxes::start_sandbox))
        .routes(routes!(sandboxes::set_timeout))
        .routes(routes!(sandboxes::metrics))
        .routes(routes!(sandboxes::console))
        .routes(routes!(sandboxes::events))
        .routes(routes!(exec::exec))
        .routes(routes!(exec::exec_stream))
        .routes(routes!(processes::list_processes))
        .routes(routes!(processes::attach))
        .routes(routes!(processes::signal))
        .routes(routes!(processes::stdin))
        .routes(routes!(files::download, files::upload, files::remove))
        .routes(routes!(files::list))
        .routes(routes!(files::stat))
        .routes(routes!(files::mkdir))
        .routes(routes!(files::move_path))
        .routes(routes!(files::chmod))
        .routes(routes!(files::chown))
        .routes(routes!(snapshots::create_snapshot))
        .routes(routes!(snapshots::list_snapshots))
        .routes(routes!(snapshots::get_snapshot, snapshots::delete_snapshot))
        .routes(routes!(snapshots::fork_sandbox))
        .routes(routes!(
            snapshots::create_checkpoint,
            snapshots::list_checkpoints
        ))
        .routes(routes!(snapshots::rollback))
        .routes(routes!(snapshots::rotate_snapshot_key))
        .routes(routes!(pools::create_pool, pools::list_pools))
        .routes(routes!(
            pools::get_pool,
            pools::update_pool,
            pools::delete_pool
        ))
        .routes(routes!(
            backups::backup_status,
            backups::set_backup_policy,
            backups::clear_backup_policy
        ))
        .routes(routes!(backups::create_backup))
        .routes(routes!(backups::list_backups))
        .routes(routes!(backups::get_backup, backups::delete_backup))
        .routes(routes!(backups::restore_backup))
        .routes(routes!(
            egress::get_egress_policy,
            egress::set_egress_policy
        ))
        .routes(routes!(share::share_root))
        .routes(routes!(secrets::create_secret, secrets::list_secrets))
        .routes(routes!(
            secrets::get_secret,
            secrets::update_secret,
            secrets::delete_secret
        ))
        .routes(routes!(secrets::sandbox_secrets))
        .routes(routes!(volumes::create_volume, volumes::list_volumes))
        .routes(routes!(volumes::get_volume, volumes::delete_volume))
        .routes(routes!(volumes::attach_volume))
        .routes(routes!(volumes::detach_volume))
        .routes(routes!(
            templates::list_templates,
            templates::build_template
        ))
        .routes(routes!(templates::get_template, templates::delete_template))
        .routes(routes!(templates::get_build))
        .routes(routes!(templates::build_logs))
        .routes(routes!(templates::upload_files, templates::files_exist))
        .routes(routes!(capacity::capacity))
        .routes(routes!(keys::list_keys, keys::create_key))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::rotate_key))
        .routes(routes!(edge::expose_port, edge::list_exposures))
        .routes(routes!(edge::unexpose_port))
        .routes(routes!(edge::revoke_token))
        .routes(routes!(edge::list_keys))
        .routes(routes!(edge::rotate_key))
        .routes(routes!(edge::delete_key))
        .split_for_parts();
    let (open, open_doc) = OpenApiRouter::new()
        .routes(routes!(health))
        .routes(routes!(snapshots::jwks))
        .split_for_parts();
    doc.merge(open_doc);
    // The port proxy takes any method and a path with slashes, which the routes! macro cannot
    // express; it is documented by its `#[utoipa::path]`s and registered here by hand.
    // Minting tokens shares its path with the proxy's `{*path}`: other methods on it are the
    // proxy's, so it is registered by hand too.
    let (_, proxy_doc) = OpenApiRouter::<Arc<Engine>>::new()
        .routes(routes!(ports::proxy_root))
        .routes(routes!(ports::proxy))
        .routes(routes!(edge::create_token))
        .split_for_parts();
    doc.merge(proxy_doc);
    // So do the share's `{path}` routes.
    let (_, share_doc) = OpenApiRouter::<Arc<Engine>>::new()
        .routes(routes!(
            share::share_get,
            share::share_put,
            share::share_delete
        ))
        .split_for_parts();
    doc.merge(share_doc);
    let [root, root_slash, rest] = PORT_PROXY_ROUTES;
    let v1 = v1
        .route(root, axum::routing::any(ports::proxy_root))
        .route(root_slash, axum::routing::any(ports::proxy_root))
        .route(rest, axum::routing::any(ports::proxy))
        .route(
            EDGE_TOKEN_ROUTE,
            axum::routing::post(edge::create_token).fallback(ports::proxy_tokens),
        )
        .route(
            share::SHARE_ROUTE,
            axum::routing::get(share::share_get)
                .put(share::share_put)
                .delete(share::share_delete),
        );
    (v1, open, doc)
}

/// The routes registered by hand rather than through `routes!` (every method goes to the port
/// proxy). The OpenAPI checks (`openapi/tests/`) require each to be documented.
pub const PORT_PROXY_ROUTES: [&str; 3] = [
    "/v1/sandboxes/{id}/ports/{port}",
    "/v1/sandboxes/{id}/ports/{port}/",
    "/v1/sandboxes/{id}/ports/{port}/{*path}",
];

/// Minting edge tokens (`POST`; every other method there is the port proxy's, for the
/// service's own `/tokens`).
pub const EDGE_TOKEN_ROUTE: &str = "/v1/sandboxes/{id}/ports/{port}/tokens";

/// The OpenAPI 3.1 document of the API.
pub fn openapi() -> OpenApiDoc {
    build().2
}

/// The API router: `/health` (open) and `/v1/*` (API key required), with typed 404s.
pub fn router(engine: Arc<Engine>) -> Router {
    let (v1, open, _) = build();
    let auth = middleware::from_fn_with_state(engine.clone(), auth::require_key);
    v1.route_layer(auth)
        .merge(open)
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .with_state(engine)
}
