//! The host share with real VMs and a real virtiofsd: the guest writes `/mnt/dnah-share`, the
//! host API reads it, and the other way round; the API works while the sandbox runs, is paused,
//! is paused to disk (whose restore keeps a file the guest holds open) and is stopped; symlinks
//! a (root) guest plants to host files are refused; the share's own size bounds what the guest
//! can store on the host; forks get an empty share of their own; delete unmounts and removes it.

use platinum_testkit::{TestServer, id_of, sandbox_path};
use reqwest::Method;
use serde_json::{Value, json};

fn share(id: &str, path: &str) -> String {
    sandbox_path(id, &format!("/share/{path}"))
}

async fn get_text(t: &TestServer, id: &str, path: &str) -> String {
    let r = t.req(Method::GET, &share(id, path)).send().await.unwrap();
    assert_eq!(r.status(), 200, "GET share/{path}");
    r.text().await.unwrap()
}

async fn put(t: &TestServer, id: &str, path: &str, body: &'static str) -> Value {
    t.expect(t.req(Method::PUT, &share(id, path)).body(body), 201)
        .await
        .unwrap()
}

/// Mounts of the sandbox directory's share still on the host.
fn share_mounted(dir: &std::path::Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .contains(&dir.join("share").display().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_share_connects_host_and_guest_in_every_state() {
    let t = TestServer::start_with(|c| c.share_mib = 64).await.unwrap();
    let a = id_of(&t.create(json!({})).await.unwrap());
    let dir = t.data_dir().join("sandboxes").join(&a);

    // Guest -> host, host -> guest.
    assert!(
        t.out(&a, "grep -c ' /mnt/dnah-share virtiofs ' /proc/mounts")
            .await
            == "1"
    );
    t.out(&a, "echo from-guest > /mnt/dnah-share/g.txt").await;
    assert_eq!(get_text(&t, &a, "g.txt").await, "from-guest\n");
    let entry = put(&t, &a, "in/h.txt", "from-host").await;
    assert_eq!(
        (entry["kind"].as_str(), entry["size"].as_u64()),
        (Some("file"), Some(9))
    );
    assert_eq!(t.out(&a, "cat /mnt/dnah-share/in/h.txt").await, "from-host");
    assert_eq!(
        t.out(&a, "stat -c %U /mnt/dnah-share/in/h.txt").await,
        "user"
    );
    t.out(&a, "echo more >> /mnt/dnah-share/in/h.txt").await;
    let root = t
        .expect(t.req(Method::GET, &sandbox_path(&a, "/share")), 200)
        .await
        .unwrap();
    let names: Vec<&str> = root["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["g.txt", "in", "lost+found"], "{root}");
    let listed = t
        .expect(t.req(Method::GET, &share(&a, "in")), 200)
        .await
        .unwrap();
    assert_eq!(listed["entries"][0]["name"], "h.txt", "{listed}");

    // A root guest plants links to host files: the host API follows none of them.
    t.out(
        &a,
        "sudo ln -s /etc/shadow /mnt/dnah-share/evil && sudo ln -s / /mnt/dnah-share/hostroot",
    )
    .await;
    for path in ["evil", "hostroot/etc/passwd"] {
        t.expect_error(
            t.req(Method::GET, &share(&a, path)),
            403,
            "permission_denied",
        )
        .await
        .unwrap();
    }
    t.expect_error(
        t.req(Method::PUT, &share(&a, "hostroot/tmp/planted"))
            .body("x"),
        403,
        "permission_denied",
    )
    .await
    .unwrap();
    assert!(!std::path::Path::new("/tmp/planted").exists());
    t.expect_error(
        t.req(Method::GET, &share(&a, "a//x")),
        400,
        "invalid_request",
    )
    .await
    .unwrap();
    t.expect(t.req(Method::DELETE, &share(&a, "hostroot")), 204)
        .await
        .unwrap();
    assert!(std::path::Path::new("/etc/passwd").exists());

    // The share's size bounds the guest: it cannot fill the host's disk through it.
    let fill = t
        .exec(
            &a,
            "dd if=/dev/zero of=/mnt/dnah-share/big bs=1M count=100 2>&1; sync",
        )
        .await
        .unwrap();
    assert!(
        fill["stdout"]
            .as_str()
            .unwrap_or_default()
            .contains("No space"),
        "{fill}"
    );
    t.expect_error(
        t.req(Method::PUT, &share(&a, "more.bin"))
            .body(vec![0u8; 8 << 20]),
        507,
        "no_space",
    )
    .await
    .unwrap();
    t.expect(t.req(Method::DELETE, &share(&a, "big")), 204)
        .await
        .unwrap();

    // Paused in memory: the API goes on.
    t.action(&a, "pause").await.unwrap();
    put(&t, &a, "paused.txt", "while-paused").await;
    t.action(&a, "resume").await.unwrap();
    assert_eq!(
        t.out(&a, "cat /mnt/dnah-share/paused.txt").await,
        "while-paused"
    );

    // Paused to disk with a file held open in the share: the restored guest still reads it.
    let holder = t
        .out(
            &a,
            "nohup sh -c 'exec 3</mnt/dnah-share/g.txt; sleep 600' >/dev/null 2>&1 & echo $!",
        )
        .await;
    let paused = t
        .expect(
            t.req(Method::POST, &sandbox_path(&a, "/pause"))
                .json(&json!({ "memory": true })),
            200,
        )
        .await
        .unwrap();
    assert_eq!(paused["state"], "suspended", "{paused}");
    put(&t, &a, "suspended.txt", "while-suspended").await;
    assert_eq!(get_text(&t, &a, "g.txt").await, "from-guest\n");
    t.action(&a, "resume").await.unwrap();
    assert_eq!(
        t.out(&a, &format!("cat /proc/{holder}/fd/3")).await,
        "from-guest"
    );
    assert_eq!(
        t.out(&a, "cat /mnt/dnah-share/suspended.txt").await,
        "while-suspended"
    );

    // A fork runs with a share of its own, empty.
    let forked = t
        .expect(
            t.req(Method::POST, &sandbox_path(&a, "/fork"))
                .json(&json!({})),
            201,
        )
        .await
        .unwrap();
    let b = forked["sandboxes"][0]["id"].as_str().unwrap().to_string();
    let listed = t
        .expect(t.req(Method::GET, &sandbox_path(&b, "/share")), 200)
        .await
        .unwrap();
    assert_eq!(listed["entries"].as_array().unwrap().len(), 1, "{listed}");
    t.out(&b, "echo fork > /mnt/dnah-share/f.txt").await;
    assert_eq!(get_text(&t, &b, "f.txt").await, "fork\n");
    t.delete(&b).await.unwrap();

    // Stopped: the API goes on; the next boot mounts it again.
    t.action(&a, "stop").await.unwrap();
    put(&t, &a, "stopped.txt", "while-stopped").await;
    t.action(&a, "start").await.unwrap();
    assert_eq!(
        t.out(&a, "cat /mnt/dnah-share/stopped.txt").await,
        "while-stopped"
    );

    // Delete: unmounted, gone.
    assert!(share_mounted(&dir));
    t.delete(&a).await.unwrap();
    assert!(!share_mounted(&dir), "the share stayed mounted");
    assert!(!dir.exists());
    t.expect_error(
        t.req(Method::GET, &sandbox_path(&a, "/share")),
        404,
        "sandbox_not_found",
    )
    .await
    .unwrap();
}
