//! The Daytona front end end to end over raw HTTP, with real microVMs: the exact status codes and
//! shapes the Daytona SDKs depend on (which the SDK flows in `evals/daytona` exercise through the
//! SDKs themselves), the multipart formats byte for byte, bad input and faults, and the engine's
//! lifecycle rules actually stopping, archiving and deleting sandboxes.
//!
//! One sandbox carries most assertions; VM boots are the expensive part under TCG.

use futures::StreamExt;
use platinum_engine::model::LifecycleRules;
use platinum_testkit::TestServer;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

fn tb(id: &str, rest: &str) -> String {
    format!("/toolbox/{id}{rest}")
}

/// A `multipart/form-data` body from (name, filename, bytes) parts.
fn multipart(boundary: &str, parts: &[(&str, Option<&str>, &[u8])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (name, filename, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match filename {
            Some(f) => body.extend_from_slice(
                format!("Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\nContent-Type: application/octet-stream\r\n\r\n").as_bytes(),
            ),
            None => body.extend_from_slice(format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes()),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

fn assert_daytona_error(body: &Value, status: u16) {
    assert_eq!(body["statusCode"], status, "{body}");
    for k in ["message", "path", "timestamp", "code", "error"] {
        assert!(body[k].is_string(), "{k} missing in {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn daytona_wire_shapes_status_codes_files_sessions_and_faults() {
    let t = TestServer::start().await.unwrap();

    // Create: 200 (never 201) with every field the Python client requires, typed.
    let s = t
        .expect(
            t.req(Method::POST, "/api/sandbox").json(&json!({
                "name": "wire-test", "env": {"GREETING": "hi"},
                "labels": {"code-toolbox-language": "python", "team": "a"}, "volumes": [],
                "networkAllowList": "203.0.113.0/24, 198.51.100.7/32"
            })),
            200,
        )
        .await
        .unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    for k in [
        "id",
        "organizationId",
        "name",
        "user",
        "target",
        "toolboxProxyUrl",
        "state",
        "snapshot",
        "createdAt",
    ] {
        assert!(s[k].is_string(), "{k}: {s}");
    }
    for k in ["cpu", "gpu", "memory", "disk"] {
        assert!(s[k].is_u64(), "{k} must be an integer: {s}");
    }
    for k in ["public", "networkBlockAll", "kvm"] {
        assert!(s[k].is_boolean(), "{k}: {s}");
    }
    assert_eq!(
        (s["state"].as_str(), s["name"].as_str()),
        (Some("started"), Some("wire-test"))
    );
    assert_eq!(s["env"]["GREETING"], "hi");
    assert_eq!(
        (
            s["autoStopInterval"].as_i64(),
            s["autoArchiveInterval"].as_i64(),
            s["autoDeleteInterval"].as_i64()
        ),
        (Some(15), Some(10080), Some(-1))
    );
    let proxy = s["toolboxProxyUrl"].as_str().unwrap();
    assert_eq!(proxy, format!("{}/toolbox", t.url), "no trailing slash");
    // The sandbox never expires on the native timeout: Daytona's rules govern it.
    let native = t
        .expect(t.req(Method::GET, &format!("/v1/sandboxes/{id}")), 200)
        .await
        .unwrap();
    assert!(native["expires_at"].is_null(), "{native}");
    assert_eq!(native["lifecycle"]["stop_after_idle_secs"], 900);
    // networkAllowList is the sandbox's egress policy: only those networks.
    let egress = t
        .expect(
            t.req(Method::GET, &format!("/v1/sandboxes/{id}/egress-policy")),
            200,
        )
        .await
        .unwrap();
    assert_eq!(
        egress,
        json!({"default": "deny", "allow": ["203.0.113.0/24", "198.51.100.7/32"], "deny": []})
    );
    // update_network_settings replaces it: names too; block all; open again.
    let settings = |body: Value| {
        t.req(Method::POST, &format!("/api/sandbox/{id}/network-settings"))
            .json(&body)
    };
    let policy = || t.req(Method::GET, &format!("/v1/sandboxes/{id}/egress-policy"));
    for (body, want, blocked) in [
        (
            json!({"domainAllowList": "api.example.com,*.example.org"}),
            json!({"default": "deny", "allow": ["api.example.com", "*.example.org"], "deny": []}),
            false,
        ),
        (
            json!({"networkBlockAll": true}),
            json!({"default": "deny", "allow": [], "deny": []}),
            true,
        ),
        (
            json!({"networkBlockAll": false}),
            json!({"default": "allow", "allow": [], "deny": []}),
            false,
        ),
    ] {
        let d = t.expect(settings(body.clone()), 200).await.unwrap();
        // (Without a sandbox network on the test host every sandbox reads as blocked.)
        if blocked {
            assert_eq!(d["networkBlockAll"], true, "{body}: {d}");
        }
        assert_eq!(t.expect(policy(), 200).await.unwrap(), want, "{body}");
    }
    for body in [
        json!({}),
        json!({"networkBlockAll": true, "networkAllowList": "203.0.113.0/24"}),
        json!({"domainAllowList": "localhost"}),
    ] {
        let e = t.expect(settings(body), 400).await.unwrap();
        assert_daytona_error(&e, 400);
    }
    for (body, status) in [
        (json!({"domainAllowList": "localhost"}), 400),
        (json!({"networkAllowList": "not-a-cidr"}), 400),
    ] {
        let e = t
            .expect(t.req(Method::POST, "/api/sandbox").json(&body), status)
            .await
            .unwrap();
        assert_daytona_error(&e, status);
    }

    // Get by name; a duplicate name is a conflict; list pages and filters by label.
    let by_name = t
        .expect(t.req(Method::GET, "/api/sandbox/wire-test"), 200)
        .await
        .unwrap();
    assert_eq!(by_name["id"], id.as_str());
    let e = t
        .expect(
            t.req(Method::POST, "/api/sandbox")
                .json(&json!({"name": "wire-test"})),
            409,
        )
        .await
        .unwrap();
    assert_daytona_error(&e, 409);
    let labels = serde_json::to_string(&json!({"team": "a"})).unwrap();
    let page = t
        .expect(
            t.req(Method::GET, "/api/sandbox")
                .query(&[("labels", labels.as_str()), ("states", "started")]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
    assert!(page["nextCursor"].is_null());
    let page = t
        .expect(
            t.req(Method::GET, "/api/sandbox")
                .query(&[("labels", r#"{"team":"b"}"#)]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]));

    // Execute: merged output, exit code as data, 408 on timeout, 200 with -1 when it cannot start.
    let execute = |body: Value| {
        t.req(Method::POST, &tb(&id, "/process/execute"))
            .json(&body)
    };
    let r = t
        .expect(
            execute(json!({"command": "echo hello; echo err 1>&2; exit 3"})),
            200,
        )
        .await
        .unwrap();
    assert_eq!(r, json!({"exitCode": 3, "result": "hello\nerr\n"}));
    let started = Instant::now();
    let e = t
        .expect_error(
            execute(json!({"command": "sleep 60", "timeout": 1})),
            408,
            "PROCESS_EXECUTION_TIMEOUT",
        )
        .await
        .unwrap();
    assert_eq!(e["source"], "DAYTONA_DAEMON", "{e}");
    assert!(started.elapsed() < Duration::from_secs(20));
    let r = t
        .expect(
            execute(json!({"command": "true", "cwd": "/no/such/dir"})),
            200,
        )
        .await
        .unwrap();
    assert_eq!(r["exitCode"], -1, "{r}");
    t.expect(
        execute(json!({"command": "true", "envs": {"1BAD": "x"}})),
        400,
    )
    .await
    .unwrap();
    let code_run = |code: &str, language: &str| {
        t.req(Method::POST, &tb(&id, "/process/code-run"))
            .json(&json!({"code": code, "language": language}))
    };
    let r = t
        .expect(code_run("print(2**10)", "python"), 200)
        .await
        .unwrap();
    assert_eq!(
        (r["exitCode"].as_i64(), r["result"].as_str()),
        (Some(0), Some("1024\n"))
    );
    let r = t
        .expect(
            code_run("console.log([1,2].map(x => x*2).join(','))", "javascript"),
            200,
        )
        .await
        .unwrap();
    assert_eq!(r["result"], "2,4\n");

    // Bulk upload: paths first then files (Python sync) and interleaved (TypeScript); the part's
    // filename is ignored; a failure is a 400 listing it, the other files still land.
    let b = "XyZboundary";
    let body = multipart(
        b,
        &[
            ("files[0].path", None, b"up/one.txt"),
            ("files[1].path", None, b"/proc/denied/two.txt"),
            ("files[0].file", Some("ignored-name"), b"one\n"),
            ("files[1].file", Some("two.txt"), b"two\n"),
            ("files[2].path", None, b"up/three.bin"),
            ("files[2].file", Some("three.bin"), &[0u8, 1, 2, 255]),
        ],
    );
    let upload = |content_type: &str| {
        t.req(Method::POST, &tb(&id, "/files/bulk-upload"))
            .header("content-type", content_type)
    };
    let r = t
        .expect(
            upload(&format!("multipart/form-data; boundary={b}")).body(body),
            400,
        )
        .await
        .unwrap();
    assert_eq!(r["errors"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .starts_with("/proc/denied/two.txt"),
        "{r}"
    );
    assert_eq!(
        r["files"],
        json!([{"path": "up/one.txt", "bytes": 4}, {"path": "up/three.bin", "bytes": 4}])
    );
    // Malformed multipart: a typed 400, not a hang or a 500.
    let e = t
        .expect(
            upload("multipart/form-data; boundary=nope").body("--nope\r\ngarbage"),
            400,
        )
        .await
        .unwrap();
    assert_daytona_error(&e, 400);
    t.expect(upload("application/json").body("{}"), 400)
        .await
        .unwrap();

    // Bulk download: one part per path in order, filename echoing the request exactly, an error
    // part for what is missing, and the closing boundary.
    let resp = t
        .req(Method::POST, &tb(&id, "/files/bulk-download"))
        .json(&json!({"paths": ["up/one.txt", "up/missing", "/home/user/up/three.bin"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let ctype = resp.headers()["content-type"].to_str().unwrap().to_string();
    let boundary = ctype.split("boundary=").nth(1).unwrap().to_string();
    let raw = resp.bytes().await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(
        text.ends_with(&format!("--{boundary}--\r\n")),
        "closing boundary: {text}"
    );
    let parts: Vec<&str> = text
        .split(&format!("--{boundary}"))
        .filter(|p| p.len() > 4)
        .collect();
    assert_eq!(parts.len(), 3, "{text}");
    assert!(
        parts[0].contains("name=\"file\"; filename=\"up/one.txt\"")
            && parts[0].ends_with("\r\n\r\none\n\r\n"),
        "{}",
        parts[0]
    );
    assert!(
        parts[1].contains("name=\"error\"; filename=\"up/missing\"")
            && parts[1].contains("\"FILE_NOT_FOUND\""),
        "{}",
        parts[1]
    );
    assert!(parts[2].contains("filename=\"/home/user/up/three.bin\""));
    assert!(
        raw.windows(6).any(|w| w == [0u8, 1, 2, 255, b'\r', b'\n']),
        "binary bytes intact"
    );

    // Files: status codes the generated client's maps need.
    t.expect(
        t.req(Method::POST, &tb(&id, "/files/folder"))
            .query(&[("path", "made/deep"), ("mode", "700")]),
        201,
    )
    .await
    .unwrap();
    let info = t
        .expect(
            t.req(Method::GET, &tb(&id, "/files/info"))
                .query(&[("path", "made/deep")]),
            200,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            info["isDir"].as_bool(),
            info["permissions"].as_str(),
            info["mode"].as_str()
        ),
        (Some(true), Some("0700"), Some("drwx------")),
        "{info}"
    );
    t.expect(
        t.req(Method::DELETE, &tb(&id, "/files"))
            .query(&[("path", "made")]),
        409,
    )
    .await
    .expect("a non-empty folder needs recursive");
    let resp = t
        .req(Method::DELETE, &tb(&id, "/files"))
        .query(&[("path", "made"), ("recursive", "true")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204);
    assert!(resp.bytes().await.unwrap().is_empty());
    t.expect_error(
        t.req(Method::GET, &tb(&id, "/files/info"))
            .query(&[("path", "made")]),
        404,
        "FILE_NOT_FOUND",
    )
    .await
    .unwrap();

    // Sessions: 201 create (no body), 409 duplicate, 200 sync, 202 async, follow as a stream.
    let create_session = || {
        t.req(Method::POST, &tb(&id, "/process/session"))
            .json(&json!({"sessionId": "s1"}))
    };
    t.expect(create_session(), 201).await.unwrap();
    t.expect(create_session(), 409).await.unwrap();
    let session_exec = |body: Value| {
        t.req(Method::POST, &tb(&id, "/process/session/s1/exec"))
            .json(&body)
    };
    let r = t
        .expect(
            session_exec(json!({"command": "cd /tmp; echo out; echo err >&2"})),
            200,
        )
        .await
        .unwrap();
    assert_eq!(
        (
            r["stdout"].as_str(),
            r["stderr"].as_str(),
            r["exitCode"].as_i64()
        ),
        (Some("out\n"), Some("err\n"), Some(0)),
        "{r}"
    );
    assert!(
        r["output"]
            .as_str()
            .unwrap()
            .contains("\u{1}\u{1}\u{1}out\n"),
        "{r}"
    );
    let a = t
        .expect(
            session_exec(json!({"command": "pwd; sleep 1; echo done", "runAsync": true})),
            202,
        )
        .await
        .unwrap();
    let cid = a["cmdId"].as_str().unwrap().to_string();
    assert_eq!(a.as_object().unwrap().len(), 1, "{a}");
    let resp = t
        .req(
            Method::GET,
            &tb(&id, &format!("/process/session/s1/command/{cid}/logs")),
        )
        .query(&[("follow", "true")])
        .send()
        .await
        .unwrap();
    let mut streamed = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        streamed.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(
        streamed, b"\x01\x01\x01/tmp\n\x01\x01\x01done\n",
        "follow ends when the command does"
    );
    let c = t
        .expect(
            t.req(
                Method::GET,
                &tb(&id, &format!("/process/session/s1/command/{cid}")),
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(
        c,
        json!({"id": cid, "command": "pwd; sleep 1; echo done", "exitCode": 0})
    );
    t.expect(
        t.req(Method::GET, &tb(&id, "/process/session/s1/command/nope")),
        404,
    )
    .await
    .unwrap();
    // Huge output is kept up to the limit without breaking the session.
    let r = t
        .expect(
            session_exec(
                json!({"command": "head -c 20000000 /dev/zero | tr '\\0' y; echo; echo after"}),
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(r["exitCode"], 0);
    assert_eq!(
        r["stdout"].as_str().unwrap().len(),
        10 << 20,
        "capped at the engine's output limit"
    );
    let r = t
        .expect(session_exec(json!({"command": "pwd"})), 200)
        .await
        .unwrap();
    assert_eq!(r["stdout"], "/tmp\n", "the session survives huge output");
    // A command that never ends, then the session is deleted: 204 and no process left behind.
    t.expect(
        session_exec(json!({"command": "sleep 3333", "runAsync": true})),
        202,
    )
    .await
    .unwrap();
    t.expect(t.req(Method::DELETE, &tb(&id, "/process/session/s1")), 204)
        .await
        .unwrap();
    let r = t
        .exec(&id, "pgrep -f 'sleep 333[3]' || echo none")
        .await
        .unwrap();
    assert_eq!(r["stdout"], "none\n", "{r}");

    // A client that gives up on a command that never ends leaves no process behind.
    let abandoned = execute(json!({"command": "sleep 700"}))
        .timeout(Duration::from_secs(3))
        .send()
        .await;
    assert!(
        abandoned.is_err(),
        "the request was expected to time out client-side"
    );
    let mut left = String::new();
    for _ in 0..20 {
        let r = t
            .exec(&id, "pgrep -f 'sleep 70[0]' || echo none")
            .await
            .unwrap();
        left = r["stdout"].as_str().unwrap().to_string();
        if left == "none\n" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(left, "none\n", "an abandoned command was left running");

    // Git error codes come out typed.
    t.expect_error(
        t.req(Method::GET, &tb(&id, "/git/status"))
            .query(&[("path", "/tmp")]),
        404,
        "GIT_REPO_NOT_FOUND",
    )
    .await
    .unwrap();

    // Auth: wrong or missing key, on both planes, Daytona-shaped; unknown routes are 404s.
    for path in ["/api/sandbox".to_string(), tb(&id, "/process/execute")] {
        let e = t
            .expect(t.anon(Method::GET, &path).bearer_auth("wrong"), 401)
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_daytona_error(&e, 401);
    }
    t.expect(
        t.req(Method::GET, "/api/socket.io/?EIO=4&transport=websocket"),
        404,
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::POST, &tb("nosuchsandbox", "/process/execute"))
            .json(&json!({"command": "true"})),
        404,
        "NOT_FOUND",
    )
    .await
    .unwrap();

    // Deleting the sandbox under a running command: the command's request ends with a typed
    // error, the delete answers 200 with state destroyed, and the sandbox is gone.
    let running = {
        let req = execute(json!({"command": "sleep 600"}));
        tokio::spawn(async move { req.send().await })
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let del = t
        .expect(t.req(Method::DELETE, &format!("/api/sandbox/{id}")), 200)
        .await
        .unwrap();
    assert_eq!(del["state"], "destroyed");
    let resp = tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(
        resp.status().is_server_error() || resp.status().is_client_error(),
        "{}",
        resp.status()
    );
    let body: Value = resp.json().await.unwrap();
    assert!(body["statusCode"].is_u64(), "{body}");
    t.expect(t.req(Method::GET, &format!("/api/sandbox/{id}")), 404)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lifecycle_rules_stop_archive_and_delete_idle_sandboxes() {
    let t = TestServer::start().await.unwrap();
    let s = t
        .expect(t.req(Method::POST, "/api/sandbox").json(&json!({})), 200)
        .await
        .unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    let engine = &t.server().engine;
    let state = || async {
        let (_, s) = t
            .call(t.req(Method::GET, &format!("/api/sandbox/{id}")))
            .await
            .unwrap();
        s["state"].as_str().unwrap_or("gone").to_string()
    };

    // Idle stop: a few seconds without activity stop it; activity holds it off.
    engine
        .set_lifecycle_rules(
            &id,
            LifecycleRules {
                stop_after_idle_secs: Some(4),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(2)).await;
        t.expect(
            t.req(Method::POST, &tb(&id, "/process/execute"))
                .json(&json!({"command": "true"})),
            200,
        )
        .await
        .unwrap();
    }
    assert_eq!(state().await, "started", "activity keeps it running");
    let idle = Instant::now();
    while state().await != "stopped" {
        assert!(
            idle.elapsed() < Duration::from_secs(60),
            "not stopped after idling"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        idle.elapsed() >= Duration::from_secs(3),
        "stopped too early: {:?}",
        idle.elapsed()
    );

    // Archive after time stopped, then delete.
    engine
        .set_lifecycle_rules(
            &id,
            LifecycleRules {
                archive_after_stopped_secs: Some(1),
                delete_after_stopped_secs: Some(6),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    while state().await != "archived" {
        assert!(t0.elapsed() < Duration::from_secs(30), "not archived");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    while state().await != "gone" {
        assert!(t0.elapsed() < Duration::from_secs(60), "not deleted");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let events = engine.sandbox_events(&id).await.unwrap_err();
    assert_eq!(events.code(), platinum_engine::ErrorCode::SandboxNotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_control_plane_input_gets_typed_daytona_errors_without_booting() {
    let t = TestServer::start().await.unwrap();
    let cases = [
        // An image this host cannot build on, and local files (which need object storage).
        (
            json!({"buildInfo": {"dockerfileContent": "FROM alpine:3.20\n"}}),
            400,
        ),
        (
            json!({"buildInfo": {"dockerfileContent": "FROM debian:12\n", "contextHashes": ["x"]}}),
            400,
        ),
        (
            json!({"buildInfo": {"dockerfileContent": "FROM debian:12\nONBUILD RUN x\n"}}),
            400,
        ),
        (json!({"snapshot": "no-such-template"}), 404),
        (json!({"gpu": 1}), 400),
        (
            json!({"volumes": [{"volumeId": "v", "mountPath": "/data"}]}),
            404,
        ),
        (json!({"autoStopInterval": -5}), 400),
        (json!({"name": "bad name!"}), 400),
        (json!({"labels": {"platinum.daytona/public": "true"}}), 400),
        (json!({"cpu": "2"}), 400),
    ];
    for (body, status) in cases {
        let e = t
            .expect(t.req(Method::POST, "/api/sandbox").json(&body), status)
            .await
            .unwrap_or_else(|e| panic!("{body}: {e}"));
        assert_daytona_error(&e, status);
    }
    t.expect(
        t.req(Method::POST, "/api/sandbox")
            .header("content-type", "application/json")
            .body("{not json"),
        400,
    )
    .await
    .unwrap();
    t.expect(
        t.req(Method::POST, "/api/sandbox/whatever/autostop/abc"),
        400,
    )
    .await
    .unwrap();
    t.expect(
        t.req(Method::POST, "/api/sandbox/whatever/resize")
            .json(&json!({"cpu": 4})),
        501,
    )
    .await
    .unwrap();
    let snaps = t
        .expect(t.req(Method::GET, "/api/snapshots"), 200)
        .await
        .unwrap();
    assert!(
        snaps["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "base" && s["state"] == "active"),
        "{snaps}"
    );
    assert_eq!(
        t.expect(t.req(Method::GET, "/api/volumes"), 200)
            .await
            .unwrap(),
        json!([])
    );
    t.expect(
        t.req(Method::POST, "/api/volumes")
            .json(&json!({"name": "bad name"})),
        400,
    )
    .await
    .unwrap();
    assert!(
        t.server()
            .engine
            .list_sandboxes(Default::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "nothing was created"
    );
}

/// A WebSocket upgrade request (enough for the server to answer 101 or refuse).
fn ws_upgrade(t: &TestServer, path: &str) -> reqwest::RequestBuilder {
    t.anon(Method::GET, path)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Sec-WebSocket-Protocol", "X-Daytona-Pty-Exit-Control")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn preview_tokens_are_scoped_and_revocations_survive_restarts() {
    let t = TestServer::start().await.unwrap();
    let s = t
        .expect(t.req(Method::POST, "/api/sandbox").json(&json!({})), 200)
        .await
        .unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    let link = |port: u16| {
        t.expect(
            t.req(
                Method::GET,
                &format!("/api/sandbox/{id}/ports/{port}/preview-url"),
            ),
            200,
        )
    };
    let app = link(8000).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let toolbox = link(1).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(app, toolbox, "preview tokens are per port");

    // A preview token never runs commands or reads files, whichever port it is for.
    for token in [&app, &toolbox] {
        let q = format!("?DAYTONA_SANDBOX_AUTH_KEY={token}");
        let exec = t
            .anon(Method::POST, &tb(&id, &format!("/process/execute{q}")))
            .json(&json!({"command": "id"}));
        let body = t.expect(exec, 401).await.unwrap();
        assert_daytona_error(&body, 401);
        t.expect(
            t.anon(Method::GET, &tb(&id, &format!("/files{q}&path=/"))),
            401,
        )
        .await
        .unwrap();
        t.expect(
            t.anon(Method::POST, &tb(&id, "/process/execute"))
                .header("X-Daytona-Preview-Token", token.as_str())
                .json(&json!({"command": "id"})),
            401,
        )
        .await
        .unwrap();
    }
    // The toolbox token opens the WebSocket upgrades browser SDKs make; an app port's does not.
    let pty = |token: &str| {
        ws_upgrade(
            &t,
            &tb(
                &id,
                &format!(
                    "/process/pty/create-connect?id=p1&cols=80&rows=24&DAYTONA_SANDBOX_AUTH_KEY={token}"
                ),
            ),
        )
    };
    assert_eq!(pty(&app).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(pty(&toolbox).send().await.unwrap().status().as_u16(), 101);

    // Previews: each port's own token only (nothing listens on 8000: past auth means 502).
    let preview = |port: u16, token: &str| {
        t.anon(Method::GET, &format!("/preview/{id}/{port}/"))
            .header("X-Daytona-Preview-Token", token)
    };
    assert_eq!(t.call(preview(8000, &toolbox)).await.unwrap().0, 401);
    assert_eq!(t.call(preview(8001, &app)).await.unwrap().0, 401);
    assert_eq!(t.call(preview(8000, &app)).await.unwrap().0, 502);

    // Signed links: a revoked one is refused, also after a restart; forged revocations are
    // not stored; an unrevoked one and the preview tokens stay valid across the restart.
    let signed = |port: u16| {
        t.expect(
            t.req(
                Method::GET,
                &format!("/api/sandbox/{id}/ports/{port}/signed-preview-url?expiresInSeconds=600"),
            ),
            200,
        )
    };
    let revoked = signed(8000).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let kept = signed(8000).await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let open = |token: &str| t.anon(Method::GET, &format!("/preview/s/{token}/"));
    assert_eq!(t.call(open(&revoked)).await.unwrap().0, 502);
    let expire = |port: u16, token: &str| {
        t.req(
            Method::POST,
            &format!("/api/sandbox/{id}/ports/{port}/signed-preview-url/{token}/expire"),
        )
    };
    t.expect(expire(8000, "forged.token"), 200).await.unwrap();
    t.expect(expire(8001, &revoked), 200).await.unwrap();
    let engine = t.server().engine.clone();
    assert_eq!(
        engine.revoked_token_count(),
        0,
        "forged tokens and other links' tokens are not stored"
    );
    t.expect(expire(8000, &revoked), 200).await.unwrap();
    assert_eq!(engine.revoked_token_count(), 1);
    drop(engine);
    assert_eq!(t.call(open(&revoked)).await.unwrap().0, 401);
    assert_eq!(t.call(open(&kept)).await.unwrap().0, 502);

    let t = t.restart(|_| {}).await.unwrap();
    let open = |token: &str| t.anon(Method::GET, &format!("/preview/s/{token}/"));
    assert_eq!(
        t.call(open(&revoked)).await.unwrap().0,
        401,
        "the revocation survives the restart"
    );
    // The sandbox is stopped now: a link that still opens gets past auth to a non-401.
    let (status, body) = t.call(open(&kept)).await.unwrap();
    assert!(
        status != 401,
        "the secret survives the restart: {status} {body}"
    );
    let again = t
        .expect(
            t.req(
                Method::GET,
                &format!("/api/sandbox/{id}/ports/8000/preview-url"),
            ),
            200,
        )
        .await
        .unwrap();
    assert_eq!(again["token"], app.as_str(), "preview tokens survive too");
    assert_eq!(t.server().engine.revoked_token_count(), 1);
}
