//! Tokens the Daytona front end hands out, all HMAC-SHA256 under the front end's secret, so none
//! needs storing: a sandbox's preview token, signed preview links (with an expiry; revocable),
//! and per-sandbox signing keys for Daytona's signed file URLs (which the SDK signs itself).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use std::collections::HashMap;
use std::sync::Mutex;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// Longest a signed preview link may live.
pub const MAX_SIGNED_PREVIEW_SECS: u64 = 24 * 3600;

/// A fresh random secret.
pub fn random_secret() -> Vec<u8> {
    let mut rng = rand::rng();
    (0..32).map(|_| rng.random::<u8>()).collect()
}

fn mac_of(key: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key length");
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            mac.update(b"\n");
        }
        mac.update(p);
    }
    mac
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// What a valid signed preview token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPreview {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Port.
    pub port: u16,
}

/// Signs and checks tokens; remembers revoked signed links until they would have expired.
pub struct Tokens {
    key: Vec<u8>,
    revoked: Mutex<HashMap<String, i64>>,
}

impl Tokens {
    /// Tokens under `key`.
    pub fn new(key: Vec<u8>) -> Self {
        Tokens {
            key,
            revoked: Mutex::new(HashMap::new()),
        }
    }

    /// A sandbox's preview token (same for every port; stable while the secret is).
    pub fn preview_token(&self, sandbox_id: &str) -> String {
        let tag = mac_of(&self.key, &[b"preview", sandbox_id.as_bytes()])
            .finalize()
            .into_bytes();
        B64.encode(&tag[..24])
    }

    /// Whether `token` is the preview token of `sandbox_id` (constant time).
    pub fn check_preview_token(&self, sandbox_id: &str, token: &str) -> bool {
        let Ok(bytes) = B64.decode(token) else {
            return false;
        };
        mac_of(&self.key, &[b"preview", sandbox_id.as_bytes()])
            .verify_truncated_left(&bytes)
            .is_ok()
            && bytes.len() == 24
    }

