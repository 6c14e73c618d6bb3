//! A network namespace standing in for servers outside the host: it holds a few addresses
//! (TEST-NET ranges), reached from the host through a veth pair and one /32 route per address,
//! and runs server commands inside. Traffic to it never leaves this machine, and nothing
//! in it can leave either (its only route leads back to the host side). Everything created is
//! removed on drop, also when a test fails half-way through. Needs root.

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};

/// The host side's address on the veth (TEST-NET-2, never routed).
pub const HOST_SIDE: &str = "198.51.100.1";

/// Runs a command on the host; panics with its stderr when it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("running {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The namespace; see the module documentation.
pub struct Namespace {
    name: String,
    veth: String,
    routes: Vec<String>,
    linked: bool,
    servers: Vec<Child>,
}

impl Namespace {
    /// A namespace holding `addresses` and running `server` (argv) inside.
    pub fn create(addresses: &[Ipv4Addr], server: &[&str]) -> Namespace {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let id = std::process::id() % 10_000 * 10
            + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10;
        let mut ns = Namespace {
            name: format!("ptkns{id}"),
            veth: format!("ptkh{id}"),
            routes: Vec::new(),
            linked: false,
            servers: Vec::new(),
        };
        let peer = format!("ptkn{id}");
        sh(&["ip", "netns", "add", &ns.name]);
        sh(&[
            "ip", "link", "add", &ns.veth, "type", "veth", "peer", "name", &peer, "netns", &ns.name,
        ]);
        ns.linked = true;
        let host_side = format!("{HOST_SIDE}/32");
        sh(&["ip", "addr", "add", &host_side, "dev", &ns.veth]);
        sh(&["ip", "link", "set", &ns.veth, "up"]);
        sh(&["ip", "-n", &ns.name, "link", "set", "lo", "up"]);
        sh(&["ip", "-n", &ns.name, "link", "set", &peer, "up"]);
        for a in addresses {
            let a = format!("{a}/32");
            sh(&["ip", "-n", &ns.name, "addr", "add", &a, "dev", &peer]);
        }
        sh(&[
            "ip", "-n", &ns.name, "route", "add", &host_side, "dev", &peer,
        ]);
        for a in addresses {
            let route = format!("{a}/32");
            sh(&[
                "ip", "route", "add", &route, "dev", &ns.veth, "src", HOST_SIDE,
            ]);
            ns.routes.push(route);
        }
        ns.spawn(server);
        ns
    }

    /// Runs `command` (argv) in the namespace until the namespace is dropped.
    pub fn spawn(&mut self, command: &[&str]) {
        self.servers.push(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(command)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("starting {command:?} in the namespace: {e}")),
        );
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        for mut server in self.servers.drain(..) {
            let _ = server.kill();
            let _ = server.wait();
        }
        for route in &self.routes {
            let _ = Command::new("ip").args(["route", "del", route]).output();
        }
        if self.linked {
            let _ = Command::new("ip")
                .args(["link", "del", &self.veth])
                .output();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
