//! Snapshots with real VMs (QEMU, TCG here), one server and few boots for the whole story:
//! pause to disk frees the VMM and resume keeps the counting process, the files and the address;
//! a named snapshot restores into a new sandbox with its own identity; fork ×3 gives independent
//! copies whose process is the source's and the source's process never restarts; a checkpoint
//! and rollback undo an `rm -rf` and a killed process; every tamper case is refused with its
//! code, starts nothing and deletes nothing; a rotated key still verifies old snapshots; and the
//! lifecycle loop pauses an expired `on_timeout: pause` sandbox to disk.

use platinum_testkit::COUNTER;
use platinum_testkit::{TestServer, processes_mentioning, sandbox_path, test_network};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;

async fn count(t: &TestServer, id: &str) -> u64 {
    t.out(id, "cat /tmp/count").await.parse().unwrap()
}

/// The counter's pid, and that it is counting (two reads 1 s apart differ).
async fn counting(t: &TestServer, id: &str) -> (String, u64) {
    let a = count(t, id).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b = count(t, id).await;
    assert!(b > a, "{id}: the counter stands still ({a} then {b})");
    (t.out(id, "pgrep -f 'import[ ]time' | head -1").await, b)
}

/// An agent's step: a directory with a file in it.
const MAKE_WORK: &str = "mkdir -p /home/user/work && echo v1 > /home/user/work/a.txt && sync";
/// A destructive step: the directory and the counting process gone.
const UNDO_WORK: &str = "rm -rf /home/user/work; pkill -f 'import[ ]time'; true";

/// Takes a checkpoint of sandbox `id`.
async fn checkpoint(t: &TestServer, id: &str) -> Value {
    t.expect(post(t, &sandbox_path(id, "/checkpoints"), json!({})), 201)
        .await
        .unwrap()
}

/// Pauses sandbox `id` with its memory (to disk); returns the sandbox.
async fn pause_to_disk(t: &TestServer, id: &str) -> Value {
    t.expect(
        post(t, &sandbox_path(id, "/pause"), json!({ "memory": true })),
        200,
    )
    .await
    .unwrap()
}

/// Rolls sandbox `id` back to checkpoint `cp`; returns the sandbox.
async fn rollback(t: &TestServer, id: &str, cp: &str) -> Value {
    t.expect(
        post(
            t,
            &sandbox_path(id, "/rollback"),
            json!({ "checkpoint": cp }),
        ),
        200,
    )
    .await
    .unwrap()
}

fn ip(s: &Value) -> String {
    s["runtime"]["ip"].as_str().unwrap_or_default().to_string()
}

fn id(s: &Value) -> String {
    s["id"].as_str().unwrap().to_string()
}

fn post(t: &TestServer, path: &str, body: Value) -> reqwest::RequestBuilder {
    t.req(Method::POST, path).json(&body)
}

/// Flips one bit of `file` at `offset` (again to undo it).
fn flip(file: &Path, offset: u64) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(file)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= 0x10;
    f.write_all_at(&b, offset).unwrap();
}

fn snapshot_dir(t: &TestServer, id: &str) -> PathBuf {
    t.data_dir().join("snapshots").join(id)
}

async fn sandbox_count(t: &TestServer) -> usize {
    let list = t
        .expect(t.req(Method::GET, "/v1/sandboxes?state=running"), 200)
        .await
        .unwrap();
    list["sandboxes"].as_array().map_or(0, Vec::len)
}

