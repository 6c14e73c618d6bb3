//! Name servers: for guests, the host's own from `/etc/resolv.conf` minus loopback resolvers
//! (127.0.0.53 and friends are unreachable from a guest); for the host's resolver
//! ([`super::resolver`]), all of them. Both fall back to public resolvers.

use std::net::{IpAddr, SocketAddr};

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

/// The `nameserver` lines of a resolv.conf, loopback ones included, as port-53 addresses.
pub fn upstream_servers(resolv_conf: &str) -> Vec<SocketAddr> {
    let found: Vec<SocketAddr> = resolv_conf
        .lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|v| v.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if found.is_empty() {
        FALLBACK
            .iter()
            .filter_map(|s| s.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect()
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
        assert_eq!(
            upstream_servers(conf),
            vec![
                "127.0.0.53:53".parse::<SocketAddr>().unwrap(),
                "10.255.255.53:53".parse().unwrap()
            ]
        );
        assert_eq!(upstream_servers("").len(), 2);
    }
}
