//! Egress benchmarks: HTTP to a server standing in for the internet (a network namespace at a
//! TEST-NET address, traffic never leaves the machine), measured with `curl` on the host and in
//! a sandbox, in the same run:
//!
//! | measurement | baseline |
//! |---|---|
//! | connection setup and first byte (`time_starttransfer` of a small GET), sandbox through NAT (no name rules) | the same `curl` from the host |
//! | the same, sandbox through the host's egress proxy (a policy that names a domain) | the NAT path above |
//! | download throughput (32 MiB), both paths | the same download from the host |
//!
//! Needs root and the sandbox network; skipped (and said so) without them.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use platinum_engine::Engine;
use platinum_engine::model::{EgressPolicy, ExecRequest};
use platinum_testkit::netns::Namespace;

use crate::{Stat, stat};

/// The stand-in server's address (TEST-NET-3).
const SERVER: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 80);
/// Size of the downloaded file.
const BLOB_MIB: usize = 32;

/// `curl` runs of `n` small GETs and `n` downloads, printing `ttfb <seconds>` and
/// `rate <bytes/s>` lines.
fn curl_script(n: usize) -> String {
    format!(
        "for i in $(seq {n}); do \
           curl -s -o /dev/null -w 'ttfb %{{time_starttransfer}}\\n' http://{SERVER}/; \
           curl -s -o /dev/null -w 'rate %{{speed_download}}\\n' http://{SERVER}/blob; \
         done"
    )
}

/// The `ttfb` values (ms) and `rate` values (MB/s) of [`curl_script`]'s output.
fn parse(out: &str) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut ttfb, mut rate) = (Vec::new(), Vec::new());
    for line in out.lines() {
        match line.split_once(' ') {
            Some(("ttfb", v)) => ttfb.push(v.trim().parse::<f64>().context("ttfb")? * 1000.0),
            Some(("rate", v)) => rate.push(v.trim().parse::<f64>().context("rate")? / 1e6),
            _ => {}
        }
    }
    anyhow::ensure!(
        !ttfb.is_empty() && !rate.is_empty() && ttfb.iter().all(|t| *t > 0.0),
        "curl measured nothing: {out}"
    );
    Ok((ttfb, rate))
}

/// Runs the egress measurements, `iterations` of each.
pub async fn bench(engine: &Engine, iterations: usize) -> Result<Vec<Stat>> {
    if let Some(why) = engine.host_info().network_unavailable {
        println!("egress benchmarks skipped: no sandbox network ({why})");
        return Ok(Vec::new());
    }
    let files = tempfile::tempdir()?;
    std::fs::write(files.path().join("blob"), vec![7u8; BLOB_MIB << 20])?;
    let dir = files.path().to_string_lossy().into_owned();
    let _ns = Namespace::create(
        &[SERVER],
        &[
            "/usr/bin/python3",
            "-m",
            "http.server",
            "80",
            "--bind",
            "0.0.0.0",
            "--directory",
            &dir,
        ],
    );
    let host_run = |script: String| async move {
        let out = tokio::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .await?;
        anyhow::Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while parse(&host_run(curl_script(1)).await?).is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the namespace's server never answered"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (host_ttfb, host_rate) = parse(&host_run(curl_script(iterations)).await?)?;

    let s = engine.create_sandbox(Default::default()).await?;
    let in_guest = |policy: EgressPolicy| {
        let id = s.id.clone();
        async move {
            engine.set_egress_policy(&id, policy).await?;
            let r = engine
                .exec(&id, ExecRequest::shell(curl_script(iterations)))
                .await?;
            parse(&r.stdout)
        }
    };
    let (nat_ttfb, nat_rate) = in_guest(EgressPolicy::default()).await?;
    // A name rule that matches nothing here: the sandbox's HTTP goes through the proxy.
    let (proxy_ttfb, proxy_rate) = in_guest(EgressPolicy {
        deny: vec!["*.bench.invalid".into()],
        ..EgressPolicy::default()
    })
    .await?;
    engine.kill_sandbox(&s.id).await?;
    Ok(vec![
        stat(
            "egress: connect + first byte, sandbox (NAT)",
            "ms",
            nat_ttfb,
        ),
        stat(
            "egress: connect + first byte, sandbox through the egress proxy",
            "ms",
            proxy_ttfb,
        ),
        stat("  baseline: the same curl from the host", "ms", host_ttfb),
        stat("egress: 32 MiB download, sandbox (NAT)", "MB/s", nat_rate),
        stat(
            "egress: 32 MiB download, sandbox through the egress proxy",
            "MB/s",
            proxy_rate,
        ),
        stat(
            "  baseline: the same download from the host",
            "MB/s",
            host_rate,
        ),
    ])
}
