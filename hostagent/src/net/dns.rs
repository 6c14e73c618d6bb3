//! Name servers for guests: the host's own, from `/etc/resolv.conf`, minus loopback resolvers
//! (127.0.0.53 and friends are unreachable from a guest). Falls back to public resolvers.

use std::net::IpAddr;

/// Resolvers used when the host has none a guest can reach.
pub const FALLBACK: [&str; 2] = ["1.1.1.1", "8.8.8.8"];

/// The `nameserver` lines of a resolv.conf that a guest can use.
pub fn host_nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    let found: Vec<IpAddr> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_loopback() && ip.is_ipv4())
        .collect();
    if found.is_empty() {
        FALLBACK.iter().filter_map(|s| s.parse().ok()).collect()
    } else {
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_loopback_and_falls_back() {
        let conf = "# comment\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nsearch x\n";
        assert_eq!(
            host_nameservers(conf),
            vec!["10.255.255.53".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(host_nameservers("nameserver 127.0.0.53\n").len(), 2);
    }
}