/// What is tampered with, how, how to undo it, and the refusal expected.
type TamperCase<'a> = (
    &'a str,
    Box<dyn Fn() + 'a>,
    Box<dyn Fn() + 'a>,
    u16,
    &'a str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pause_to_disk_snapshot_restore_fork_checkpoint_rollback_and_tampering() {
    let net = test_network();
    let t = TestServer::start_with(|c| c.network = Some(net))
        .await
        .unwrap();
    let a = t
        .create(json!({ "memory_mib": 512, "timeout_secs": 0 }))
        .await
        .unwrap();
    let a_id = id(&a);
    let a_ip = ip(&a);
    assert!(!a_ip.is_empty(), "no address: {a}");
    t.exec(&a_id, COUNTER).await.unwrap();
    t.out(&a_id, "echo kept > /home/user/kept.txt && sync")
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (pid, _) = counting(&t, &a_id).await;

    // Pause to disk: the VMM process is gone, the sandbox is suspended.
    let before = count(&t, &a_id).await;
    let paused = pause_to_disk(&t, &a_id).await;
    assert_eq!(paused["state"], "suspended", "{paused}");
    assert!(paused["runtime"].is_null(), "{paused}");
    let dir = t.data_dir().join("sandboxes").join(&a_id);
    assert!(
        processes_mentioning(&dir).is_empty(),
        "a process still runs for a sandbox paused to disk"
    );
    t.expect_error(
        post(&t, &sandbox_path(&a_id, "/snapshots"), json!({})),
        409,
        "invalid_state",
    )
    .await
    .unwrap();

    // A flipped byte in its memory image: resume is refused, it stays suspended, nothing is lost.
    let image = std::fs::read_dir(t.data_dir().join("snapshots"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("susp"))
        })
        .expect("a pause-to-disk image");
    flip(&image.join("vmstate"), 4096);
    let refused = t
        .expect_error(
            t.req(Method::POST, &sandbox_path(&a_id, "/resume")),
            422,
            "snapshot_corrupt",
        )
        .await
        .unwrap();
    assert!(
        refused["message"].as_str().unwrap().contains("vmstate"),
        "{refused}"
    );
    t.wait_for(&a_id, Duration::from_secs(1), |s| s["state"] == "suspended")
        .await
        .unwrap();
    assert!(processes_mentioning(&dir).is_empty());
    flip(&image.join("vmstate"), 4096);

    // Resume: same address, the file, the same counting process, counting on from where it was.
    let resumed = t.action(&a_id, "resume").await.unwrap();
    assert_eq!(resumed["state"], "running");
    assert_eq!(ip(&resumed), a_ip);
    assert!(!image.exists(), "the used image was not removed");
    let after = count(&t, &a_id).await;
    assert!(after >= before, "counter went back: {before} -> {after}");
    assert!(
        after < before + 20,
        "counter jumped while paused: {before} -> {after}"
    );
    let (pid_after, _) = counting(&t, &a_id).await;
    assert_eq!(pid_after, pid, "the counting process restarted");
    assert_eq!(t.out(&a_id, "cat /home/user/kept.txt").await, "kept");
    assert_eq!(t.out(&a_id, "hostname").await, a_id);

    // A named snapshot, restored into a new sandbox with its own identity.
    let snap = t
        .expect(
            post(
                &t,
                &sandbox_path(&a_id, "/snapshots"),
                json!({ "name": "golden" }),
            ),
            201,
        )
        .await
        .unwrap();
    let snap_id = id(&snap);
    assert_eq!(snap["kind"], "snapshot");
    assert!(
        snap["key_id"].as_str().is_some_and(|k| k.len() == 16),
        "{snap}"
    );
    t.expect_error(
        post(
            &t,
            &sandbox_path(&a_id, "/snapshots"),
            json!({ "name": "golden" }),
        ),
        409,
        "conflict",
    )
    .await
    .unwrap();
    let b = t
        .create(json!({ "snapshot": "golden", "timeout_secs": 0 }))
        .await
        .unwrap();
    let b_id = id(&b);
    assert_ne!(ip(&b), a_ip, "the restored copy took the source's address");
    assert_eq!(t.out(&b_id, "hostname").await, b_id);
    let mac = "cat /sys/class/net/eth0/address";
    assert_ne!(t.out(&b_id, mac).await, t.out(&a_id, mac).await);
    assert!(
        t.out(&b_id, "ip -4 -o addr show eth0")
            .await
            .contains(&ip(&b)),
        "the guest does not use its new address"
    );
    let (b_pid, _) = counting(&t, &b_id).await;
    assert_eq!(
        b_pid, pid,
        "the restored copy's process is not the snapshot's"
    );
    assert_eq!(t.out(&b_id, "cat /home/user/kept.txt").await, "kept");
    t.delete(&b_id).await.unwrap();

    // Bad input around snapshots.
    t.expect_error(
        t.req(Method::POST, "/v1/sandboxes")
            .json(&json!({ "snapshot": "golden", "memory_mib": 1024 })),
        400,
        "invalid_request",
    )
    .await
    .unwrap();
    t.expect_error(
        t.req(Method::POST, "/v1/sandboxes")
            .json(&json!({ "snapshot": "nosuch" })),
        404,
        "snapshot_not_found",
    )
    .await
    .unwrap();
    for count in [0, 21] {
        t.expect_error(
            post(&t, &sandbox_path(&a_id, "/fork"), json!({ "count": count })),
            400,
            "invalid_request",
        )
        .await
        .unwrap();
    }

    // Fork ×3: each copy has the source's process at the fork; the source's never restarted.
    let forked = t
        .expect(
            post(&t, &sandbox_path(&a_id, "/fork"), json!({ "count": 3 })),
            201,
        )
        .await
        .unwrap();
    let copies: Vec<String> = forked["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(copies.len(), 3, "{forked}");
    assert!(forked["source_paused_ms"].as_u64().is_some(), "{forked}");
    for c in &copies {
        let (c_pid, _) = counting(&t, c).await;
        assert_eq!(c_pid, pid, "copy {c} runs another process");
        assert_eq!(t.out(c, "hostname").await, *c);
    }
    // They diverge: a file one copy writes is nowhere else.
    t.out(&copies[0], "echo mine > /home/user/only-here.txt")
        .await;
    for other in [&copies[1], &copies[2], &a_id] {
        assert_eq!(
            t.out(
                other,
                "test -e /home/user/only-here.txt && echo yes || echo no"
            )
            .await,
            "no"
        );
    }
    let (source_pid, _) = counting(&t, &a_id).await;
    assert_eq!(
        source_pid, pid,
        "the source's process restarted during the fork"
    );
    for c in &copies {
        t.delete(c).await.unwrap();
    }

    // Checkpoint, an agent's destructive step, rollback: the same sandbox is back as it was.
    let cp = checkpoint(&t, &a_id).await;
    let cp_id = id(&cp);
    t.out(&a_id, MAKE_WORK).await;
    let cp2 = checkpoint(&t, &a_id).await;
    t.out(&a_id, UNDO_WORK).await;
    let rolled = rollback(&t, &a_id, &id(&cp2)).await;
    assert_eq!(rolled["id"], a_id);
    assert_eq!(ip(&rolled), a_ip);
    assert_eq!(t.out(&a_id, "cat /home/user/work/a.txt").await, "v1");
    let (rolled_pid, _) = counting(&t, &a_id).await;
    assert_eq!(rolled_pid, pid);
    // An earlier checkpoint goes further back.
    rollback(&t, &a_id, &cp_id).await;
    assert_eq!(
        t.out(&a_id, "test -e /home/user/work && echo yes || echo no")
            .await,
        "no"
    );
    let listed = t
        .expect(
            t.req(Method::GET, &sandbox_path(&a_id, "/checkpoints")),
            200,
        )
        .await
        .unwrap();
    assert_eq!(listed["checkpoints"].as_array().map(Vec::len), Some(2));
    t.expect_error(
        post(
            &t,
            &sandbox_path(&a_id, "/rollback"),
            json!({ "checkpoint": snap_id }),
        ),
        404,
        "snapshot_not_found",
    )
    .await
    .unwrap();

    // Tampering with the named snapshot: each case refused with its code; nothing starts and
    // nothing of the snapshot is deleted.
    let sdir = snapshot_dir(&t, &snap_id);
    let running = sandbox_count(&t).await;
    let restore = || post(&t, "/v1/sandboxes", json!({ "snapshot": snap_id }));
    let manifest = sdir.join("manifest.json");
    let original = std::fs::read(&manifest).unwrap();
    let cases: Vec<TamperCase> = vec![
        (
            "memory",
            Box::new(|| flip(&sdir.join("vmstate"), 1 << 20)),
            Box::new(|| flip(&sdir.join("vmstate"), 1 << 20)),
            422,
            "snapshot_corrupt",
        ),
        (
            "disk",
            Box::new(|| flip(&sdir.join("rootfs.disk"), 600)),
            Box::new(|| flip(&sdir.join("rootfs.disk"), 600)),
            422,
            "snapshot_corrupt",
        ),
        (
            "manifest",
            Box::new(|| {
                let text = String::from_utf8(original.clone()).unwrap();
                std::fs::write(&manifest, text.replacen("\"size\": ", "\"size\": 1", 1)).unwrap()
            }),
            Box::new(|| std::fs::write(&manifest, &original).unwrap()),
            422,
            "snapshot_signature_invalid",
        ),
        (
            "unsigned",
            Box::new(|| std::fs::remove_file(&manifest).unwrap()),
            Box::new(|| std::fs::write(&manifest, &original).unwrap()),
            422,
            "snapshot_signature_invalid",
        ),
        (
            "truncated",
            Box::new(|| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(sdir.join("vmstate"))
                    .unwrap();
                let len = f.metadata().unwrap().len();
                std::fs::write(
                    sdir.join("vmstate.keep"),
                    std::fs::read(sdir.join("vmstate")).unwrap(),
                )
                .unwrap();
                f.set_len(len / 2).unwrap();
            }),
            Box::new(|| std::fs::rename(sdir.join("vmstate.keep"), sdir.join("vmstate")).unwrap()),
            422,
            "snapshot_corrupt",
        ),
    ];
    for (what, tamper, undo, status, code) in &cases {
        tamper();
        let body = t.expect_error(restore(), *status, code).await;
        undo();
        body.unwrap_or_else(|e| panic!("tampered {what}: {e}"));
        assert_eq!(
            sandbox_count(&t).await,
            running,
            "tampered {what}: something started"
        );
        assert!(sdir.join("vmstate").is_file() && sdir.join("rootfs.disk").is_file());
    }

    // A rotated key keeps verifying what the old one signed; both are in the JWKS.
    let old_kid = snap["key_id"].as_str().unwrap().to_string();
    let new_kid = t.server().engine.rotate_snapshot_key().unwrap();
    assert_ne!(new_kid, old_kid);
    let jwks = t
        .expect(t.anon(Method::GET, "/.well-known/jwks.json"), 200)
        .await
        .unwrap();
    let kids: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|k| k["kid"].as_str())
        .collect();
    assert!(
        kids.contains(&old_kid.as_str()) && kids.contains(&new_kid.as_str()),
        "{jwks}"
    );
    assert!(
        jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["kty"] == "OKP" && k["crv"] == "Ed25519")
    );
    let c = t.create(json!({ "snapshot": snap_id })).await.unwrap();
    t.delete(&id(&c)).await.unwrap();

    // Snapshots outlive their sandbox unless asked; checkpoints do not.
    t.delete(&a_id).await.unwrap();
    t.expect(t.req(Method::GET, &format!("/v1/snapshots/{snap_id}")), 200)
        .await
        .unwrap();
    t.expect_error(
        t.req(Method::GET, &format!("/v1/snapshots/{cp_id}")),
        404,
        "snapshot_not_found",
    )
    .await
    .unwrap();
    t.expect(
        t.req(Method::DELETE, &format!("/v1/snapshots/{snap_id}")),
        204,
    )
    .await
    .unwrap();
    assert!(!sdir.exists());

    // The lifecycle loop pauses an expired `on_timeout: pause` sandbox to disk.
    let e = t
        .create(json!({ "memory_mib": 256, "timeout_secs": 3, "on_timeout": "pause" }))
        .await
        .unwrap();
    let e_id = id(&e);
    t.wait_for(&e_id, Duration::from_secs(60), |s| {
        s["state"] == "suspended"
    })
    .await
    .unwrap();
    t.action(&e_id, "resume").await.unwrap();
    assert_eq!(t.out(&e_id, "echo back").await, "back");
    t.delete(&e_id).await.unwrap();
}

