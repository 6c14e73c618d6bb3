//! Integration test of reflink disk clones on a real XFS filesystem with `reflink=1`.
//!
//! The test formats a file with `mkfs.xfs -m reflink=1`, loop-mounts it in a temp dir (a guard
//! unmounts it on drop, also on panic), and checks that [`create_disk`] takes the reflink path:
//! the clone's data matches, `xfs_io -c 'fiemap -v'` reports its extents as shared, and the
//! filesystem's used space barely grows. It needs root (mount) and xfsprogs (CI has both);
//! without them it fails, naming what is missing.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use platinum_hostagent::disk::{CloneMethod, DiskOptions, Fallback, create_disk};
use platinum_hostagent::process::find_in_path;
use platinum_hostagent::vmm::DiskFormat;

/// Smallest XFS filesystem mkfs.xfs accepts.
const FS_SIZE: u64 = 320 << 20;

/// Unmounts the loop mount on drop.
struct Mount {
    point: PathBuf,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.point).status();
        if !matches!(status, Ok(s) if s.success()) {
            // A lazy unmount at least detaches it; the loop device goes with it.
            let _ = Command::new("umount").arg("-l").arg(&self.point).status();
        }
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn used_bytes(path: &Path) -> u64 {
    let stat = nix::sys::statvfs::statvfs(path).expect("statvfs");
    (stat.blocks() - stat.blocks_free()) * stat.fragment_size()
}

#[tokio::test]
async fn reflink_clone_on_xfs() {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root (to loop-mount an XFS image)");
    }
    if find_in_path("mkfs.xfs").is_none() && !Path::new("/usr/sbin/mkfs.xfs").exists() {
        missing.push("mkfs.xfs (apt-get install xfsprogs)");
    }
    assert!(
        missing.is_empty(),
        "the XFS reflink test cannot run here; missing: {}",
        missing.join(", ")
    );
    let work = tempfile::tempdir().expect("tempdir");
    let image = work.path().join("xfs.img");
    std::fs::File::create(&image)
        .expect("image")
        .set_len(FS_SIZE)
        .expect("size");
    run(Command::new("mkfs.xfs")
        .args(["-q", "-m", "reflink=1"])
        .arg(&image));
    let point = work.path().join("mnt");
    std::fs::create_dir(&point).expect("mount point");
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&point));
    let mount = Mount {
        point: point.clone(),
    };

    // A 64 MiB base with real data in it.
    let base = point.join("base.raw");
    {
        let mut file = std::fs::File::create(&base).expect("base");
        let block: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for _ in 0..64 {
            file.write_all(&block).expect("write base");
        }
        file.sync_all().expect("sync base");
    }
    let before = used_bytes(&point);

    let dest = point.join("sbx1-rootfs.raw");
    let options = DiskOptions {
        fallback: Fallback::SparseCopy,
        ..DiskOptions::default()
    };
    let disk = create_disk("rootfs", &base, &dest, &options)
        .await
        .expect("clone");
    assert_eq!(disk.method, CloneMethod::Reflink);
    assert_eq!(disk.spec.format, DiskFormat::Raw);
    assert_eq!(
        std::fs::read(&base).expect("base"),
        std::fs::read(&dest).expect("clone"),
        "clone data differs"
    );

    let grown = used_bytes(&point).saturating_sub(before);
    assert!(
        grown < 8 << 20,
        "a reflink clone of 64 MiB used {grown} more bytes"
    );
    if find_in_path("xfs_io").is_some() || Path::new("/usr/sbin/xfs_io").exists() {
        let fiemap = run(Command::new("xfs_io")
            .args(["-r", "-c", "fiemap -v"])
            .arg(&dest));
        // FIEMAP_EXTENT_SHARED is 0x2000 in the flags column.
        let shared = fiemap
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .filter_map(|flags| u32::from_str_radix(flags.trim_start_matches("0x"), 16).ok())
            .any(|flags| flags & 0x2000 != 0);
        assert!(shared, "no shared extents in the clone:\n{fiemap}");
    }

    // Writing to the clone leaves the base alone.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&dest)
        .expect("open clone")
        .write_all(b"changed")
        .expect("write");
    assert_ne!(std::fs::read(&base).expect("base")[..7], *b"changed");
    drop(mount);
}
