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

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

/// What a sandbox may reach beyond the host, by address.
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

/// `nft -f` input that gives `ip` exactly `rules`: its chain created if missing, emptied and
/// filled, and the map pointing at it.
pub fn apply_script(table: &str, ip: Ipv4Addr, rules: &EgressRules) -> String {
    let chain = chain(ip);
    let mut s = format!(
        "add chain inet {table} {chain}\nflush chain inet {table} {chain}\n\
         add element inet {table} egress {{ {ip} : jump {chain} }}\n"
    );
    if let Some(allow) = set_of(&rules.allow) {
        s.push_str(&format!(
            "add rule inet {table} {chain} ip daddr {allow} accept\n"
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

/// `nft -f` input that removes `ip`'s chain and map entry, whether or not they exist (each is
/// added first, so the deletes always find it).
pub fn removal_script(table: &str, ip: Ipv4Addr) -> String {
    let chain = chain(ip);
    format!(
        "add chain inet {table} {chain}\nadd element inet {table} egress {{ {ip} : jump {chain} }}\n\
         delete element inet {table} egress {{ {ip} }}\nflush chain inet {table} {chain}\n\
         delete chain inet {table} {chain}\n"
    )
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
        };
        let s = apply_script("platinum_br", ip, &rules);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(lines[0], "add chain inet platinum_br eg_10_42_0_7");
        assert_eq!(lines[1], "flush chain inet platinum_br eg_10_42_0_7");
        assert_eq!(
            lines[2],
            "add element inet platinum_br egress { 10.42.0.7 : jump eg_10_42_0_7 }"
        );
        // Adjacent halves merged into one /24.
        assert_eq!(
            lines[3],
            "add rule inet platinum_br eg_10_42_0_7 ip daddr { 198.51.100.9/32, 203.0.113.0/24 } accept"
        );
        assert_eq!(
            lines[4],
            "add rule inet platinum_br eg_10_42_0_7 ip daddr { 203.0.113.10/32 } drop"
        );
        assert_eq!(lines[5], "add rule inet platinum_br eg_10_42_0_7 drop");
        // Open: an empty chain.
        let open = apply_script("t", ip, &EgressRules::default());
        assert_eq!(open.lines().count(), 3);
        let gone = removal_script("t", ip);
        assert!(gone.contains("delete element inet t egress { 10.42.0.7 }"));
        assert!(gone.ends_with("delete chain inet t eg_10_42_0_7\n"));
    }
}
