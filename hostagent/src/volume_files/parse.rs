//! Reading `debugfs` output: `ls -p` lines (`/inode/mode/uid/gid/name/size/`) and `stat`
//! reports. Lines that do not parse are skipped (listings) or make the entry unreadable (stat):
//! the image is hostile, so nothing here panics on what it finds.

use super::VolumeEntryKind;

/// One `ls -p` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed {
    /// Inode number.
    pub ino: u32,
    /// Full mode (type and permission bits).
    pub mode: u32,
    /// The entry's name.
    pub name: String,
}

impl Listed {
    /// What the entry is, from its mode's type bits.
    pub fn kind(&self) -> VolumeEntryKind {
        kind_of_mode(self.mode)
    }
}

/// What a full mode's type bits say.
pub(crate) fn kind_of_mode(mode: u32) -> VolumeEntryKind {
    match mode & 0o170000 {
        0o100000 => VolumeEntryKind::File,
        0o040000 => VolumeEntryKind::Dir,
        0o120000 => VolumeEntryKind::Symlink,
        _ => VolumeEntryKind::Other,
    }
}

/// Parses one `ls -p` line; `None` for anything else (and for `.` and `..`).
pub(crate) fn listed(line: &str) -> Option<Listed> {
    let rest = line.strip_prefix('/')?;
    let mut fields = rest.splitn(5, '/');
    let ino = fields.next()?.parse().ok()?;
    let mode = u32::from_str_radix(fields.next()?, 8).ok()?;
    let _uid = fields.next()?;
    let _gid = fields.next()?;
    // `name/size/`: the size is empty for directories; a name may hold anything but NUL.
    let (name, _size) = fields.next()?.strip_suffix('/')?.rsplit_once('/')?;
    if name.is_empty() || name == "." || name == ".." {
        return None;
    }
    Some(Listed {
        ino,
        mode,
        name: name.to_owned(),
    })
}

/// What a `stat` report says about an inode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stat {
    /// What it is.
    pub kind: VolumeEntryKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Last access, seconds since the Unix epoch.
    pub atime: i64,
    /// Last modification.
    pub mtime: i64,
    /// Last change of the inode.
    pub ctime: i64,
    /// A fast symlink's target (a long one's is not read).
    pub target: Option<String>,
}

/// Parses a `stat` report; `None` when its essential lines are missing.
pub(crate) fn stat(lines: &[String]) -> Option<Stat> {
    let mut kind = None;
    let mut mode = None;
    let (mut uid, mut gid, mut size) = (None, None, None);
    let (mut atime, mut mtime, mut ctime) = (0, 0, 0);
    let mut target = None;
    for line in lines {
        let t = line.trim_start();
        if t.starts_with("Inode:") {
            let type_name = after(t, "Type:")?;
            kind = Some(match type_name.split_whitespace().next()? {
                "regular" => VolumeEntryKind::File,
                "directory" => VolumeEntryKind::Dir,
                "symlink" => VolumeEntryKind::Symlink,
                _ => VolumeEntryKind::Other,
            });
            mode = u32::from_str_radix(word(after(t, "Mode:")?)?, 8).ok();
        } else if t.starts_with("User:") {
            uid = word(after(t, "User:")?)?.parse().ok();
            gid = word(after(t, "Group:")?)?.parse().ok();
            size = word(after(t, "Size:")?)?.parse().ok();
        } else if let Some(v) = t.strip_prefix("ctime:") {
            ctime = epoch(v);
        } else if let Some(v) = t.strip_prefix("atime:") {
            atime = epoch(v);
        } else if let Some(v) = t.strip_prefix("mtime:") {
            mtime = epoch(v);
        } else if let Some(v) = t.strip_prefix("Fast link dest: ") {
            target = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .map(str::to_owned);
        }
    }
    Some(Stat {
        kind: kind?,
        mode: mode? & 0o7777,
        uid: uid?,
        gid: gid?,
        size: size?,
        atime,
        mtime,
        ctime,
        target,
    })
}

/// What follows `label` in `line`.
fn after<'a>(line: &'a str, label: &str) -> Option<&'a str> {
    line.find(label).map(|at| &line[at + label.len()..])
}

/// The first whitespace-separated word of `s`.
fn word(s: &str) -> Option<&str> {
    s.split_whitespace().next()
}

/// Seconds from a timestamp field (` 0x6b132fc2:00000000 -- Fri Dec  4 ...`); 0 if unreadable.
fn epoch(v: &str) -> i64 {
    let hex = v.trim_start().strip_prefix("0x").unwrap_or("");
    let hex = hex.split([':', ' ']).next().unwrap_or("");
    i64::from_str_radix(hex, 16).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ls_lines_parse_names_with_spaces_and_slashes_and_skip_dots() {
        let f = listed("/14/100644/1000/1000/my file/6/").unwrap();
        assert_eq!((f.ino, f.mode, f.name.as_str()), (14, 0o100644, "my file"));
        assert_eq!(f.kind(), VolumeEntryKind::File);
        let d = listed("/13/040755/0/0/b c//").unwrap();
        assert_eq!(d.kind(), VolumeEntryKind::Dir);
        assert_eq!(listed("/9/100644/0/0/a/b/3/").unwrap().name, "a/b");
        assert_eq!(listed("/2/040755/0/0/.//"), None);
        assert_eq!(listed("/2/040755/0/0/..//"), None);
        assert_eq!(listed("garbage"), None);
        assert_eq!(listed("/x/040755/0/0/a//"), None);
    }

    #[test]
    fn stat_reports_parse() {
        let report = r#"Inode: 15   Type: symlink    Mode:  0777   Flags: 0x0
Generation: 0    Version: 0x00000000:00000000
User:  1000   Group:  1001   Project:     0   Size: 11
Fragment:  Address: 0    Number: 0    Size: 0
 ctime: 0x6b132fc2:00000000 -- Fri Dec  4 21:25:22 2026
 atime: 0x6b132fc1:00000000 -- Fri Dec  4 21:25:21 2026
 mtime: 0x6b132fc0:00000000 -- Fri Dec  4 21:25:20 2026
Fast link dest: "/etc/passwd""#;
        let lines: Vec<String> = report.lines().map(str::to_owned).collect();
        let s = stat(&lines).unwrap();
        assert_eq!(s.kind, VolumeEntryKind::Symlink);
        assert_eq!((s.mode, s.uid, s.gid, s.size), (0o777, 1000, 1001, 11));
        assert_eq!(
            (s.ctime, s.atime, s.mtime),
            (0x6b132fc2, 0x6b132fc1, 0x6b132fc0)
        );
        assert_eq!(s.target.as_deref(), Some("/etc/passwd"));
        assert_eq!(stat(&lines[1..]), None);
    }
}
