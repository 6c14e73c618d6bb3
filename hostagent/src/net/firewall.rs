//! The nftables rules of a sandbox bridge: two tables named `platinum_<bridge>`.
//!
//! - `bridge` family, hook `prerouting`: every frame a sandbox sends into the bridge must carry
//!   its lease's MAC and IPv4 source (set `sources`: TAP . MAC . IP), and ARP must claim exactly
//!   that pair as sender; anything else from a sandbox port (another MAC or address, forged ARP,
//!   IPv6, VLAN tags, any other ethertype) is dropped. Ports are listed in the set `ports`; a
//!   lease's elements are added before its TAP is created and removed after it is deleted, so a
//!   sandbox port is never unfiltered.
//! - `inet` family: masquerade the subnet to the outside; no new connections from sandboxes to
//!   the host (only replies pass) or to other sandboxes; nothing at all from sandboxes whose
//!   internet access is off (set `no_internet`); nothing to private, shared (CGNAT), link-local
//!   and cloud metadata addresses ([`BLOCKED_RANGES`]) except the resolvers each sandbox was given
//!   (set `dns`, port 53) and the configured allow-list ([`NetworkConfig::allow_private`]);
//!   after those, each sandbox's own egress rules (map `egress`, see [`super::egress`]). The
//!   DNS and TCP ports 80 and 443 of *proxied* sandboxes (set `proxied`: rules that name
//!   domains) are redirected to the host's resolver and proxy ([`ProxyPorts`]), and only that
//!   redirected traffic may reach those ports on the host.
//!
//! Both tables are replaced atomically on setup (one `nft -f` transaction), so a host restart or
//! a changed subnet never leaves stale rules. Other tables on the host are not touched. Note that
//! another firewall can still drop forwarded traffic in its own chains (nftables evaluates every
//! table).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;

use super::{Lease, NetworkConfig};
use crate::error::{Error, Result};
use crate::tool::Tool;

/// Destinations sandboxes may not reach unless allowed by configuration: RFC 1918 private
/// networks, shared address space (CGNAT, also holds Alibaba's metadata 100.100.100.200),
/// link-local (AWS/GCP/Azure/OpenStack metadata 169.254.169.254) and Azure's WireServer, which is
/// a public address. The sandbox subnet itself lies in 10/8; traffic to the host and to other
/// sandboxes has rules of its own.
pub const BLOCKED_RANGES: [Ipv4Net; 6] = [
    Ipv4Net::new_assert(Ipv4Addr::new(10, 0, 0, 0), 8),
    Ipv4Net::new_assert(Ipv4Addr::new(172, 16, 0, 0), 12),
    Ipv4Net::new_assert(Ipv4Addr::new(192, 168, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(100, 64, 0, 0), 10),
    Ipv4Net::new_assert(Ipv4Addr::new(169, 254, 0, 0), 16),
    Ipv4Net::new_assert(Ipv4Addr::new(168, 63, 129, 16), 32),
];

/// Table name (families `inet` and `bridge`) for a bridge: `platinum_<bridge>`, so two servers
/// on one host (tests) never replace each other's rules.
pub fn table(bridge: &str) -> String {
    format!("platinum_{}", bridge.replace('-', "_"))
}

/// `{ a, b, c }` for an nft set, or nothing when `nets` is empty. Overlapping and adjacent
/// networks are merged (interval sets refuse overlaps) and host bits cleared.
fn elements(nets: &[Ipv4Net]) -> String {
    let merged = Ipv4Net::aggregate(&nets.to_vec());
    if merged.is_empty() {
        return String::new();
    }
    let list: Vec<String> = merged.iter().map(ToString::to_string).collect();
    format!("\n        elements = {{ {} }}", list.join(", "))
}

/// The host ports (on the bridge address) that proxied sandboxes' traffic is redirected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyPorts {
    /// The resolver, UDP.
    pub dns_udp: u16,
    /// The resolver, TCP.
    pub dns_tcp: u16,
    /// The HTTP(S) proxy.
    pub proxy: u16,
}

