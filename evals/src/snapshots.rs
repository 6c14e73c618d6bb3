//! Snapshot benchmarks, on one sandbox of the run's VM size, each beside a baseline from the
//! same run:
//!
//! | measurement | baseline |
//! |---|---|
//! | pause with memory (to disk) | QEMU's own save of the same VM (`migrate`, `state_ms`) |
//! | resume from disk (verify + restore) | QEMU start + state load + agent answers (`boot_ms`) |
//! | snapshot (save, disk copy, hash, sign) | QEMU's save; the vCPUs' pause window; hashing |
//! | restore into a new sandbox (verify + restore + new identity) | `boot_ms` as above |
//! | fork ×1, ×4 | the source's pause window |
//! | checkpoint, rollback | the checkpoint's pause window |
//! | backup (save, hash, upload of what changed) | its pause window; QEMU's save; MB sent |
//!
//! The cold boot these compare with is the run's cold spawn.

use anyhow::{Context, Result};
use platinum_engine::Engine;
use platinum_engine::model::{CreateSandbox, CreateSnapshot, ForkRequest, Sandbox};
use std::time::Instant;

use crate::{Stat, ms, stat};

/// Samples of one measurement, ms.
type Series = Vec<f64>;

fn boot_ms(s: &Sandbox) -> f64 {
    s.runtime.as_ref().map_or(0.0, |r| r.boot_ms as f64)
}

/// The timings of the sandbox's last pause to disk, from its audit trail.
async fn last_suspend_state_ms(engine: &Engine, id: &str) -> Result<f64> {
    let events = engine.sandbox_events(id).await?;
    let (_, _, detail) = events
        .iter()
        .rev()
        .find(|(_, kind, _)| kind == "suspended")
        .context("no suspended event")?;
    detail["timings"]["state_ms"]
        .as_f64()
        .context("the suspended event has no timings")
}

/// Runs every snapshot measurement `iterations` times on a fresh sandbox.
pub async fn bench(engine: &Engine, iterations: usize) -> Result<Vec<Stat>> {
    let source = engine.create_sandbox(CreateSandbox::default()).await?;
    let id = source.id.clone();
    engine
        .exec(
            &id,
            platinum_engine::model::ExecRequest::shell(
                "nohup sh -c 'while :; do date +%s%N > /tmp/tick; sleep 0.2; done' >/dev/null 2>&1 &",
            ),
        )
        .await?;
    let [mut pause, mut pause_raw, mut resume, mut resume_boot]: [Series; 4] = Default::default();
    let [mut snap, mut snap_raw, mut snap_window, mut snap_hash]: [Series; 4] = Default::default();
    let [mut restore, mut restore_boot]: [Series; 2] = Default::default();
    let [mut fork1, mut fork1_window, mut fork4, mut fork4_window]: [Series; 4] =
        Default::default();
    let [mut ckpt, mut ckpt_window, mut rollback]: [Series; 3] = Default::default();
    let [
        mut backup,
        mut backup_window,
        mut backup_raw,
        mut backup_sent,
    ]: [Series; 4] = Default::default();
    for _ in 0..iterations {
        let t = Instant::now();
        engine.suspend_sandbox(&id, true).await?;
        pause.push(ms(t.elapsed()));
        pause_raw.push(last_suspend_state_ms(engine, &id).await?);
        let t = Instant::now();
        let back = engine.resume_sandbox(&id).await?;
        resume.push(ms(t.elapsed()));
        resume_boot.push(boot_ms(&back));

        let t = Instant::now();
        let s = engine
            .create_snapshot(&id, CreateSnapshot::default())
            .await?;
        snap.push(ms(t.elapsed()));
        snap_raw.push(s.timings.state_ms as f64);
        snap_window.push(s.timings.paused_ms as f64);
        snap_hash.push(s.timings.hash_ms as f64);
        let t = Instant::now();
        let r = engine
            .create_sandbox(CreateSandbox {
                snapshot: Some(s.id.clone()),
                ..Default::default()
            })
            .await?;
        restore.push(ms(t.elapsed()));
        restore_boot.push(boot_ms(&r));
        engine.kill_sandbox(&r.id).await?;
        engine.delete_snapshot(&s.id).await?;

        for (count, total, window) in [
            (1, &mut fork1, &mut fork1_window),
            (4, &mut fork4, &mut fork4_window),
        ] {
            let t = Instant::now();
            let f = engine
                .fork_sandbox(&id, ForkRequest { count, name: None })
                .await?;
            total.push(ms(t.elapsed()));
            window.push(f.source_paused_ms as f64);
            for copy in &f.sandboxes {
                engine.kill_sandbox(&copy.id).await?;
            }
        }

        let t = Instant::now();
        let c = engine.checkpoint(&id).await?;
        ckpt.push(ms(t.elapsed()));
        ckpt_window.push(c.timings.paused_ms as f64);
        let t = Instant::now();
        engine.rollback(&id, &c.id).await?;
        rollback.push(ms(t.elapsed()));
        engine.delete_snapshot(&c.id).await?;

        // The first backup sends everything, later ones what changed since.
        let t = Instant::now();
        let b = engine.backup_sandbox(&id).await?;
        backup.push(ms(t.elapsed()));
        backup_window.push(b.timings.paused_ms as f64);
        backup_raw.push(b.timings.state_ms as f64);
        backup_sent.push(b.upload.bytes_sent as f64 / 1e6);
    }
    for b in engine.list_backups(Some(&id)).await? {
        engine.delete_backup(&b.id).await?;
    }
    engine.kill_sandbox(&id).await?;
    let s = |name: &str, v: Series| stat(name, "ms", v);
    Ok(vec![
        s("pause with memory (to disk, VMM exits)", pause),
        s("  baseline: QEMU's save of the same VM", pause_raw),
        s("resume from disk (verify + restore)", resume),
        s("  baseline: QEMU start + load + agent answers", resume_boot),
        s("snapshot (save + disk + hash + sign)", snap),
        s("  baseline: QEMU's save of the same VM", snap_raw),
        s("  the sandbox's pause window", snap_window),
        s("  hashing (BLAKE3) + signing", snap_hash),
        s("restore into a new sandbox", restore),
        s(
            "  baseline: QEMU start + load + agent answers",
            restore_boot,
        ),
        s("fork x1", fork1),
        s("  the source's pause window", fork1_window),
        s("fork x4", fork4),
        s("  the source's pause window", fork4_window),
        s("checkpoint", ckpt),
        s("  the sandbox's pause window", ckpt_window),
        s("rollback", rollback),
        s("backup (save + hash + upload what changed)", backup),
        s("  the sandbox's pause window", backup_window),
        s("  baseline: QEMU's save of the same VM", backup_raw),
        stat("  MB sent per backup (the first: all)", "MB", backup_sent),
    ])
}
