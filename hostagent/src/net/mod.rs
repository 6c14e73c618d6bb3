//! Sandbox networking: one Linux bridge for all sandboxes, one TAP per VM, NAT to the outside
//! and isolation with nftables.
//!
//! ```text
//!  guest eth0 (10.42.x.y/16) -- virtio-net -- TAP pt<id> --+-- bridge pt-br0 (10.42.0.1/16) -- NAT -- host uplink
//!  guest eth0 (10.42.x.z/16) -- virtio-net -- TAP pt<id> --+   (ports isolated from each other)
//! ```
//! - Every TAP is an *isolated* bridge port, so sandboxes cannot reach each other at layer 2.
//! - nftables table `bridge platinum_<bridge>` ([`firewall`]): each TAP is pinned to its lease's
//!   MAC and IPv4 address; frames from a sandbox with another source MAC or address, ARP that
//!   claims another sender, IPv6 and every other ethertype are dropped. A guest that takes
//!   another sandbox's (or the gateway's) address gets nowhere.
//! - nftables table `inet platinum_<bridge>`: masquerade 10.42.0.0/16 to the outside; drop
//!   traffic from sandboxes to the host itself (only replies pass), to other sandboxes, to
//!   private, CGNAT, link-local and cloud metadata addresses ([`firewall::BLOCKED_RANGES`],
//!   except the sandbox's own DNS resolvers on port 53 and [`NetworkConfig::allow_private`]), and
//!   anything from a sandbox whose internet access is off (its address is in the `no_internet`
//!   set); drop unsolicited traffic into sandboxes.
//! - Addresses come from [`ipam`]; a sandbox keeps its lease (address, MAC, TAP) across stop and
//!   start. The guest gets its settings on the kernel command line (`platinum.ip=`, `.gw=`,
//!   `.dns=`) and configures itself; name servers are the host's own (loopback resolvers skipped).
//!
//! - Egress rules per sandbox ([`egress`]): by address in the firewall; by name through the
//!   host's resolver ([`resolver`]) and HTTP(S) proxy ([`proxy`]) on the bridge address, which
//!   share the sandboxes' live state ([`policies`]).
//!
//! Setup needs root (CAP_NET_ADMIN) and the `ip` and `nft` programs. When it is impossible, the
//! host runs sandboxes without a network and says why ([`Network::unavailable_reason`]).

pub mod dns;
pub mod egress;
pub mod firewall;
pub mod ipam;
mod link;
pub mod names;
pub mod peek;
pub mod policies;
pub mod proxy;
pub mod resolver;

pub use egress::EgressRules;
pub use names::NamePattern;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, OnceLock};

use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use policies::Policies;

pub use ipnet::Ipv4Net;

/// Settings of the sandbox network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// Bridge name.
    pub bridge: String,
    /// Network address of the sandbox subnet.
    pub subnet: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// Private, CGNAT or link-local networks sandboxes may reach anyway (by default they reach
    /// none of [`firewall::BLOCKED_RANGES`] but their DNS resolvers).
    pub allow_private: Vec<Ipv4Net>,
    /// Resolvers the host's resolver asks for sandboxes with name rules (empty: the host's
    /// own, from `/etc/resolv.conf`).
    pub upstream_dns: Vec<SocketAddr>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            bridge: "pt-br0".into(),
            subnet: Ipv4Addr::new(10, 42, 0, 0),
            prefix: 16,
            allow_private: Vec::new(),
            upstream_dns: Vec::new(),
        }
    }
}

impl NetworkConfig {
    /// The host's address on the bridge (the guests' gateway): the first address of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }
}

/// One sandbox's place on the network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// TAP interface name.
    pub tap: String,
    /// Guest address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Guest MAC address.
    pub mac: String,
    /// Default gateway (the bridge).
    pub gateway: Ipv4Addr,
    /// Name servers.
    pub dns: Vec<IpAddr>,
    /// Whether traffic may leave the host.
    pub internet: bool,
}

