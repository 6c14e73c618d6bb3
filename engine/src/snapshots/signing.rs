//! The keys that sign snapshot manifests: Ed25519 (`ed25519-dalek`), kept in one owner-only file
//! in the data directory (`snapshot-keys.json`, 0600, written atomically), made on first use.
//!
//! Each key has a `kid` (the first 16 hex digits of the BLAKE3 of its public key) that travels
//! with every signature. [`SnapshotKeys::rotate`] makes a new key current; older keys keep
//! verifying the snapshots they signed until [`SnapshotKeys::retire`]d. The public keys that
//! still verify are published as a JWKS ([`SnapshotKeys::jwks`]: `OKP`/`Ed25519`, RFC 8037).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::SnapshotError;
use super::manifest::Manifest;

/// A manifest with its signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// What is signed.
    pub manifest: Manifest,
    /// The signing key's id.
    pub kid: String,
    /// Ed25519 signature of [`Manifest::signed_bytes`], base64url without padding.
    pub signature: String,
}

/// One key as the key file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredKey {
    kid: String,
    /// The 32-byte secret, hex.
    secret: String,
    created_at: String,
    /// Retired keys verify nothing any more.
    #[serde(default)]
    retired: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct KeyFile {
    current: String,
    keys: Vec<StoredKey>,
}

/// The server's snapshot signing keys.
pub struct SnapshotKeys {
    path: PathBuf,
    file: Mutex<KeyFile>,
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> SnapshotError + '_ {
    move |e| SnapshotError::io(path, &e)
}

fn kid_of(key: &VerifyingKey) -> String {
    blake3::hash(key.as_bytes()).to_hex()[..16].to_string()
}

fn new_key() -> (StoredKey, SigningKey) {
    let signing = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let stored = StoredKey {
        kid: kid_of(&signing.verifying_key()),
        secret: hex::encode(signing.to_bytes()),
        created_at: now,
        retired: false,
    };
    (stored, signing)
}

fn signing_key(k: &StoredKey) -> Result<SigningKey, SnapshotError> {
    let bytes: [u8; 32] = hex::decode(&k.secret)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| SnapshotError::Io(format!("key {} is damaged", k.kid)))?;
    Ok(SigningKey::from_bytes(&bytes))
}

