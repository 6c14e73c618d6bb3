//! Per-sandbox copy-on-write root disks: reflink clone, qcow2 overlay, or a sparse copy.
//!
//! Each sandbox gets its own writable disk made from a shared raw base image. In order of
//! preference:
//! 1. **Reflink** (`FICLONE`): an instant, space-sharing raw clone, when the base and the
//!    destination are on one filesystem that supports it (XFS with `reflink=1`, btrfs).
//! 2. The fallback the caller picked with [`Fallback`] (also taken directly, without trying a
//!    reflink, when [`DiskOptions::force_fallback`] is set):
//!    - [`Fallback::Qcow2Overlay`]: `qemu-img create -f qcow2 -F raw -b <base> <dest>`; instant,
//!      but the base must stay in place and unchanged for the disk's whole life;
//!    - [`Fallback::SparseCopy`]: a full, independent raw copy that skips zero blocks.
//!
//! `FICLONE` failing with "not supported here" (`EOPNOTSUPP`, `EXDEV`, `EINVAL`, `ENOTTY`) means
//! "fall back"; any other error is a real failure and is returned.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::error::{Error, IoContext, Result};
use crate::vmm::{DiskFormat, DiskSpec};

/// `FICLONE` = `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Block size for the sparse copy; all-zero blocks become holes.
const COPY_BLOCK: usize = 1 << 20;

/// What to do when a reflink clone is impossible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Fallback {
    /// A qcow2 overlay backed by the raw base (fast; the base must stay).
    #[default]
    Qcow2Overlay,
    /// A full sparse raw copy (slow for big images; independent of the base).
    SparseCopy,
}

/// How a disk was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloneMethod {
    /// `FICLONE` reflink: raw, sharing extents with the base.
    Reflink,
    /// qcow2 overlay with the base as its backing file.
    Qcow2Overlay,
    /// Sparse raw copy.
    SparseCopy,
}

/// A disk made by [`create_disk`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreparedDisk {
    /// The device to hand to the VMM.
    pub spec: DiskSpec,
    /// How it was made.
    pub method: CloneMethod,
}

/// Where `qemu-img` is and how the disk should be made.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskOptions {
    /// What to do when reflink is impossible.
    pub fallback: Fallback,
    /// `qemu-img` binary (looked up on `PATH` when `None`).
    pub qemu_img: Option<PathBuf>,
    /// Skip the reflink attempt and always make the disk with [`DiskOptions::fallback`]
    /// (default `false`: reflink first). Makes the method independent of what the
    /// destination's filesystem supports, e.g. for tests of each fallback.
    pub force_fallback: bool,
}

/// Makes a writable disk at `dest` (which must not exist) from the raw image `base`, and
/// returns it as device `id`.
pub async fn create_disk(
    id: &str,
    base: &Path,
    dest: &Path,
    options: &DiskOptions,
) -> Result<PreparedDisk> {
    create_disk_from(id, base, DiskFormat::Raw, dest, options).await
}

/// [`create_disk`] from a base of either format (a disk layer may be a qcow2 overlay itself):
/// a reflink or a copy keeps the base's format, an overlay names it as its backing format.
pub async fn create_disk_from(
    id: &str,
    base: &Path,
    base_format: DiskFormat,
    dest: &Path,
    options: &DiskOptions,
) -> Result<PreparedDisk> {
    if !base.is_absolute() || !dest.is_absolute() {
        return Err(Error::Invalid(format!(
            "disk paths must be absolute: base {}, destination {}",
            base.display(),
            dest.display()
        )));
    }
    if dest.exists() {
        return Err(Error::Invalid(format!(
            "disk destination {} already exists",
            dest.display()
        )));
    }
    let reflinked = if options.force_fallback {
        false
    } else {
        let (src, dst) = (base.to_path_buf(), dest.to_path_buf());
        tokio::task::spawn_blocking(move || reflink(&src, &dst))
            .await
            .map_err(|e| Error::io("reflink task", std::io::Error::other(e)))??
    };
    let (format, method) = if reflinked {
        (base_format, CloneMethod::Reflink)
    } else {
        match options.fallback {
            Fallback::Qcow2Overlay => {
                qcow2_overlay(options.qemu_img.as_deref(), base, base_format, dest).await?;
                (DiskFormat::Qcow2, CloneMethod::Qcow2Overlay)
            }
            Fallback::SparseCopy => {
                let (src, dst) = (base.to_path_buf(), dest.to_path_buf());
                tokio::task::spawn_blocking(move || sparse_copy(&src, &dst))
                    .await
                    .map_err(|e| Error::io("sparse copy task", std::io::Error::other(e)))??;
                (base_format, CloneMethod::SparseCopy)
            }
        }
    };
    info!(id, base = %base.display(), dest = %dest.display(), ?method, "disk created");
    Ok(PreparedDisk {
        spec: DiskSpec {
            id: id.to_string(),
            path: dest.to_path_buf(),
            format,
            readonly: false,
            volume_slot: None,
        },
        method,
    })
}

