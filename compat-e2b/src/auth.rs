//! Who may do what: API keys on the control plane, envd access tokens on sandbox traffic, signed
//! file URLs, and the Linux user a request acts as.
//!
//! - Control plane: `X-API-KEY` is a Platinum API key (the engine verifies it).
//! - envd access token: `HMAC-SHA256(key, "envd-access-token:" + sandbox id)`, hex. The key is
//!   kept in the data directory, so a sandbox's token is the same after a restart and nothing
//!   per sandbox has to be stored. envd RPCs, `/envs` and `/metrics` need it as `X-Access-Token`;
//!   `/files` takes the header or a URL signature; `/health` is open.
//! - Traffic access token: `HMAC-SHA256(key, "traffic-access-token:" + sandbox id)`, hex, handed
//!   out as `trafficAccessToken` for sandboxes that are not public. Ports other than envd and the
//!   code interpreter need it as `E2B-Traffic-Access-Token`, or the envd access token as
//!   `X-Access-Token` ([`may_reach_port`]); E2B's proxy asks for the former.
//! - Signed file URLs (`download_url`/`upload_url`): `signature = "v1_" +
//!   base64_nopad(sha256("{path}:{read|write}:{username}:{token}[:{expiration}]"))`, and an
//!   expiration, when given, must not have passed.
//! - Volume token: `HMAC-SHA256(key, "volume-token:" + volume id)`, hex, handed out as the
//!   `token` of `VolumeAndToken`; the volume content API takes it as `Authorization: Bearer`
//!   (an API key works there too).
//! - Template file upload URLs (handed out by `GET /templates/{id}/files/{hash}`, used without
//!   the API key): `signature = hex(HMAC-SHA256(key, "template-files:{hash}:{expires}"))` with
//!   `expires` in Unix seconds, which must not have passed ([`template_files_signature`]).
//! - `Authorization: Basic base64("<user>:")` picks the Linux user; it is not authentication.

use axum::http::HeaderMap;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// Header carrying the envd access token.
pub const ACCESS_TOKEN_HEADER: &str = "x-access-token";
/// Header carrying the traffic access token (E2B's `E2B-Traffic-Access-Token`).
pub const TRAFFIC_TOKEN_HEADER: &str = "e2b-traffic-access-token";

/// `hex(HMAC-SHA256(secret, label + subject))`: every token and signature of this front end.
fn hmac_hex(secret: &[u8], label: &str, subject: &str) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(label.as_bytes());
    mac.update(subject.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// The envd access token of a sandbox.
pub fn access_token(secret: &[u8], sandbox_id: &str) -> String {
    hmac_hex(secret, "envd-access-token:", sandbox_id)
}

/// The traffic access token of a sandbox (for its ports other than envd and the interpreter).
pub fn traffic_token(secret: &[u8], sandbox_id: &str) -> String {
    hmac_hex(secret, "traffic-access-token:", sandbox_id)
}

/// The token of a volume (`VolumeAndToken.token`), which the volume content API takes as
/// `Authorization: Bearer`.
pub fn volume_token(secret: &[u8], volume_id: &str) -> String {
    hmac_hex(secret, "volume-token:", volume_id)
}

/// Whether `headers` carry volume `volume_id`'s token as `Authorization: Bearer`.
pub fn has_volume_token(headers: &HeaderMap, secret: &[u8], volume_id: &str) -> bool {
    bearer(headers).is_some_and(|t| same(t.as_bytes(), volume_token(secret, volume_id).as_bytes()))
}

/// The signature of a template file upload URL for `hash`, valid until `expires` (Unix seconds).
pub fn template_files_signature(secret: &[u8], hash: &str, expires: i64) -> String {
    hmac_hex(secret, "template-files:", &format!("{hash}:{expires}"))
}

/// Checks a template file upload URL's signature and expiration against `now_unix`; the error
/// says what is wrong.
pub fn check_template_files_signature(
    secret: &[u8],
    hash: &str,
    expires: i64,
    signature: &str,
    now_unix: i64,
) -> Result<(), String> {
    if expires < now_unix {
        return Err("the upload URL has expired; ask for a new one".into());
    }
    let expected = template_files_signature(secret, hash, expires);
    if same(expected.as_bytes(), signature.as_bytes()) {
        Ok(())
    } else {
        Err("invalid upload URL signature".into())
    }
}

/// Whether a request may reach a non-public sandbox's service ports: it presents the sandbox's
/// traffic access token (`E2B-Traffic-Access-Token`) or its envd access token (`X-Access-Token`).
pub fn may_reach_port(headers: &HeaderMap, secret: &[u8], sandbox_id: &str) -> bool {
    let traffic = headers
        .get(TRAFFIC_TOKEN_HEADER)
        .is_some_and(|v| same(v.as_bytes(), traffic_token(secret, sandbox_id).as_bytes()));
    traffic || has_token(headers, &access_token(secret, sandbox_id))
}

/// Compares two secrets without leaking where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether the request presents the sandbox's access token.
pub fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get(ACCESS_TOKEN_HEADER)
        .is_some_and(|v| same(v.as_bytes(), token.as_bytes()))
}

