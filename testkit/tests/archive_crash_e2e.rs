//! A server killed (`SIGKILL`) while it archives a sandbox: on restart the sandbox is either
//! still on the host (`stopped`, its directory whole) or wholly archived, never half of each;
//! either way it starts with its files, and archiving it again completes.

use platinum_testkit::up::UpProcess;
use platinum_testkit::{temp_root, test_network};
use reqwest::Client;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The server's key.
const KEY: &str = "pt_crash_test_key_0123456789abcdefghijkl";

struct Api {
    http: Client,
    url: String,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(KEY);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let r = req.send().await.unwrap();
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{path}: {status} {v}");
        v
    }

    async fn out(&self, id: &str, cmd: &str) -> String {
        let r = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/sandboxes/{id}/exec"),
                Some(json!({ "command": cmd })),
            )
            .await;
        assert_eq!(r["exit_code"], 0, "{cmd}: {r}");
        r["stdout"].as_str().unwrap_or_default().trim().to_string()
    }

    /// Starts `id` and checks its file is the one written before.
    async fn start_with(&self, id: &str, sum: &str) {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{id}/start"),
            None,
        )
        .await;
        assert_eq!(self.out(id, "sha256sum big.bin | cut -c1-64").await, sum);
    }

    async fn state(&self, id: &str) -> String {
        let s = self
            .call(reqwest::Method::GET, &format!("/v1/sandboxes/{id}"), None)
            .await;
        s["state"].as_str().unwrap().to_string()
    }
}

/// Chunk files in the default object store.
fn chunks(data: &std::path::Path) -> usize {
    walk(&data.join("archive/chunks"))
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| {
        d.flatten()
            .map(|e| {
                if e.path().is_dir() {
                    walk(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_archive_leaves_the_sandbox_local_or_archived() {
    let data = tempfile::Builder::new()
        .prefix("platinum-crash-")
        .tempdir_in(temp_root())
        .unwrap();
    let net = test_network();
    let mut up = UpProcess::start(data.path(), KEY, Some(net.clone()))
        .await
        .unwrap();
    let api = Api {
        http: Client::new(),
        url: up.url.clone(),
    };
    let s = api
        .call(reqwest::Method::POST, "/v1/sandboxes", Some(json!({})))
        .await;
    let id = s["id"].as_str().unwrap().to_string();
    // Fresh random data: many chunks the store has never seen, so the upload takes a while.
    let sum = api
        .out(
            &id,
            "head -c 96M /dev/urandom > big.bin && sync && sha256sum big.bin | cut -c1-64",
        )
        .await;
    api.call(
        reqwest::Method::POST,
        &format!("/v1/sandboxes/{id}/stop"),
        None,
    )
    .await;

    // Archive, and kill the server as soon as chunks are arriving.
    let before = chunks(data.path());
    let (http, url) = (api.http.clone(), api.url.clone());
    let archiving = tokio::spawn(async move {
        http.post(format!("{url}/v1/sandboxes/{}/archive", id.clone()))
            .bearer_auth(KEY)
            .send()
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    while chunks(data.path()) <= before + 2 {
        assert!(Instant::now() < deadline, "no chunk reached the store");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    up.crash();
    let _ = archiving.await;
    drop(up);

    let up = UpProcess::start(data.path(), KEY, Some(net)).await.unwrap();
    let api = Api {
        http: Client::new(),
        url: up.url.clone(),
    };
    let id = s["id"].as_str().unwrap().to_string();
    let dir = data.path().join("sandboxes").join(&id);
    let state = api.state(&id).await;
    eprintln!("after the crash mid-archive the sandbox is {state}");
    match state.as_str() {
        "stopped" => assert!(dir.join("sandbox.json").is_file(), "stopped, yet not whole"),
        "archived" => assert!(!dir.exists(), "archived, yet still on the host"),
        other => panic!("after the crash the sandbox is {other}"),
    }
    assert!(
        !data.path().join("restoring").exists()
            || std::fs::read_dir(data.path().join("restoring"))
                .unwrap()
                .next()
                .is_none()
    );
    api.start_with(&id, &sum).await;

    // Archiving again completes, and the sandbox comes back from it.
    api.call(
        reqwest::Method::POST,
        &format!("/v1/sandboxes/{id}/stop"),
        None,
    )
    .await;
    let archived = api
        .call(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{id}/archive"),
            None,
        )
        .await;
    assert_eq!(archived["state"], "archived", "{archived}");
    assert!(!dir.exists());
    api.start_with(&id, &sum).await;
}
