//! Command-line interface: argument definitions and dispatch. Each subcommand lives in its own
//! module; every one that prints data takes `--json` for scripts.

pub mod archive_store;
pub mod doctor;
pub mod image;
pub mod keys;
pub mod mcp;
pub mod sandbox;
pub mod template;
pub mod up;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Environment variable overriding the data directory.
pub const DATA_DIR_ENV: &str = "PLATINUM_DATA_DIR";

/// `platinum --version`: the crate version and the commit it was built from.
const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("PLATINUM_COMMIT"),
    ")"
);

/// Hardware-isolated sandboxes for AI agents.
#[derive(Debug, Parser)]
#[command(name = "platinum", version = VERSION, about, propagate_version = true)]
pub struct Cli {
    /// Data directory (state, sandboxes, API key).
    #[arg(long, global = true, env = DATA_DIR_ENV)]
    pub data_dir: Option<PathBuf>,
    /// Server URL for client commands (default http://127.0.0.1:7070).
    #[arg(long, global = true, env = crate::client::URL_ENV)]
    pub url: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Set up this machine (dependencies, guest image) and run the server in the foreground.
    Up(Box<up::UpArgs>),
    /// Check this host: dependencies, KVM or TCG, images, agent binary.
    Doctor(doctor::DoctorArgs),
    /// Build and inspect guest images.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Create, list, use and delete sandboxes on a running server.
    #[command(subcommand)]
    Sandbox(sandbox::SandboxCommand),
    /// MCP server over stdio for agent clients; `mcp install claude|cursor|windsurf` sets them up.
    Mcp(mcp::McpArgs),
    /// List, create (also in E2B's form), revoke and rotate API keys on a running server.
    #[command(subcommand)]
    Keys(keys::KeysCommand),
    /// Build custom templates from a Dockerfile, list, follow and delete them on a running
    /// server.
    #[command(subcommand)]
    Template(template::TemplateCommand),
}

/// The default data directory: `/var/lib/platinum` for root, else `~/.local/share/platinum`.
pub fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/platinum");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".local/share/platinum"))
        .unwrap_or_else(|| PathBuf::from("/var/lib/platinum"))
}

/// Runs the parsed command; the return value is the process exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let data_dir = cli.data_dir.clone().unwrap_or_else(default_data_dir);
    match cli.command {
        Command::Up(args) => up::run(*args, data_dir).await.map(|_| 0),
        Command::Doctor(args) => doctor::run(args, &data_dir).await,
        Command::Image(cmd) => image::run(cmd).await.map(|_| 0),
        Command::Sandbox(cmd) => sandbox::run(cmd, cli.url, &data_dir).await,
        Command::Mcp(args) => mcp::run(args, cli.url, &data_dir).await,
        Command::Keys(cmd) => keys::run(cmd, cli.url, &data_dir).await,
        Command::Template(cmd) => template::run(cmd, cli.url, &data_dir).await,
    }
}