/// Copies the disk image `src` (raw or qcow2: the file as it is) to a new file `dest`: a reflink
/// where the filesystem allows, else a sparse copy. Returns how it was made.
pub async fn copy_disk(src: &Path, dest: &Path) -> Result<CloneMethod> {
    let (src, dest) = (src.to_path_buf(), dest.to_path_buf());
    tokio::task::spawn_blocking(move || {
        if reflink(&src, &dest)? {
            return Ok(CloneMethod::Reflink);
        }
        sparse_copy(&src, &dest)?;
        Ok(CloneMethod::SparseCopy)
    })
    .await
    .map_err(|e| Error::io("disk copy task", std::io::Error::other(e)))?
}

/// Whether two paths are one file (a hard link).
pub fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Tries a `FICLONE` of `base` into a new file `dest`. `Ok(false)` (with `dest` removed) when the
/// filesystem cannot reflink between these two paths.
pub fn reflink(base: &Path, dest: &Path) -> Result<bool> {
    let src = File::open(base).ctx(|| format!("opening base image {}", base.display()))?;
    let dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .ctx(|| format!("creating disk {}", dest.display()))?;
    // SAFETY: FICLONE takes the source fd as its argument; both fds are open for the call.
    let rc = unsafe { libc::ioctl(dst.as_raw_fd(), FICLONE as _, src.as_raw_fd()) };
    if rc == 0 {
        return Ok(true);
    }
    let err = std::io::Error::last_os_error();
    drop(dst);
    // The empty destination is ours (create_new); remove it before falling back or failing.
    std::fs::remove_file(dest).ctx(|| format!("removing failed clone {}", dest.display()))?;
    if reflink_unsupported(&err) {
        debug!(base = %base.display(), dest = %dest.display(), error = %err, "reflink unsupported, falling back");
        Ok(false)
    } else {
        Err(Error::io(
            format!("FICLONE {} -> {}", base.display(), dest.display()),
            err,
        ))
    }
}

/// Whether a `FICLONE` error means "this filesystem pair cannot reflink" rather than a failure.
fn reflink_unsupported(err: &std::io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EXDEV | libc::EINVAL | libc::ENOTTY | libc::ENOSYS)
    )
}

/// The name `qemu-img` calls a format.
fn format_name(format: DiskFormat) -> &'static str {
    match format {
        DiskFormat::Raw => "raw",
        DiskFormat::Qcow2 => "qcow2",
    }
}

/// `qemu-img create -f qcow2 -F <raw|qcow2> -b <base> <dest>`.
async fn qcow2_overlay(
    qemu_img: Option<&Path>,
    base: &Path,
    base_format: DiskFormat,
    dest: &Path,
) -> Result<()> {
    let args = [
        "create".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        "qcow2".as_ref(),
        "-F".as_ref(),
        format_name(base_format).as_ref(),
        "-b".as_ref(),
        base.as_os_str(),
        dest.as_os_str(),
    ];
    let what = || {
        format!(
            "qemu-img create overlay {} over {}",
            dest.display(),
            base.display()
        )
    };
    run_qemu_img(qemu_img, &args, dest, what).await
}

/// Writes what the guest sees of disk `src` (a qcow2 overlay with its whole backing chain, or a
/// raw file) into a new sparse raw file `dest`: `qemu-img convert -O raw`.
pub async fn flatten_to_raw(
    qemu_img: Option<&Path>,
    src: &Path,
    format: DiskFormat,
    dest: &Path,
) -> Result<()> {
    let args = [
        "convert".as_ref(),
        "-q".as_ref(),
        "-f".as_ref(),
        format_name(format).as_ref(),
        "-O".as_ref(),
        "raw".as_ref(),
        src.as_os_str(),
        dest.as_os_str(),
    ];
    let what = || format!("qemu-img convert {} to raw", src.display());
    run_qemu_img(qemu_img, &args, dest, what).await
}

