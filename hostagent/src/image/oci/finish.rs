//! An unpacked image made a sandbox root: the mount points the guest agent uses, a shell, the
//! `user` account sandboxes run commands as, and the files every root gets (hostname, hosts,
//! a placeholder resolv.conf, an empty machine id).
//!
//! The tree is untrusted. The files changed here sit in directories checked to be real
//! directories, never symbolic links, and are opened without following a link, so the host
//! reads and writes only inside the tree; symbolic links inside the image (`/bin/sh ->
//! busybox`) are resolved as the guest will see them, with the tree as the root.

use std::collections::{HashSet, VecDeque};
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, IoContext, Result};
use crate::image::rootfs::{USER, USER_ID, write_host_files, write_sudoers};

/// Directories the root must have: the guest agent mounts over the first five.
const DIRS: [(&str, u32); 8] = [
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("etc", 0o755),
    ("root", 0o700),
    ("home", 0o755),
];

/// Most symbolic links followed while resolving one path (Linux's limit).
const MAX_LINKS: usize = 40;

fn refuse(message: String) -> Error {
    Error::Image {
        step: "finishing the image".into(),
        message,
    }
}

/// Finishes `tree` (see the module docs).
pub(crate) fn finish_tree(tree: &Path) -> Result<()> {
    for (dir, mode) in DIRS {
        ensure_dir(tree, dir, mode)?;
    }
    if resolve(tree, "/bin/sh").is_none() {
        return Err(refuse(
            "the image has no /bin/sh; sandboxes run their commands with it".into(),
        ));
    }
    let shell = if resolve(tree, "/bin/bash").is_some() {
        "/bin/bash"
    } else {
        "/bin/sh"
    };
    add_user(tree, shell)?;
    write_host_files(tree)?;
    if is_real_dir(&tree.join("etc/sudoers.d")) {
        write_sudoers(tree)?;
    }
    Ok(())
}

fn is_real_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}

/// Makes `name` (one component) a directory of the tree: a missing one is created, a symbolic
/// link in the place of a mount point is replaced, and one in the place of `/etc`, `/root` or
/// `/home` is refused.
fn ensure_dir(tree: &Path, name: &str, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = tree.join(name);
    match path.symlink_metadata() {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(m) if m.file_type().is_symlink() && ["etc", "root", "home"].contains(&name) => {
            return Err(refuse(format!(
                "the image's /{name} is a symbolic link; it must be a directory"
            )));
        }
        Ok(_) => std::fs::remove_file(&path).ctx(|| format!("replacing {}", path.display()))?,
        Err(_) => {}
    }
    std::fs::create_dir(&path).ctx(|| format!("creating {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .ctx(|| format!("setting the mode of {}", path.display()))
}

/// Where absolute `path` leads inside `tree`, symbolic links followed with `tree` as the root;
/// `None` when it does not exist.
fn resolve(tree: &Path, path: &str) -> Option<PathBuf> {
    let mut todo: VecDeque<PathBuf> = components(Path::new(path));
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(part) = todo.pop_front() {
        if part.as_os_str() == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&part);
        // `at` holds no symbolic link, so this looks inside the tree only.
        let meta = tree.join(&next).symlink_metadata().ok()?;
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return None;
            }
            let target = std::fs::read_link(tree.join(&next)).ok()?;
            if target.is_absolute() {
                at = PathBuf::new();
            }
            for c in components(&target).into_iter().rev() {
                todo.push_front(c);
            }
        } else {
            at = next;
        }
    }
    Some(at)
}

fn components(path: &Path) -> VecDeque<PathBuf> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            _ => None,
        })
        .collect()
}

/// Reads `etc/<name>` without following a link; `None` when it does not exist.
fn read_etc(tree: &Path, name: &str) -> Result<Option<String>> {
    let path = tree.join("etc").join(name);
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(refuse(format!(
                "cannot read the image's /etc/{name} (a symbolic link?): {e}"
            )));
        }
    };
    let mut text = String::new();
    // A database too large for memory is no account database.
    (&mut file)
        .take(16 << 20)
        .read_to_string(&mut text)
        .map_err(|e| refuse(format!("the image's /etc/{name}: {e}")))?;
    Ok(Some(text))
}

/// Appends `line` to `etc/<name>` (created when missing), keeping its owner and mode.
fn append_etc(tree: &Path, name: &str, before: Option<&str>, line: &str) -> Result<()> {
    let path = tree.join("etc").join(name);
    let mut file = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    let newline = before.is_some_and(|t| !t.is_empty() && !t.ends_with('\n'));
    let text = format!("{}{line}\n", if newline { "\n" } else { "" });
    file.write_all(text.as_bytes())
        .ctx(|| format!("writing {}", path.display()))
}

/// The ids in field `field` of a colon-separated database.
fn ids(text: &str, field: usize) -> HashSet<u32> {
    text.lines()
        .filter_map(|l| l.split(':').nth(field)?.parse().ok())
        .collect()
}

