//! Edge tokens: self-contained, HMAC-SHA256-signed grants to reach one port of one sandbox
//! until an expiry.
//!
//! Form: `pte1.<kid>.<sandbox>.<port>.<expires_at>.<nonce>.<mac>`, where `nonce` is random (two
//! tokens minted in the same second differ, so one can be revoked alone) and `mac` is the
//! unpadded base64url HMAC-SHA256, under key `kid`, of everything before the last dot. No part may hold a
//! dot, so the token splits in exactly one way. [`parse`] checks only the shape; [`verify`]
//! checks the MAC in constant time (`Mac::verify_slice`), then the target and the expiry.
//! Revocation (by the token's hash, or of its whole key) is the caller's concern.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The version prefix every edge token starts with.
pub const PREFIX: &str = "pte1";

/// Longest token accepted (anything longer is refused before any work).
pub const MAX_TOKEN_LEN: usize = 512;

/// What a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The key that signed it.
    pub kid: String,
    /// The sandbox it reaches.
    pub sandbox: String,
    /// The port inside that sandbox.
    pub port: u16,
    /// Unix seconds after which it is refused.
    pub expires_at: i64,
    /// Random, lowercase alphanumerics: makes every token unique.
    pub nonce: String,
}

/// A fresh nonce for [`Claims::nonce`].
pub fn nonce() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

/// Why a token is refused (each refusal is the same 401 on the wire; the reason is logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an edge token at all, or its parts do not parse.
    Malformed,
    /// Signed by no key this server has (never, or deleted since).
    UnknownKey,
    /// The MAC does not match: altered or forged.
    BadSignature,
    /// For another sandbox or port.
    WrongTarget,
    /// Past its expiry.
    Expired,
    /// Revoked on its own.
    Revoked,
}

impl Refusal {
    /// A short description for logs and error messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed edge token",
            Refusal::UnknownKey => "edge token signed by an unknown or deleted key",
            Refusal::BadSignature => "edge token signature does not verify",
            Refusal::WrongTarget => "edge token is for another sandbox or port",
            Refusal::Expired => "edge token has expired",
            Refusal::Revoked => "edge token was revoked",
        }
    }
}

fn mac(secret: &[u8], payload: &str) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    let mut m = HmacSha256::new_from_slice(secret).expect("HMAC accepts every key length");
    m.update(payload.as_bytes());
    m
}

/// Signs `claims` with `secret` (the key named by `claims.kid`).
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    let payload = format!(
        "{PREFIX}.{}.{}.{}.{}.{}",
        claims.kid, claims.sandbox, claims.port, claims.expires_at, claims.nonce
    );
    let sig = URL_SAFE_NO_PAD.encode(mac(secret, &payload).finalize().into_bytes());
    format!("{payload}.{sig}")
}

/// A parsed but unverified token: its claims, the signed payload and the MAC bytes.
#[derive(Debug)]
pub struct Parsed<'a> {
    /// What it claims.
    pub claims: Claims,
    payload: &'a str,
    sig: Vec<u8>,
}

fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Splits a token into its claims; `Malformed` for anything not of the form.
pub fn parse(token: &str) -> Result<Parsed<'_>, Refusal> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Refusal::Malformed);
    }
    let (payload, sig) = token.rsplit_once('.').ok_or(Refusal::Malformed)?;
    let parts: Vec<&str> = payload.split('.').collect();
    let [prefix, kid, sandbox, port, exp, nonce] = parts[..] else {
        return Err(Refusal::Malformed);
    };
    if prefix != PREFIX || !is_name(kid) || !is_name(sandbox) || !is_name(nonce) {
        return Err(Refusal::Malformed);
    }
    // Digits only: `parse` alone would take a sign, and "+80" must not name port 80.
    let digits = |s: &str| !s.is_empty() && s.len() <= 12 && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(port) || !digits(exp) {
        return Err(Refusal::Malformed);
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or(Refusal::Malformed)?;
    let expires_at = exp.parse::<i64>().map_err(|_| Refusal::Malformed)?;
    let sig = URL_SAFE_NO_PAD
        .decode(sig)
        .map_err(|_| Refusal::Malformed)?;
    Ok(Parsed {
        claims: Claims {
            kid: kid.to_string(),
            sandbox: sandbox.to_string(),
            port,
            expires_at,
            nonce: nonce.to_string(),
        },
        payload,
        sig,
    })
}

