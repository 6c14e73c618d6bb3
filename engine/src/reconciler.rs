//! Keeps the store true to what the host runs.
//!
//! - At start: sandboxes the store thinks have a VM but the host does not run (the server was
//!   restarted, the machine rebooted) go to `error` with that reason; their disks stay, so `start`
//!   can boot them again.
//! - While running: a VM that exits without being asked, whose agent stops answering, or whose
//!   agent breaks the protocol (the host kills the VM in the last two cases) moves its sandbox to
//!   `error`, with the reason and the last console lines. Nothing is repaired silently:
//!   every change is logged and recorded as an event.

use platinum_hostagent::host::HostEvent;
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::Result;
use crate::model::SandboxState;

/// Reconciles once; called by [`Engine::start`].
pub async fn reconcile_at_start(engine: &Arc<Engine>) -> Result<()> {
    // A pause to disk that finished writing its image makes a paused sandbox, not a lost one.
    engine.reconcile_snapshots().await?;
    engine.reconcile_backups().await?;
    let running = engine.host.running().await;
    let claimed = engine
        .store
        .sandboxes_in_states(&SandboxState::CLAIMS_VM)
        .await?;
    for s in claimed.into_iter().filter(|s| !running.contains(&s.id)) {
        tracing::warn!(sandbox = %s.id, state = %s.state, "VM lost while the server was down");
        engine
            .fail(
                &s.id,
                format!(
                    "VM lost: the server restarted while the sandbox was {}",
                    s.state
                ),
            )
            .await?;
    }
    Ok(())
}

/// Follows host events for the life of the engine.
pub fn spawn_event_loop(engine: Arc<Engine>) {
    let mut events = engine.host.subscribe();
    tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                _ = engine.shutdown.cancelled() => return,
                e = events.recv() => e,
            };
            match event {
                Ok(HostEvent::VmExited {
                    id,
                    exit,
                    console_tail,
                }) => {
                    let how = match (exit.code, exit.signal) {
                        (_, Some(sig)) => format!("killed by signal {sig}"),
                        (Some(code), None) => format!("exited with code {code}"),
                        (None, None) => "exited".to_string(),
                    };
                    let reason =
                        format!("VM {how} unexpectedly; last console lines:\n{console_tail}");
                    if let Err(e) = engine.fail(&id, reason).await {
                        tracing::error!(sandbox = %id, error = %e, "could not record VM exit");
                    }
                }
                Ok(HostEvent::GuestUnresponsive {
                    id,
                    reason,
                    console_tail,
                }) => {
                    let reason = format!(
                        "guest agent stopped answering ({reason}); the VM was killed; last console lines:\n{console_tail}"
                    );
                    if let Err(e) = engine.fail(&id, reason).await {
                        tracing::error!(sandbox = %id, error = %e, "could not record unresponsive guest");
                    }
                }
                Ok(HostEvent::GuestViolation {
                    id,
                    reason,
                    console_tail,
                }) => {
                    let reason = format!(
                        "guest agent broke the host protocol ({reason}); the VM was killed; last console lines:\n{console_tail}"
                    );
                    if let Err(e) = engine.fail(&id, reason).await {
                        tracing::error!(sandbox = %id, error = %e, "could not record a protocol violation");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(
                        missed = n,
                        "host events lagged; reconciling against the host"
                    );
                    if let Err(e) = reconcile_at_start(&engine).await {
                        tracing::error!(error = %e, "reconcile after lag failed");
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    });
}
