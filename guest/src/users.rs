//! Users and groups, read straight from `/etc/passwd` and `/etc/group`.
//!
//! The agent is a statically linked glibc binary, and glibc's NSS lookups (`getpwnam` and friends)
//! try to load shared libraries at run time, so they must not be used. The files are parsed here.
//! Processes in the sandbox may add users at any time, so [`UserDbCache`] checks both files'
//! metadata on every request and parses them again whenever either has changed.

use platinum_protocol::{GuestError, GuestErrorCode};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The user requests run as when neither the request nor the session names one, if it exists.
pub const PREFERRED_DEFAULT_USER: &str = "user";

/// One `/etc/passwd` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell (`/bin/sh` when the entry leaves it empty).
    pub shell: String,
}

impl User {
    fn root() -> Self {
        Self {
            name: "root".into(),
            uid: 0,
            gid: 0,
            home: PathBuf::from("/root"),
            shell: "/bin/sh".into(),
        }
    }
}

/// One `/etc/group` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// Group id.
    pub gid: u32,
    /// Names of the users listed as members.
    pub members: Vec<String>,
}

/// The ids a process or a file operation runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (the primary group first).
    pub groups: Vec<u32>,
}

impl Credentials {
    /// True for root, which needs no switch.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }
}

/// A snapshot of the user and group databases.
#[derive(Debug, Clone, Default)]
pub struct UserDb {
    users: Vec<User>,
    groups: Vec<Group>,
}

impl UserDb {
    /// Reads both files. A missing group file means "no groups"; a missing passwd file means only
    /// root exists (see [`UserDb::user`]).
    pub fn load(passwd: &Path, group: &Path) -> std::io::Result<Self> {
        let read = |path: &Path| match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(e),
        };
        Ok(Self::parse(&read(passwd)?, &read(group)?))
    }

    /// Parses the two files' contents. Malformed lines are skipped.
    pub fn parse(passwd: &str, group: &str) -> Self {
        let users = records(passwd)
            .filter_map(|f| {
                let [name, _pw, uid, gid, _gecos, home, shell] = f.as_slice() else {
                    return None;
                };
                Some(User {
                    name: name.to_string(),
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                    home: PathBuf::from(home),
                    shell: if shell.is_empty() {
                        "/bin/sh".into()
                    } else {
                        shell.to_string()
                    },
                })
            })
            .collect();
        let groups = records(group)
            .filter_map(|f| {
                let [name, _pw, gid, members] = f.as_slice() else {
                    return None;
                };
                Some(Group {
                    name: name.to_string(),
                    gid: gid.parse().ok()?,
                    members: members
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_string)
                        .collect(),
                })
            })
            .collect();
        Self { users, groups }
    }

    /// A user by name. `root` always exists, even in a passwd file that lacks it.
    pub fn user(&self, name: &str) -> Option<User> {
        match self.users.iter().find(|u| u.name == name) {
            Some(u) => Some(u.clone()),
            None if name == "root" => Some(User::root()),
            None => None,
        }
    }

    /// A user by name, or `user_not_found`.
    pub fn require_user(&self, name: &str) -> Result<User, GuestError> {
        self.user(name).ok_or_else(|| {
            GuestError::new(
                GuestErrorCode::UserNotFound,
                format!("no user named {name:?}"),
            )
        })
    }

    /// The user a request runs as: the one it names, else `session_default`, else
    /// [`PREFERRED_DEFAULT_USER`] if it exists, else root.
    pub fn resolve(
        &self,
        requested: Option<&str>,
        session_default: Option<&str>,
    ) -> Result<User, GuestError> {
        match requested.or(session_default) {
            Some(name) => self.require_user(name),
            None => Ok(self.user(PREFERRED_DEFAULT_USER).unwrap_or_else(User::root)),
        }
    }

    /// A user's name by uid.
    pub fn user_name(&self, uid: u32) -> Option<&str> {
        self.users
            .iter()
            .find(|u| u.uid == uid)
            .map(|u| u.name.as_str())
    }

    /// A group's id by name.
    pub fn group_id(&self, name: &str) -> Option<u32> {
        self.groups.iter().find(|g| g.name == name).map(|g| g.gid)
    }

    /// A group's name by gid.
    pub fn group_name(&self, gid: u32) -> Option<&str> {
        self.groups
            .iter()
            .find(|g| g.gid == gid)
            .map(|g| g.name.as_str())
    }

    /// The user's ids: its primary group, then every group that lists it as a member.
    pub fn credentials(&self, user: &User) -> Credentials {
        let mut groups = vec![user.gid];
        for g in &self.groups {
            if g.members.contains(&user.name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
            }
        }
        Credentials {
            uid: user.uid,
            gid: user.gid,
            groups,
        }
    }
}

