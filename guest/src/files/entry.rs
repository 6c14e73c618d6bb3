//! Describing one filesystem entry as the protocol's [`FileEntry`].

use crate::files::{metadata, paths};
use crate::users::UserDb;
use platinum_protocol::{FileEntry, FileKind, ResolvedLink};
use std::fs::{FileType, Metadata};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Describes `path` from metadata taken without following a final symlink (`symlink_metadata`),
/// except where the caller deliberately followed it (a file being read).
pub fn describe(path: &Path, md: &Metadata, db: &UserDb) -> FileEntry {
    let kind = kind_of(md.file_type());
    let (symlink_target, resolved) = match kind {
        FileKind::Symlink => (
            std::fs::read_link(path).ok().map(|t| paths::display(&t)),
            resolve_link(path),
        ),
        _ => (None, None),
    };
    let name = path.file_name().map_or_else(
        || paths::display(path),
        |n| n.to_string_lossy().into_owned(),
    );
    FileEntry {
        name,
        path: paths::display(path),
        kind,
        size: md.len(),
        mode: md.mode() & 0o7777,
        permissions: permissions(md.file_type(), md.mode()),
        owner: db
            .user_name(md.uid())
            .map_or_else(|| md.uid().to_string(), str::to_string),
        group: db
            .group_name(md.gid())
            .map_or_else(|| md.gid().to_string(), str::to_string),
        modified_unix_ns: md
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(md.mtime_nsec()),
        symlink_target,
        resolved,
        metadata: match kind {
            FileKind::File | FileKind::Dir => metadata::read(path),
            FileKind::Symlink | FileKind::Other => Default::default(),
        },
    }
}

/// Where the symlink `path` finally leads (runs as the caller, so a target the caller may not
/// reach resolves to nothing).
fn resolve_link(path: &Path) -> Option<ResolvedLink> {
    let target = std::fs::canonicalize(path).ok()?;
    let md = std::fs::metadata(&target).ok()?;
    Some(ResolvedLink {
        path: paths::display(&target),
        kind: kind_of(md.file_type()),
        mode: md.mode() & 0o7777,
    })
}

fn kind_of(t: FileType) -> FileKind {
    if t.is_symlink() {
        FileKind::Symlink
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_file() {
        FileKind::File
    } else {
        FileKind::Other
    }
}

/// `ls -l` style: type letter, then `rwx` triples with setuid/setgid/sticky folded in.
fn permissions(t: FileType, mode: u32) -> String {
    let type_char = if t.is_symlink() {
        'l'
    } else if t.is_dir() {
        'd'
    } else if t.is_char_device() {
        'c'
    } else if t.is_block_device() {
        'b'
    } else if t.is_fifo() {
        'p'
    } else if t.is_socket() {
        's'
    } else {
        '-'
    };
    let mut s = String::with_capacity(10);
    s.push(type_char);
    // (shift of the triple, special bit, letter when the special bit is set with/without x)
    for (shift, special, set_x, set_no_x) in [
        (6, 0o4000, 's', 'S'),
        (3, 0o2000, 's', 'S'),
        (0, 0o1000, 't', 'T'),
    ] {
        let bits = (mode >> shift) & 0o7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(match (mode & special != 0, bits & 1 != 0) {
            (true, true) => set_x,
            (true, false) => set_no_x,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permissions_read_like_ls() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").expect("write");
        let ftype = std::fs::symlink_metadata(&file).expect("stat").file_type();
        let dtype = std::fs::symlink_metadata(dir.path())
            .expect("stat")
            .file_type();
        assert_eq!(permissions(ftype, 0o644), "-rw-r--r--");
        assert_eq!(permissions(ftype, 0o4755), "-rwsr-xr-x");
        assert_eq!(permissions(ftype, 0o2644), "-rw-r-Sr--");
        assert_eq!(permissions(dtype, 0o1777), "drwxrwxrwt");
        assert_eq!(permissions(dtype, 0o1776), "drwxrwxrwT");
    }
}
