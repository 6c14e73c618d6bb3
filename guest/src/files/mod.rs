//! The file requests: `read_file`, `write_file`, `list_dir`, `stat`, `make_dir`, `remove`,
//! `rename`, `chmod`, `chown` and `sync`; `watch` lives in [`watch`].
//!
//! Every path operation runs on a blocking thread with the requesting user's filesystem
//! credentials ([`creds`]), so the kernel applies exactly that user's permissions, and new files
//! and directories belong to the user. Only moving bytes through an already opened file happens
//! on the async side. Replies carry [`platinum_protocol::FileEntry`]s as `stat` sees them (symlinks not followed).
//!
//! `write_file` is atomic unless it appends: the bytes go to a temporary file next to the
//! destination, which is synced and then renamed over it. If the stream fails first (reset, or the
//! connection drops) the temporary file is deleted and the destination keeps its old content.

pub mod paths;
pub mod watch;

mod creds;
mod entry;
mod handover;
mod metadata;

use crate::agent::Agent;
use crate::session::{HandlerError, SessionDefaults, reply_value};
use crate::users::{Credentials, UserDb};
use handover::{Handover, missing_from};
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use platinum_protocol::{
    GuestError, GuestErrorCode, GuestEvent, GuestMessage, Inbound, MAX_DATA_CHUNK, MakeDirReply,
    PathRequest, StreamReceiver, StreamSender, WriteFile, channel,
};
use serde_json::Value;
use std::fs::{self, DirBuilder, File, OpenOptions, Permissions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::debug;

/// Permission bits of a new file when the request names none.
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Permission bits of a new directory when the request names none.
const DEFAULT_DIR_MODE: u32 = 0o755;
/// Symlinks followed at most when resolving a write's destination (the kernel's own limit).
const MAX_SYMLINK_HOPS: usize = 40;

/// Who a file request runs as.
struct Caller {
    db: std::sync::Arc<UserDb>,
    home: PathBuf,
    creds: Credentials,
}

impl Caller {
    fn new(
        agent: &Agent,
        defaults: &SessionDefaults,
        user: Option<&str>,
    ) -> Result<Self, GuestError> {
        let db = agent.users()?;
        let user = db.resolve(user, defaults.user.as_deref())?;
        let creds = db.credentials(&user);
        Ok(Self {
            db,
            home: user.home,
            creds,
        })
    }

    fn path(&self, path: &str) -> Result<PathBuf, GuestError> {
        paths::resolve(path, &self.home)
    }

    /// Runs `op` with this caller's credentials; `op` gets the user database to describe entries.
    async fn run<T, F>(self, op: F) -> Result<T, GuestError>
    where
        T: Send + 'static,
        F: FnOnce(&UserDb) -> Result<T, GuestError> + Send + 'static,
    {
        let Caller { db, creds, .. } = self;
        creds::run_as(creds, move || op(&db)).await
    }
}

fn io_error(action: &str, path: &Path) -> impl Fn(std::io::Error) -> GuestError {
    let context = format!("{action} {}", path.display());
    move |e| GuestError::from_io(&e, &context)
}

fn describe_path(path: &Path, db: &UserDb) -> Result<platinum_protocol::FileEntry, GuestError> {
    let md = fs::symlink_metadata(path).map_err(io_error("stat", path))?;
    Ok(entry::describe(path, &md, db))
}

/// `read_file`: `file_info`, then the contents on channel 1, then `EOF` on it.
pub async fn read_file(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
    tx: &StreamSender,
) -> Result<Value, HandlerError> {
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let path = caller.path(&at.path)?;
    let (file, info) = caller
        .run(move |db| {
            let file = File::open(&path).map_err(io_error("open", &path))?;
            let md = file.metadata().map_err(io_error("stat", &path))?;
            if md.is_dir() {
                return Err(GuestError::new(
                    GuestErrorCode::IsADirectory,
                    format!("{} is a directory", path.display()),
                ));
            }
            Ok((file, entry::describe(&path, &md, db)))
        })
        .await?;
    let path = PathBuf::from(&info.path);
    tx.send_json(&GuestMessage::Event(GuestEvent::FileInfo(info)))?;
    let mut file = tokio::fs::File::from_std(file);
    let mut buf = vec![0u8; MAX_DATA_CHUNK];
    loop {
        let n = file.read(&mut buf).await.map_err(io_error("read", &path))?;
        if n == 0 {
            break;
        }
        tx.send_data(channel::STDOUT, &buf[..n]).await?;
    }
    tx.send_eof(channel::STDOUT)?;
    Ok(Value::Null)
}

/// `write_file`: the contents come as `DATA` on channel 0 until `EOF` on it (or the host closing
/// its side); replies with the written file's entry.
pub async fn write_file(
    agent: &Agent,
    defaults: &SessionDefaults,
    req: WriteFile,
    mut rx: StreamReceiver,
) -> Result<Value, HandlerError> {
    let caller = Caller::new(agent, defaults, req.at.user.as_deref())?;
    let creds = caller.creds.clone();
    let db = caller.db.clone();
    let dest = caller.path(&req.at.path)?;
    let as_root = creds.is_root();
    let handover = Handover::of(&db, req.owner.as_deref())?;
    let target = caller
        .run(move |_| open_for_write(&dest, &req, as_root))
        .await?;
    let WriteTarget {
        file,
        temp,
        dest,
        created_parents,
    } = target;
    let mut file = tokio::fs::File::from_std(file);
    loop {
        match rx.recv().await? {
            Some(Inbound::Data {
                channel: channel::STDIN,
                bytes,
            }) => {
                file.write_all(&bytes)
                    .await
                    .map_err(io_error("write", &dest))?;
            }
            Some(Inbound::Eof {
                channel: channel::STDIN,
            })
            | None => break,
            Some(other) => debug!(?other, "ignored on a write_file stream"),
        }
    }
    file.flush().await.map_err(io_error("write", &dest))?;
    file.sync_all().await.map_err(io_error("sync", &dest))?;
    drop(file);
    let written = creds::run_as(creds, move || {
        if let Some(temp) = temp {
            temp.persist(&dest)?;
        }
        if let Some(handover) = handover {
            handover.apply(std::slice::from_ref(&dest))?;
            handover.apply(&created_parents)?;
        }
        describe_path(&dest, &db)
    })
    .await?;
    reply_value(written)
}

/// Where a write's bytes go.
struct WriteTarget {
    file: File,
    /// The temporary file being written, for an atomic replace; `None` when appending.
    temp: Option<TempFile>,
    dest: PathBuf,
    /// The parent directories this write created, innermost first.
    created_parents: Vec<PathBuf>,
}

/// A temporary file that is deleted unless it is persisted.
struct TempFile {
    path: PathBuf,
    persisted: bool,
}

impl TempFile {
    fn persist(mut self, dest: &Path) -> Result<(), GuestError> {
        fs::rename(&self.path, dest).map_err(io_error("replace", dest))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if self.persisted {
            return;
        }
        if let Err(e) = fs::remove_file(&self.path) {
            debug!(path = %self.path.display(), error = %e, "cannot remove an abandoned temporary file");
        }
    }
}

/// Opens the file a write goes to. `as_root`: the caller is root, who keeps a replaced file's owner.
fn open_for_write(dest: &Path, req: &WriteFile, as_root: bool) -> Result<WriteTarget, GuestError> {
    let dest = follow_symlinks(dest).map_err(io_error("resolve", dest))?;
    let existing = match fs::metadata(&dest) {
        Ok(md) if md.is_dir() => {
            return Err(GuestError::new(
                GuestErrorCode::IsADirectory,
                format!("{} is a directory", dest.display()),
            ));
        }
        Ok(md) => Some(md),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(io_error("stat", &dest)(e)),
    };
    let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
        return Err(GuestError::new(
            GuestErrorCode::IsADirectory,
            format!("{} is a directory", dest.display()),
        ));
    };
    let mut created_parents = Vec::new();
    if req.create_parents {
        created_parents = missing_from(parent);
        fs::create_dir_all(parent).map_err(io_error("create", parent))?;
    }
    if req.append {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(req.mode.unwrap_or(DEFAULT_FILE_MODE))
            .open(&dest)
            .map_err(io_error("open", &dest))?;
        metadata::write(&file, &dest, &req.metadata)?;
        return Ok(WriteTarget {
            file,
            temp: None,
            dest,
            created_parents,
        });
    }
    let temp_path = parent.join(format!(
        ".{}.platinum-{:016x}.tmp",
        name.to_string_lossy(),
        rand::random::<u64>()
    ));
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp_path)
        .map_err(io_error("create", &temp_path))?;
    let temp = TempFile {
        path: temp_path,
        persisted: false,
    };
    // A replaced file keeps its mode (unless the request sets one) and, when root replaces it, its
    // owner. fchmod sets the bits exactly, without the umask.
    let mode = req
        .mode
        .or(existing.as_ref().map(|md| md.mode() & 0o7777))
        .unwrap_or(DEFAULT_FILE_MODE);
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(io_error("chmod", &temp.path))?;
    if let Some(md) = &existing
        && as_root
    {
        std::os::unix::fs::fchown(&file, Some(md.uid()), Some(md.gid()))
            .map_err(io_error("chown", &temp.path))?;
    }
    // A new file: the replaced one's metadata goes with it, the request's is what it has.
    metadata::write(&file, &temp.path, &req.metadata)?;
    Ok(WriteTarget {
        file,
        temp: Some(temp),
        dest,
        created_parents,
    })
}

