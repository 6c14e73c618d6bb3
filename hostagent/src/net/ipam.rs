//! Address allocation in the sandbox subnet: the lowest free address above the gateway.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::NetworkConfig;
use crate::error::{Error, Result};

/// The lowest address of the subnet that is not the network, the gateway, the broadcast address
/// or in `used`.
pub fn allocate(config: &NetworkConfig, used: &BTreeSet<Ipv4Addr>) -> Result<Ipv4Addr> {
    let base = u32::from(config.subnet);
    let size = 1u32 << (32 - config.prefix as u32);
    (2..size - 1)
        .map(|offset| Ipv4Addr::from(base + offset))
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| Error::Network {
            step: "allocating an address".into(),
            message: format!(
                "all {} addresses of {}/{} are in use",
                size - 3,
                config.subnet,
                config.prefix
            ),
        })
}

/// A locally administered unicast MAC derived from the address (stable across restarts).
pub fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:50:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_the_lowest_free_address() {
        let c = NetworkConfig::default();
        let mut used = BTreeSet::new();
        let a = allocate(&c, &used).unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 42, 0, 2));
        used.insert(a);
        used.insert(Ipv4Addr::new(10, 42, 0, 3));
        assert_eq!(allocate(&c, &used).unwrap(), Ipv4Addr::new(10, 42, 0, 4));
        assert_eq!(mac_for(a), "02:50:0a:2a:00:02");
    }

    #[test]
    fn a_full_subnet_is_an_error() {
        let c = NetworkConfig {
            prefix: 30,
            ..NetworkConfig::default()
        };
        let used: BTreeSet<_> = [Ipv4Addr::new(10, 42, 0, 2)].into();
        assert!(allocate(&c, &used).is_err());
    }
}
