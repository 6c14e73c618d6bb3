//! End to end through the REST API with real microVMs (QEMU; TCG on hosts without a usable KVM).
//!
//! Booting costs seconds under TCG, so each test boots as few VMs as its subject needs and checks
//! many things on each.

use futures::StreamExt;
use platinum_testkit::{
    TestServer, named_processes_mentioning, poll_until_ok, processes_mentioning,
    sandbox_path as path,
};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// Reads an NDJSON stream until `exit`; returns (stdout, stderr, exit event, first event).
async fn read_ndjson(resp: reqwest::Response) -> (String, String, Value, Value) {
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let (mut out, mut err, mut buf) = (String::new(), String::new(), Vec::new());
    let mut first = Value::Null;
    while let Some(chunk) = stream.next().await {
        buf.extend_from_slice(&chunk.unwrap());
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let ev: Value = serde_json::from_slice(&line).unwrap();
            if first.is_null() {
                first = ev.clone();
            }
            match ev["type"].as_str().unwrap() {
                "stdout" => out.push_str(ev["data"].as_str().unwrap()),
                "stderr" => err.push_str(ev["data"].as_str().unwrap()),
                "exit" | "error" => return (out, err, ev, first),
                _ => {}
            }
        }
    }
    panic!("stream ended without exit; stdout so far: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandbox_lifecycle_exec_files_processes_and_cleanup() {
    let t = TestServer::start().await.unwrap();
    let s = t
        .create(json!({"env": {"GREETING": "hi"}, "metadata": {"suite": "e2e"}}))
        .await
        .unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["state"], "running");
    assert_eq!(id.len(), 20);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    );
    assert!(
        s["runtime"]["accel"] == "tcg" || s["runtime"]["accel"] == "kvm",
        "{s}"
    );
    let exec = |body: Value| t.req(Method::POST, &path(&id, "/exec")).json(&body);
    let files = |method: Method, op: &str, query: &[(&str, &str)]| {
        t.req(method, &path(&id, &format!("/files{op}")))
            .query(query)
    };

    // The classic first command.
    let r = t.exec(&id, "python3 -c 'print(1+1)'").await.unwrap();
    assert_eq!(
        (r["exit_code"].as_i64(), r["stdout"].as_str()),
        (Some(0), Some("2\n")),
        "{r}"
    );

    // argv form, sandbox env, per-exec env, cwd, user, exit codes, stderr.
    let body = json!({"command": ["sh", "-c", "echo $GREETING $X; pwd; id -un; echo oops >&2; exit 7"], "env": {"X": "there"}, "cwd": "/tmp"});
    let r = t.exec_with(&id, body).await.unwrap();
    assert_eq!(r["stdout"], "hi there\n/tmp\nuser\n");
    assert_eq!(
        (r["stderr"].as_str(), r["exit_code"].as_i64()),
        (Some("oops\n"), Some(7))
    );
    let r = t
        .exec_with(&id, json!({"command": "id -u", "user": "root"}))
        .await
        .unwrap();
    assert_eq!(r["stdout"], "0\n");

    // stdin text.
    let r = t
        .exec_with(&id, json!({"command": "tr a-z A-Z", "stdin": "shout"}))
        .await
        .unwrap();
    assert_eq!(r["stdout"], "SHOUT");

    // Timeout: killed, reported, with the output so far.
    let r = t
        .exec_with(
            &id,
            json!({"command": "echo started; sleep 30", "timeout_ms": 1500}),
        )
        .await
        .unwrap();
    assert_eq!(
        (r["timed_out"].as_bool(), r["stdout"].as_str()),
        (Some(true), Some("started\n")),
        "{r}"
    );
    assert!(r["duration_ms"].as_u64().unwrap() < 15_000);

    // Bad input inside the guest: typed errors, and the agent keeps serving.
    t.expect_error(
        exec(json!({"command": ["/no/such/binary"]})),
        400,
        "spawn_failed",
    )
    .await
    .unwrap();
    t.expect_error(
        exec(json!({"command": "true", "user": "nobody-here"})),
        400,
        "user_not_found",
    )
    .await
    .unwrap();
    let (st, e) = t
        .call(exec(json!({"command": "true", "cwd": "/does/not/exist"})))
        .await
        .unwrap();
    assert!(st == 400 || st == 404, "{st} {e}");

    // Files: relative paths resolve against /home/user; write, read back, list, stat.
    let e = t
        .write_file(&id, "notes/hello.txt", "hello file\n")
        .await
        .unwrap();
    assert_eq!(
        (e["path"].as_str(), e["owner"].as_str(), e["size"].as_u64()),
        (Some("/home/user/notes/hello.txt"), Some("user"), Some(11))
    );
    assert_eq!(
        t.read_file(&id, "/home/user/notes/hello.txt")
            .await
            .unwrap(),
        b"hello file\n"
    );
    let list = t
        .expect(files(Method::GET, "/list", &[("path", "notes")]), 200)
        .await
        .unwrap();
    assert_eq!(
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["hello.txt"]
    );
    let st = t
        .expect(files(Method::GET, "/stat", &[("path", "notes")]), 200)
        .await
        .unwrap();
    assert_eq!(st["type"], "dir");
    let mkdir = || {
        t.expect(
            t.req(Method::POST, &path(&id, "/files/mkdir"))
                .json(&json!({"path": "a/b/c"})),
            200,
        )
    };
    assert_eq!(mkdir().await.unwrap()["created"], true);
    assert_eq!(mkdir().await.unwrap()["created"], false);
    let moved = t
        .expect(
            t.req(Method::POST, &path(&id, "/files/move"))
                .json(&json!({"from": "notes/hello.txt", "to": "a/b/c/moved.txt"})),
            200,
        )
        .await
        .unwrap();
    assert_eq!(moved["path"], "/home/user/a/b/c/moved.txt");
    t.expect(
        t.req(Method::POST, &path(&id, "/files/chmod"))
            .json(&json!({"path": "a/b/c/moved.txt", "mode": "600"})),
        204,
    )
    .await
    .unwrap();
    let st = t
        .expect(
            files(Method::GET, "/stat", &[("path", "a/b/c/moved.txt")]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(st["permissions"], "-rw-------");
    let deep = t
        .expect(
            files(Method::GET, "/list", &[("path", "a"), ("depth", "3")]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(deep.as_array().unwrap().len(), 3, "{deep}");
    t.expect_error(
        files(Method::DELETE, "", &[("path", "a")]),
        409,
        "directory_not_empty",
    )
    .await
    .unwrap();
    t.expect(
        files(Method::DELETE, "", &[("path", "a"), ("recursive", "true")]),
        204,
    )
    .await
    .unwrap();
    t.expect_error(
        files(Method::GET, "/stat", &[("path", "a")]),
        404,
        "file_not_found",
    )
    .await
    .unwrap();
    t.expect_error(
        files(Method::PUT, "", &[("path", "/root/nope.txt")]).body("x"),
        403,
        "permission_denied",
    )
    .await
    .unwrap();
    t.expect_error(
        files(Method::GET, "", &[("path", "/etc")]),
        400,
        "is_a_directory",
    )
    .await
    .unwrap();

    // A 50 MB file, streamed both ways, checked by hash on both sides.
    let big: Vec<u8> = (0..50_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let digest = hex::encode(Sha256::digest(&big));
    let e = t.write_file(&id, "big.bin", big.clone()).await.unwrap();
    assert_eq!(e["size"].as_u64(), Some(50_000_000));
    let r = t
        .exec(&id, "sha256sum big.bin | cut -d' ' -f1")
        .await
        .unwrap();
    assert_eq!(r["stdout"].as_str().unwrap().trim(), digest);
    let bytes = t.read_file(&id, "big.bin").await.unwrap();
    assert_eq!(hex::encode(Sha256::digest(&bytes)), digest);

    // Oversized upload (the test server's limit is 64 MiB): refused, nothing left behind. Once
    // with a declared length, once streamed without one.
    let too_big = vec![0u8; 65 << 20];
    let huge = || files(Method::PUT, "", &[("path", "huge.bin")]);
    t.expect_error(huge().body(too_big.clone()), 413, "payload_too_large")
        .await
        .unwrap();
    let chunks = futures::stream::iter(
        too_big
            .chunks(1 << 20)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    t.expect_error(
        huge().body(reqwest::Body::wrap_stream(chunks)),
        413,
        "payload_too_large",
    )
    .await
    .unwrap();
    let r = t
        .exec(&id, "ls -A /home/user | grep -c huge || true")
        .await
        .unwrap();
    assert_eq!(r["stdout"], "0\n", "no partial upload may remain: {r}");

    // Streaming exec.
    let resp = t
        .req(Method::POST, &path(&id, "/exec/stream"))
        .json(&json!({"command": "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo err >&2; exit 4"}))
        .send()
        .await
        .unwrap();
    let (out, err, exit, first) = read_ndjson(resp).await;
    assert_eq!(first["type"], "started");
    assert_eq!(
        (out.as_str(), err.as_str(), exit["exit_code"].as_i64()),
        ("line1\nline2\nline3\n", "err\n", Some(4))
    );

    // Background process, then re-attach with replay; signal; process list.
    let bg = t
        .exec_with(&id, json!({"command": "echo first; sleep 1; echo second; sleep 1; echo third", "background": true}))
        .await
        .unwrap();
    let pid = bg["pid"].as_u64().unwrap();
    assert!(bg["exit_code"].is_null());
    let procs = t
        .expect(t.req(Method::GET, &path(&id, "/processes")), 200)
        .await
        .unwrap();
    assert!(
        procs
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["pid"].as_u64() == Some(pid) && p["running"] == true),
        "{procs}"
    );
    let output = |pid: u64| t.req(Method::GET, &path(&id, &format!("/processes/{pid}/output")));
    let resp = output(pid)
        .query(&[("replay", "true")])
        .send()
        .await
        .unwrap();
    let (out, _, exit, _) = read_ndjson(resp).await;
    assert_eq!(
        (out.as_str(), exit["exit_code"].as_i64()),
        ("first\nsecond\nthird\n", Some(0))
    );
    let bg = t
        .exec_with(&id, json!({"command": "sleep 300", "background": true}))
        .await
        .unwrap();
    let pid = bg["pid"].as_u64().unwrap();
    t.expect(
        t.req(
            Method::POST,
            &path(&id, &format!("/processes/{pid}/signal")),
        )
        .json(&json!({"signal": 15})),
        204,
    )
    .await
    .unwrap();
    let (_, _, exit, _) = read_ndjson(output(pid).send().await.unwrap()).await;
    assert_eq!(
        (exit["signal"].as_i64(), exit["exit_code"].as_i64()),
        (Some(15), Some(143))
    );
    t.expect_error(output(999999), 404, "process_not_found")
        .await
        .unwrap();

    // Pause: commands are refused with a typed conflict; resume: they work again.
    t.action(&id, "pause").await.unwrap();
    t.expect_error(exec(json!({"command": "true"})), 409, "invalid_state")
        .await
        .unwrap();
    t.action(&id, "resume").await.unwrap();
    assert_eq!(t.exec(&id, "echo back").await.unwrap()["stdout"], "back\n");

    // The guest clock is the host's, after resume and after code in the sandbox moved it: the
    // next health check (every 10 s) sets it back.
    let engine = &t.server().engine;
    let resumed = engine.clock_skew(&id).await.unwrap();
    assert!(resumed.guest_ahead.abs() < 100.0, "{resumed:?}");
    t.exec_with(
        &id,
        json!({"command": "date -s @$(( $(date +%s) - 5 ))", "user": "root"}),
    )
    .await
    .unwrap();
    let moved = engine.clock_skew(&id).await.unwrap();
    assert!(moved.guest_ahead < -4000.0, "{moved:?}");
    let corrected_by = Instant::now() + Duration::from_secs(30);
    loop {
        let skew = engine.clock_skew(&id).await.unwrap();
        if skew.guest_ahead.abs() < 100.0 {
            break;
        }
        assert!(Instant::now() < corrected_by, "never corrected: {skew:?}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // A service inside the sandbox, reached through the port proxy (relayed by the guest agent).
    t.write_file(&id, "site/index.html", "<h1>hi from the sandbox</h1>")
        .await
        .unwrap();
    t.exec_with(&id, json!({"command": "cd site && exec python3 -m http.server 8000 --bind 127.0.0.1", "background": true}))
        .await
        .unwrap();
    let page = poll_until_ok(
        || t.req(Method::GET, &path(&id, "/ports/8000/index.html")),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(page, "<h1>hi from the sandbox</h1>");
    t.expect_error(
        t.req(Method::GET, &path(&id, "/ports/8001/")),
        502,
        "port_not_open",
    )
    .await
    .unwrap();

    // Metrics and console.
    let m = t
        .expect(t.req(Method::GET, &path(&id, "/metrics")), 200)
        .await
        .unwrap();
    assert!(
        m["mem_total"].as_u64().unwrap() > 100 << 20 && m["disk_used"].as_u64().unwrap() > 0,
        "{m}"
    );
    let c = t
        .expect(t.req(Method::GET, &path(&id, "/console")), 200)
        .await
        .unwrap();
    assert!(c["text"].is_string());

    // Delete: nothing of the sandbox is left on the host.
    let dir = t.data_dir().join("sandboxes").join(&id);
    assert!(dir.exists());
    assert!(
        !processes_mentioning(&dir).is_empty(),
        "the VMM runs from the sandbox dir"
    );
    t.delete(&id).await.unwrap();
    assert!(!dir.exists(), "sandbox directory must be removed");
    assert!(
        processes_mentioning(&dir).is_empty(),
        "no process may survive the sandbox"
    );
    t.expect_error(t.req(Method::GET, &path(&id, "")), 404, "sandbox_not_found")
        .await
        .unwrap();
    t.expect(t.req(Method::DELETE, &path(&id, "")), 404)
        .await
        .unwrap();
    let events = std::fs::read_dir(t.data_dir().join("sandboxes"))
        .unwrap()
        .count();
    assert_eq!(events, 0, "no sandbox directories may remain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_requests_get_typed_errors() {
    let t = TestServer::start().await.unwrap();

    let (code, body) = t.call(t.anon(Method::GET, "/health")).await.unwrap();
    assert_eq!((code, body["status"].as_str()), (200, Some("ok")));

    for req in [
        t.anon(Method::GET, "/v1/sandboxes"),
        t.anon(Method::GET, "/v1/sandboxes").bearer_auth("pt_wrong"),
        t.anon(Method::GET, "/v1/sandboxes")
            .header("Authorization", "Basic dXNlcjo="),
        t.anon(Method::POST, "/v1/sandboxes").json(&json!({})),
    ] {
        t.expect_error(req, 401, "unauthorized").await.unwrap();
    }
    t.expect(
        t.anon(Method::GET, "/v1/sandboxes")
            .header("X-API-Key", &t.key),
        200,
    )
    .await
    .unwrap();

    // Unknown and malformed sandbox ids.
    for bad in [
        "/v1/sandboxes/abcdefghij0123456789",
        "/v1/sandboxes/..%2F..%2Fetc",
        "/v1/sandboxes/UPPER",
        "/v1/sandboxes/a.b",
    ] {
        t.expect_error(t.req(Method::GET, bad), 404, "sandbox_not_found")
            .await
            .unwrap_or_else(|e| panic!("{bad}: {e}"));
    }
    for bad in [
        "/v1/sandboxes/..%2F..%2Fetc/exec",
        "/v1/sandboxes/abcdefghij0123456789/exec",
    ] {
        t.expect_error(
            t.req(Method::POST, bad).json(&json!({"command": "true"})),
            404,
            "sandbox_not_found",
        )
        .await
        .unwrap_or_else(|e| panic!("{bad}: {e}"));
    }
    t.expect_error(
        t.req(Method::GET, "/v1/sandboxes/abc/exec"),
        405,
        "method_not_allowed",
    )
    .await
    .unwrap();

    // Malformed create requests and list queries.
    t.expect_error(
        t.req(Method::POST, "/v1/sandboxes")
            .header("Content-Type", "application/json")
            .body("{not json"),
        400,
        "invalid_request",
    )
    .await
    .unwrap();
    for body in [
        json!({"bogus": 1}),
        json!({"vcpus": 0}),
        json!({"memory_mib": 1}),
        json!({"env": {"A=B": "x"}}),
    ] {
        t.expect_error(
            t.req(Method::POST, "/v1/sandboxes").json(&body),
            400,
            "invalid_request",
        )
        .await
        .unwrap_or_else(|e| panic!("{body}: {e}"));
    }
    for tpl in ["no-such-template", "../../etc/passwd", "UPPER"] {
        t.expect_error(
            t.req(Method::POST, "/v1/sandboxes")
                .json(&json!({"template": tpl})),
            404,
            "template_not_found",
        )
        .await
        .unwrap_or_else(|e| panic!("{tpl}: {e}"));
    }
    for query in [("state", "bogus"), ("cursor", "!!!"), ("limit", "-1")] {
        t.expect_error(
            t.req(Method::GET, "/v1/sandboxes").query(&[query]),
            400,
            "invalid_request",
        )
        .await
        .unwrap_or_else(|e| panic!("{query:?}: {e}"));
    }
    t.expect_error(
        t.req(Method::GET, "/v1/nothing-here"),
        404,
        "route_not_found",
    )
    .await
    .unwrap();
    // Nothing of these requests may have created anything.
    let list = t
        .expect(t.req(Method::GET, "/v1/sandboxes"), 200)
        .await
        .unwrap();
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_vm_moves_its_sandbox_to_error_and_the_server_keeps_serving() {
    let t = TestServer::start().await.unwrap();
    let s = t.create(json!({})).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    let pid = s["runtime"]["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let s = t
        .wait_for(&id, Duration::from_secs(30), |s| s["state"] == "error")
        .await
        .unwrap();
    let reason = s["error"].as_str().unwrap();
    assert!(
        reason.contains("signal 9") && reason.contains("console"),
        "{reason}"
    );
    assert!(s["runtime"].is_null());
    // The server still serves, and the failed sandbox can still be deleted cleanly.
    t.expect_error(
        t.req(Method::POST, &path(&id, "/exec"))
            .json(&json!({"command": "true"})),
        409,
        "invalid_state",
    )
    .await
    .unwrap();
    let list = t
        .expect(
            t.req(Method::GET, "/v1/sandboxes")
                .query(&[("state", "error")]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(list["sandboxes"].as_array().unwrap().len(), 1);
    t.delete(&id).await.unwrap();
    assert!(!t.data_dir().join("sandboxes").join(&id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_creates_and_execs() {
    let t = TestServer::start().await.unwrap();
    let creates = (0..3).map(|i| t.create(json!({"metadata": {"n": i.to_string()}})));
    let sandboxes: Vec<Value> = futures::future::join_all(creates)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    let ids: Vec<String> = sandboxes
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        ids.iter().collect::<std::collections::HashSet<_>>().len(),
        3
    );
    // Many execs at once, spread over the sandboxes, each seeing its own sandbox.
    let execs = (0..12).map(|i| {
        let id = ids[i % 3].clone();
        let t = &t;
        async move {
            let r = t.exec(&id, &format!("echo {i} $(hostname)")).await.unwrap();
            assert_eq!(r["stdout"].as_str().unwrap(), format!("{i} {id}\n"));
        }
    });
    futures::future::join_all(execs).await;
    let page = t
        .expect(
            t.req(Method::GET, "/v1/sandboxes")
                .query(&[("metadata", "n=1")]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(page["sandboxes"].as_array().unwrap().len(), 1);
    let page = t
        .expect(
            t.req(Method::GET, "/v1/sandboxes").query(&[("limit", "2")]),
            200,
        )
        .await
        .unwrap();
    let cursor = page["next_cursor"].as_str().unwrap().to_string();
    let rest = t
        .expect(
            t.req(Method::GET, "/v1/sandboxes")
                .query(&[("limit", "2"), ("cursor", &cursor)]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(rest["sandboxes"].as_array().unwrap().len(), 1);
    assert!(rest["next_cursor"].is_null());
    futures::future::join_all(ids.iter().map(|id| async { t.delete(id).await.unwrap() })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stop_start_and_server_restart_keep_the_disk() {
    let t = TestServer::start().await.unwrap();
    let s = t.create(json!({"timeout_secs": 0})).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    t.write_file(&id, "keep.txt", "persisted").await.unwrap();
    let stopped = t.action(&id, "stop").await.unwrap();
    assert_eq!(stopped["state"], "stopped");
    let started = t.action(&id, "start").await.unwrap();
    assert_eq!(started["state"], "running");
    assert_eq!(
        t.exec(&id, "cat keep.txt").await.unwrap()["stdout"],
        "persisted"
    );

    // A graceful server restart stops sandboxes; they come back with `start`.
    let t = t
        .restart(|c| c.engine = platinum_testkit::test_engine_config())
        .await
        .unwrap();
    let s = t
        .expect(t.req(Method::GET, &path(&id, "")), 200)
        .await
        .unwrap();
    assert_eq!(s["state"], "stopped", "{s}");
    t.action(&id, "start").await.unwrap();
    assert_eq!(
        t.exec(&id, "cat keep.txt").await.unwrap()["stdout"],
        "persisted"
    );
    t.delete(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sandboxes_expire_at_their_timeout() {
    let t = TestServer::start().await.unwrap();
    let s = t.create(json!({"timeout_secs": 2})).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    let dir = t.data_dir().join("sandboxes").join(&id);
    t.wait_for(&id, Duration::from_secs(30), |s| {
        s["code"] == "sandbox_not_found"
    })
    .await
    .unwrap();
    assert!(!dir.exists());
    assert!(processes_mentioning(&dir).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn vsock_transport_through_vhost_device_vsock() {
    if platinum_hostagent::process::find_in_path("vhost-device-vsock").is_none()
        && !std::path::Path::new(&format!(
            "{}/.cargo/bin/vhost-device-vsock",
            std::env::var("HOME").unwrap_or_default()
        ))
        .exists()
    {
        panic!(
            "vhost-device-vsock is not installed (`cargo install vhost-device-vsock`); the vsock transport cannot be tested"
        );
    }
    let t = TestServer::start_with(|c| c.transport = platinum_hostagent::vmm::TransportKind::Vsock)
        .await
        .unwrap();
    let s = t.create(json!({})).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["runtime"]["transport"], "vsock");
    assert_eq!(
        t.exec(&id, "cat /proc/cmdline >/dev/null && echo via-vsock")
            .await
            .unwrap()["stdout"],
        "via-vsock\n"
    );
    let data = vec![7u8; 3 << 20];
    t.write_file(&id, "v.bin", data.clone()).await.unwrap();
    let got = t.read_file(&id, "v.bin").await.unwrap();
    assert_eq!(got.len(), data.len());
    let dir = t.data_dir().join("sandboxes").join(&id);
    let names: Vec<String> = named_processes_mentioning(&dir)
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    assert!(
        names.iter().any(|n| n.starts_with("qemu"))
            && names.iter().any(|n| n.starts_with("vhost-device")),
        "QEMU and vhost-device-vsock run for it: {names:?}"
    );
    t.delete(&id).await.unwrap();
    assert!(processes_mentioning(&dir).is_empty());
}
