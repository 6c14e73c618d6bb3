//! Signed snapshots: the integrity layer every snapshot, pause to disk and checkpoint stands on
//! (the commands that take and restore them are in `commands/snapshots.rs`).
//!
//! - [`manifest`]: what a snapshot holds — its identity, where it was taken (VMM, accelerator,
//!   CPU) and the size and BLAKE3 hash of every file — and the check of a snapshot directory
//!   against it.
//! - [`dir`]: a snapshot directory: sealing it (hash, sign) and opening it (every check).
//! - [`compat`]: whether this host can restore a snapshot (VMM and version, accelerator, CPU).
//! - [`signing`]: the Ed25519 keys that sign manifests (kept in the data directory, rotated,
//!   retired) and their public half as a JWKS (RFC 8037).
//! - [`verified`]: files hashed already this run, by inode and change time (not hashed again).
//! - [`archive`]: a sandbox's archive in object storage (its chunk lists), signed the same way.
//!
//! A snapshot is restored only after its signature and then every file's size and hash check
//! out; anything else is a typed [`SnapshotError`] and nothing of the snapshot is touched.

pub mod archive;
pub mod compat;
pub mod dir;
pub mod manifest;
pub mod signing;
pub mod verified;

/// Why a snapshot may not be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SnapshotError {
    /// The signature does not verify: the manifest or the signature was altered, or it is
    /// missing.
    #[error("snapshot signature invalid: {0}")]
    SignatureInvalid(String),
    /// A file is missing, has another size, or another hash than the manifest says.
    #[error("snapshot corrupt: {0}")]
    Corrupt(String),
    /// Signed by a key this server does not know, or one that was retired.
    #[error("snapshot key unknown: {0}")]
    KeyUnknown(String),
    /// Taken where this host cannot restore it; the message says what differs.
    #[error("snapshot incompatible with this host: {0}")]
    Incompatible(String),
    /// Reading or writing the snapshot or the keys failed.
    #[error("snapshot i/o: {0}")]
    Io(String),
    /// Writing the snapshot failed because its filesystem is full.
    #[error("no space left for the snapshot: {0}")]
    NoSpace(String),
}

impl SnapshotError {
    /// The machine-readable code front ends report.
    pub fn code(&self) -> &'static str {
        match self {
            SnapshotError::SignatureInvalid(_) => "snapshot_signature_invalid",
            SnapshotError::Corrupt(_) => "snapshot_corrupt",
            SnapshotError::KeyUnknown(_) => "snapshot_key_unknown",
            SnapshotError::Incompatible(_) => "snapshot_incompatible",
            SnapshotError::Io(_) => "snapshot_io",
            SnapshotError::NoSpace(_) => "no_space",
        }
    }

    /// An i/o failure on `path`: [`SnapshotError::NoSpace`] when the filesystem is full.
    pub fn io(path: &std::path::Path, e: &std::io::Error) -> SnapshotError {
        let message = format!("{}: {e}", path.display());
        if e.kind() == std::io::ErrorKind::StorageFull {
            SnapshotError::NoSpace(message)
        } else {
            SnapshotError::Io(message)
        }
    }

    /// The engine code front ends see (reading or writing a snapshot failing is `internal`).
    pub fn error_code(&self) -> crate::error::ErrorCode {
        use crate::error::ErrorCode;
        match self {
            SnapshotError::SignatureInvalid(_) => ErrorCode::SnapshotSignatureInvalid,
            SnapshotError::Corrupt(_) => ErrorCode::SnapshotCorrupt,
            SnapshotError::KeyUnknown(_) => ErrorCode::SnapshotKeyUnknown,
            SnapshotError::Incompatible(_) => ErrorCode::SnapshotIncompatible,
            SnapshotError::Io(_) => ErrorCode::Internal,
            SnapshotError::NoSpace(_) => ErrorCode::NoSpace,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Error, ErrorCode};
    use std::io::ErrorKind;

    #[test]
    fn a_full_filesystem_is_no_space_and_other_io_is_internal() {
        let path = std::path::Path::new("/snap/memory");
        let full = Error::from(SnapshotError::io(path, &ErrorKind::StorageFull.into()));
        assert_eq!((full.code(), full.http_status()), (ErrorCode::NoSpace, 507));
        assert!(full.to_string().contains("/snap/memory"), "{full}");
        let denied = Error::from(SnapshotError::io(path, &ErrorKind::PermissionDenied.into()));
        assert_eq!(denied.code(), ErrorCode::Internal);
    }
}
