//! Engine settings: defaults for new sandboxes and the limits that protect the host.

use std::time::Duration;

/// Defaults and limits. `EngineConfig::default()` is what `platinum up` uses.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Template used when a create names none.
    pub default_template: String,
    /// Default vCPUs.
    pub default_vcpus: u32,
    /// Default memory, MiB.
    pub default_memory_mib: u32,
    /// Default sandbox timeout (`None` = sandboxes never expire by default).
    pub default_timeout: Option<Duration>,
    /// Largest vCPU count a create may ask for.
    pub max_vcpus: u32,
    /// Largest memory a create may ask for, MiB.
    pub max_memory_mib: u32,
    /// Longest timeout a create may ask for.
    pub max_timeout: Duration,
    /// Sandboxes with a live VM (or booting) at once.
    pub max_sandboxes: usize,
    /// Memory of all sandboxes that hold a VM together, MiB (create, start and resume are
    /// refused past it). Defaults to the host's physical memory: guest memory is not
    /// overcommitted.
    pub max_total_memory_mib: u64,
    /// Disk that must stay free in the data directory for a create or start to be admitted, MiB.
    pub min_free_disk_mib: u64,
    /// Largest single file upload, bytes.
    pub max_upload_bytes: u64,
    /// Output a buffered exec keeps per stream, bytes.
    pub exec_output_limit: usize,
    /// Timeout of a buffered exec that names none.
    pub default_exec_timeout: Duration,
    /// How long a boot may take before the sandbox goes to `error`.
    pub boot_timeout: Duration,
    /// How often expiry and lifecycle rules are checked.
    pub lifecycle_tick: Duration,
    /// Where snapshots and their signing keys live (`<data>/snapshots/`,
    /// `<data>/snapshot-keys.json`); `None` turns snapshots off (`unsupported`).
    pub data_dir: Option<std::path::PathBuf>,
    /// Create sandboxes by restoring their template's ready snapshot (built in the background,
    /// once per template, image and size) instead of booting; `false` boots every sandbox.
    pub template_snapshots: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_template: "base".into(),
            default_vcpus: 2,
            default_memory_mib: 1024,
            default_timeout: Some(Duration::from_secs(300)),
            max_vcpus: 16,
            max_memory_mib: 64 * 1024,
            max_timeout: Duration::from_secs(30 * 24 * 3600),
            max_sandboxes: 64,
            max_total_memory_mib: host_memory_mib().unwrap_or(64 * 1024),
            min_free_disk_mib: 2048,
            max_upload_bytes: 1 << 30,
            exec_output_limit: 10 << 20,
            default_exec_timeout: Duration::from_secs(60),
            boot_timeout: Duration::from_secs(180),
            lifecycle_tick: Duration::from_secs(1),
            data_dir: None,
            template_snapshots: true,
        }
    }
}

/// The host's physical memory in MiB, from `/proc/meminfo`.
fn host_memory_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024)
}
