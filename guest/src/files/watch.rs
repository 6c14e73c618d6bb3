//! `watch`: streams the changes under a directory (inotify) until the host drops the stream.
//!
//! 1. The directory is resolved like every other path (absolute, or under the user's home) and
//!    must exist and be a directory (`not_found`, `not_a_directory`).
//! 2. Watches are added with the user's filesystem credentials ([`super::creds`]), so a user can
//!    only watch what it may read. With `recursive`, every subdirectory gets one too, including
//!    the ones created later: a new directory is watched as soon as its `create` arrives, then
//!    scanned, and what the scan finds is reported as `create`, so nothing made in between is lost.
//!    A directory on a network or FUSE filesystem (NFS, SMB/CIFS, 9p, FUSE, virtio-fs), where
//!    inotify misses changes made elsewhere, is refused (`invalid_argument`) unless the request
//!    has `allow_network_mounts`, as envd does.
//! 3. `watching` is sent once the watches are in place: a change the host makes after seeing it
//!    is always reported.
//! 4. Every change is one `fs_event{name, op}`, `name` relative to the watched directory (`.` for
//!    the directory itself). inotify masks map like this: `IN_CREATE`/`IN_MOVED_TO` -> `create`,
//!    `IN_MODIFY` -> `write`, `IN_DELETE`/`IN_DELETE_SELF` -> `remove`, `IN_MOVED_FROM`/
//!    `IN_MOVE_SELF` -> `rename`, `IN_ATTRIB` -> `chmod`. A subdirectory's own `*_SELF` events are
//!    dropped: its parent already reported the change by name.
//! 5. The agent's own atomic writes (a temporary `.<name>.platinum-<16 hex>.tmp` renamed over
//!    the destination, see [`super::write_file`]) are reported as they look to a user: the
//!    temporary file is invisible and the rename into place is `create` then `write` of the
//!    destination.
//! 6. The request ends with `ok: null` when the watched directory itself goes away, and silently
//!    (no outcome) when the host resets the stream or the connection drops. Closing the host's
//!    sending side does not end it.

use super::{Caller, io_error};
use crate::agent::Agent;
use crate::session::{HandlerError, SessionDefaults};
use crate::users::Credentials;
use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use nix::sys::statfs::statfs;
use platinum_protocol::{
    FsEvent, FsOp, GuestError, GuestErrorCode, GuestEvent, GuestMessage, PathRequest,
    StreamReceiver, StreamSender,
};
use serde_json::Value;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use tracing::debug;

/// Bytes of inotify events read at once.
const EVENT_BUFFER: usize = 64 * 1024;
/// Temporary-file renames remembered at once (their `MOVED_TO` normally follows at once).
const MAX_PENDING_MOVES: usize = 1024;

/// What every watch listens for.
fn mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::MOVE_SELF
        | WatchMask::ATTRIB
        | WatchMask::ONLYDIR
}

/// `statfs` magic numbers of the filesystems where inotify misses changes made elsewhere.
const NETWORK_FILESYSTEMS: &[(u64, &str)] = &[
    (0x6969, "nfs"),
    (0x517b, "smb"),
    (0xff53_4d42, "cifs"),
    (0xfe53_4d42, "smb2"),
    (0x0102_1997, "9p"),
    (0x6573_5546, "fuse"),
];

/// The name of a network or FUSE filesystem, by its `statfs` magic.
fn network_filesystem(magic: u64) -> Option<&'static str> {
    NETWORK_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// Watches added for a tree, and (for a directory that appeared while watching) what it held.
struct Added {
    watches: Vec<(WatchDescriptor, PathBuf)>,
    found: Vec<PathBuf>,
}

