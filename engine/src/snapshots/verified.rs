//! Which snapshot files have been hashed already, so that a snapshot restored again and again (a
//! template's ready snapshot, restored by every create) is hashed once per server run instead of
//! on every restore.
//!
//! A file is remembered by what the kernel says about it — device, inode, size, modification and
//! change time — together with the hash it was found to have. Every write to a file moves its
//! change time (`ctime`), and no system call sets it back, so an identical stamp means the bytes
//! are the ones that were hashed; anything else (a flipped byte, a truncation, a replaced file)
//! is hashed again. Change times are kept in coarse clock ticks on many kernels, so a file is only
//! remembered once its last change is [`SETTLE`] old: a later write lands in a later tick.
//! The signature is still checked on every open: that is cheap, and it is what
//! binds the hashes to this server's key. What this does not cover is someone with root on the
//! host writing the block device under the filesystem, who owns the host anyway.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How old a file's last change must be before its hash is remembered.
pub const SETTLE: Duration = Duration::from_secs(1);

/// A file's identity and last change as `stat` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of `path` now.
    pub fn of(path: &Path) -> std::io::Result<Stamp> {
        let m = std::fs::metadata(path)?;
        Ok(Stamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.len(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }

    /// Whether the last change is at least [`SETTLE`] before `now`.
    fn settled(&self, now: SystemTime) -> bool {
        let (secs, nanos) = self.ctime;
        let (Ok(secs), Ok(nanos)) = (u64::try_from(secs), u32::try_from(nanos)) else {
            return false;
        };
        let changed = SystemTime::UNIX_EPOCH + Duration::new(secs, nanos);
        now.duration_since(changed).is_ok_and(|age| age >= SETTLE)
    }
}

/// Hashes of files as they were when hashed. Bounded: past [`VerifiedFiles::MAX`] entries the
/// oldest half is forgotten (they are hashed again when next needed).
#[derive(Debug, Default)]
pub struct VerifiedFiles {
    files: Mutex<HashMap<PathBuf, (Stamp, String, u64)>>,
    next: Mutex<u64>,
}

impl VerifiedFiles {
    /// Most files remembered.
    pub const MAX: usize = 4096;

    /// The BLAKE3 `path` had when it was hashed, if its stamp is still `stamp`.
    pub fn known(&self, path: &Path, stamp: &Stamp) -> Option<String> {
        let files = self.files.lock().expect("verified files");
        files
            .get(path)
            .filter(|(s, _, _)| s == stamp)
            .map(|(_, hash, _)| hash.clone())
    }

    /// Remembers that `path`, as of `stamp`, hashes to `blake3` (unless it changed within the
    /// last [`SETTLE`]).
    pub fn remember(&self, path: &Path, stamp: Stamp, blake3: String) {
        self.remember_at(path, stamp, blake3, SystemTime::now());
    }

    fn remember_at(&self, path: &Path, stamp: Stamp, blake3: String, now: SystemTime) {
        if !stamp.settled(now) {
            return;
        }
        let order = {
            let mut next = self.next.lock().expect("verified files order");
            *next += 1;
            *next
        };
        let mut files = self.files.lock().expect("verified files");
        if files.len() >= Self::MAX {
            let mut orders: Vec<u64> = files.values().map(|(_, _, o)| *o).collect();
            orders.sort_unstable();
            let cut = orders[orders.len() / 2];
            files.retain(|_, (_, _, o)| *o > cut);
        }
        files.insert(path.to_path_buf(), (stamp, blake3, order));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn later() -> SystemTime {
        SystemTime::now() + SETTLE * 2
    }

    #[test]
    fn any_write_changes_the_stamp() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("memory");
        std::fs::write(&f, b"abcd").unwrap();
        let cache = VerifiedFiles::default();
        let stamp = Stamp::of(&f).unwrap();
        // Just written: not remembered yet.
        cache.remember(&f, stamp.clone(), "h".into());
        assert_eq!(cache.known(&f, &stamp), None);
        cache.remember_at(&f, stamp.clone(), "h".into(), later());
        assert_eq!(cache.known(&f, &Stamp::of(&f).unwrap()), Some("h".into()));
        // Same size, same content length, even the old mtime put back: still a new stamp.
        std::thread::sleep(std::time::Duration::from_millis(10));
        std::fs::write(&f, b"abce").unwrap();
        let file = std::fs::File::options().write(true).open(&f).unwrap();
        file.set_modified(
            std::time::SystemTime::UNIX_EPOCH
                + std::time::Duration::new(stamp.mtime.0 as u64, stamp.mtime.1 as u32),
        )
        .unwrap();
        assert_eq!(cache.known(&f, &Stamp::of(&f).unwrap()), None);
    }

    #[test]
    fn the_cache_is_bounded() {
        let cache = VerifiedFiles::default();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"x").unwrap();
        let stamp = Stamp::of(&f).unwrap();
        for n in 0..VerifiedFiles::MAX + 10 {
            cache.remember_at(
                &dir.path().join(n.to_string()),
                stamp.clone(),
                "h".into(),
                later(),
            );
        }
        assert!(cache.files.lock().unwrap().len() <= VerifiedFiles::MAX);
        let last = dir.path().join((VerifiedFiles::MAX + 9).to_string());
        assert!(cache.known(&last, &stamp).is_some());
    }
}
