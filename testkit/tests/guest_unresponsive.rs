//! A guest that stops answering costs the host nothing: with a real VM whose VMM is frozen
//! (SIGSTOP, so the agent's health pings time out), the host kills the VMM, the sandbox goes to
//! `error` with the reason, and `start` boots it again from its disk. A guest that wipes its own
//! root disk gets a start that fails with the kernel's last words in the error, and nothing left
//! running.

use platinum_testkit::{TestServer, processes_mentioning};
use serde_json::json;
use std::time::{Duration, Instant};

/// True once no process with `pid` exists (the server reaps its children).
async fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unresponsive_guest_has_its_vm_killed_and_can_start_again() {
    let t = TestServer::start().await.unwrap();
    let created = t.create(json!({})).await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let dir = t.data_dir().join("sandboxes").join(&id);
    let pids = processes_mentioning(&dir);
    assert_eq!(pids.len(), 1, "one VMM process for the sandbox: {pids:?}");
    let pid = pids[0];

    // Freeze the VMM: the guest agent cannot answer anything any more.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the VMM");

    // Three failed health pings (10 s apart, 10 s each) and the host gives up.
    let failed = t
        .wait_for(&id, Duration::from_secs(240), |s| s["state"] == "error")
        .await
        .unwrap();
    let reason = failed["error"].as_str().unwrap_or_default();
    assert!(reason.contains("stopped answering"), "{failed}");
    assert!(reason.contains("VM was killed"), "{failed}");
    assert!(
        wait_gone(pid, Duration::from_secs(30)).await,
        "the VMM (pid {pid}) of an unresponsive guest is still running"
    );
    assert!(processes_mentioning(&dir).is_empty());

    // The disk stayed: the sandbox boots again and works.
    let started = t.action(&id, "start").await.unwrap();
    assert_eq!(started["state"], "running", "{started}");
    let out = t.exec(&id, "echo alive").await.unwrap();
    assert_eq!(
        out["stdout"].as_str().map(str::trim),
        Some("alive"),
        "{out}"
    );
    // The guest wipes its own root disk (it is root in its VM). The next boot panics in the
    // kernel; the start fails with a typed error that says why, and leaves no VMM behind.
    let wiped = t
        .exec_with(
            &id,
            json!({"command": "dd if=/dev/zero of=/dev/vda bs=1M count=4 conv=fsync 2>&1", "user": "root"}),
        )
        .await
        .unwrap();
    assert_eq!(wiped["exit_code"], 0, "{wiped}");
    t.action(&id, "stop").await.unwrap();
    let (status, body) = t
        .call(t.req(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/start")))
        .await
        .unwrap();
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("vm_error")),
        "{body}"
    );
    let message = body["message"].as_str().unwrap_or_default();
    assert!(message.contains("ended during boot"), "{body}");
    assert!(
        message.contains("the console ends:") && message.contains("Kernel panic"),
        "the error carries the guest's last console lines: {body}"
    );
    assert!(processes_mentioning(&dir).is_empty());
    t.delete(&id).await.unwrap();
}
