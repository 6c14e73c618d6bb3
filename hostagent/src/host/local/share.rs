//! Each sandbox's host share: a directory the guest sees at `/mnt/dnah-share` (virtio-fs) and
//! the host API reads and writes directly, whether the VM runs, is paused or is stopped.
//!
//! The share is its own small filesystem, so a guest cannot fill the host's disk through it:
//! `share.img` in the sandbox's directory, a sparse image of [`LocalHostConfig::share_mib`]
//! holding ext4 made by the host, loop-mounted (`nosuid,nodev,noexec`) at `share/` for as long
//! as the sandbox exists. The host kernel only ever sees blocks it wrote itself: the guest
//! reaches the files through virtiofsd, never the image. The image travels with the sandbox
//! (archives carry it like a disk); snapshots and forks do not copy it (a restored copy gets a
//! share of its own, empty).
//!
//! [`LocalHostConfig::share_mib`]: super::LocalHostConfig::share_mib

use std::path::{Path, PathBuf};

use super::LocalHost;
use crate::error::{Error, IoContext, Result};
use crate::share::{SHARE_OWNER, ShareRoot};
use crate::tool::Tool;

/// The share's image in a sandbox directory.
pub(super) const SHARE_IMAGE: &str = "share.img";
/// Where the image is mounted in a sandbox directory (what virtiofsd exports).
pub(super) const SHARE_DIR: &str = "share";

/// Whether `dir` is a mount point now (`/proc/self/mountinfo`).
fn is_mounted(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = dir.display().to_string();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mount_point| mount_point == wanted)
}

impl LocalHost {
    /// Makes sure sandbox directory `dir` has its share mounted (creating the image the first
    /// time); returns the mounted directory.
    pub(super) async fn ensure_share(&self, dir: &Path) -> Result<PathBuf> {
        let image = dir.join(SHARE_IMAGE);
        let mount = dir.join(SHARE_DIR);
        if is_mounted(&mount) {
            return Ok(mount);
        }
        if !image.is_file() {
            let partial = dir.join(format!("{SHARE_IMAGE}.partial"));
            let _ = std::fs::remove_file(&partial);
            std::fs::File::create(&partial)
                .and_then(|f| f.set_len(self.config.share_mib << 20))
                .ctx(|| format!("creating the sparse file {}", partial.display()))?;
            Tool::new("mkfs.ext4", "mkfs.ext4")?
                .args(["-q", "-F", "-t", "ext4", "-m", "0", "-L", "platinum-share"])
                .arg("-E")
                .arg(format!(
                    "root_owner={SHARE_OWNER}:{SHARE_OWNER},lazy_itable_init=1,lazy_journal_init=1"
                ))
                .arg(&partial)
                .output()
                .await?;
            std::fs::rename(&partial, &image)
                .ctx(|| format!("moving {} into place", partial.display()))?;
        }
        std::fs::create_dir_all(&mount).ctx(|| format!("creating {}", mount.display()))?;
        Tool::new("mount", "mount")?
            .args(["-t", "ext4", "-o", "loop,nosuid,nodev,noexec,noatime"])
            .arg(&image)
            .arg(&mount)
            .output()
            .await?;
        Ok(mount)
    }

    /// Unmounts sandbox directory `dir`'s share, if mounted (before its directory is removed
    /// or archived). A share still in use (a virtiofsd that has not exited yet) is detached
    /// lazily.
    pub(super) async fn release_share(&self, dir: &Path) -> Result<()> {
        let mount = dir.join(SHARE_DIR);
        if !is_mounted(&mount) {
            return Ok(());
        }
        nix::unistd::sync();
        match nix::mount::umount2(&mount, nix::mount::MntFlags::empty()) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EBUSY) => {
                nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH)
                    .map_err(|e| Error::io(format!("unmounting {}", mount.display()), e.into()))
            }
            Err(e) => Err(Error::io(
                format!("unmounting {}", mount.display()),
                e.into(),
            )),
        }
    }

    /// The share of sandbox `id`, mounted, for the host API.
    pub(super) async fn share_root(&self, id: &str) -> Result<ShareRoot> {
        let dir = self.dir(id)?;
        let record = super::read_record(&dir, id)?;
        if record.spec.share.is_none() {
            return Err(Error::Unsupported(format!(
                "sandbox {id} has no host share (it was created where virtiofsd was missing, or by an older server)"
            )));
        }
        ShareRoot::open(&self.ensure_share(&dir).await?)
    }
}
