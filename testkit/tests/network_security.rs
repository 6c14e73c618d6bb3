//! The sandbox network cannot be spoofed or used to reach private ranges, with real VMs: a
//! guest that takes other addresses, forges ARP or speaks IPv6 gets nowhere, and the host, the
//! other sandbox, cloud metadata and private addresses are refused while DNS and the allow-list
//! work; egress policies narrow what a sandbox reaches at runtime and never widen it. Needs root
//! (bridge, TAPs, nftables, a network namespace).
//!
//! Test traffic never leaves this machine: every target address (a stand-in for the internet,
//! metadata addresses, private addresses) lives in a network namespace the test creates, with
//! host routes (/32) into it, so even a broken firewall only ever reaches that namespace.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use platinum_hostagent::net::{Ipv4Net, ipam};
use platinum_testkit::netns::{Namespace, sh};
use platinum_testkit::{TestServer, test_network};
use serde_json::{Value, json};

/// A public address (TEST-NET-3) standing in for "the internet".
const INTERNET: &str = "203.0.113.10";
/// Port the namespace's HTTP server listens on.
const PORT: u16 = 8080;

/// `python3 -m http.server` on [`PORT`], the namespace's server.
const HTTP_SERVER: [&str; 6] = [
    "/usr/bin/python3",
    "-m",
    "http.server",
    "8080",
    "--bind",
    "0.0.0.0",
];

/// A table of the test's own that counts IPv6 packets entering the host from a bridge, at the
/// earliest hook; deleted on drop.
struct Watch {
    table: String,
}

impl Watch {
    fn create(bridge: &str) -> Watch {
        let watch = Watch {
            table: format!("ptsec{}", std::process::id()),
        };
        let script = format!(
            "table inet {t} {{\n  chain watch {{\n    type filter hook prerouting priority -400; policy accept;\n    iifname \"{bridge}\" meta nfproto ipv6 counter\n  }}\n}}\n",
            t = watch.table
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), script).unwrap();
        sh(&["nft", "-f", &file.path().to_string_lossy()]);
        watch
    }

    fn ipv6_packets(&self) -> u64 {
        let out = sh(&["nft", "list", "chain", "inet", &self.table, "watch"]);
        let words: Vec<&str> = out.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| *w == "packets")
            .unwrap_or_else(|| panic!("no counter in {out}"));
        words[at + 1].parse().unwrap()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .output();
    }
}

/// Whether an HTTP GET from the host to `addr`:[`PORT`] gets a 200 within `timeout`.
fn host_gets_200(addr: Ipv4Addr, timeout: Duration) -> bool {
    host_gets_200_on(addr, PORT, timeout)
}

