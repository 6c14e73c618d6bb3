//! Edge proxy benchmarks, on one running sandbox serving `python3 -m http.server`, beside a
//! baseline from the same run:
//!
//! | measurement | baseline |
//! |---|---|
//! | `GET /edge/<id>/8000/` with an edge token header, sandbox running | the same request through the API-key proxy `/v1/sandboxes/<id>/ports/8000/` |
//! | the same edge request from an HTTP/2 client (h2c, prior knowledge, one connection) | the HTTP/1.1 edge request above |
//! | the same edge request on a paused sandbox (the edge resumes it, then serves) | `POST .../resume`, then the API-key proxy request |

use anyhow::{Context, Result};
use platinum_engine::Engine;
use serde_json::json;
use std::time::{Duration, Instant};

use crate::creates::Rest;
use crate::{Stat, ms, stat};

async fn get_ok(req: reqwest::RequestBuilder) -> Result<()> {
    let resp = req.send().await?;
    anyhow::ensure!(resp.status().is_success(), "GET answered {}", resp.status());
    resp.bytes().await?;
    Ok(())
}

/// Runs the edge measurements: `round_trips` requests on a running sandbox, `iterations`
/// pause-then-request cycles.
pub async fn bench(
    engine: &Engine,
    rest: &Rest,
    iterations: usize,
    round_trips: usize,
) -> Result<Vec<Stat>> {
    let Rest { http, url, key } = rest;
    let s = engine.create_sandbox(Default::default()).await?;
    let id = s.id.clone();
    http.post(format!("{url}/v1/sandboxes/{id}/exec"))
        .bearer_auth(key)
        .json(&json!({
            "command": "exec python3 -m http.server 8000 --bind 127.0.0.1 --directory /tmp",
            "background": true
        }))
        .send()
        .await?
        .error_for_status()?;
    let proxied = format!("{url}/v1/sandboxes/{id}/ports/8000/");
    let deadline = Instant::now() + Duration::from_secs(60);
    while get_ok(http.get(&proxied).bearer_auth(key)).await.is_err() {
        anyhow::ensure!(Instant::now() < deadline, "the http.server never answered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let minted: serde_json::Value = http
        .post(format!("{url}/v1/sandboxes/{id}/ports/8000/tokens"))
        .bearer_auth(key)
        .json(&json!({ "ttl_secs": 3600 }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = minted["token"]
        .as_str()
        .context("no token minted")?
        .to_string();
    let edge = format!("{url}/edge/{id}/8000/");
    let edge_get = || http.get(&edge).header("x-platinum-edge-token", &token);
    let h2 = reqwest::Client::builder().http2_prior_knowledge().build()?;

    let (mut via_edge, mut via_h2, mut via_key) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..round_trips {
        let t = Instant::now();
        get_ok(edge_get()).await?;
        via_edge.push(ms(t.elapsed()));
        let t = Instant::now();
        get_ok(h2.get(&edge).header("x-platinum-edge-token", &token)).await?;
        via_h2.push(ms(t.elapsed()));
        let t = Instant::now();
        get_ok(http.get(&proxied).bearer_auth(key)).await?;
        via_key.push(ms(t.elapsed()));
    }

    let (mut woken, mut resumed) = (Vec::new(), Vec::new());
    for _ in 0..iterations {
        engine.pause_sandbox(&id).await?;
        let t = Instant::now();
        get_ok(edge_get()).await?;
        woken.push(ms(t.elapsed()));
        engine.pause_sandbox(&id).await?;
        let t = Instant::now();
        http.post(format!("{url}/v1/sandboxes/{id}/resume"))
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?;
        get_ok(http.get(&proxied).bearer_auth(key)).await?;
        resumed.push(ms(t.elapsed()));
    }
    engine.kill_sandbox(&id).await?;
    Ok(vec![
        stat(
            "edge request, running sandbox (token header)",
            "ms",
            via_edge,
        ),
        stat("  baseline: API-key proxy /v1/.../ports", "ms", via_key),
        stat(
            "edge request, running sandbox, HTTP/2 client (h2c)",
            "ms",
            via_h2,
        ),
        stat(
            "edge request, paused sandbox (auto-resume + serve)",
            "ms",
            woken,
        ),
        stat("  baseline: POST resume, then API-key proxy", "ms", resumed),
    ])
}
