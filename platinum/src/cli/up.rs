//! `platinum up`: everything a fresh machine needs, then the server in the foreground.
//!
//! 1. check host dependencies and install missing ones (Debian, as root; `--no-install` only checks);
//! 2. build the default guest image if it is not cached (progress bars);
//! 3. start the server; print its URL and, on first start, the API key (once);
//! 4. create a demo sandbox and run a command in it (skip with `--no-demo`);
//! 5. serve until Ctrl-C / SIGTERM, then stop every sandbox cleanly.

use anyhow::{Context, Result, bail};
use clap::Args;
use platinum_engine::model::{CreateSandbox, ExecRequest};
use platinum_hostagent::image::{ImageCache, Progress, template};
use platinum_hostagent::vmm::TransportKind;
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::server::{DEFAULT_LISTEN, Server, ServerConfig};
use crate::{agent_binary, deps};

/// Options of `platinum up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// Address to listen on.
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// Guest image cache directory (default ~/.cache/platinum).
    #[arg(long, env = "PLATINUM_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Static guest agent binary (default: found next to this binary).
    #[arg(long)]
    pub agent: Option<PathBuf>,
    /// Only check dependencies; never install.
    #[arg(long)]
    pub no_install: bool,
    /// Do not create the demo sandbox.
    #[arg(long)]
    pub no_demo: bool,
    /// Default guest transport: `virtio-serial` (snapshot-capable) or `vsock`.
    #[arg(long, value_enum, default_value_t = Transport::VirtioSerial)]
    pub transport: Transport,
    /// Host names (or host:port) remote MCP clients use for `/mcp`; loopback is always allowed.
    #[arg(
        long = "mcp-allowed-host",
        value_name = "HOST",
        env = "PLATINUM_MCP_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub mcp_allowed_hosts: Vec<String>,
    /// Base URL clients reach this server at (for preview URLs), e.g. https://sbx.example.com.
    #[arg(long, value_name = "URL", env = "PLATINUM_PUBLIC_URL")]
    pub public_url: Option<String>,
}

/// Transport choice on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Transport {
    /// virtio-serial port.
    VirtioSerial,
    /// vsock through vhost-device-vsock.
    Vsock,
}

/// Runs `platinum up`.
pub async fn run(args: UpArgs, data_dir: PathBuf) -> Result<()> {
    let found = deps::check();
    if !args.no_install {
        deps::install_missing(&found)?;
    }
    let problems = deps::problems(&deps::check());
    if !problems.is_empty() {
        bail!("this host is not ready:\n  - {}", problems.join("\n  - "));
    }
    let agent = agent_binary::locate(args.agent.as_deref()).map_err(anyhow::Error::msg)?;
    let cache_dir = args
        .cache_dir
        .clone()
        .unwrap_or_else(ImageCache::default_root);
    let mut config = ServerConfig::new(data_dir.clone(), agent.clone());
    config.listen = args.listen;
    config.cache_dir = cache_dir.clone();
    config.api_key = std::env::var(crate::client::KEY_ENV).ok();
    config.transport = match args.transport {
        Transport::VirtioSerial => TransportKind::VirtioSerial,
        Transport::Vsock => TransportKind::Vsock,
    };
    config.mcp = platinum_mcp::McpOptions {
        public_url: args.public_url.clone(),
        allowed_hosts: args.mcp_allowed_hosts.clone(),
    };

    let tpl =
        template(&config.engine.default_template).context("default template is not built in")?;
    eprintln!(
        "Preparing the `{}` guest image (cached under {})...",
        tpl.name,
        cache_dir.display()
    );
    ImageCache::new(cache_dir)
        .ensure_image(&tpl, &agent, &Progress::new())
        .await?;

    let server = Server::start(config).await?;
    let info = server.engine.host().info();
    println!("Platinum is serving on {}", server.url());
    println!("  VMM: {:?} ({:?}) - {}", info.vmm, info.accel, info.reason);
    println!("  data: {}", data_dir.display());
    if server.key_generated {
        println!(
            "  API key (shown once; also stored in {}/api-key):",
            data_dir.display()
        );
        println!("    {}", server.api_key);
    } else {
        println!(
            "  API key: from $PLATINUM_API_KEY or {}/api-key",
            data_dir.display()
        );
    }
    if !args.no_demo {
        demo(&server).await;
    }
    wait_for_signal().await;
    eprintln!("Shutting down: stopping sandboxes...");
    server.shutdown().await
}

async fn demo(server: &crate::server::RunningServer) {
    let engine = &server.engine;
    let created = engine
        .create_sandbox(CreateSandbox {
            metadata: [("demo".to_string(), "true".to_string())].into(),
            ..Default::default()
        })
        .await;
    let sandbox = match created {
        Ok(s) => s,
        Err(e) => {
            eprintln!("Demo sandbox failed: {e}");
            return;
        }
    };
    let boot_ms = sandbox.runtime.as_ref().map(|r| r.boot_ms).unwrap_or(0);
    println!(
        "Demo sandbox {} is running (booted in {boot_ms} ms; expires in 5 minutes):",
        sandbox.id
    );
    let req = ExecRequest::shell("uname -sr; python3 --version; node --version");
    match engine.exec(&sandbox.id, req).await {
        Ok(r) => print!("{}", indent(&r.stdout)),
        Err(e) => eprintln!("  exec failed: {e}"),
    }
    println!("Try:");
    println!(
        "  platinum sandbox exec {} -- python3 -c 'print(1+1)'",
        sandbox.id
    );
    println!(
        "  curl -s -H \"Authorization: Bearer $PLATINUM_API_KEY\" {}/v1/sandboxes/{}/exec -d '{{\"command\":\"ls -la\"}}' -H 'Content-Type: application/json'",
        server.url(),
        sandbox.id
    );
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("    {l}\n")).collect()
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