impl Lease {
    /// The guest's side of the lease, for `reidentify`.
    pub fn identity(&self) -> platinum_protocol::NetIdentity {
        platinum_protocol::NetIdentity {
            mac: self.mac.clone(),
            addr: self.ip,
            prefix: self.prefix,
            gateway: Some(self.gateway),
            dns: self.dns.clone(),
        }
    }

    /// Kernel command line parameters the guest agent reads.
    pub fn cmdline(&self) -> String {
        let mut s = format!(
            "platinum.ip={}/{} platinum.gw={}",
            self.ip, self.prefix, self.gateway
        );
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
            s.push_str(&format!(" platinum.dns={}", dns.join(",")));
        }
        s
    }
}

/// The host's sandbox network.
pub struct Network {
    config: NetworkConfig,
    /// `None` when the network is up; else why it is not.
    unavailable: Option<String>,
    leases: Mutex<BTreeMap<String, Lease>>,
    dns: Vec<IpAddr>,
    /// Every sandbox's egress state, shared with the resolver and the proxy.
    policies: Arc<Policies>,
    /// The resolver's and the proxy's tasks.
    services: Mutex<Vec<JoinHandle<()>>>,
    /// How the proxy finds a sandbox's secrets (set by the host once it is up).
    brokering: Arc<OnceLock<proxy::Brokering>>,
    /// Sandboxes with secrets to broker: proxied whatever their rules.
    brokered: Mutex<BTreeSet<String>>,
}

impl Network {
    /// Sets up the bridge, the host's resolver and proxy for sandboxes, and the firewall
    /// (idempotent). Never fails: if setup is impossible, the returned network is unavailable
    /// and says why.
    pub async fn setup(config: NetworkConfig) -> Network {
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let dns = dns::host_nameservers(&resolv_conf);
        let policies = Arc::new(Policies::default());
        let brokering = Arc::new(OnceLock::new());
        let upstream = resolver::Upstream::new(if config.upstream_dns.is_empty() {
            dns::upstream_servers(&resolv_conf)
        } else {
            config.upstream_dns.clone()
        });
        let (unavailable, services) = match Self::try_setup(
            &config, &policies, upstream, &brokering,
        )
        .await
        {
            Ok(services) => {
                tracing::info!(bridge = %config.bridge, subnet = %format!("{}/{}", config.subnet, config.prefix), "sandbox network ready");
                (None, services)
            }
            Err(e) => {
                tracing::warn!(error = %e, "sandbox network unavailable; sandboxes will have no network");
                (Some(e.to_string()), Vec::new())
            }
        };
        Network {
            config,
            unavailable,
            leases: Mutex::new(BTreeMap::new()),
            dns,
            policies,
            services: Mutex::new(services),
            brokering,
            brokered: Mutex::new(BTreeSet::new()),
        }
    }

