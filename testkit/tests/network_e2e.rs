//! Sandbox networking with real VMs: NAT to the outside, internet access switched off per
//! sandbox, isolation between sandboxes and from the host, leases kept across stop and start, and
//! nothing left behind. Needs root (it creates a bridge, TAPs and nftables rules of its own).

use platinum_testkit::{TestServer, taps_on, test_network};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandboxes_get_nat_isolation_and_per_sandbox_internet_control() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root to create a bridge, TAPs and nftables rules");
    }
    let net = test_network();
    let bridge = net.bridge.clone();
    let t = TestServer::start_with(|c| c.network = Some(net.clone()))
        .await
        .unwrap();

    let a = t.create(json!({})).await.unwrap();
    let b = t.create(json!({"internet": false})).await.unwrap();
    let (a_id, b_id) = (
        a["id"].as_str().unwrap().to_string(),
        b["id"].as_str().unwrap().to_string(),
    );
    let a_ip = a["runtime"]["ip"].as_str().unwrap().to_string();
    let b_ip = b["runtime"]["ip"].as_str().unwrap().to_string();
    assert_eq!(
        (
            a["runtime"]["internet"].as_bool(),
            b["runtime"]["internet"].as_bool()
        ),
        (Some(true), Some(false))
    );
    assert_ne!(a_ip, b_ip);
    assert_eq!(taps_on(&bridge).len(), 2);

    // The guest configured itself from the kernel command line.
    let r = t.exec(&a_id, "ip -4 -o addr show dev eth0 | awk '{print $4}'; ip route show default | awk '{print $3}'").await.unwrap();
    assert_eq!(
        r["stdout"].as_str().unwrap(),
        format!("{a_ip}/16\n{}\n", net.gateway()),
        "{r}"
    );

    // A reaches the outside through NAT, by name (DNS from the host's resolvers).
    let probe = "curl -sS -m 20 -o /dev/null -w '%{http_code}' http://deb.debian.org/debian/dists/bookworm/Release";
    let r = t.exec(&a_id, probe).await.unwrap();
    assert_eq!(r["stdout"], "200", "outbound HTTP from a sandbox: {r}");

    // B has a network interface but nothing leaves the host.
    let r = t.exec(&b_id, probe).await.unwrap();
    assert_ne!(
        r["exit_code"].as_i64(),
        Some(0),
        "a sandbox without internet reached the outside: {r}"
    );

    // Sandboxes cannot reach each other.
    let r = t
        .exec(
            &a_id,
            &format!("ping -c 1 -W 2 {b_ip} >/dev/null 2>&1; echo $?"),
        )
        .await
        .unwrap();
    assert_ne!(r["stdout"], "0\n", "sandbox A reached sandbox B");

    // Sandboxes cannot open connections to the host.
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let r = t
        .exec(
            &a_id,
            &format!(
                "curl -sS -m 3 http://{}:{port}/ 2>&1; echo rc=$?",
                net.gateway()
            ),
        )
        .await
        .unwrap();
    assert!(
        !r["stdout"].as_str().unwrap().ends_with("rc=0\n"),
        "sandbox reached a host port: {r}"
    );

    // Stop and start keep the address; the TAP goes away while stopped.
    t.action(&a_id, "stop").await.unwrap();
    assert_eq!(taps_on(&bridge).len(), 1);
    let a2 = t.action(&a_id, "start").await.unwrap();
    assert_eq!(a2["runtime"]["ip"].as_str(), Some(a_ip.as_str()));
    let r = t.exec(&a_id, probe).await.unwrap();
    assert_eq!(r["stdout"], "200", "{r}");

    // Deleting releases everything.
    for id in [&a_id, &b_id] {
        t.delete(id).await.unwrap();
    }
    assert!(taps_on(&bridge).is_empty());
}