/// Most learned (sandbox, address) pairs the firewall holds at once.
pub const LEARNED_SET_SIZE: u32 = 65_536;

/// The ruleset for `config`, as `nft -f` input: both tables, each created if missing, deleted
/// and recreated in one transaction.
pub fn ruleset(config: &NetworkConfig, ports: ProxyPorts) -> String {
    let br = &config.bridge;
    let table = table(br);
    let net = format!("{}/{}", config.subnet, config.prefix);
    let gw = config.gateway();
    let ProxyPorts {
        dns_udp,
        dns_tcp,
        proxy,
    } = ports;
    let blocked = elements(&BLOCKED_RANGES);
    let allowed = elements(&config.allow_private);
    format!(
        r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
    set no_internet {{
        type ipv4_addr
    }}
    set dns {{
        type ipv4_addr . ipv4_addr
    }}
    set private {{
        type ipv4_addr
        flags interval{blocked}
    }}
    set allow_private {{
        type ipv4_addr
        flags interval{allowed}
    }}
    map egress {{
        type ipv4_addr : verdict
    }}
    set proxied {{
        type ipv4_addr
    }}
    set learned {{
        type ipv4_addr . ipv4_addr
        flags timeout
        size {LEARNED_SET_SIZE}
    }}
    chain to_host {{
        type nat hook prerouting priority dstnat; policy accept;
        iifname "{br}" ip saddr @proxied udp dport 53 dnat ip to {gw}:{dns_udp}
        iifname "{br}" ip saddr @proxied tcp dport 53 dnat ip to {gw}:{dns_tcp}
        iifname "{br}" ip saddr @proxied ip daddr != {net} tcp dport {{ 80, 443 }} dnat ip to {gw}:{proxy}
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{br}" meta nfproto != ipv4 drop
        iifname "{br}" ip saddr != {net} drop
        iifname "{br}" ip saddr @no_internet drop
        oifname "{br}" ct state established,related accept
        oifname "{br}" drop
        iifname "{br}" ip saddr . ip daddr @dns meta l4proto {{ tcp, udp }} th dport 53 accept
        iifname "{br}" ip daddr @allow_private accept
        iifname "{br}" ip daddr @private drop
        iifname "{br}" ip saddr vmap @egress
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{br}" ct state established,related accept
        iifname "{br}" ct status dnat ip saddr @proxied ip saddr != @no_internet ip daddr {gw} meta l4proto . th dport {{ udp . {dns_udp}, tcp . {dns_tcp}, tcp . {proxy} }} accept
        iifname "{br}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {net} oifname != "{br}" masquerade
    }}
}}
table bridge {table} {{}}
delete table bridge {table}
table bridge {table} {{
    set ports {{
        type ifname
    }}
    set sources {{
        type ifname . ether_addr . ipv4_addr
    }}
    chain prerouting {{
        type filter hook prerouting priority filter; policy accept;
        iifname @ports jump from_sandbox
    }}
    chain from_sandbox {{
        ether type ip iifname . ether saddr . ip saddr @sources accept
        ether type arp arp htype 1 arp ptype ip arp hlen 6 arp plen 4 iifname . ether saddr . arp saddr ip @sources iifname . arp saddr ether . arp saddr ip @sources accept
        drop
    }}
}}
"#
    )
}

/// Input for `nft -f` that deletes both tables, whether or not they exist.
fn removal(config: &NetworkConfig) -> String {
    let table = table(&config.bridge);
    format!(
        "table inet {table} {{}}\ndelete table inet {table}\n\
         table bridge {table} {{}}\ndelete table bridge {table}\n"
    )
}

/// One element of a named set: `nft {add,delete} element <family> <table> <set> { <value> }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    /// Table family: `inet` or `bridge`.
    pub family: &'static str,
    /// Set name.
    pub set: &'static str,
    /// The element, in nft syntax.
    pub value: String,
}

