//! File operations inside a directory a guest writes to (a sandbox's host share), done by the
//! host without following anything the guest planted.
//!
//! Every path is relative to the share's root and resolved by the kernel with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`): no component may be `..`, a
//! symbolic link (a guest can plant `evil -> /etc/shadow`) or another mount, and the check and the
//! open are one system call, so a guest swapping a directory for a link in between gains nothing.
//! Files are opened as `O_PATH` first and read only when they are regular files (never a FIFO or
//! a device node). Writes go to a temporary file in the target directory, renamed over the name
//! once complete, owned by the guest's default user. Failures are [`Error::Share`], classified
//! like the guest's own file errors (not found, is a directory, no space, ...).

use bytes::Bytes;
use futures::{Stream, StreamExt};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchownat, unlinkat};
use platinum_protocol::{GuestError, GuestErrorCode};
use serde::{Deserialize, Serialize};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::pin::Pin;
use tokio::io::AsyncWriteExt;

use crate::error::{Error, Result};

/// The owner of what the host writes into a share: the templates' `user` account.
pub const SHARE_OWNER: u32 = 1000;
/// Longest path accepted.
const MAX_PATH: usize = 4096;

/// A body being written into a share.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send>>;

/// What a share entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareEntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (listed, never followed).
    Symlink,
    /// Anything else (a FIFO, a socket).
    Other,
}

/// One entry of a share directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareEntry {
    /// File name.
    pub name: String,
    /// What it is.
    pub kind: ShareEntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Last modification, seconds since the Unix epoch.
    pub modified: i64,
}

fn share_error(code: GuestErrorCode, message: String) -> Error {
    Error::Share(GuestError::new(code, message))
}

/// An errno from an operation on `path` as a share error.
fn errno(e: Errno, path: &str) -> Error {
    match e {
        Errno::ELOOP => share_error(
            GuestErrorCode::PermissionDenied,
            format!(
                "{path}: the path passes through a symbolic link, which the host does not follow"
            ),
        ),
        Errno::EXDEV => share_error(
            GuestErrorCode::PermissionDenied,
            format!("{path}: the path leaves the share"),
        ),
        e => Error::Share(GuestError::from_io(&std::io::Error::from(e), path)),
    }
}

/// The components of a relative share path, checked: no empty, `.` or `..` component, no NUL,
/// not absolute. The empty path (or `/`) is the root.
pub fn components(path: &str) -> Result<Vec<&str>> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = trimmed.trim_end_matches('/').split('/').collect();
    let bad = path.len() > MAX_PATH
        || path.contains('\0')
        || parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == ".." || p.len() > 255);
    if bad {
        return Err(share_error(
            GuestErrorCode::InvalidArgument,
            format!("share path {path:?} must be relative, without empty, . or .. components"),
        ));
    }
    Ok(parts)
}

fn kind_of(st: &FileStat) -> ShareEntryKind {
    match SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => ShareEntryKind::File,
        SFlag::S_IFDIR => ShareEntryKind::Dir,
        SFlag::S_IFLNK => ShareEntryKind::Symlink,
        _ => ShareEntryKind::Other,
    }
}

/// A share's root directory, held open.
#[derive(Debug)]
pub struct ShareRoot {
    root: OwnedFd,
}

impl ShareRoot {
    /// Opens the root directory `dir` (a path the host chose, not the guest).
    pub fn open(dir: &Path) -> Result<ShareRoot> {
        let root = nix::fcntl::open(
            dir,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| errno(e, &dir.display().to_string()))?;
        Ok(ShareRoot { root })
    }

