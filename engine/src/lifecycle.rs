//! The lifecycle loop: applies each sandbox's timeout (kill, pause or stop) when it expires, and
//! its [`LifecycleRules`]: stop after inactivity, archive and delete after time spent stopped.
//!
//! Every tick it reads the sandboxes whose `expires_at` has passed and applies their `on_timeout`
//! action through the ordinary commands, so expiry takes the same locks and records the same
//! events as a user's request would. A `kill` also removes stopped and failed sandboxes, so their
//! disks do not linger. The rules go the same way: an idle sandbox is stopped with `stop_sandbox`,
//! a long-stopped one archived or deleted with `archive_sandbox` / `kill_sandbox`. Inactivity is
//! measured from the last command (exact, not the store's few-seconds-late copy); time stopped from
//! when the sandbox stopped.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use time::OffsetDateTime;

use crate::engine::Engine;
use crate::model::{LifecycleRules, Sandbox, SandboxState, TimeoutAction};

/// Starts the loop; it ends when the engine's background work is stopped.
pub fn spawn(engine: Arc<Engine>) {
    let in_flight: InFlight = Arc::new(Mutex::new(HashSet::new()));
    let tick = engine.config.lifecycle_tick;
    engine.every(tick, "lifecycle rules sweep", move |engine| {
        let in_flight = in_flight.clone();
        async move {
            // The rules run even when the expiry pass failed.
            if let Err(e) = sweep(&engine, &in_flight).await {
                tracing::warn!(error = %e, "lifecycle sweep failed");
            }
            sweep_rules(&engine, &in_flight).await
        }
    });
}

/// Ids whose expiry action is running, so a slow action is not started twice.
type InFlight = Arc<Mutex<HashSet<String>>>;

/// One pass: expire what is due.
async fn sweep(engine: &Arc<Engine>, in_flight: &InFlight) -> crate::error::Result<()> {
    let now = OffsetDateTime::now_utc();
    let candidates = engine
        .store
        .sandboxes_in_states(&[
            SandboxState::Running,
            SandboxState::Paused,
            SandboxState::Suspended,
            SandboxState::Stopped,
            SandboxState::Archived,
            SandboxState::Error,
        ])
        .await?;
    for s in candidates
        .into_iter()
        .filter(|s| s.expires_at.is_some_and(|t| t <= now))
    {
        let Some(action) = timeout_action(s.on_timeout, s.state) else {
            continue;
        };
        if !in_flight
            .lock()
            .expect("lifecycle in-flight")
            .insert(s.id.clone())
        {
            continue;
        }
        tracing::info!(sandbox = %s.id, ?action, "sandbox timeout expired");
        let engine = engine.clone();
        let in_flight = in_flight.clone();
        // Each expiry runs on its own, so one slow shutdown does not hold up the others.
        tokio::spawn(async move {
            let result = match action {
                TimeoutAction::Kill => engine.kill_sandbox(&s.id).await,
                // Paused to disk with its memory: the VM's RAM is freed while it waits.
                TimeoutAction::Pause => engine.suspend_sandbox(&s.id, true).await.map(drop),
                TimeoutAction::Stop => engine.stop_sandbox(&s.id).await.map(drop),
            };
            if let Err(e) = result {
                tracing::warn!(sandbox = %s.id, error = %e, "timeout action failed");
            }
            in_flight.lock().expect("lifecycle in-flight").remove(&s.id);
        });
    }
    Ok(())
}

/// What an expired timeout does to a sandbox in `state`: pausing (to disk) or stopping is done
/// once; a sandbox that is already down is only ever deleted. A sandbox paused in memory is
/// paused to disk, which frees its RAM.
fn timeout_action(on_timeout: TimeoutAction, state: SandboxState) -> Option<TimeoutAction> {
    match (on_timeout, state) {
        (TimeoutAction::Kill, _) => Some(TimeoutAction::Kill),
        (a, SandboxState::Running) => Some(a),
        (TimeoutAction::Stop | TimeoutAction::Pause, SandboxState::Paused) => Some(on_timeout),
        _ => None,
    }
}

/// What a lifecycle rule asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RuleAction {
    Stop,
    Archive,
    Delete,
}

/// The rule action due for `s` at `now`, given when it was last active (or stopped).
fn due_rule(
    s: &Sandbox,
    rules: LifecycleRules,
    last_activity: OffsetDateTime,
    now: OffsetDateTime,
) -> Option<RuleAction> {
    let passed = |secs: Option<u64>| {
        secs.is_some_and(|t| {
            let t = time::Duration::seconds(t.min(i64::MAX as u64) as i64);
            // Past the end of time means never.
            last_activity.checked_add(t).is_some_and(|at| at <= now)
        })
    };
    match s.state {
        SandboxState::Running if passed(rules.stop_after_idle_secs) => Some(RuleAction::Stop),
        SandboxState::Stopped | SandboxState::Archived | SandboxState::Suspended
            if passed(rules.delete_after_stopped_secs) =>
        {
            Some(RuleAction::Delete)
        }
        SandboxState::Stopped | SandboxState::Suspended
            if passed(rules.archive_after_stopped_secs) =>
        {
            Some(RuleAction::Archive)
        }
        _ => None,
    }
}

