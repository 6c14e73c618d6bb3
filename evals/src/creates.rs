//! Create benchmarks over REST, each beside the run's cold boot:
//!
//! | measurement | baseline |
//! |---|---|
//! | create from the template's ready snapshot (create → first exec returns) | its restore (VMM start → agent answers) and its verification; the cold spawn of the same run |
//! | sequential create + delete, per second | the same loop's per-pair latency |
//! | `concurrent` creates at once: each, and the slowest | the sequential create |
//! | warm claim from a pool (create → first exec returns) | a second exec on the same sandbox (the exec's own round trip) |
//! | sequential create + delete with the pool refilling, per second | the same without a pool |
//!
//! The cold spawn these compare with is measured first in `main` with `boot: cold`.

use anyhow::{Context, Result};
use platinum_engine::Engine;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

use crate::{Stat, ms, stat};

/// Sandboxes the benchmark's warm pool keeps ready.
const POOL_SIZE: u64 = 2;

/// A REST client of the run's server.
pub struct Rest {
    /// HTTP client.
    pub http: reqwest::Client,
    /// Base URL.
    pub url: String,
    /// API key.
    pub key: String,
}

impl Rest {
    /// Creates a sandbox with `body` and runs `true` in it; returns the sandbox and the time
    /// from the create request to the exec's answer.
    pub async fn create_and_exec(&self, body: &Value) -> Result<(Value, f64)> {
        let t = Instant::now();
        let created = self
            .http
            .post(format!("{}/v1/sandboxes", self.url))
            .bearer_auth(&self.key)
            .json(body)
            .send()
            .await?;
        let status = created.status();
        let s: Value = created.json().await?;
        anyhow::ensure!(status.is_success(), "create failed with {status}: {s}");
        let id = s["id"].as_str().context("create returned no id")?;
        self.http
            .post(format!("{}/v1/sandboxes/{id}/exec", self.url))
            .bearer_auth(&self.key)
            .json(&json!({"command": ["true"]}))
            .send()
            .await?
            .error_for_status()?;
        Ok((s, ms(t.elapsed())))
    }

    /// `method` `path` with `body`, the JSON answer (an error status fails).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "{path}: {status}: {text}");
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Waits until pool `id` has `ready` sandboxes ready and none starting.
    async fn pool_ready(&self, id: &str, ready: u64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let p = self
                .call(reqwest::Method::GET, &format!("/v1/pools/{id}"), None)
                .await?;
            if p["ready"].as_u64() == Some(ready) && p["starting"].as_u64() == Some(0) {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "pool {id} never got {ready} ready: {p}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delete(&self, s: &Value) -> Result<()> {
        let id = s["id"].as_str().context("no id")?;
        self.http
            .delete(format!("{}/v1/sandboxes/{id}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

/// Waits (at most 10 minutes) until the engine has a template ready snapshot.
pub async fn wait_for_ready(engine: &Engine) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    while engine.ready_snapshots().await?.is_empty() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "no template ready snapshot after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(())
}

/// Runs the create measurements: `iterations` creates from the ready snapshot, `pairs`
/// sequential create+delete pairs (without a pool, then with one), and `concurrent` creates at
/// once.
pub async fn bench(
    engine: &Engine,
    rest: &Rest,
    iterations: usize,
    pairs: usize,
    concurrent: usize,
) -> Result<Vec<Stat>> {
    wait_for_ready(engine).await?;
    let (mut create, mut restore, mut verify) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let (s, took) = rest.create_and_exec(&json!({})).await?;
        let start = &s["runtime"]["start"];
        anyhow::ensure!(
            start["path"] == "template_snapshot",
            "a create did not restore the ready snapshot: {start}"
        );
        create.push(took);
        restore.push(start["vm_ms"].as_f64().unwrap_or(0.0));
        verify.push(start["verify_ms"].as_f64().unwrap_or(0.0));
        rest.delete(&s).await?;
    }

    let mut pair = Vec::new();
    let loop_started = Instant::now();
    for _ in 0..pairs {
        let t = Instant::now();
        let (s, _) = rest.create_and_exec(&json!({})).await?;
        rest.delete(&s).await?;
        pair.push(ms(t.elapsed()));
    }
    let rate = pairs as f64 / loop_started.elapsed().as_secs_f64();

    let started = Instant::now();
    let all = futures::future::join_all(
        (0..concurrent).map(|_| async { rest.create_and_exec(&json!({})).await }),
    )
    .await;
    let wall = ms(started.elapsed());
    let mut each = Vec::new();
    for r in all {
        let (s, took) = r?;
        each.push(took);
        rest.delete(&s).await?;
    }
    let slowest = each.iter().copied().fold(0.0, f64::max);

    // A warm pool of the default template and size.
    let pool = rest
        .call(
            reqwest::Method::POST,
            "/v1/pools",
            Some(json!({ "size": POOL_SIZE })),
        )
        .await?;
    let pool_id = pool["id"].as_str().context("pool id")?.to_string();
    let (mut claim, mut exec_again) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        rest.pool_ready(&pool_id, POOL_SIZE).await?;
        let (s, took) = rest.create_and_exec(&json!({})).await?;
        anyhow::ensure!(
            s["runtime"]["start"]["path"] == "pool",
            "a create did not claim from the pool: {}",
            s["runtime"]["start"]
        );
        claim.push(took);
        let id = s["id"].as_str().context("no id")?;
        let t = Instant::now();
        rest.call(
            reqwest::Method::POST,
            &format!("/v1/sandboxes/{id}/exec"),
            Some(json!({"command": ["true"]})),
        )
        .await?;
        exec_again.push(ms(t.elapsed()));
        rest.delete(&s).await?;
    }
    rest.pool_ready(&pool_id, POOL_SIZE).await?;
    let mut pooled_pair = Vec::new();
    let (mut claimed, mut fell_back) = (0, 0);
    let loop_started = Instant::now();
    for _ in 0..pairs {
        let t = Instant::now();
        let (s, _) = rest.create_and_exec(&json!({})).await?;
        if s["runtime"]["start"]["path"] == "pool" {
            claimed += 1;
        } else {
            fell_back += 1;
        }
        rest.delete(&s).await?;
        pooled_pair.push(ms(t.elapsed()));
    }
    let pooled_rate = pairs as f64 / loop_started.elapsed().as_secs_f64();
    rest.call(
        reqwest::Method::DELETE,
        &format!("/v1/pools/{pool_id}"),
        None,
    )
    .await?;

    Ok(vec![
        stat("create from the template's ready snapshot", "ms", create),
        stat(
            "  baseline: its restore (VMM start -> agent)",
            "ms",
            restore,
        ),
        stat("  baseline: checking the snapshot", "ms", verify),
        stat("sequential create + delete (one pair)", "ms", pair),
        stat("  pairs per second", "1/s", vec![rate]),
        stat(
            &format!("{concurrent} concurrent creates (each)"),
            "ms",
            each,
        ),
        stat("  the slowest of them", "ms", vec![slowest]),
        stat("  all of them, wall clock", "ms", vec![wall]),
        stat("warm claim from a pool (create -> first exec)", "ms", claim),
        stat("  baseline: a second exec on it", "ms", exec_again),
        stat(
            &format!(
                "create + delete with the pool refilling ({claimed} claimed, {fell_back} restored)"
            ),
            "ms",
            pooled_pair,
        ),
        stat("  pairs per second", "1/s", vec![pooled_rate]),
    ])
}
