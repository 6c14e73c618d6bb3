//! Egress policies: what a sandbox may reach beyond the host, by address, set at create and
//! replaced at any time without restarting its VM.
//!
//! The engine checks the policy, keeps it (`egress_policies`) and hands the host its rules
//! ([`EgressRules`]), which the host keeps in the sandbox's record (every boot and restore has
//! them before the guest runs) and enforces in the bridge firewall from the next packet on
//! (see `hostagent::net::egress`). The policy only ever narrows: the host, other sandboxes and
//! private and metadata ranges stay unreachable whatever it allows.
//!
//! An entry is an IPv4 address, a CIDR, a domain name (`api.example.com`) or a wildcard
//! (`*.example.com`: names under it). Names are enforced on the host, not trusted to the guest:
//! the sandbox's DNS goes to the host's resolver, which answers only names the policy lets it
//! resolve, and its HTTP(S) to the host's proxy, which checks each connection's TLS server name
//! or HTTP Host against the policy and the addresses the name resolved to (see
//! `hostagent::net::{resolver, proxy}`).

use std::net::Ipv4Addr;

use platinum_hostagent::net::{EgressRules, Ipv4Net, NamePattern};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::{EgressDefault, EgressPolicy, SandboxState};

/// Entries per list.
pub const MAX_ENTRIES: usize = 256;

/// One entry of a list.
enum Entry {
    Network(Ipv4Net),
    Name(NamePattern),
}

/// One entry: `a.b.c.d`, `a.b.c.d/n`, a name or a `*.` wildcard.
fn entry(entry: &str) -> Result<Entry> {
    let entry = entry.trim();
    if let Ok(net) = entry.parse::<Ipv4Net>() {
        return Ok(Entry::Network(net.trunc()));
    }
    if let Ok(ip) = entry.parse::<Ipv4Addr>() {
        return Ok(Entry::Network(Ipv4Net::from(ip)));
    }
    if entry.contains(':') && entry.parse::<std::net::IpAddr>().is_ok()
        || entry
            .split('/')
            .next()
            .is_some_and(|a| a.parse::<std::net::Ipv6Addr>().is_ok())
    {
        return Err(Error::InvalidRequest(format!(
            "{entry:?}: sandboxes have no IPv6 route; give IPv4 addresses or CIDRs"
        )));
    }
    if entry.chars().any(|c| c.is_ascii_alphabetic()) && !entry.contains('/') {
        return NamePattern::parse(entry)
            .map(Entry::Name)
            .map_err(|e| Error::InvalidRequest(e.to_string()));
    }
    Err(Error::InvalidRequest(format!(
        "{entry:?} is not an IPv4 address, CIDR or domain name"
    )))
}

/// A list's networks and names.
fn entries(list: &[String], which: &str) -> Result<(Vec<Ipv4Net>, Vec<NamePattern>)> {
    if list.len() > MAX_ENTRIES {
        return Err(Error::InvalidRequest(format!(
            "{which} has {} entries; at most {MAX_ENTRIES}",
            list.len()
        )));
    }
    let (mut nets, mut names) = (Vec::new(), Vec::new());
    for e in list {
        match entry(e)? {
            Entry::Network(n) => nets.push(n),
            Entry::Name(n) => names.push(n),
        }
    }
    Ok((nets, names))
}

/// Checks a policy and turns it into the host's rules.
pub(crate) fn egress_rules(policy: &EgressPolicy) -> Result<EgressRules> {
    let (allow, allow_names) = entries(&policy.allow, "allow")?;
    let (deny, deny_names) = entries(&policy.deny, "deny")?;
    Ok(EgressRules {
        default_deny: policy.default == EgressDefault::Deny,
        allow,
        deny,
        allow_names,
        deny_names,
    })
}

impl Engine {
    /// A sandbox's egress policy (everything public when none was set).
    pub async fn get_egress_policy(&self, id: &str) -> Result<EgressPolicy> {
        let s = self.load(id).await?;
        Ok(self
            .store
            .get_egress_policy(&s.id)
            .await?
            .unwrap_or_default())
    }

    /// Replaces a sandbox's egress policy; a running sandbox has it from its next packet on
    /// (header rules: from its next HTTPS connection to their host).
    pub async fn set_egress_policy(&self, id: &str, policy: EgressPolicy) -> Result<EgressPolicy> {
        self.replace_egress_policy(id, policy, false).await
    }