    /// Opens `parts` (joined) beneath the root with `flags`, refusing symlinks and mounts.
    fn open_beneath(&self, parts: &[&str], flags: OFlag, mode: Mode) -> Result<OwnedFd> {
        let rel = if parts.is_empty() {
            ".".to_string()
        } else {
            parts.join("/")
        };
        // RESOLVE_NO_SYMLINKS refuses a final link too (ELOOP); only an `O_PATH` open of a
        // non-directory takes one as itself (`O_NOFOLLOW`), so `stat` can describe it.
        let nofollow = if flags.contains(OFlag::O_PATH) && !flags.contains(OFlag::O_DIRECTORY) {
            OFlag::O_NOFOLLOW
        } else {
            OFlag::empty()
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC | nofollow)
            .mode(mode)
            .resolve(
                ResolveFlag::RESOLVE_BENEATH
                    | ResolveFlag::RESOLVE_NO_SYMLINKS
                    | ResolveFlag::RESOLVE_NO_MAGICLINKS
                    | ResolveFlag::RESOLVE_NO_XDEV,
            );
        openat2(self.root.as_fd(), rel.as_str(), how).map_err(|e| errno(e, &rel))
    }

    /// What `path` is (without following a final symlink).
    pub fn stat(&self, path: &str) -> Result<ShareEntry> {
        let parts = components(path)?;
        let fd = self.open_beneath(&parts, OFlag::O_PATH, Mode::empty());
        let st = match fd {
            Ok(fd) => fstat(fd.as_fd()).map_err(|e| errno(e, path))?,
            // A final symlink: describe the link itself.
            Err(_) if !parts.is_empty() => {
                let dir = self.open_beneath(
                    &parts[..parts.len() - 1],
                    OFlag::O_PATH | OFlag::O_DIRECTORY,
                    Mode::empty(),
                )?;
                fstatat(
                    dir.as_fd(),
                    parts[parts.len() - 1],
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| errno(e, path))?
            }
            Err(e) => return Err(e),
        };
        Ok(ShareEntry {
            name: parts.last().copied().unwrap_or("").to_string(),
            kind: kind_of(&st),
            size: st.st_size.max(0) as u64,
            modified: st.st_mtime,
        })
    }

