//! Archives in a real S3-compatible server (`s3s-fs` on loopback) with real VMs: a stopped
//! sandbox and a paused one (with a counting process in memory) leave the host; the server
//! restarts on a data directory that holds only the database and the signing keys, as another
//! host would; both come back, the file and the very same process with them. A second archive
//! sends only the chunks that changed (counted in the bucket), an altered chunk is refused with
//! `archive_corrupt` and starts nothing, and an unreachable store fails the archive with
//! `object_store_unavailable`, leaving the sandbox on the host as it was. Continuous backups
//! of a running sandbox go to the same server and restore after its host data is gone.

use platinum_testkit::COUNTER;
use platinum_testkit::s3::TestS3;
use platinum_testkit::{TestServer, id_of, processes_mentioning};
use reqwest::Method;
use serde_json::{Value, json};
use std::path::Path;
use std::time::Duration;

/// Key prefix of this test's objects.
const PREFIX: &str = "archives";

/// What the server keeps across hosts: the database and the signing keys.
const SHARED: [&str; 4] = [
    "platinum.db",
    "platinum.db-wal",
    "platinum.db-shm",
    "snapshot-keys.json",
];

/// The counter's pid, once it is seen counting.
async fn counter_pid(t: &TestServer, id: &str) -> String {
    // python3 takes a moment to start under TCG.
    t.out(
        id,
        "for i in $(seq 100); do [ -s /tmp/count ] && break; sleep 0.2; done; cat /tmp/count",
    )
    .await;
    let read = || t.out(id, "cat /tmp/count");
    let a: u64 = read().await.parse().unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let b: u64 = read().await.parse().unwrap();
    assert!(b > a, "{id}: the counter stands still ({a} then {b})");
    t.out(id, "pgrep -f 'import[ ]time' | head -1").await
}

async fn state(t: &TestServer, id: &str) -> String {
    let s = t
        .expect(t.req(Method::GET, &format!("/v1/sandboxes/{id}")), 200)
        .await
        .unwrap();
    s["state"].as_str().unwrap_or_default().to_string()
}

/// Sandbox `id`'s events, oldest first.
async fn events(t: &TestServer, id: &str) -> Vec<Value> {
    let events = t
        .expect(
            t.req(Method::GET, &format!("/v1/sandboxes/{id}/events")),
            200,
        )
        .await
        .unwrap();
    events.as_array().unwrap().clone()
}

/// The transfer of sandbox `id`'s latest event of `kind` (`archived`, `stopped` after a
/// restore), printed for the record.
async fn transfer(t: &TestServer, id: &str, kind: &str) -> Value {
    let events = events(t, id).await;
    let detail = events
        .iter()
        .rev()
        .find(|e| e["kind"] == kind && e["detail"]["transfer"].is_object())
        .map(|e| e["detail"]["transfer"].clone())
        .unwrap_or_else(|| panic!("no {kind} event with a transfer: {events:?}"));
    eprintln!("{id} {kind}: {detail}");
    detail
}