    /// A signed preview token for `port` of `sandbox_id`, valid for `ttl_secs`.
    pub fn sign_preview(&self, sandbox_id: &str, port: u16, ttl_secs: u64) -> String {
        let expires = now_unix() + ttl_secs.min(MAX_SIGNED_PREVIEW_SECS) as i64;
        let nonce = hex::encode(random_secret().get(..6).unwrap_or_default());
        let payload = format!("{sandbox_id}.{port}.{expires}.{nonce}");
        let tag = mac_of(&self.key, &[b"signed-preview", payload.as_bytes()])
            .finalize()
            .into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    /// What a signed preview token grants, if it is genuine, unexpired and not revoked.
    pub fn open_signed_preview(&self, token: &str) -> Option<SignedPreview> {
        let (payload_b64, tag_b64) = token.split_once('.')?;
        let payload = B64.decode(payload_b64).ok()?;
        let tag = B64.decode(tag_b64).ok()?;
        mac_of(&self.key, &[b"signed-preview", &payload])
            .verify_slice(&tag)
            .ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.split('.');
        let (id, port, expires) = (parts.next()?, parts.next()?, parts.next()?);
        let expires: i64 = expires.parse().ok()?;
        if expires <= now_unix() || self.is_revoked(token) {
            return None;
        }
        Some(SignedPreview {
            sandbox_id: id.to_string(),
            port: port.parse().ok()?,
        })
    }

    /// Revokes a signed preview token before its expiry. Unknown or forged tokens are ignored.
    pub fn revoke_signed_preview(&self, token: &str) {
        let Some(expires) = token
            .split_once('.')
            .and_then(|(p, _)| B64.decode(p).ok())
            .and_then(|p| String::from_utf8(p).ok())
            .and_then(|t| t.split('.').nth(2).and_then(|e| e.parse::<i64>().ok()))
        else {
            return;
        };
        let now = now_unix();
        let mut revoked = self.revoked.lock().expect("revoked tokens");
        revoked.retain(|_, exp| *exp > now);
        revoked.insert(token.to_string(), expires);
    }

    fn is_revoked(&self, token: &str) -> bool {
        self.revoked
            .lock()
            .expect("revoked tokens")
            .contains_key(token)
    }

    /// The key the SDK signs file URLs of `sandbox_id` with; `generation` changes on rotation.
    pub fn signing_key(&self, sandbox_id: &str, generation: u64) -> String {
        let tag = mac_of(
            &self.key,
            &[
                b"file-signing-key",
                sandbox_id.as_bytes(),
                generation.to_string().as_bytes(),
            ],
        )
        .finalize()
        .into_bytes();
        B64.encode(tag)
    }
}

/// Checks a Daytona signed file URL: `signature` must be
/// `v1_` + base64url(HMAC-SHA256(signing key, "v1:files:<METHOD>:<path>:<expires>")), and
/// `expires` (Unix seconds) must be 0 (never) or in the future.
pub fn verify_file_signature(
    signing_key: &str,
    method: &str,
    path: &str,
    expires: i64,
    signature: &str,
) -> bool {
    if expires != 0 && expires <= now_unix() {
        return false;
    }
    let Some(sig) = signature
        .strip_prefix("v1_")
        .and_then(|s| B64.decode(s).ok())
    else {
        return false;
    };
    let canonical = format!("v1:files:{method}:{path}:{expires}");
    let mut mac = HmacSha256::new_from_slice(signing_key.as_bytes()).expect("any key length");
    mac.update(canonical.as_bytes());
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_case_2() {
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn preview_tokens_are_per_sandbox_and_per_secret() {
        let t = Tokens::new(b"k1".to_vec());
        let tok = t.preview_token("a");
        assert!(t.check_preview_token("a", &tok));
        assert!(!t.check_preview_token("b", &tok));
        assert!(!Tokens::new(b"k2".to_vec()).check_preview_token("a", &tok));
        assert!(!t.check_preview_token("a", "garbage!"));
        assert!(!t.check_preview_token("a", &tok[..10]));
    }

    #[test]
    fn signed_previews_open_until_revoked_and_reject_tampering() {
        let t = Tokens::new(b"k".to_vec());
        let tok = t.sign_preview("sbx", 8080, 60);
        assert_eq!(
            t.open_signed_preview(&tok),
            Some(SignedPreview {
                sandbox_id: "sbx".into(),
                port: 8080
            })
        );
        let forged = format!(
            "{}.{}",
            B64.encode("sbx.22.9999999999.00"),
            tok.split('.').nth(1).unwrap()
        );
        assert_eq!(t.open_signed_preview(&forged), None);
        let expired = t.sign_preview("sbx", 8080, 0);
        assert_eq!(t.open_signed_preview(&expired), None);
        t.revoke_signed_preview(&tok);
        assert_eq!(t.open_signed_preview(&tok), None);
    }

    #[test]
    fn file_signatures_follow_the_sdk_recipe() {
        // What the SDKs compute (see `fileUrlSigning.js`): HMAC over the canonical string.
        let key = "k3y";
        let expires = now_unix() + 60;
        let mut mac = HmacSha256::new_from_slice(key.as_bytes()).unwrap();
        mac.update(format!("v1:files:GET:/home/user/a.txt:{expires}").as_bytes());
        let sig = format!("v1_{}", B64.encode(mac.finalize().into_bytes()));
        assert!(verify_file_signature(
            key,
            "GET",
            "/home/user/a.txt",
            expires,
            &sig
        ));
        assert!(!verify_file_signature(
            key,
            "POST",
            "/home/user/a.txt",
            expires,
            &sig
        ));
        assert!(!verify_file_signature(
            key,
            "GET",
            "/home/user/b.txt",
            expires,
            &sig
        ));
        assert!(!verify_file_signature(
            key,
            "GET",
            "/home/user/a.txt",
            1,
            &sig
        ));
        assert!(!verify_file_signature(
            "other",
            "GET",
            "/home/user/a.txt",
            expires,
            &sig
        ));
    }
}
