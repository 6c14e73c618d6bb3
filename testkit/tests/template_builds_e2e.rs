//! Custom templates with real VMs, through the native API: files uploaded by content hash, a
//! build with copy, run (as root and as the user), env, workdir and a start command with a
//! ready check, followed as NDJSON; sandboxes of the template restore its ready snapshot with the
//! server already answering, and start it again after a stop; an identical rebuild runs nothing; a changed last step runs only
//! that step; a failing step, a step that never ends, an unknown base, a second build of the
//! same template at once, and deleting a template in use all get clear answers and leave the
//! template as it was. Images from an OCI registry (a real one started on loopback) are pulled,
//! their layers applied with whiteouts, built on with busybox's shell only, and imported once;
//! an image the registry does not have fails the build, naming it.

use platinum_testkit::registry::{TEST_IMAGE_OS, TestRegistry};
use platinum_testkit::{TestServer, test_engine_config, test_network};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

/// A gzip'd tar of `site/index.html` and `bin/hello`, and its SHA-256.
fn archive(dir: &std::path::Path) -> (Vec<u8>, String) {
    let src = dir.join("ctx");
    std::fs::create_dir_all(src.join("site")).unwrap();
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("site/index.html"), "<h1>platinum template</h1>\n").unwrap();
    std::fs::write(
        src.join("bin/hello"),
        "#!/bin/sh\necho hello from the template\n",
    )
    .unwrap();
    let tar = dir.join("ctx.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .args(["site", "bin"])
        .status()
        .unwrap();
    assert!(status.success());
    let bytes = std::fs::read(&tar).unwrap();
    let key = hex::encode(Sha256::digest(&bytes));
    (bytes, key)
}

/// Follows a build's log (NDJSON) to its end; returns the lines and the final build.
async fn follow(t: &TestServer, build: &str) -> (Vec<Value>, Value) {
    let resp = t
        .req(Method::GET, &format!("/v1/template-builds/{build}/logs"))
        .query(&[("follow", "true")])
        .timeout(Duration::from_secs(900))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    let mut lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = lines.pop().expect("a last line");
    let build = last["build"].clone();
    assert!(build.is_object(), "the stream ends with the build: {last}");
    (lines, build)
}

async fn build(t: &TestServer, req: Value) -> Value {
    let started = t
        .expect(t.req(Method::POST, "/v1/templates").json(&req), 202)
        .await
        .unwrap();
    assert_eq!(started["status"], "building", "{started}");
    let (lines, done) = follow(t, started["id"].as_str().unwrap()).await;
    let text: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    eprintln!("build {}:\n  {}", started["id"], text.join("\n  "));
    done
}

/// The log of finished build `build`, as text.
async fn build_log(t: &TestServer, build: &Value) -> String {
    let id = build["id"].as_str().unwrap();
    t.expect(
        t.req(Method::GET, &format!("/v1/template-builds/{id}/logs")),
        200,
    )
    .await
    .unwrap()
    .to_string()
}

