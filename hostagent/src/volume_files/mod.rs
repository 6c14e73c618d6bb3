//! Files in a volume's ext4 image, read and written by the host without mounting it: the host
//! kernel never mounts a filesystem a guest wrote. Every operation is a few `debugfs` runs
//! ([`debugfs`]), sandboxed and fed commands the host built, after `e2fsck` replayed the journal
//! if a guest that stopped without unmounting left it unreplayed.
//!
//! Paths are relative to the volume's root (a leading `/` is allowed): no `..` component, no
//! NUL, no double quote or control character (the `debugfs` parser cannot carry them), no
//! component that `debugfs` would read as an inode number (`<12>`); see [`components`]. A path is
//! resolved one directory at a time from the directory listings, and a symbolic link on the way
//! is refused rather than followed; a final symlink is described (and removed) as itself, never
//! read or written through. New files and directories belong to uid/gid 1000 (the templates'
//! `user`, who also owns the volume's root) unless asked otherwise. Failures are
//! [`Error::Volume`], classified like the guest's own file errors.

mod debugfs;
mod parse;

use std::io::Write as _;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use platinum_protocol::GuestErrorCode;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::share::ByteStream;
use debugfs::{malformed, quote, volume_error};
use parse::{Listed, Stat};

/// The owner of what the host creates in a volume: the templates' `user` account.
pub const VOLUME_OWNER: u32 = 1000;
/// Longest path accepted.
const MAX_PATH: usize = 4096;
/// Deepest listing (and deepest tree a recursive remove walks).
pub const MAX_DEPTH: u32 = 32;
/// Most entries one listing returns.
const MAX_ENTRIES: usize = 100_000;
/// The root directory's inode number in every ext4 filesystem.
const ROOT_INO: u32 = 2;

/// What a volume entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VolumeEntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (described, never followed).
    Symlink,
    /// Anything else (a FIFO, a device node, a socket).
    Other,
}

/// One file, directory or link in a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeEntry {
    /// Last path component (empty for the root).
    pub name: String,
    /// Path from the volume's root, starting with `/`.
    pub path: String,
    /// What it is.
    pub kind: VolumeEntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Last access, seconds since the Unix epoch.
    pub atime: i64,
    /// Last modification.
    pub mtime: i64,
    /// Last inode change.
    pub ctime: i64,
    /// A symlink's target as the link holds it (when the host could read it).
    pub target: Option<String>,
}

/// Owner, group and permission bits for what is created or changed (unset: the default on
/// create, unchanged on change).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttrs {
    /// Owner uid.
    pub uid: Option<u32>,
    /// Group gid.
    pub gid: Option<u32>,
    /// Permission bits (at most `0o7777`).
    pub mode: Option<u32>,
}

impl VolumeAttrs {
    fn check(&self) -> Result<()> {
        if self.mode.is_some_and(|m| m > 0o7777) {
            return Err(volume_error(
                GuestErrorCode::InvalidArgument,
                "mode must be at most 0o7777",
            ));
        }
        Ok(())
    }
}

/// The components of a volume path, checked (see the module documentation). `""` and `/` are
/// the root; empty and `.` components are skipped.
pub fn components(path: &str) -> Result<Vec<&str>> {
    let invalid = |why: &str| {
        Err(volume_error(
            GuestErrorCode::InvalidArgument,
            format!("volume path {path:?} {why}"),
        ))
    };
    if path.len() > MAX_PATH || path.contains('\0') {
        return invalid("must be at most 4096 bytes, without NUL");
    }
    let parts: Vec<&str> = path
        .split('/')
        .filter(|p| !p.is_empty() && *p != ".")
        .collect();
    for p in &parts {
        if *p == ".." {
            return invalid("may not have a .. component");
        }
        if p.len() > 255 {
            return invalid("has a component longer than 255 bytes");
        }
        if p.chars().any(|c| c == '"' || c.is_control()) {
            return invalid("may not hold double quotes or control characters");
        }
        if p.starts_with('<') && p.ends_with('>') {
            return invalid("may not have a component in angle brackets");
        }
    }
    Ok(parts)
}

/// The canonical path of `parts` (`/a/b`, `/` for the root).
fn joined(parts: &[&str]) -> String {
    format!("/{}", parts.join("/"))
}