/// Whether an HTTP GET from the host to `addr`:`port` gets a 200 within `timeout`.
fn host_gets_200_on(addr: Ipv4Addr, port: u16, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        let ok = (|| {
            let mut s =
                TcpStream::connect_timeout(&SocketAddr::from((addr, port)), Duration::from_secs(2))
                    .ok()?;
            s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n").ok()?;
            let mut head = [0u8; 12];
            s.read_exact(&mut head).ok()?;
            Some(head.ends_with(b" 200"))
        })()
        .unwrap_or(false);
        if ok || Instant::now() > until {
            return ok;
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// HTTP status per target (`000` when nothing answered) of GETs from sandbox `id`, all at once,
/// from source address `from` (the guest's own when `None`).
async fn probe(
    t: &TestServer,
    id: &str,
    from: Option<&str>,
    targets: &[String],
) -> BTreeMap<String, String> {
    let iface = from.map(|a| format!("--interface {a}")).unwrap_or_default();
    let mut script = String::new();
    for target in targets {
        script.push_str(&format!(
            "(c=$(curl -s -m 4 {iface} -o /dev/null -w '%{{http_code}}' http://{target}/); \
             echo \"{target} $c\") &\n"
        ));
    }
    script.push_str("wait\n");
    let r = t.exec(id, &script).await.unwrap();
    let out = r["stdout"].as_str().unwrap_or_default();
    let got: BTreeMap<String, String> = out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got.len(), targets.len(), "probe output: {r}");
    got
}

/// Runs `command` as root in a sandbox (the guest's own root: it controls its kernel) and
/// requires exit status 0.
async fn ok(t: &TestServer, id: &str, command: &str) -> Value {
    let r = t
        .exec_with(id, json!({"command": command, "user": "root"}))
        .await
        .unwrap();
    assert_eq!(r["exit_code"].as_i64(), Some(0), "`{command}`: {r}");
    r
}

/// The MAC the host's neighbour table holds for `ip` on `bridge`, if any.
fn neighbour(bridge: &str, ip: &str) -> Option<String> {
    let out = sh(&["ip", "neigh", "show", "dev", bridge, "to", ip]);
    let words: Vec<&str> = out.split_whitespace().collect();
    words
        .iter()
        .position(|w| *w == "lladdr")
        .and_then(|i| words.get(i + 1))
        .map(|m| m.to_string())
}

/// Sends forged ARP from the guest's eth0 (raw AF_PACKET socket): replies (to the gateway and
/// broadcast) and requests to the gateway that claim each `claim` IP for the guest's own MAC and
/// for a made-up one. Arguments: gateway MAC, gateway IP, claims. Prints the frame count.
const FORGE_ARP: &str = r#"
import socket, struct, sys, time
gw_mac, gw_ip, claims = sys.argv[1], sys.argv[2], sys.argv[3:]
own = open("/sys/class/net/eth0/address").read().strip()
mac = lambda m: bytes.fromhex(m.replace(":", ""))
def arp(op, sha, spa, tha, tpa, dst):
    return (mac(dst) + mac(own) + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, op)
            + mac(sha) + socket.inet_aton(spa) + mac(tha) + socket.inet_aton(tpa))
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
sent = 0
for _ in range(6):
    for ip in claims:
        for sha in (own, "02:00:00:00:66:66"):
            for frame in (arp(2, sha, ip, gw_mac, gw_ip, gw_mac),
                          arp(2, sha, ip, "ff:ff:ff:ff:ff:ff", ip, "ff:ff:ff:ff:ff:ff"),
                          arp(1, sha, ip, "00:00:00:00:00:00", gw_ip, "ff:ff:ff:ff:ff:ff")):
                sent += s.send(frame) > 0
    time.sleep(0.4)
