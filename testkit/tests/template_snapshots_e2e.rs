//! Template ready snapshots with real VMs: the server builds the default template's ready
//! snapshot by itself; creates then restore it, and each restored sandbox is its own machine
//! (hostname, address, environment, random numbers, clock); `boot: cold` boots; a tampered ready
//! snapshot is refused, the create boots instead, and a new ready snapshot is built. Warm pools:
//! claims hand out running sandboxes with the caller's settings, pools refill, a pooled VM killed
//! from outside is replaced and never handed out, a restart leaks nothing, more creates at once
//! than the pool holds all succeed, a replaced ready snapshot drains and refills the pool, drain
//! and delete.

use platinum_testkit::{TestServer, test_engine_config, test_network};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn id(s: &Value) -> String {
    s["id"].as_str().unwrap().to_string()
}

/// Waits until the engine holds a ready snapshot other than `not`; returns its id.
async fn ready_snapshot(t: &TestServer, not: Option<&str>) -> String {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let ready = t.server().engine.ready_snapshots().await.unwrap();
        if let Some(s) = ready.iter().find(|s| Some(s.id.as_str()) != not) {
            return s.id.clone();
        }
        assert!(Instant::now() < deadline, "no ready snapshot was built");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Flips one byte in the middle of the snapshot's device state, as a disk error or an attacker
/// with access to the data directory would.
fn tamper(snapshot_dir: &std::path::Path) {
    use std::os::unix::fs::FileExt;
    let state = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(snapshot_dir.join("vmstate"))
        .unwrap();
    let at = state.metadata().unwrap().len() / 2;
    let mut byte = [0u8; 1];
    state.read_exact_at(&mut byte, at).unwrap();
    byte[0] ^= 0x40;
    state.write_all_at(&byte, at).unwrap();
}

/// The test server's settings with template ready snapshots on (as shipped) and `net`.
fn as_shipped(
    c: &mut platinum::server::ServerConfig,
    net: &platinum_hostagent::net::NetworkConfig,
) {
    c.network = Some(net.clone());
    c.engine = platinum_engine::EngineConfig {
        template_snapshots: true,
        ..test_engine_config()
    };
}

fn start_path(s: &Value) -> &str {
    s["runtime"]["start"]["path"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn creates_restore_the_ready_snapshot_and_claim_from_warm_pools() {
    let net = test_network();
    let t = TestServer::start_with(|c| as_shipped(c, &net))
        .await
        .unwrap();
    let ready = ready_snapshot(&t, None).await;
    let snap = t.server().engine.ready_snapshots().await.unwrap();
    assert_eq!(snap.len(), 1);
    assert!(
        snap[0]
            .name
            .as_deref()
            .is_some_and(|n| n.starts_with("template:base:2x512:")),
        "{:?}",
        snap[0].name
    );

    let a = t.create(json!({ "env": { "WHO": "a" } })).await.unwrap();
    let b = t.create(json!({ "env": { "WHO": "b" } })).await.unwrap();
    for s in [&a, &b] {
        assert_eq!(start_path(s), "template_snapshot", "{s}");
        assert_eq!(s["runtime"]["start"]["snapshot"], ready.as_str(), "{s}");
        assert!(s["runtime"]["start"]["verify_ms"].is_u64(), "{s}");
    }
    let (a_id, b_id) = (id(&a), id(&b));
    assert_eq!(t.out(&a_id, "hostname").await, a_id);
    assert_eq!(t.out(&b_id, "hostname").await, b_id);
    assert_eq!(t.out(&a_id, "echo $WHO").await, "a");
    assert_eq!(t.out(&b_id, "echo $WHO").await, "b");
    let ip = |s: &Value| s["runtime"]["ip"].as_str().unwrap_or_default().to_string();
    assert!(!ip(&a).is_empty() && ip(&a) != ip(&b), "{a} {b}");
    let addr = |id: String| {
        let t = &t;
        async move {
            t.out(&id, "ip -4 -o addr show eth0 | awk '{print $4}'")
                .await
        }
    };
    assert!(addr(a_id.clone()).await.starts_with(&ip(&a)));
    assert!(addr(b_id.clone()).await.starts_with(&ip(&b)));
    let random = "cat /proc/sys/kernel/random/uuid; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'; echo; python3 -c 'import os; print(os.urandom(16).hex())'";
    let (ra, rb) = (t.out(&a_id, random).await, t.out(&b_id, random).await);
    for (la, lb) in ra.lines().zip(rb.lines()) {
        assert_ne!(
            la, lb,
            "two sandboxes from one snapshot drew the same random numbers"
        );
    }
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    for s in [&a_id, &b_id] {
        let guest_now: i64 = t.out(s, "date +%s").await.parse().unwrap();
        assert!(
            (guest_now - host_now).abs() <= 5,
            "{s}: clock {guest_now} vs {host_now}"
        );
    }

    // Asked for a boot: booted.
    let cold = t.create(json!({ "boot": "cold" })).await.unwrap();
    assert_eq!(start_path(&cold), "boot", "{cold}");
    t.delete(&id(&cold)).await.unwrap();

    // A flipped byte in the ready snapshot: the create boots instead, the snapshot goes, and a
    // new one is built for the next create.
    let dir = t.data_dir().join("snapshots").join(&ready);
    tamper(&dir);
    let c = t.create(json!({})).await.unwrap();
    assert_eq!(start_path(&c), "boot", "{c}");
    assert_eq!(t.out(&id(&c), "echo ok").await, "ok");
    assert!(!dir.exists(), "the refused ready snapshot was kept");
    let rebuilt = ready_snapshot(&t, Some(&ready)).await;
    let d = t.create(json!({})).await.unwrap();
    assert_eq!(start_path(&d), "template_snapshot", "{d}");
    assert_eq!(d["runtime"]["start"]["snapshot"], rebuilt.as_str());
    assert_eq!(t.out(&id(&d), "hostname").await, id(&d));
    for s in [&a, &b, &c, &d] {
        t.delete(&id(s)).await.unwrap();
    }

    // The same server (and ready snapshot) goes on with warm pools.
    warm_pools(t, net).await;
}

/// Waits until pool `id` has `ready` sandboxes ready; returns it.
async fn pool_ready(t: &TestServer, id: &str, ready: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let p = t
            .expect(t.req(Method::GET, &format!("/v1/pools/{id}")), 200)
            .await
            .unwrap();
        if p["ready"].as_u64() == Some(ready) && p["starting"].as_u64() == Some(0) {
            return p;
        }
        assert!(
            Instant::now() < deadline,
            "pool never reached {ready} ready: {p}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Ids of the sandboxes a caller sees listed.
async fn listed_ids(t: &TestServer) -> Vec<String> {
    t.expect(t.req(Method::GET, "/v1/sandboxes"), 200)
        .await
        .unwrap()["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect()
}

/// Sandbox directories that are not one of `listed` (the pool's, here).
fn unlisted_sandboxes(t: &TestServer, listed: &[String]) -> Vec<String> {
    std::fs::read_dir(t.data_dir().join("sandboxes"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !listed.contains(n))
        .collect()
}

/// Warm pools on a server with a ready snapshot and no sandboxes.
async fn warm_pools(t: TestServer, net: platinum_hostagent::net::NetworkConfig) {
    // Bad input: a pool the host could never hold, an unknown template, a second pool of a kind.
    t.expect_error(
        t.req(Method::POST, "/v1/pools")
            .json(&json!({ "size": 100000 })),
        503,
        "capacity_exhausted",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::POST, "/v1/pools")
            .json(&json!({ "size": 1, "template": "nosuch" })),
        404,
        "template_not_found",
    )
    .await
    .unwrap();
    let pool = t
        .expect(
            t.req(Method::POST, "/v1/pools").json(&json!({ "size": 2 })),
            201,
        )
        .await
        .unwrap();
    let pool_id = id(&pool);
    t.expect_error(
        t.req(Method::POST, "/v1/pools").json(&json!({ "size": 1 })),
        409,
        "conflict",
    )
    .await
    .unwrap();
    pool_ready(&t, &pool_id, 2).await;
    let listed = listed_ids(&t).await;
    assert!(listed.is_empty(), "pooled sandboxes are listed: {listed:?}");
    // Not listed, but they count: the capacity shows them apart from callers' sandboxes.
    let capacity = t
        .expect(t.req(Method::GET, "/v1/capacity"), 200)
        .await
        .unwrap();
    assert_eq!(
        (
            &capacity["sandboxes"],
            &capacity["pooled"],
            &capacity["pooled_memory_mib"]
        ),
        (&json!(0), &json!(2), &json!(1024)),
        "{capacity}"
    );

    // Two claims: running at once, each its own machine with the caller's environment.
    let started = Instant::now();
    let a = t
        .create(json!({ "env": { "WHO": "a" }, "name": "claimed-a" }))
        .await
        .unwrap();
    eprintln!("warm claim over REST took {:?}", started.elapsed());
    let b = t.create(json!({ "env": { "WHO": "b" } })).await.unwrap();
    for s in [&a, &b] {
        assert_eq!(start_path(s), "pool", "{s}");
        assert_eq!(s["state"], "running");
    }
    assert_eq!(a["name"], "claimed-a");
    let (a_id, b_id) = (id(&a), id(&b));
    assert_eq!(t.out(&a_id, "echo $WHO").await, "a");
    assert_eq!(t.out(&b_id, "echo $WHO").await, "b");
    assert_eq!(t.out(&a_id, "hostname").await, a_id);
    assert_ne!(a["runtime"]["ip"], b["runtime"]["ip"]);
    let uuid = "cat /proc/sys/kernel/random/uuid";
    assert_ne!(t.out(&a_id, uuid).await, t.out(&b_id, uuid).await);
    let listed = listed_ids(&t).await;
    assert_eq!(listed.len(), 2);
    let capacity = t
        .expect(t.req(Method::GET, "/v1/capacity"), 200)
        .await
        .unwrap();
    assert_eq!(capacity["sandboxes"], 2, "{capacity}");

    // The pool refills; a pooled VM killed from outside is replaced, never handed out.
    pool_ready(&t, &pool_id, 2).await;
    let pooled = unlisted_sandboxes(&t, &listed);
    assert_eq!(pooled.len(), 2, "{pooled:?}");
    let victim = t.data_dir().join("sandboxes").join(&pooled[0]);
    for pid in platinum_testkit::processes_mentioning(&victim) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let c = t.create(json!({})).await.unwrap();
    assert_ne!(id(&c), pooled[0], "a dead pooled VM was handed out");
    assert_eq!(t.out(&id(&c), "echo ok").await, "ok");
    pool_ready(&t, &pool_id, 2).await;
    assert!(!victim.exists(), "the dead pooled sandbox was not removed");

    // Boot: cold and internet: false never claim.
    let cold = t.create(json!({ "boot": "cold" })).await.unwrap();
    assert_eq!(start_path(&cold), "boot");
    t.delete(&id(&cold)).await.unwrap();

    // A restart, with the pool in the server's configuration at another size: pooled sandboxes
    // stopped at shutdown are removed, the same pool is resized and refilled, nothing leaks.
    let t = t
        .restart(|c| {
            as_shipped(c, &net);
            c.warm_pools = vec![("base".into(), 3)];
        })
        .await
        .unwrap();
    let pools = t
        .expect(t.req(Method::GET, "/v1/pools"), 200)
        .await
        .unwrap();
    assert_eq!(pools["pools"].as_array().map(Vec::len), Some(1), "{pools}");
    assert_eq!(pools["pools"][0]["size"], 3, "{pools}");
    pool_ready(&t, &pool_id, 3).await;
    let listed = listed_ids(&t).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while unlisted_sandboxes(&t, &listed).len() != 3 {
        assert!(
            Instant::now() < deadline,
            "leftover pooled sandboxes: {:?}",
            unlisted_sandboxes(&t, &listed)
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // More creates at once than the pool holds: every one succeeds, as a claim or a restore of
    // its own, and each is its own machine.
    let creates = (0..5).map(|i| t.create(json!({ "env": { "N": i.to_string() } })));
    let made: Vec<Value> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let claimed = made.iter().filter(|s| start_path(s) == "pool").count();
    assert!(
        (1..=5).contains(&claimed),
        "no create claimed from the pool"
    );
    for (i, s) in made.iter().enumerate() {
        assert!(
            ["pool", "template_snapshot"].contains(&start_path(s)),
            "{s}"
        );
        assert_eq!(
            t.out(&id(s), "echo $N-$(hostname)").await,
            format!("{i}-{}", id(s))
        );
    }
    futures::future::join_all(
        made.iter()
            .map(|s| async { t.delete(&id(s)).await.unwrap() }),
    )
    .await;
    pool_ready(&t, &pool_id, 3).await;

    // The template's ready snapshot is replaced (here: refused after tampering, as after an
    // image rebuild it is superseded): the pooled sandboxes restored from the old one are
    // drained and the pool refills from the new one.
    let old_ready = ready_snapshot(&t, None).await;
    let listed = listed_ids(&t).await;
    let before = unlisted_sandboxes(&t, &listed);
    tamper(&t.data_dir().join("snapshots").join(&old_ready));
    // A claim makes the pool refill, and the refill's restore finds the tampering.
    let claim = t.create(json!({})).await.unwrap();
    assert_eq!(start_path(&claim), "pool", "{claim}");
    t.delete(&id(&claim)).await.unwrap();
    let new_ready = ready_snapshot(&t, Some(&old_ready)).await;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let listed = listed_ids(&t).await;
        let pooled = unlisted_sandboxes(&t, &listed);
        let pool = t
            .expect(t.req(Method::GET, &format!("/v1/pools/{pool_id}")), 200)
            .await
            .unwrap();
        if pool["ready"] == 3 && pooled.iter().all(|p| !before.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pooled sandboxes of the replaced ready snapshot {old_ready} stayed: {pooled:?} of \
             {before:?}; {pool}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let fresh = t.create(json!({})).await.unwrap();
    assert_eq!(start_path(&fresh), "pool", "{fresh}");
    assert_eq!(t.out(&id(&fresh), "hostname").await, id(&fresh));
    t.delete(&id(&fresh)).await.unwrap();
    assert_ne!(new_ready, old_ready);

    // Drain and delete.
    let drained = t
        .expect(
            t.req(Method::PATCH, &format!("/v1/pools/{pool_id}"))
                .json(&json!({ "size": 0 })),
            200,
        )
        .await
        .unwrap();
    assert_eq!(drained["size"], 0);
    pool_ready(&t, &pool_id, 0).await;
    t.expect(t.req(Method::DELETE, &format!("/v1/pools/{pool_id}")), 204)
        .await
        .unwrap();
    t.expect_error(
        t.req(Method::GET, &format!("/v1/pools/{pool_id}")),
        404,
        "pool_not_found",
    )
    .await
    .unwrap();
    let after = t.create(json!({})).await.unwrap();
    assert_eq!(start_path(&after), "template_snapshot");
}
