//! A sandbox's archive as the engine keeps it: what the host uploaded (every file as a list of
//! chunk hashes) with the sandbox it belongs to and what it was, signed with the snapshot keys.
//! The store holds it (`archives` table; a backup's in `backups`); a restore checks the signature before the host
//! downloads a byte, and the host checks every chunk against the hashes signed here.

use platinum_hostagent::archive::{Archive, TransferReport};
use serde::{Deserialize, Serialize};

use super::SnapshotError;
use super::signing::SnapshotKeys;

/// What is signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveManifest {
    /// The sandbox.
    pub sandbox_id: String,
    /// When, RFC 3339.
    pub created_at: String,
    /// Its memory image (a pause-to-disk snapshot) when it was archived paused, else `None`.
    pub suspend_snapshot: Option<String>,
    /// For a backup: the backup's snapshot, whose directory the archive holds (left out of the
    /// signed bytes when `None`, so archives signed before backups existed still verify).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backup_snapshot: Option<String>,
    /// The host's archive.
    pub archive: Archive,
    /// What the upload moved.
    pub report: TransferReport,
}

/// An archive manifest with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedArchive {
    /// What is signed.
    pub manifest: ArchiveManifest,
    /// The signing key's id.
    pub kid: String,
    /// Ed25519 signature of the manifest's JSON, base64url without padding.
    pub signature: String,
}

fn bytes(m: &ArchiveManifest) -> Vec<u8> {
    serde_json::to_vec(m).expect("an archive manifest serialises")
}

impl SignedArchive {
    /// Signs `manifest` with the current key.
    pub fn sign(manifest: ArchiveManifest, keys: &SnapshotKeys) -> Result<Self, SnapshotError> {
        let (kid, signature) = keys.sign_bytes(&bytes(&manifest))?;
        Ok(SignedArchive {
            manifest,
            kid,
            signature,
        })
    }

    /// Checks the signature and that it is sandbox `id`'s.
    pub fn verify(&self, id: &str, keys: &SnapshotKeys) -> Result<(), SnapshotError> {
        keys.verify_bytes(&self.kid, &self.signature, &bytes(&self.manifest))
            .map_err(|e| match e {
                SnapshotError::SignatureInvalid(m) => {
                    SnapshotError::SignatureInvalid(format!("sandbox {id}'s archive: {m}"))
                }
                other => other,
            })?;
        if self.manifest.sandbox_id != id {
            return Err(SnapshotError::SignatureInvalid(format!(
                "the archive kept for sandbox {id} is sandbox {}'s",
                self.manifest.sandbox_id
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use platinum_hostagent::archive::{ArchivedFile, ArchivedSet, CHUNK_SIZE};

    fn manifest() -> ArchiveManifest {
        ArchiveManifest {
            sandbox_id: "sbx1".into(),
            created_at: "2026-12-04T00:00:00Z".into(),
            suspend_snapshot: None,
            backup_snapshot: None,
            archive: Archive {
                chunk_size: CHUNK_SIZE,
                sets: vec![ArchivedSet {
                    name: "sandbox".into(),
                    files: vec![ArchivedFile {
                        name: "rootfs.disk".into(),
                        size: 5,
                        mode: 0o600,
                        chunks: vec![Some("ab".repeat(32))],
                    }],
                    disk_links: Vec::new(),
                }],
            },
            report: TransferReport::default(),
        }
    }

    #[test]
    fn a_signed_archive_verifies_and_any_change_or_other_sandbox_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SnapshotKeys::load_or_create(&dir.path().join("keys.json")).unwrap();
        let signed = SignedArchive::sign(manifest(), &keys).unwrap();
        signed.verify("sbx1", &keys).unwrap();
        assert!(matches!(
            signed.verify("other", &keys),
            Err(SnapshotError::SignatureInvalid(_))
        ));
        let mut tampered = signed.clone();
        tampered.manifest.archive.sets[0].files[0].chunks[0] = Some("cd".repeat(32));
        assert!(matches!(
            tampered.verify("sbx1", &keys),
            Err(SnapshotError::SignatureInvalid(_))
        ));
        let elsewhere = SnapshotKeys::load_or_create(&dir.path().join("other-keys.json")).unwrap();
        assert!(matches!(
            signed.verify("sbx1", &elsewhere),
            Err(SnapshotError::KeyUnknown(_))
        ));
    }
}