/// Guest RAM in a memory file on a filesystem with reflinks (a scratch XFS): the server picks it
/// by itself, and then a checkpoint, rollback, fork and pause to disk save only device state and
/// reflink the RAM: the same process goes on everywhere, the snapshot's state stream is
/// kilobytes, and a flipped byte in the memory clone is caught before anything starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_file_on_a_reflink_filesystem() {
    let fs = platinum_testkit::ReflinkFs::create(8).unwrap();
    let t = TestServer::start_under(fs.path(), |_| {}).await.unwrap();
    let memory = t.server().engine.host_info().memory;
    assert!(memory.starts_with("a memory file"), "{memory}");

    let a = t
        .create(json!({ "memory_mib": 512, "timeout_secs": 0 }))
        .await
        .unwrap();
    let a_id = id(&a);
    let ram = t.data_dir().join("sandboxes").join(&a_id).join("memory");
    assert_eq!(std::fs::metadata(&ram).unwrap().len(), 512 << 20);
    t.exec(&a_id, COUNTER).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (pid, _) = counting(&t, &a_id).await;

    // Checkpoint: device state only in the stream, the RAM a clone beside it.
    let cp = checkpoint(&t, &a_id).await;
    eprintln!("memory-file checkpoint timings: {}", cp["timings"]);
    let cp_dir = snapshot_dir(&t, &id(&cp));
    let state = std::fs::metadata(cp_dir.join("vmstate")).unwrap().len();
    assert!(state < 2 << 20, "RAM went into the stream: {state} bytes");
    assert_eq!(
        std::fs::metadata(cp_dir.join("memory")).unwrap().len(),
        512 << 20
    );
    t.out(&a_id, MAKE_WORK).await;
    t.out(&a_id, UNDO_WORK).await;
    let rolled = rollback(&t, &a_id, &id(&cp)).await;
    assert_eq!(rolled["id"], a_id);
    assert_eq!(
        counting(&t, &a_id).await.0,
        pid,
        "rollback lost the process"
    );

    // Fork ×2: copies with the source's process; the source goes on.
    let forked = t
        .expect(
            post(&t, &sandbox_path(&a_id, "/fork"), json!({ "count": 2 })),
            201,
        )
        .await
        .unwrap();
    eprintln!(
        "memory-file fork x2: source paused {} ms",
        forked["source_paused_ms"]
    );
    let copies: Vec<String> = forked["sandboxes"]
        .as_array()
        .unwrap()
        .iter()
        .map(id)
        .collect();
    assert_eq!(copies.len(), 2, "{forked}");
    for c in &copies {
        assert_eq!(
            counting(&t, c).await.0,
            pid,
            "copy {c} runs another process"
        );
        assert_eq!(t.out(c, "hostname").await, *c);
    }
    t.out(&copies[0], "echo mine > /tmp/only-here").await;
    assert_eq!(
        t.out(&copies[1], "test -e /tmp/only-here && echo yes || echo no")
            .await,
        "no"
    );
    assert_eq!(counting(&t, &a_id).await.0, pid);
    for c in &copies {
        t.delete(c).await.unwrap();
    }

    // Pause to disk and resume: the VMM and its memory file go, then come back.
    let paused = pause_to_disk(&t, &a_id).await;
    assert_eq!(paused["state"], "suspended", "{paused}");
    assert!(!ram.exists(), "a suspended sandbox keeps its RAM file");
    let resumed = t.action(&a_id, "resume").await.unwrap();
    assert_eq!(resumed["state"], "running");
    assert_eq!(counting(&t, &a_id).await.0, pid, "resume lost the process");

    // A flipped byte in a snapshot's memory clone: refused before any VMM starts.
    let snap = t
        .expect(post(&t, &sandbox_path(&a_id, "/snapshots"), json!({})), 201)
        .await
        .unwrap();
    let mem = snapshot_dir(&t, &id(&snap)).join("memory");
    flip(&mem, 300 << 20);
    let refused = t
        .expect_error(
            post(&t, "/v1/sandboxes", json!({ "snapshot": id(&snap) })),
            422,
            "snapshot_corrupt",
        )
        .await
        .unwrap();
    assert!(
        refused["message"].as_str().unwrap().contains("memory"),
        "{refused}"
    );
    flip(&mem, 300 << 20);
    let restored = t
        .expect(
            post(&t, "/v1/sandboxes", json!({ "snapshot": id(&snap) })),
            201,
        )
        .await
        .unwrap();
    assert_eq!(counting(&t, &id(&restored)).await.0, pid);
    drop(t);
    drop(fs);
}
