//! The live egress state of every sandbox with a lease, shared by the host's resolver and proxy:
//! its rules, whether it may leave the host at all, its bounds (queries and connections in
//! flight) and the addresses its allowed names resolved to (what the firewall's `learned` set
//! holds for it).
//!
//! Everything here is keyed by the sandbox's address, which the bridge firewall pins to its TAP,
//! so a packet's source address says which sandbox sent it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::egress::EgressRules;

/// DNS queries one sandbox may have in flight at the host's resolver.
pub const MAX_QUERIES: usize = 32;
/// Connections one sandbox may have open through the host's proxy.
pub const MAX_CONNECTIONS: usize = 256;
/// Learned addresses kept per sandbox (name and address pairs).
pub const MAX_LEARNED: usize = 1024;
/// Shortest time an answer's addresses stay reachable: short TTLs would close the window
/// between the answer and the connection that follows it.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// Longest.
pub const MAX_TTL: Duration = Duration::from_secs(3600);

/// One sandbox's egress state.
pub struct SandboxEgress {
    /// Its id.
    pub id: String,
    /// Its rules.
    pub rules: EgressRules,
    /// Whether its traffic may leave the host at all.
    pub internet: bool,
    /// The generation its firewall chain was written with (see [`super::egress::learned_mark`]).
    pub generation: u32,
    /// Bounds DNS queries in flight.
    pub queries: Arc<Semaphore>,
    /// Bounds proxied connections.
    pub connections: Arc<Semaphore>,
    /// (name, address) -> until when the address is reachable.
    learned: Mutex<HashMap<(String, Ipv4Addr), Instant>>,
}

