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
use platinum_hostagent::host::memory::MemoryBacking;
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
    /// Keep a warm pool of TEMPLATE at the default sandbox size: SIZE running sandboxes that
    /// creates claim without starting a VM (`base=4`). Repeat or separate with commas; pools
    /// are also managed at runtime under `/v1/pools`.
    #[arg(
        long = "warm-pool",
        value_name = "TEMPLATE=SIZE",
        env = "PLATINUM_WARM_POOLS",
        value_delimiter = ',',
        value_parser = parse_warm_pool
    )]
    pub warm_pools: Vec<(String, u32)>,
    /// Where guest RAM lives: `auto` (a file in the sandbox's directory where the data
    /// directory reflinks and the VMM is QEMU, so snapshots clone RAM in place), `anonymous`
    /// or `file`.
    #[arg(long, value_enum, default_value_t = Memory::Auto, env = "PLATINUM_MEMORY_BACKING")]
    pub memory_backing: Memory,
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
    /// Name of the sandbox bridge (default pt-br0); two servers on one host need two.
    #[arg(long, value_name = "NAME", env = "PLATINUM_BRIDGE")]
    pub bridge: Option<String>,
    /// Sandbox subnet, ADDRESS/PREFIX (default 10.42.0.0/16).
    #[arg(long, value_name = "CIDR", env = "PLATINUM_SUBNET")]
    pub subnet: Option<String>,
    /// A private, CGNAT or link-local IPv4 network (CIDR) sandboxes may reach; by default they
    /// reach none but their DNS resolvers. Repeat or separate with commas.
    #[arg(
        long = "allow-private-net",
        value_name = "CIDR",
        env = "PLATINUM_ALLOW_PRIVATE_NETS",
        value_delimiter = ','
    )]
    pub allow_private_nets: Vec<platinum_hostagent::net::Ipv4Net>,
    /// A resolver (`IP` or `IP:PORT`) the host asks for sandboxes whose egress policy names
    /// domains; by default the host's own (`/etc/resolv.conf`). Repeat or separate with commas.
    #[arg(
        long = "upstream-dns",
        value_name = "IP[:PORT]",
        env = "PLATINUM_UPSTREAM_DNS",
        value_delimiter = ',',
        value_parser = parse_resolver
    )]
    pub upstream_dns: Vec<std::net::SocketAddr>,
    /// A registry (`host[:port]`) template builds pull images from over plain HTTP instead of
    /// HTTPS, e.g. a registry on this host. Repeat or separate with commas.
    #[arg(
        long = "insecure-registry",
        value_name = "HOST[:PORT]",
        env = "PLATINUM_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Where archived sandboxes go.
    #[command(flatten)]
    pub archive: super::archive_store::ArchiveStoreArgs,
    /// Size of each sandbox's host share (`/mnt/dnah-share`), MiB (16-1048576; sparse on the
    /// host: it takes what is stored).
    #[arg(long, value_name = "MIB", env = "PLATINUM_SHARE_MIB", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(16..=1_048_576))]
    pub share_mib: u64,
    /// A PEM file of CA certificates the egress secret broker trusts for HTTPS servers besides
    /// the host's trust store (servers on a private network with their own CA).
    #[arg(long, value_name = "PEM", env = "PLATINUM_EGRESS_EXTRA_CA")]
    pub egress_extra_ca: Option<std::path::PathBuf>,
}

/// Transport choice on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Transport {
    /// virtio-serial port.
    VirtioSerial,
    /// vsock through vhost-device-vsock.
    Vsock,
}

/// `TEMPLATE=SIZE` of `--warm-pool`.
fn parse_warm_pool(text: &str) -> std::result::Result<(String, u32), String> {
    let (template, size) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected TEMPLATE=SIZE, e.g. base=4"))?;
    let size = size
        .trim()
        .parse::<u32>()
        .map_err(|e| format!("{text:?}: size: {e}"))?;
    let template = template.trim();
    if template.is_empty() {
        return Err(format!("{text:?}: no template"));
    }
    Ok((template.to_string(), size))
}

/// Guest RAM choice on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Memory {
    /// A file where the data directory reflinks (QEMU), else anonymous.
    Auto,
    /// Anonymous shared memory; snapshots stream the RAM.
    Anonymous,
    /// A file in the sandbox's directory (QEMU).
    File,
}

/// Runs `platinum up`. Ctrl-C, SIGTERM or SIGHUP at any stage ends it cleanly: before the server
/// is up nothing runs yet; after, the demo sandbox (booting or not) and every other sandbox are
/// stopped before the process exits.
pub async fn run(args: UpArgs, data_dir: PathBuf) -> Result<()> {
    // Handlers first: from here on no signal kills the process with VMs still running.
    let mut signals = Signals::new()?;
    let server = tokio::select! {
        started = start(&args, &data_dir) => started?,
        sig = signals.recv() => {
            eprintln!("{sig}: stopped before the server was up (no sandbox was started).");
            return Ok(());
        }
    };
    let info = server.engine.host_info();
    println!("Platinum is serving on {}", server.url());
    println!("  VMM: {} ({}) - {}", info.vmm, info.accel, info.reason);
    println!("  guest RAM: {}", info.memory);
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
    let sig = if args.no_demo {
        signals.recv().await
    } else {
        tokio::select! {
            _ = demo(&server) => signals.recv().await,
            sig = signals.recv() => sig,
        }
    };
    eprintln!("{sig}: shutting down, stopping sandboxes...");
    server.shutdown().await
}