/// The set elements that pin `lease` to its TAP and let it reach its resolvers: `ports` and
/// `sources` in the bridge table, one `dns` pair per IPv4 resolver. Fails on a TAP name or MAC
/// that is not well formed (they end up in an nft script).
pub fn lease_elements(lease: &Lease) -> Result<Vec<Element>> {
    let invalid = |what: &str| Error::Network {
        step: "pinning a sandbox to its address".into(),
        message: format!("the lease has an invalid {what}"),
    };
    let tap = &lease.tap;
    if tap.is_empty()
        || tap.len() > 15
        || !tap
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(&format!("TAP name {tap:?}")));
    }
    let octets: Vec<&str> = lease.mac.split(':').collect();
    if octets.len() != 6
        || !octets
            .iter()
            .all(|o| o.len() == 2 && o.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(invalid(&format!("MAC address {:?}", lease.mac)));
    }
    let ip = lease.ip;
    let mut out = vec![
        Element {
            family: "bridge",
            set: "ports",
            value: format!("\"{tap}\""),
        },
        Element {
            family: "bridge",
            set: "sources",
            value: format!("\"{tap}\" . {} . {ip}", lease.mac.to_ascii_lowercase()),
        },
    ];
    out.extend(lease.dns.iter().filter_map(|d| match d {
        IpAddr::V4(d) => Some(Element {
            family: "inet",
            set: "dns",
            value: format!("{ip} . {d}"),
        }),
        IpAddr::V6(_) => None,
    }));
    Ok(out)
}

/// `nft -f` input adding `elements` to the tables of `config` (adding one that exists is fine).
pub fn add_script(config: &NetworkConfig, elements: &[Element]) -> String {
    let table = table(&config.bridge);
    elements
        .iter()
        .map(|e| {
            format!(
                "add element {} {table} {} {{ {} }}\n",
                e.family, e.set, e.value
            )
        })
        .collect()
}

async fn run_script(step: &'static str, script: &str) -> Result<()> {
    let file = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("creating an nftables script file", e))?;
    std::fs::write(file.path(), script).map_err(|e| Error::io("writing an nftables script", e))?;
    Tool::new(step, "nft")?
        .network()
        .arg("-f")
        .arg(file.path())
        .output()
        .await
        .map(drop)
}

/// Installs the ruleset.
pub async fn apply(config: &NetworkConfig, ports: ProxyPorts) -> Result<()> {
    run_script("installing the nftables ruleset", &ruleset(config, ports)).await
}

/// Removes both tables (fine when they are already gone).
pub async fn remove(config: &NetworkConfig) -> Result<()> {
    run_script("removing the nftables tables", &removal(config)).await
}

/// Pins `lease` to its TAP, MAC and address and lets it reach its resolvers. Call before the TAP
/// is created.
pub async fn add_lease(config: &NetworkConfig, lease: &Lease) -> Result<()> {
    let elements = lease_elements(lease)?;
    run_script(
        "pinning a sandbox to its address",
        &add_script(config, &elements),
    )
    .await
}

/// Removes what [`add_lease`] added; elements already gone are fine. Call after the TAP is
/// deleted.
pub async fn remove_lease(config: &NetworkConfig, lease: &Lease) -> Result<()> {
    for e in lease_elements(lease)? {
        delete_element(config, &e).await?;
    }
    Ok(())
}

/// Deletes one element; one that is not there (or a table that is gone) is not an error.
async fn delete_element(config: &NetworkConfig, e: &Element) -> Result<()> {
    let value = format!("{{ {} }}", e.value);
    let result = Tool::new("updating the sandbox firewall", "nft")?
        .network()
        .args([
            "delete",
            "element",
            e.family,
            &table(&config.bridge),
            e.set,
            &value,
        ])
        .output()
        .await;
    match result {
        Err(Error::Network { message, .. }) if message.contains("No such file") => Ok(()),
        other => other.map(drop),
    }
}

