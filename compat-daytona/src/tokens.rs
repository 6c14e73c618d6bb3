//! Tokens the Daytona front end hands out, all HMAC-SHA256 under the front end's secret (kept in
//! the data directory, so links survive a restart): preview tokens, signed preview links, and
//! per-sandbox signing keys for Daytona's signed file URLs (which the SDK signs itself).
//!
//! - A preview token belongs to one sandbox **and one port**: the token of a link to port 3000
//!   opens that port's previews and nothing else. The toolbox's WebSocket upgrades accept the
//!   token of port [`TOOLBOX_TOKEN_PORT`], which is what browser SDKs ask for
//!   (`getPreviewLink(1)`) to authenticate them.
//! - A signed preview link carries its sandbox, port and expiry, at most
//!   [`MAX_SIGNED_PREVIEW_SECS`] ahead (a token claiming a later expiry is refused, however it was
//!   made). Revoking one stores its hash with the engine until it expires
//!   (`Engine::revoke_token`), so it stays refused after a restart.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;
use time::OffsetDateTime;

type HmacSha256 = Hmac<Sha256>;

/// Longest a signed preview link may live.
pub const MAX_SIGNED_PREVIEW_SECS: u64 = 24 * 3600;

/// The port whose preview token authenticates the toolbox's WebSocket upgrades (browser SDKs
/// call `getPreviewLink(1)` for it).
pub const TOOLBOX_TOKEN_PORT: u16 = 1;

/// What revocations of signed preview links are recorded as.
pub const SIGNED_PREVIEW_KIND: &str = "daytona-signed-preview";

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

/// What a genuine signed preview token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedPreview {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Port.
    pub port: u16,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// The token's hash, as revocations are kept (`platinum_engine::commands::tokens::token_hash`).
    pub hash: String,
}

/// Signs and checks tokens.
pub struct Tokens {
    key: Vec<u8>,
}

impl Tokens {
    /// Tokens under `key`.
    pub fn new(key: Vec<u8>) -> Self {
        Tokens { key }
    }

    fn preview_mac(&self, sandbox_id: &str, port: u16) -> HmacSha256 {
        mac_of(
            &self.key,
            &[
                b"preview",
                sandbox_id.as_bytes(),
                port.to_string().as_bytes(),
            ],
        )
    }

    /// The preview token of `port` of `sandbox_id` (stable while the secret is).
    pub fn preview_token(&self, sandbox_id: &str, port: u16) -> String {
        let tag = self.preview_mac(sandbox_id, port).finalize().into_bytes();
        B64.encode(&tag[..24])
    }

    /// Whether `token` is the preview token of `port` of `sandbox_id` (constant time).
    pub fn check_preview_token(&self, sandbox_id: &str, port: u16, token: &str) -> bool {
        let Ok(bytes) = B64.decode(token) else {
            return false;
        };
        bytes.len() == 24
            && self
                .preview_mac(sandbox_id, port)
                .verify_truncated_left(&bytes)
                .is_ok()
    }