    /// The entries of directory `path`, sorted by name.
    pub fn list(&self, path: &str) -> Result<Vec<ShareEntry>> {
        let parts = components(path)?;
        let fd = self.open_beneath(&parts, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
        let (names, dir) = names_in(fd, path)?;
        let mut entries = Vec::new();
        for name in names {
            // Gone since the listing, or unreadable: left out.
            let Ok(st) = fstatat(dir.as_fd(), name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                continue;
            };
            entries.push(ShareEntry {
                name: name.to_string_lossy().into_owned(),
                kind: kind_of(&st),
                size: st.st_size.max(0) as u64,
                modified: st.st_mtime,
            });
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// Opens regular file `path` for reading; returns it with its size.
    pub fn open_file(&self, path: &str) -> Result<(std::fs::File, u64)> {
        let parts = components(path)?;
        let fd = self.open_beneath(&parts, OFlag::O_PATH, Mode::empty())?;
        let st = fstat(fd.as_fd()).map_err(|e| errno(e, path))?;
        match kind_of(&st) {
            ShareEntryKind::File => {}
            ShareEntryKind::Dir => {
                return Err(share_error(
                    GuestErrorCode::IsADirectory,
                    format!("{path} is a directory"),
                ));
            }
            ShareEntryKind::Symlink => return Err(errno(Errno::ELOOP, path)),
            ShareEntryKind::Other => {
                return Err(share_error(
                    GuestErrorCode::InvalidArgument,
                    format!("{path} is not a regular file"),
                ));
            }
        }
        // Re-open the very inode checked above, for reading.
        let file = std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|e| Error::Share(GuestError::from_io(&e, path)))?;
        Ok((file, st.st_size.max(0) as u64))
    }

    /// The directory `parts` beneath the root, created (owned by [`SHARE_OWNER`]) where missing.
    fn make_dirs(&self, parts: &[&str]) -> Result<OwnedFd> {
        let mut dir = self.open_beneath(&[], OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        for (i, part) in parts.iter().enumerate() {
            let so_far = parts[..=i].join("/");
            match mkdirat(dir.as_fd(), *part, Mode::from_bits_truncate(0o755)) {
                Ok(()) => {
                    fchownat(
                        dir.as_fd(),
                        *part,
                        Some(Uid::from_raw(SHARE_OWNER)),
                        Some(Gid::from_raw(SHARE_OWNER)),
                        AtFlags::AT_SYMLINK_NOFOLLOW,
                    )
                    .map_err(|e| errno(e, &so_far))?;
                }
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(errno(e, &so_far)),
            }
            dir = self.open_beneath(
                &parts[..=i],
                OFlag::O_PATH | OFlag::O_DIRECTORY,
                Mode::empty(),
            )?;
        }
        Ok(dir)
    }

    /// Writes `body` to file `path` (parents created), replacing what is there once the whole
    /// body arrived; returns the bytes written. A directory of that name is not replaced.
    pub async fn write(&self, path: &str, mut body: ByteStream) -> Result<u64> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(share_error(
                GuestErrorCode::IsADirectory,
                "the share's root is a directory".into(),
            ));
        };
        let dir = self.make_dirs(parents)?;
        let temp = format!(".platinum-upload-{}", rand::random::<u64>());
        let fd = nix::fcntl::openat(
            dir.as_fd(),
            temp.as_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| errno(e, path))?;
        let written = async {
            let mut file = tokio::fs::File::from_std(std::fs::File::from(fd));
            let mut total = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::io("reading the upload", e))?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::Share(GuestError::from_io(&e, path)))?;
                total += chunk.len() as u64;
            }
            file.sync_all()
                .await
                .map_err(|e| Error::Share(GuestError::from_io(&e, path)))?;
            fchownat(
                dir.as_fd(),
                temp.as_str(),
                Some(Uid::from_raw(SHARE_OWNER)),
                Some(Gid::from_raw(SHARE_OWNER)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| errno(e, path))?;
            renameat(dir.as_fd(), temp.as_str(), dir.as_fd(), *name).map_err(|e| match e {
                Errno::EISDIR | Errno::ENOTEMPTY | Errno::EEXIST => share_error(
                    GuestErrorCode::IsADirectory,
                    format!("{path} is a directory"),
                ),
                e => errno(e, path),
            })?;
            Ok::<_, Error>(total)
        }
        .await;
        if written.is_err() {
            let _ = unlinkat(dir.as_fd(), temp.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        written
    }

    /// Removes `path`: a file or symlink, an empty directory, or with `recursive` a directory
    /// and everything in it. The root itself cannot be removed.
    pub fn remove(&self, path: &str, recursive: bool) -> Result<()> {
        let parts = components(path)?;
        let Some((name, parents)) = parts.split_last() else {
            return Err(share_error(
                GuestErrorCode::InvalidArgument,
                "the share's root cannot be removed".into(),
            ));
        };
        let dir = self.open_beneath(parents, OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())?;
        let st = fstatat(dir.as_fd(), *name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| errno(e, path))?;
        if kind_of(&st) != ShareEntryKind::Dir {
            return unlinkat(dir.as_fd(), *name, UnlinkatFlags::NoRemoveDir)
                .map_err(|e| errno(e, path));
        }
        if recursive {
            let inner =
                self.open_beneath(&parts, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())?;
            empty_dir(inner, path)?;
        }
        unlinkat(dir.as_fd(), *name, UnlinkatFlags::RemoveDir).map_err(|e| errno(e, path))
    }
}

/// The names in the open directory `dir` (without `.` and `..`), and a descriptor of it to
/// operate on them with.
fn names_in(dir: OwnedFd, path: &str) -> Result<(Vec<std::ffi::CString>, OwnedFd)> {
    let keep = dir
        .try_clone()
        .map_err(|e| Error::Share(GuestError::from_io(&e, path)))?;
    let mut listing = nix::dir::Dir::from_fd(dir).map_err(|e| errno(e, path))?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry.map_err(|e| errno(e, path))?;
        let name = entry.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            names.push(name.to_owned());
        }
    }
    Ok((names, keep))
}