/// Where a path leads in the image.
struct Walk {
    /// Inodes of the directories that exist along the path: the root, then one per component.
    dirs: Vec<u32>,
    /// The last component, when it exists: its listing and its stat.
    found: Option<(Listed, Stat)>,
}

impl Walk {
    /// Components that exist as directories (not counting the root).
    fn existing(&self) -> usize {
        self.dirs.len() - 1
    }
}

/// A volume image and a directory for the scratch files of its operations.
#[derive(Debug, Clone)]
pub struct VolumeImage {
    image: PathBuf,
    scratch: PathBuf,
}

impl VolumeImage {
    /// The image at `image` (a path the host chose); scratch directories are made, private, in
    /// `scratch`.
    pub fn new(image: PathBuf, scratch: PathBuf) -> Self {
        VolumeImage { image, scratch }
    }

    /// A fresh private (0700) scratch directory, removed when dropped.
    fn scratch(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix(".debugfs-")
            .tempdir_in(&self.scratch)
            .ctx(|| format!("creating a scratch directory in {}", self.scratch.display()))
    }

    fn image_len(&self) -> Result<u64> {
        Ok(std::fs::metadata(&self.image)
            .ctx(|| format!("reading {}", self.image.display()))?
            .len())
    }

    /// Replays the image's journal when a guest left it unreplayed: every operation starts
    /// here.
    async fn prepare(&self) -> Result<()> {
        let scratch = self.scratch()?;
        debugfs::replay_journal(&self.image, scratch.path(), self.image_len()?).await
    }

    /// Runs read-only commands.
    async fn read(&self, script: &[String]) -> Result<Vec<debugfs::Section>> {
        let scratch = self.scratch()?;
        Ok(
            debugfs::run(&self.image, false, script, scratch.path(), 1 << 20)
                .await?
                .sections,
        )
    }

    /// Runs commands that change the image; anything on standard error is a failure.
    async fn change(&self, script: &[String], scratch: &Path) -> Result<()> {
        let out = debugfs::run(&self.image, true, script, scratch, self.image_len()?).await?;
        if out.errors.is_empty() {
            return Ok(());
        }
        let text = out.errors.join("; ");
        let code = if text.contains("No free space") || text.contains("Could not allocate") {
            GuestErrorCode::NoSpace
        } else {
            GuestErrorCode::Io
        };
        Err(volume_error(code, format!("changing the volume: {text}")))
    }

    /// Resolves `parts`: every directory on the way (never through a symlink) and the last
    /// component when it exists. One `debugfs` run lists each directory and stats the target.
    async fn walk(&self, parts: &[&str]) -> Result<Walk> {
        let mut script = Vec::with_capacity(parts.len() + 1);
        for i in 0..parts.len() {
            script.push(format!("ls -p {}", quote(&joined(&parts[..i]))?));
        }
        script.push(format!("stat {}", quote(&joined(parts))?));
        let sections = self.read(&script).await?;
        let mut dirs = vec![ROOT_INO];
        for (i, part) in parts.iter().enumerate() {
            let Some(entry) = sections[i]
                .lines
                .iter()
                .filter_map(|l| parse::listed(l))
                .find(|e| e.name == *part)
            else {
                return Ok(Walk { dirs, found: None });
            };
            let last = i + 1 == parts.len();
            if last {
                let stat = parse::stat(&sections[parts.len()].lines)
                    .ok_or_else(|| malformed("an entry's stat report is unreadable"))?;
                return Ok(Walk {
                    dirs,
                    found: Some((entry, stat)),
                });
            }
            match entry.kind() {
                VolumeEntryKind::Dir => dirs.push(entry.ino),
                VolumeEntryKind::Symlink => {
                    return Err(volume_error(
                        GuestErrorCode::PermissionDenied,
                        format!(
                            "{}: the path passes through a symbolic link, which is not followed",
                            joined(parts)
                        ),
                    ));
                }
                _ => {
                    return Err(volume_error(
                        GuestErrorCode::NotADirectory,
                        format!("{}: not a directory", joined(&parts[..=i])),
                    ));
                }
            }
        }
        // The root itself.
        let stat = parse::stat(&sections[0].lines)
            .ok_or_else(|| malformed("the root's stat report is unreadable"))?;
        let root = Listed {
            ino: ROOT_INO,
            mode: 0o040000 | stat.mode,
            name: String::new(),
        };
        Ok(Walk {
            dirs,
            found: Some((root, stat)),
        })
    }

