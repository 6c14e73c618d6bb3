//! One image layer applied to a directory: a tar archive (gzip-compressed or not, recognised by
//! its first bytes) unpacked over what the layers before it left, with the OCI whiteouts
//! (`.wh.NAME` removes `NAME`, `.wh..wh..opq` empties its directory of what lower layers put
//! there).
//!
//! The archive is untrusted. Paths are relative and never contain `..`; the [`tar`] crate
//! refuses to write through a symbolic link that leads out of the directory, and whiteouts and
//! replacements here resolve their parent directory inside it first, so nothing outside is
//! read, written or removed. Owners, modes and times are kept (the host runs this as root);
//! extended attributes are not. [`Budget`] bounds the bytes and entries over all layers.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

/// The marker of an opaque directory.
const OPAQUE: &str = ".wh..wh..opq";
/// The prefix of a whiteout.
const WHITEOUT: &str = ".wh.";

/// What the image's files may still take.
pub(crate) struct Budget {
    bytes_left: u64,
    entries_left: u64,
}

impl Budget {
    /// At most `bytes` of file content and `entries` entries in all.
    pub fn new(bytes: u64, entries: u64) -> Self {
        Self {
            bytes_left: bytes,
            entries_left: entries,
        }
    }

    fn take(&mut self, bytes: u64) -> Result<()> {
        self.entries_left = self
            .entries_left
            .checked_sub(1)
            .ok_or_else(|| invalid("the image has more files than this host unpacks".into()))?;
        self.bytes_left = self.bytes_left.checked_sub(bytes).ok_or_else(|| {
            invalid("the image's files are larger than the template's disk".into())
        })?;
        Ok(())
    }
}

fn invalid(message: String) -> Error {
    Error::Image {
        step: "unpacking the image".into(),
        message,
    }
}

/// Applies the layer in `file` to `tree` (see the module docs).
pub(crate) fn apply_layer(tree: &Path, file: &Path, budget: &mut Budget) -> Result<()> {
    let io = |what: &str, e: std::io::Error| Error::io(format!("{what} {}", file.display()), e);
    let mut f = File::open(file).map_err(|e| io("opening", e))?;
    let mut magic = [0u8; 2];
    let gzip = f.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    f.rewind().map_err(|e| io("reading", e))?;
    let reader: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    };
    let root = tree
        .canonicalize()
        .map_err(|e| Error::io(format!("resolving {}", tree.display()), e))?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let broken = |e: std::io::Error| invalid(format!("the layer is not a valid tar archive: {e}"));
    // What this layer wrote: an opaque marker hides the lower layers' files, not these.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(broken)? {
        let mut entry = entry.map_err(broken)?;
        let path = entry.path().map_err(broken)?.into_owned();
        let Some(rel) = clean(&path)? else {
            continue;
        };
        budget.take(entry.header().entry_size().map_err(broken)?)?;
        let name = rel
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name == OPAQUE {
            let dir = rel.parent().unwrap_or(Path::new(""));
            if let Some(dir) = resolve_inside(&root, &tree.join(dir))? {
                clear_dir(&root, &dir, &written)?;
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            if let Some(parent) = parent_inside(&root, tree, &rel)? {
                remove_any(&parent.join(hidden))?;
            }
            continue;
        }
        // A directory stays a directory (its mode and owner are updated); anything else
        // replaces what a lower layer had there.
        if let Some(parent) = parent_inside(&root, tree, &rel)? {
            let target = parent.join(rel.file_name().unwrap_or_default());
            if let Ok(meta) = target.symlink_metadata() {
                let both_dirs = meta.is_dir() && entry.header().entry_type().is_dir();
                if !both_dirs {
                    remove_any(&target)?;
                }
            }
        }
        entry
            .unpack_in(tree)
            .map_err(|e| invalid(format!("{}: {e}", rel.display())))?;
        written.insert(root.join(&rel));
    }
    Ok(())
}

/// The path of an archive entry made relative, or `None` for the root itself; `..` and
/// anything but plain names is refused.
fn clean(path: &Path) -> Result<Option<PathBuf>> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(invalid(format!(
                    "entry {} leaves the image's root",
                    path.display()
                )));
            }
        }
    }
    Ok((!rel.as_os_str().is_empty()).then_some(rel))
}