/// Follows symlinks at the final component, so a write lands on the link's target.
fn follow_symlinks(path: &Path) -> std::io::Result<PathBuf> {
    let mut path = path.to_path_buf();
    for _ in 0..MAX_SYMLINK_HOPS {
        match fs::symlink_metadata(&path) {
            Ok(md) if md.file_type().is_symlink() => {
                let target = fs::read_link(&path)?;
                path = match path.parent() {
                    Some(parent) => parent.join(target),
                    None => target,
                };
            }
            _ => return Ok(path),
        }
    }
    Err(std::io::Error::from_raw_os_error(libc::ELOOP))
}

/// `list_dir`: entries sorted by path, descending `depth` levels (symlinks are not followed).
/// Subdirectories the user cannot read are listed but not descended into.
pub async fn list_dir(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
    depth: u32,
) -> Result<Value, HandlerError> {
    if depth == 0 {
        return Err(
            GuestError::new(GuestErrorCode::InvalidArgument, "depth must be at least 1").into(),
        );
    }
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let dir = caller.path(&at.path)?;
    let entries = caller
        .run(move |db| {
            let md = fs::metadata(&dir).map_err(io_error("stat", &dir))?;
            if !md.is_dir() {
                return Err(GuestError::new(
                    GuestErrorCode::NotADirectory,
                    format!("{} is not a directory", dir.display()),
                ));
            }
            let mut out = Vec::new();
            walk(&dir, depth, db, &mut out).map_err(io_error("list", &dir))?;
            Ok(out)
        })
        .await?;
    reply_value(entries)
}

