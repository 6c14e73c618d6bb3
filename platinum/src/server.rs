//! The server: store, host agent, engine and HTTP front ends, assembled and run.
//!
//! [`Server::start`] returns once the server answers on its address, so callers (the CLI's
//! `up`, tests, benchmarks) never sleep waiting for it. [`RunningServer::shutdown`] stops
//! accepting requests, stops every VM (sandboxes become `stopped`, disks kept) and waits.

use anyhow::{Context, Result};
use platinum_engine::store::sqlite::SqliteStore;
use platinum_engine::{Engine, EngineConfig};
use platinum_hostagent::accel::AccelChoice;
use platinum_hostagent::archive::ObjectStoreConfig;
use platinum_hostagent::host::HostAgent;
use platinum_hostagent::host::local::{LocalHost, LocalHostConfig};
use platinum_hostagent::host::memory::MemoryBacking;
use platinum_hostagent::image::ImageCache;
use platinum_hostagent::net::{Network, NetworkConfig};
use platinum_hostagent::vmm::{TransportKind, VmmKind, select};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7070";

/// Everything a server needs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (port 0 picks a free one).
    pub listen: SocketAddr,
    /// State, sandboxes and the API key file.
    pub data_dir: PathBuf,
    /// Guest image cache.
    pub cache_dir: PathBuf,
    /// Static guest agent binary.
    pub agent_binary: PathBuf,
    /// API key from the environment (`PLATINUM_API_KEY`).
    pub api_key: Option<String>,
    /// Engine defaults and limits.
    pub engine: EngineConfig,
    /// Default guest transport.
    pub transport: TransportKind,
    /// Where guest RAM lives.
    pub memory: MemoryBacking,
    /// Accelerator override (else detected).
    pub accel: Option<AccelChoice>,
    /// Sandbox network (bridge, subnet, private networks allowed); `None` runs sandboxes without
    /// a network device.
    pub network: Option<NetworkConfig>,
    /// MCP endpoint (`/mcp`) settings: allowed hosts, public URL.
    pub mcp: platinum_mcp::McpOptions,
    /// Warm pools to keep at start: (template, size) at the default sandbox size.
    pub warm_pools: Vec<(String, u32)>,
    /// Registries (`host[:port]`) template builds pull from over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Where archived sandboxes go (`None`: the directory `<data>/archive`).
    pub archive: Option<ObjectStoreConfig>,
    /// Size of each sandbox's host share (`/mnt/dnah-share`), MiB.
    pub share_mib: u64,
    /// A PEM file of CA certificates the egress secret broker trusts for servers besides the
    /// host's trust store.
    pub egress_extra_ca: Option<std::path::PathBuf>,
    /// How often each guest agent is pinged; three missed pings in a row and its VM is given
    /// up on (default 10 s).
    pub health_interval: std::time::Duration,
}

impl ServerConfig {
    /// Defaults around a data dir and an agent binary.
    pub fn new(data_dir: PathBuf, agent_binary: PathBuf) -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("default listen address"),
            data_dir,
            cache_dir: ImageCache::default_root(),
            agent_binary,
            api_key: None,
            engine: EngineConfig::default(),
            transport: TransportKind::VirtioSerial,
            memory: MemoryBacking::Auto,
            accel: None,
            network: Some(NetworkConfig::default()),
            mcp: platinum_mcp::McpOptions::default(),
            warm_pools: Vec::new(),
            insecure_registries: Vec::new(),
            archive: None,
            share_mib: 1024,
            egress_extra_ca: None,
            health_interval: std::time::Duration::from_secs(10),
        }
    }
}

/// How long open connections may take to finish when the server shuts down.
const CONNECTION_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// A server that is up.
pub struct RunningServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The API key it started with.
    pub api_key: String,
    /// True when this start generated the key (print it once).
    pub key_generated: bool,
    /// The engine (for in-process callers).
    pub engine: Arc<Engine>,
    cancel: CancellationToken,
    serve: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Base URL, e.g. `http://127.0.0.1:7070`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Resolves when the server stops serving on its own (error) or after `shutdown`.
    pub async fn wait(&mut self) -> Result<()> {
        (&mut self.serve)
            .await
            .context("server task")?
            .context("HTTP server")
    }

    /// Graceful stop: no new requests, every VM stopped (disks kept), then return.
    pub async fn shutdown(mut self) -> Result<()> {
        // Background loops and boots in flight end first, so no request waits on a boot.
        self.engine.stop_background();
        self.cancel.cancel();
        // Open streams (WebSockets, followed logs) get a grace period, then are cut.
        let served = match tokio::time::timeout(CONNECTION_GRACE, self.wait()).await {
            Ok(r) => r,
            Err(_) => {
                tracing::warn!("connections still open after the grace period; closing them");
                self.serve.abort();
                Ok(())
            }
        };
        self.engine.stop_all_sandboxes().await;
        served
    }
}