print(sent)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn guests_cannot_spoof_or_reach_private_ranges() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root to create a bridge, TAPs, nftables rules and a namespace");
    }
    let mut net = test_network();
    let n = u32::from(net.subnet) >> 16 & 0xff;
    let private = Ipv4Addr::new(172, 29, n as u8, 10);
    let allowed = Ipv4Addr::new(172, 29, n as u8, 20);
    net.allow_private = vec![Ipv4Net::new(allowed, 32).unwrap()];
    let metadata: [Ipv4Addr; 3] = [
        Ipv4Addr::new(169, 254, 169, 254),
        Ipv4Addr::new(168, 63, 129, 16),
        Ipv4Addr::new(100, 100, 100, 200),
    ];
    let internet: Ipv4Addr = INTERNET.parse().unwrap();
    let mut addresses = vec![internet, private, allowed];
    addresses.extend(metadata);
    let ns = Namespace::create(&addresses, &HTTP_SERVER);
    // Every listener answers the host, so a refusal from a guest is the firewall's doing.
    for a in &addresses {
        assert!(
            host_gets_200(*a, Duration::from_secs(20)),
            "the namespace's listener on {a} does not answer the host"
        );
    }

    let bridge = net.bridge.clone();
    let gateway = net.gateway().to_string();
    let t = TestServer::start_with(|c| c.network = Some(net.clone()))
        .await
        .unwrap();
    let a = t.create(json!({})).await.unwrap();
    let b = t.create(json!({"internet": false})).await.unwrap();
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    let b_ip = b["runtime"]["ip"].as_str().unwrap().to_string();
    let b_mac = ipam::mac_for(b_ip.parse().unwrap());
    let free = Ipv4Addr::from(u32::from(net.subnet) + 200).to_string();
    let bridge_mac = std::fs::read_to_string(format!("/sys/class/net/{bridge}/address"))
        .unwrap()
        .trim()
        .to_string();

    // B serves HTTP too; the host reaches it (replies pass), so A's refusal below means something.
    t.exec_with(
        b_id,
        json!({"command": format!("exec python3 -m http.server {PORT} --bind 0.0.0.0"), "background": true}),
    )
    .await
    .unwrap();
    assert!(
        host_gets_200(b_ip.parse().unwrap(), Duration::from_secs(30)),
        "B's listener does not answer the host"
    );

    // A TCP listener on the host (as the API would be), reachable on the bridge address.
    let host_listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let host_target = format!("{gateway}:{}", host_listener.local_addr().unwrap().port());
    let target = |a: &Ipv4Addr| format!("{a}:{PORT}");
    let mut targets: Vec<String> = addresses.iter().map(target).collect();
    targets.push(host_target.clone());
    targets.push(format!("{b_ip}:{PORT}"));

    // The reachability matrix from A's own address: only the internet and the allow-listed
    // private address answer.
    let got = probe(&t, a_id, None, &targets).await;
    for (dest, code) in &got {
        let expected = if *dest == target(&internet) || *dest == target(&allowed) {
            "200"
        } else {
            "000"
        };
        assert_eq!(code, expected, "A -> {dest}: {got:?}");
    }
    // DNS to the resolver it was given works (the host's resolver may itself be private).
    let r = ok(&t, a_id, "getent hosts deb.debian.org").await;
    assert!(!r["stdout"].as_str().unwrap().trim().is_empty(), "{r}");

    // B reaches the host's neighbour table with its real MAC (ARP for the gateway).
    let _ = t
        .exec(b_id, &format!("ping -c 1 -W 2 {gateway} >/dev/null 2>&1"))
        .await
        .unwrap();
    assert_eq!(neighbour(&bridge, &b_ip).as_deref(), Some(b_mac.as_str()));

    // A takes B's address and a free one: nothing from them gets anywhere.
    ok(
        &t,
        a_id,
        &format!("ip addr add {b_ip}/32 dev eth0 && ip addr add {free}/32 dev eth0"),
    )
    .await;
    let spoofable = [target(&internet), target(&allowed), host_target.clone()];
    for from in [&b_ip, &free] {
        let got = probe(&t, a_id, Some(from), &spoofable).await;
        assert!(
            got.values().all(|c| c == "000"),
            "A reached something from {from}: {got:?}"
        );
    }
    assert_eq!(
        neighbour(&bridge, &free),
        None,
        "the host heard A's ARP for a taken address"
    );
    // (B's address leaves A again, else A would ping itself.)
    ok(&t, a_id, &format!("ip addr del {b_ip}/32 dev eth0")).await;
    let r = t
        .exec(
            a_id,
            &format!("ping -c 2 -W 2 -I {free} {b_ip} >/dev/null 2>&1; echo $?"),
        )
        .await
        .unwrap();
    assert_ne!(r["stdout"], "0\n", "A reached B from a taken address: {r}");

    // B (no internet) cannot get out, from its own address or from one it takes.
    ok(&t, b_id, &format!("ip addr add {free}/32 dev eth0")).await;
    for from in [None, Some(free.as_str())] {
        let got = probe(&t, b_id, from, &[target(&internet), target(&allowed)]).await;
        assert!(
            got.values().all(|c| c == "000"),
            "B without internet got out from {from:?}: {got:?}"
        );
    }

    // A forges ARP for B's address and the gateway's: the host keeps B's real MAC and still
    // reaches B, and B still knows the gateway by the bridge's MAC.
    t.write_file(a_id, "/tmp/forge_arp.py", FORGE_ARP)
        .await
        .unwrap();
    let r = ok(
        &t,
        a_id,
        &format!("python3 /tmp/forge_arp.py {bridge_mac} {gateway} {b_ip} {gateway}"),
    )
    .await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "72", "{r}");
    assert_eq!(
        neighbour(&bridge, &b_ip).as_deref(),
        Some(b_mac.as_str()),
        "forged ARP changed the host's entry for B"
    );
    assert!(
        host_gets_200(b_ip.parse().unwrap(), Duration::from_secs(10)),
        "the host no longer reaches B after forged ARP"
    );
    let r = ok(&t, b_id, &format!("ip neigh show {gateway}")).await;
    assert!(
        r["stdout"].as_str().unwrap().contains(&bridge_mac),
        "B lost the gateway's MAC: {r}"
    );

    // IPv6 from a guest is dropped: a ULA on the bridge is unreachable, and no IPv6 packet from
    // the bridge ever reaches the host's IP stack (counted before any other hook runs; the host's
    // input chain alone would also stop the ping, this proves the bridge drops the frames).
    let watch = Watch::create(&bridge);
    let ula = format!("fd42:{n:x}::");
    sh(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{ula}1/64"),
        "dev",
        &bridge,
        "nodad",
    ]);
    ok(
        &t,
        a_id,
        &format!("ip -6 addr add {ula}2/64 dev eth0 nodad"),
    )
    .await;
    let r = t
        .exec(
            a_id,
            &format!("ping -6 -c 2 -W 2 {ula}1 >/dev/null 2>&1; echo $?"),
        )
        .await
        .unwrap();
    assert_ne!(
        r["stdout"], "0\n",
        "IPv6 from a guest reached the host: {r}"
    );
    assert_eq!(
        watch.ipv6_packets(),
        0,
        "IPv6 from a guest passed the bridge"
    );

    for id in [a_id, b_id] {
        t.delete(id).await.unwrap();
    }
    drop(t);
    drop(ns);
}