fn walk(
    dir: &Path,
    depth: u32,
    db: &UserDb,
    out: &mut Vec<platinum_protocol::FileEntry>,
) -> std::io::Result<()> {
    let mut children: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    children.sort();
    for child in children {
        let md = match fs::symlink_metadata(&child) {
            Ok(md) => md,
            // Removed while we listed it.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        out.push(entry::describe(&child, &md, db));
        if depth > 1
            && md.is_dir()
            && let Err(e) = walk(&child, depth - 1, db, out)
        {
            debug!(dir = %child.display(), error = %e, "not descending");
        }
    }
    Ok(())
}

/// `stat`: the entry itself, symlinks not followed.
pub async fn stat(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
) -> Result<Value, HandlerError> {
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let path = caller.path(&at.path)?;
    reply_value(caller.run(move |db| describe_path(&path, db)).await?)
}

/// `make_dir`: `mkdir -p`; `created` is false when the directory existed.
pub async fn make_dir(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
    mode: Option<u32>,
    owner: Option<String>,
) -> Result<Value, HandlerError> {
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let path = caller.path(&at.path)?;
    let handover = Handover::of(&caller.db, owner.as_deref())?;
    let reply = caller
        .run(move |db| {
            let missing = missing_from(&path);
            let created = match fs::metadata(&path) {
                Ok(md) if md.is_dir() => false,
                Ok(_) => {
                    return Err(GuestError::new(
                        GuestErrorCode::AlreadyExists,
                        format!("{} exists and is not a directory", path.display()),
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    DirBuilder::new()
                        .recursive(true)
                        .mode(mode.unwrap_or(DEFAULT_DIR_MODE))
                        .create(&path)
                        .map_err(io_error("create", &path))?;
                    if let Some(mode) = mode {
                        fs::set_permissions(&path, Permissions::from_mode(mode))
                            .map_err(io_error("chmod", &path))?;
                    }
                    true
                }
                Err(e) => return Err(io_error("stat", &path)(e)),
            };
            if let Some(handover) = handover.filter(|_| created) {
                handover.apply(&missing)?;
            }
            Ok(MakeDirReply {
                entry: describe_path(&path, db)?,
                created,
            })
        })
        .await?;
    reply_value(reply)
}

/// `remove`: a file, a symlink, an empty directory, or with `recursive` a whole tree.
pub async fn remove(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
    recursive: bool,
) -> Result<Value, HandlerError> {
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let path = caller.path(&at.path)?;
    if path.parent().is_none() {
        return Err(
            GuestError::new(GuestErrorCode::InvalidArgument, "refusing to remove /").into(),
        );
    }
    caller
        .run(move |_| {
            let md = fs::symlink_metadata(&path).map_err(io_error("stat", &path))?;
            let removed = match (md.is_dir(), recursive) {
                (true, true) => fs::remove_dir_all(&path),
                (true, false) => fs::remove_dir(&path),
                (false, _) => fs::remove_file(&path),
            };
            removed.map_err(io_error("remove", &path))
        })
        .await?;
    Ok(Value::Null)
}

/// `rename`: refuses to replace an existing destination unless `overwrite`; replies with the
/// destination's entry.
pub async fn rename(
    agent: &Agent,
    defaults: &SessionDefaults,
    from: String,
    to: String,
    user: Option<String>,
    overwrite: bool,
) -> Result<Value, HandlerError> {
    let caller = Caller::new(agent, defaults, user.as_deref())?;
    let (from, to) = (caller.path(&from)?, caller.path(&to)?);
    let moved = caller
        .run(move |db| {
            if overwrite {
                fs::rename(&from, &to).map_err(io_error("rename", &from))?;
            } else {
                rename_no_replace(&from, &to)?;
            }
            describe_path(&to, db)
        })
        .await?;
    reply_value(moved)
}

fn rename_no_replace(from: &Path, to: &Path) -> Result<(), GuestError> {
    let exists = || {
        GuestError::new(
            GuestErrorCode::AlreadyExists,
            format!("{} already exists", to.display()),
        )
    };
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EEXIST) => Err(exists()),
        // The filesystem cannot do it atomically: check, then rename.
        Err(nix::errno::Errno::EINVAL) => {
            if fs::symlink_metadata(to).is_ok() {
                return Err(exists());
            }
            fs::rename(from, to).map_err(io_error("rename", from))
        }
        Err(e) => Err(io_error("rename", from)(e.into())),
    }
}

/// `chmod`: replies with the entry.
pub async fn chmod(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
    mode: u32,
) -> Result<Value, HandlerError> {
    if mode & !0o7777 != 0 {
        return Err(GuestError::new(
            GuestErrorCode::InvalidArgument,
            format!("mode {mode:o} has bits beyond 7777"),
        )
        .into());
    }
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let path = caller.path(&at.path)?;
    let entry = caller
        .run(move |db| {
            fs::set_permissions(&path, Permissions::from_mode(mode))
                .map_err(io_error("chmod", &path))?;
            describe_path(&path, db)
        })
        .await?;
    reply_value(entry)
}

/// `chown`: owner and/or group by name; replies with the entry.
pub async fn chown(
    agent: &Agent,
    defaults: &SessionDefaults,
    at: PathRequest,
    owner: Option<String>,
    group: Option<String>,
) -> Result<Value, HandlerError> {
    if owner.is_none() && group.is_none() {
        return Err(GuestError::new(
            GuestErrorCode::InvalidArgument,
            "chown needs an owner or a group",
        )
        .into());
    }
    let caller = Caller::new(agent, defaults, at.user.as_deref())?;
    let path = caller.path(&at.path)?;
    let uid = owner
        .as_deref()
        .map(|name| caller.db.require_user(name).map(|u| u.uid))
        .transpose()?;
    let gid = group
        .as_deref()
        .map(|name| {
            caller.db.group_id(name).ok_or_else(|| {
                GuestError::new(
                    GuestErrorCode::UserNotFound,
                    format!("no group named {name:?}"),
                )
            })
        })
        .transpose()?;
    let entry = caller
        .run(move |db| {
            std::os::unix::fs::chown(&path, uid, gid).map_err(io_error("chown", &path))?;
            describe_path(&path, db)
        })
        .await?;
    reply_value(entry)
}

/// `sync`: flushes every filesystem.
pub async fn sync() -> Result<Value, HandlerError> {
    tokio::task::spawn_blocking(nix::unistd::sync)
        .await
        .map_err(|e| GuestError::new(GuestErrorCode::Io, format!("sync failed: {e}")))?;
    Ok(Value::Null)
}