/// Removes everything of the data directory but [`SHARED`].
fn keep_only_shared(data: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(data)? {
        let entry = entry?;
        if SHARED.contains(&entry.file_name().to_string_lossy().as_ref()) {
            continue;
        }
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(entry.path())?;
        } else {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn archives_leave_the_host_and_come_back_onto_an_empty_data_directory() {
    let mut s3 = TestS3::start().await.unwrap();
    let store = s3.store(PREFIX);
    let config = |c: &mut platinum::server::ServerConfig| c.archive = Some(store.clone());
    let t = TestServer::start_with(config).await.unwrap();

    // A stopped sandbox with a file: archived, its directory gone.
    let a = id_of(&t.create(json!({})).await.unwrap());
    t.out(&a, "echo from-a > /home/user/a.txt && sync").await;
    t.action(&a, "stop").await.unwrap();
    let archived = t.action(&a, "archive").await.unwrap();
    assert_eq!(archived["state"], "archived", "{archived}");
    assert!(!t.data_dir().join("sandboxes").join(&a).exists());
    let first = s3.object_files(PREFIX).len();
    assert!(first > 0, "nothing reached the bucket");
    let sent = transfer(&t, &a, "archived").await;
    assert_eq!(sent["chunks_moved"], first as u64, "{sent}");

    // A paused sandbox with a process in memory: archived (paused to disk on the way).
    let b = id_of(&t.create(json!({})).await.unwrap());
    t.out(&b, COUNTER).await;
    let pid = counter_pid(&t, &b).await;
    t.action(&b, "pause").await.unwrap();
    let archived = t.action(&b, "archive").await.unwrap();
    assert_eq!(archived["state"], "archived", "{archived}");
    // B shares A's template: most of its disk was in the bucket already.
    let sent = transfer(&t, &b, "archived").await;
    assert!(sent["chunks_reused"].as_u64().unwrap() > 0, "{sent}");
    let b_dir = t.data_dir().join("sandboxes").join(&b);
    assert!(!b_dir.exists() && processes_mentioning(&b_dir).is_empty());

    // Another host: the same database, keys and bucket, nothing else.
    let t = t.restart_after(keep_only_shared, config).await.unwrap();
    let started = t.action(&a, "start").await.unwrap();
    assert_eq!(started["state"], "running", "{started}");
    assert_eq!(t.out(&a, "cat /home/user/a.txt").await, "from-a");
    transfer(&t, &a, "stopped").await;
    let resumed = t.action(&b, "start").await.unwrap();
    assert_eq!(resumed["state"], "running", "{resumed}");
    assert_eq!(
        counter_pid(&t, &b).await,
        pid,
        "the paused process did not come back"
    );

    // A second archive sends only what changed (a 1 MB file and the filesystem's metadata).
    t.out(
        &a,
        "head -c 1000000 /dev/urandom > /home/user/new.bin && sync",
    )
    .await;
    t.action(&a, "stop").await.unwrap();
    let before = s3.object_files(PREFIX);
    t.action(&a, "archive").await.unwrap();
    let after = s3.object_files(PREFIX);
    let sent = after.len() - before.len();
    let report = transfer(&t, &a, "archived").await;
    assert_eq!(report["chunks_moved"], sent as u64, "{report}");
    assert!(
        sent >= 1 && sent * 4 < first,
        "the second archive sent {sent} chunks, the first {first}"
    );

    // An altered chunk (one this archive sent) is refused; nothing starts; fixed, it starts.
    let (newest, _) = after
        .iter()
        .filter(|(p, _)| !before.iter().any(|(q, _)| q == p))
        .max_by_key(|(_, modified)| *modified)
        .cloned()
        .unwrap();
    let good = std::fs::read(&newest).unwrap();
    let mut bad = good.clone();
    bad[0] ^= 0xff;
    std::fs::write(&newest, &bad).unwrap();
    let refused = t
        .expect_error(
            t.req(Method::POST, &format!("/v1/sandboxes/{a}/start")),
            422,
            "archive_corrupt",
        )
        .await
        .unwrap();
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not match"),
        "{refused}"
    );
    assert_eq!(state(&t, &a).await, "archived");
    let a_dir = t.data_dir().join("sandboxes").join(&a);
    assert!(!a_dir.exists() && processes_mentioning(&a_dir).is_empty());
    std::fs::write(&newest, &good).unwrap();
    t.action(&a, "start").await.unwrap();
    assert!(t.out(&a, "stat -c %s /home/user/new.bin").await == "1000000");

    // The store unreachable: the archive fails, typed; the sandbox stays here and starts.
    s3.pause();
    t.action(&a, "stop").await.unwrap();
    let failed = t
        .expect_error(
            t.req(Method::POST, &format!("/v1/sandboxes/{a}/archive")),
            502,
            "object_store_unavailable",
        )
        .await
        .unwrap();
    assert!(
        !failed.to_string().contains("platinum-test-secret-key"),
        "{failed}"
    );
    assert_eq!(state(&t, &a).await, "stopped");
    s3.resume().await.unwrap();
    let again = t.action(&a, "start").await.unwrap();
    assert_eq!(again["state"], "running", "{again}");
    assert_eq!(t.out(&a, "cat /home/user/a.txt").await, "from-a");

    t.delete(&a).await.unwrap();
    t.delete(&b).await.unwrap();
}

/// The backups of sandbox `id` (its schedule's view), oldest first.
async fn backups(t: &TestServer, id: &str) -> Vec<Value> {
    let status = t
        .expect(
            t.req(Method::GET, &format!("/v1/sandboxes/{id}/backup")),
            200,
        )
        .await
        .unwrap();
    status["backups"].as_array().unwrap().clone()
}

/// How many backups of `id` were taken so far (its `backup_stored` events).
async fn backups_taken(t: &TestServer, id: &str) -> usize {
    events(t, id)
        .await
        .iter()
        .filter(|e| e["kind"] == "backup_stored")
        .count()
}

/// Waits until `id` has had `n` backups taken.
async fn wait_for_backups(t: &TestServer, id: &str, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while backups_taken(t, id).await < n {
        assert!(
            std::time::Instant::now() < deadline,
            "{id}: fewer than {n} backups after 300 s: {:?}",
            backups(t, id).await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Continuous backup into the S3 server: a running sandbox with a counting process is backed up
/// every few seconds while it runs on (each backup's pause window and the VMM's device-state
/// save reported), later backups send only what changed, the schedule keeps the newest two, and
/// after the sandbox is deleted and its host's data wiped the latest backup restores as a new
/// sandbox with the file written last and the very same process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn continuous_backups_restore_after_the_host_data_is_gone() {
    let s3 = TestS3::start().await.unwrap();
    let store = s3.store("backups");
    let config = |c: &mut platinum::server::ServerConfig| c.archive = Some(store.clone());
    let t = TestServer::start_with(config).await.unwrap();

    // Bad schedules and states are typed errors.
    let a = id_of(
        &t.create(json!({ "memory_mib": 512, "backup": { "interval_secs": 5, "keep": 2 } }))
            .await
            .unwrap(),
    );
    for bad in [
        json!({ "interval_secs": 1 }),
        json!({ "interval_secs": 60, "keep": 0 }),
    ] {
        t.expect_error(
            t.req(Method::PUT, &format!("/v1/sandboxes/{a}/backup"))
                .json(&bad),
            400,
            "invalid_request",
        )
        .await
        .unwrap();
    }
    t.expect_error(
        t.req(Method::POST, "/v1/backups/bkupnosuchbackup0000000/restore"),
        404,
        "snapshot_not_found",
    )
    .await
    .unwrap();

    t.out(&a, "echo first > /home/user/data.txt && sync").await;
    t.out(&a, COUNTER).await;
    let pid = counter_pid(&t, &a).await;

    // Two backups while it runs: the second sends far less than the first.
    wait_for_backups(&t, &a, 2).await;
    let taken = backups(&t, &a).await;
    let (first, second) = (&taken[0]["upload"], &taken[1]["upload"]);
    for b in &taken {
        eprintln!(
            "backup {}: paused {} ms (device state {} ms, disks {} ms), upload {}",
            b["id"],
            b["timings"]["paused_ms"],
            b["timings"]["state_ms"],
            b["timings"]["disks_ms"],
            b["upload"]
        );
    }
    assert!(second["chunks_reused"].as_u64().unwrap() > 0, "{second}");
    assert!(
        second["chunks_sent"].as_u64().unwrap() * 2 < first["chunks_sent"].as_u64().unwrap(),
        "the second backup sent {second}, the first {first}"
    );
    assert!(
        taken[0]["timings"]["paused_ms"].as_u64().unwrap()
            >= taken[0]["timings"]["state_ms"].as_u64().unwrap()
    );

    // A file written now is in the next backup that starts after it; the schedule keeps only
    // the newest two. A backup may be under way as it is written (it saved the sandbox before
    // the write and stores after it): one sandbox's backups run one at a time, so the second
    // stored from now on started after the write.
    t.out(&a, "echo latest > /home/user/data.txt && sync").await;
    let n = backups_taken(&t, &a).await;
    wait_for_backups(&t, &a, n + 2).await;
    let kept = backups(&t, &a).await;
    assert_eq!(kept.len(), 2, "{kept:?}");
    let latest = kept[1]["id"].as_str().unwrap().to_string();

    // The sandbox deleted (gone for a backup now), and everything of the host but the
    // database and keys gone.
    t.delete(&a).await.unwrap();
    t.expect_error(
        t.req(Method::POST, &format!("/v1/sandboxes/{a}/backups")),
        404,
        "sandbox_not_found",
    )
    .await
    .unwrap();
    let t = t.restart_after(keep_only_shared, config).await.unwrap();
    let listed = t
        .expect(
            t.req(Method::GET, &format!("/v1/backups?sandbox_id={a}")),
            200,
        )
        .await
        .unwrap();
    assert_eq!(listed["backups"].as_array().unwrap().len(), 2, "{listed}");
    let restored = t
        .expect(
            t.req(Method::POST, &format!("/v1/backups/{latest}/restore"))
                .json(&json!({ "metadata": { "from": "backup" } })),
            201,
        )
        .await
        .unwrap();
    let b = id_of(&restored);
    assert_ne!(a, b);
    assert_eq!(restored["state"], "running", "{restored}");
    assert_eq!(t.out(&b, "cat /home/user/data.txt").await, "latest");
    assert_eq!(
        counter_pid(&t, &b).await,
        pid,
        "the backed-up process did not come back"
    );
    // The fetched copy is gone again; the backup stays.
    assert!(!t.data_dir().join("snapshots").join(&latest).exists());
    t.expect(t.req(Method::GET, &format!("/v1/backups/{latest}")), 200)
        .await
        .unwrap();
    t.expect(t.req(Method::DELETE, &format!("/v1/backups/{latest}")), 204)
        .await
        .unwrap();
    t.expect_error(
        t.req(Method::GET, &format!("/v1/backups/{latest}")),
        404,
        "snapshot_not_found",
    )
    .await
    .unwrap();
    t.delete(&b).await.unwrap();
}
