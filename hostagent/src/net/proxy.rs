//! The host's transparent proxy for HTTP(S) of sandboxes whose egress rules name domains: the
//! firewall redirects their TCP ports 80 and 443 here (see [`super::egress`]); the original
//! destination comes from conntrack (`SO_ORIGINAL_DST`).
//!
//! Each connection's name is read from its first bytes ([`super::peek`]: TLS server name, or the
//! Host of the first HTTP request) and judged with its destination by the sandbox's rules
//! ([`super::EgressRules::allows_connection`]): an allowed name passes only towards an address
//! it resolves to (learned from the sandbox's own DNS answers, else resolved here), so an
//! allowed name cannot be borrowed to reach another address, and another name cannot be sent to
//! an allowed name's address. A refused HTTP request gets a `403`; a refused TLS connection is
//! closed. An allowed one is connected from the host to the original destination, the peeked
//! bytes sent first, and then relayed both ways untouched — unless it is TLS to a name the
//! sandbox has secrets bound to: then it is handed to the broker ([`crate::broker`]), which
//! terminates it and puts the secrets into its requests.
//!
//! What the host connects to is checked again here, as the firewall would for the sandbox: never
//! the host itself, the sandbox subnet, loopback, private, shared, link-local or metadata ranges
//! (unless allowed by configuration), multicast or reserved addresses. A sandbox has at most
//! [`super::policies::MAX_CONNECTIONS`] connections open here; the name must come within
//! [`super::peek::PEEK_TIMEOUT`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ipnet::Ipv4Net;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::firewall::BLOCKED_RANGES;
use super::peek::{Protocol, peek};
use super::policies::Policies;
use super::resolver::Upstream;
use crate::broker::{Broker, BrokerPlan};

/// How long connecting to the destination may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The host's secrets as the proxy asks for them: for a sandbox (by id) and a TLS server name,
/// the broker and what it does to the requests, or `None` to splice.
pub type Brokering = Arc<dyn Fn(&str, &str) -> Option<(Arc<Broker>, BrokerPlan)> + Send + Sync>;

/// What the proxy needs.
pub struct Proxy {
    /// The sandboxes' rules and learned addresses.
    pub policies: Arc<Policies>,
    /// Resolves a name whose addresses the sandbox has not learned.
    pub upstream: Upstream,
    /// The sandbox subnet (never a destination).
    pub subnet: Ipv4Net,
    /// Private networks sandboxes may reach anyway.
    pub allow_private: Vec<Ipv4Net>,
    /// Set once the host that holds the secrets is up; until then nothing is brokered.
    pub brokering: Arc<OnceLock<Brokering>>,
}

impl Proxy {
    /// Serves `listener` until the task is dropped.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(error = %e, "egress proxy accept");
                    continue;
                }
            };
            let SocketAddr::V4(peer) = peer else { continue };
            let me = self.clone();
            tokio::spawn(async move { me.handle(stream, peer).await });
        }
    }

    async fn handle(&self, mut client: TcpStream, peer: SocketAddrV4) {
        let from = *peer.ip();
        let Some(sandbox) = self.policies.get(from).filter(|s| s.internet) else {
            return;
        };
        let Ok(_permit) = sandbox.connections.clone().try_acquire_owned() else {
            tracing::debug!(sandbox = %from, "egress proxy: too many connections");
            return;
        };
        let Some(dst) = original_destination(&client) else {
            return;
        };
        let peeked = peek(&mut client).await;
        let name = peeked.name.as_deref();
        let name_has_dst = match name {
            Some(n) if sandbox.rules.learns(n) => {
                sandbox.resolved(n, *dst.ip()) || self.resolves_to(n, *dst.ip()).await
            }
            _ => false,
        };
        let allowed = self.reachable(*dst.ip())
            && sandbox
                .rules
                .allows_connection(name, *dst.ip(), name_has_dst);
        if !allowed {
            tracing::debug!(sandbox = %from, %dst, name = name.unwrap_or("-"), "egress proxy: refused");
            if matches!(peeked.protocol, Protocol::Http) {
                let body = format!(
                    "{} is not allowed by this sandbox's egress policy\n",
                    name.unwrap_or("this destination")
                );
                let head = format!(
                    "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\
                     connection: close\r\n\r\n",
                    body.len()
                );
                let _ = client.write_all(format!("{head}{body}").as_bytes()).await;
            }
            return;
        }
        if let (Protocol::Tls(Some(_)), Some(name)) = (&peeked.protocol, name)
            && let Some((broker, plan)) = self.brokering.get().and_then(|b| b(&sandbox.id, name))
        {
            if let Err(e) = broker
                .broker(client, peeked.bytes, name, dst.into(), plan)
                .await
            {
                tracing::debug!(sandbox = %from, %dst, name, error = %e, "brokered connection ended");
            }
            return;
        }
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(dst)).await;
        let Ok(Ok(mut upstream)) = connected else {
            tracing::debug!(sandbox = %from, %dst, "egress proxy: destination unreachable");
            return;
        };
        if upstream.write_all(&peeked.bytes).await.is_err() {
            return;
        }
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }

    /// Whether `name` resolves to `dst` now.
    async fn resolves_to(&self, name: &str, dst: Ipv4Addr) -> bool {
        self.upstream
            .lookup_a(name)
            .await
            .is_ok_and(|found| found.iter().any(|(a, _)| *a == dst))
    }

    /// Whether the host may connect to `dst` on a sandbox's behalf.
    fn reachable(&self, dst: Ipv4Addr) -> bool {
        if self.allow_private.iter().any(|n| n.contains(&dst)) && !self.subnet.contains(&dst) {
            return !is_local(dst);
        }
        !(dst.is_loopback()
            || dst.is_unspecified()
            || dst.is_multicast()
            || dst.is_broadcast()
            || dst.octets()[0] == 0
            || dst.octets()[0] >= 240
            || self.subnet.contains(&dst)
            || BLOCKED_RANGES.iter().any(|n| n.contains(&dst))
            || is_local(dst))
    }
}

/// Whether `ip` is one of this host's own addresses.
fn is_local(ip: Ipv4Addr) -> bool {
    nix::ifaddrs::getifaddrs().map_or(true, |mut addrs| {
        addrs.any(|a| {
            a.address
                .and_then(|s| s.as_sockaddr_in().map(|s| s.ip()))
                .is_some_and(|a| a == ip)
        })
    })
}

/// Where a redirected connection was going.
fn original_destination(stream: &TcpStream) -> Option<SocketAddrV4> {
    let sin = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::OriginalDst).ok()?;
    Some(SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proxy_never_connects_where_sandboxes_may_not_go() {
        let p = Proxy {
            policies: Arc::new(Policies::default()),
            upstream: Upstream::new(Vec::new()),
            subnet: "10.42.0.0/16".parse().unwrap(),
            allow_private: vec![
                "172.29.0.0/16".parse().unwrap(),
                "10.42.9.0/24".parse().unwrap(),
            ],
            brokering: Arc::default(),
        };
        for bad in [
            "127.0.0.1",
            "0.0.0.0",
            "10.42.0.1",
            "10.42.0.9",
            "10.42.9.9",
            "10.1.2.3",
            "192.168.1.1",
            "169.254.169.254",
            "100.100.100.200",
            "168.63.129.16",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
        ] {
            assert!(!p.reachable(bad.parse().unwrap()), "{bad} reachable");
        }
        assert!(p.reachable("203.0.113.5".parse().unwrap()));
        assert!(p.reachable("172.29.3.4".parse().unwrap()));
    }
}
