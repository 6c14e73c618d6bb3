//! Which placeholders each sandbox holds, and the secrets and hosts behind them. The engine
//! replaces a sandbox's entry whenever its grants or a granted secret change; values live in
//! memory only (never in `sandbox.json` or any other host file) and are wiped when dropped.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

/// One secret a sandbox may have put into its requests.
#[derive(Clone)]
pub struct BrokeredSecret {
    /// What the guest has instead of the value.
    pub placeholder: String,
    /// The value (never logged: `Debug` leaves it out).
    pub value: Zeroizing<String>,
    /// Hosts it may be sent to: names, or `*.domain` for every name under `domain`.
    pub hosts: Vec<String>,
}

impl std::fmt::Debug for BrokeredSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokeredSecret")
            .field("placeholder", &self.placeholder)
            .field("value", &"<redacted>")
            .field("hosts", &self.hosts)
            .finish()
    }
}

/// Whether `host` (a name as sent in SNI or `Host`, any case, a trailing dot and a `:port`
/// allowed) is matched by `pattern`: the same name, or for `*.domain` any name below `domain`
/// (not `domain` itself).
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let host = normalize(host);
    let pattern = pattern.trim().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() || pattern.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(domain) => host
            .strip_suffix(domain)
            .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
        None => host == pattern,
    }
}

/// A host name without port, trailing dot or case.
fn normalize(host: &str) -> String {
    let host = host.trim();
    let host = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// (placeholder, secret) pairs a brokered connection replaces.
pub type Replacements = Vec<(String, Zeroizing<String>)>;

/// Every sandbox's brokered secrets, by sandbox id.
#[derive(Default)]
pub struct SecretRegistry {
    by_sandbox: RwLock<HashMap<String, Arc<Vec<BrokeredSecret>>>>,
}

impl SecretRegistry {
    /// Replaces sandbox `id`'s secrets (none removes its entry).
    pub fn set(&self, id: &str, secrets: Vec<BrokeredSecret>) {
        let mut map = self.by_sandbox.write().expect("secret registry");
        if secrets.is_empty() {
            map.remove(id);
        } else {
            map.insert(id.to_string(), Arc::new(secrets));
        }
    }

    /// The (placeholder, value) pairs sandbox `id` may send to `host`: what the broker replaces
    /// in requests to it. Empty when it has none for that host (then its traffic to the host is
    /// spliced, not brokered).
    pub fn replacements(&self, id: &str, host: &str) -> Replacements {
        let map = self.by_sandbox.read().expect("secret registry");
        let Some(secrets) = map.get(id) else {
            return Vec::new();
        };
        secrets
            .iter()
            .filter(|s| s.hosts.iter().any(|p| host_matches(p, host)))
            .map(|s| (s.placeholder.clone(), s.value.clone()))
            .collect()
    }

    /// Whether sandbox `id` has any secret bound to `host` (the egress proxy's decision: broker
    /// the connection or splice it).
    pub fn brokers(&self, id: &str, host: &str) -> bool {
        let map = self.by_sandbox.read().expect("secret registry");
        map.get(id).is_some_and(|secrets| {
            secrets
                .iter()
                .any(|s| s.hosts.iter().any(|p| host_matches(p, host)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_and_wildcards_match_names_below_their_domain() {
        assert!(host_matches("api.example.com", "API.example.com."));
        assert!(host_matches("api.example.com", "api.example.com:443"));
        assert!(!host_matches("api.example.com", "example.com"));
        assert!(!host_matches("api.example.com", "xapi.example.com"));
        assert!(host_matches("*.example.com", "a.b.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(!host_matches("*.example.com", "badexample.com"));
        assert!(!host_matches("*.example.com", ".example.com"));
        assert!(!host_matches("", "example.com"));
    }

    #[test]
    fn a_sandbox_gets_only_the_secrets_bound_to_the_host() {
        let r = SecretRegistry::default();
        let secret = |p: &str, v: &str, h: &str| BrokeredSecret {
            placeholder: p.into(),
            value: Zeroizing::new(v.into()),
            hosts: vec![h.into()],
        };
        r.set(
            "sb1",
            vec![secret("P1", "v1", "a.test"), secret("P2", "v2", "*.b.test")],
        );
        let got = r.replacements("sb1", "a.test");
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0.as_str(), got[0].1.as_str()), ("P1", "v1"));
        assert!(r.brokers("sb1", "x.b.test"));
        assert!(!r.brokers("sb1", "c.test"));
        assert!(r.replacements("sb2", "a.test").is_empty());
        assert!(!format!("{:?}", secret("P", "hunter2", "h")).contains("hunter2"));
        r.set("sb1", Vec::new());
        assert!(!r.brokers("sb1", "a.test"));
    }
}