impl SandboxEgress {
    /// Whether `name` resolved to `dst` for this sandbox, recently enough.
    pub fn resolved(&self, name: &str, dst: Ipv4Addr) -> bool {
        let key = (normalize(name), dst);
        self.learned
            .lock()
            .expect("learned addresses")
            .get(&key)
            .is_some_and(|until| *until > Instant::now())
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// Every sandbox's egress state.
pub struct Policies {
    sandboxes: RwLock<HashMap<Ipv4Addr, Arc<SandboxEgress>>>,
    generation: AtomicU32,
}

impl Default for Policies {
    fn default() -> Self {
        // Start somewhere a restart of the server is unlikely to repeat, so marks of an earlier
        // run never match a chain of this one.
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(0);
        Policies {
            sandboxes: RwLock::new(HashMap::new()),
            generation: AtomicU32::new(seed.wrapping_mul(2654435761)),
        }
    }
}

impl Policies {
    /// The state of the sandbox at `ip`, if it has a lease.
    pub fn get(&self, ip: Ipv4Addr) -> Option<Arc<SandboxEgress>> {
        self.sandboxes
            .read()
            .expect("egress policies")
            .get(&ip)
            .cloned()
    }

    /// Gives the sandbox at `ip` `rules`. Returns the generation to write its chain with, and the
    /// learned addresses the new rules no longer allow (for the firewall to forget); the rest
    /// are kept.
    pub fn set(
        &self,
        ip: Ipv4Addr,
        id: &str,
        rules: EgressRules,
        internet: bool,
    ) -> (u32, Vec<Ipv4Addr>) {
        let generation = self
            .generation
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1);
        let mut map = self.sandboxes.write().expect("egress policies");
        let old = map.remove(&ip);
        let mut kept = HashMap::new();
        let mut dropped = Vec::new();
        if let Some(old) = &old {
            for ((name, addr), until) in old.learned.lock().expect("learned addresses").drain() {
                if internet && rules.learns(&name) {
                    kept.insert((name, addr), until);
                } else {
                    dropped.push(addr);
                }
            }
        }
        dropped.retain(|a| !kept.keys().any(|(_, k)| k == a));
        dropped.sort();
        dropped.dedup();
        map.insert(
            ip,
            Arc::new(SandboxEgress {
                id: id.to_string(),
                rules,
                internet,
                generation,
                queries: old.as_ref().map_or_else(
                    || Arc::new(Semaphore::new(MAX_QUERIES)),
                    |o| o.queries.clone(),
                ),
                connections: old.as_ref().map_or_else(
                    || Arc::new(Semaphore::new(MAX_CONNECTIONS)),
                    |o| o.connections.clone(),
                ),
                learned: Mutex::new(kept),
            }),
        );
        (generation, dropped)
    }

    /// Forgets the sandbox at `ip`; returns the addresses it had learned.
    pub fn remove(&self, ip: Ipv4Addr) -> Vec<Ipv4Addr> {
        let Some(old) = self.sandboxes.write().expect("egress policies").remove(&ip) else {
            return Vec::new();
        };
        let mut addrs: Vec<Ipv4Addr> = old
            .learned
            .lock()
            .expect("learned addresses")
            .keys()
            .map(|(_, a)| *a)
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs
    }

    /// Records that `name` resolved to `addrs` (each with its TTL in seconds) for the sandbox at
    /// `ip`, when its rules learn `name`. Returns what the firewall must (re)add, with the
    /// timeout in seconds: addresses new to it or whose time would run out sooner. Beyond
    /// [`MAX_LEARNED`] unexpired entries, new ones are refused (the sandbox can still resolve,
    /// but not reach further addresses until some expire).
    pub fn learn(
        &self,
        ip: Ipv4Addr,
        name: &str,
        addrs: &[(Ipv4Addr, u32)],
    ) -> Vec<(Ipv4Addr, u64)> {
        let Some(sandbox) = self.get(ip) else {
            return Vec::new();
        };
        if !sandbox.internet || !sandbox.rules.learns(name) {
            return Vec::new();
        }
        let now = Instant::now();
        let name = normalize(name);
        let mut learned = sandbox.learned.lock().expect("learned addresses");
        learned.retain(|_, until| *until > now);
        let mut out = Vec::new();
        for (addr, ttl) in addrs {
            let ttl = Duration::from_secs(u64::from(*ttl)).clamp(MIN_TTL, MAX_TTL);
            let until = now + ttl;
            let key = (name.clone(), *addr);
            match learned.get(&key) {
                // Still reachable for most of the new TTL: nothing to tell the firewall.
                Some(old) if *old >= now + ttl / 2 => continue,
                None if learned.len() >= MAX_LEARNED => {
                    tracing::warn!(sandbox = %ip, name = %name, "too many learned addresses; not adding more");
                    continue;
                }
                _ => {}
            }
            // The firewall holds one timeout per address: the longest any name needs.
            let longest = learned
                .iter()
                .filter(|((_, a), _)| a == addr)
                .map(|(_, u)| *u)
                .max()
                .map_or(until, |u| u.max(until));
            learned.insert(key, until);
            out.push((
                *addr,
                longest.saturating_duration_since(now).as_secs().max(1),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::names::NamePattern;

    fn rules(allow: &[&str]) -> EgressRules {
        EgressRules {
            default_deny: true,
            allow_names: allow
                .iter()
                .map(|n| NamePattern::parse(n).unwrap())
                .collect(),
            ..EgressRules::default()
        }
    }

    #[test]
    fn learned_addresses_follow_the_rules() {
        let p = Policies::default();
        let ip = Ipv4Addr::new(10, 42, 0, 7);
        let (a, b) = (Ipv4Addr::new(203, 0, 113, 1), Ipv4Addr::new(203, 0, 113, 2));
        assert!(
            p.learn(ip, "a.example.com", &[(a, 30)]).is_empty(),
            "no lease"
        );
        let (g1, dropped) = p.set(ip, "sb", rules(&["*.example.com"]), true);
        assert!(dropped.is_empty());
        // Short TTLs are raised to the minimum; a repeat within half of it adds nothing.
        assert_eq!(p.learn(ip, "A.example.com.", &[(a, 5)]), vec![(a, 60)]);
        assert!(p.learn(ip, "a.example.com", &[(a, 5)]).is_empty());
        assert_eq!(p.learn(ip, "b.example.com", &[(b, 7200)]), vec![(b, 3600)]);
        assert!(p.learn(ip, "other.example.net", &[(b, 60)]).is_empty());
        let s = p.get(ip).unwrap();
        assert!(s.resolved("a.example.com", a) && !s.resolved("a.example.com", b));
        // New rules keep what they still allow and drop the rest, with a new generation.
        let (g2, dropped) = p.set(ip, "sb", rules(&["b.example.com"]), true);
        assert_ne!(g1, g2);
        assert_eq!(dropped, vec![a]);
        assert!(p.get(ip).unwrap().resolved("b.example.com", b));
        // No internet: nothing learned, everything dropped.
        let (_, dropped) = p.set(ip, "sb", rules(&["b.example.com"]), false);
        assert_eq!(dropped, vec![b]);
        assert!(p.learn(ip, "b.example.com", &[(b, 60)]).is_empty());
        assert!(p.remove(ip).is_empty());
        assert!(p.get(ip).is_none());
    }
}