/// `watch`: see the module docs.
pub async fn watch(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
    recursive: bool,
    allow_network_mounts: bool,
    tx: &StreamSender,
    mut rx: StreamReceiver,
) -> Result<Value, HandlerError> {
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let root = caller.path(&at.path)?;
    let creds = caller.creds.clone();
    let checked = root.clone();
    caller
        .run(move |_| {
            let md = fs::metadata(&checked).map_err(io_error("stat", &checked))?;
            if !md.is_dir() {
                return Err(GuestError::new(
                    GuestErrorCode::NotADirectory,
                    format!("{} is not a directory", checked.display()),
                ));
            }
            if allow_network_mounts {
                return Ok(());
            }
            let fs = statfs(&checked)
                .map_err(|e| GuestError::from_io(&std::io::Error::from(e), "statfs"))?;
            match network_filesystem(fs.filesystem_type().0 as u64) {
                Some(name) => Err(GuestError::new(
                    GuestErrorCode::InvalidArgument,
                    format!(
                        "{} is on a network filesystem ({name}) where changes can go unseen; \
                         allow network mounts to watch it anyway",
                        checked.display()
                    ),
                )),
                None => Ok(()),
            }
        })
        .await?;

    let inotify = Inotify::init().map_err(|e| GuestError::from_io(&e, "inotify init"))?;
    let mut events = inotify
        .into_event_stream(vec![0u8; EVENT_BUFFER])
        .map_err(|e| GuestError::from_io(&e, "inotify stream"))?;
    let watches = events.watches();
    let added = add_tree(&creds, &watches, &root, PathBuf::new(), recursive, false).await?;
    let Some((root_wd, _)) = added.watches.first().cloned() else {
        return Err(GuestError::new(GuestErrorCode::Io, "no watch was added").into());
    };
    let mut dirs: HashMap<WatchDescriptor, PathBuf> = added.watches.into_iter().collect();
    debug!(path = %root.display(), recursive, dirs = dirs.len(), "watching");
    tx.send_json(&GuestMessage::Event(GuestEvent::Watching))?;

    let mut host_sending = true;
    // Rename cookies of the agent's temporary files moving into place.
    let mut temp_moves: HashSet<u32> = HashSet::new();
    loop {
        let event = tokio::select! {
            event = events.next() => event,
            inbound = rx.recv(), if host_sending => {
                // Nothing is expected from the host; a reset or a lost connection ends the watch.
                if inbound?.is_none() {
                    host_sending = false;
                }
                continue;
            }
        };
        let event = match event {
            Some(Ok(event)) => event,
            Some(Err(e)) => return Err(GuestError::from_io(&e, "reading inotify events").into()),
            None => return Ok(Value::Null),
        };
        if event.mask.contains(EventMask::Q_OVERFLOW) {
            debug!("inotify queue overflowed; some changes were not reported");
            continue;
        }
        let Some(dir) = dirs.get(&event.wd).cloned() else {
            continue;
        };
        if event.mask.contains(EventMask::IGNORED) {
            dirs.remove(&event.wd);
            if event.wd == root_wd {
                return Ok(Value::Null);
            }
            continue;
        }
        let is_self = event
            .mask
            .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF);
        if is_self && event.wd != root_wd {
            continue;
        }
        if event.name.as_deref().is_some_and(is_agent_temp) {
            if event.mask.contains(EventMask::MOVED_FROM) {
                if temp_moves.len() >= MAX_PENDING_MOVES {
                    temp_moves.clear();
                }
                temp_moves.insert(event.cookie);
            }
            continue;
        }
        let rel = match &event.name {
            Some(name) => dir.join(name),
            None => dir.clone(),
        };
        let written_into_place =
            event.mask.contains(EventMask::MOVED_TO) && temp_moves.remove(&event.cookie);
        let mut changes = ops(event.mask);
        if written_into_place {
            changes.push(FsOp::Write);
        }
        for op in changes {
            send(tx, &rel, op)?;
        }
        let new_dir = event.mask.contains(EventMask::ISDIR)
            && event
                .mask
                .intersects(EventMask::CREATE | EventMask::MOVED_TO);
        if recursive && new_dir {
            // The directory may already be gone again, or unreadable; then there is nothing to watch.
            match add_tree(&creds, &watches, &root.join(&rel), rel.clone(), true, true).await {
                Ok(more) => {
                    for found in &more.found {
                        send(tx, found, FsOp::Create)?;
                    }
                    dirs.extend(more.watches);
                }
                Err(e) => debug!(dir = %rel.display(), error = %e, "not watching a new directory"),
            }
        }
        if is_self {
            // The watched directory itself was removed or moved away: nothing more will come.
            return Ok(Value::Null);
        }
    }
}