/// The colon-separated fields of each meaningful line (no blanks, comments or NIS `+`/`-` entries).
/// Which version of a file was read: any write, rename or replacement changes one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    /// The stamp of `path`, `None` when it does not exist.
    fn of(path: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The stamps of the passwd and group files (`None`: missing).
type Stamps = [Option<FileStamp>; 2];

/// The user database as last parsed, with the stamps of the files it was parsed from.
#[derive(Default)]
pub struct UserDbCache {
    last: Mutex<Option<(Stamps, Arc<UserDb>)>>,
}

impl UserDbCache {
    /// The database as the two files are now: the cached parse while neither file has changed
    /// (two `stat`s), else a fresh one.
    pub fn get(&self, passwd: &Path, group: &Path) -> std::io::Result<Arc<UserDb>> {
        let stamps = [FileStamp::of(passwd)?, FileStamp::of(group)?];
        if let Some((seen, db)) = &*self.last.lock().expect("user db cache")
            && *seen == stamps
        {
            return Ok(db.clone());
        }
        let db = Arc::new(UserDb::load(passwd, group)?);
        // A write racing the read leaves a stamp that no longer matches: the next call
        // parses again.
        *self.last.lock().expect("user db cache") = Some((stamps, db.clone()));
        Ok(db)
    }
}

fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
user:x:1000:1000:Sandbox User,,,:/home/user:
broken:x:notanumber:1:x:/:/bin/sh
short:x:5
+nis
";
    const GROUP: &str = "\
root:x:0:
tty:x:5:user
sudo:x:27:admin,user
user:x:1000:
bad:x:
";

    #[test]
    fn parses_users_and_skips_malformed_lines() {
        let db = UserDb::parse(PASSWD, GROUP);
        let user = db.user("user").expect("user");
        assert_eq!(
            user,
            User {
                name: "user".into(),
                uid: 1000,
                gid: 1000,
                home: "/home/user".into(),
                shell: "/bin/sh".into()
            }
        );
        assert_eq!(
            db.user("daemon").map(|u| u.shell),
            Some("/usr/sbin/nologin".into())
        );
        assert!(db.user("broken").is_none());
        assert!(db.user("short").is_none());
        assert!(db.user("+nis").is_none());
        assert_eq!(db.user_name(1), Some("daemon"));
        assert_eq!(db.group_id("sudo"), Some(27));
        assert_eq!(db.group_name(5), Some("tty"));
        assert_eq!(
            db.credentials(&user),
            Credentials {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 5, 27]
            }
        );
    }

    #[test]
    fn the_cache_parses_again_once_either_file_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (passwd, group) = (dir.path().join("passwd"), dir.path().join("group"));
        std::fs::write(&passwd, PASSWD).expect("passwd");
        let cache = UserDbCache::default();
        let first = cache.get(&passwd, &group).expect("load");
        assert!(first.user("alice").is_none());
        assert!(Arc::ptr_eq(
            &first,
            &cache.get(&passwd, &group).expect("load")
        ));

        std::fs::write(
            &passwd,
            format!("{PASSWD}alice:x:1001:1001::/home/alice:/bin/sh\n"),
        )
        .expect("add a user");
        let second = cache.get(&passwd, &group).expect("load");
        assert_eq!(second.user("alice").map(|u| u.uid), Some(1001));

        std::fs::write(&group, GROUP).expect("group");
        let third = cache.get(&passwd, &group).expect("load");
        assert!(!Arc::ptr_eq(&second, &third), "a new group file is read");
        assert_eq!(third.group_id("sudo"), Some(27));
    }

    #[test]
    fn default_user_is_user_if_present_else_root() {
        let db = UserDb::parse(PASSWD, GROUP);
        assert_eq!(db.resolve(None, None).map(|u| u.uid), Ok(1000));
        assert_eq!(db.resolve(None, Some("daemon")).map(|u| u.uid), Ok(1));
        assert_eq!(
            db.resolve(Some("root"), Some("daemon")).map(|u| u.uid),
            Ok(0)
        );
        let err = db.resolve(Some("ghost"), None).unwrap_err();
        assert_eq!(err.code, GuestErrorCode::UserNotFound);

        let no_user = UserDb::parse("daemon:x:1:1::/:/bin/sh\n", "");
        assert_eq!(
            no_user.resolve(None, None),
            Ok(User::root()),
            "root exists even when passwd lacks it"
        );
    }
}