/// The signature of a file URL, as the SDKs compute it.
pub fn file_signature(
    path: &str,
    operation: &str,
    user: &str,
    token: &str,
    expiration: Option<i64>,
) -> String {
    let raw = match expiration {
        Some(exp) => format!("{path}:{operation}:{user}:{token}:{exp}"),
        None => format!("{path}:{operation}:{user}:{token}"),
    };
    let digest = Sha256::digest(raw.as_bytes());
    format!(
        "v1_{}",
        base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
    )
}

/// What a signed file URL claims: a path, an operation (`read` or `write`), a user, and
/// the signature with its expiration.
#[derive(Debug, Clone, Copy)]
pub struct SignedUrl<'a> {
    /// The file.
    pub path: &'a str,
    /// `read` (download) or `write` (upload).
    pub operation: &'a str,
    /// The user it acts as (`None`: the default user, signed as "").
    pub user: Option<&'a str>,
    /// `v1_...`.
    pub signature: &'a str,
    /// Unix seconds after which it is refused.
    pub expiration: Option<i64>,
}

impl SignedUrl<'_> {
    /// Whether `token` made the signature (whether or not it has expired).
    pub fn signed_with(&self, token: &str) -> bool {
        let expected = file_signature(
            self.path,
            self.operation,
            self.user.unwrap_or(""),
            token,
            self.expiration,
        );
        same(expected.as_bytes(), self.signature.as_bytes())
    }

    /// Checks the signature against `token` and the expiration against `now_unix`; the error
    /// says what is wrong.
    pub fn check(&self, token: &str, now_unix: i64) -> Result<(), String> {
        if self.expiration.is_some_and(|exp| exp < now_unix) {
            return Err("the signature has expired".into());
        }
        if self.signed_with(token) {
            Ok(())
        } else {
            Err("invalid signature".into())
        }
    }
}

/// The control-plane API key (`X-API-KEY`, any case; `Authorization: Bearer` also accepted).
pub fn api_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    bearer(headers)
}

/// The credential of `Authorization: Bearer <credential>`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let auth = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, key) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(key.trim())
}

