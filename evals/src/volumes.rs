//! Volume benchmarks, on one running sandbox, beside a baseline from the same run:
//!
//! | measurement | baseline |
//! |---|---|
//! | hot-attach a volume (disk hot-plugged + mounted by the guest agent) | an exec round trip of `true` |
//! | detach it (unmount + hot-unplug) | the same |

use anyhow::Result;
use platinum_engine::Engine;
use platinum_engine::model::{AttachVolume, CreateSandbox, CreateVolume, ExecRequest};
use std::time::Instant;

use crate::{Stat, ms, stat};

/// Attaches and detaches a volume `iterations` times on a fresh sandbox.
pub async fn bench(engine: &Engine, iterations: usize) -> Result<Vec<Stat>> {
    let sandbox = engine.create_sandbox(CreateSandbox::default()).await?;
    let id = sandbox.id.clone();
    let volume = engine
        .create_volume(CreateVolume {
            name: format!("bench-{id}"),
            size_mib: Some(256),
        })
        .await?;
    let (mut attach, mut detach, mut exec) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..iterations {
        let t = Instant::now();
        engine
            .attach_volume(
                &volume.id,
                AttachVolume {
                    sandbox_id: id.clone(),
                    path: "/data".into(),
                    readonly: false,
                },
            )
            .await?;
        attach.push(ms(t.elapsed()));
        let t = Instant::now();
        engine
            .exec(&id, ExecRequest::argv(vec!["true".into()]))
            .await?;
        exec.push(ms(t.elapsed()));
        let t = Instant::now();
        engine.detach_volume(&volume.id, &id).await?;
        detach.push(ms(t.elapsed()));
    }
    engine.kill_sandbox(&id).await?;
    engine.delete_volume(&volume.id).await?;
    Ok(vec![
        stat("volume hot-attach (plug + guest mount)", "ms", attach),
        stat("volume detach (guest unmount + unplug)", "ms", detach),
        stat("  baseline: exec `true` round trip", "ms", exec),
    ])
}
