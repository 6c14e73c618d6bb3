//! A sandbox's egress rules in nftables.
//!
//! Each sandbox address with a network lease has a chain `eg_<a>_<b>_<c>_<d>` in the bridge's
//! `inet` table, reached from the forward chain through the verdict map `egress` (keyed by
//! source address) *after* the drops that always hold — other sandboxes, the host, private,
//! shared, link-local and metadata ranges — so rules narrow what a sandbox reaches and can never
//! widen it. In the chain: allowed networks accept, then denied networks drop, then the default
//! (drop when it is deny). Allow wins over deny, so "deny everything but these" is a default of
//! deny with an allow-list.
//!
//! A change replaces the chain's rules in one `nft -f` transaction: it holds for the next packet,
//! of new and established connections alike, and the VM never restarts.
//!
//! Rules that name domains make the sandbox *proxied* (set `proxied`): its DNS (any server, UDP
//! and TCP port 53) is redirected to the host's resolver ([`super::resolver`]), which answers
//! only names the rules let it resolve and records the addresses of allowed names in the set
//! `learned` (sandbox . address, with the answer's TTL); its TCP ports 80 and 443 are redirected
//! to the host's proxy ([`super::proxy`]), which checks each connection's TLS server name or HTTP
//! Host. Other ports reach learned addresses by address. A connection let through by `learned`
//! is marked with the chain's generation (`ct mark`), so it outlives its address's TTL, and a
//! rule change (a new generation) re-checks it against the new rules on its next packet.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::names::{NamePattern, any_matches};

/// What a sandbox may reach beyond the host, by address and by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EgressRules {
    /// Drop what neither list names (else let it through).
    #[serde(default)]
    pub default_deny: bool,
    /// Networks always reachable (still never the private ranges).
    #[serde(default)]
    pub allow: Vec<Ipv4Net>,
    /// Networks never reachable unless also allowed.
    #[serde(default)]
    pub deny: Vec<Ipv4Net>,
    /// Names always reachable: resolved by the host, their addresses learned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_names: Vec<NamePattern>,
    /// Names never resolved nor reached over HTTP(S) unless also allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_names: Vec<NamePattern>,
}

impl EgressRules {
    /// Whether the rules name domains, so the sandbox's DNS and HTTP(S) go through the host.
    pub fn has_names(&self) -> bool {
        !self.allow_names.is_empty() || !self.deny_names.is_empty()
    }

    /// Whether the host's resolver answers a query for `name`: allowed names yes, denied names
    /// no, the rest per the default (with a default of deny, nothing else is resolved, so query
    /// names cannot carry data out either). Rules without names resolve everything, as the
    /// sandbox's own resolvers would (it is proxied for its secrets, not for names).
    pub fn may_resolve(&self, name: &str) -> bool {
        if !self.has_names() {
            return true;
        }
        if any_matches(&self.allow_names, name) {
            return true;
        }
        if any_matches(&self.deny_names, name) {
            return false;
        }
        !self.default_deny
    }

    /// Whether the addresses `name` resolves to become reachable by address (any port).
    pub fn learns(&self, name: &str) -> bool {
        any_matches(&self.allow_names, name)
    }

    /// The verdict on a proxied connection to `dst` that named `name` (TLS server name or HTTP
    /// Host; `None` when it named none). `name_has_dst`: `dst` is one of `name`'s addresses.
    /// An allowed network lets it through; an allowed name only towards its own addresses (a
    /// guest cannot borrow an allowed name to reach another address); a denied name or network
    /// stops it; else the default.
    pub fn allows_connection(&self, name: Option<&str>, dst: Ipv4Addr, name_has_dst: bool) -> bool {
        if self.allow.iter().any(|n| n.contains(&dst)) {
            return true;
        }
        if let Some(name) = name {
            if any_matches(&self.allow_names, name) && name_has_dst {
                return true;
            }
            if any_matches(&self.deny_names, name) {
                return false;
            }
        }
        if self.deny.iter().any(|n| n.contains(&dst)) {
            return false;
        }
        !self.default_deny
    }
}

/// The chain holding `ip`'s rules.
pub fn chain(ip: Ipv4Addr) -> String {
    let [a, b, c, d] = ip.octets();
    format!("eg_{a}_{b}_{c}_{d}")
}

/// `{ a, b }` of `nets`, merged (anonymous interval sets refuse overlaps).
fn set_of(nets: &[Ipv4Net]) -> Option<String> {
    let merged = Ipv4Net::aggregate(&nets.to_vec());
    (!merged.is_empty()).then(|| {
        let list: Vec<String> = merged.iter().map(ToString::to_string).collect();
        format!("{{ {} }}", list.join(", "))
    })
}