/// Checks only the MAC (constant time): the token was made by the holder of `secret`.
pub fn verify_signature(parsed: &Parsed<'_>, secret: &[u8]) -> Result<(), Refusal> {
    mac(secret, parsed.payload)
        .verify_slice(&parsed.sig)
        .map_err(|_| Refusal::BadSignature)
}

/// Verifies a parsed token with its key's `secret` for (`sandbox`, `port`) at `now` (Unix
/// seconds): signature first, in constant time, then target, then expiry.
pub fn verify(
    parsed: &Parsed<'_>,
    secret: &[u8],
    sandbox: &str,
    port: u16,
    now: i64,
) -> Result<(), Refusal> {
    verify_signature(parsed, secret)?;
    if parsed.claims.sandbox != sandbox || parsed.claims.port != port {
        return Err(Refusal::WrongTarget);
    }
    if parsed.claims.expires_at <= now {
        return Err(Refusal::Expired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            kid: "ekabc".into(),
            sandbox: "sbx1".into(),
            port: 8000,
            expires_at: 2_000,
            nonce: "n0nce".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_for_its_target_until_it_expires() {
        let t = sign(&claims(), b"secret");
        let p = parse(&t).unwrap();
        assert_eq!(p.claims, claims());
        assert_eq!(verify(&p, b"secret", "sbx1", 8000, 1_999), Ok(()));
        assert_eq!(
            verify(&p, b"secret", "sbx1", 8000, 2_000),
            Err(Refusal::Expired)
        );
        assert_eq!(
            verify(&p, b"secret", "sbx1", 8001, 1_000),
            Err(Refusal::WrongTarget)
        );
        assert_eq!(
            verify(&p, b"secret", "sbx2", 8000, 1_000),
            Err(Refusal::WrongTarget)
        );
        assert_eq!(
            verify(&p, b"other", "sbx1", 8000, 1_000),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn any_altered_part_breaks_the_signature() {
        let t = sign(&claims(), b"secret");
        for (from, to) in [
            (".8000.", ".8001."),
            (".2000.", ".9999."),
            (".sbx1.", ".sbx2."),
        ] {
            let forged = t.replacen(from, to, 1);
            let p = parse(&forged).unwrap();
            assert_eq!(
                verify(&p, b"secret", &p.claims.sandbox.clone(), p.claims.port, 0),
                Err(Refusal::BadSignature),
                "{forged}"
            );
        }
        // A flipped MAC character.
        let mut bytes = t.into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let flipped = String::from_utf8(bytes).unwrap();
        let p = parse(&flipped).unwrap();
        assert_eq!(
            verify(&p, b"secret", "sbx1", 8000, 0),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens_are_refused_before_any_key_is_used() {
        let good = sign(&claims(), b"s");
        for bad in [
            "",
            "pte1",
            "pte2.ekabc.sbx1.8000.2000.n0nce.AAAA",
            "pte1.ekabc.sbx1.0.2000.n0nce.AAAA",
            "pte1.ekabc.sbx1.+80.2000.n0nce.AAAA",
            "pte1.ekabc.sbx1.70000.2000.n0nce.AAAA",
            "pte1.ekabc.SBX.8000.2000.n0nce.AAAA",
            "pte1.ekabc.sbx1.8000.-5.n0nce.AAAA",
            "pte1.ekabc.sbx1.8000.2000.n0nce.!!",
            "pte1.ek.abc.sbx1.8000.2000.n0nce.AAAA",
            "pte1.ekabc.sbx1.8000.2000.AAAA",
            "pte1.ekabc.sbx1.8000.2000.N-O.AAAA",
            &format!("{good}{}", "A".repeat(MAX_TOKEN_LEN)),
        ] {
            assert_eq!(parse(bad).err(), Some(Refusal::Malformed), "{bad:?}");
        }
    }
}
