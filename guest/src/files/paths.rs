//! Where a request's path points: absolute paths as given, `~` and `~/x` under the user's home,
//! and any other relative path under the home too.

use platinum_protocol::{GuestError, GuestErrorCode};
use std::path::{Path, PathBuf};

/// Resolves `path` for a user whose home is `home`. The result is absolute and free of `.` and
/// repeated `/`; `..` stays (resolving it lexically would be wrong across symlinks).
pub fn resolve(path: &str, home: &Path) -> Result<PathBuf, GuestError> {
    if path.is_empty() {
        return Err(GuestError::new(
            GuestErrorCode::InvalidArgument,
            "empty path",
        ));
    }
    if path.contains('\0') {
        return Err(GuestError::new(
            GuestErrorCode::InvalidArgument,
            format!("path {path:?} contains a NUL byte"),
        ));
    }
    let joined = if path == "~" {
        home.to_path_buf()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else {
        home.join(path) // `join` keeps an absolute `path` as it is
    };
    Ok(joined.components().collect())
}

/// The path as the text the protocol carries.
pub fn display(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_against_the_home() {
        let home = Path::new("/home/user");
        let ok = |p: &str| resolve(p, home).map(|p| display(&p));
        assert_eq!(ok("/etc//passwd"), Ok("/etc/passwd".into()));
        assert_eq!(ok("~"), Ok("/home/user".into()));
        assert_eq!(ok("~/a/./b/"), Ok("/home/user/a/b".into()));
        assert_eq!(ok("notes.txt"), Ok("/home/user/notes.txt".into()));
        assert_eq!(ok("../other"), Ok("/home/user/../other".into()));
        assert_eq!(ok("~other"), Ok("/home/user/~other".into()));
        assert_eq!(ok("").unwrap_err().code, GuestErrorCode::InvalidArgument);
        assert_eq!(
            ok("a\0b").unwrap_err().code,
            GuestErrorCode::InvalidArgument
        );
    }
}