/// Everything before serving: host dependencies, the default guest image, the server.
async fn start(args: &UpArgs, data_dir: &std::path::Path) -> Result<crate::server::RunningServer> {
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
    let mut config = ServerConfig::new(data_dir.to_path_buf(), agent.clone());
    config.listen = args.listen;
    config.cache_dir = cache_dir.clone();
    config.api_key = std::env::var(crate::client::KEY_ENV).ok();
    config.transport = match args.transport {
        Transport::VirtioSerial => TransportKind::VirtioSerial,
        Transport::Vsock => TransportKind::Vsock,
    };
    config.warm_pools = args.warm_pools.clone();
    config.insecure_registries = args.insecure_registries.clone();
    config.archive = args.archive.config()?;
    config.share_mib = args.share_mib;
    config.egress_extra_ca = args.egress_extra_ca.clone();
    config.memory = match args.memory_backing {
        Memory::Auto => MemoryBacking::Auto,
        Memory::Anonymous => MemoryBacking::Anonymous,
        Memory::File => MemoryBacking::File,
    };
    config.mcp = platinum_mcp::McpOptions {
        public_url: args.public_url.clone(),
        allowed_hosts: args.mcp_allowed_hosts.clone(),
    };
    if let Some(network) = config.network.as_mut() {
        if let Some(bridge) = &args.bridge {
            network.bridge = bridge.clone();
        }
        if let Some(subnet) = &args.subnet {
            let (addr, prefix) = parse_subnet(subnet)?;
            network.subnet = addr;
            network.prefix = prefix;
        }
        network.allow_private = args.allow_private_nets.clone();
        network.upstream_dns = args.upstream_dns.clone();
    }

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
    Server::start(config).await
}

/// Reads `10.42.0.0/16`: a network address and a prefix of 8..=24 bits (room for sandboxes).
/// `--upstream-dns`: `IP` (port 53) or `IP:PORT`.
fn parse_resolver(text: &str) -> std::result::Result<std::net::SocketAddr, String> {
    let text = text.trim();
    text.parse::<std::net::SocketAddr>()
        .or_else(|_| {
            text.parse::<std::net::IpAddr>()
                .map(|ip| std::net::SocketAddr::new(ip, 53))
        })
        .map_err(|_| format!("{text:?} is not an IP address or IP:PORT"))
}

fn parse_subnet(text: &str) -> Result<(std::net::Ipv4Addr, u8)> {
    let (addr, prefix) = text
        .split_once('/')
        .with_context(|| format!("--subnet {text:?}: expected ADDRESS/PREFIX"))?;
    let addr: std::net::Ipv4Addr = addr
        .parse()
        .with_context(|| format!("--subnet {text:?}: bad address"))?;
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (8..=24).contains(p))
        .with_context(|| format!("--subnet {text:?}: the prefix must be 8..=24"))?;
    let mask = u32::MAX << (32 - prefix);
    if u32::from(addr) & !mask != 0 {
        bail!("--subnet {text:?}: not a network address (host bits are set)");
    }
    Ok((addr, prefix))
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

/// The signals that end the server: SIGINT (Ctrl-C), SIGTERM and SIGHUP. Creating it installs
/// the handlers, so from then on none of them kills the process outright.
pub(crate) struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers.
    pub(crate) fn new() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
        })
    }

    /// The next signal's name.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// Resolves on SIGINT, SIGTERM or SIGHUP.
pub(crate) async fn wait_for_signal() {
    match Signals::new() {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_network_addresses_with_room() {
        assert_eq!(
            parse_subnet("10.77.0.0/16").unwrap(),
            ("10.77.0.0".parse().unwrap(), 16)
        );
        assert!(parse_subnet("10.77.0.1/16").is_err());
        assert!(parse_subnet("10.77.0.0/30").is_err());
        assert!(parse_subnet("10.77.0.0").is_err());
        assert!(parse_subnet("nope/16").is_err());
    }

    #[test]
    fn warm_pools_are_template_equals_size() {
        assert_eq!(parse_warm_pool("base=4").unwrap(), ("base".into(), 4));
        assert_eq!(
            parse_warm_pool(" code-interpreter-v1 = 2").unwrap(),
            ("code-interpreter-v1".into(), 2)
        );
        for bad in ["base", "base=", "=3", "base=-1", "base=x"] {
            assert!(parse_warm_pool(bad).is_err(), "{bad}");
        }
    }
}