/// Adds the `user` account (uid and gid 1000, or the next free ones) with a home directory,
/// unless the image has one.
fn add_user(tree: &Path, shell: &str) -> Result<()> {
    let passwd = read_etc(tree, "passwd")?;
    let group = read_etc(tree, "group")?;
    let has = |text: &Option<String>, name: &str| {
        text.as_deref()
            .is_some_and(|t| t.lines().any(|l| l.split(':').next() == Some(name)))
    };
    if passwd.is_none() {
        append_etc(tree, "passwd", None, "root:x:0:0:root:/root:/bin/sh")?;
    }
    if group.is_none() {
        append_etc(tree, "group", None, "root:x:0:")?;
    }
    if has(&passwd, USER) {
        return Ok(());
    }
    let taken: HashSet<u32> = ids(passwd.as_deref().unwrap_or(""), 2)
        .union(&ids(group.as_deref().unwrap_or(""), 2))
        .copied()
        .collect();
    let id = (USER_ID..u32::MAX)
        .find(|i| !taken.contains(i))
        .ok_or_else(|| refuse("no free user id".into()))?;
    append_etc(
        tree,
        "passwd",
        passwd.as_deref(),
        &format!("{USER}:x:{id}:{id}::/home/{USER}:{shell}"),
    )?;
    if !has(&group, USER) {
        append_etc(tree, "group", group.as_deref(), &format!("{USER}:x:{id}:"))?;
    }
    if let Some(shadow) = read_etc(tree, "shadow")? {
        append_etc(tree, "shadow", Some(&shadow), &format!("{USER}:!:1::::::"))?;
    }
    let home = tree.join("home").join(USER);
    if home.symlink_metadata().is_err() {
        std::fs::create_dir(&home).ctx(|| format!("creating {}", home.display()))?;
        std::os::unix::fs::chown(&home, Some(id), Some(id))
            .ctx(|| format!("chown {}", home.display()))?;
        std::fs::set_permissions(&home, std::os::unix::fs::PermissionsExt::from_mode(0o750))
            .ctx(|| format!("setting the mode of {}", home.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (p, content) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            if let Some(target) = content.strip_prefix("->") {
                std::os::unix::fs::symlink(target, &path).unwrap();
            } else {
                std::fs::write(&path, content).unwrap();
            }
        }
        dir
    }

    #[test]
    fn a_busybox_image_gets_mount_points_user_and_host_files() {
        let dir = tree_with(&[
            ("bin/busybox", "elf"),
            ("bin/sh", "->busybox"),
            (
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nubuntu:x:1000:1000::/home/ubuntu:/bin/sh",
            ),
            ("etc/group", "root:x:0:\nubuntu:x:1000:\n"),
        ]);
        let t = dir.path();
        finish_tree(t).unwrap();
        for (d, _) in DIRS {
            assert!(is_real_dir(&t.join(d)), "{d}");
        }
        let passwd = std::fs::read_to_string(t.join("etc/passwd")).unwrap();
        assert!(
            passwd.ends_with("\nuser:x:1001:1001::/home/user:/bin/sh\n"),
            "{passwd}"
        );
        assert!(passwd.contains("ubuntu:x:1000"));
        let group = std::fs::read_to_string(t.join("etc/group")).unwrap();
        assert!(group.ends_with("user:x:1001:\n"), "{group}");
        assert!(is_real_dir(&t.join("home/user")));
        assert!(std::fs::read_to_string(t.join("etc/hostname")).is_ok());
        // Again: nothing is added twice.
        finish_tree(t).unwrap();
        let again = std::fs::read_to_string(t.join("etc/passwd")).unwrap();
        assert_eq!(again.lines().filter(|l| l.starts_with("user:")).count(), 1);
    }

    #[test]
    fn a_scratch_image_without_a_shell_is_refused() {
        let dir = tree_with(&[("app", "elf")]);
        let e = finish_tree(dir.path()).unwrap_err().to_string();
        assert!(e.contains("/bin/sh"), "{e}");
    }

    #[test]
    fn links_are_resolved_inside_the_tree_never_on_the_host() {
        let dir = tree_with(&[
            ("usr/bin/dash", "elf"),
            ("bin", "->usr/bin"),
            ("usr/bin/sh", "->/bin/dash"),
            ("loop", "->loop"),
            ("host", "->/etc/hostname"),
        ]);
        let t = dir.path();
        assert_eq!(resolve(t, "/bin/sh"), Some(PathBuf::from("usr/bin/dash")));
        assert_eq!(resolve(t, "/loop"), None);
        // The host has /etc/hostname; the tree does not.
        assert_eq!(resolve(t, "/host"), None);
    }

    #[test]
    fn an_etc_that_is_a_link_or_a_passwd_that_is_a_link_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "secret").unwrap();
        let link = format!("->{}", outside.path().display());
        let dir = tree_with(&[("bin/sh", "elf"), ("etc", link.as_str())]);
        assert!(finish_tree(dir.path()).is_err());
        let target = format!("->{}", outside.path().join("passwd").display());
        let dir = tree_with(&[("bin/sh", "elf"), ("etc/passwd", target.as_str())]);
        assert!(finish_tree(dir.path()).is_err());
        assert_eq!(
            std::fs::read_to_string(outside.path().join("passwd")).unwrap(),
            "secret"
        );
    }
}