/// Whether `name` is one of the agent's temporary files: `.<name>.platinum-<16 hex>.tmp`.
fn is_agent_temp(name: &std::ffi::OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    let Some(stem) = name.strip_prefix('.').and_then(|n| n.strip_suffix(".tmp")) else {
        return false;
    };
    stem.rsplit_once(".platinum-")
        .is_some_and(|(_, hex)| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn send(tx: &StreamSender, rel: &Path, op: FsOp) -> Result<(), HandlerError> {
    let name = if rel.as_os_str().is_empty() {
        ".".to_string()
    } else {
        rel.to_string_lossy().into_owned()
    };
    tx.send_json(&GuestMessage::Event(GuestEvent::FsEvent(FsEvent {
        name,
        op,
    })))?;
    Ok(())
}

/// The operations one inotify event stands for, in a stable order.
fn ops(mask: EventMask) -> Vec<FsOp> {
    let mut ops = Vec::new();
    if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO) {
        ops.push(FsOp::Create);
    }
    if mask.intersects(EventMask::MOVED_FROM | EventMask::MOVE_SELF) {
        ops.push(FsOp::Rename);
    }
    if mask.contains(EventMask::ATTRIB) {
        ops.push(FsOp::Chmod);
    }
    if mask.contains(EventMask::MODIFY) {
        ops.push(FsOp::Write);
    }
    if mask.intersects(EventMask::DELETE | EventMask::DELETE_SELF) {
        ops.push(FsOp::Remove);
    }
    ops
}

/// Adds a watch on `dir` (shown to the host as `rel`) and, with `recursive`, on every directory
/// below it (symlinks are not followed). With `report`, also returns every entry found below
/// `dir`. Runs with `creds` on a blocking thread. Only a failure on `dir` itself is an error.
async fn add_tree(
    creds: &Credentials,
    watches: &Watches,
    dir: &Path,
    rel: PathBuf,
    recursive: bool,
    report: bool,
) -> Result<Added, GuestError> {
    let mut watches = watches.clone();
    let dir = dir.to_path_buf();
    super::creds::run_as(creds.clone(), move || {
        let mut added = Added {
            watches: Vec::new(),
            found: Vec::new(),
        };
        let wd = watches.add(&dir, mask()).map_err(io_error("watch", &dir))?;
        added.watches.push((wd, rel.clone()));
        if recursive {
            walk(&mut watches, &dir, &rel, report, &mut added);
        }
        Ok(added)
    })
    .await
}

fn walk(watches: &mut Watches, dir: &Path, rel: &Path, report: bool, added: &mut Added) {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            debug!(dir = %dir.display(), error = %e, "not descending");
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let child_rel = rel.join(entry.file_name());
        if report {
            added.found.push(child_rel.clone());
        }
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if !is_dir {
            continue;
        }
        match watches.add(&path, mask()) {
            Ok(wd) => {
                added.watches.push((wd, child_rel.clone()));
                walk(watches, &path, &child_rel, report, added);
            }
            Err(e) => debug!(dir = %path.display(), error = %e, "not watching"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_map_to_ops() {
        assert_eq!(ops(EventMask::CREATE), vec![FsOp::Create]);
        assert_eq!(
            ops(EventMask::MOVED_TO | EventMask::ISDIR),
            vec![FsOp::Create]
        );
        assert_eq!(ops(EventMask::MOVED_FROM), vec![FsOp::Rename]);
        assert_eq!(ops(EventMask::MODIFY), vec![FsOp::Write]);
        assert_eq!(ops(EventMask::ATTRIB), vec![FsOp::Chmod]);
        assert_eq!(ops(EventMask::DELETE_SELF), vec![FsOp::Remove]);
        assert!(ops(EventMask::IGNORED).is_empty());
    }

    #[test]
    fn network_filesystems_are_told_apart_from_local_ones() {
        assert_eq!(network_filesystem(0x6969), Some("nfs"));
        assert_eq!(network_filesystem(0x6573_5546), Some("fuse"));
        let here = statfs(std::env::temp_dir().as_path()).expect("statfs");
        assert_eq!(
            network_filesystem(here.filesystem_type().0 as u64),
            None,
            "the temporary directory is local"
        );
    }

    #[test]
    fn agent_temp_files_are_recognised() {
        let yes = |n: &str| is_agent_temp(std::ffi::OsStr::new(n));
        assert!(yes(".a.txt.platinum-0123456789abcdef.tmp"));
        assert!(!yes("a.txt"));
        assert!(!yes(".a.txt.platinum-xyz.tmp"));
        assert!(!yes(".cache.tmp"));
    }
}
