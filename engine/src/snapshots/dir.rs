//! A snapshot directory as the engine sees it: `<data>/snapshots/<id>/`, the host's files plus
//! [`MANIFEST_FILE`] (the [`SignedManifest`]), written last, so a directory with a signed
//! manifest is a finished snapshot.
//!
//! [`seal`] hashes every file the host wrote and signs the manifest; [`open`] checks a
//! directory before anything of it is used: signature (and key), identity, compatibility with
//! this host, then every file's size and hash.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Instant;

use super::SnapshotError;
use super::compat::{HostProfile, check};
use super::manifest::Manifest;
use super::signing::{SignedManifest, SnapshotKeys};
use super::verified::VerifiedFiles;

/// The signed manifest's file.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Who and what a new manifest describes.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The snapshot.
    pub snapshot_id: String,
    /// The sandbox it was taken of.
    pub sandbox_id: String,
    /// When, RFC 3339.
    pub created_at: String,
}

/// Hashes `files` (names in `dir`), signs the manifest with the current key and writes it.
/// Returns the key id and how long hashing and signing took (ms).
pub fn seal(
    dir: &Path,
    files: &[String],
    who: Identity,
    host: &HostProfile,
    keys: &SnapshotKeys,
) -> Result<(String, u64), SnapshotError> {
    let started = Instant::now();
    let mut manifest = Manifest {
        snapshot_id: who.snapshot_id,
        sandbox_id: who.sandbox_id,
        created_at: who.created_at,
        vmm: host.vmm.clone(),
        vmm_version: host.vmm_version.clone(),
        accelerator: host.accelerator.clone(),
        cpu_model: host.cpu_model.clone(),
        cpu_flags: host.cpu_flags.clone(),
        files: Default::default(),
    };
    let names: Vec<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|n| *n != MANIFEST_FILE)
        .collect();
    manifest.add_files(dir, &names)?;
    let signed = keys.sign(manifest)?;
    write_signed(dir, &signed)?;
    let ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    Ok((signed.kid, ms))
}

/// Reads the signed manifest of `dir` and checks its signature and that it is snapshot `id`'s.
pub fn signed_manifest(
    dir: &Path,
    id: &str,
    keys: &SnapshotKeys,
) -> Result<SignedManifest, SnapshotError> {
    let raw = std::fs::read(dir.join(MANIFEST_FILE)).map_err(|e| {
        SnapshotError::SignatureInvalid(format!("snapshot {id} has no signed manifest: {e}"))
    })?;
    let signed: SignedManifest = serde_json::from_slice(&raw).map_err(|e| {
        SnapshotError::SignatureInvalid(format!("snapshot {id}'s manifest is malformed: {e}"))
    })?;
    keys.verify(&signed)?;
    if signed.manifest.snapshot_id != id {
        return Err(SnapshotError::SignatureInvalid(format!(
            "the manifest in snapshot {id}'s directory is snapshot {}'s",
            signed.manifest.snapshot_id
        )));
    }
    Ok(signed)
}

/// Re-hashes `changed` files of a finished snapshot that this server rewrote on purpose (an
/// archive restored onto this host: its disks made raw, the host record saying so) and signs the
/// manifest again, keeping everything else of it. The old signature is checked first.
pub fn reseal(
    dir: &Path,
    id: &str,
    changed: &[String],
    keys: &SnapshotKeys,
) -> Result<(), SnapshotError> {
    let signed = signed_manifest(dir, id, keys)?;
    let mut manifest = signed.manifest;
    let names: Vec<&str> = changed.iter().map(String::as_str).collect();
    manifest.add_files(dir, &names)?;
    write_signed(dir, &keys.sign(manifest)?)
}

/// Writes [`MANIFEST_FILE`].
fn write_signed(dir: &Path, signed: &SignedManifest) -> Result<(), SnapshotError> {
    let json = serde_json::to_vec_pretty(signed)
        .map_err(|e| SnapshotError::Io(format!("encoding the manifest: {e}")))?;
    let path = dir.join(MANIFEST_FILE);
    platinum_hostagent::private_file::write(&path, &json).map_err(|e| SnapshotError::io(&path, &e))
}

/// Everything [`open`] checks, in order: signature, identity, compatibility, files (those
/// `verified` knows unchanged are not hashed again). Returns how long it took (ms).
pub fn open(
    dir: &Path,
    id: &str,
    keys: &SnapshotKeys,
    host: &HostProfile,
    verified: &VerifiedFiles,
) -> Result<u64, SnapshotError> {
    let started = Instant::now();
    let signed = signed_manifest(dir, id, keys)?;
    check(&signed.manifest, host)?;
    signed.manifest.verify_files(dir, verified)?;
    Ok(started.elapsed().as_millis().try_into().unwrap_or(u64::MAX))
}

