//! Volumes: ext4 disks the host attaches (at boot, or hot-plugged while the guest runs), found
//! by their serial and mounted by the agent itself, so an image without `mount` works too.
//!
//! A virtio-blk disk shows its serial in `/sys/block/<dev>/serial`; a SCSI disk (QEMU's
//! hot-pluggable volumes) in its unit serial VPD page, `/sys/block/<dev>/device/vpd_pg80`
//! (a 4-byte header, then the serial, space-padded). A hot-added disk appears once the kernel
//! has scanned the new target, so mounting waits for it a little.

use nix::errno::Errno;
use nix::mount::{MntFlags, MsFlags, mount, umount2};
use platinum_protocol::{GuestError, GuestErrorCode};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::session::HandlerError;

/// How long a hot-added disk may take to appear.
const APPEAR_TIMEOUT: Duration = Duration::from_secs(10);
/// How often to look for it meanwhile.
const APPEAR_POLL: Duration = Duration::from_millis(50);

fn invalid(message: String) -> HandlerError {
    GuestError::new(GuestErrorCode::InvalidArgument, message).into()
}

fn check_path(path: &str) -> Result<(), HandlerError> {
    if !path.starts_with('/') || path == "/" || path.contains('\0') {
        return Err(invalid(format!(
            "mount path {path:?} must be absolute and not /"
        )));
    }
    Ok(())
}

/// The serial a block device in `/sys/block` reports, if any.
fn serial_of(device: &Path) -> Option<String> {
    if let Ok(s) = std::fs::read_to_string(device.join("serial")) {
        return Some(s.trim().to_string());
    }
    let page = std::fs::read(device.join("device/vpd_pg80")).ok()?;
    let serial = page.get(4..)?;
    Some(
        String::from_utf8_lossy(serial)
            .trim_matches(|c: char| c == '\0' || c.is_whitespace())
            .to_string(),
    )
}

/// `/dev/<name>` of the block device whose serial is `serial`, now.
fn find_disk(serial: &str) -> Option<PathBuf> {
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find(|e| serial_of(&e.path()).as_deref() == Some(serial))
        .map(|e| Path::new("/dev").join(e.file_name()))
}

/// Mounts the volume with this serial at `path` (see the module doc).
pub async fn mount_volume(
    serial: String,
    path: String,
    readonly: bool,
) -> Result<Value, HandlerError> {
    check_path(&path)?;
    if serial.is_empty() {
        return Err(invalid("the volume serial is empty".into()));
    }
    let started = tokio::time::Instant::now();
    let device = loop {
        if let Some(d) = find_disk(&serial) {
            break d;
        }
        if started.elapsed() >= APPEAR_TIMEOUT {
            return Err(GuestError::new(
                GuestErrorCode::NotFound,
                format!("no disk with serial {serial} appeared within {APPEAR_TIMEOUT:?}"),
            )
            .into());
        }
        tokio::time::sleep(APPEAR_POLL).await;
    };
    let mounted = tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&path)
            .map_err(|e| GuestError::from_io(&e, format_args!("creating {path}")))?;
        let mut flags = MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let data = if readonly {
            flags |= MsFlags::MS_RDONLY;
            Some("noload")
        } else {
            None
        };
        mount(Some(&device), path.as_str(), Some("ext4"), flags, data).map_err(|e| {
            GuestError::new(
                GuestErrorCode::Io,
                format!("mounting {} on {path}: {e}", device.display()),
            )
        })?;
        tracing::info!(device = %device.display(), path, readonly, "volume mounted");
        Ok::<_, GuestError>(())
    })
    .await
    .map_err(|e| GuestError::new(GuestErrorCode::Io, format!("mount task failed: {e}")))?;
    mounted?;
    Ok(Value::Null)
}

/// Flushes and unmounts `path`; nothing mounted there is fine, a busy mount is an error.
pub async fn unmount_volume(path: String) -> Result<Value, HandlerError> {
    check_path(&path)?;
    let done = tokio::task::spawn_blocking(move || {
        nix::unistd::sync();
        match umount2(path.as_str(), MntFlags::empty()) {
            Ok(()) => {
                tracing::info!(path, "volume unmounted");
                Ok(())
            }
            // Not a mount point (or gone): nothing to do.
            Err(Errno::EINVAL | Errno::ENOENT) => Ok(()),
            Err(Errno::EBUSY) => Err(GuestError::new(
                GuestErrorCode::InvalidArgument,
                format!("{path} is busy: a process has a file or its working directory there"),
            )),
            Err(e) => Err(GuestError::new(
                GuestErrorCode::Io,
                format!("unmounting {path}: {e}"),
            )),
        }
    })
    .await
    .map_err(|e| GuestError::new(GuestErrorCode::Io, format!("unmount task failed: {e}")))?;
    done?;
    Ok(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_come_from_virtio_blk_or_the_scsi_vpd_page() {
        let dir = tempfile::tempdir().unwrap();
        let blk = dir.path().join("vda");
        std::fs::create_dir_all(&blk).unwrap();
        std::fs::write(blk.join("serial"), "rootfs\n").unwrap();
        assert_eq!(serial_of(&blk).as_deref(), Some("rootfs"));
        let sd = dir.path().join("sda");
        std::fs::create_dir_all(sd.join("device")).unwrap();
        let mut page = vec![0u8, 0x80, 0, 20];
        page.extend_from_slice(b"volabc   ");
        page.push(0);
        std::fs::write(sd.join("device/vpd_pg80"), page).unwrap();
        assert_eq!(serial_of(&sd).as_deref(), Some("volabc"));
        let none = dir.path().join("loop0");
        std::fs::create_dir_all(&none).unwrap();
        assert_eq!(serial_of(&none), None);
    }

    #[test]
    fn mount_paths_must_be_absolute() {
        for bad in ["", "/", "data", "/a\0b"] {
            assert!(check_path(bad).is_err(), "{bad:?}");
        }
        assert!(check_path("/data").is_ok());
    }
}
