//! Save and restore of a QEMU VM through migration to a file.
//!
//! Snapshot directory layout (written by [`save`], then the shared manifest):
//! - `vmstate`: QEMU's migration stream (device state and guest RAM), written and read through a
//!   descriptor the host opens (`migrate_through`). The RAM is a
//!   `memory-backend-memfd,share=on`; QEMU ≥ 8.1 streams such RAM unless `x-ignore-shared` is on,
//!   which this driver never sets, so the file is self-contained.
//! - `vm.json`: the [`crate::vmm::manifest`] with the [`crate::vmm::VmSpec`] the VM ran with.
//!   Restore compares the new spec's device layout with it: paths may change, devices may not,
//!   because the migration stream is keyed by device and virtio-mmio slot.
//!
//! Disks are not part of the snapshot: the caller copies (reflinks) them while the VM is paused
//! and points the restore spec at the copies.

use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::{debug, info};

use crate::error::{Error, IoContext, Result};

use super::qmp::{MigrationInfo, Qmp};

/// File holding the migration stream.
pub const STATE_FILE: &str = "vmstate";
/// `max-bandwidth` for saving to a file: the 128 MiB/s default would make a 1 GiB save take
/// seconds for nothing.
const SAVE_BANDWIDTH: u64 = 100_000_000_000;

/// Poll interval for `query-migrate`.
const POLL: Duration = Duration::from_millis(10);

/// Timings and sizes of a finished save or load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationStats {
    /// Wall time from the command to `completed`.
    pub elapsed: Duration,
    /// QEMU's own `total-time`, if it reported one.
    pub qemu_total_ms: Option<u64>,
}

/// Checks that a snapshot directory path is usable (absolute, no comma: `file:` URIs take
/// `,offset=` options).
pub fn check_dir(dir: &Path) -> Result<()> {
    if !dir.is_absolute() {
        return Err(Error::Invalid(format!(
            "snapshot directory {} must be absolute",
            dir.display()
        )));
    }
    if dir.to_str().is_none_or(|s| s.contains(',')) {
        return Err(Error::Invalid(format!(
            "snapshot directory {} must be UTF-8 without `,`",
            dir.display()
        )));
    }
    Ok(())
}

/// The state file inside `dir`.
pub fn state_path(dir: &Path) -> PathBuf {
    dir.join(STATE_FILE)
}

/// Migrates the (paused) VM into `<dir>/vmstate`. The host creates the file (owner-only) and
/// hands QEMU its descriptor in an fd set (`file:/dev/fdset/N`): a QEMU that runs as its own
/// unprivileged user cannot open paths.
pub async fn save(qmp: &Qmp, dir: &Path, timeout: Duration) -> Result<MigrationStats> {
    let state = state_path(dir);
    let started = Instant::now();
    qmp.run(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": SAVE_BANDWIDTH })),
    )
    .await?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&state)
        .ctx(|| format!("creating {}", state.display()))?;
    let info = migrate_through(qmp, "migrate", &file, timeout).await?;
    let stats = MigrationStats {
        elapsed: started.elapsed(),
        qemu_total_ms: info.total_time,
    };
    info!(state = %state.display(), elapsed = ?stats.elapsed, "VM state saved");
    Ok(stats)
}

/// Loads `<dir>/vmstate` into a QEMU started with `-incoming defer`.
pub async fn load(qmp: &Qmp, dir: &Path, timeout: Duration) -> Result<MigrationStats> {
    let state = state_path(dir);
    if !state.is_file() {
        return Err(Error::Invalid(format!(
            "snapshot state {} does not exist",
            state.display()
        )));
    }
    let started = Instant::now();
    let file = std::fs::File::open(&state).ctx(|| format!("opening {}", state.display()))?;
    let info = migrate_through(qmp, "migrate-incoming", &file, timeout).await?;
    let stats = MigrationStats {
        elapsed: started.elapsed(),
        qemu_total_ms: info.total_time,
    };
    info!(state = %state.display(), elapsed = ?stats.elapsed, "VM state loaded");
    Ok(stats)
}

/// Runs `command` (`migrate` or `migrate-incoming`) on `file`, handed over as an fd set, until
/// it completes; the set is given back either way (QEMU would otherwise keep the descriptor
/// open, one per snapshot, for the VM's life).
async fn migrate_through(
    qmp: &Qmp,
    command: &str,
    file: &std::fs::File,
    timeout: Duration,
) -> Result<MigrationInfo> {
    let set = qmp.add_fd(file.as_fd()).await?;
    let info = async {
        qmp.run(
            command,
            Some(json!({ "uri": format!("file:/dev/fdset/{set}") })),
        )
        .await?;
        wait_completed(qmp, command, timeout).await
    }
    .await;
    if let Err(e) = qmp.remove_fd_set(set).await {
        debug!(set, error = %e, "giving back the state file's fd set");
    }
    info
}

/// Polls `query-migrate` until `completed`; `failed`/`cancelled` become errors with QEMU's reason.
async fn wait_completed(qmp: &Qmp, request: &str, timeout: Duration) -> Result<MigrationInfo> {
    let deadline = Instant::now() + timeout;
    loop {
        let info = qmp.query_migrate().await?;
        debug!(status = ?info.status, "query-migrate");
        match info.status.as_deref() {
            Some("completed") => return Ok(info),
            Some(status @ ("failed" | "cancelled")) => {
                return Err(Error::VmmControl {
                    request: request.to_string(),
                    message: format!(
                        "migration {status}: {}",
                        info.error_desc.as_deref().unwrap_or("QEMU gave no reason")
                    ),
                });
            }
            _ => {}
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!("{request} to complete"),
                seconds: timeout.as_secs(),
            });
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_dirs_are_checked() {
        assert!(check_dir(Path::new("/snap/1")).is_ok());
        assert!(matches!(
            check_dir(Path::new("snap")),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(
            check_dir(Path::new("/snap/a,offset=1")),
            Err(Error::Invalid(_))
        ));
    }
}
