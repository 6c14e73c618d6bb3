//! Platinum's MCP server: sandboxes as MCP tools and resources (rmcp).
//!
//! A front end like `rest-api/`: every tool parses its arguments, calls one engine command on an
//! `Arc<Engine>` and renders the reply; nothing here talks to VMs or the guest directly.
//!
//! - [`tools`]: the tools, their typed input schemas and structured outputs.
//! - [`run`]: `run_command` with live output as progress notifications and cancellation.
//! - [`snapshots`]: snapshots, restore, fork, checkpoints and rollback.
//! - [`code`]: `run_code`, stateful Python/JavaScript contexts with rich results (images).
//! - [`content`]: how file bytes become MCP content (text, image blocks, embedded blobs).
//! - [`resources`]: `platinum://` resources and resource templates.
//! - [`error`]: engine failures as tool results the model can act on.
//! - [`bridge`]: stdio relayed to a running server's `/mcp` endpoint (`platinum mcp`).
//! - [`install`]: client configuration for Claude Code, Cursor and Windsurf.
//!
//! Transports: [`PlatinumMcp::serve_stdio`] serves one client on stdin/stdout (logs must go to
//! stderr); [`router`] mounts Streamable HTTP at `/mcp` (the server puts it behind the API-key
//! check). One handler type serves both.

pub mod bridge;
pub mod code;
pub mod content;
pub mod error;
pub mod install;
pub mod network;
pub mod resources;
pub mod run;
pub mod snapshots;
pub mod tools;
pub mod volumes;

use platinum_engine::Engine;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::model::{
    Implementation, ListResourceTemplatesResult, ListResourcesResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt, tool_handler};
use std::sync::Arc;

/// What the server tells every client on connect: the workflow in a few lines.
pub const INSTRUCTIONS: &str = "Platinum runs each sandbox as its own microVM (Linux, Debian, \
python3, node, git; user `user`, passwordless sudo, home /home/user). Start with create_sandbox \
(boots in seconds) and pass its id to the other tools. Relative paths are in /home/user. \
run_command streams output as progress notifications; cancelling the call kills the command. \
Sandboxes are deleted after timeout_secs (default 300); call kill_sandbox when done.";

/// Settings of the MCP front end.
#[derive(Debug, Clone, Default)]
pub struct McpOptions {
    /// Base URL clients use to reach this server (for `preview_url`), e.g.
    /// `https://sandboxes.example.com`. Unset: taken from the HTTP request's `Host` header, or
    /// the server's own listen address.
    pub public_url: Option<String>,
    /// `Host` header values accepted on `/mcp` besides loopback (DNS-rebinding protection).
    /// Name every host name or `host:port` remote clients use.
    pub allowed_hosts: Vec<String>,
}

/// The MCP handler: tools and resources over one engine. Cheap to clone.
#[derive(Clone)]
pub struct PlatinumMcp {
    engine: Arc<Engine>,
    options: Arc<McpOptions>,
    tool_router: ToolRouter<Self>,
}

impl PlatinumMcp {
    /// A handler over `engine`.
    pub fn new(engine: Arc<Engine>, options: McpOptions) -> Self {
        PlatinumMcp {
            engine,
            options: Arc::new(options),
            tool_router: Self::all_tools(),
        }
    }

    /// Every tool this server offers, as `tools/list` returns them (for generated docs).
    pub fn tools() -> Vec<Tool> {
        Self::all_tools().list_all()
    }

    fn all_tools() -> ToolRouter<Self> {
        Self::tool_router()
            + Self::snapshot_router()
            + Self::volume_router()
            + Self::network_router()
    }

    /// Serves one client on stdin/stdout until it disconnects.
    pub async fn serve_stdio(self) -> Result<(), std::io::Error> {
        let running = self
            .serve(rmcp::transport::stdio())
            .await
            .map_err(std::io::Error::other)?;
        running.waiting().await.map_err(std::io::Error::other)?;
        Ok(())
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for PlatinumMcp {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_resources()
                .build(),
        )
        .with_server_info(Implementation::new("platinum", env!("CARGO_PKG_VERSION")))
        .with_instructions(INSTRUCTIONS)
    }

    async fn list_resources(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        resources::list(&self.engine).await
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        Ok(ListResourceTemplatesResult::with_all_items(
            resources::templates(),
        ))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _ctx: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        resources::read(&self.engine, &request.uri)
            .await
            .map(Into::into)
    }
}

/// The Streamable HTTP service for `/mcp`. Requests must already be authenticated (the server
/// mounts it behind its API-key middleware); `Host` must be loopback or in
/// [`McpOptions::allowed_hosts`].
pub fn http_service(
    engine: Arc<Engine>,
    options: McpOptions,
) -> StreamableHttpService<PlatinumMcp, LocalSessionManager> {
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"]
        .into_iter()
        .map(String::from)
        .collect();
    hosts.extend(options.allowed_hosts.iter().cloned());
    let config = StreamableHttpServerConfig::default().with_allowed_hosts(hosts);
    let handler = PlatinumMcp::new(engine, options);
    StreamableHttpService::new(
        move || Ok(handler.clone()),
        LocalSessionManager::default().into(),
        config,
    )
}

/// An axum router with the MCP endpoint at `/mcp` (no authentication of its own).
pub fn router(engine: Arc<Engine>, options: McpOptions) -> axum::Router {
    axum::Router::new().nest_service("/mcp", http_service(engine, options))
}