    /// Resolves `parts` to something that exists.
    async fn existing(&self, parts: &[&str]) -> Result<(Listed, Stat)> {
        self.walk(parts).await?.found.ok_or_else(|| {
            volume_error(
                GuestErrorCode::NotFound,
                format!("{}: no such file or directory", joined(parts)),
            )
        })
    }

    /// What `path` is (a final symlink described as itself).
    pub async fn stat(&self, path: &str) -> Result<VolumeEntry> {
        self.prepare().await?;
        let parts = components(path)?;
        let (_, stat) = self.existing(&parts).await?;
        Ok(entry(&joined(&parts), stat))
    }

    /// The entries of directory `path`, `depth` levels deep (1: its children), each level
    /// sorted by name.
    pub async fn list(&self, path: &str, depth: u32) -> Result<Vec<VolumeEntry>> {
        self.prepare().await?;
        if depth == 0 || depth > MAX_DEPTH {
            return Err(volume_error(
                GuestErrorCode::InvalidArgument,
                format!("depth must be 1..={MAX_DEPTH}"),
            ));
        }
        let parts = components(path)?;
        let (dir, stat) = self.existing(&parts).await?;
        if stat.kind != VolumeEntryKind::Dir {
            return Err(volume_error(
                GuestErrorCode::NotADirectory,
                format!("{}: not a directory", joined(&parts)),
            ));
        }
        let base = joined(&parts);
        let mut out = Vec::new();
        let mut level = vec![(dir.ino, base.trim_end_matches('/').to_string())];
        for _ in 0..depth {
            if level.is_empty() {
                break;
            }
            let script: Vec<String> = level
                .iter()
                .map(|(ino, _)| format!("ls -p <{ino}>"))
                .collect();
            let sections = self.read(&script).await?;
            let mut children: Vec<(Listed, String)> = Vec::new();
            for ((_, dir_path), section) in level.iter().zip(&sections) {
                let mut listed: Vec<Listed> = section
                    .lines
                    .iter()
                    .filter_map(|l| parse::listed(l))
                    .collect();
                listed.sort_by(|a, b| a.name.cmp(&b.name));
                for l in listed {
                    let path = format!("{dir_path}/{}", l.name);
                    children.push((l, path));
                }
            }
            if out.len() + children.len() > MAX_ENTRIES {
                return Err(volume_error(
                    GuestErrorCode::InvalidArgument,
                    format!("{base}: more than {MAX_ENTRIES} entries; list less deep"),
                ));
            }
            if children.is_empty() {
                break;
            }
            let script: Vec<String> = children
                .iter()
                .map(|(l, _)| format!("stat <{}>", l.ino))
                .collect();
            let stats = self.read(&script).await?;
            level = Vec::new();
            for ((listed, path), section) in children.into_iter().zip(&stats) {
                // An inode that does not stat (a corrupt entry) is left out.
                let Some(stat) = parse::stat(&section.lines) else {
                    continue;
                };
                if listed.kind() == VolumeEntryKind::Dir && stat.kind == VolumeEntryKind::Dir {
                    level.push((listed.ino, path.clone()));
                }
                out.push(entry(&path, stat));
            }
        }
        Ok(out)
    }

    /// Copies regular file `path` out of the image: an open file (already unlinked) and its
    /// size.
    pub async fn read_file(&self, path: &str) -> Result<(std::fs::File, u64)> {
        self.prepare().await?;
        let parts = components(path)?;
        let (listed, stat) = self.existing(&parts).await?;
        require_file(&parts, stat.kind)?;
        let scratch = self.scratch()?;
        let out = scratch.path().join("out");
        let script = vec![format!("dump <{}> {}", listed.ino, quote_host(&out)?)];
        let fsize = self.image_len()?;
        let run = debugfs::run(&self.image, false, &script, scratch.path(), fsize).await?;
        let file = std::fs::File::open(&out).map_err(|_| {
            volume_error(
                GuestErrorCode::Io,
                format!(
                    "{}: could not be read: {}",
                    joined(&parts),
                    run.errors.join("; ")
                ),
            )
        })?;
        let size = file
            .metadata()
            .ctx(|| format!("reading {}", out.display()))?
            .len();
        Ok((file, size))
    }

