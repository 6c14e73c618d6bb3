//! `platinum-evals`: latency and throughput benchmarks against a real server with real VMs.
//!
//! Every figure is printed as p50/p95 next to a baseline measured in the same run, so the gap is
//! Platinum's own cost and machine-to-machine differences cancel out:
//!
//! | measurement | baseline |
//! |---|---|
//! | cold spawn (`boot: cold`): `POST /v1/sandboxes` until the first exec returns | VMM start until the guest agent answers (`boot_ms`) |
//! | create from the template's ready snapshot, create+delete per second, concurrent creates | see [`creates`] |
//! | exec round trip of `true` over REST | the same exec through the engine in-process, the raw transport echo, and the guest's spawn+reap of `true` timed in the guest; what is left (Platinum's own) is split into the guest agent's part (timed in the guest) and the host's |
//! | guest clock skew, right after create and while running | the measurement's own uncertainty |
//! | pause to disk, resume, snapshot, restore, fork ×1/×4, checkpoint, rollback | see [`snapshots`] |
//! | custom template builds (cold, cached), create from a custom template | see [`templates`] |
//! | volume hot-attach and detach | see [`volumes`] |
//! | edge proxy request, running and paused (auto-resume) sandbox | see [`edge`] |
//! | egress: connection setup and throughput through NAT and through the egress proxy | see [`egress`] |
//! | file upload / download over REST, MB/s | the same bytes through a process's stdin / stdout (the transport and the agent's stdio path), and `dd` of the same size inside the guest (its disk) |
//! | the host share: host writes/reads over REST, guest reads/writes over virtio-fs, MB/s | the framed file API's upload/download, `dd` to the guest's disk |
//!
//! Nothing here asserts a threshold: speed goals are tracked by reading these numbers.

use anyhow::{Context, Result};
use clap::Parser;
use platinum::server::{RunningServer, Server, ServerConfig};
use platinum_engine::model::ExecRequest;
use platinum_engine::{EngineConfig, ExecEvent, StreamOptions};
use serde::Serialize;
use serde_json::json;
use std::time::{Duration, Instant};

mod creates;
mod edge;
mod egress;
mod snapshots;
mod templates;
mod volumes;

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
    /// Creates started at once in the concurrency measurement.
    #[arg(long, default_value_t = 4)]
    concurrent: usize,
    /// Sequential create + delete pairs, without and with a warm pool (default: 4 × iterations).
    #[arg(long)]
    pairs: Option<usize>,
    /// Also run the snapshot benchmarks with guest RAM in a memory file on a scratch XFS
    /// filesystem with reflinks (root, a loop device and xfsprogs), beside the run's own.
    #[arg(long)]
    memory_file: bool,
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

/// Wall-clock time of each benchmark section, printed to stderr as it ends, so where a run's
/// time goes is visible beside the figures.
struct Sections(Instant);

