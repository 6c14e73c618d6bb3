//! A file's user metadata: its `user.e2b.<key>` extended attributes
//! ([`platinum_protocol::FILE_METADATA_XATTR_PREFIX`]), read into every [`FileEntry`] and set by
//! `write_file`.
//!
//! What is read is bounded whatever a process in the sandbox stored: at most [`MAX_KEYS`] keys,
//! values of at most [`MAX_VALUE_BYTES`] bytes, and only names and values that are UTF-8 (others
//! are skipped, not reported half).
//!
//! [`FileEntry`]: platinum_protocol::FileEntry

use platinum_protocol::{FILE_METADATA_XATTR_PREFIX, GuestError};
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use xattr::FileExt;

/// Metadata keys read from one file at most.
pub const MAX_KEYS: usize = 64;
/// Bytes of one metadata value read at most.
pub const MAX_VALUE_BYTES: usize = 4096;

/// The metadata of `path` (a symlink's own, which is always empty: Linux keeps no `user.*`
/// attributes on links). A filesystem without extended attributes has none.
pub fn read(path: &Path) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    let Ok(names) = xattr::list(path) else {
        return found;
    };
    for name in names {
        if found.len() == MAX_KEYS {
            break;
        }
        let Some(key) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FILE_METADATA_XATTR_PREFIX))
        else {
            continue;
        };
        if let Ok(Some(value)) = xattr::get(path, &name)
            && value.len() <= MAX_VALUE_BYTES
            && let Ok(value) = String::from_utf8(value)
        {
            found.insert(key.to_string(), value);
        }
    }
    found
}

/// Stores `metadata` on an open file, keys in lower case (as envd does).
pub fn write(
    file: &File,
    path: &Path,
    metadata: &BTreeMap<String, String>,
) -> Result<(), GuestError> {
    for (key, value) in metadata {
        let name = format!("{FILE_METADATA_XATTR_PREFIX}{}", key.to_ascii_lowercase());
        file.set_xattr(&name, value.as_bytes())
            .map_err(super::io_error("set metadata on", path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_in_lower_case_and_ignores_other_attributes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        // Needs a temporary directory that keeps user.* attributes (ext4, xfs, tmpfs >= 6.6).
        let file = File::create(&path).expect("create");
        file.set_xattr("user.other", b"1")
            .expect("set an unrelated attribute");
        let metadata = BTreeMap::from([
            ("Owner".to_string(), "ada".to_string()),
            ("stage".to_string(), "draft 2".to_string()),
        ]);
        write(&file, &path, &metadata).expect("write");
        let read = read(&path);
        assert_eq!(
            read,
            BTreeMap::from([
                ("owner".to_string(), "ada".to_string()),
                ("stage".to_string(), "draft 2".to_string()),
            ])
        );
    }
}
