//! Handing what a request created to another user: E2B's envd writes files and makes
//! directories as root on a user's behalf, then gives them — and every parent directory it had to
//! create — to that user. Doing both in one request leaves nothing half-owned when the host's
//! connection drops in between.

use platinum_protocol::GuestError;
use std::path::{Path, PathBuf};

use super::io_error;
use crate::users::UserDb;

/// Who gets the paths a request creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handover {
    uid: u32,
    gid: u32,
}

impl Handover {
    /// The handover to `owner`, if one was asked for: its uid, and the gid of the group named
    /// like it (its primary group when there is none). Fails with `user_not_found`.
    pub fn of(db: &UserDb, owner: Option<&str>) -> Result<Option<Self>, GuestError> {
        owner
            .map(|name| {
                let user = db.require_user(name)?;
                Ok(Handover {
                    uid: user.uid,
                    gid: db.group_id(name).unwrap_or(user.gid),
                })
            })
            .transpose()
    }

    /// Gives each of `paths` to the new owner (symlinks themselves, never their targets).
    pub fn apply(&self, paths: &[PathBuf]) -> Result<(), GuestError> {
        for path in paths {
            std::os::unix::fs::lchown(path, Some(self.uid), Some(self.gid))
                .map_err(io_error("chown", path))?;
        }
        Ok(())
    }
}

/// `path` and its ancestors that do not exist yet, innermost first: what creating `path` with
/// its parents will add.
pub fn missing_from(path: &Path) -> Vec<PathBuf> {
    let mut missing = Vec::new();
    let mut at = Some(path);
    while let Some(p) = at {
        if p.as_os_str().is_empty() || p.symlink_metadata().is_ok() {
            break;
        }
        missing.push(p.to_path_buf());
        at = p.parent();
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_is_missing_is_listed() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert_eq!(
            missing_from(&deep),
            [deep.clone(), dir.path().join("a/b"), dir.path().join("a")]
        );
        std::fs::create_dir_all(dir.path().join("a")).unwrap();
        assert_eq!(missing_from(&deep), [deep.clone(), dir.path().join("a/b")]);
        assert!(missing_from(dir.path()).is_empty());
    }

    #[test]
    fn an_unknown_owner_is_refused_and_no_owner_is_no_handover() {
        let db = UserDb::parse(
            "root:x:0:0::/root:/bin/sh\nuser:x:1000:1000::/home/user:/bin/bash\n",
            "root:x:0:\nuser:x:1000:\n",
        );
        assert_eq!(Handover::of(&db, None).unwrap(), None);
        assert_eq!(
            Handover::of(&db, Some("user")).unwrap(),
            Some(Handover {
                uid: 1000,
                gid: 1000
            })
        );
        assert!(Handover::of(&db, Some("nobody-here")).is_err());
    }
}