    /// Writes file `path` from `body` (missing parent directories created, an existing file or
    /// symlink replaced; at most `limit` bytes: more is `no_space`) and describes it.
    pub async fn write_file(
        &self,
        path: &str,
        mut body: ByteStream,
        attrs: VolumeAttrs,
        limit: u64,
    ) -> Result<VolumeEntry> {
        attrs.check()?;
        let parts = components(path)?;
        let Some((name, _)) = parts.split_last() else {
            return Err(is_a_directory("/"));
        };
        let scratch = self.scratch()?;
        let upload = scratch.path().join("upload");
        {
            let mut file = std::fs::File::create_new(&upload)
                .ctx(|| format!("creating {}", upload.display()))?;
            let mut seen = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| Error::io("reading the upload body", e))?;
                seen += chunk.len() as u64;
                if seen > limit {
                    return Err(volume_error(
                        GuestErrorCode::NoSpace,
                        format!("{}: larger than {limit} bytes", joined(&parts)),
                    ));
                }
                file.write_all(&chunk)
                    .ctx(|| format!("writing {}", upload.display()))?;
            }
        }
        self.prepare().await?;
        let walk = self.walk(&parts).await?;
        let mut script = self.make_parents(&parts, &walk)?;
        if let Some((_, stat)) = &walk.found {
            if stat.kind == VolumeEntryKind::Dir {
                return Err(is_a_directory(&joined(&parts)));
            }
            script.push(format!("rm {}", quote(name)?));
        }
        script.push(format!("write {} {}", quote_host(&upload)?, quote(name)?));
        script.extend(set_attrs(name, 0o100000, attrs, 0o644)?);
        self.change(&script, scratch.path()).await?;
        tracing::debug!(image = %self.image.display(), path = %joined(&parts), "volume file written");
        self.stat(path).await
    }

    /// `cd` into the deepest existing directory on the way to the last of `parts`, creating
    /// (owned by [`VOLUME_OWNER`]) and entering each missing one.
    fn make_parents(&self, parts: &[&str], walk: &Walk) -> Result<Vec<String>> {
        let parent = parts.len() - 1;
        let have = walk.existing().min(parent);
        let mut script = vec![format!("cd <{}>", walk.dirs[have])];
        for dir in &parts[have..parent] {
            script.push(format!("mkdir {}", quote(dir)?));
            script.extend(set_attrs(dir, 0o040000, VolumeAttrs::default(), 0o755)?);
            script.push(format!("cd {}", quote(dir)?));
        }
        Ok(script)
    }

    /// Creates directory `path` (`parents`: its missing parents too; else a missing parent is
    /// `not_found`). Returns it and whether it was created (an existing directory is kept).
    pub async fn make_dir(
        &self,
        path: &str,
        parents: bool,
        attrs: VolumeAttrs,
    ) -> Result<(VolumeEntry, bool)> {
        attrs.check()?;
        let parts = components(path)?;
        self.prepare().await?;
        let walk = self.walk(&parts).await?;
        if let Some((_, stat)) = walk.found {
            if stat.kind != VolumeEntryKind::Dir {
                return Err(volume_error(
                    GuestErrorCode::AlreadyExists,
                    format!("{}: exists and is not a directory", joined(&parts)),
                ));
            }
            return Ok((entry(&joined(&parts), stat), false));
        }
        let Some((name, _)) = parts.split_last() else {
            return Err(malformed("the root directory is missing"));
        };
        if !parents && walk.existing() + 1 < parts.len() {
            return Err(volume_error(
                GuestErrorCode::NotFound,
                format!("{}: the parent directory does not exist", joined(&parts)),
            ));
        }
        let scratch = self.scratch()?;
        let mut script = self.make_parents(&parts, &walk)?;
        script.push(format!("mkdir {}", quote(name)?));
        script.extend(set_attrs(name, 0o040000, attrs, 0o755)?);
        self.change(&script, scratch.path()).await?;
        Ok((self.stat(path).await?, true))
    }

    /// Removes `path`: a file or symlink, or a directory with everything in it.
    pub async fn remove(&self, path: &str) -> Result<()> {
        self.prepare().await?;
        let parts = components(path)?;
        if parts.is_empty() {
            return Err(volume_error(
                GuestErrorCode::InvalidArgument,
                "the volume's root cannot be removed",
            ));
        }
        let (_, stat) = self.existing(&parts).await?;
        let target = joined(&parts);
        let mut script = Vec::new();
        if stat.kind == VolumeEntryKind::Dir {
            let mut tree = self.list(&target, MAX_DEPTH).await?;
            // Deepest first, so every directory is empty when its turn comes.
            tree.sort_by_key(|e| std::cmp::Reverse(e.path.matches('/').count()));
            for e in tree {
                let verb = if e.kind == VolumeEntryKind::Dir {
                    "rmdir"
                } else {
                    "rm"
                };
                script.push(format!("{verb} {}", quote(&e.path)?));
            }
            script.push(format!("rmdir {}", quote(&target)?));
        } else {
            script.push(format!("rm {}", quote(&target)?));
        }
        let scratch = self.scratch()?;
        self.change(&script, scratch.path()).await?;
        tracing::debug!(image = %self.image.display(), path = %target, "volume entry removed");
        Ok(())
    }

    /// Changes the owner, group and/or permission bits of `path` (a symlink's own) and
    /// describes it.
    pub async fn set_attrs(&self, path: &str, attrs: VolumeAttrs) -> Result<VolumeEntry> {
        self.prepare().await?;
        attrs.check()?;
        let parts = components(path)?;
        let (listed, stat) = self.existing(&parts).await?;
        let spec = format!("<{}>", listed.ino);
        let attrs = VolumeAttrs {
            uid: attrs.uid.or(Some(stat.uid)),
            gid: attrs.gid.or(Some(stat.gid)),
            mode: attrs.mode,
        };
        let script = set_attrs(&spec, listed.mode & 0o170000, attrs, stat.mode)?;
        let scratch = self.scratch()?;
        self.change(&script, scratch.path()).await?;
        self.stat(path).await
    }
}

