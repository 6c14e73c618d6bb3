//! The pseudo-filesystems PID 1 mounts: `/dev`, `/proc` and `/sys` in the initramfs (they move
//! into the root at the switch), and once in the real root `/dev/pts`, `/dev/shm`, `/run`, `/tmp`,
//! `/sys/fs/cgroup` and the `/dev` symlinks that no udev creates here; and the host share.

use nix::errno::Errno;
use nix::mount::{MsFlags, mount};
use std::path::Path;
use tracing::{debug, warn};

/// A mount failed.
#[derive(Debug, thiserror::Error)]
#[error("mount {fstype} on {target}")]
pub struct MountError {
    fstype: String,
    target: String,
    #[source]
    source: Errno,
}

/// Mounts `fstype` on `target` (created if missing). A target that is already a mount (`EBUSY`)
/// counts as done.
fn mount_fs(
    fstype: &str,
    target: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), MountError> {
    let err = |source| MountError {
        fstype: fstype.into(),
        target: target.into(),
        source,
    };
    if let Err(e) = std::fs::create_dir_all(target) {
        debug!(target, error = %e, "cannot create mount point");
    }
    match mount(Some(fstype), target, Some(fstype), flags, data) {
        Ok(()) | Err(Errno::EBUSY) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// In the initramfs: devtmpfs, proc and sysfs. Runs before logging is set up, so it returns the
/// failures for the caller to log.
pub fn mount_early() -> Vec<MountError> {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_NODEV;
    [
        ("devtmpfs", "/dev", MsFlags::MS_NOSUID),
        ("proc", "/proc", nodev),
        ("sysfs", "/sys", nodev),
    ]
    .into_iter()
    .filter_map(|(fstype, target, flags)| mount_fs(fstype, target, flags, None).err())
    .collect()
}

/// In the real root (or the initramfs, when there is none): the rest, best effort. Returns the
/// mounts that failed.
pub fn mount_late() -> Vec<MountError> {
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mounts: [(&str, &str, MsFlags, Option<&str>); 5] = [
        (
            "devpts",
            "/dev/pts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("ptmxmode=0666,mode=0620,gid=5"),
        ),
        ("tmpfs", "/dev/shm", nosuid_nodev, Some("mode=1777")),
        ("tmpfs", "/run", nosuid_nodev, Some("mode=0755")),
        ("tmpfs", "/tmp", nosuid_nodev, Some("mode=1777")),
        (
            "cgroup2",
            "/sys/fs/cgroup",
            nosuid_nodev | MsFlags::MS_NOEXEC,
            None,
        ),
    ];
    let failed = mounts
        .into_iter()
        .filter_map(|(fstype, target, flags, data)| mount_fs(fstype, target, flags, data).err())
        .collect();
    // devtmpfs has /dev/ptmx; older kernels or other setups may not.
    let links = [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ];
    for (link, target) in links {
        if Path::new(link).symlink_metadata().is_ok() {
            continue;
        }
        if let Err(e) = std::os::unix::fs::symlink(target, link) {
            warn!(link, error = %e, "cannot create symlink");
        }
    }
    failed
}

/// Where the host share is mounted.
pub const SHARE_MOUNT: &str = "/mnt/dnah-share";

/// Mounts the host share (virtio-fs tag `tag`) at [`SHARE_MOUNT`].
pub fn mount_share(tag: &str) -> Result<(), MountError> {
    if let Err(e) = std::fs::create_dir_all(SHARE_MOUNT) {
        debug!(target = SHARE_MOUNT, error = %e, "cannot create mount point");
    }
    mount(
        Some(tag),
        SHARE_MOUNT,
        Some("virtiofs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|source| MountError {
        fstype: "virtiofs".into(),
        target: SHARE_MOUNT.into(),
        source,
    })
}