/// Egress policies, from inside a guest: a deny-all policy with an allow-list reaches only what
/// it lists; a policy replaced at runtime holds for the next connection; deny loses to allow; a
/// policy cannot open private ranges; a stopped and started sandbox keeps its policy; entries
/// that are neither addresses nor names are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn egress_policies_narrow_what_a_sandbox_reaches_at_runtime() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root to create a bridge, TAPs, nftables rules and a namespace");
    }
    let net = test_network();
    let n = (u32::from(net.subnet) >> 16 & 0xff) as u8;
    let (a, b) = (
        Ipv4Addr::new(203, 0, 113, 30),
        Ipv4Addr::new(203, 0, 113, 31),
    );
    let private = Ipv4Addr::new(172, 29, n, 40);
    let ns = Namespace::create(&[a, b, private], &HTTP_SERVER);
    for addr in [a, b, private] {
        assert!(
            host_gets_200(addr, Duration::from_secs(20)),
            "the namespace's listener on {addr} does not answer the host"
        );
    }
    let t = TestServer::start_with(|c| c.network = Some(net.clone()))
        .await
        .unwrap();
    let targets: Vec<String> = [a, b, private]
        .iter()
        .map(|x| format!("{x}:{PORT}"))
        .collect();
    let reach = |got: &BTreeMap<String, String>| -> Vec<bool> {
        targets.iter().map(|x| got[x] == "200").collect()
    };
    let policy = |id: &str, body: Value| {
        t.req(
            reqwest::Method::PUT,
            &format!("/v1/sandboxes/{id}/egress-policy"),
        )
        .json(&body)
    };

    // Deny all but A, from the first instruction on.
    let s = t
        .create(json!({"egress": {"default": "deny", "allow": [a.to_string()]}}))
        .await
        .unwrap();
    let id = s["id"].as_str().unwrap();
    assert_eq!(
        reach(&probe(&t, id, None, &targets).await),
        [true, false, false]
    );

    // Replaced at runtime: A denied, the rest allowed — private stays out even when listed.
    let set = t
        .expect(
            policy(
                id,
                json!({"deny": [format!("{a}/32")], "allow": ["172.16.0.0/12"]}),
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(set["default"], "allow", "{set}");
    assert_eq!(
        reach(&probe(&t, id, None, &targets).await),
        [false, true, false]
    );

    // Allow wins over deny.
    t.expect(
        policy(
            id,
            json!({"default": "deny", "allow": [b.to_string()], "deny": ["203.0.113.0/24"]}),
        ),
        200,
    )
    .await
    .unwrap();
    assert_eq!(
        reach(&probe(&t, id, None, &targets).await),
        [false, true, false]
    );

    // Bad entries are typed errors and change nothing.
    for (entry, status, code) in [
        ("localhost", 400, "invalid_request"),
        ("2001:db8::/32", 400, "invalid_request"),
        ("203.0.113.0/40", 400, "invalid_request"),
    ] {
        t.expect_error(policy(id, json!({"allow": [entry]})), status, code)
            .await
            .unwrap();
    }
    let kept = t
        .expect(
            t.req(
                reqwest::Method::GET,
                &format!("/v1/sandboxes/{id}/egress-policy"),
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(kept["allow"], json!([b.to_string()]), "{kept}");

    // Stopped and started: the policy holds from the boot on.
    t.action(id, "stop").await.unwrap();
    t.action(id, "start").await.unwrap();
    assert_eq!(
        reach(&probe(&t, id, None, &targets).await),
        [false, true, false]
    );
    t.delete(id).await.unwrap();
    drop(ns);
}

/// A DNS server on the host's loopback standing in for the host's upstream resolver: it knows
/// a few test names (A records, TTL 30), answers NXDOMAIN for the rest, and records every name
/// it was asked.
struct TestDns {
    addr: SocketAddr,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestDns {
    async fn start(names: &[(&str, Ipv4Addr)]) -> TestDns {
        use hickory_proto::op::{Message, MessageType, ResponseCode};
        use hickory_proto::rr::{RData, Record, rdata::A};
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let names: Vec<(String, Ipv4Addr)> =
            names.iter().map(|(n, a)| (n.to_string(), *a)).collect();
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = asked.clone();
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                    continue;
                };
                let Ok(q) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(query) = q.queries().first().cloned() else {
                    continue;
                };
                let name = query.name().to_ascii().trim_end_matches('.').to_string();
                log.lock().unwrap().push(name.clone());
                let mut a = Message::new();
                a.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .set_recursion_available(true)
                    .add_query(query.clone());
                match names.iter().find(|(n, _)| *n == name) {
                    Some((_, ip)) => {
                        if query.query_type() == hickory_proto::rr::RecordType::A {
                            a.add_answer(Record::from_rdata(
                                query.name().clone(),
                                30,
                                RData::A(A(*ip)),
                            ));
                        }
                    }
                    None => {
                        a.set_response_code(ResponseCode::NXDomain);
                    }
                }
                let _ = socket.send_to(&a.to_vec().unwrap(), peer).await;
            }
        });
        TestDns { addr, asked, task }
    }

    fn asked(&self, name: &str) -> bool {
        self.asked.lock().unwrap().iter().any(|n| n == name)
    }
}

