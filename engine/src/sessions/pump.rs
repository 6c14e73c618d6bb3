//! The session pump: one task per session that reads its shell's output for the life of the
//! session, feeds it to the session and ends the session when the shell exits or is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{SandboxSessions, Session};
use crate::process::{ExecEvent, ExecStream};

/// Reads the shell's output for the life of the session.
pub(super) async fn pump(
    session: Arc<Session>,
    mut stream: ExecStream,
    registry: Arc<Mutex<HashMap<String, SandboxSessions>>>,
) {
    let outcome = loop {
        let finished = match stream.next().await {
            Ok(Some(ExecEvent::Stdout(b))) => session.feed(0, &b),
            Ok(Some(ExecEvent::Stderr(b))) => session.feed(1, &b),
            Ok(Some(ExecEvent::Lost(n))) => {
                tracing::warn!(session = %session.id, bytes = n, "session shell output was lost");
                false
            }
            Ok(Some(ExecEvent::Exited(status))) => break Ok(status.shell_code()),
            Ok(None) => break Err("the output stream ended".to_string()),
            Err(e) => break Err(e.to_string()),
        };
        if finished {
            let s = session.clone();
            tokio::spawn(async move { s.dispatch().await });
        }
    };
    match outcome {
        Ok(code) => {
            tracing::info!(session = %session.id, sandbox = %session.sandbox, code, "session shell exited");
            session.end(Some(code));
        }
        Err(reason) => {
            tracing::info!(session = %session.id, sandbox = %session.sandbox, %reason, "session lost");
            session.end(None);
            // Its VM is gone or unreachable: nothing of it is left to query.
            let mut map = registry.lock().expect("session registry");
            if let Some(sessions) = map.get_mut(&session.sandbox)
                && sessions
                    .get(&session.id)
                    .is_some_and(|s| Arc::ptr_eq(s, &session))
            {
                sessions.remove(&session.id);
            }
        }
    }
}