    async fn try_setup(
        config: &NetworkConfig,
        policies: &Arc<Policies>,
        upstream: resolver::Upstream,
        brokering: &Arc<OnceLock<proxy::Brokering>>,
    ) -> Result<Vec<JoinHandle<()>>> {
        if !nix::unistd::geteuid().is_root() {
            return Err(Error::Network {
                step: "setup".into(),
                message: "needs root (CAP_NET_ADMIN)".into(),
            });
        }
        link::ensure_bridge(&config.bridge, config.gateway(), config.prefix).await?;
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| Error::io("enabling IPv4 forwarding", e))?;
        // The resolver and the proxy listen on the bridge address only, on ports of their own;
        // the firewall redirects proxied sandboxes' traffic there.
        let at = SocketAddr::from((config.gateway(), 0));
        let bind = |what: &'static str| move |e| Error::io(what, e);
        let dns_udp = tokio::net::UdpSocket::bind(at)
            .await
            .map_err(bind("binding the sandbox resolver (UDP)"))?;
        let dns_tcp = tokio::net::TcpListener::bind(at)
            .await
            .map_err(bind("binding the sandbox resolver (TCP)"))?;
        let proxy = tokio::net::TcpListener::bind(at)
            .await
            .map_err(bind("binding the sandbox egress proxy"))?;
        let port = |a: std::io::Result<SocketAddr>| {
            a.map(|a| a.port())
                .map_err(|e| Error::io("reading a bound port", e))
        };
        let ports = firewall::ProxyPorts {
            dns_udp: port(dns_udp.local_addr())?,
            dns_tcp: port(dns_tcp.local_addr())?,
            proxy: port(proxy.local_addr())?,
        };
        firewall::apply(config, ports).await?;
        let resolver = Arc::new(resolver::Resolver {
            policies: policies.clone(),
            upstream: upstream.clone(),
            table: firewall::table(&config.bridge),
        });
        let proxy_service = Arc::new(proxy::Proxy {
            policies: policies.clone(),
            upstream,
            subnet: Ipv4Net::new(config.subnet, config.prefix)
                .map_err(|e| Error::Invalid(format!("sandbox subnet: {e}")))?,
            allow_private: config.allow_private.clone(),
            brokering: brokering.clone(),
        });
        tracing::info!(?ports, "sandbox resolver and egress proxy listening");
        Ok(vec![
            tokio::spawn(resolver.clone().serve_udp(dns_udp)),
            tokio::spawn(resolver.serve_tcp(dns_tcp)),
            tokio::spawn(proxy_service.serve(proxy)),
        ])
    }

    /// A network that is switched off (`reason` says why); sandboxes get no network device.
    pub fn disabled(reason: &str) -> Network {
        Network {
            config: NetworkConfig::default(),
            unavailable: Some(reason.into()),
            leases: Mutex::new(BTreeMap::new()),
            dns: Vec::new(),
            policies: Arc::new(Policies::default()),
            services: Mutex::new(Vec::new()),
            brokering: Arc::new(OnceLock::new()),
            brokered: Mutex::new(BTreeSet::new()),
        }
    }

    /// Lets the proxy find sandboxes' secrets (once; later calls change nothing).
    pub fn set_brokering(&self, brokering: proxy::Brokering) {
        let _ = self.brokering.set(brokering);
    }

    /// Whether sandbox `id` has secrets to broker: its HTTPS then goes through the host's proxy
    /// whatever its rules (from its next connection when it holds a lease, else from its next
    /// attach).
    pub async fn set_brokered(&self, id: &str, brokered: bool) -> Result<()> {
        let changed = {
            let mut set = self.brokered.lock().expect("brokered sandboxes");
            if brokered {
                set.insert(id.to_string())
            } else {
                set.remove(id)
            }
        };
        let lease = self.leases.lock().expect("network leases").get(id).cloned();
        let rules = lease
            .as_ref()
            .and_then(|l| self.policies.get(l.ip))
            .map(|p| p.rules.clone());
        match (changed, lease, rules) {
            (true, Some(l), Some(rules)) if self.unavailable.is_none() => {
                self.apply_egress(id, l.ip, &rules, l.internet).await
            }
            _ => Ok(()),
        }
    }

    /// Removes the bridge and the firewall table (all sandboxes must be gone), and stops the
    /// resolver and the proxy.
    pub async fn teardown(&self) -> Result<()> {
        for task in self.services.lock().expect("network services").drain(..) {
            task.abort();
        }
        if self.unavailable.is_some() {
            return Ok(());
        }
        link::delete_link(&self.config.bridge).await?;
        firewall::remove(&self.config).await
    }

    /// Why sandboxes get no network here, if they don't.
    pub fn unavailable_reason(&self) -> Option<&str> {
        self.unavailable.as_deref()
    }

    /// Records a lease that already exists (a sandbox from an earlier run of the server), so its
    /// address is not handed out twice.
    pub fn adopt(&self, id: &str, lease: Lease) {
        self.leases
            .lock()
            .expect("network leases")
            .insert(id.to_string(), lease);
    }

    /// A lease on the lowest free address.
    fn fresh_lease(
        &self,
        id: &str,
        leases: &BTreeMap<String, Lease>,
        internet: bool,
    ) -> Result<Lease> {
        let used = leases.values().map(|l| l.ip).collect();
        let ip = ipam::allocate(&self.config, &used)?;
        Ok(Lease {
            tap: tap_name(id),
            ip,
            prefix: self.config.prefix,
            mac: ipam::mac_for(ip),
            gateway: self.config.gateway(),
            dns: self.dns.clone(),
            internet,
        })
    }

    /// Takes `wanted` (a lease sandbox `id` had elsewhere or earlier: an archived sandbox coming
    /// back) back for it when its address is in this network and free, else gives it a fresh one
    /// with the same internet access. Returns the lease it holds now.
    pub fn claim(&self, id: &str, wanted: Lease) -> Result<Lease> {
        let mut leases = self.leases.lock().expect("network leases");
        if let Some(held) = leases.get(id) {
            return Ok(held.clone());
        }
        let subnet = Ipv4Net::new(self.config.subnet, self.config.prefix)
            .map_err(|e| Error::Invalid(format!("sandbox subnet: {e}")))?;
        let free = subnet.contains(&wanted.ip)
            && wanted.ip != self.config.gateway()
            && leases.values().all(|l| l.ip != wanted.ip);
        let lease = if free {
            Lease {
                tap: tap_name(id),
                prefix: self.config.prefix,
                gateway: self.config.gateway(),
                dns: self.dns.clone(),
                ..wanted
            }
        } else {
            self.fresh_lease(id, &leases, wanted.internet)?
        };
        leases.insert(id.to_string(), lease.clone());
        Ok(lease)
    }

    /// Whether sandbox `id` holds a lease.
    pub fn holds(&self, id: &str) -> bool {
        self.leases.lock().expect("network leases").contains_key(id)
    }

    /// Gives back a lease [`Network::claim`] took (no TAP or firewall element exists for it).
    pub fn unclaim(&self, id: &str) {
        self.leases.lock().expect("network leases").remove(id);
    }

    /// Gives sandbox `id` a lease (keeping one it already has), pins it in the firewall with
    /// its `egress` rules and creates its TAP.
    pub async fn attach(
        &self,
        id: &str,
        internet: bool,
        previous: Option<Lease>,
        egress: &EgressRules,
    ) -> Result<Lease> {
        if let Some(reason) = &self.unavailable {
            return Err(Error::Unsupported(format!(
                "sandbox networking is unavailable on this host: {reason}"
            )));
        }
        let lease = {
            let mut leases = self.leases.lock().expect("network leases");
            let lease = match previous.or_else(|| leases.get(id).cloned()) {
                Some(mut l) => {
                    l.internet = internet;
                    l
                }
                None => self.fresh_lease(id, &leases, internet)?,
            };
            leases.insert(id.to_string(), lease.clone());
            lease
        };
        // The firewall knows the port before it exists, so the TAP is never unfiltered.
        let created = async {
            firewall::set_internet(&self.config, lease.ip, internet).await?;
            self.apply_egress(id, lease.ip, egress, internet).await?;
            firewall::add_lease(&self.config, &lease).await?;
            link::create_tap(&lease.tap, &self.config.bridge).await
        };
        if let Err(e) = created.await {
            if link::delete_tap(&lease.tap).await.is_ok()
                && let Err(e) = firewall::remove_lease(&self.config, &lease).await
            {
                tracing::warn!(tap = %lease.tap, error = %e, "removing the firewall elements of a failed attach");
            }
            return Err(e);
        }
        Ok(lease)
    }

    /// Removes the TAP (the VM is gone) and then its firewall elements; the lease is kept for a
    /// later start unless `release`.
    pub async fn detach(&self, id: &str, release: bool) -> Result<()> {
        let lease = {
            let mut leases = self.leases.lock().expect("network leases");
            if release {
                leases.remove(id)
            } else {
                leases.get(id).cloned()
            }
        };
        let Some(lease) = lease else { return Ok(()) };
        link::delete_tap(&lease.tap).await?;
        if self.unavailable.is_some() {
            // No firewall was set up (a lease adopted from an earlier run with a network).
            return Ok(());
        }
        firewall::remove_lease(&self.config, &lease).await?;
        let forget = self.policies.remove(lease.ip);
        firewall::remove_egress(&self.config, lease.ip, &forget).await?;
        if release {
            firewall::set_internet(&self.config, lease.ip, true).await?;
        }
        Ok(())
    }

    /// Replaces the egress rules of sandbox `id` when it holds a lease (they hold from the next
    /// packet on); without one there is nothing to do until its next attach.
    pub async fn set_egress(&self, id: &str, rules: &EgressRules) -> Result<()> {
        let lease = self.leases.lock().expect("network leases").get(id).cloned();
        match lease {
            Some(l) if self.unavailable.is_none() => {
                self.apply_egress(id, l.ip, rules, l.internet).await
            }
            _ => Ok(()),
        }
    }

    /// Gives the sandbox at `ip` `rules`: the live state first (the resolver and proxy judge by
    /// it), then its firewall chain, forgetting learned addresses the rules no longer allow.
    async fn apply_egress(
        &self,
        id: &str,
        ip: Ipv4Addr,
        rules: &EgressRules,
        internet: bool,
    ) -> Result<()> {
        let proxied = self
            .brokered
            .lock()
            .expect("brokered sandboxes")
            .contains(id);
        let (generation, forget) = self.policies.set(ip, id, rules.clone(), internet);
        firewall::set_egress(&self.config, ip, rules, (generation, proxied), &forget).await
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        for task in self.services.get_mut().expect("network services").drain(..) {
            task.abort();
        }
    }
}