/// Bytes the directory's files take on disk (allocated blocks: holes and shared extents of
/// hard links are not counted twice within one directory).
pub fn size_on_disk(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.blocks() * 512)
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostProfile {
        HostProfile {
            vmm: "qemu".into(),
            vmm_version: "10.0.2".into(),
            accelerator: "tcg".into(),
            cpu_model: "cpu".into(),
            cpu_flags: vec![],
        }
    }

    fn who(id: &str) -> Identity {
        Identity {
            snapshot_id: id.into(),
            sandbox_id: "sbx".into(),
            created_at: "2026-12-03T00:00:00Z".into(),
        }
    }

    /// A sealed directory with a 1 MiB "memory" and a small "state".
    fn sealed(keys: &SnapshotKeys) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vmstate"), vec![3u8; 1 << 20]).unwrap();
        std::fs::write(dir.path().join("host.json"), b"{}").unwrap();
        let files = vec!["host.json".to_string(), "vmstate".to_string()];
        seal(dir.path(), &files, who("snap1"), &host(), keys).unwrap();
        dir
    }

    #[test]
    fn every_tamper_case_is_refused_with_its_code_and_nothing_is_removed() {
        let keydir = tempfile::tempdir().unwrap();
        let keys = SnapshotKeys::load_or_create(&keydir.path().join("k.json")).unwrap();
        let dir = sealed(&keys);
        open(
            dir.path(),
            "snap1",
            &keys,
            &host(),
            &VerifiedFiles::default(),
        )
        .unwrap();
        assert!(size_on_disk(dir.path()) >= 1 << 20);

        // A flipped byte in the memory.
        let mem = dir.path().join("vmstate");
        let mut bytes = std::fs::read(&mem).unwrap();
        bytes[777] ^= 0x40;
        std::fs::write(&mem, &bytes).unwrap();
        let e = open(
            dir.path(),
            "snap1",
            &keys,
            &host(),
            &VerifiedFiles::default(),
        )
        .unwrap_err();
        assert_eq!(e.code(), "snapshot_corrupt");
        bytes[777] ^= 0x40;
        // Truncated.
        std::fs::write(&mem, &bytes[..1000]).unwrap();
        assert_eq!(
            open(
                dir.path(),
                "snap1",
                &keys,
                &host(),
                &VerifiedFiles::default()
            )
            .unwrap_err()
            .code(),
            "snapshot_corrupt"
        );
        std::fs::write(&mem, &bytes).unwrap();
        open(
            dir.path(),
            "snap1",
            &keys,
            &host(),
            &VerifiedFiles::default(),
        )
        .unwrap();

        // A flipped byte in the manifest (its text, then its signature).
        let manifest = dir.path().join(MANIFEST_FILE);
        let original = std::fs::read_to_string(&manifest).unwrap();
        std::fs::write(&manifest, original.replace("\"sbx\"", "\"sbY\"")).unwrap();
        assert_eq!(
            open(
                dir.path(),
                "snap1",
                &keys,
                &host(),
                &VerifiedFiles::default()
            )
            .unwrap_err()
            .code(),
            "snapshot_signature_invalid"
        );
        let signed: SignedManifest = serde_json::from_str(&original).unwrap();
        let mut sig = signed.signature.clone().into_bytes();
        sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
        let forged = original.replace(&signed.signature, std::str::from_utf8(&sig).unwrap());
        std::fs::write(&manifest, forged).unwrap();
        assert_eq!(
            open(
                dir.path(),
                "snap1",
                &keys,
                &host(),
                &VerifiedFiles::default()
            )
            .unwrap_err()
            .code(),
            "snapshot_signature_invalid"
        );
        // Unsigned, and another snapshot's manifest.
        std::fs::remove_file(&manifest).unwrap();
        assert_eq!(
            open(
                dir.path(),
                "snap1",
                &keys,
                &host(),
                &VerifiedFiles::default()
            )
            .unwrap_err()
            .code(),
            "snapshot_signature_invalid"
        );
        std::fs::write(&manifest, &original).unwrap();
        assert_eq!(
            open(
                dir.path(),
                "snap2",
                &keys,
                &host(),
                &VerifiedFiles::default()
            )
            .unwrap_err()
            .code(),
            "snapshot_signature_invalid"
        );
        // Incompatible host.
        let mut other = host();
        other.vmm_version = "11.0.0".into();
        assert_eq!(
            open(
                dir.path(),
                "snap1",
                &keys,
                &other,
                &VerifiedFiles::default()
            )
            .unwrap_err()
            .code(),
            "snapshot_incompatible"
        );
        // A retired key.
        let old = keys.current_kid();
        keys.rotate().unwrap();
        open(
            dir.path(),
            "snap1",
            &keys,
            &host(),
            &VerifiedFiles::default(),
        )
        .unwrap();
        keys.retire(&old).unwrap();
        assert_eq!(
            open(
                dir.path(),
                "snap1",
                &keys,
                &host(),
                &VerifiedFiles::default()
            )
            .unwrap_err()
            .code(),
            "snapshot_key_unknown"
        );
        // Nothing was removed by any refusal.
        for f in ["vmstate", "host.json", MANIFEST_FILE] {
            assert!(dir.path().join(f).is_file(), "{f}");
        }
    }
}