impl Drop for TestDns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Sends one DNS query (type A) for argv[1] to argv[2]:53 over UDP and prints the answer's
/// response code and answer count, or `timeout`.
const DNS_QUERY: &str = r#"
import socket, struct, sys
name, server = sys.argv[1], sys.argv[2]
q = struct.pack("!HHHHHH", 0x5151, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(4)
s.sendto(q, (server, 53))
try:
    r = s.recv(4096)
    print(r[3] & 15, struct.unpack("!H", r[6:8])[0])
except OSError:
    print("timeout")
"#;

/// HTTP status per labelled `curl` argument list, run at once in sandbox `id` (`000` when
/// nothing answered).
async fn curl_all(t: &TestServer, id: &str, probes: &[(&str, String)]) -> BTreeMap<String, String> {
    let mut script = String::new();
    for (label, args) in probes {
        script.push_str(&format!(
            "(c=$(curl -s -m 5 -o /dev/null -w '%{{http_code}}' {args}); echo \"{label} $c\") &\n"
        ));
    }
    script.push_str("wait\n");
    let r = t.exec(id, &script).await.unwrap();
    let got: BTreeMap<String, String> = r["stdout"]
        .as_str()
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got.len(), probes.len(), "curl output: {r}");
    got
}

/// Domain rules, from inside a guest, against servers in a namespace behind test DNS names:
/// with a default of deny and an allow-listed name, the sandbox reaches that name (by any port,
/// and over HTTP and HTTPS through the host's proxy) and nothing else — not another name, not a
/// hard-coded address, not another name sent to the allowed address (HTTP Host or TLS server
/// name), not the allowed name sent to another address, not a name asked of another DNS server
/// (the query is answered by the host, and never leaves it). A runtime change holds for the next
/// query and connection; deny-listed names and wildcards are refused under a default of allow.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn domain_policies_are_enforced_on_the_host_side() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root to create a bridge, TAPs, nftables rules and a namespace");
    }
    let (allowed, other) = (
        Ipv4Addr::new(203, 0, 113, 50),
        Ipv4Addr::new(203, 0, 113, 51),
    );
    let mut ns = Namespace::create(&[allowed, other], &HTTP_SERVER);
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = (certs.path().join("c.pem"), certs.path().join("k.pem"));
    sh(&[
        "openssl",
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=allowed.test",
        "-keyout",
        &key.to_string_lossy(),
        "-out",
        &cert.to_string_lossy(),
    ]);
    ns.spawn(&[
        "/usr/bin/python3",
        "-m",
        "http.server",
        "80",
        "--bind",
        "0.0.0.0",
    ]);
    let tls = format!(
        "import http.server, ssl\n\
         s = http.server.HTTPServer(('0.0.0.0', 443), http.server.SimpleHTTPRequestHandler)\n\
         c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
         c.load_cert_chain({:?}, {:?})\n\
         s.socket = c.wrap_socket(s.socket, server_side=True)\n\
         s.serve_forever()\n",
        cert.to_string_lossy(),
        key.to_string_lossy()
    );
    ns.spawn(&["/usr/bin/python3", "-c", &tls]);
    for (addr, port) in [(allowed, PORT), (other, PORT), (allowed, 80), (other, 80)] {
        assert!(
            host_gets_200_on(addr, port, Duration::from_secs(20)),
            "the namespace's listener on {addr}:{port} does not answer the host"
        );
    }
    let dns = TestDns::start(&[
        ("allowed.test", allowed),
        ("other.test", other),
        ("api.wild.test", other),
    ])
    .await;
    let mut net = test_network();
    net.upstream_dns = vec![dns.addr];
    let t = TestServer::start_with(|c| c.network = Some(net.clone()))
        .await
        .unwrap();
    let policy = |id: &str, body: Value| {
        t.req(
            reqwest::Method::PUT,
            &format!("/v1/sandboxes/{id}/egress-policy"),
        )
        .json(&body)
    };
    let s = t
        .create(json!({"egress": {"default": "deny", "allow": ["allowed.test"]}}))
        .await
        .unwrap();
    let id = s["id"].as_str().unwrap();

    let got = curl_all(
        &t,
        id,
        &[
            ("name_8080", format!("http://allowed.test:{PORT}/")),
            ("name_http", "http://allowed.test/".into()),
            ("name_https", "-k https://allowed.test/".into()),
            ("other_name", format!("http://other.test:{PORT}/")),
            ("other_ip", format!("http://{other}:{PORT}/")),
            (
                "other_host",
                "-H 'Host: other.test' http://allowed.test/".into(),
            ),
            (
                "other_sni",
                format!("-k --resolve other.test:443:{allowed} https://other.test/"),
            ),
            (
                "borrowed_host",
                format!("-H 'Host: allowed.test' http://{other}/"),
            ),
            (
                "borrowed_sni",
                format!("-k --resolve allowed.test:443:{other} https://allowed.test/"),
            ),
        ],
    )
    .await;
    let want: BTreeMap<String, String> = [
        ("name_8080", "200"),
        ("name_http", "200"),
        ("name_https", "200"),
        ("other_name", "000"),
        ("other_ip", "000"),
        ("other_host", "403"),
        ("other_sni", "000"),
        ("borrowed_host", "403"),
        ("borrowed_sni", "000"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(got, want);
    // DNS asked of another server is answered by the host: the allowed name resolves (from an
    // address nothing listens on), the other gets NXDOMAIN and never leaves the host.
    let q = |name: &str, server: &str| {
        format!(
            "python3 -c '{}' {name} {server}",
            DNS_QUERY.replace('\'', "\"")
        )
    };
    let r = ok(&t, id, &q("allowed.test", "192.0.2.53")).await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "0 1", "{r}");
    let r = ok(&t, id, &q("other.test", "192.0.2.53")).await;
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "3 0", "{r}");
    assert!(dns.asked("allowed.test"));
    assert!(
        !dns.asked("other.test"),
        "a refused name reached the upstream resolver"
    );

    // Replaced at runtime: the next query and connection follow the new policy, and the
    // address learned for the name no longer allowed is forgotten.
    t.expect(
        policy(id, json!({"default": "deny", "allow": ["other.test"]})),
        200,
    )
    .await
    .unwrap();
    let got = curl_all(
        &t,
        id,
        &[
            ("old_name", format!("http://allowed.test:{PORT}/")),
            ("old_ip", format!("http://{allowed}:{PORT}/")),
            ("new_name", format!("http://other.test:{PORT}/")),
            ("new_http", "http://other.test/".into()),
        ],
    )
    .await;
    for (probe, status) in [
        ("old_name", "000"),
        ("old_ip", "000"),
        ("new_name", "200"),
        ("new_http", "200"),
    ] {
        assert_eq!(got[probe], status, "{probe}: {got:?}");
    }

    // Default allow with a deny-listed wildcard: those names neither resolve nor pass the proxy
    // (by address, on other ports, they do: names are names).
    t.expect(policy(id, json!({"deny": ["*.wild.test"]})), 200)
        .await
        .unwrap();
    let got = curl_all(
        &t,
        id,
        &[
            ("denied_name", format!("http://api.wild.test:{PORT}/")),
            (
                "denied_host",
                format!("-H 'Host: api.wild.test' http://{other}/"),
            ),
            (
                "denied_sni",
                format!("-k --resolve api.wild.test:443:{other} https://api.wild.test/"),
            ),
            ("plain_ip", format!("http://{other}:{PORT}/")),
            ("other_name", "http://allowed.test/".into()),
        ],
    )
    .await;
    assert_eq!(got["denied_name"], "000", "{got:?}");
    assert_eq!(got["denied_host"], "403", "{got:?}");
    assert_eq!(got["denied_sni"], "000", "{got:?}");
    assert_eq!(got["plain_ip"], "200", "{got:?}");
    assert_eq!(got["other_name"], "200", "{got:?}");
    t.delete(id).await.unwrap();
    drop(ns);
}
