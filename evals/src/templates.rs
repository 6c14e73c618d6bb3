//! Custom template benchmarks over REST, each beside a baseline from the same run:
//!
//! | measurement | baseline |
//! |---|---|
//! | cold build (`force`: every step runs, the builder VM boots, the ready snapshot is taken) | the run's cold spawn |
//! | cached build (the same request again: every step from the cache) | the cold build |
//! | create from the custom template (create → first exec returns) | create from `base` the same way |
//!
//! The template copies a small file, runs two commands and starts an HTTP server whose ready
//! check must pass before the ready snapshot is taken, so a create restores it serving.

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::time::{Duration, Instant};

use crate::creates::Rest;
use crate::{Stat, ms, stat};

/// Name of the benchmark's template.
const NAME: &str = "bench-web";

/// A tar archive of one small file, and its SHA-256.
fn archive() -> Result<(Vec<u8>, String)> {
    let dir = tempfile::tempdir()?;
    std::fs::write(dir.path().join("index.html"), "<h1>bench</h1>\n")?;
    let out = std::process::Command::new("tar")
        .args([
            "--sort=name",
            "--mtime=@0",
            "--owner=0",
            "--group=0",
            "-cf",
            "-",
            "-C",
        ])
        .arg(dir.path())
        .arg("index.html")
        .output()
        .context("running tar")?;
    anyhow::ensure!(out.status.success(), "tar failed");
    let key = hex::encode(Sha256::digest(&out.stdout));
    Ok((out.stdout, key))
}

/// Starts a build and waits for its end; returns the build and how long it took.
async fn build(rest: &Rest, body: &Value) -> Result<(Value, f64)> {
    let t = Instant::now();
    let started = rest
        .call(reqwest::Method::POST, "/v1/templates", Some(body.clone()))
        .await?;
    let id = started["id"].as_str().context("no build id")?.to_string();
    loop {
        let b = rest
            .call(
                reqwest::Method::GET,
                &format!("/v1/template-builds/{id}"),
                None,
            )
            .await?;
        match b["status"].as_str() {
            Some("building") => tokio::time::sleep(Duration::from_millis(50)).await,
            Some("ready") => return Ok((b, ms(t.elapsed()))),
            _ => anyhow::bail!("build {id} failed: {b}"),
        }
    }
}

/// The measurements in the module docs; `builds` cold and cached builds, `creates` creates of
/// each kind.
pub async fn bench(rest: &Rest, builds: usize, creates: usize) -> Result<Vec<Stat>> {
    let (tar, key) = archive()?;
    let resp = rest
        .http
        .put(format!("{}/v1/template-files/{key}", rest.url))
        .bearer_auth(&rest.key)
        .body(tar)
        .send()
        .await?;
    anyhow::ensure!(resp.status().is_success(), "upload: {}", resp.status());
    let body = |force: bool| {
        json!({
            "name": NAME,
            "from_image": "python:3.11",
            "steps": [
                { "type": "copy", "files": key, "dest": "/srv/site/" },
                { "type": "run", "command": "echo built > /srv/site/built.txt", "user": "root" },
                { "type": "run", "command": "python3 -c 'import json, http.server'" },
            ],
            "start_cmd": "python3 -m http.server 8080 --bind 127.0.0.1 --directory /srv/site",
            "ready_cmd": "curl -sf http://127.0.0.1:8080/built.txt",
            "force": force,
            "timeout_secs": 600,
        })
    };
    let (mut cold, mut cached) = (Vec::new(), Vec::new());
    for _ in 0..builds {
        let (b, t) = build(rest, &body(true)).await?;
        anyhow::ensure!(b["cached_steps"] == 0, "a forced build used the cache: {b}");
        cold.push(t);
        let (b, t) = build(rest, &body(false)).await?;
        anyhow::ensure!(b["run_steps"] == 0, "an unchanged build ran steps: {b}");
        cached.push(t);
    }
    let (mut custom, mut base) = (Vec::new(), Vec::new());
    for _ in 0..creates {
        for (template, into) in [(NAME, &mut custom), ("base", &mut base)] {
            let (s, t) = rest
                .create_and_exec(&json!({ "template": template }))
                .await?;
            into.push(t);
            let id = s["id"].as_str().context("no id")?;
            rest.call(
                reqwest::Method::DELETE,
                &format!("/v1/sandboxes/{id}"),
                None,
            )
            .await?;
        }
    }
    rest.call(
        reqwest::Method::DELETE,
        &format!("/v1/templates/{NAME}"),
        None,
    )
    .await?;
    Ok(vec![
        stat(
            "template build, cold (every step, ready snapshot)",
            "ms",
            cold,
        ),
        stat("  template build, cached (no step runs)", "ms", cached),
        stat(
            "create from a custom template (-> first exec)",
            "ms",
            custom,
        ),
        stat("  baseline: create from base (-> first exec)", "ms", base),
    ])
}
