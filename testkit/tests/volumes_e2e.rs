//! Volumes with real VMs: a volume mounted at create is written by one sandbox, hot-detached
//! from it while it runs, hot-attached to another running sandbox (whose guest sees the disk
//! appear) and read there; it survives that sandbox's stop and start (mounted again at boot)
//! and a pause to disk; the rules hold (one read-write attachment, no delete while attached, no
//! snapshot, fork or archive of a sandbox with volumes, bad names and paths refused, a busy
//! mount is not pulled away).

use platinum_testkit::{TestServer, id_of, sandbox_path};
use reqwest::Method;
use serde_json::{Value, json};

async fn attach(t: &TestServer, volume: &str, sandbox: &str, path: &str) -> Value {
    t.expect(
        t.req(Method::POST, &format!("/v1/volumes/{volume}/attach"))
            .json(&json!({ "sandbox_id": sandbox, "path": path })),
        200,
    )
    .await
    .unwrap()
}

async fn detach(t: &TestServer, volume: &str, sandbox: &str) -> Value {
    t.expect(
        t.req(Method::POST, &format!("/v1/volumes/{volume}/detach"))
            .json(&json!({ "sandbox_id": sandbox })),
        200,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn volumes_move_between_running_sandboxes_and_keep_their_data() {
    let t = TestServer::start().await.unwrap();

    // Bad input.
    for (body, code) in [
        (json!({ "name": "bad name" }), "invalid_request"),
        (json!({ "name": "v", "size_mib": 1 }), "invalid_request"),
    ] {
        t.expect_error(t.req(Method::POST, "/v1/volumes").json(&body), 400, code)
            .await
            .unwrap();
    }
    let vol = t
        .expect(
            t.req(Method::POST, "/v1/volumes")
                .json(&json!({ "name": "data", "size_mib": 64 })),
            201,
        )
        .await
        .unwrap();
    let vol_id = id_of(&vol);
    assert_eq!(vol["size_mib"], 64, "{vol}");
    t.expect_error(
        t.req(Method::POST, "/v1/volumes")
            .json(&json!({ "name": "data" })),
        409,
        "conflict",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::GET, "/v1/volumes/nope"),
        404,
        "volume_not_found",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::POST, "/v1/sandboxes")
            .json(&json!({ "volumes": [{ "volume": "data", "path": "/proc/x" }] })),
        400,
        "invalid_request",
    )
    .await
    .unwrap();

    // A: mounted at create (by name), written by the default user.
    let a = id_of(
        &t.create(json!({ "volumes": [{ "volume": "data", "path": "/data" }] }))
            .await
            .unwrap(),
    );
    t.out(&a, "echo from-a > /data/a.txt && sync").await;
    assert_eq!(t.out(&a, "stat -c %U /data").await, "user");
    let got = t
        .expect(t.req(Method::GET, &format!("/v1/volumes/{vol_id}")), 200)
        .await
        .unwrap();
    assert_eq!(got["attachments"][0]["sandbox_id"], a.as_str(), "{got}");

    // B runs already; the volume is read-write on A, so B cannot have it, nor can it go away.
    let b = id_of(&t.create(json!({})).await.unwrap());
    t.expect_error(
        t.req(Method::POST, &format!("/v1/volumes/{vol_id}/attach"))
            .json(&json!({ "sandbox_id": b, "path": "/mnt/v" })),
        409,
        "conflict",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::DELETE, &format!("/v1/volumes/{vol_id}")),
        409,
        "conflict",
    )
    .await
    .unwrap();
    // Snapshots, forks and archives of A would not hold the volume's data.
    for (path, body) in [
        (sandbox_path(&a, "/snapshots"), json!({})),
        (sandbox_path(&a, "/fork"), json!({})),
    ] {
        t.expect_error(t.req(Method::POST, &path).json(&body), 409, "conflict")
            .await
            .unwrap();
    }

    // A busy mount is not pulled away; once free, it is detached while A runs.
    let busy = t
        .exec_with(
            &a,
            json!({ "command": "cd /data && exec sleep 600", "background": true }),
        )
        .await
        .unwrap();
    // Background starts return at once: wait until it sits in the mount.
    let cwd = format!(
        "for i in $(seq 100); do [ \"$(readlink /proc/{0}/cwd)\" = /data ] && break; sleep 0.1; done; readlink /proc/{0}/cwd",
        busy["pid"]
    );
    assert_eq!(t.out(&a, &cwd).await, "/data");
    t.expect_error(
        t.req(Method::POST, &format!("/v1/volumes/{vol_id}/detach"))
            .json(&json!({ "sandbox_id": a })),
        409,
        "conflict",
    )
    .await
    .unwrap();
    t.expect(
        t.req(
            Method::POST,
            &sandbox_path(&a, &format!("/processes/{}/signal", busy["pid"])),
        )
        .json(&json!({ "signal": 9 })),
        204,
    )
    .await
    .unwrap();
    let detached = detach(&t, &vol_id, &a).await;
    assert_eq!(detached["attachments"], json!([]), "{detached}");
    assert_eq!(
        t.out(&a, "grep -c ' /data ' /proc/mounts || true").await,
        "0"
    );
    assert_eq!(t.out(&a, "ls /sys/block | grep -c ^sd || true").await, "0");

    // Hot-attached to the running B: the guest sees a new disk, and A's file.
    assert_eq!(t.out(&b, "ls /sys/block | grep -c ^sd || true").await, "0");
    attach(&t, "data", &b, "/mnt/shared").await;
    assert_eq!(t.out(&b, "ls /sys/block | grep -c ^sd").await, "1");
    assert_eq!(t.out(&b, "cat /mnt/shared/a.txt").await, "from-a");
    t.out(&b, "echo from-b >> /mnt/shared/a.txt && sync").await;

    // A stop and start of B mounts it again at boot.
    t.action(&b, "stop").await.unwrap();
    let started = t.action(&b, "start").await.unwrap();
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(t.out(&b, "cat /mnt/shared/a.txt").await, "from-a\nfrom-b");

    // A pause to disk keeps it: the restored guest has it mounted, the same file open.
    t.out(
        &b,
        "nohup sh -c 'exec 3>>/mnt/shared/a.txt; while :; do sleep 1; done' >/dev/null 2>&1 &",
    )
    .await;
    let paused = t
        .expect(
            t.req(Method::POST, &sandbox_path(&b, "/pause"))
                .json(&json!({ "memory": true })),
            200,
        )
        .await
        .unwrap();
    assert_eq!(paused["state"], "suspended", "{paused}");
    t.action(&b, "resume").await.unwrap();
    t.out(&b, "echo after-resume >> /mnt/shared/a.txt && sync")
        .await;
    assert_eq!(t.out(&b, "tail -1 /mnt/shared/a.txt").await, "after-resume");

    // Deleting B frees the volume; it detaches from nothing and can be deleted.
    t.delete(&b).await.unwrap();
    let got = t
        .expect(t.req(Method::GET, &format!("/v1/volumes/{vol_id}")), 200)
        .await
        .unwrap();
    assert_eq!(got["attachments"], json!([]), "{got}");
    t.expect(t.req(Method::DELETE, &format!("/v1/volumes/{vol_id}")), 204)
        .await
        .unwrap();
    assert!(
        !t.data_dir()
            .join("volumes")
            .join(format!("{vol_id}.ext4"))
            .exists(),
        "the image stayed"
    );
    let listed = t
        .expect(t.req(Method::GET, "/v1/volumes"), 200)
        .await
        .unwrap();
    assert_eq!(listed["volumes"], json!([]), "{listed}");
    t.delete(&a).await.unwrap();
}
