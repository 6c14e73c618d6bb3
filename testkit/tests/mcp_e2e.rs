//! The MCP server with real clients and real microVMs.
//!
//! - The official Python SDK (`evals/mcp/conformance.py`) over Streamable HTTP and over stdio
//!   (`platinum mcp` relaying to the server), in both protocol eras: every tool called, results
//!   checked against their output schemas, progress during a long command, a cancelled
//!   `sleep 600` gone from the guest, image content blocks (a PNG file, a rich result, a
//!   matplotlib figure in a `code-interpreter-v1` sandbox), resources, tool errors with codes.
//! - The official MCP Inspector CLI (`evals/mcp/inspector.sh`) over both transports and eras:
//!   `tools/list --strict`, tool errors as results, a sandbox created over HTTP and used over
//!   stdio.
//! - `platinum mcp` with no server running: it starts an embedded one and serves from it.
//! - `/mcp` is behind the API key and refuses foreign `Host` headers (DNS rebinding).
//! - `platinum mcp install` merges into an existing client config.
//!
//! The clients are pinned and installed under ~/.cache/platinum/sdk/mcp by `evals/mcp/setup.sh`
//! ([`platinum_testkit::agent_clients`] runs it).

use platinum_testkit::{
    TestServer, agent_clients, platinum_bin, processes_mentioning, repo_root, temp_root,
};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs a conformance client, streaming its output to the test log; returns its output.
fn run(mut cmd: Command, what: &str) -> Output {
    cmd.stdin(Stdio::null());
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- {what} ---\n{text}");
    assert!(
        out.status.success(),
        "{what} failed (exit {:?}); output above",
        out.status.code()
    );
    out
}

fn python(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(agent_clients().join("py/bin/python"));
    cmd.arg(repo_root().join("evals/mcp/conformance.py"))
        .args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.env_remove("PLATINUM_DATA_DIR");
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_sdk_and_inspector_drive_every_tool_over_http_and_stdio() {
    let t = TestServer::start().await.unwrap();
    let bin = platinum_bin();
    let endpoint = format!("{}/mcp", t.url);
    let env = [
        ("PLATINUM_URL", t.url.as_str()),
        ("PLATINUM_API_KEY", t.key.as_str()),
    ];
    let args = [
        "--http",
        endpoint.as_str(),
        "--key",
        t.key.as_str(),
        "--stdio",
        bin.to_str().unwrap(),
        // CI builds this template's image (platinum.sh); its sandbox has matplotlib.
        "--code-template",
        "code-interpreter-v1",
    ];
    let cmd = python(&args, &env);
    let py = tokio::task::spawn_blocking(move || run(cmd, "Python MCP SDK conformance"))
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&py.stdout).into_owned();
    for label in ["http-modern", "http-legacy", "stdio-legacy", "stdio-modern"] {
        assert!(
            log.contains(&format!("PASS {label}")),
            "no PASS for {label}"
        );
    }
    assert!(
        log.contains("protocol 2026-07-28") && log.contains("protocol 2025-11-25"),
        "both eras negotiated"
    );
    let tools = platinum_mcp::PlatinumMcp::tools().len();
    assert!(
        log.contains(&format!("all {tools} tools called")),
        "every one of the {tools} tools was called: {log}"
    );

    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join("evals/mcp/inspector.sh"))
        .args([
            endpoint.as_str(),
            t.key.as_str(),
            platinum_bin().to_str().unwrap(),
        ])
        .envs(env);
    let out = tokio::task::spawn_blocking(move || run(cmd, "MCP Inspector CLI"))
        .await
        .unwrap();
    let log = String::from_utf8_lossy(&out.stdout).into_owned();
    for label in ["http/legacy", "stdio/legacy", "http/modern", "stdio/modern"] {
        assert!(
            log.contains(&format!("ok {label}:")),
            "no ok for {label}: {log}"
        );
    }
    assert!(log.contains("ok inspector: sandbox"), "{log}");

    // Nothing the clients started is left running in the server.
    let (_, list) = t
        .call(t.req(reqwest::Method::GET, "/v1/sandboxes?state=running"))
        .await
        .unwrap();
    assert_eq!(
        list["sandboxes"],
        Value::Array(vec![]),
        "sandboxes left behind: {list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_endpoint_needs_the_key_and_a_local_host() {
    let t = TestServer::start().await.unwrap();
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "0"}}});
    let post = |host: Option<&str>, key: bool| {
        let mut r = t
            .anon(reqwest::Method::POST, "/mcp")
            .header("Accept", "application/json, text/event-stream")
            .json(&init);
        if key {
            r = r.bearer_auth(&t.key);
        }
        if let Some(h) = host {
            r = r.header("Host", h);
        }
        r
    };
    t.expect_error(post(None, false), 401, "unauthorized")
        .await
        .unwrap();
    let resp = post(Some("evil.example"), true).send().await.unwrap();
    assert_eq!(resp.status(), 403, "a foreign Host header must be refused");
    let resp = post(None, true).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("\"serverInfo\":{\"name\":\"platinum\""),
        "{text}"
    );
    drop(t);

    // A host named with `--mcp-allowed-host` is accepted.
    let t = TestServer::start_with(|c| c.mcp.allowed_hosts = vec!["sbx.example".into()])
        .await
        .unwrap();
    let resp = t
        .anon(reqwest::Method::POST, "/mcp")
        .header("Accept", "application/json, text/event-stream")
        .header("Host", "sbx.example")
        .bearer_auth(&t.key)
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "an allowed host is served");
}

