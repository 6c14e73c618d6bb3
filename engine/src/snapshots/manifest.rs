//! A snapshot's manifest: identity, origin, and the size and BLAKE3 hash of every file.
//!
//! Files are hashed through a memory map (BLAKE3's SIMD paths; a multi-GiB memory file takes
//! about a second per GiB per core). File names are single path components inside the snapshot
//! directory: a manifest can never name a file outside it.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

use super::SnapshotError;
use super::verified::{Stamp, VerifiedFiles};

/// Size and hash of one file of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileDigest {
    /// Bytes.
    pub size: u64,
    /// BLAKE3, hex.
    pub blake3: String,
}

/// What a snapshot holds and where it was taken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The snapshot.
    pub snapshot_id: String,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    /// When, RFC 3339.
    pub created_at: String,
    /// The VMM that wrote the device state (`qemu`, `cloud-hypervisor`) and its version.
    pub vmm: String,
    /// Its version.
    pub vmm_version: String,
    /// `kvm` or `tcg`.
    pub accelerator: String,
    /// The host CPU's model name.
    pub cpu_model: String,
    /// The host CPU's feature flags (sorted).
    pub cpu_flags: Vec<String>,
    /// Every file of the snapshot, by name (device state, memory, disks, config).
    pub files: BTreeMap<String, FileDigest>,
}

impl Manifest {
    /// The bytes that are signed: the manifest's JSON (struct fields in declaration order, maps
    /// sorted, so the same manifest always gives the same bytes).
    pub fn signed_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest serialises")
    }

    /// Hashes `names` in `dir` into the manifest's file list.
    pub fn add_files(&mut self, dir: &Path, names: &[&str]) -> Result<(), SnapshotError> {
        for name in names {
            check_name(name)?;
            self.files
                .insert((*name).to_string(), digest(&dir.join(name))?);
        }
        Ok(())
    }

    /// Checks that `dir` holds every file of the manifest with its size and hash (sizes first,
    /// so a truncated snapshot is refused before anything is hashed). A file `verified` knows,
    /// unchanged since, is not hashed again.
    pub fn verify_files(&self, dir: &Path, verified: &VerifiedFiles) -> Result<(), SnapshotError> {
        for (name, want) in &self.files {
            check_name(name)?;
            let size = std::fs::metadata(dir.join(name))
                .map_err(|e| SnapshotError::Corrupt(format!("{name}: {e}")))?
                .len();
            if size != want.size {
                return Err(SnapshotError::Corrupt(format!(
                    "{name} is {size} bytes, the manifest says {}",
                    want.size
                )));
            }
        }
        for (name, want) in &self.files {
            let path = dir.join(name);
            let stamp =
                Stamp::of(&path).map_err(|e| SnapshotError::Corrupt(format!("{name}: {e}")))?;
            if verified.known(&path, &stamp).as_deref() == Some(want.blake3.as_str()) {
                continue;
            }
            let got = digest(&path)?;
            if got.blake3 != want.blake3 {
                return Err(SnapshotError::Corrupt(format!(
                    "{name} does not match its hash"
                )));
            }
            verified.remember(&path, stamp, got.blake3);
        }
        Ok(())
    }
}

/// Size and BLAKE3 of a file, read through a memory map.
pub fn digest(path: &Path) -> Result<FileDigest, SnapshotError> {
    let io = |e: std::io::Error| SnapshotError::io(path, &e);
    let mut hasher = blake3::Hasher::new();
    hasher.update_mmap(path).map_err(io)?;
    let size = std::fs::metadata(path).map_err(io)?.len();
    Ok(FileDigest {
        size,
        blake3: hasher.finalize().to_hex().to_string(),
    })
}

/// A file name must be one plain path component.
fn check_name(name: &str) -> Result<(), SnapshotError> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(SnapshotError::Corrupt(format!(
            "file name {name:?} is not a plain name"
        )));
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn manifest() -> Manifest {
        Manifest {
            snapshot_id: "snap1".into(),
            sandbox_id: "sbx1".into(),
            created_at: "2026-12-03T12:00:00Z".into(),
            vmm: "qemu".into(),
            vmm_version: "9.2.0".into(),
            accelerator: "tcg".into(),
            cpu_model: "test cpu".into(),
            cpu_flags: vec!["avx2".into(), "sse4_2".into()],
            files: BTreeMap::new(),
        }
    }

    #[test]
    fn a_flipped_byte_a_truncation_or_a_missing_file_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("memory"), vec![7u8; 1 << 20]).unwrap();
        std::fs::write(dir.path().join("state"), b"device state").unwrap();
        let mut m = manifest();
        m.add_files(dir.path(), &["memory", "state"]).unwrap();
        assert_eq!(m.files["memory"].size, 1 << 20);
        m.verify_files(dir.path(), &VerifiedFiles::default())
            .unwrap();

        let mut bytes = std::fs::read(dir.path().join("memory")).unwrap();
        bytes[123_456] ^= 1;
        std::fs::write(dir.path().join("memory"), &bytes).unwrap();
        assert!(matches!(
            m.verify_files(dir.path(), &VerifiedFiles::default()),
            Err(SnapshotError::Corrupt(_))
        ));
        bytes[123_456] ^= 1;
        bytes.truncate(1000);
        std::fs::write(dir.path().join("memory"), &bytes).unwrap();
        let e = m
            .verify_files(dir.path(), &VerifiedFiles::default())
            .unwrap_err();
        assert!(e.to_string().contains("1000 bytes"), "{e}");
        std::fs::remove_file(dir.path().join("state")).unwrap();
        assert!(matches!(
            m.verify_files(dir.path(), &VerifiedFiles::default()),
            Err(SnapshotError::Corrupt(_))
        ));
    }

    #[test]
    fn names_cannot_leave_the_snapshot_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = manifest();
        for bad in ["../etc/passwd", "a/b", "..", ""] {
            assert!(m.add_files(dir.path(), &[bad]).is_err(), "{bad}");
        }
        m.files.insert(
            "../x".into(),
            FileDigest {
                size: 0,
                blake3: String::new(),
            },
        );
        assert!(matches!(
            m.verify_files(dir.path(), &VerifiedFiles::default()),
            Err(SnapshotError::Corrupt(_))
        ));
    }
}
