//! The state every connection shares: configuration, boot id, start time, the process table and
//! the CPU sampler. One [`Agent`] serves all transports; sessions come and go around it.

use crate::exec::ProcessTable;
use crate::metrics::CpuTracker;
use crate::users::{UserDb, UserDbCache};
use platinum_protocol::{GuestError, GuestErrorCode};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

/// Default size of each process's output ring.
pub const DEFAULT_OUTPUT_RING_BYTES: usize = 1024 * 1024;

/// Smallest output ring: one full read of a pipe must fit.
const MIN_OUTPUT_RING_BYTES: usize = platinum_protocol::MAX_DATA_CHUNK;

/// How the agent runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PID 1 of a sandbox VM: owns the clock and may power the machine off.
    Init,
    /// An ordinary process (development and tests): never touches the clock or powers off.
    Serve,
}

/// Configuration of an [`Agent`].
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// How the agent runs.
    pub mode: Mode,
    /// The user database (`/etc/passwd`).
    pub passwd: PathBuf,
    /// The group database (`/etc/group`).
    pub group: PathBuf,
    /// Bytes of output kept per process (at least 64 KiB).
    pub output_ring_bytes: usize,
}

impl AgentConfig {
    /// The defaults for `mode`: the system's passwd and group files, 1 MiB of output per process.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            passwd: PathBuf::from("/etc/passwd"),
            group: PathBuf::from("/etc/group"),
            output_ring_bytes: DEFAULT_OUTPUT_RING_BYTES,
        }
    }
}

/// The guest agent.
pub struct Agent {
    config: AgentConfig,
    boot_id: String,
    started: Instant,
    processes: Arc<ProcessTable>,
    cpu: CpuTracker,
    users: UserDbCache,
}

impl Agent {
    /// A new agent with a fresh random boot id.
    pub fn new(config: AgentConfig) -> Arc<Self> {
        let ring = config.output_ring_bytes.max(MIN_OUTPUT_RING_BYTES);
        Arc::new(Self {
            boot_id: format!("{:032x}", rand::random::<u128>()),
            started: Instant::now(),
            processes: ProcessTable::new(ring),
            cpu: CpuTracker::default(),
            users: UserDbCache::default(),
            config,
        })
    }

    /// How the agent runs.
    pub fn mode(&self) -> Mode {
        self.config.mode
    }

    /// Random id chosen when the agent started.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// When the agent started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The processes started through the agent.
    pub fn processes(&self) -> &Arc<ProcessTable> {
        &self.processes
    }

    /// The CPU usage sampler behind `metrics`.
    pub fn cpu_tracker(&self) -> &CpuTracker {
        &self.cpu
    }

    /// The user and group databases as they are now.
    pub fn users(&self) -> Result<Arc<UserDb>, GuestError> {
        self.users
            .get(&self.config.passwd, &self.config.group)
            .map_err(|e| {
                GuestError::new(
                    GuestErrorCode::Io,
                    format!("cannot read the user database: {e}"),
                )
            })
    }
}
