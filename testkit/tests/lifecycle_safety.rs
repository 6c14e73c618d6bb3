//! Lifecycle safety with real VMs: a create whose caller goes away leaves nothing behind, one
//! admission check (count, memory) covers create and start without a race between concurrent
//! requests, and the data directory keeps its secrets private.

use platinum_testkit::{TestServer, processes_mentioning};
use reqwest::Method;
use serde_json::{Value, json};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

async fn states(t: &TestServer) -> Vec<(String, String)> {
    let list = t
        .expect(t.req(Method::GET, "/v1/sandboxes"), 200)
        .await
        .unwrap();
    let items = list["sandboxes"]
        .as_array()
        .or_else(|| list.as_array())
        .cloned()
        .unwrap_or_default();
    items
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap_or_default().to_string(),
                s["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_create_leaves_no_vm_tap_or_creating_row() {
    let t = TestServer::start().await.unwrap();
    let sandboxes = t.data_dir().join("sandboxes");

    // The client gives up after 500 ms, long before the VM has booted.
    let gave_up = t
        .req(Method::POST, "/v1/sandboxes")
        .json(&json!({}))
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(gave_up.is_err(), "the create answered within 500 ms");

    // The boot finishes on its own task, sees nobody waiting, and removes the sandbox.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let live: Vec<_> = states(&t)
            .await
            .into_iter()
            .filter(|(_, s)| s != "deleted" && s != "error")
            .collect();
        let procs = processes_mentioning(&sandboxes);
        let dirs = std::fs::read_dir(&sandboxes)
            .map(|d| d.count())
            .unwrap_or(0);
        if live.is_empty() && procs.is_empty() && dirs == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still there after the caller left: sandboxes {live:?}, processes {procs:?}, {dirs} directories"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admission_is_one_check_without_races_for_create_and_start() {
    // Room for one 512 MiB sandbox, not two.
    let t = TestServer::start_with(|c| {
        c.engine.max_total_memory_mib = 800;
        c.engine.max_sandboxes = 4;
    })
    .await
    .unwrap();

    // Three concurrent creates: exactly one is admitted, the others get a typed 503.
    let creates = (0..3).map(|_| {
        t.call(
            t.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"memory_mib": 512})),
        )
    });
    let results: Vec<(u16, Value)> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let created: Vec<_> = results.iter().filter(|(s, _)| *s == 201).collect();
    assert_eq!(created.len(), 1, "{results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 503, "{body}");
        assert_eq!(body["code"], "capacity_exhausted", "{body}");
    }
    let first = created[0].1["id"].as_str().unwrap().to_string();

    // The device model does not run as root: QEMU dropped to a uid of its own.
    let pid = created[0].1["runtime"]["pid"].as_u64().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uids: Vec<u32> = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .unwrap()
        .split_whitespace()
        .map(|u| u.parse().unwrap())
        .collect();
    if nix::unistd::geteuid().is_root() {
        assert!(uids.iter().all(|u| *u != 0), "QEMU runs as {uids:?}");
    }

    // Secrets on disk are private: the data directory, the key file, the VM record with env.
    let data = t.data_dir();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("api-key")), 0o600);
    assert_eq!(mode(&data.join("sandboxes").join(&first)), 0o700);
    assert_eq!(
        mode(&data.join("sandboxes").join(&first).join("sandbox.json")),
        0o600
    );

    // A stopped sandbox frees its place; starting it again goes through the same check.
    t.action(&first, "stop").await.unwrap();
    let second = t.create(json!({"memory_mib": 512})).await.unwrap();
    let refused = t
        .expect_error(
            t.req(Method::POST, &format!("/v1/sandboxes/{first}/start")),
            503,
            "capacity_exhausted",
        )
        .await;
    assert!(refused.is_ok(), "{refused:?}");
    assert_eq!(
        t.expect(t.req(Method::GET, &format!("/v1/sandboxes/{first}")), 200)
            .await
            .unwrap()["state"],
        "stopped",
        "a refused start leaves the sandbox as it was"
    );
    t.delete(second["id"].as_str().unwrap()).await.unwrap();
    t.delete(&first).await.unwrap();
}

/// Whether the guest agent still runs a process whose command line contains `needle`.
async fn guest_runs(t: &TestServer, id: &str, needle: &str) -> bool {
    let path = format!("/v1/sandboxes/{id}/processes");
    let list = t.expect(t.req(Method::GET, &path), 200).await.unwrap();
    let processes = list.as_array().expect("a list of processes");
    processes
        .iter()
        .any(|p| p["running"] == true && p["command"].as_str().is_some_and(|c| c.contains(needle)))
}

/// Every front end's "run this to completion" goes through the engine's one run path, which
/// kills the command when its caller goes away: a REST `exec` and a Daytona `process/execute`
/// whose client disconnects leave no process behind in the guest. (MCP's cancel is checked by
/// `evals/mcp/conformance.py` in `mcp_e2e`; E2B's envd keeps a process whose stream is dropped,
/// as its SDK's `disconnect()` promises.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_that_goes_away_leaves_no_process_in_the_guest() {
    let t = TestServer::start().await.unwrap();
    let id = t.create(json!({})).await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let rest = t
        .req(Method::POST, &format!("/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "sleep 3001", "timeout_ms": 0}));
    let daytona = t
        .req(Method::POST, &format!("/toolbox/{id}/process/execute"))
        .json(&json!({"command": "sleep 3002"}));
    for (front_end, req, needle) in [
        ("REST exec", rest, "sleep 3001"),
        ("Daytona process/execute", daytona, "sleep 3002"),
    ] {
        let call = tokio::spawn(req.timeout(Duration::from_secs(60)).send());
        // Wait until the command runs, then drop the client's request.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !guest_runs(&t, &id, needle).await {
            assert!(
                Instant::now() < deadline,
                "{front_end}: the command never started"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        call.abort();
        let deadline = Instant::now() + Duration::from_secs(30);
        while guest_runs(&t, &id, needle).await {
            assert!(
                Instant::now() < deadline,
                "{front_end}: the command outlived its caller by 30 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    t.delete(&id).await.unwrap();
}