impl Sections {
    /// Ends the section that began at the last call (or at the start) and names it.
    fn done(&mut self, section: &str) {
        eprintln!(
            "benchmark section {section}: {:.1}s",
            self.0.elapsed().as_secs_f64()
        );
        self.0 = Instant::now();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `argv` with `input` on its stdin (1 MiB writes) and returns how many bytes it printed:
/// the agent's stdio path, which moves the same bytes as a file transfer without the guest's
/// disk, the file request's handling or HTTP.
async fn pipe_through(
    engine: &platinum_engine::Engine,
    id: &str,
    argv: &[&str],
    input: &[u8],
) -> Result<usize> {
    let options = StreamOptions {
        stdin: true,
        ..StreamOptions::default()
    };
    let mut stream = engine
        .exec_stream(
            id,
            ExecRequest::argv(argv.iter().map(|a| a.to_string()).collect()),
            options,
        )
        .await?;
    let stdin = stream.stdin();
    let feed = async {
        for chunk in input.chunks(1 << 20) {
            stdin.write(chunk).await?;
        }
        stdin.close()
    };
    let drain = async {
        let mut printed = 0;
        while let Some(event) = stream.next().await? {
            match event {
                ExecEvent::Stdout(b) => printed += b.len(),
                ExecEvent::Exited(status) => {
                    anyhow::ensure!(status.code == Some(0), "{argv:?} ended with {status:?}");
                }
                _ => {}
            }
        }
        Ok::<_, anyhow::Error>(printed)
    };
    let (fed, printed) = tokio::join!(feed, drain);
    fed?;
    printed
}

/// A server of the run's settings with its data directory in `parent`.
async fn start_server(parent: &std::path::Path) -> Result<(tempfile::TempDir, RunningServer)> {
    let dir = tempfile::Builder::new()
        .prefix("platinum-evals-")
        .tempdir_in(parent)?;
    let agent = platinum::agent_binary::locate(None).map_err(anyhow::Error::msg)?;
    let mut config = ServerConfig::new(dir.path().join("data"), agent);
    config.listen = "127.0.0.1:0".parse()?;
    config.engine = EngineConfig {
        default_memory_mib: 512,
        max_upload_bytes: 4 << 30,
        ..EngineConfig::default()
    };
    let server = Server::start(config).await?;
    Ok((dir, server))
}

/// The snapshot benchmarks again, on a server whose data directory reflinks, so guest RAM is
/// a memory file that snapshots clone in place.
async fn memory_file_snapshots(iterations: usize) -> Result<Vec<Stat>> {
    let fs = platinum_testkit::ReflinkFs::create(16)?;
    let (_dir, server) = start_server(fs.path()).await?;
    let memory = server.engine.host_info().memory;
    anyhow::ensure!(
        memory.starts_with("a memory file"),
        "the scratch XFS server did not put RAM in a file: {memory}"
    );
    let mut stats = snapshots::bench(&server.engine, iterations).await;
    server.shutdown().await?;
    if let Ok(stats) = stats.as_mut() {
        for s in stats.iter_mut() {
            s.name = match s.name.strip_prefix("  ") {
                Some(rest) => format!("  [file RAM] {rest}"),
                None => format!("[file RAM] {}", s.name),
            };
        }
    }
    stats
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut sections = Sections(Instant::now());
    let (_dir, server) = start_server(&std::env::temp_dir()).await?;
    let engine = server.engine.clone();
    let http = reqwest::Client::new();
    let url = server.url();
    let key = server.api_key.clone();
    let accel = engine.host_info().accel;
    let mut stats = Vec::new();
    // The template's ready snapshot is built in the background at start; wait for it, so that
    // build does not share the CPUs with what is measured.
    creates::wait_for_ready(&engine).await?;
    sections.done("server start, template ready snapshot");

    // Cold spawn.
    let (mut spawn, mut boot) = (Vec::new(), Vec::new());
    let (mut skew, mut skew_within) = (Vec::new(), Vec::new());
    for _ in 0..args.iterations {
        let t = Instant::now();
        let created = http
            .post(format!("{url}/v1/sandboxes"))
            .bearer_auth(&key)
            .json(&json!({ "boot": "cold" }))
            .send()
            .await?;
        let status = created.status();
        let s: serde_json::Value = created.json().await?;
        anyhow::ensure!(status.is_success(), "create failed with {status}: {s}");
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
        let fresh = engine.clock_skew(&id).await?;
        skew.push(fresh.guest_ahead.abs());
        skew_within.push(fresh.within);
        engine.kill_sandbox(&id).await?;
    }
    stats.push(stat(
        "cold spawn (create -> first exec returns)",
        "ms",
        spawn,
    ));
    stats.push(stat("  baseline: VMM start -> agent answers", "ms", boot));
    sections.done("cold spawn");
    let rest = creates::Rest {
        http: http.clone(),
        url: url.clone(),
        key: key.clone(),
    };
    stats.extend(
        creates::bench(
            &engine,
            &rest,
            args.iterations,
            args.pairs.unwrap_or(args.iterations * 4),
            args.concurrent,
        )
        .await?,
    );
    sections.done("creates");

    stats.extend(templates::bench(&rest, args.iterations.min(2), args.iterations).await?);
    sections.done("templates");

    // Round trips on one sandbox.
    let s = engine.create_sandbox(Default::default()).await?;
    let id = s.id.clone();
    let (mut rest, mut inproc, mut echo) = (Vec::new(), Vec::new(), Vec::new());
    let (mut spawn_in_guest, mut agent_own, mut host_own, mut own) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for n in 0..args.round_trips {
        if n % 10 == 0 {
            let running = engine.clock_skew(&id).await?;
            skew.push(running.guest_ahead.abs());
            skew_within.push(running.within);
        }
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
        let untimed = || anyhow::anyhow!("the guest agent did not time the process");
        let guest = ms(out.exit.guest_elapsed.ok_or_else(untimed)?);
        let handled = ms(out.exit.guest_handled.ok_or_else(untimed)?);
        spawn_in_guest.push(guest);
        let round_trip = ms(engine.ping_guest(&id, "x".repeat(64)).await?);
        echo.push(round_trip);
        // The agent's work on the request besides the process itself: resolving the user,
        // stdio, forwarding the output and the exit.
        agent_own.push(handled - guest);
        // HTTP, auth, the engine and the host side of the agent protocol.
        host_own.push(over_rest - round_trip - handled);
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
    stats.push(stat(
        "    of which the guest agent's (in guest)",
        "ms",
        agent_own,
    ));
    stats.push(stat("    of which the host's", "ms", host_own));
    sections.done("round trips");

    // File throughput.
    let size = args.file_mib << 20;
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect();
    let (mut up, mut down, mut guest_dd) = (Vec::new(), Vec::new(), Vec::new());
    let (mut to_stdin, mut from_stdout) = (Vec::new(), Vec::new());
    let (mut share_up, mut share_down, mut share_guest_read, mut share_guest_write) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let has_share = engine.share_list(&id, "").await.is_ok();
    let mib = args.file_mib;
    let files = format!("{url}/v1/sandboxes/{id}/files");
    let shared = format!("{url}/v1/sandboxes/{id}/share/bench.bin");
    for _ in 0..args.iterations.max(3) {
        let put = http.put(&files).query(&[("path", "bench.bin")]);
        up.push(upload_rate(put.bearer_auth(&key).body(data.clone()), mib).await?);
        let get = http.get(&files).query(&[("path", "bench.bin")]);
        down.push(download_rate(get.bearer_auth(&key), size).await?);
        guest_dd.push(guest_dd_rate(&engine, &id, "if=/dev/zero of=dd.bin conv=fsync", mib).await?);

        let t = Instant::now();
        let sent = pipe_through(&engine, &id, &["sh", "-c", "exec cat >/dev/null"], &data).await?;
        anyhow::ensure!(sent == 0, "`cat >/dev/null` printed {sent} bytes");
        to_stdin.push(mib as f64 / t.elapsed().as_secs_f64());
        let t = Instant::now();
        let got = pipe_through(
            &engine,
            &id,
            &["head", "-c", &size.to_string(), "/dev/zero"],
            &[],
        )
        .await?;
        anyhow::ensure!(got == size, "`head` printed {got} bytes, expected {size}");
        from_stdout.push(mib as f64 / t.elapsed().as_secs_f64());

        if has_share {
            let put = http.put(&shared).bearer_auth(&key).body(data.clone());
            share_up.push(upload_rate(put, mib).await?);
            share_down.push(download_rate(http.get(&shared).bearer_auth(&key), size).await?);
            let read = "if=/mnt/dnah-share/bench.bin of=/dev/null";
            share_guest_read.push(guest_dd_rate(&engine, &id, read, mib).await?);
            let write = "if=/dev/zero of=/mnt/dnah-share/dd.bin conv=fsync";
            share_guest_write.push(guest_dd_rate(&engine, &id, write, mib).await?);
        }
    }
    let (up_copy, down_copy, dd_copy) = (up.clone(), down.clone(), guest_dd.clone());
    stats.push(stat("file upload over REST (atomic, fsync)", "MB/s", up));
    stats.push(stat(
        "  baseline: same bytes to a process's stdin",
        "MB/s",
        to_stdin,
    ));
    stats.push(stat(
        "  baseline: dd + fsync inside the guest",
        "MB/s",
        guest_dd,
    ));
    stats.push(stat("file download over REST", "MB/s", down));
    stats.push(stat(
        "  baseline: same bytes from a process's stdout",
        "MB/s",
        from_stdout,
    ));
    if has_share {
        stats.push(stat(
            "share: host writes a file (REST, no guest)",
            "MB/s",
            share_up,
        ));
        stats.push(stat(
            "  baseline: the framed file API upload",
            "MB/s",
            up_copy.clone(),
        ));
        stats.push(stat(
            "share: host reads a file (REST, no guest)",
            "MB/s",
            share_down,
        ));
        stats.push(stat(
            "  baseline: the framed file API download",
            "MB/s",
            down_copy.clone(),
        ));
        stats.push(stat(
            "share: guest reads it (dd over virtio-fs)",
            "MB/s",
            share_guest_read,
        ));
        stats.push(stat(
            "share: guest writes (dd + fsync over virtio-fs)",
            "MB/s",
            share_guest_write,
        ));
        stats.push(stat(
            "  baseline: dd + fsync to the guest's disk",
            "MB/s",
            dd_copy.clone(),
        ));
    }
    let last = engine.clock_skew(&id).await?;
    skew.push(last.guest_ahead.abs());
    skew_within.push(last.within);
    stats.push(stat(
        "guest clock skew |guest - host| (fresh, running)",
        "ms",
        skew,
    ));
    stats.push(stat(
        "  baseline: its uncertainty (half a round trip)",
        "ms",
        skew_within,
    ));
    engine.kill_sandbox(&id).await?;
    sections.done("file throughput");
    stats.extend(snapshots::bench(&engine, args.iterations).await?);
    sections.done("snapshots");
    stats.extend(volumes::bench(&engine, args.iterations).await?);
    sections.done("volumes");
    let rest = creates::Rest {
        http: http.clone(),
        url: url.clone(),
        key: key.clone(),
    };
    stats.extend(edge::bench(&engine, &rest, args.iterations, args.round_trips).await?);
    sections.done("edge");
    stats.extend(egress::bench(&engine, args.iterations).await?);
    sections.done("egress");
    if args.memory_file {
        stats.extend(memory_file_snapshots(args.iterations).await?);
        sections.done("snapshots, RAM in a memory file");
    }

    println!(
        "Platinum benchmarks ({accel}, {} spawns, {} round trips, {} MiB files)",
        args.iterations, args.round_trips, args.file_mib
    );
    println!("{:<58} {:>10} {:>10}  unit", "measurement", "p50", "p95");
    for s in &stats {
        println!("{:<58} {:>10.1} {:>10.1}  {}", s.name, s.p50, s.p95, s.unit);
    }
    if let Some(path) = args.json {
        std::fs::write(&path, serde_json::to_vec_pretty(&stats)?)?;
    }
    server.shutdown().await?;
    sections.done("server shutdown");
    Ok(())
}

/// MB/s of `dd bs=1M count=<mib> <operands>` timed inside the guest.
async fn guest_dd_rate(
    engine: &platinum_engine::Engine,
    id: &str,
    operands: &str,
    mib: usize,
) -> Result<f64> {
    let r = engine
        .exec(
            id,
            ExecRequest::shell(format!(
                "s=$(date +%s%N); dd {operands} bs=1M count={mib} status=none; e=$(date +%s%N); echo $(( (e-s)/1000 ))"
            )),
        )
        .await?;
    anyhow::ensure!(r.exit_code == Some(0), "dd {operands} failed: {}", r.stderr);
    let micros: f64 = r.stdout.trim().parse().context("dd timing")?;
    Ok(mib as f64 / (micros / 1e6))
}

/// MB/s of sending `req`, an upload of `mib` MiB.
async fn upload_rate(req: reqwest::RequestBuilder, mib: usize) -> Result<f64> {
    let t = Instant::now();
    req.send().await?.error_for_status()?;
    Ok(mib as f64 / t.elapsed().as_secs_f64())
}

/// MB/s of the download `req`, which must bring `size` bytes.
async fn download_rate(req: reqwest::RequestBuilder, size: usize) -> Result<f64> {
    let t = Instant::now();
    let got = req.send().await?.error_for_status()?.bytes().await?;
    anyhow::ensure!(
        got.len() == size,
        "a download returned {} bytes, expected {size}",
        got.len()
    );
    Ok((size >> 20) as f64 / t.elapsed().as_secs_f64())
}
