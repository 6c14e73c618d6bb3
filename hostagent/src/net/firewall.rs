//! The nftables table `inet platinum`: NAT for the sandbox subnet and the isolation rules.
//!
//! The whole table is replaced atomically on setup (`nft -f`), so a host restart or a changed
//! subnet never leaves stale rules. Other tables on the host are not touched. Note that another
//! firewall can still drop forwarded traffic in its own chains (nftables evaluates every table).

use std::net::Ipv4Addr;

use super::NetworkConfig;
use crate::error::{Error, Result};
use crate::tool::Tool;

/// Table name (family `inet`) for a bridge: `platinum_<bridge>`, so two servers on one host
/// (tests) never replace each other's rules.
pub fn table(bridge: &str) -> String {
    format!("platinum_{}", bridge.replace('-', "_"))
}

/// The ruleset for `config`, as `nft -f` input.
pub fn ruleset(config: &NetworkConfig) -> String {
    let br = &config.bridge;
    let table = table(br);
    let net = format!("{}/{}", config.subnet, config.prefix);
    format!(
        r#"table inet {table} {{}}
delete table inet {table}
table inet {table} {{
    set no_internet {{
        type ipv4_addr
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "{br}" ip saddr != {net} drop
        iifname "{br}" ip daddr 169.254.0.0/16 drop
        iifname "{br}" ip saddr @no_internet drop
        oifname "{br}" ct state established,related accept
        oifname "{br}" drop
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{br}" ct state established,related accept
        iifname "{br}" drop
    }}
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {net} oifname != "{br}" masquerade
    }}
}}
"#
    )
}

/// Installs the ruleset.
pub async fn apply(config: &NetworkConfig) -> Result<()> {
    let file = tempfile::NamedTempFile::new()
        .map_err(|e| Error::io("creating the nftables ruleset file", e))?;
    std::fs::write(file.path(), ruleset(config))
        .map_err(|e| Error::io("writing the nftables ruleset", e))?;
    Tool::new("installing the nftables ruleset", "nft")?
        .network()
        .arg("-f")
        .arg(file.path())
        .output()
        .await
        .map(drop)
}

/// Removes the table.
pub async fn remove(config: &NetworkConfig) -> Result<()> {
    Tool::new("removing the nftables table", "nft")?
        .network()
        .args(["delete", "table", "inet", &table(&config.bridge)])
        .output()
        .await
        .map(drop)
}

/// Allows or blocks traffic from `ip` to anything beyond the host.
pub async fn set_internet(config: &NetworkConfig, ip: Ipv4Addr, allowed: bool) -> Result<()> {
    let verb = if allowed { "delete" } else { "add" };
    let element = format!("{{ {ip} }}");
    let result = Tool::new("updating internet access", "nft")?
        .network()
        .args([
            verb,
            "element",
            "inet",
            &table(&config.bridge),
            "no_internet",
            &element,
        ])
        .output()
        .await;
    match result {
        // Deleting an element that is not in the set is what "allowed" means already.
        Err(Error::Network { message, .. }) if allowed && message.contains("No such file") => {
            Ok(())
        }
        other => other.map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_isolates_and_nats_the_subnet() {
        let r = ruleset(&NetworkConfig::default());
        assert!(r.contains(r#"ip saddr 10.42.0.0/16 oifname != "pt-br0" masquerade"#));
        assert!(r.contains(r#"iifname "pt-br0" ip saddr @no_internet drop"#));
        assert!(r.contains(r#"iifname "pt-br0" ip daddr 169.254.0.0/16 drop"#));
        assert!(
            r.contains(r#"iifname "pt-br0" drop"#),
            "sandboxes cannot open connections to the host"
        );
        // Replaced atomically: create-if-missing, delete, recreate.
        assert!(
            r.starts_with("table inet platinum_pt_br0 {}\ndelete table inet platinum_pt_br0\n")
        );
    }
}