impl SnapshotKeys {
    /// Loads the keys in `path`, creating the file with one key if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, SnapshotError> {
        let file = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice::<KeyFile>(&bytes).map_err(|e| {
                SnapshotError::Io(format!("{} is not a key file: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (key, _) = new_key();
                let file = KeyFile {
                    current: key.kid.clone(),
                    keys: vec![key],
                };
                save(path, &file)?;
                tracing::info!(path = %path.display(), kid = %file.current, "created the snapshot signing key");
                file
            }
            Err(e) => return Err(io(path)(e)),
        };
        if !file
            .keys
            .iter()
            .any(|k| k.kid == file.current && !k.retired)
        {
            return Err(SnapshotError::Io(format!(
                "{} has no current key",
                path.display()
            )));
        }
        Ok(SnapshotKeys {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The current key's id.
    pub fn current_kid(&self) -> String {
        self.file.lock().expect("snapshot keys").current.clone()
    }

    /// Signs a manifest with the current key.
    pub fn sign(&self, manifest: Manifest) -> Result<SignedManifest, SnapshotError> {
        let (kid, signature) = self.sign_bytes(&manifest.signed_bytes())?;
        Ok(SignedManifest {
            kid,
            signature,
            manifest,
        })
    }

    /// Checks a signed manifest: a key this server has and has not retired, and a signature
    /// that verifies (strictly) over the manifest.
    pub fn verify(&self, signed: &SignedManifest) -> Result<(), SnapshotError> {
        self.verify_bytes(
            &signed.kid,
            &signed.signature,
            &signed.manifest.signed_bytes(),
        )
    }

    /// Signs `bytes` with the current key: `(kid, signature)`, the signature base64url without
    /// padding.
    pub fn sign_bytes(&self, bytes: &[u8]) -> Result<(String, String), SnapshotError> {
        let file = self.file.lock().expect("snapshot keys");
        let current = file
            .keys
            .iter()
            .find(|k| k.kid == file.current)
            .ok_or_else(|| SnapshotError::Io("no current key".into()))?;
        let signature = signing_key(current)?.sign(bytes);
        Ok((
            current.kid.clone(),
            URL_SAFE_NO_PAD.encode(signature.to_bytes()),
        ))
    }

    /// Checks `signature` over `bytes`: key `kid` exists here and is not retired, and the
    /// signature verifies strictly.
    pub fn verify_bytes(
        &self,
        kid: &str,
        signature: &str,
        bytes: &[u8],
    ) -> Result<(), SnapshotError> {
        let key = {
            let file = self.file.lock().expect("snapshot keys");
            let stored = file.keys.iter().find(|k| k.kid == kid).ok_or_else(|| {
                SnapshotError::KeyUnknown(format!("no key {kid:?} on this server"))
            })?;
            if stored.retired {
                return Err(SnapshotError::KeyUnknown(format!(
                    "key {} was retired",
                    stored.kid
                )));
            }
            signing_key(stored)?.verifying_key()
        };
        let sig: [u8; 64] = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| SnapshotError::SignatureInvalid("no valid signature".into()))?;
        key.verify_strict(bytes, &Signature::from_bytes(&sig))
            .map_err(|_| {
                SnapshotError::SignatureInvalid("the signature does not match what it signs".into())
            })
    }

    /// Makes a new key current (the old ones keep verifying); returns its id.
    pub fn rotate(&self) -> Result<String, SnapshotError> {
        let mut file = self.file.lock().expect("snapshot keys");
        let (key, _) = new_key();
        let mut next = file.clone();
        next.current = key.kid.clone();
        next.keys.push(key);
        save(&self.path, &next)?;
        *file = next;
        tracing::info!(kid = %file.current, "snapshot signing key rotated");
        Ok(file.current.clone())
    }

    /// Retires a key that is not the current one: snapshots it signed are refused from now on.
    pub fn retire(&self, kid: &str) -> Result<(), SnapshotError> {
        let mut file = self.file.lock().expect("snapshot keys");
        if file.current == kid {
            return Err(SnapshotError::Io(
                "the current key cannot be retired; rotate first".into(),
            ));
        }
        let mut next = file.clone();
        let key = next
            .keys
            .iter_mut()
            .find(|k| k.kid == kid)
            .ok_or_else(|| SnapshotError::KeyUnknown(format!("no key {kid:?}")))?;
        key.retired = true;
        save(&self.path, &next)?;
        *file = next;
        Ok(())
    }

    /// The public keys that still verify, as a JWKS (RFC 8037: `OKP`, `Ed25519`, `x` base64url).
    pub fn jwks(&self) -> serde_json::Value {
        let file = self.file.lock().expect("snapshot keys");
        let keys: Vec<serde_json::Value> = file
            .keys
            .iter()
            .filter(|k| !k.retired)
            .filter_map(|k| {
                let public = signing_key(k).ok()?.verifying_key();
                Some(serde_json::json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(public.as_bytes()),
                    "kid": k.kid,
                    "use": "sig",
                    "alg": "EdDSA",
                }))
            })
            .collect();
        serde_json::json!({ "keys": keys })
    }
}

fn save(path: &Path, file: &KeyFile) -> Result<(), SnapshotError> {
    let bytes = serde_json::to_vec_pretty(file).expect("a key file serialises");
    platinum_hostagent::private_file::write(path, &bytes).map_err(io(path))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshots::manifest::tests::manifest;
    use std::os::unix::fs::PermissionsExt;

    fn keys() -> (tempfile::TempDir, SnapshotKeys) {
        let dir = tempfile::tempdir().unwrap();
        let keys = SnapshotKeys::load_or_create(&dir.path().join("snapshot-keys.json")).unwrap();
        (dir, keys)
    }

    #[test]
    fn a_signed_manifest_verifies_and_any_change_is_refused() {
        let (dir, keys) = keys();
        let mode = std::fs::metadata(dir.path().join("snapshot-keys.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let signed = keys.sign(manifest()).unwrap();
        keys.verify(&signed).unwrap();

        let mut altered = signed.clone();
        altered.manifest.cpu_flags.push("avx512f".into());
        assert!(matches!(
            keys.verify(&altered),
            Err(SnapshotError::SignatureInvalid(_))
        ));
        let mut flipped = signed.clone();
        let mut sig = URL_SAFE_NO_PAD.decode(&flipped.signature).unwrap();
        sig[10] ^= 1;
        flipped.signature = URL_SAFE_NO_PAD.encode(sig);
        assert!(matches!(
            keys.verify(&flipped),
            Err(SnapshotError::SignatureInvalid(_))
        ));
        let unsigned = SignedManifest {
            signature: String::new(),
            ..signed.clone()
        };
        assert!(matches!(
            keys.verify(&unsigned),
            Err(SnapshotError::SignatureInvalid(_))
        ));
        let unknown = SignedManifest {
            kid: "0000000000000000".into(),
            ..signed.clone()
        };
        assert_eq!(
            keys.verify(&unknown).unwrap_err().code(),
            "snapshot_key_unknown"
        );
        // Another server's key: unknown here, whatever it signed.
        let (_other_dir, other) = self::keys();
        assert!(matches!(
            other.verify(&signed),
            Err(SnapshotError::KeyUnknown(_))
        ));
    }

    #[test]
    fn rotation_keeps_old_snapshots_verifying_until_the_key_is_retired() {
        let (dir, keys) = keys();
        let old = keys.sign(manifest()).unwrap();
        let first = keys.current_kid();
        let second = keys.rotate().unwrap();
        assert_ne!(first, second);
        let new = keys.sign(manifest()).unwrap();
        assert_eq!(new.kid, second);
        keys.verify(&old).unwrap();
        keys.verify(&new).unwrap();
        let jwks = keys.jwks();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_eq!(jwks["keys"][0]["kty"], "OKP");
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
        assert_eq!(
            URL_SAFE_NO_PAD
                .decode(jwks["keys"][0]["x"].as_str().unwrap())
                .unwrap()
                .len(),
            32
        );
        assert!(keys.retire(&second).is_err(), "the current key stays");
        keys.retire(&first).unwrap();
        assert!(matches!(
            keys.verify(&old),
            Err(SnapshotError::KeyUnknown(_))
        ));
        keys.verify(&new).unwrap();
        assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 1);
        // All of it survives a restart.
        let reloaded =
            SnapshotKeys::load_or_create(&dir.path().join("snapshot-keys.json")).unwrap();
        assert_eq!(reloaded.current_kid(), second);
        reloaded.verify(&new).unwrap();
        assert!(reloaded.verify(&old).is_err());
    }

    #[test]
    fn a_damaged_key_file_is_an_error_not_a_new_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("snapshot-keys.json");
        std::fs::write(&path, b"{not json").unwrap();
        assert!(matches!(
            SnapshotKeys::load_or_create(&path),
            Err(SnapshotError::Io(_))
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"{not json");
    }
}