/// `set_inode_field` commands giving `spec` (a name in the current directory, or `<ino>`) its
/// owner, group (default [`VOLUME_OWNER`]) and mode (`type_bits` | the asked or `default`
/// permission bits).
fn set_attrs(spec: &str, type_bits: u32, attrs: VolumeAttrs, default: u32) -> Result<Vec<String>> {
    let spec = if spec.starts_with('<') {
        spec.to_string()
    } else {
        quote(spec)?
    };
    Ok(vec![
        format!(
            "set_inode_field {spec} uid {}",
            attrs.uid.unwrap_or(VOLUME_OWNER)
        ),
        format!(
            "set_inode_field {spec} gid {}",
            attrs.gid.unwrap_or(VOLUME_OWNER)
        ),
        format!(
            "set_inode_field {spec} mode 0{:o}",
            type_bits | attrs.mode.unwrap_or(default)
        ),
    ])
}

/// A host path (in a scratch directory the host made) as a `debugfs` argument.
fn quote_host(path: &Path) -> Result<String> {
    quote(
        path.to_str()
            .ok_or_else(|| Error::Invalid(format!("{} is not UTF-8", path.display())))?,
    )
}

fn is_a_directory(path: &str) -> Error {
    volume_error(
        GuestErrorCode::IsADirectory,
        format!("{path}: is a directory"),
    )
}

/// Refuses anything but a regular file (a symlink is not followed).
fn require_file(parts: &[&str], kind: VolumeEntryKind) -> Result<()> {
    match kind {
        VolumeEntryKind::File => Ok(()),
        VolumeEntryKind::Dir => Err(is_a_directory(&joined(parts))),
        VolumeEntryKind::Symlink => Err(volume_error(
            GuestErrorCode::PermissionDenied,
            format!(
                "{}: is a symbolic link, which is not followed",
                joined(parts)
            ),
        )),
        VolumeEntryKind::Other => Err(volume_error(
            GuestErrorCode::InvalidArgument,
            format!("{}: not a regular file", joined(parts)),
        )),
    }
}

/// A [`VolumeEntry`] for `path` from its stat.
fn entry(path: &str, s: Stat) -> VolumeEntry {
    VolumeEntry {
        name: path.rsplit('/').next().unwrap_or("").to_string(),
        path: path.to_string(),
        kind: s.kind,
        size: s.size,
        mode: s.mode,
        uid: s.uid,
        gid: s.gid,
        atime: s.atime,
        mtime: s.mtime,
        ctime: s.ctime,
        target: s.target,
    }
}

#[cfg(test)]
mod tests;