/// Builds and starts a server.
pub struct Server;

impl Server {
    /// Starts everything and returns once the HTTP listener is bound and serving.
    pub async fn start(config: ServerConfig) -> Result<RunningServer> {
        // Owner-only: it holds keys, token secrets and the sandboxes' environment variables.
        platinum_hostagent::private_file::create_dir(&config.data_dir)
            .with_context(|| format!("creating data dir {}", config.data_dir.display()))?;
        let store = Arc::new(SqliteStore::open(&config.data_dir.join("platinum.db")).await?);

        // Cloud Hypervisor where it can run, else QEMU (`PLATINUM_VMM` forces one).
        let selection = select::detect(config.accel.clone())?;
        let reason = selection.reason.clone();
        let kind = selection.kind;
        let vmm = selection.into_vmm()?;
        let mut host_config = LocalHostConfig::new(
            config.data_dir.clone(),
            ImageCache::new(config.cache_dir.clone()),
            config.agent_binary.clone(),
        );
        host_config.memory = config.memory;
        host_config.registries.insecure = config.insecure_registries.clone();
        host_config.archive = config.archive.clone();
        host_config.share_mib = config.share_mib;
        host_config.egress_extra_roots = config.egress_extra_ca.clone();
        host_config.health_interval = config.health_interval;
        host_config.transport = match kind {
            // CH reaches guests only over vsock; its driver would override virtio-serial anyway.
            VmmKind::CloudHypervisor => TransportKind::Vsock,
            VmmKind::Qemu => config.transport,
        };
        let network = match &config.network {
            Some(n) => Network::setup(n.clone()).await,
            None => Network::disabled("switched off in the server configuration"),
        };
        let host = LocalHost::new(host_config, vmm, Arc::new(network), reason)?;
        host.release_stale_taps().await;
        let info = host.info();
        tracing::info!(vmm = ?info.vmm, accel = ?info.accel, reason = %info.reason, "host ready");
        host.prepare_template(&config.engine.default_template)
            .await
            .with_context(|| {
                format!(
                    "preparing the default template {:?}",
                    config.engine.default_template
                )
            })?;

        let mut engine_config = config.engine.clone();
        // Snapshots and their signing keys live in the data directory.
        engine_config
            .data_dir
            .get_or_insert_with(|| config.data_dir.clone());
        let engine = Engine::new(engine_config, store.clone(), host).await?;
        let key = engine
            .api_keys()
            .initial(store.as_ref(), &config.data_dir, config.api_key.clone())
            .await
            .context("setting up the API key")?;
        engine.start().await?;
        for (template, size) in &config.warm_pools {
            let pool = engine
                .ensure_pool(template, *size)
                .await
                .with_context(|| format!("warm pool {template}={size}"))?;
            tracing::info!(pool = %pool.id, template = %template, size, "warm pool configured");
        }

        let app = platinum_rest::router(engine.clone())
            .merge(platinum_daytona::router(
                engine.clone(),
                platinum_daytona::DaytonaConfig::from_data_dir(&config.data_dir)
                    .context("loading the Daytona token key")?,
            ))
            .merge(
                // MCP (Streamable HTTP) behind the same API keys as /v1.
                platinum_mcp::router(engine.clone(), config.mcp.clone()).route_layer(
                    axum::middleware::from_fn_with_state(
                        engine.clone(),
                        platinum_rest::auth::require_key,
                    ),
                ),
            )
            .merge(platinum_openapi::router());
        // E2B: its control plane, plus sandbox traffic (routed by header or Host) ahead of all.
        let e2b = platinum_e2b::E2bConfig::from_data_dir(&config.data_dir, None)
            .context("loading the E2B token key")?;
        // The product's edge (`<port>-<id>.<domain>`, `/edge/<id>/<port>/`) in front of E2B's
        // routing: Host-form requests without a product credential or public port fall through.
        // HTTP/2 requests (h2c) name their host in `:authority`: it becomes `Host` first.
        let app = platinum_e2b::install(app, engine.clone(), e2b)
            .layer(axum::middleware::from_fn_with_state(
                engine.clone(),
                platinum_frontend_http::edge::middleware,
            ))
            .layer(axum::middleware::map_request(
                platinum_frontend_http::origin::host_from_authority,
            ))
            .layer(tower_http::trace::TraceLayer::new_for_http());
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        // HTTP/1.1, and HTTP/2 with prior knowledge (h2c) on the same port (axum's `http2`).
        let serve = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await
        });
        tracing::info!(%addr, "serving");
        Ok(RunningServer {
            addr,
            api_key: key.key,
            key_generated: key.generated,
            engine,
            cancel,
            serve,
        })
    }
}
