//! What each sandbox's brokered HTTPS may carry: the placeholders it holds (with the secrets and
//! hosts behind them) and the headers set on its requests to given hosts (E2B's header
//! transforms, values resolved from secrets by the engine). The engine replaces a sandbox's entry
//! whenever its grants, its egress policy's header rules or a secret they use change; values
//! live in memory only (never in `sandbox.json` or any other host file) and are wiped when
//! dropped.

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

/// Headers set on every brokered request to hosts matching `host`, replacing what the sandbox
/// sent under those names. Of the rules matching a host only the most specific applies (its
/// own name, else the longest wildcard); rules are not merged.
#[derive(Clone)]
pub struct HeaderRule {
    /// A name, or `*.domain` for every name under `domain`.
    pub host: String,
    /// (header name, value) in order; values may hold secrets (never logged).
    pub headers: Vec<(String, Zeroizing<String>)>,
}

impl std::fmt::Debug for HeaderRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("HeaderRule")
            .field("host", &self.host)
            .field("headers", &names)
            .finish()
    }
}

/// Everything one sandbox's brokered traffic may carry.
#[derive(Debug, Clone, Default)]
pub struct BrokeredEgress {
    /// Placeholders the sandbox holds, replaced in requests to their secrets' hosts.
    pub secrets: Vec<BrokeredSecret>,
    /// Headers set on requests to given hosts.
    pub headers: Vec<HeaderRule>,
}

impl BrokeredEgress {
    /// Whether there is nothing to broker.
    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty() && self.headers.is_empty()
    }
}

/// What the broker does to each request of one connection.
#[derive(Default)]
pub struct BrokerPlan {
    /// (placeholder, secret) pairs replaced in request header values.
    pub replacements: Replacements,
    /// (header name, value) set on every request, after the replacements, in order.
    pub set_headers: Vec<(String, Zeroizing<String>)>,
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

/// Every sandbox's brokered egress, by sandbox id.
#[derive(Default)]
pub struct SecretRegistry {
    by_sandbox: RwLock<HashMap<String, Arc<BrokeredEgress>>>,
}

impl SecretRegistry {
    /// Replaces sandbox `id`'s entry (an empty one removes it).
    pub fn set(&self, id: &str, egress: BrokeredEgress) {
        let mut map = self.by_sandbox.write().expect("secret registry");
        if egress.is_empty() {
            map.remove(id);
        } else {
            map.insert(id.to_string(), Arc::new(egress));
        }
    }

    /// What the broker does to sandbox `id`'s requests to `host`: the (placeholder, value)
    /// pairs bound to it and the headers set for it. `None` when there is nothing (then its
    /// traffic to the host is spliced, not brokered).
    pub fn plan(&self, id: &str, host: &str) -> Option<BrokerPlan> {
        let map = self.by_sandbox.read().expect("secret registry");
        let egress = map.get(id)?;
        let replacements: Replacements = egress
            .secrets
            .iter()
            .filter(|s| s.hosts.iter().any(|p| host_matches(p, host)))
            .map(|s| (s.placeholder.clone(), s.value.clone()))
            .collect();
        // The most specific rule alone: the host's own, else the longest matching wildcard.
        let set_headers: Vec<(String, Zeroizing<String>)> = egress
            .headers
            .iter()
            .filter(|r| host_matches(&r.host, host))
            .max_by_key(|r| match r.host.strip_prefix("*.") {
                Some(domain) => domain.len(),
                None => usize::MAX,
            })
            .map(|r| r.headers.clone())
            .unwrap_or_default();
        (!replacements.is_empty() || !set_headers.is_empty()).then_some(BrokerPlan {
            replacements,
            set_headers,
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
        let header = |h: &str, name: &str, v: &str| HeaderRule {
            host: h.into(),
            headers: vec![(name.into(), Zeroizing::new(v.into()))],
        };
        r.set(
            "sb1",
            BrokeredEgress {
                secrets: vec![secret("P1", "v1", "a.test"), secret("P2", "v2", "*.b.test")],
                headers: vec![
                    header("a.test", "x-key", "k1"),
                    header("*.test", "x-all", "k2"),
                    header("h.test", "x-h", "k3"),
                ],
            },
        );
        let got = r.plan("sb1", "a.test").unwrap();
        assert_eq!(got.replacements.len(), 1);
        let pair = &got.replacements[0];
        assert_eq!((pair.0.as_str(), pair.1.as_str()), ("P1", "v1"));
        let names = |p: &BrokerPlan| -> Vec<String> {
            p.set_headers.iter().map(|(n, _)| n.clone()).collect()
        };
        // The host's own rule wins over the wildcard; rules are not merged.
        assert_eq!(names(&got), ["x-key"]);
        assert_eq!(names(&r.plan("sb1", "x.b.test").unwrap()), ["x-all"]);
        // Headers alone make a host brokered.
        let only_headers = r.plan("sb1", "h.test").unwrap();
        assert!(only_headers.replacements.is_empty());
        assert_eq!(names(&only_headers), ["x-h"]);
        assert_eq!(names(&r.plan("sb1", "z.test").unwrap()), ["x-all"]);
        assert!(r.plan("sb1", "c.example").is_none());
        assert!(r.plan("sb2", "a.test").is_none());
        assert!(!format!("{:?}", secret("P", "hunter2", "h")).contains("hunter2"));
        assert!(!format!("{:?}", header("h", "x", "hunter2")).contains("hunter2"));
        r.set("sb1", BrokeredEgress::default());
        assert!(r.plan("sb1", "a.test").is_none());
    }
}