/// One pass over the lifecycle rules.
async fn sweep_rules(engine: &Arc<Engine>, in_flight: &InFlight) -> crate::error::Result<()> {
    let now = OffsetDateTime::now_utc();
    let candidates = engine
        .store
        .sandboxes_in_states(&[
            SandboxState::Running,
            SandboxState::Suspended,
            SandboxState::Stopped,
            SandboxState::Archived,
        ])
        .await?;
    for s in candidates {
        if s.lifecycle == LifecycleRules::default() {
            continue;
        }
        let Some(action) = due_rule(&s, s.lifecycle, engine.last_activity(&s), now) else {
            continue;
        };
        if !in_flight
            .lock()
            .expect("lifecycle in-flight")
            .insert(s.id.clone())
        {
            continue;
        }
        tracing::info!(sandbox = %s.id, ?action, rules = ?s.lifecycle, "lifecycle rule due");
        let engine = engine.clone();
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            let result = match action {
                RuleAction::Stop => engine.stop_sandbox(&s.id).await.map(drop),
                RuleAction::Archive => engine.archive_sandbox(&s.id).await.map(drop),
                RuleAction::Delete => engine.kill_sandbox(&s.id).await,
            };
            if let Err(e) = result {
                tracing::warn!(sandbox = %s.id, ?action, error = %e, "lifecycle rule failed");
            }
            in_flight.lock().expect("lifecycle in-flight").remove(&s.id);
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sandbox(state: SandboxState) -> Sandbox {
        crate::testing::sandbox("s", state)
    }

    #[test]
    fn rules_fire_only_in_their_states_and_after_their_time() {
        let t0 = OffsetDateTime::UNIX_EPOCH;
        let at = |secs: i64| t0 + time::Duration::seconds(secs);
        let rules = LifecycleRules {
            stop_after_idle_secs: Some(60),
            archive_after_stopped_secs: Some(120),
            delete_after_stopped_secs: Some(600),
        };
        let running = sandbox(SandboxState::Running);
        assert_eq!(due_rule(&running, rules, t0, at(59)), None);
        assert_eq!(
            due_rule(&running, rules, t0, at(60)),
            Some(RuleAction::Stop)
        );
        // Activity pushes it out.
        assert_eq!(due_rule(&running, rules, at(30), at(60)), None);
        let stopped = sandbox(SandboxState::Stopped);
        assert_eq!(due_rule(&stopped, rules, t0, at(119)), None);
        assert_eq!(
            due_rule(&stopped, rules, t0, at(120)),
            Some(RuleAction::Archive)
        );
        assert_eq!(
            due_rule(&stopped, rules, t0, at(600)),
            Some(RuleAction::Delete)
        );
        let archived = sandbox(SandboxState::Archived);
        assert_eq!(due_rule(&archived, rules, t0, at(599)), None);
        assert_eq!(
            due_rule(&archived, rules, t0, at(600)),
            Some(RuleAction::Delete)
        );
        // Ephemeral: delete as soon as it is stopped; never stop something paused.
        let ephemeral = LifecycleRules {
            delete_after_stopped_secs: Some(0),
            ..Default::default()
        };
        assert_eq!(
            due_rule(&stopped, ephemeral, t0, t0),
            Some(RuleAction::Delete)
        );
        assert_eq!(due_rule(&running, ephemeral, t0, at(1_000_000)), None);
        assert_eq!(
            due_rule(&sandbox(SandboxState::Paused), rules, t0, at(1_000_000)),
            None
        );
        // A sandbox paused to disk counts as stopped: archived (memory and all), then deleted.
        let suspended = sandbox(SandboxState::Suspended);
        assert_eq!(due_rule(&suspended, rules, t0, at(119)), None);
        assert_eq!(
            due_rule(&suspended, rules, t0, at(120)),
            Some(RuleAction::Archive)
        );
        assert_eq!(
            due_rule(&suspended, rules, t0, at(600)),
            Some(RuleAction::Delete)
        );
        // Huge values never overflow into "due".
        let forever = LifecycleRules {
            stop_after_idle_secs: Some(u64::MAX),
            ..Default::default()
        };
        assert_eq!(due_rule(&running, forever, t0, at(1_000_000)), None);
    }

    #[test]
    fn timeouts_pause_to_disk_once_and_only_kill_what_is_down() {
        use SandboxState as S;
        use TimeoutAction as A;
        assert_eq!(timeout_action(A::Pause, S::Running), Some(A::Pause));
        assert_eq!(timeout_action(A::Pause, S::Paused), Some(A::Pause));
        assert_eq!(timeout_action(A::Pause, S::Suspended), None);
        assert_eq!(timeout_action(A::Stop, S::Suspended), None);
        assert_eq!(timeout_action(A::Kill, S::Suspended), Some(A::Kill));
        assert_eq!(timeout_action(A::Stop, S::Stopped), None);
    }
}
