//! The backup loop: takes each scheduled sandbox's backup when it is due.
//!
//! Every tick it reads the schedules ([`crate::model::BackupPolicy`]) and starts a backup
//! ([`Engine::backup_sandbox`]) of each running sandbox whose last backup, or last attempt, is
//! `interval_secs` old — a failed attempt waits a whole interval too, so a store that is down is
//! not hammered. One backup per sandbox at a time, and at most [`MAX_CONCURRENT`] in all: each
//! copies memory and disks and uploads what changed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::model::{SandboxState, SnapshotKind};

/// Backups running at once, host-wide.
const MAX_CONCURRENT: usize = 2;

/// Per sandbox: when its last backup was started (or, at first sight, taken), and whether one
/// runs now.
#[derive(Default)]
struct Schedule {
    last: HashMap<String, OffsetDateTime>,
    running: std::collections::HashSet<String>,
}

/// Starts the loop; it ends when the engine's background work is stopped.
pub fn spawn(engine: Arc<Engine>) {
    let schedule = Arc::new(Mutex::new(Schedule::default()));
    let tick = engine.config.lifecycle_tick;
    engine.every(tick, "backup sweep", move |engine| {
        let schedule = schedule.clone();
        async move { sweep(&engine, &schedule).await }
    });
}

/// One pass: start the backups that are due.
async fn sweep(engine: &Arc<Engine>, schedule: &Arc<Mutex<Schedule>>) -> crate::error::Result<()> {
    let now = OffsetDateTime::now_utc();
    for (id, policy) in engine.store.backup_policies().await? {
        let Some(s) = engine.store.get_sandbox(&id).await? else {
            continue;
        };
        if s.state != SandboxState::Running {
            continue;
        }
        let known = schedule
            .lock()
            .expect("backup schedule")
            .last
            .get(&id)
            .copied();
        let last = match known {
            Some(t) => Some(t),
            None => engine
                .store
                .list_snapshots(Some(&id), Some(SnapshotKind::Backup))
                .await?
                .last()
                .map(|b| b.created_at),
        };
        let interval = time::Duration::seconds(policy.interval_secs.min(i64::MAX as u64) as i64);
        if last.is_some_and(|t| t.checked_add(interval).is_none_or(|due| due > now)) {
            continue;
        }
        {
            let mut sched = schedule.lock().expect("backup schedule");
            if sched.running.contains(&id) || sched.running.len() >= MAX_CONCURRENT {
                continue;
            }
            sched.running.insert(id.clone());
            sched.last.insert(id.clone(), now);
        }
        let (engine, schedule) = (engine.clone(), schedule.clone());
        tokio::spawn(async move {
            if let Err(e) = engine.backup_sandbox(&id).await {
                tracing::warn!(sandbox = %id, error = %e, "scheduled backup failed");
            }
            schedule
                .lock()
                .expect("backup schedule")
                .running
                .remove(&id);
        });
    }
    Ok(())
}
