//! A guest that stops answering costs the host nothing: with a real VM whose VMM is frozen
//! (SIGSTOP, so the agent's health pings time out), the host kills the VMM, the sandbox goes to
//! `error` with the reason, and `start` boots it again from its disk. A guest kernel that dies
//! during boot is booted once more, then the start fails with the kernel's last words in the
//! error and nothing left running.

use platinum_testkit::{TestServer, named_processes_mentioning, processes_mentioning};
use serde_json::{Value, json};
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
    // Pings every 3 s instead of 10: the give-up comes sooner, the path is the same.
    let t = TestServer::start_with(|c| c.health_interval = Duration::from_secs(3))
        .await
        .unwrap();
    let created = t.create(json!({})).await.unwrap();
    let id = created["id"].as_str().unwrap().to_string();
    let dir = t.data_dir().join("sandboxes").join(&id);
    let named = named_processes_mentioning(&dir);
    let vmm: Vec<i32> = named
        .iter()
        .filter(|(name, _)| name.starts_with("qemu"))
        .map(|(_, pid)| *pid)
        .collect();
    assert_eq!(vmm.len(), 1, "one VMM process for the sandbox: {named:?}");
    let pid = vmm[0];

    // Freeze the VMM: the guest agent cannot answer anything any more.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .expect("SIGSTOP the VMM");

    // Three failed health pings in a row and the host gives up.
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
    // The guest kernel dies during boot (told to run an init that does not exist: the sandbox's
    // record on the host gets the kernel argument). Two boots, then a typed error with the
    // kernel's last words; nothing left running. With the record restored it starts again.
    t.action(&id, "stop").await.unwrap();
    let record = dir.join("sandbox.json");
    let saved = std::fs::read(&record).unwrap();
    let mut broken: Value = serde_json::from_slice(&saved).unwrap();
    let cmdline = broken["base_cmdline"].as_str().unwrap().to_string();
    broken["base_cmdline"] = format!("{cmdline} rdinit=/nonexistent init=/nonexistent").into();
    std::fs::write(&record, serde_json::to_vec(&broken).unwrap()).unwrap();
    let failed = t
        .expect_error(
            t.req(reqwest::Method::POST, &format!("/v1/sandboxes/{id}/start")),
            502,
            "vm_error",
        )
        .await
        .unwrap();
    let message = failed["message"].as_str().unwrap_or_default();
    for needle in [
        "ended during boot",
        "a second boot",
        "the console ends:",
        "Kernel panic",
    ] {
        assert!(message.contains(needle), "{needle:?} not in {failed}");
    }
    assert!(processes_mentioning(&dir).is_empty());
    std::fs::write(&record, &saved).unwrap();
    let again = t.action(&id, "start").await.unwrap();
    assert_eq!(again["state"], "running", "{again}");
    t.delete(&id).await.unwrap();
}