/// Gives `ip` exactly the egress `rules` (see [`super::egress`]), written with `generation`,
/// proxied when its rules name domains or `proxied`, and forgets the learned addresses in
/// `forget`.
pub async fn set_egress(
    config: &NetworkConfig,
    ip: Ipv4Addr,
    rules: &super::egress::EgressRules,
    (generation, proxied): (u32, bool),
    forget: &[Ipv4Addr],
) -> Result<()> {
    let table = table(&config.bridge);
    let mut script = super::egress::apply_script(&table, ip, rules, generation, proxied);
    script.push_str(&super::egress::forget_script(&table, ip, forget));
    run_script("setting the egress rules", &script).await
}

/// Removes `ip`'s egress rules and the learned addresses in `forget` (fine when there are none).
pub async fn remove_egress(
    config: &NetworkConfig,
    ip: Ipv4Addr,
    forget: &[Ipv4Addr],
) -> Result<()> {
    let table = table(&config.bridge);
    let mut script = super::egress::removal_script(&table, ip);
    script.push_str(&super::egress::forget_script(&table, ip, forget));
    run_script("removing the egress rules", &script).await
}

/// Lets `sandbox` reach each learned address for its timeout (seconds), in table `table`.
pub async fn learn(table: &str, sandbox: Ipv4Addr, learned: &[(Ipv4Addr, u64)]) -> Result<()> {
    let script = super::egress::learn_script(table, sandbox, learned);
    run_script("adding learned addresses", &script).await
}