/// `nft -f` lines that put `ip` into set `set` or take it out (added first, so the delete always
/// finds it).
fn membership(table: &str, set: &str, ip: Ipv4Addr, member: bool) -> String {
    let mut s = format!("add element inet {table} {set} {{ {ip} }}\n");
    if !member {
        s.push_str(&format!("delete element inet {table} {set} {{ {ip} }}\n"));
    }
    s
}

/// `ct mark` values of learned connections: a fixed high tag (other users of the mark rarely set
/// these bits) and a 24-bit generation.
pub fn learned_mark(generation: u32) -> u32 {
    0x5000_0000 | (generation & 0x00ff_ffff)
}

/// `nft -f` input that gives `ip` exactly `rules`: its chain created if missing, emptied and
/// filled, the map pointing at it, and its membership of `proxied` (rules with names, or
/// `proxied` for another reason: secrets to broker). `generation` tags the connections this
/// chain lets through by learned address (see the module docs).
pub fn apply_script(
    table: &str,
    ip: Ipv4Addr,
    rules: &EgressRules,
    generation: u32,
    proxied: bool,
) -> String {
    let chain = chain(ip);
    let mut s = format!(
        "add chain inet {table} {chain}\nflush chain inet {table} {chain}\n\
         add element inet {table} egress {{ {ip} : jump {chain} }}\n"
    );
    s.push_str(&membership(
        table,
        "proxied",
        ip,
        proxied || rules.has_names(),
    ));
    if let Some(allow) = set_of(&rules.allow) {
        s.push_str(&format!(
            "add rule inet {table} {chain} ip daddr {allow} accept\n"
        ));
    }
    if !rules.allow_names.is_empty() {
        let mark = format!("{:#x}", learned_mark(generation));
        s.push_str(&format!(
            "add rule inet {table} {chain} ct mark {mark} accept\n\
             add rule inet {table} {chain} ip saddr . ip daddr @learned ct mark set {mark} accept\n"
        ));
    }
    if let Some(deny) = set_of(&rules.deny) {
        s.push_str(&format!(
            "add rule inet {table} {chain} ip daddr {deny} drop\n"
        ));
    }
    if rules.default_deny {
        s.push_str(&format!("add rule inet {table} {chain} drop\n"));
    }
    s
}

/// `nft -f` input that removes `ip`'s chain, map entry and `proxied` membership, whether or not
/// they exist (each is added first, so the deletes always find it).
pub fn removal_script(table: &str, ip: Ipv4Addr) -> String {
    let chain = chain(ip);
    let mut s = format!(
        "add chain inet {table} {chain}\nadd element inet {table} egress {{ {ip} : jump {chain} }}\n\
         delete element inet {table} egress {{ {ip} }}\nflush chain inet {table} {chain}\n\
         delete chain inet {table} {chain}\n"
    );
    s.push_str(&membership(table, "proxied", ip, false));
    s
}

/// `nft -f` input that makes `dst` reachable from `sandbox` for `ttl_secs` (replacing the timeout
/// of an element that exists: added, deleted, added again in one transaction).
pub fn learn_script(table: &str, sandbox: Ipv4Addr, learned: &[(Ipv4Addr, u64)]) -> String {
    learned
        .iter()
        .map(|(dst, ttl)| {
            format!(
                "add element inet {table} learned {{ {sandbox} . {dst} timeout {ttl}s }}\n\
                 delete element inet {table} learned {{ {sandbox} . {dst} }}\n\
                 add element inet {table} learned {{ {sandbox} . {dst} timeout {ttl}s }}\n"
            )
        })
        .collect()
}

