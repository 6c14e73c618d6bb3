//! One host connection: accepts its streams and dispatches each request to its handler.
//!
//! Every stream the host opens is one request, handled on its own task, so a slow exec never holds
//! up a `stat`. The stream ends with exactly one [`Outcome`] and `CLOSE`, unless the host went away
//! first. A payload that is not a request gets `invalid_argument`; a well-formed request whose `op`
//! this agent does not know gets `unsupported`, so newer hosts can probe. Nothing a host sends
//! stops the agent.
//!
//! `ok` values: `hello` [`platinum_protocol::HelloReply`], `ping` [`platinum_protocol::PingReply`],
//! `health` [`platinum_protocol::HealthReply`], `read_clock` [`platinum_protocol::ClockReply`], `metrics` [`platinum_protocol::MetricsReply`],
//! `exec`/`attach` [`platinum_protocol::ExitStatus`], `list_processes` a list of
//! [`platinum_protocol::ProcessInfo`], `list_dir` a list of [`platinum_protocol::FileEntry`],
//! `stat`/`write_file`/`rename`/`chmod`/`chown` a [`platinum_protocol::FileEntry`], `make_dir`
//! [`platinum_protocol::MakeDirReply`], everything else `null`.

use crate::agent::Agent;
use crate::{exec, files, identity, metrics, ports, system, volumes};
use bytes::Bytes;
use platinum_protocol::mux::Incoming;
use platinum_protocol::{
    GuestError, GuestErrorCode, MuxError, Outcome, PingReply, Request, Stream, StreamReceiver,
    StreamSender,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use tracing::{Instrument, debug, debug_span};

/// Per-session defaults set by `hello`.
#[derive(Debug, Clone, Default)]
pub struct SessionDefaults {
    /// User that requests naming none run as.
    pub user: Option<String>,
    /// Environment every process of this session gets (before the request's own).
    pub env: BTreeMap<String, String>,
}

/// Why a request handler stopped.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The request failed; the host gets this as the outcome.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The stream or the connection is gone; there is nobody to tell.
    #[error("request stream ended")]
    Stream(#[from] MuxError),
}

/// Serializes a handler's reply.
pub fn reply_value<T: serde::Serialize>(value: T) -> Result<Value, HandlerError> {
    serde_json::to_value(value).map_err(|e| {
        GuestError::new(GuestErrorCode::Io, format!("cannot encode the reply: {e}")).into()
    })
}

/// Serves the requests of one connection until it closes.
pub async fn serve(agent: Arc<Agent>, mut incoming: Incoming) {
    let session = Arc::new(Session {
        agent,
        defaults: Mutex::default(),
    });
    while let Some(stream) = incoming.accept().await {
        let span = debug_span!("request", stream = stream.id());
        tokio::spawn(session.clone().handle(stream).instrument(span));
    }
}

struct Session {
    agent: Arc<Agent>,
    defaults: Mutex<SessionDefaults>,
}

impl Session {
    async fn handle(self: Arc<Self>, stream: Stream) {
        let payload = stream.open_payload().clone();
        let (tx, rx) = stream.split();
        let result = match parse_request(&payload) {
            Ok(request) => self.dispatch(request, &tx, rx).await,
            Err(e) => Err(e.into()),
        };
        let outcome = match result {
            Ok(value) => Outcome::Ok(value),
            Err(HandlerError::Guest(e)) => {
                debug!(code = ?e.code, message = %e.message, "request failed");
                Outcome::Error(e)
            }
            Err(HandlerError::Stream(e)) => {
                debug!(error = %e, "request stream ended before its outcome");
                return;
            }
        };
        if let Err(e) = finish(&tx, &outcome) {
            debug!(error = %e, "cannot deliver the outcome");
        }
    }

    fn defaults(&self) -> SessionDefaults {
        self.defaults
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn dispatch(
        &self,
        request: Request,
        tx: &StreamSender,
        rx: StreamReceiver,
    ) -> Result<Value, HandlerError> {
        let agent = &*self.agent;
        let defaults = self.defaults();
        debug!(op = request.op(), "request");
        match request {
            Request::Hello(hello) => {
                let (reply, env) = system::hello(agent, &hello)?;
                *self.defaults.lock().unwrap_or_else(PoisonError::into_inner) = SessionDefaults {
                    user: hello.default_user,
                    env,
                };
                reply_value(reply)
            }
            Request::Ping { payload } => reply_value(PingReply { payload }),
            Request::SetClock { unix_ns } => {
                system::set_clock(agent, unix_ns)?;
                Ok(Value::Null)
            }
            Request::ReadClock => reply_value(system::read_clock()),
            Request::Health => reply_value(system::health(agent)),
            Request::Metrics => reply_value(metrics::collect(agent.cpu_tracker())?),
            Request::Exec(spec) => exec::exec(agent, &defaults, spec, tx, rx).await,
            Request::Attach { pid, replay } => exec::attach(agent, pid, replay, tx, rx).await,
            Request::Signal { pid, signal } => exec::signal(agent, pid, signal),
            Request::WriteStdin { pid } => exec::write_stdin(agent, pid, rx).await,
            Request::CloseStdin { pid } => exec::close_stdin(agent, pid).await,
            Request::ResizePty { pid, size } => exec::resize_pty(agent, pid, size),
            Request::ListProcesses => exec::list_processes(agent),
            Request::ReadFile(at) => files::read_file(agent, &defaults, at, tx).await,
            Request::WriteFile(req) => files::write_file(agent, &defaults, req, rx).await,
            Request::ListDir { at, depth } => files::list_dir(agent, &defaults, at, depth).await,
            Request::Stat(at) => files::stat(agent, &defaults, at).await,
            Request::MakeDir { at, mode, owner } => {
                files::make_dir(agent, &defaults, at, mode, owner).await
            }
            Request::Remove { at, recursive } => {
                files::remove(agent, &defaults, at, recursive).await
            }
            Request::Rename {
                from,
                to,
                user,
                overwrite,
            } => files::rename(agent, &defaults, from, to, user, overwrite).await,
            Request::Chmod { at, mode } => files::chmod(agent, &defaults, at, mode).await,
            Request::Chown { at, owner, group } => {
                files::chown(agent, &defaults, at, owner, group).await
            }
            Request::ConnectPort { port } => ports::connect_port(port, tx, rx).await,
            Request::Watch {
                at,
                recursive,
                allow_network_mounts,
            } => {
                files::watch::watch(
                    agent,
                    &defaults,
                    at,
                    recursive,
                    allow_network_mounts,
                    tx,
                    rx,
                )
                .await
            }
            Request::Sync => files::sync().await,
            Request::MountVolume {
                serial,
                path,
                readonly,
            } => volumes::mount_volume(serial, path, readonly).await,
            Request::UnmountVolume { path } => volumes::unmount_volume(path).await,
            Request::Reidentify(identity) => {
                identity::reidentify(agent, &identity)?;
                Ok(Value::Null)
            }
            Request::Shutdown { reboot } => {
                system::shutdown(agent, reboot)?;
                Ok(Value::Null)
            }
        }
    }
}

/// Sends the outcome and closes the stream. An outcome too large for one frame is replaced by an
/// error saying so, rather than lost.
fn finish(tx: &StreamSender, outcome: &Outcome) -> Result<(), MuxError> {
    let body = serde_json::to_vec(outcome).map_err(|e| MuxError::Protocol(e.to_string()))?;
    let len = body.len();
    match tx.send_msg(Bytes::from(body)) {
        Err(MuxError::Protocol(reason)) => {
            debug!(len, %reason, "outcome does not fit a frame");
            let too_large = GuestError::new(
                GuestErrorCode::Io,
                format!(
                    "the reply ({len} bytes) is larger than one frame; ask for less (e.g. a smaller depth)"
                ),
            );
            tx.send_json(&Outcome::Error(too_large))?;
        }
        other => other?,
    }
    tx.close()
}

/// Decodes an `OPEN` payload: `invalid_argument` for anything that is not a request, `unsupported`
/// for a request object whose `op` this agent does not know.
fn parse_request(payload: &[u8]) -> Result<Request, GuestError> {
    let invalid = |msg: String| GuestError::new(GuestErrorCode::InvalidArgument, msg);
    let value: Value = serde_json::from_slice(payload)
        .map_err(|e| invalid(format!("request is not JSON: {e}")))?;
    let Some(op) = value.get("op").and_then(Value::as_str).map(str::to_owned) else {
        return Err(invalid("request has no \"op\" string".into()));
    };
    serde_json::from_value(value).map_err(|e| {
        // serde reports an unknown tag of an internally tagged enum as "unknown variant `op`, ...".
        if e.to_string()
            .starts_with(&format!("unknown variant `{op}`"))
        {
            GuestError::new(
                GuestErrorCode::Unsupported,
                format!("unknown request {op:?}"),
            )
        } else {
            invalid(format!("malformed {op} request: {e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_payloads_get_typed_errors() {
        let code = |p: &str| {
            parse_request(p.as_bytes())
                .map(|r| r.op())
                .map_err(|e| e.code)
        };
        assert_eq!(code(r#"{"op":"ping","payload":"x"}"#), Ok("ping"));
        assert_eq!(code(r#"{"op":"list_dir","path":"/"}"#), Ok("list_dir"));
        assert_eq!(
            code(r#"{"op":"teleport","to":"mars"}"#),
            Err(GuestErrorCode::Unsupported)
        );
        assert_eq!(
            code(r#"{"op":"exec"}"#),
            Err(GuestErrorCode::InvalidArgument)
        );
        assert_eq!(
            code(r#"{"op":"signal","pid":"one","signal":9}"#),
            Err(GuestErrorCode::InvalidArgument)
        );
        assert_eq!(code(r#"{"no_op":1}"#), Err(GuestErrorCode::InvalidArgument));
        assert_eq!(code("not json"), Err(GuestErrorCode::InvalidArgument));
        assert_eq!(code("[1,2]"), Err(GuestErrorCode::InvalidArgument));
    }

    #[test]
    fn op_names_match_the_wire_tags() {
        let samples = [
            Request::Health,
            Request::Metrics,
            Request::ListProcesses,
            Request::Sync,
            Request::Ping {
                payload: String::new(),
            },
            Request::Shutdown { reboot: false },
            Request::Exec(platinum_protocol::ExecSpec::shell("true")),
        ];
        for r in samples {
            let v = serde_json::to_value(&r).expect("encode");
            assert_eq!(v["op"], r.op());
        }
    }
}
