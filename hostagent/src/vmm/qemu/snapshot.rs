//! Save and restore of a QEMU VM through migration to a file.
//!
//! Snapshot directory layout (written by [`save`], then the shared manifest):
//! - `vmstate`: QEMU's migration stream, written and read through a descriptor the host opens
//!   (`migrate_through`). What it holds depends on where the VM's RAM is:
//!   - anonymous RAM (`memory-backend-memfd,share=on`): device state *and* RAM. QEMU ≥ 8.1
//!     streams memfd RAM even with `x-ignore-shared` (only named files are skipped), and the
//!     capability is off here anyway, so the file is self-contained;
//!   - RAM in a memory file (`memory-backend-file,share=on`): device state only (kilobytes, a few
//!     milliseconds), because `x-ignore-shared` is on and the file is the RAM.
//! - `memory`: with a memory file, its clone taken while the vCPUs are stopped: a reflink (an
//!   instant, block-sharing copy) on XFS or btrfs, else a sparse copy. A restore maps a clone of
//!   it (`x-ignore-shared` on again, so the stream does not expect RAM).
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

use crate::disk::copy_disk;
use crate::error::{Error, IoContext, Result};

use super::qmp::{MigrationInfo, Qmp};

/// File holding the migration stream.
pub const STATE_FILE: &str = "vmstate";
/// The clone of the VM's memory file (VMs whose RAM is a file only).
pub const MEMORY_FILE: &str = "memory";
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
    /// Of `elapsed`, the time cloning (save) or placing (restore) the memory file; `None` for
    /// anonymous RAM, which is in the stream.
    pub memory: Option<Duration>,
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

/// The memory clone inside `dir`.
pub fn memory_path(dir: &Path) -> PathBuf {
    dir.join(MEMORY_FILE)
}

/// Migrates the (paused) VM into `<dir>/vmstate`, and with `memory_file` (the VM's RAM) clones
/// that into `<dir>/memory`. The host creates the state file (owner-only) and hands QEMU its
/// descriptor in an fd set (`file:/dev/fdset/N`): a QEMU that runs as its own unprivileged user
/// cannot open paths.
pub async fn save(
    qmp: &Qmp,
    dir: &Path,
    memory_file: Option<&Path>,
    timeout: Duration,
) -> Result<MigrationStats> {
    let state = state_path(dir);
    let started = Instant::now();
    qmp.run(
        "migrate-set-parameters",
        Some(json!({ "max-bandwidth": SAVE_BANDWIDTH })),
    )
    .await?;
    ignore_shared_ram(qmp, memory_file.is_some()).await?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&state)
        .ctx(|| format!("creating {}", state.display()))?;
    let info = migrate_through(qmp, "migrate", &file, timeout).await?;
    let memory = match memory_file {
        Some(ram) => {
            let cloning = Instant::now();
            let method = copy_disk(ram, &memory_path(dir)).await?;
            debug!(?method, "memory file cloned");
            Some(cloning.elapsed())
        }
        None => None,
    };
    let stats = MigrationStats {
        elapsed: started.elapsed(),
        qemu_total_ms: info.total_time,
        memory,
    };
    info!(state = %state.display(), elapsed = ?stats.elapsed, memory = ?stats.memory, "VM state saved");
    Ok(stats)
}

/// Puts a clone of the snapshot's memory at `memory_file` for a restore; nothing to do when it
/// is that very file (a hard link). Any other file there (what an earlier VM left) is replaced.
pub async fn place_memory(dir: &Path, memory_file: &Path) -> Result<Duration> {
    let started = Instant::now();
    let saved = memory_path(dir);
    if !saved.is_file() {
        return Err(Error::Invalid(format!(
            "snapshot {} has no {MEMORY_FILE}: it was taken from a VM with anonymous RAM",
            dir.display()
        )));
    }
    if crate::disk::same_file(&saved, memory_file) {
        return Ok(started.elapsed());
    }
    remove_memory(memory_file)?;
    copy_disk(&saved, memory_file).await?;
    Ok(started.elapsed())
}

/// Writes the memory file's dirty pages back (`fdatasync`) while the guest still runs, so the
/// clone taken while it is paused has little left to flush.
pub async fn flush_memory(memory_file: &Path) -> Result<()> {
    let path = memory_file.to_path_buf();
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        std::fs::File::open(&path)
            .and_then(|f| f.sync_data())
            .ctx(|| format!("writing back memory file {}", path.display()))
    })
    .await
    .map_err(|e| Error::io("memory flush task", std::io::Error::other(e)))??;
    debug!(elapsed = ?started.elapsed(), "memory file written back");
    Ok(())
}

/// Creates an empty (sparse, all-zero) memory file of `mib` MiB for a boot, replacing whatever
/// an earlier VM left: a booting guest must not find a previous run's RAM.
pub fn fresh_memory(memory_file: &Path, mib: u32) -> Result<()> {
    remove_memory(memory_file)?;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(memory_file)
        .ctx(|| format!("creating memory file {}", memory_file.display()))?;
    file.set_len(u64::from(mib) << 20)
        .ctx(|| format!("sizing memory file {}", memory_file.display()))
}

/// Removes a memory file (a VM's RAM is of no use once it ended); a missing one is fine.
pub fn remove_memory(memory_file: &Path) -> Result<()> {
    match std::fs::remove_file(memory_file) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(
            format!("removing memory file {}", memory_file.display()),
            e,
        )),
        _ => Ok(()),
    }
}

/// Sets `x-ignore-shared`: on, RAM in a named shared file is left out of the stream (both ways).
async fn ignore_shared_ram(qmp: &Qmp, on: bool) -> Result<()> {
    qmp.run(
        "migrate-set-capabilities",
        Some(json!({ "capabilities": [{ "capability": "x-ignore-shared", "state": on }] })),
    )
    .await
}

/// Loads `<dir>/vmstate` into a QEMU started with `-incoming defer`. `memory` is the time
/// [`place_memory`] took when the VM's RAM is a file (the stream then has no RAM).
pub async fn load(
    qmp: &Qmp,
    dir: &Path,
    memory: Option<Duration>,
    timeout: Duration,
) -> Result<MigrationStats> {
    let state = state_path(dir);
    if !state.is_file() {
        return Err(Error::Invalid(format!(
            "snapshot state {} does not exist",
            state.display()
        )));
    }
    let started = Instant::now();
    ignore_shared_ram(qmp, memory.is_some()).await?;
    let file = std::fs::File::open(&state).ctx(|| format!("opening {}", state.display()))?;
    let info = migrate_through(qmp, "migrate-incoming", &file, timeout).await?;
    let stats = MigrationStats {
        elapsed: started.elapsed() + memory.unwrap_or_default(),
        qemu_total_ms: info.total_time,
        memory,
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
