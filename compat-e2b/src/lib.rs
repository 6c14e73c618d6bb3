//! Drop-in server for the official E2B SDKs (Python `e2b` / `e2b-code-interpreter`, JS `e2b` /
//! `@e2b/code-interpreter`), unmodified: a team sets `E2B_API_URL` and `E2B_SANDBOX_URL` to this
//! server (or `E2B_DOMAIN` with wildcard DNS) and its code runs on Platinum microVMs.
//!
//! This crate is a front end: it turns E2B's wire shapes into calls of
//! [`platinum_engine::Engine`] and renders the results; it never talks to VMs or the store. The
//! wire rules are in `shared/specs/e2b-compat.md`. Every engine error becomes an E2B error in one
//! place, [`error`].
//!
//! Everything is served on the server's one port:
//! - The control plane ([`control`]): `/sandboxes`, `/v2/sandboxes`, ... behind `X-API-KEY`;
//!   snapshots (`/sandboxes/{id}/snapshots`, `/snapshots`, `DELETE /templates/{id}`) and fork
//!   ([`snapshots`]); templates and their builds (`/v3/templates`, `/templates/...`,
//!   [`templates`]), whose file uploads go to a signed URL that needs no API key; volumes
//!   (`/volumes`, and `volumeMounts` at create: [`volumes`]) and their files
//!   (`/volumecontent/{id}/...`, [`volume_content`], behind the volume's token or an API key);
//!   secrets (`/secrets`: [`secrets`]).
//! - Sandbox traffic ([`routing`]): a request carrying `E2b-Sandbox-Id` + `E2b-Sandbox-Port`, or
//!   whose Host is `{port}-{sandboxId}.{domain}`, goes to that sandbox's port: 49983 is envd
//!   ([`envd`]: Connect RPCs for processes and files, `/files`, `/health`), 49999 the code
//!   interpreter ([`interpreter`]), any other port is proxied to the service listening inside the
//!   sandbox, given the sandbox's traffic or envd access token unless it was created with
//!   `network.allowPublicTraffic: true` ([`control`]). Everything else falls through to the rest
//!   of the server.
//!
//! E2B-only state is derived, not stored: the envd access and traffic access tokens of a sandbox
//! are HMACs of its id under a key kept in the data directory ([`auth`]), so tokens survive
//! restarts (so do template upload URLs, signed the same way); the public flag is a hidden label;
//! `autoPause` is the engine's `on_timeout`, `endAt` its `expires_at`. The one exception is a
//! template build asked for but not yet started (E2B hands out its id before its steps come),
//! kept in memory for an hour ([`templates::requests`]).

pub mod auth;
pub mod connect;
pub mod control;
pub mod envd;
pub mod error;
pub mod interpreter;
pub mod network;
pub mod routing;
pub mod secrets;
pub mod snapshots;
pub mod templates;
pub mod volume_content;
pub mod volumes;

use axum::Router;
use platinum_engine::Engine;
use std::path::Path;
use std::sync::Arc;

/// The envd version reported to the SDKs; the SDKs switch features on by it
/// (`e2b/envd/versions.py`). 0.5.7 and below are all implemented: stdin control (0.3.0), no
/// default-user header (0.4.0), `CloseStdin` (0.5.2), octet-stream and gzip uploads (0.5.7),
/// file metadata as `user.e2b.*` extended attributes (0.6.2), the entry in watch events (0.6.3)
/// and `allow_network_mounts` on watches (0.6.4).
pub const ENVD_VERSION: &str = "0.6.4";

/// envd's port inside a sandbox.
pub const ENVD_PORT: u16 = 49983;
/// The code interpreter's port inside a sandbox.
pub const INTERPRETER_PORT: u16 = 49999;

/// File in the data directory holding the key of envd access tokens.
const SECRET_FILE: &str = "e2b-secret";

/// Settings of the E2B front end.
#[derive(Clone)]
pub struct E2bConfig {
    /// Domain reported as each sandbox's `domain` (for `{port}-{id}.{domain}` URLs); `None`
    /// reports `null`, which SDKs configured with `E2B_SANDBOX_URL` do not need.
    pub domain: Option<String>,
    /// Key of the envd access tokens (and so of signed file URLs).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for E2bConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("E2bConfig")
            .field("domain", &self.domain)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl E2bConfig {
    /// Settings whose token key lives in `<data_dir>/e2b-secret` (created, mode 0600, on first
    /// use), so tokens handed out stay valid across restarts.
    pub fn from_data_dir(data_dir: &Path, domain: Option<String>) -> std::io::Result<Self> {
        Ok(E2bConfig {
            domain,
            secret: platinum_engine::secrets::load_or_create_secret(
                &data_dir.join(SECRET_FILE),
                "the E2B token key",
            )?,
        })
    }
}

/// Shared state of every handler.
pub struct E2b {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Settings.
    pub config: E2bConfig,
    /// Polled directory watchers (`CreateWatcher`).
    pub watchers: envd::filesystem::Watchers,
    /// How processes were started through envd (their argv and envs, for `List`).
    pub processes: envd::process::Started,
    /// Template builds asked for and not yet forgotten ([`templates::requests`]).
    pub template_builds: templates::requests::Requests,
}

/// [`E2b`] as handlers hold it.
pub type Ctx = Arc<E2b>;

/// Adds the E2B front end to the server's router: the control-plane routes, and in front of
/// everything the dispatch of sandbox traffic (requests for a sandbox's ports never reach
/// `app`'s own routes; `/health` without routing headers stays the server's).
pub fn install(app: Router, engine: Arc<Engine>, config: E2bConfig) -> Router {
    let ctx: Ctx = Arc::new(E2b {
        engine,
        config,
        watchers: Default::default(),
        processes: Default::default(),
        template_builds: Default::default(),
    });
    app.merge(control::router(ctx.clone()))
        .merge(templates::public_routes(ctx.clone()))
        .layer(axum::middleware::from_fn_with_state(ctx, routing::dispatch))
}