/// `path` with every symbolic link resolved, if it exists; an error if it resolves outside
/// `root`.
fn resolve_inside(root: &Path, path: &Path) -> Result<Option<PathBuf>> {
    match path.canonicalize() {
        Ok(p) if p.starts_with(root) => Ok(Some(p)),
        Ok(_) => Err(invalid(format!(
            "{} resolves outside the image's root",
            path.display()
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("resolving {}", path.display()), e)),
    }
}

/// The directory `rel` is in, resolved inside `root`, if it exists.
fn parent_inside(root: &Path, tree: &Path, rel: &Path) -> Result<Option<PathBuf>> {
    let parent = rel.parent().unwrap_or(Path::new(""));
    resolve_inside(root, &tree.join(parent))
}

/// Removes `path` itself (a symbolic link is removed, not followed), if it exists.
fn remove_any(path: &Path) -> Result<()> {
    let result = match path.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(|e| Error::io(format!("removing {}", path.display()), e))
}

/// Removes what `dir` holds, but for what this layer wrote.
fn clear_dir(root: &Path, dir: &Path, keep: &HashSet<PathBuf>) -> Result<()> {
    let list =
        std::fs::read_dir(dir).map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
    for child in list {
        let child = child
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?
            .path();
        let ours = keep.iter().any(|k| k.starts_with(&child));
        if !ours && child.starts_with(root) {
            remove_any(&child)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive of `(path, content)` files, `(path, None)` directories and
    /// `(path, Some("->target"))` symbolic links.
    fn layer(dir: &Path, name: &str, entries: &[(&str, Option<&str>)]) -> PathBuf {
        let path = dir.join(name);
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        for (p, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            h.set_uid(0);
            h.set_gid(0);
            match content {
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, p, std::io::empty()).unwrap();
                }
                Some(t) if t.starts_with("->") => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, p, &t[2..]).unwrap();
                }
                Some(t) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(t.len() as u64);
                    b.append_data(&mut h, p, t.as_bytes()).unwrap();
                }
            }
        }
        b.finish().unwrap();
        path
    }

    fn budget() -> Budget {
        Budget::new(1 << 20, 1000)
    }

    #[test]
    fn layers_stack_with_whiteouts_and_opaque_directories() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let one = layer(
            dir.path(),
            "1",
            &[
                ("etc", None),
                ("etc/os-release", Some("ID=one\n")),
                ("etc/gone", Some("x")),
                ("opt", None),
                ("opt/old", Some("old")),
                ("bin", None),
                ("bin/tool", Some("v1")),
            ],
        );
        let two = layer(
            dir.path(),
            "2",
            &[
                ("opt/new", Some("new")),
                ("opt/.wh..wh..opq", Some("")),
                ("etc/.wh.gone", Some("")),
                ("bin/tool", Some("v2")),
                ("./etc/os-release", Some("ID=two\n")),
            ],
        );
        let mut b = budget();
        apply_layer(&tree, &one, &mut b).unwrap();
        apply_layer(&tree, &two, &mut b).unwrap();
        let read = |p: &str| std::fs::read_to_string(tree.join(p)).ok();
        assert_eq!(read("etc/os-release").as_deref(), Some("ID=two\n"));
        assert_eq!(read("bin/tool").as_deref(), Some("v2"));
        assert_eq!(read("etc/gone"), None);
        assert_eq!(
            read("opt/old"),
            None,
            "the opaque marker hides the lower layer"
        );
        assert_eq!(
            read("opt/new").as_deref(),
            Some("new"),
            "but not its own layer"
        );
    }

    #[test]
    fn nothing_is_written_or_removed_outside_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&tree).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), "host").unwrap();
        let target = format!("->{}", outside.display());
        let link = layer(dir.path(), "link", &[("escape", Some(target.as_str()))]);
        apply_layer(&tree, &link, &mut budget()).unwrap();
        for (name, entries) in [
            ("write", vec![("escape/planted", Some("x"))]),
            ("whiteout", vec![("escape/.wh.keep", Some(""))]),
            ("opaque", vec![("escape/.wh..wh..opq", Some(""))]),
        ] {
            let l = layer(dir.path(), name, &entries);
            assert!(apply_layer(&tree, &l, &mut budget()).is_err(), "{name}");
        }
        assert_eq!(
            std::fs::read_to_string(outside.join("keep")).unwrap(),
            "host"
        );
        assert!(!outside.join("planted").exists());
        assert!(clean(Path::new("../x")).is_err());
        assert!(clean(Path::new("a/../../x")).is_err());
        assert_eq!(clean(Path::new("./")).unwrap(), None);
        assert_eq!(
            clean(Path::new("/a/b")).unwrap(),
            Some(PathBuf::from("a/b"))
        );
    }

    #[test]
    fn the_budget_bounds_bytes_and_entries_and_garbage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let big = layer(dir.path(), "big", &[("f", Some("0123456789"))]);
        let e = apply_layer(&tree, &big, &mut Budget::new(5, 10)).unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
        let many = layer(dir.path(), "many", &[("a", Some("")), ("b", Some(""))]);
        let e = apply_layer(&tree, &many, &mut Budget::new(100, 1)).unwrap_err();
        assert!(e.to_string().contains("more files"), "{e}");
        let garbage = dir.path().join("garbage");
        std::fs::write(&garbage, vec![0x1f, 0x8b, 1, 2, 3]).unwrap();
        assert!(apply_layer(&tree, &garbage, &mut budget()).is_err());
    }

    #[test]
    fn gzip_layers_are_recognised() {
        use std::io::Write;
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let plain = layer(dir.path(), "plain", &[("hello", Some("hi"))]);
        let gz = dir.path().join("gz");
        let mut enc = flate2::write::GzEncoder::new(File::create(&gz).unwrap(), Default::default());
        enc.write_all(&std::fs::read(plain).unwrap()).unwrap();
        enc.finish().unwrap();
        apply_layer(&tree, &gz, &mut budget()).unwrap();
        assert_eq!(std::fs::read_to_string(tree.join("hello")).unwrap(), "hi");
    }
}