/// `nft -f` input that forgets `dsts` learned for `sandbox` (whether or not they are there).
pub fn forget_script(table: &str, sandbox: Ipv4Addr, dsts: &[Ipv4Addr]) -> String {
    dsts.iter()
        .map(|dst| {
            format!(
                "add element inet {table} learned {{ {sandbox} . {dst} timeout 1s }}\n\
                 delete element inet {table} learned {{ {sandbox} . {dst} }}\n"
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn rules_become_one_chain_allow_before_deny_before_the_default() {
        let ip = Ipv4Addr::new(10, 42, 0, 7);
        let rules = EgressRules {
            default_deny: true,
            allow: vec![
                net("203.0.113.0/25"),
                net("203.0.113.128/25"),
                net("198.51.100.9/32"),
            ],
            deny: vec![net("203.0.113.10/32")],
            ..EgressRules::default()
        };
        let s = apply_script("platinum_br", ip, &rules, 7, false);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "add chain inet platinum_br eg_10_42_0_7");
        assert_eq!(lines[1], "flush chain inet platinum_br eg_10_42_0_7");
        assert_eq!(
            lines[2],
            "add element inet platinum_br egress { 10.42.0.7 : jump eg_10_42_0_7 }"
        );
        // Adjacent halves merged into one /24.
        // Not proxied: no names.
        assert_eq!(
            lines[3..5],
            [
                "add element inet platinum_br proxied { 10.42.0.7 }",
                "delete element inet platinum_br proxied { 10.42.0.7 }"
            ]
        );
        // Adjacent halves merged into one /24.
        assert_eq!(
            lines[5],
            "add rule inet platinum_br eg_10_42_0_7 ip daddr { 198.51.100.9/32, 203.0.113.0/24 } accept"
        );
        assert_eq!(
            lines[6],
            "add rule inet platinum_br eg_10_42_0_7 ip daddr { 203.0.113.10/32 } drop"
        );
        assert_eq!(lines[7], "add rule inet platinum_br eg_10_42_0_7 drop");
        // Open: an empty chain.
        let open = apply_script("t", ip, &EgressRules::default(), 1, false);
        assert_eq!(open.lines().count(), 5);
        let gone = removal_script("t", ip);
        assert!(gone.contains("delete element inet t egress { 10.42.0.7 }"));
        assert!(gone.ends_with("delete element inet t proxied { 10.42.0.7 }\n"));
    }

    #[test]
    fn names_make_a_sandbox_proxied_and_let_learned_addresses_through() {
        let ip = Ipv4Addr::new(10, 42, 0, 7);
        let rules = EgressRules {
            default_deny: true,
            allow_names: vec![NamePattern::parse("*.example.com").unwrap()],
            ..EgressRules::default()
        };
        let s = apply_script("t", ip, &rules, 0x0100_0002, false);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[3], "add element inet t proxied { 10.42.0.7 }");
        assert!(!s.contains("delete element inet t proxied"));
        assert_eq!(
            lines[4],
            "add rule inet t eg_10_42_0_7 ct mark 0x50000002 accept"
        );
        assert_eq!(
            lines[5],
            "add rule inet t eg_10_42_0_7 ip saddr . ip daddr @learned ct mark set 0x50000002 accept"
        );
        assert_eq!(lines[6], "add rule inet t eg_10_42_0_7 drop");
        let dst = Ipv4Addr::new(203, 0, 113, 5);
        let learn = learn_script("t", ip, &[(dst, 300)]);
        assert_eq!(learn.lines().count(), 3);
        assert!(
            learn
                .ends_with("add element inet t learned { 10.42.0.7 . 203.0.113.5 timeout 300s }\n")
        );
        assert!(
            forget_script("t", ip, &[dst])
                .ends_with("delete element inet t learned { 10.42.0.7 . 203.0.113.5 }\n")
        );
    }

    #[test]
    fn verdicts_on_names_and_connections() {
        let name = |s: &str| NamePattern::parse(s).unwrap();
        let (own, other) = (
            Ipv4Addr::new(203, 0, 113, 5),
            Ipv4Addr::new(198, 51, 100, 9),
        );
        let deny_all = EgressRules {
            default_deny: true,
            allow: vec![net("198.51.100.0/24")],
            allow_names: vec![name("api.example.com")],
            ..EgressRules::default()
        };
        assert!(deny_all.has_names());
        assert!(deny_all.may_resolve("API.example.com."));
        assert!(!deny_all.may_resolve("exfil-data.attacker.example"));
        assert!(deny_all.learns("api.example.com") && !deny_all.learns("example.com"));
        // An allowed name only towards its own addresses; an allowed network whatever the name.
        assert!(deny_all.allows_connection(Some("api.example.com"), own, true));
        assert!(!deny_all.allows_connection(Some("api.example.com"), own, false));
        assert!(!deny_all.allows_connection(Some("evil.example.net"), own, true));
        assert!(!deny_all.allows_connection(None, own, false));
        assert!(deny_all.allows_connection(Some("evil.example.net"), other, false));

        let allow_most = EgressRules {
            deny: vec![net("198.51.100.0/24")],
            deny_names: vec![name("*.example.com")],
            ..EgressRules::default()
        };
        assert!(!allow_most.may_resolve("a.example.com"));
        assert!(allow_most.may_resolve("example.com"));
        assert!(!allow_most.learns("example.com"));
        assert!(!allow_most.allows_connection(Some("a.example.com"), own, true));
        assert!(allow_most.allows_connection(Some("example.com"), own, false));
        assert!(allow_most.allows_connection(None, own, false));
        assert!(!allow_most.allows_connection(Some("example.com"), other, false));
    }
}
