//! `platinum mcp`: Platinum as an MCP server over stdio, and `platinum mcp install` for clients.
//!
//! Stdio clients (Claude Code, Cursor, Windsurf) start `platinum mcp` themselves. It then:
//! - relays to the running server when one answers at the server URL (`--url`, `PLATINUM_URL`,
//!   default `http://127.0.0.1:7070`): messages go unchanged to its `/mcp` endpoint with the API
//!   key (`PLATINUM_API_KEY` or the server's key file), so the sandboxes are the server's and
//!   several clients share them;
//! - otherwise starts an embedded server on that address (same data directory as `platinum up`)
//!   and serves the client from its engine directly. The next `platinum mcp` finds it and relays.
//!   When the client disconnects (or on Ctrl-C / SIGTERM) its sandboxes are stopped, disks kept.
//!
//! stdout is the protocol channel: everything else goes to stderr.

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand, ValueEnum};
use platinum_mcp::install::{self, Change, Client, Connection, Scope};
use platinum_mcp::{McpOptions, PlatinumMcp};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::server::{Server, ServerConfig};

/// Options of `platinum mcp`.
#[derive(Debug, Args)]
pub struct McpArgs {
    /// Install the server into a client's configuration instead of serving.
    #[command(subcommand)]
    pub command: Option<McpCommand>,
    /// Embedded server only: run sandboxes without a network device.
    #[arg(long)]
    pub no_network: bool,
}

/// `platinum mcp` subcommands.
#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// Add Platinum to Claude Code, Cursor or Windsurf (merges into the client's config file).
    Install(InstallArgs),
}

/// Options of `platinum mcp install`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The client.
    #[arg(value_enum)]
    pub client: ClientArg,
    /// Connect over Streamable HTTP to this endpoint (e.g. http://127.0.0.1:7070/mcp) instead of
    /// starting `platinum mcp`; the key is read from $PLATINUM_API_KEY by the client.
    #[arg(long, value_name = "URL")]
    pub http: Option<String>,
    /// `user` (every project) or `project` (a file in the current directory).
    #[arg(long, value_enum, default_value_t = ScopeArg::User)]
    pub scope: ScopeArg,
    /// Print the configuration instead of writing it.
    #[arg(long)]
    pub print: bool,
    /// Name of the server in the client.
    #[arg(long, default_value = "platinum")]
    pub name: String,
}

/// A client on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ClientArg {
    /// Claude Code.
    Claude,
    /// Cursor.
    Cursor,
    /// Windsurf.
    Windsurf,
}

/// A scope on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ScopeArg {
    /// For the current user.
    User,
    /// For the project in the current directory.
    Project,
}

/// Runs `platinum mcp`.
pub async fn run(args: McpArgs, url: Option<String>, data_dir: &Path) -> Result<i32> {
    match args.command {
        Some(McpCommand::Install(install)) => run_install(install, url),
        None => serve(url, data_dir, args.no_network).await.map(|_| 0),
    }
}

/// Whether a Platinum server answers at `base`.
async fn server_answers(base: &str) -> bool {
    let Ok(http) = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
    else {
        return false;
    };
    match http.get(format!("{base}/health")).send().await {
        Ok(r) => r.status().is_success(),
        Err(_) => false,
    }
}

async fn serve(url: Option<String>, data_dir: &Path, no_network: bool) -> Result<()> {
    let base = crate::client::base_url(url)
        .trim_end_matches('/')
        .to_string();
    if server_answers(&base).await {
        let key = crate::client::api_key(data_dir)?;
        platinum_mcp::bridge::run(&base, &key).await?;
        return Ok(());
    }
    let listen: SocketAddr = base
        .strip_prefix("http://")
        .and_then(|a| a.parse().ok())
        .with_context(|| {
            format!("no server answers at {base}, and an embedded one can only listen on an http://IP:PORT address")
        })?;
    let agent = crate::agent_binary::locate(None).map_err(anyhow::Error::msg)?;
    let mut config = ServerConfig::new(data_dir.to_path_buf(), agent);
    config.listen = listen;
    config.api_key = std::env::var(crate::client::KEY_ENV).ok();
    if let Some(cache) = std::env::var_os("PLATINUM_CACHE_DIR") {
        config.cache_dir = cache.into();
    }
    if no_network {
        config.network = None;
    }
    let server = Server::start(config).await.with_context(|| {
        format!("no server answers at {base}, and starting an embedded one failed")
    })?;
    eprintln!(
        "platinum mcp: no server answered at {base}; serving from an embedded one (data in {})",
        data_dir.display()
    );
    let handler = PlatinumMcp::new(
        server.engine.clone(),
        McpOptions {
            public_url: Some(server.url()),
            ..Default::default()
        },
    );
    let served = tokio::select! {
        r = handler.serve_stdio() => r.context("MCP over stdio"),
        _ = super::up::wait_for_signal() => Ok(()),
    };
    let stopped = server.shutdown().await;
    served.and(stopped)
}

fn run_install(args: InstallArgs, url: Option<String>) -> Result<i32> {
    let client = match args.client {
        ClientArg::Claude => Client::Claude,
        ClientArg::Cursor => Client::Cursor,
        ClientArg::Windsurf => Client::Windsurf,
    };
    let scope = match args.scope {
        ScopeArg::User => Scope::User,
        ScopeArg::Project => Scope::Project,
    };
    let connection = match args.http {
        Some(url) => {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                bail!("--http takes the server's MCP endpoint URL, e.g. http://127.0.0.1:7070/mcp");
            }
            Connection::Http { url }
        }
        None => {
            let exe = std::env::current_exe().context("finding the platinum binary")?;
            let exe = exe.canonicalize().unwrap_or(exe);
            Connection::Stdio {
                command: exe.display().to_string(),
                env: url
                    .map(|u| (crate::client::URL_ENV.to_string(), u))
                    .into_iter()
                    .collect(),
            }
        }
    };
    let entry = install::entry(client, &connection);
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let path = install::config_path(client, scope, Path::new(&home), &cwd)?;
    if args.print {
        let snippet = serde_json::json!({ "mcpServers": { args.name.as_str(): entry } });
        println!("{}", serde_json::to_string_pretty(&snippet)?);
        eprintln!("(goes into {})", path.display());
        if client == Client::Claude {
            eprintln!(
                "or: {}",
                install::claude_command(&args.name, &connection, scope)
            );
        }
        if client == Client::Cursor {
            eprintln!(
                "or open: {}",
                install::cursor_deeplink(&args.name, &connection)
            );
        }
        return Ok(0);
    }
    let change = install::install(&path, &args.name, entry)?;
    let what = match change {
        Change::Added => "added to",
        Change::Replaced => "updated in",
        Change::Unchanged => "already in",
    };
    println!("MCP server `{}` {what} {}", args.name, path.display());
    if matches!(connection, Connection::Http { .. }) {
        println!("The client sends $PLATINUM_API_KEY; set it where the client runs.");
    }
    match client {
        Client::Claude => println!("Check with: claude mcp list"),
        Client::Cursor => println!("Cursor picks it up on its next start (Settings > MCP)."),
        Client::Windsurf => println!("In Windsurf, press refresh under Cascade > MCP servers."),
    }
    Ok(0)
}
