//! Leaving the initramfs for the real root, the way `switch_root` does:
//!
//! 1. check that the new root is a mount point and the current root is the initramfs (ramfs or
//!    tmpfs);
//! 2. move `/dev`, `/proc` and `/sys` into the new root (`mount --move`);
//! 3. `chdir` into the new root and delete the initramfs's files, which otherwise pin their RAM
//!    forever: only entries on the initramfs's own device are touched, never anything across a
//!    mount point (the new root included);
//! 4. `mount --move . /`, `chroot .`, `chdir /`.
//!
//! The agent binary itself is deleted in step 3; the running process keeps its inode, and being
//! static it needs nothing else from the old root.

use nix::mount::{MsFlags, mount};
use nix::sys::statfs::{FsType, TMPFS_MAGIC, statfs};
use nix::unistd::{chdir, chroot};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use tracing::{debug, info};

/// `statfs` type of ramfs (`include/uapi/linux/magic.h`; nix does not export it).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// A step of the switch failed.
#[derive(Debug, thiserror::Error)]
pub enum SwitchRootError {
    /// The new root is not a mounted filesystem.
    #[error("{0} is not a mount point")]
    NotAMountPoint(String),
    /// A system call failed.
    #[error("{step}")]
    Sys {
        /// What was being done.
        step: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

fn sys(step: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> SwitchRootError {
    let step = step.into();
    move |e| SwitchRootError::Sys {
        step,
        source: e.into(),
    }
}

/// Makes `new_root` the root of the filesystem tree.
pub fn switch_root(new_root: &Path) -> Result<(), SwitchRootError> {
    let io = |step: &str| {
        let step = step.to_string();
        move |source| SwitchRootError::Sys { step, source }
    };
    let root_dev = fs::metadata("/").map_err(io("stat /"))?.dev();
    if fs::metadata(new_root).map_err(io("stat new root"))?.dev() == root_dev {
        return Err(SwitchRootError::NotAMountPoint(
            new_root.display().to_string(),
        ));
    }
    for api in ["/dev", "/proc", "/sys"] {
        let target = new_root.join(&api[1..]);
        if let Err(e) = fs::create_dir_all(&target) {
            debug!(target = %target.display(), error = %e, "cannot create mount point");
        }
        mount(
            Some(api),
            &target,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(sys(format!("move {api}")))?;
    }
    chdir(new_root).map_err(sys("chdir into the new root"))?;
    let fs_type = statfs("/").map_err(sys("statfs /"))?.filesystem_type();
    if fs_type == RAMFS_MAGIC || fs_type == TMPFS_MAGIC {
        let freed = delete_tree_contents(Path::new("/"), root_dev);
        info!(freed_bytes = freed, "initramfs emptied");
    } else {
        info!("old root is not an initramfs; leaving its files alone");
    }
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("move the new root onto /"))?;
    chroot(".").map_err(sys("chroot"))?;
    chdir("/").map_err(sys("chdir /"))?;
    Ok(())
}

/// Deletes everything under `dir` that lives on device `dev`, without following symlinks or
/// crossing into other mounts. Returns the bytes freed. Best effort: failures are logged.
fn delete_tree_contents(dir: &Path, dev: u64) -> u64 {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            debug!(dir = %dir.display(), error = %e, "cannot list");
            return 0;
        }
    };
    let mut freed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(md) = fs::symlink_metadata(&path) else {
            continue;
        };
        if md.dev() != dev {
            continue; // a mount point: another filesystem
        }
        let removed = if md.is_dir() {
            freed += delete_tree_contents(&path, dev);
            fs::remove_dir(&path)
        } else {
            freed += md.len();
            fs::remove_file(&path)
        };
        if let Err(e) = removed {
            debug!(path = %path.display(), error = %e, "cannot delete");
        }
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_only_its_own_device() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        fs::write(root.join("a/b/f"), b"12345").expect("write");
        fs::write(root.join("g"), b"1").expect("write");
        let outside = tempfile::tempdir().expect("tempdir");
        fs::write(outside.path().join("keep"), b"x").expect("write");
        std::os::unix::fs::symlink(outside.path(), root.join("link")).expect("symlink");
        let dev = fs::metadata(root).expect("stat").dev();

        // Entries on another device are skipped.
        assert_eq!(delete_tree_contents(root, dev.wrapping_add(1)), 0);
        assert!(root.join("g").exists());

        assert!(delete_tree_contents(root, dev) >= 6);
        assert_eq!(fs::read_dir(root).expect("list").count(), 0);
        assert!(
            outside.path().join("keep").exists(),
            "symlinks are not followed"
        );
    }
}