/// Removes everything in the open directory `dir`, descending through descriptors only (a
/// symlink is removed, never followed).
fn empty_dir(dir: OwnedFd, path: &str) -> Result<()> {
    let (names, dir) = names_in(dir, path)?;
    let fd = dir.as_fd();
    for name in names {
        let shown = format!("{path}/{}", name.to_string_lossy());
        let st = fstatat(fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|e| errno(e, &shown))?;
        if kind_of(&st) == ShareEntryKind::Dir {
            let child = nix::fcntl::openat(
                fd,
                name.as_c_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| errno(e, &shown))?;
            empty_dir(child, &shown)?;
            unlinkat(fd, name.as_c_str(), UnlinkatFlags::RemoveDir)
                .map_err(|e| errno(e, &shown))?;
        } else {
            unlinkat(fd, name.as_c_str(), UnlinkatFlags::NoRemoveDir)
                .map_err(|e| errno(e, &shown))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn body(data: &'static [u8]) -> ByteStream {
        Box::pin(futures::stream::iter([Ok(Bytes::from_static(data))]))
    }

    #[test]
    fn paths_are_relative_and_plain() {
        assert_eq!(components("").unwrap(), Vec::<&str>::new());
        assert_eq!(components("/").unwrap(), Vec::<&str>::new());
        assert_eq!(components("a/b.txt").unwrap(), ["a", "b.txt"]);
        assert_eq!(components("/a/b/").unwrap(), ["a", "b"]);
        for bad in ["a/../b", "..", "a//b", "./a", "a\0b"] {
            assert!(components(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn files_are_written_listed_read_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let share = ShareRoot::open(dir.path()).unwrap();
        assert_eq!(share.write("x/y/z.txt", body(b"hello")).await.unwrap(), 5);
        let (mut f, size) = share.open_file("x/y/z.txt").unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut f, &mut text).unwrap();
        assert_eq!((text.as_str(), size), ("hello", 5));
        let listed = share.list("x").unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(
            (listed[0].name.as_str(), listed[0].kind),
            ("y", ShareEntryKind::Dir)
        );
        // Replaced whole.
        share.write("x/y/z.txt", body(b"bye")).await.unwrap();
        assert_eq!(std::fs::read(dir.path().join("x/y/z.txt")).unwrap(), b"bye");
        assert!(matches!(
            share.open_file("x").unwrap_err(),
            Error::Share(GuestError {
                code: GuestErrorCode::IsADirectory,
                ..
            })
        ));
        assert!(share.remove("x", false).is_err(), "not empty");
        share.remove("x", true).unwrap();
        assert!(!dir.path().join("x").exists());
        assert!(matches!(
            share.stat("x").unwrap_err(),
            Error::Share(GuestError {
                code: GuestErrorCode::NotFound,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn planted_symlinks_are_never_followed() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "host secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        symlink(outside.path().join("secret"), dir.path().join("evil")).unwrap();
        symlink(outside.path(), dir.path().join("evildir")).unwrap();
        let share = ShareRoot::open(dir.path()).unwrap();
        for path in ["evil", "evildir/secret"] {
            let e = share.open_file(path).unwrap_err();
            assert!(
                matches!(
                    e,
                    Error::Share(GuestError {
                        code: GuestErrorCode::PermissionDenied,
                        ..
                    })
                ),
                "{path}: {e}"
            );
        }
        assert!(share.write("evildir/new", body(b"x")).await.is_err());
        assert!(!outside.path().join("new").exists());
        assert!(
            share.write("evil", body(b"overwritten")).await.is_ok(),
            "replaces the link itself"
        );
        assert_eq!(
            std::fs::read(outside.path().join("secret")).unwrap(),
            b"host secret"
        );
        // Removing a link to a directory removes the link, not what it points to.
        share.remove("evildir", true).unwrap();
        assert!(outside.path().join("secret").exists());
        assert_eq!(share.stat("evil").unwrap().kind, ShareEntryKind::File);
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        assert!(
            share.open_file("fifo").is_err(),
            "a FIFO is not read (it would block)"
        );
    }
}