/// Allows or blocks traffic from `ip` to anything beyond the host.
pub async fn set_internet(config: &NetworkConfig, ip: Ipv4Addr, allowed: bool) -> Result<()> {
    let element = Element {
        family: "inet",
        set: "no_internet",
        value: ip.to_string(),
    };
    if allowed {
        // Deleting an element that is not in the set is what "allowed" means already.
        delete_element(config, &element).await
    } else {
        run_script("updating internet access", &add_script(config, &[element])).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORTS: ProxyPorts = ProxyPorts {
        dns_udp: 40053,
        dns_tcp: 40054,
        proxy: 40080,
    };

    fn lease() -> Lease {
        Lease {
            tap: "ptabc".into(),
            ip: Ipv4Addr::new(10, 42, 0, 7),
            prefix: 16,
            mac: "02:50:0A:2a:00:07".into(),
            gateway: Ipv4Addr::new(10, 42, 0, 1),
            dns: vec![
                "10.255.255.53".parse().unwrap(),
                "fd00::53".parse().unwrap(),
                "1.1.1.1".parse().unwrap(),
            ],
            internet: true,
        }
    }

    /// The lines of the chain `name` in `ruleset`, trimmed.
    fn chain<'a>(ruleset: &'a str, name: &str) -> Vec<&'a str> {
        ruleset
            .lines()
            .skip_while(|l| l.trim() != format!("chain {name} {{"))
            .skip(1)
            .take_while(|l| l.trim() != "}")
            .map(str::trim)
            .collect()
    }

    #[test]
    fn ruleset_isolates_and_nats_the_subnet() {
        let r = ruleset(&NetworkConfig::default(), PORTS);
        assert!(r.contains(r#"ip saddr 10.42.0.0/16 oifname != "pt-br0" masquerade"#));
        assert!(r.contains(r#"iifname "pt-br0" ip saddr @no_internet drop"#));
        assert!(
            r.contains(r#"iifname "pt-br0" drop"#),
            "sandboxes cannot open connections to the host"
        );
        // Both tables are replaced atomically: create-if-missing, delete, recreate.
        assert!(
            r.starts_with("table inet platinum_pt_br0 {}\ndelete table inet platinum_pt_br0\n")
        );
        assert!(
            r.contains("table bridge platinum_pt_br0 {}\ndelete table bridge platinum_pt_br0\n")
        );
        let removal = removal(&NetworkConfig::default());
        assert!(removal.contains("delete table inet platinum_pt_br0\n"));
        assert!(removal.contains("delete table bridge platinum_pt_br0\n"));
    }

    #[test]
    fn forward_chain_orders_isolation_before_exceptions() {
        let r = ruleset(&NetworkConfig::default(), PORTS);
        let forward = chain(&r, "forward");
        let at = |rule: &str| {
            forward
                .iter()
                .position(|l| *l == rule)
                .unwrap_or_else(|| panic!("{rule:?} is not in the forward chain: {forward:#?}"))
        };
        let non_v4 = at(r#"iifname "pt-br0" meta nfproto != ipv4 drop"#);
        let spoofed = at(r#"iifname "pt-br0" ip saddr != 10.42.0.0/16 drop"#);
        let offline = at(r#"iifname "pt-br0" ip saddr @no_internet drop"#);
        let replies = at(r#"oifname "pt-br0" ct state established,related accept"#);
        let inbound = at(r#"oifname "pt-br0" drop"#);
        let dns = at(
            r#"iifname "pt-br0" ip saddr . ip daddr @dns meta l4proto { tcp, udp } th dport 53 accept"#,
        );
        let allowed = at(r#"iifname "pt-br0" ip daddr @allow_private accept"#);
        let private = at(r#"iifname "pt-br0" ip daddr @private drop"#);
        // Nothing accepts before the drops that must always hold: a sandbox without internet
        // gets no DNS either, and sandbox-to-sandbox traffic routed through the host (in and
        // out of the bridge) is dropped even when its address is allow-listed.
        for always in [non_v4, spoofed, offline, inbound] {
            assert!(always < dns && always < allowed, "{forward:#?}");
        }
        assert!(replies < inbound);
        assert!(dns < private && allowed < private, "{forward:#?}");
        // A sandbox's own egress rules come last: they can narrow, never widen.
        let egress = at(r#"iifname "pt-br0" ip saddr vmap @egress"#);
        assert!(private < egress, "{forward:#?}");
        assert_eq!(forward.len(), 10, "{forward:#?}");
    }

    #[test]
    fn proxied_sandboxes_are_redirected_and_only_redirected_traffic_reaches_the_host() {
        let r = ruleset(&NetworkConfig::default(), PORTS);
        assert_eq!(
            chain(&r, "to_host")[1..],
            [
                r#"iifname "pt-br0" ip saddr @proxied udp dport 53 dnat ip to 10.42.0.1:40053"#,
                r#"iifname "pt-br0" ip saddr @proxied tcp dport 53 dnat ip to 10.42.0.1:40054"#,
                r#"iifname "pt-br0" ip saddr @proxied ip daddr != 10.42.0.0/16 tcp dport { 80, 443 } dnat ip to 10.42.0.1:40080"#,
            ]
        );
        let input = chain(&r, "input");
        assert_eq!(
            input[2],
            r#"iifname "pt-br0" ct status dnat ip saddr @proxied ip saddr != @no_internet ip daddr 10.42.0.1 meta l4proto . th dport { udp . 40053, tcp . 40054, tcp . 40080 } accept"#
        );
        assert_eq!(input[3], r#"iifname "pt-br0" drop"#);
    }

    #[test]
    fn private_ranges_cover_metadata_addresses_but_not_the_internet() {
        let blocked = |a: [u8; 4]| {
            BLOCKED_RANGES
                .iter()
                .any(|n| n.contains(&Ipv4Addr::from(a)))
        };
        for a in [
            [10, 1, 2, 3],
            [172, 31, 255, 1],
            [192, 168, 1, 1],
            [100, 64, 0, 1],
            [169, 254, 169, 254],
            [168, 63, 129, 16],
            [100, 100, 100, 200],
        ] {
            assert!(blocked(a), "{a:?} must be blocked");
        }
        for a in [
            [1, 1, 1, 1],
            [172, 32, 0, 1],
            [168, 63, 129, 17],
            [8, 8, 8, 8],
        ] {
            assert!(!blocked(a), "{a:?} must stay reachable");
        }
        let r = ruleset(&NetworkConfig::default(), PORTS);
        assert!(r.contains(
            "elements = { 10.0.0.0/8, 100.64.0.0/10, 168.63.129.16/32, 169.254.0.0/16, \
             172.16.0.0/12, 192.168.0.0/16 }"
        ));
        // No allow-list by default: the set exists and is empty.
        assert!(r.contains(
            "set allow_private {\n        type ipv4_addr\n        flags interval\n    }"
        ));
    }

    #[test]
    fn allow_list_is_merged_and_truncated() {
        let config = NetworkConfig {
            allow_private: vec![
                "192.168.7.9/24".parse().unwrap(),
                "10.9.0.0/16".parse().unwrap(),
                "10.9.3.4/32".parse().unwrap(),
            ],
            ..NetworkConfig::default()
        };
        let r = ruleset(&config, PORTS);
        assert!(
            r.contains("flags interval\n        elements = { 10.9.0.0/16, 192.168.7.0/24 }"),
            "{r}"
        );
    }

    #[test]
    fn bridge_table_pins_sources_and_drops_everything_else() {
        let r = ruleset(&NetworkConfig::default(), PORTS);
        assert!(r.contains("type ifname . ether_addr . ipv4_addr"));
        assert_eq!(
            chain(&r, "prerouting"),
            [
                "type filter hook prerouting priority filter; policy accept;",
                "iifname @ports jump from_sandbox",
            ]
        );
        let from_sandbox = chain(&r, "from_sandbox");
        assert_eq!(from_sandbox.len(), 3);
        assert_eq!(
            from_sandbox[0],
            "ether type ip iifname . ether saddr . ip saddr @sources accept"
        );
        assert!(from_sandbox[1].starts_with("ether type arp "));
        assert!(from_sandbox[1].contains("iifname . ether saddr . arp saddr ip @sources"));
        assert!(from_sandbox[1].contains("iifname . arp saddr ether . arp saddr ip @sources"));
        // IPv6, VLAN-tagged frames, any other ethertype: dropped.
        assert_eq!(from_sandbox[2], "drop");
    }

    #[test]
    fn lease_elements_pin_the_tap_and_open_its_resolvers() {
        let elements = lease_elements(&lease()).unwrap();
        let values: Vec<(&str, &str, &str)> = elements
            .iter()
            .map(|e| (e.family, e.set, e.value.as_str()))
            .collect();
        assert_eq!(
            values,
            [
                ("bridge", "ports", r#""ptabc""#),
                (
                    "bridge",
                    "sources",
                    r#""ptabc" . 02:50:0a:2a:00:07 . 10.42.0.7"#
                ),
                ("inet", "dns", "10.42.0.7 . 10.255.255.53"),
                ("inet", "dns", "10.42.0.7 . 1.1.1.1"),
            ]
        );
        let script = add_script(&NetworkConfig::default(), &elements);
        assert!(script.starts_with(
            "add element bridge platinum_pt_br0 ports { \"ptabc\" }\n\
             add element bridge platinum_pt_br0 sources { \"ptabc\" . 02:50:0a:2a:00:07 . 10.42.0.7 }\n"
        ));
        assert!(script.ends_with("add element inet platinum_pt_br0 dns { 10.42.0.7 . 1.1.1.1 }\n"));
    }

    #[test]
    fn malformed_leases_never_reach_nft() {
        for tap in [
            "",
            "a\" } flush ruleset {",
            "pt with space",
            "ptaaaaaaaaaaaaaaaa",
        ] {
            let l = Lease {
                tap: tap.into(),
                ..lease()
            };
            assert!(lease_elements(&l).is_err(), "{tap:?}");
        }
        for mac in [
            "02:50:0a:2a:00",
            "02:50:0a:2a:00:0g",
            "02:50:0a:2a:00:07 ; x",
            "",
        ] {
            let l = Lease {
                mac: mac.into(),
                ..lease()
            };
            assert!(lease_elements(&l).is_err(), "{mac:?}");
        }
    }
}