/// Runs `qemu-img` (on `PATH` when `None`); on failure removes the partial `output` and says
/// `what` failed with qemu-img's own words.
async fn run_qemu_img(
    qemu_img: Option<&Path>,
    args: &[&std::ffi::OsStr],
    output: &Path,
    what: impl FnOnce() -> String,
) -> Result<()> {
    let program = qemu_img
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("qemu-img"));
    let ran = tokio::process::Command::new(&program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingProgram {
                    program: program.display().to_string(),
                    hint: "apt-get install qemu-utils".to_string(),
                }
            } else {
                Error::io(format!("running {}", program.display()), e)
            }
        })?;
    if !ran.status.success() {
        // qemu-img may have left a partial file; it is ours to remove.
        let _ = std::fs::remove_file(output);
        return Err(Error::Io {
            context: what(),
            source: std::io::Error::other(String::from_utf8_lossy(&ran.stderr).trim().to_string()),
        });
    }
    Ok(())
}

/// Copies `base` to a new file `dest`, leaving holes where `base` has all-zero blocks.
pub fn sparse_copy(base: &Path, dest: &Path) -> Result<()> {
    let mut src = File::open(base).ctx(|| format!("opening base image {}", base.display()))?;
    let len = src
        .metadata()
        .ctx(|| format!("stat {}", base.display()))?
        .len();
    let mut dst = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dest)
        .ctx(|| format!("creating disk {}", dest.display()))?;
    let result = copy_blocks(&mut src, &mut dst, len);
    if result.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    result.ctx(|| format!("copying {} to {}", base.display(), dest.display()))
}