/// TAP name for a sandbox: `pt` + the first 13 characters of the id (IFNAMSIZ is 16 with NUL).
pub fn tap_name(id: &str) -> String {
    format!("pt{}", &id[..id.len().min(13)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claimed_address_is_kept_when_free_and_replaced_when_taken() {
        let net = Network::disabled("test");
        let old = |ip: Ipv4Addr| Lease {
            tap: "elsewhere".into(),
            ip,
            prefix: 24,
            mac: ipam::mac_for(ip),
            gateway: Ipv4Addr::new(192, 168, 0, 1),
            dns: Vec::new(),
            internet: false,
        };
        let a = net.claim("a", old(Ipv4Addr::new(10, 42, 0, 7))).unwrap();
        assert_eq!(
            (a.ip, a.tap.as_str(), a.prefix),
            (Ipv4Addr::new(10, 42, 0, 7), "pta", 16)
        );
        assert_eq!(a.gateway, NetworkConfig::default().gateway());
        // Taken by `a`, or outside this network: a fresh address, same internet access.
        let b = net.claim("b", old(Ipv4Addr::new(10, 42, 0, 7))).unwrap();
        assert_ne!(b.ip, a.ip);
        assert!(!b.internet);
        let c = net.claim("c", old(Ipv4Addr::new(192, 168, 0, 9))).unwrap();
        assert!(c.ip != b.ip && c.ip.octets()[..2] == [10, 42]);
        // A sandbox that holds one keeps it; an unclaimed one is free again.
        assert_eq!(
            net.claim("a", old(Ipv4Addr::new(10, 42, 0, 99))).unwrap(),
            a
        );
        assert!(net.holds("b"));
        net.unclaim("b");
        assert!(!net.holds("b"));
        assert_eq!(net.claim("d", old(b.ip)).unwrap().ip, b.ip);
    }

    #[test]
    fn lease_cmdline_and_names() {
        let lease = Lease {
            tap: tap_name("abcdefghijklmnopqrst"),
            ip: Ipv4Addr::new(10, 42, 0, 9),
            prefix: 16,
            mac: ipam::mac_for(Ipv4Addr::new(10, 42, 0, 9)),
            gateway: NetworkConfig::default().gateway(),
            dns: vec!["10.255.255.53".parse().unwrap()],
            internet: true,
        };
        assert_eq!(lease.tap, "ptabcdefghijklm");
        assert!(lease.tap.len() <= 15);
        assert_eq!(
            lease.cmdline(),
            "platinum.ip=10.42.0.9/16 platinum.gw=10.42.0.1 platinum.dns=10.255.255.53"
        );
    }
}