    /// A signed preview token for `port` of `sandbox_id`, valid for `ttl_secs` (at most
    /// [`MAX_SIGNED_PREVIEW_SECS`]).
    pub fn sign_preview(&self, sandbox_id: &str, port: u16, ttl_secs: u64) -> String {
        let expires = now_unix() + ttl_secs.min(MAX_SIGNED_PREVIEW_SECS) as i64;
        let nonce = hex::encode(random_secret().get(..6).unwrap_or_default());
        let payload = format!("{sandbox_id}.{port}.{expires}.{nonce}");
        let tag = mac_of(&self.key, &[b"signed-preview", payload.as_bytes()])
            .finalize()
            .into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    /// What a signed preview token grants if it is genuine (its MAC checks) and well-formed, and
    /// its expiry is not beyond what [`Tokens::sign_preview`] would give now; expired tokens are
    /// included (a revocation needs them). Revocation is not checked here.
    pub fn verify_signed_preview(&self, token: &str) -> Option<SignedPreview> {
        let (payload_b64, tag_b64) = token.split_once('.')?;
        let payload = B64.decode(payload_b64).ok()?;
        let tag = B64.decode(tag_b64).ok()?;
        mac_of(&self.key, &[b"signed-preview", &payload])
            .verify_slice(&tag)
            .ok()?;
        let text = String::from_utf8(payload).ok()?;
        let mut parts = text.split('.');
        let (id, port, expires, _nonce) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let expires_at: i64 = expires.parse().ok()?;
        if expires_at > now_unix() + MAX_SIGNED_PREVIEW_SECS as i64 {
            return None;
        }
        Some(SignedPreview {
            sandbox_id: id.to_string(),
            port: port.parse().ok().filter(|p| *p > 0)?,
            expires_at,
            hash: platinum_engine::commands::tokens::token_hash(token),
        })
    }

    /// What a signed preview token grants if it is genuine and unexpired (the caller still checks
    /// the engine's revocations with its `hash`).
    pub fn open_signed_preview(&self, token: &str) -> Option<SignedPreview> {
        self.verify_signed_preview(token)
            .filter(|g| g.expires_at > now_unix())
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
    fn preview_tokens_are_per_sandbox_port_and_secret() {
        let t = Tokens::new(b"k1".to_vec());
        let tok = t.preview_token("a", 8000);
        assert!(t.check_preview_token("a", 8000, &tok));
        assert!(!t.check_preview_token("b", 8000, &tok));
        assert!(!t.check_preview_token("a", 8001, &tok));
        assert!(!t.check_preview_token("a", TOOLBOX_TOKEN_PORT, &tok));
        assert!(!Tokens::new(b"k2".to_vec()).check_preview_token("a", 8000, &tok));
        assert!(!t.check_preview_token("a", 8000, "garbage!"));
        assert!(!t.check_preview_token("a", 8000, &tok[..10]));
    }

    fn forge(key: &[u8], payload: &str) -> String {
        let tag = mac_of(key, &[b"signed-preview", payload.as_bytes()])
            .finalize()
            .into_bytes();
        format!("{}.{}", B64.encode(payload), B64.encode(tag))
    }

    #[test]
    fn signed_previews_reject_tampering_expiry_and_far_futures() {
        let t = Tokens::new(b"k".to_vec());
        let tok = t.sign_preview("sbx", 8080, 60);
        let g = t.open_signed_preview(&tok).unwrap();
        assert_eq!((g.sandbox_id.as_str(), g.port), ("sbx", 8080));
        assert_eq!(g.hash, platinum_engine::commands::tokens::token_hash(&tok));
        let tampered = format!(
            "{}.{}",
            B64.encode("sbx.22.9999999999.00"),
            tok.split('.').nth(1).unwrap()
        );
        assert_eq!(t.verify_signed_preview(&tampered), None);
        let expired = t.sign_preview("sbx", 8080, 0);
        assert_eq!(t.open_signed_preview(&expired), None);
        assert!(
            t.verify_signed_preview(&expired).is_some(),
            "an expired token is still genuine (it can be revoked)"
        );
        // Made with the key but claiming an expiry beyond the longest a link may live.
        let far = forge(
            b"k",
            &format!("sbx.8080.{}.00", now_unix() + 10 * 365 * 86400),
        );
        assert_eq!(t.verify_signed_preview(&far), None);
        let ok = forge(b"k", &format!("sbx.8080.{}.00", now_unix() + 60));
        assert!(t.open_signed_preview(&ok).is_some());
        assert_eq!(t.open_signed_preview(&forge(b"k", "sbx.8080.x.00")), None);
        assert_eq!(
            t.open_signed_preview(&forge(b"k", &format!("sbx.0.{}.00", now_unix() + 60))),
            None
        );
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
