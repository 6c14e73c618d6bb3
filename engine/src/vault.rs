//! Secret values at rest: XChaCha20-Poly1305 under one key per data directory
//! (`<data>/secrets.key`, 0600, made on first use), a random nonce per value and the secret's
//! id as associated data, so a sealed value copied onto another secret's row does not open.
//! An engine without a data directory keeps its key in memory (its store is in memory too).

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::Digest;
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// The key's file in the data directory.
pub const KEY_FILE: &str = "secrets.key";
const NONCE_LEN: usize = 24;

/// Seals and opens secret values.
pub struct Vault {
    cipher: XChaCha20Poly1305,
}

impl Vault {
    /// The vault of `data_dir` (key read or made there), or one with a key in memory only.
    pub fn open(data_dir: Option<&std::path::Path>) -> Result<Vault> {
        let key: Zeroizing<Vec<u8>> = match data_dir {
            Some(dir) => {
                let text = Zeroizing::new(
                    crate::secrets::load_or_create_secret(&dir.join(KEY_FILE), "secrets key")
                        .map_err(|e| Error::Internal(format!("the secrets key: {e}")))?,
                );
                // At least 32 random bytes' worth of text; the key is its hash.
                Zeroizing::new(sha2::Sha256::digest(text.as_slice()).to_vec())
            }
            None => Zeroizing::new(rand::random::<[u8; 32]>().to_vec()),
        };
        let cipher = XChaCha20Poly1305::new_from_slice(&key)
            .map_err(|_| Error::Internal("the secrets key has the wrong length".into()))?;
        Ok(Vault { cipher })
    }

    /// `value` encrypted for secret `id`: nonce, then ciphertext and tag.
    pub fn seal(&self, id: &str, value: &str) -> Result<Vec<u8>> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let sealed = self
            .cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: value.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| Error::Internal("encrypting a secret failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// The value sealed for secret `id`; an error when it was sealed for another id, under
    /// another key, or altered.
    pub fn open_value(&self, id: &str, sealed: &[u8]) -> Result<Zeroizing<String>> {
        let corrupt =
            || Error::Internal(format!("secret {id} does not decrypt with this host's key"));
        if sealed.len() < NONCE_LEN {
            return Err(corrupt());
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let plain = Zeroizing::new(
            self.cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: body,
                        aad: id.as_bytes(),
                    },
                )
                .map_err(|_| corrupt())?,
        );
        let text = std::str::from_utf8(&plain).map_err(|_| corrupt())?;
        Ok(Zeroizing::new(text.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_for_its_secret_and_key_and_is_not_stored_in_clear() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(Some(dir.path())).unwrap();
        let sealed = vault.seal("sec_a", "hunter2-value").unwrap();
        assert!(!sealed.windows(13).any(|w| w == b"hunter2-value"));
        assert_eq!(
            vault.open_value("sec_a", &sealed).unwrap().as_str(),
            "hunter2-value"
        );
        assert!(vault.open_value("sec_b", &sealed).is_err());
        let again = Vault::open(Some(dir.path())).unwrap();
        assert_eq!(
            again.open_value("sec_a", &sealed).unwrap().as_str(),
            "hunter2-value"
        );
        assert!(
            Vault::open(None)
                .unwrap()
                .open_value("sec_a", &sealed)
                .is_err()
        );
        let mut altered = sealed.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(vault.open_value("sec_a", &altered).is_err());
        assert!(vault.open_value("sec_a", &sealed[..10]).is_err());
    }
}
