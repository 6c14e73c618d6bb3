//! Logging: `tracing` to stderr (the console, for PID 1), compact, without colours, timestamped
//! with the time since start (the wall clock is only right once the host has set it).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::time::uptime;

/// Installs the global subscriber. `RUST_LOG` overrides `default_level` when set.
pub fn init(default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // Fails only if a subscriber is already installed, which then keeps logging.
    let _ = tracing_subscriber::fmt()
        .compact()
        .with_ansi(false)
        .with_timer(uptime())
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}
