//! `platinum-evals`: latency and throughput benchmarks against a real server with real VMs.
//!
//! Every figure is printed as p50/p95 next to a baseline measured in the same run, so the gap is
//! Platinum's own cost and machine-to-machine differences cancel out:
//!
//! | measurement | baseline |
//! |---|---|
//! | cold spawn: `POST /v1/sandboxes` until the first exec returns | VMM start until the guest agent answers (`boot_ms`) |
//! | exec round trip of `true` over REST | the same exec through the engine in-process, and the raw transport echo |
//! | file upload / download over REST, MB/s | `dd` of the same size inside the guest |
//!
//! Nothing here asserts a threshold: speed goals are tracked by reading these numbers.

use anyhow::{Context, Result};
use clap::Parser;
use platinum::server::{Server, ServerConfig};
use platinum_engine::EngineConfig;
use platinum_engine::model::ExecRequest;
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, Instant};

/// Benchmark options.
#[derive(Debug, Parser)]
struct Args {
    /// Cold spawns to measure.
    #[arg(long, default_value_t = 5)]
    iterations: usize,
    /// Exec and echo round trips to measure.
    #[arg(long, default_value_t = 100)]
    round_trips: usize,
    /// File size for throughput, MiB.
    #[arg(long, default_value_t = 50)]
    file_mib: usize,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Debug, Serialize)]
struct Stat {
    name: String,
    unit: &'static str,
    n: usize,
    p50: f64,
    p95: f64,
}

fn stat(name: &str, unit: &'static str, mut v: Vec<f64>) -> Stat {
    v.sort_by(|a, b| a.total_cmp(b));
    let pick = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    Stat {
        name: name.into(),
        unit,
        n: v.len(),
        p50: pick(0.5),
        p95: pick(0.95),
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::Builder::new()
        .prefix("platinum-evals-")
        .tempdir()?;
    let agent = platinum::agent_binary::locate(None).map_err(anyhow::Error::msg)?;
    let mut config = ServerConfig::new(dir.path().join("data"), agent);
    config.listen = "127.0.0.1:0".parse()?;
    config.engine = EngineConfig {
        default_memory_mib: 512,
        max_upload_bytes: 4 << 30,
        ..EngineConfig::default()
    };
    let server = Server::start(config).await?;
    let engine = server.engine.clone();
    let http = reqwest::Client::new();
    let url = server.url();
    let key = server.api_key.clone();
    let accel = engine.host_info().accel;
    let mut stats = Vec::new();

    // Cold spawn.
    let (mut spawn, mut boot) = (Vec::new(), Vec::new());
    for _ in 0..args.iterations {
        let t = Instant::now();
        let s: serde_json::Value = http
            .post(format!("{url}/v1/sandboxes"))
            .bearer_auth(&key)
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let id = s["id"]
            .as_str()
            .context("create returned no id")?
            .to_string();
        http.post(format!("{url}/v1/sandboxes/{id}/exec"))
            .bearer_auth(&key)
            .json(&json!({"command": "true"}))
            .send()
            .await?
            .error_for_status()?;
        spawn.push(ms(t.elapsed()));
        boot.push(s["runtime"]["boot_ms"].as_f64().unwrap_or(0.0));
        engine.kill_sandbox(&id).await?;
    }
    stats.push(stat(
        "cold spawn (create -> first exec returns)",
        "ms",
        spawn,
    ));
    stats.push(stat("  baseline: VMM start -> agent answers", "ms", boot));

    // Round trips on one sandbox.
    let s = engine.create_sandbox(Default::default()).await?;
    let id = s.id.clone();
    let (mut rest, mut inproc, mut echo) = (Vec::new(), Vec::new(), Vec::new());
    let (mut spawn_in_guest, mut own) = (Vec::new(), Vec::new());
    for _ in 0..args.round_trips {
        let t = Instant::now();
        http.post(format!("{url}/v1/sandboxes/{id}/exec"))
            .bearer_auth(&key)
            .json(&json!({"command": ["true"]}))
            .send()
            .await?
            .error_for_status()?;
        let over_rest = ms(t.elapsed());
        rest.push(over_rest);
        let t = Instant::now();
        let out = engine
            .run(&id, ExecRequest::argv(vec!["true".into()]))
            .await?
            .finish()
            .await?;
        inproc.push(ms(t.elapsed()));
        let guest = ms(out
            .exit
            .guest_elapsed
            .context("the guest agent did not time the process")?);
        spawn_in_guest.push(guest);
        let round_trip = ms(engine.ping_guest(&id, "x".repeat(64)).await?);
        echo.push(round_trip);
        // What is left of the REST figure once the transport and the guest's own work are taken
        // out: HTTP, auth, the engine and the host side of the agent protocol.
        own.push(over_rest - round_trip - guest);
    }
    stats.push(stat("exec `true` round trip over REST", "ms", rest));
    stats.push(stat(
        "  exec `true` through the engine (no HTTP)",
        "ms",
        inproc,
    ));
    stats.push(stat("  baseline: raw transport echo (64 B)", "ms", echo));
    stats.push(stat(
        "  baseline: guest spawn+reap of `true`",
        "ms",
        spawn_in_guest,
    ));
    stats.push(stat("  Platinum's own (REST - echo - guest)", "ms", own));

    // File throughput.
    let size = args.file_mib << 20;
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    let (mut up, mut down, mut guest_dd) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.iterations.max(3) {
        let t = Instant::now();
        http.put(format!("{url}/v1/sandboxes/{id}/files"))
            .bearer_auth(&key)
            .query(&[("path", "bench.bin")])
            .body(data.clone())
            .send()
            .await?
            .error_for_status()?;
        up.push(args.file_mib as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let got = http
            .get(format!("{url}/v1/sandboxes/{id}/files"))
            .bearer_auth(&key)
            .query(&[("path", "bench.bin")])
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        anyhow::ensure!(
            got.len() == size,
            "download returned {} bytes, expected {size}",
            got.len()
        );
        down.push(args.file_mib as f64 / t.elapsed().as_secs_f64());
        let r = engine
            .exec(&id, ExecRequest::shell(format!("s=$(date +%s%N); dd if=/dev/zero of=dd.bin bs=1M count={} conv=fsync status=none; e=$(date +%s%N); echo $(( (e-s)/1000 ))", args.file_mib)))
            .await?;
        let micros: f64 = r.stdout.trim().parse().context("dd timing")?;
        guest_dd.push(args.file_mib as f64 / (micros / 1e6));
    }
    stats.push(stat("file upload over REST (atomic, fsync)", "MB/s", up));
    stats.push(stat("file download over REST", "MB/s", down));
    stats.push(stat(
        "  baseline: dd + fsync inside the guest",
        "MB/s",
        guest_dd,
    ));
    engine.kill_sandbox(&id).await?;

    println!(
        "Platinum benchmarks ({accel}, {} spawns, {} round trips, {} MiB files)",
        args.iterations, args.round_trips, args.file_mib
    );
    println!("{:<48} {:>10} {:>10}  unit", "measurement", "p50", "p95");
    for s in &stats {
        println!("{:<48} {:>10.1} {:>10.1}  {}", s.name, s.p50, s.p95, s.unit);
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&stats)?)?;
    }
    server.shutdown().await
}