fn copy_blocks(src: &mut File, dst: &mut File, len: u64) -> std::io::Result<()> {
    let mut buf = vec![0u8; COPY_BLOCK];
    let mut offset = 0u64;
    while offset < len {
        let want = COPY_BLOCK.min((len - offset) as usize);
        src.read_exact(&mut buf[..want])?;
        if buf[..want].iter().all(|&b| b == 0) {
            dst.seek(SeekFrom::Current(want as i64))?;
        } else {
            dst.write_all(&buf[..want])?;
        }
        offset += want as u64;
    }
    // Trailing holes need the length set explicitly.
    dst.set_len(len)?;
    dst.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A 4 MiB raw image with data only in its first and third MiB.
    fn base_image(dir: &Path) -> PathBuf {
        let path = dir.join("base.raw");
        let file = File::create(&path).expect("create");
        file.set_len(4 << 20).expect("len");
        let mut file = OpenOptions::new().write(true).open(&path).expect("open");
        file.write_all(&[0xAB; 4096]).expect("write");
        file.seek(SeekFrom::Start(2 << 20)).expect("seek");
        file.write_all(b"platinum").expect("write");
        path
    }

    fn reflink_works_in(dir: &Path) -> bool {
        let a = dir.join("probe-a");
        std::fs::write(&a, b"x").expect("probe");
        let ok = reflink(&a, &dir.join("probe-b")).expect("probe reflink");
        let _ = std::fs::remove_file(dir.join("probe-b"));
        ok
    }

    #[test]
    fn unsupported_errnos_fall_back_and_others_fail() {
        for errno in [libc::EOPNOTSUPP, libc::EXDEV, libc::EINVAL, libc::ENOTTY] {
            assert!(
                reflink_unsupported(&std::io::Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
        for errno in [libc::ENOSPC, libc::EIO, libc::EACCES] {
            assert!(
                !reflink_unsupported(&std::io::Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
    }

    /// Options that skip the reflink attempt and use `fallback`.
    fn forced(fallback: Fallback) -> DiskOptions {
        DiskOptions {
            fallback,
            force_fallback: true,
            ..DiskOptions::default()
        }
    }

    #[tokio::test]
    async fn reflink_is_tried_first_and_shares_the_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        if !reflink_works_in(dir.path()) {
            eprintln!(
                "skipping: the temp dir {} cannot reflink (tests/disk.rs covers reflink on XFS)",
                dir.path().display()
            );
            return;
        }
        let base = base_image(dir.path());
        let dest = dir.path().join("disk.raw");
        let disk = create_disk("rootfs", &base, &dest, &DiskOptions::default())
            .await
            .expect("create");
        assert_eq!(disk.method, CloneMethod::Reflink);
        assert_eq!(disk.spec.format, DiskFormat::Raw);
        assert_eq!(
            std::fs::read(&base).expect("base"),
            std::fs::read(&dest).expect("dest")
        );
    }

    #[tokio::test]
    async fn sparse_copy_fallback_keeps_data_and_holes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = base_image(dir.path());
        let dest = dir.path().join("disk.raw");
        let disk = create_disk("rootfs", &base, &dest, &forced(Fallback::SparseCopy))
            .await
            .expect("create");
        assert_eq!(disk.method, CloneMethod::SparseCopy);
        assert_eq!(disk.spec.format, DiskFormat::Raw);
        assert_eq!(disk.spec.path, dest);
        assert_eq!(
            std::fs::read(&base).expect("base"),
            std::fs::read(&dest).expect("dest")
        );
        let meta = std::fs::metadata(&dest).expect("meta");
        assert_eq!(meta.len(), 4 << 20);
        assert!(
            meta.blocks() * 512 < (4 << 20),
            "copy is not sparse: {} blocks",
            meta.blocks()
        );
        // An independent copy: writing to it leaves the base alone.
        OpenOptions::new()
            .write(true)
            .open(&dest)
            .expect("open copy")
            .write_all(b"changed")
            .expect("write");
        assert_eq!(std::fs::read(&base).expect("base")[..7], [0xAB; 7]);
    }

    #[tokio::test]
    async fn qcow2_fallback_makes_an_overlay_with_the_base_data() {
        let qemu_img = crate::process::find_in_path("qemu-img")
            .expect("qemu-img is needed for the qcow2 overlay (apt-get install qemu-utils)");
        let dir = tempfile::tempdir().expect("tempdir");
        let base = base_image(dir.path());
        let dest = dir.path().join("disk.qcow2");
        let disk = create_disk("rootfs", &base, &dest, &forced(Fallback::Qcow2Overlay))
            .await
            .expect("create");
        assert_eq!(disk.method, CloneMethod::Qcow2Overlay);
        assert_eq!(disk.spec.format, DiskFormat::Qcow2);
        assert_eq!(disk.spec.path, dest);
        let info = std::process::Command::new(&qemu_img)
            .args(["info", "--output=json"])
            .arg(&dest)
            .output()
            .expect("qemu-img info");
        assert!(info.status.success(), "qemu-img info failed");
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("json");
        assert_eq!(info["format"], "qcow2");
        assert_eq!(info["backing-filename"], base.display().to_string());
        assert_eq!(info["backing-filename-format"], "raw");
        assert_eq!(info["virtual-size"], 4 << 20);
        // What a guest reads through the overlay is the base's data.
        let flat = dir.path().join("flat.raw");
        let convert = std::process::Command::new(&qemu_img)
            .args(["convert", "-f", "qcow2", "-O", "raw"])
            .arg(&dest)
            .arg(&flat)
            .status()
            .expect("qemu-img convert");
        assert!(convert.success(), "qemu-img convert failed");
        assert_eq!(
            std::fs::read(&base).expect("base"),
            std::fs::read(&flat).expect("flattened overlay")
        );
    }

    #[tokio::test]
    async fn bad_requests_are_rejected_before_touching_anything() {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = base_image(dir.path());
        let options = DiskOptions::default();
        let relative = create_disk(
            "rootfs",
            Path::new("base.raw"),
            &dir.path().join("d"),
            &options,
        )
        .await;
        assert!(matches!(relative, Err(Error::Invalid(_))));
        let existing = create_disk("rootfs", &base, &base, &options).await;
        assert!(matches!(existing, Err(Error::Invalid(_))));
        let missing = create_disk(
            "rootfs",
            &dir.path().join("absent"),
            &dir.path().join("d"),
            &options,
        )
        .await;
        assert!(matches!(missing, Err(Error::Io { .. })));
        assert!(!dir.path().join("d").exists());
    }
}
