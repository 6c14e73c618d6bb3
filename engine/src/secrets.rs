//! Signing keys kept in the data directory (the E2B and Daytona front ends sign their tokens with
//! one each): read when present, otherwise made from 32 random bytes and written owner-only,
//! atomically.

use std::path::Path;

/// Reads the key in `path`, creating it (32 random bytes, hex, mode 0600, written atomically
/// with fsync) if it is missing or shorter than 32 characters; `what` names it in the log.
pub fn load_or_create_secret(path: &Path, what: &str) -> std::io::Result<Vec<u8>> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().len() >= 32 => return Ok(text.trim().as_bytes().to_vec()),
        Ok(_) => tracing::warn!(path = %path.display(), "{what} is too short; replacing it"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key = hex::encode(rand::random::<[u8; 32]>());
    platinum_hostagent::private_file::write(path, key.as_bytes())?;
    Ok(key.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_key_is_made_once_kept_private_and_replaced_when_too_short() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let first = load_or_create_secret(&path, "test key").unwrap();
        assert_eq!(first.len(), 64);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(&path, "test key").unwrap(), first);
        std::fs::write(&path, "short").unwrap();
        let replaced = load_or_create_secret(&path, "test key").unwrap();
        assert_ne!(replaced, first);
        assert_eq!(replaced.len(), 64);
    }
}