/// The user named by `Authorization: Basic base64("<user>:")`; `Ok(None)` when there is none.
pub fn basic_user(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| "bad Authorization header".to_string())?;
    let Some((scheme, encoded)) = text.split_once(' ') else {
        return Err("bad Authorization header".into());
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| "bad Basic credentials".to_string())?;
    let decoded = String::from_utf8(decoded).map_err(|_| "bad Basic credentials".to_string())?;
    let user = decoded.split(':').next().unwrap_or_default();
    Ok((!user.is_empty()).then(|| user.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stable_per_sandbox_and_key() {
        let a = access_token(b"key-one", "sbx1");
        assert_eq!(a, access_token(b"key-one", "sbx1"));
        assert_ne!(a, access_token(b"key-one", "sbx2"));
        assert_ne!(a, access_token(b"key-two", "sbx1"));
        let mut h = HeaderMap::new();
        h.insert(ACCESS_TOKEN_HEADER, a.parse().unwrap());
        assert!(has_token(&h, &a));
        assert!(!has_token(&h, &access_token(b"key-two", "sbx1")));
        assert!(!has_token(&HeaderMap::new(), &a));
    }

    #[test]
    fn volume_tokens_are_bearer_credentials_of_one_volume() {
        let t = volume_token(b"key", "vol1");
        assert_ne!(t, access_token(b"key", "vol1"));
        let bearer = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert("authorization", format!("Bearer {v}").parse().unwrap());
            h
        };
        assert!(has_volume_token(&bearer(&t), b"key", "vol1"));
        assert!(!has_volume_token(&bearer(&t), b"key", "vol2"));
        assert!(!has_volume_token(&bearer(&t), b"other", "vol1"));
        assert!(!has_volume_token(&bearer(""), b"key", "vol1"));
        assert!(!has_volume_token(&HeaderMap::new(), b"key", "vol1"));
    }

    #[test]
    fn ports_need_the_traffic_or_the_access_token_of_their_sandbox() {
        let key = b"key";
        let traffic = traffic_token(key, "sbx1");
        assert_ne!(traffic, access_token(key, "sbx1"));
        let with = |name: &'static str, value: &str| {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            h
        };
        assert!(may_reach_port(
            &with(TRAFFIC_TOKEN_HEADER, &traffic),
            key,
            "sbx1"
        ));
        assert!(may_reach_port(
            &with(ACCESS_TOKEN_HEADER, &access_token(key, "sbx1")),
            key,
            "sbx1"
        ));
        assert!(!may_reach_port(
            &with(TRAFFIC_TOKEN_HEADER, &traffic),
            key,
            "sbx2"
        ));
        assert!(!may_reach_port(
            &with(ACCESS_TOKEN_HEADER, &traffic),
            key,
            "sbx1"
        ));
        assert!(!may_reach_port(&with("x-api-key", &traffic), key, "sbx1"));
        assert!(!may_reach_port(&HeaderMap::new(), key, "sbx1"));
    }

    #[test]
    fn file_signatures_match_the_sdk() {
        // Computed with the Python SDK's e2b.sandbox.signature.get_signature.
        let sig = file_signature("/home/user/a.txt", "read", "", "tok", None);
        assert_eq!(sig, "v1_Zkbb3914oLJLvMBzCAHQhm2ydBLxbSx2eQUR/kLdvIY");
        let url = |path, operation, user, signature, expiration| SignedUrl {
            path,
            operation,
            user,
            signature,
            expiration,
        };
        assert!(
            url("/home/user/a.txt", "read", None, &sig, None)
                .check("tok", 0)
                .is_ok()
        );
        assert!(
            url("/home/user/a.txt", "write", None, &sig, None)
                .check("tok", 0)
                .is_err()
        );
        let timed = file_signature("/x", "write", "user", "tok", Some(100));
        let timed = url("/x", "write", Some("user"), &timed, Some(100));
        assert!(timed.check("tok", 50).is_ok());
        assert!(!timed.signed_with("other"));
        assert_eq!(
            timed.check("tok", 101),
            Err("the signature has expired".into())
        );
    }

    #[test]
    fn template_upload_urls_are_signed_per_hash_and_expiry() {
        let hash = "ab".repeat(32);
        let sig = template_files_signature(b"key", &hash, 100);
        assert_eq!(sig.len(), 64);
        assert!(check_template_files_signature(b"key", &hash, 100, &sig, 99).is_ok());
        assert!(check_template_files_signature(b"key", &hash, 100, &sig, 100).is_ok());
        let expired = check_template_files_signature(b"key", &hash, 100, &sig, 101);
        assert!(expired.unwrap_err().contains("expired"));
        // Another key, hash or expiry (a later one, to stretch the URL) does not verify.
        assert!(check_template_files_signature(b"other", &hash, 100, &sig, 0).is_err());
        let other_hash = "cd".repeat(32);
        assert!(check_template_files_signature(b"key", &other_hash, 100, &sig, 0).is_err());
        assert!(check_template_files_signature(b"key", &hash, 200, &sig, 0).is_err());
        assert!(check_template_files_signature(b"key", &hash, 100, "", 0).is_err());
    }

    #[test]
    fn basic_auth_names_the_user() {
        let mut h = HeaderMap::new();
        h.insert("authorization", "Basic cm9vdDo=".parse().unwrap());
        assert_eq!(basic_user(&h), Ok(Some("root".into())));
        h.insert("authorization", "Basic !!".parse().unwrap());
        assert!(basic_user(&h).is_err());
        assert_eq!(basic_user(&HeaderMap::new()), Ok(None));
    }
}