#[test]
fn platinum_mcp_starts_an_embedded_server_when_none_runs() {
    let dir = tempfile::Builder::new()
        .prefix("platinum-mcp-")
        .tempdir_in(temp_root())
        .unwrap();
    let data = dir.path().join("data");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let endpoint = format!("{url}/mcp");
    let bin = platinum_bin();
    let mut cmd = python(
        &[
            "--http",
            &endpoint,
            "--key",
            "pt_embedded_0123456789abcdefghijklm",
            "--stdio",
            bin.to_str().unwrap(),
            "--stdio-arg=--no-network",
            "--only",
            "stdio",
            "--quick",
        ],
        &[
            ("PLATINUM_URL", &url),
            ("PLATINUM_API_KEY", "pt_embedded_0123456789abcdefghijklm"),
        ],
    );
    cmd.env("PLATINUM_DATA_DIR", &data);
    let out = run(cmd, "Python MCP SDK against an embedded server");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("PASS stdio-legacy") && log.contains("PASS stdio-modern"),
        "{log}"
    );
    // The embedded server used the data directory it was given, and is gone with its client.
    assert!(
        data.join("platinum.db").is_file(),
        "no state in {}",
        data.display()
    );
    let left = processes_mentioning(dir.path());
    assert!(left.is_empty(), "processes left behind: {left:?}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} still taken"
    );
}

#[test]
fn mcp_install_merges_into_existing_client_configs() {
    let home = tempfile::tempdir().unwrap();
    let claude = home.path().join(".claude.json");
    std::fs::write(
        &claude,
        r#"{"numStartups": 3, "mcpServers": {"other": {"type": "stdio", "command": "x"}}}"#,
    )
    .unwrap();
    let install = |args: &[&str]| {
        Command::new(platinum_bin())
            .args(["mcp", "install"])
            .args(args)
            .env("HOME", home.path())
            .env_remove("PLATINUM_URL")
            .current_dir(home.path())
            .output()
            .unwrap()
    };
    let out = install(&["claude"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&claude).unwrap()).unwrap();
    assert_eq!(v["numStartups"], 3);
    assert_eq!(v["mcpServers"]["other"]["command"], "x");
    assert_eq!(v["mcpServers"]["platinum"]["type"], "stdio");
    assert_eq!(
        v["mcpServers"]["platinum"]["args"],
        serde_json::json!(["mcp"])
    );
    assert!(Path::new(v["mcpServers"]["platinum"]["command"].as_str().unwrap()).is_absolute());
    assert!(home.path().join(".claude.json.bak").is_file());

    let out = install(&["windsurf", "--http", "http://10.0.0.5:7070/mcp"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: Value = serde_json::from_str(
        &std::fs::read_to_string(home.path().join(".codeium/windsurf/mcp_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        w["mcpServers"]["platinum"]["serverUrl"],
        "http://10.0.0.5:7070/mcp"
    );

    let out = install(&["cursor", "--scope", "project", "--print"]);
    assert!(out.status.success());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        printed["mcpServers"]["platinum"]["args"],
        serde_json::json!(["mcp"])
    );
    assert!(
        !home.path().join(".cursor").exists(),
        "--print writes nothing"
    );

    std::fs::write(&claude, "{ not json").unwrap();
    let out = install(&["claude"]);
    assert!(
        !out.status.success(),
        "a broken config is refused, not overwritten"
    );
    assert_eq!(std::fs::read_to_string(&claude).unwrap(), "{ not json");
}