    /// Replaces what a sandbox may reach (`default`, `allow`, `deny` of `policy`) and keeps
    /// the header rules it has: for front ends that cannot express header rules, so that
    /// changing a list there never drops rules set through the API.
    pub async fn set_egress_destinations(
        &self,
        id: &str,
        policy: EgressPolicy,
    ) -> Result<EgressPolicy> {
        self.replace_egress_policy(id, policy, true).await
    }

    async fn replace_egress_policy(
        &self,
        id: &str,
        mut policy: EgressPolicy,
        keep_header_rules: bool,
    ) -> Result<EgressPolicy> {
        let rules = egress_rules(&policy)?;
        policy.header_rules = self.check_header_rules(&policy.header_rules).await?;
        let _g = self.lock(id).await;
        let s = self.load(id).await?;
        if matches!(
            s.state,
            SandboxState::Archived | SandboxState::Deleted | SandboxState::Creating
        ) {
            return Err(Error::InvalidState {
                id: s.id.clone(),
                state: s.state.to_string(),
                action: "an egress policy change".into(),
                needed: "on this host (start an archived sandbox first)".into(),
            });
        }
        if keep_header_rules {
            policy.header_rules = self
                .store
                .get_egress_policy(&s.id)
                .await?
                .map(|p| p.header_rules)
                .unwrap_or_default();
        }
        self.host.set_egress(&s.id, rules).await?;
        self.store.set_egress_policy(&s.id, Some(&policy)).await?;
        // The broker has the rules' headers from the next connection on.
        self.push_secrets(&s.id).await?;
        let headers: Vec<&str> = policy
            .header_rules
            .iter()
            .map(|r| r.host.as_str())
            .collect();
        let detail = serde_json::json!({
            "default": policy.default, "allow": policy.allow, "deny": policy.deny,
            "header_rules": headers,
        });
        self.store
            .append_event(&s.id, "egress_policy_set", &detail)
            .await?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    fn policy(default: EgressDefault, allow: &[&str], deny: &[&str]) -> EgressPolicy {
        EgressPolicy {
            default,
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
            header_rules: Vec::new(),
        }
    }

    #[test]
    fn addresses_and_cidrs_become_rules_and_anything_else_is_refused() {
        let rules = egress_rules(&policy(
            EgressDefault::Deny,
            &["203.0.113.7", "198.51.100.9/24"],
            &[" 192.0.2.0/28 "],
        ))
        .unwrap();
        assert!(rules.default_deny);
        assert_eq!(
            rules.allow,
            vec![
                "203.0.113.7/32".parse::<Ipv4Net>().unwrap(),
                "198.51.100.0/24".parse().unwrap()
            ]
        );
        assert_eq!(rules.deny, vec!["192.0.2.0/28".parse::<Ipv4Net>().unwrap()]);
        assert_eq!(
            egress_rules(&EgressPolicy::default()).unwrap(),
            EgressRules::default()
        );
        let code = |allow: &str| {
            egress_rules(&policy(EgressDefault::Allow, &[allow], &[]))
                .unwrap_err()
                .code()
        };
        let named = egress_rules(&policy(
            EgressDefault::Deny,
            &["API.example.com", "*.example.org", "203.0.113.7"],
            &["*.evil.example"],
        ))
        .unwrap();
        assert_eq!(named.allow.len(), 1);
        let names = |l: &[NamePattern]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(
            names(&named.allow_names),
            ["api.example.com", "*.example.org"]
        );
        assert_eq!(names(&named.deny_names), ["*.evil.example"]);
        assert_eq!(code("*.com"), ErrorCode::InvalidRequest);
        assert_eq!(code("localhost"), ErrorCode::InvalidRequest);
        assert_eq!(code("a.*.example.com"), ErrorCode::InvalidRequest);
        assert_eq!(code("example.com/24"), ErrorCode::InvalidRequest);
        assert_eq!(code("2001:db8::/32"), ErrorCode::InvalidRequest);
        assert_eq!(code("10.0.0.0/33"), ErrorCode::InvalidRequest);
        assert_eq!(code("; drop"), ErrorCode::InvalidRequest);
        assert_eq!(code("not-a-cidr"), ErrorCode::InvalidRequest);
        assert_eq!(code(""), ErrorCode::InvalidRequest);
        let many: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("203.0.113.{}", i % 250))
            .collect();
        let e = egress_rules(&EgressPolicy {
            deny: many,
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidRequest);
    }
}