fn steps(last: &str, files: &str) -> Value {
    json!([
        { "type": "copy", "files": files, "src": "site", "dest": "/srv/site/", "user": "user" },
        { "type": "copy", "files": files, "dest": "/opt/ctx" },
        { "type": "copy", "files": files, "src": "bin/hello", "dest": "/usr/local/bin/hello", "mode": 0o755 },
        { "type": "env", "vars": { "GREETING": "hi from env" } },
        { "type": "run", "command": "echo \"$GREETING\" > /etc/greeting && id -un > /etc/built-by", "user": "root" },
        { "type": "workdir", "path": "/srv/app" },
        { "type": "run", "command": "id -un > whoami && pwd > where" },
        { "type": "run", "command": last },
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn builds_cache_layers_start_commands_and_refuse_bad_input() {
    let net = test_network();
    let t = TestServer::start_with(|c| {
        c.network = Some(net.clone());
        c.engine = platinum_engine::EngineConfig {
            template_snapshots: true,
            max_upload_bytes: 1 << 20,
            ..test_engine_config()
        };
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (tar, key) = archive(tmp.path());

    // Uploads: checked against their name, bounded, and findable.
    let files = |k: &str| format!("/v1/template-files/{k}");
    t.expect(t.req(Method::HEAD, &files(&key)), 404)
        .await
        .unwrap();
    let wrong = "0".repeat(64);
    t.expect_error(
        t.req(Method::PUT, &files(&wrong)).body(tar.clone()),
        400,
        "invalid_request",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::PUT, &files(&wrong)).body(vec![7u8; 2 << 20]),
        413,
        "payload_too_large",
    )
    .await
    .unwrap();
    let up = t
        .expect(t.req(Method::PUT, &files(&key)).body(tar.clone()), 201)
        .await
        .unwrap();
    assert_eq!(up["size"], tar.len());
    t.expect(t.req(Method::HEAD, &files(&key)), 200)
        .await
        .unwrap();

    // Bad requests are refused before anything starts.
    let bad = |body: Value, status: u16, code: &'static str| {
        let t = &t;
        async move {
            t.expect_error(
                t.req(Method::POST, "/v1/templates").json(&body),
                status,
                code,
            )
            .await
            .unwrap()
        }
    };
    let e = bad(
        json!({ "name": "web", "from_image": "Not An Image!" }),
        400,
        "invalid_request",
    )
    .await;
    assert!(
        e["message"].as_str().unwrap().contains("Not An Image!"),
        "{e}"
    );
    bad(
        json!({ "name": "web", "registry_auth": { "username": "u", "password": "p" } }),
        400,
        "invalid_request",
    )
    .await;
    bad(json!({ "name": "base" }), 400, "invalid_request").await;
    bad(json!({ "name": "Web" }), 400, "invalid_request").await;
    bad(
        json!({ "name": "web", "from_template": "nope" }),
        404,
        "template_not_found",
    )
    .await;
    let e = bad(
        json!({ "name": "web", "steps": [{ "type": "copy", "files": wrong, "dest": "/x" }] }),
        400,
        "invalid_request",
    )
    .await;
    assert!(e["message"].as_str().unwrap().contains("upload"), "{e}");
    bad(
        json!({ "name": "web", "steps": [{ "type": "run", "command": "" }] }),
        400,
        "invalid_request",
    )
    .await;
    bad(
        json!({ "name": "web", "steps": [{ "type": "env", "vars": { "1X": "y" } }] }),
        400,
        "invalid_request",
    )
    .await;
    t.expect_error(
        t.req(Method::DELETE, "/v1/templates/base"),
        400,
        "invalid_request",
    )
    .await
    .unwrap();

    // The first build runs every step and ends with the server ready.
    let web = json!({
        "name": "web",
        "from_image": "python:3.11",
        "steps": steps("echo v1 > version.txt", &key),
        "start_cmd": "python3 -m http.server 8080 --bind 127.0.0.1 --directory /srv/site",
        "ready_cmd": "curl -sf http://127.0.0.1:8080/index.html",
        "memory_mib": 512,
    });
    let started = Instant::now();
    let first = build(&t, web.clone()).await;
    let cold = started.elapsed();
    assert_eq!(first["status"], "ready", "{first}");
    assert_eq!(
        (first["cached_steps"].as_u64(), first["run_steps"].as_u64()),
        (Some(0), Some(7)),
        "{first}"
    );
    let tpl = t
        .expect(t.req(Method::GET, "/v1/templates/web"), 200)
        .await
        .unwrap();
    assert_eq!(tpl["builtin"], false);
    assert_eq!(tpl["custom"]["base"], "base");
    assert_eq!(tpl["custom"]["build_count"], 1);
    let list = t
        .expect(t.req(Method::GET, "/v1/templates"), 200)
        .await
        .unwrap();
    let names: Vec<&str> = list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert!(names.contains(&"base") && names.contains(&"web"), "{list}");

    // Its sandboxes restore the ready snapshot: files, env, build results, the server running.
    let s = t.create(json!({ "template": "web" })).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(s["runtime"]["start"]["path"], "template_snapshot", "{s}");
    assert_eq!(
        t.out(&id, "curl -sf http://127.0.0.1:8080/index.html")
            .await,
        "<h1>platinum template</h1>"
    );
    assert_eq!(t.out(&id, "stat -c %U /srv/site/index.html").await, "user");
    assert_eq!(t.out(&id, "hello").await, "hello from the template");
    assert_eq!(
        t.out(&id, "stat -c '%U %a' /opt/ctx && ls /opt/ctx").await,
        "root 755\nbin\nsite",
        "the whole upload lands in a destination made as Docker makes it"
    );
    assert_eq!(
        t.out(&id, "cat /etc/greeting /etc/built-by").await,
        "hi from env\nroot"
    );
    assert_eq!(
        t.out(
            &id,
            "cat /srv/app/whoami /srv/app/where /srv/app/version.txt"
        )
        .await,
        "user\n/srv/app\nv1"
    );
    assert_eq!(t.out(&id, "echo $GREETING").await, "hi from env");
    assert_eq!(
        t.out(&id, "pwd").await,
        "/srv/app",
        "commands start in the template's workdir"
    );

    // Stopped and started again (a cold boot from its disk), it runs its start command again.
    t.action(&id, "stop").await.unwrap();
    t.action(&id, "start").await.unwrap();
    assert_eq!(
        t.out(&id, "curl -sf http://127.0.0.1:8080/index.html")
            .await,
        "<h1>platinum template</h1>"
    );

    // A template in use cannot be deleted.
    t.expect_error(t.req(Method::DELETE, "/v1/templates/web"), 409, "conflict")
        .await
        .unwrap();

    // The same build again: everything from the cache, no VM started, quick.
    let started = Instant::now();
    let again = build(&t, web.clone()).await;
    let cached = started.elapsed();
    assert_eq!(again["status"], "ready", "{again}");
    assert_eq!(
        (again["cached_steps"].as_u64(), again["run_steps"].as_u64()),
        (Some(8), Some(0)),
        "{again}"
    );
    eprintln!("cold build {cold:.1?}, cached build {cached:.1?}");

    // A changed last step runs that step alone.
    let mut changed = web.clone();
    changed["steps"] = steps("echo v2 > version.txt", &key);
    let third = build(&t, changed).await;
    assert_eq!(
        (third["cached_steps"].as_u64(), third["run_steps"].as_u64()),
        (Some(7), Some(1)),
        "{third}"
    );
    let s2 = t.create(json!({ "template": "web" })).await.unwrap();
    let id2 = s2["id"].as_str().unwrap().to_string();
    assert_eq!(t.out(&id2, "cat /srv/app/version.txt").await, "v2");
    assert_eq!(
        t.out(&id, "cat /srv/app/version.txt").await,
        "v1",
        "the older sandbox keeps its disk"
    );

    // A failing step: its command, exit code and last lines; the template stays as it was.
    let failed = build(
        &t,
        json!({ "name": "web", "steps": [
            { "type": "run", "command": "echo about to fail; echo on stderr >&2; exit 3" }
        ] }),
    )
    .await;
    assert_eq!(failed["status"], "error", "{failed}");
    let f = &failed["failure"];
    assert_eq!(
        (f["step"].as_u64(), f["exit_code"].as_i64()),
        (Some(1), Some(3)),
        "{failed}"
    );
    let lines: Vec<&str> = f["last_output"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert_eq!(lines, ["about to fail", "on stderr"], "{failed}");
    let tpl = t
        .expect(t.req(Method::GET, "/v1/templates/web"), 200)
        .await
        .unwrap();
    assert_eq!(
        tpl["custom"]["build_id"], third["id"],
        "a failed build changes nothing"
    );

    // A step that never ends is stopped at the build's timeout; meanwhile a second build of the
    // same template is refused.
    let slow = t
        .expect(
            t.req(Method::POST, "/v1/templates").json(&json!({
                "name": "slow",
                "timeout_secs": 30,
                "steps": [{ "type": "run", "command": "sleep 600" }],
            })),
            202,
        )
        .await
        .unwrap();
    t.expect_error(
        t.req(Method::POST, "/v1/templates")
            .json(&json!({ "name": "slow" })),
        409,
        "conflict",
    )
    .await
    .unwrap();
    let (_, slow) = follow(&t, slow["id"].as_str().unwrap()).await;
    assert_eq!(slow["status"], "error", "{slow}");
    assert!(
        slow["failure"]["message"]
            .as_str()
            .unwrap()
            .contains("timeout"),
        "{slow}"
    );
    t.expect_error(
        t.req(Method::GET, "/v1/templates/slow"),
        404,
        "template_not_found",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::GET, "/v1/template-builds/bldnope"),
        404,
        "build_not_found",
    )
    .await
    .unwrap();

    // Once nothing uses it, the template goes, with its ready snapshots.
    t.delete(&id).await.unwrap();
    t.delete(&id2).await.unwrap();
    t.expect(t.req(Method::DELETE, "/v1/templates/web"), 204)
        .await
        .unwrap();
    t.expect_error(
        t.req(Method::POST, "/v1/sandboxes")
            .json(&json!({ "template": "web" })),
        404,
        "template_not_found",
    )
    .await
    .unwrap();
    let left = t.server().engine.ready_snapshots().await.unwrap();
    assert!(
        left.iter()
            .all(|s| !s.name.as_deref().unwrap_or("").starts_with("template:web:")),
        "{left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn images_from_a_registry_are_pulled_unpacked_and_built_on() {
    let registry = TestRegistry::start().await.unwrap();
    let image = registry
        .push_busybox("platinum-test/busybox", "1")
        .await
        .unwrap();
    let secret = "s3cret-registry-password";
    let private = TestRegistry::start_private("builder", secret)
        .await
        .unwrap();
    let net = test_network();
    let t = TestServer::start_with(|c| {
        c.network = Some(net.clone());
        c.insecure_registries = vec![registry.addr.clone(), private.addr.clone()];
        c.engine = platinum_engine::EngineConfig {
            template_snapshots: true,
            ..test_engine_config()
        };
    })
    .await
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let (tar, key) = archive(tmp.path());
    t.expect(
        t.req(Method::PUT, &format!("/v1/template-files/{key}"))
            .body(tar),
        201,
    )
    .await
    .unwrap();

    // Busybox has no bash, no apt and no `user`: the build still copies, runs and serves.
    let req = json!({
        "name": "bb",
        "from_image": image,
        "steps": [
            { "type": "copy", "files": key, "src": "site", "dest": "/srv/site/", "user": "user" },
            { "type": "run", "command": "echo \"$GREETING\" > /etc/greeting && pwd > /etc/built-in", "user": "root" },
            { "type": "user", "name": "root" },
        ],
        "start_cmd": "httpd -f -p 8080 -h /srv/site",
        "ready_cmd": "wget -q -O /dev/null http://127.0.0.1:8080/index.html",
    });
    let first = Instant::now();
    let done = build(&t, req.clone()).await;
    assert_eq!(done["status"], "ready", "{done}");
    assert_eq!(done["run_steps"], 2, "{done}");
    eprintln!("busybox image: pulled and built in {:?}", first.elapsed());

    let s = t.create(json!({ "template": "bb" })).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    assert_eq!(t.out(&id, "cat /etc/os-release").await, TEST_IMAGE_OS);
    assert_eq!(
        t.out(
            &id,
            "test ! -e /etc/gone && test ! -e /opt/old && cat /opt/new"
        )
        .await,
        "new in layer two",
        "the second layer's whiteout and opaque directory apply"
    );
    assert_eq!(
        t.out(&id, "cat /etc/greeting").await,
        "hello from the image"
    );
    assert_eq!(t.out(&id, "cat /etc/built-in").await, "/opt");
    // The template's last `user` step is its sandboxes' default user; `user` was added.
    assert_eq!(
        t.out(
            &id,
            "echo \"$GREETING\"; pwd; id -un; grep -c '^user:' /etc/passwd"
        )
        .await,
        "hello from the image\n/opt\nroot\n1"
    );
    assert_eq!(
        t.out(&id, "wget -q -O- http://127.0.0.1:8080/index.html")
            .await,
        "<h1>platinum template</h1>",
        "the start command runs in the restored sandbox"
    );
    t.delete(&id).await.unwrap();

    // The same image again: not downloaded again, every step from the cache.
    let again = build(&t, req).await;
    assert_eq!(again["status"], "ready", "{again}");
    assert_eq!(again["run_steps"], 0, "{again}");
    let logs = build_log(&t, &again).await;
    assert!(logs.contains("was imported before"), "{logs}");

    // An image the registry does not have fails the build, naming it; no template is made.
    let missing = format!("{}/platinum-test/missing:1", registry.addr);
    let failed = build(&t, json!({ "name": "gone", "from_image": missing })).await;
    assert_eq!(failed["status"], "error", "{failed}");
    let message = failed["failure"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(&missing), "{failed}");
    t.expect_error(
        t.req(Method::GET, "/v1/templates/gone"),
        404,
        "template_not_found",
    )
    .await
    .unwrap();

    // A private registry: refused without credentials, pulled with them; the password is in
    // no answer and no stored build.
    let image = private.push_busybox("team/busybox", "2").await.unwrap();
    let anonymous = build(&t, json!({ "name": "priv", "from_image": image })).await;
    assert_eq!(anonymous["status"], "error", "{anonymous}");
    assert!(
        anonymous["failure"]["message"]
            .as_str()
            .unwrap()
            .contains(&image),
        "{anonymous}"
    );
    let creds = json!({ "username": "builder", "password": secret });
    let wrong = json!({ "username": "builder", "password": "nope" });
    let refused = build(
        &t,
        json!({ "name": "priv", "from_image": image, "registry_auth": wrong }),
    )
    .await;
    assert_eq!(refused["status"], "error", "{refused}");
    let done = build(
        &t,
        json!({ "name": "priv", "from_image": image, "registry_auth": creds }),
    )
    .await;
    assert_eq!(done["status"], "ready", "{done}");
    let stored = t
        .expect(
            t.req(
                Method::GET,
                &format!("/v1/template-builds/{}", done["id"].as_str().unwrap()),
            ),
            200,
        )
        .await
        .unwrap();
    assert!(
        !stored.to_string().contains(secret) && !done.to_string().contains(secret),
        "{stored}"
    );
    // The same image bytes from another repository are pulled again, never taken from the
    // first one's import (a caller must be able to pull what it builds on).
    let logs = build_log(&t, &done).await;
    assert!(!logs.contains("was imported before"), "{logs}");
}
