//! Drop-in server for the official Daytona SDKs (Python `daytona`, TypeScript `@daytonaio/sdk`),
//! unmodified: a team points `DAYTONA_API_URL` at `http://<platinum>/api` and its code runs on
//! Platinum microVMs.
//!
//! This crate is a front end. It translates Daytona's wire shapes into calls of
//! [`platinum_engine::Engine`] and renders the results; it never talks to VMs or the store. The
//! wire rules come from `shared/specs/daytona-compat.md` (exact status codes, required fields,
//! multipart and WebSocket formats). Every engine error becomes a Daytona error in one place,
//! [`error`].
//!
//! Routes (all on the server's one port):
//! - `/api/...`: the control plane ([`api`]): sandboxes, labels, lifecycle intervals, preview
//!   links, snapshots (Platinum templates, built from Daytona `Image`s on request), sandboxes
//!   from images, and volumes (named persistent volumes, mounted at sandbox create).
//! - `/toolbox/{sandboxId}/...`: the in-sandbox daemon ([`toolbox`]): process execute and
//!   code-run, background sessions, files, git, PTY, directories, metrics.
//! - `/preview/{sandboxId}/{port}/...` and `/preview/s/{token}/...`: preview links to ports
//!   served inside a sandbox ([`api::preview`]).
//!
//! Authentication is the Platinum API key as `Authorization: Bearer` (Daytona's API key);
//! WebSocket upgrades from browser runtimes may use the sandbox's toolbox preview token instead
//! ([`auth`]). Token keys live in `<data>/daytona-secret` ([`DaytonaConfig::from_data_dir`]), so
//! preview links and signed URLs survive a restart.

pub mod api;
pub mod auth;
pub mod error;
pub mod run;
pub mod tokens;
pub mod toolbox;

use axum::Router;
use axum::middleware;
use platinum_engine::Engine;
use std::sync::Arc;

/// Settings of the Daytona front end.
#[derive(Clone)]
pub struct DaytonaConfig {
    /// Base URL clients reach this server at (e.g. `https://sandboxes.example.com`), used in
    /// `toolboxProxyUrl` and preview links. `None`: taken from each request's `Host` header.
    pub public_url: Option<String>,
    /// Region name reported as every sandbox's `target`.
    pub target: String,
    /// Key for preview tokens, signed preview links and file-URL signing keys. Tokens made with
    /// one key stop working when it changes ([`DaytonaConfig::from_data_dir`] keeps it across
    /// restarts; the `Default` is random).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for DaytonaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DaytonaConfig")
            .field("public_url", &self.public_url)
            .field("target", &self.target)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Default for DaytonaConfig {
    /// Host-derived URLs, target `local`, a random secret.
    fn default() -> Self {
        DaytonaConfig {
            public_url: None,
            target: "local".into(),
            secret: tokens::random_secret(),
        }
    }
}

/// File in the data directory holding the key of Daytona tokens.
const SECRET_FILE: &str = "daytona-secret";

impl DaytonaConfig {
    /// Host-derived URLs, target `local`, and the token key kept in `<data_dir>/daytona-secret`
    /// (created owner-only on first use), so preview links and signing keys handed out stay
    /// valid across restarts.
    pub fn from_data_dir(data_dir: &std::path::Path) -> std::io::Result<Self> {
        Ok(DaytonaConfig {
            secret: platinum_engine::secrets::load_or_create_secret(
                &data_dir.join(SECRET_FILE),
                "the Daytona token key",
            )?,
            ..DaytonaConfig::default()
        })
    }
}

/// Shared state of every handler.
#[derive(Clone)]
pub struct Ctx(Arc<Inner>);

/// What [`Ctx`] holds.
pub struct Inner {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Settings.
    pub config: DaytonaConfig,
    /// Token signing and checking (revocations are the engine's).
    pub tokens: tokens::Tokens,
    /// PTY sessions opened through the toolbox.
    pub ptys: toolbox::pty::PtyRegistry,
    /// Snapshot and image builds this front end started.
    pub builds: api::builds::Builds,
}

impl std::ops::Deref for Ctx {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The Daytona router: `/api/...`, `/toolbox/{sandboxId}/...` and `/preview/...`. It sets no
/// fallback (unknown paths under its prefixes get Daytona-shaped 404s from its own catch-alls),
/// so it merges into the server's one router.
pub fn router(engine: Arc<Engine>, config: DaytonaConfig) -> Router {
    let ctx = Ctx(Arc::new(Inner {
        tokens: tokens::Tokens::new(config.secret.clone()),
        engine,
        config,
        ptys: Default::default(),
        builds: Default::default(),
    }));
    let api = api::routes().route_layer(middleware::from_fn_with_state(
        ctx.clone(),
        auth::require_api_key,
    ));
    let toolbox = toolbox::routes().route_layer(middleware::from_fn_with_state(
        ctx.clone(),
        auth::toolbox_access,
    ));
    let preview = api::preview::routes();
    api.merge(toolbox)
        .merge(preview)
        .layer(middleware::from_fn(error::with_request_info))
        .with_state(ctx)
}
