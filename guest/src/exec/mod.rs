//! The process requests: `exec`, `attach`, `signal`, `write_stdin`, `close_stdin`, `resize_pty`
//! and `list_processes`.
//!
//! An exec or attach stream carries `started{pid}` (plus `lost{bytes}` for a replay that begins
//! late), the output as `DATA` on channels 1 and 2, `EOF` on both when the output ends, `exited`,
//! then the outcome (the same [`ExitStatus`]). `DATA` the host sends on channel 0 goes to the
//! process's stdin, `EOF` on channel 0 closes it. If the host drops or resets the stream, or the
//! connection goes away, the stream detaches: the process keeps running and keeps buffering its
//! output for a later `attach`. A `timeout_ms` of 0 means no timeout.

pub mod output_ring;
mod pty;
mod spawn;
mod table;

pub use table::ProcessTable;

use crate::agent::Agent;
use crate::files::paths;
use crate::reaper::Reaper;
use crate::session::{HandlerError, SessionDefaults, reply_value};
use output_ring::{Output, RingReader, StartAt};
use platinum_protocol::{
    ExecSpec, ExitStatus, GuestError, GuestErrorCode, GuestEvent, GuestMessage, Inbound, MuxError,
    ProcessInfo, PtySize, StreamReceiver, StreamSender, channel,
};
use serde_json::Value;
use spawn::Launch;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use table::Process;
use tracing::debug;

/// After the process has exited, a stream stops following output that stays idle this long: what
/// still holds the pipes open is something the process left running in the background.
const IDLE_AFTER_EXIT: Duration = Duration::from_millis(250);

/// `exec`: starts a process and follows it.
pub async fn exec(
    agent: &Agent,
    defaults: &SessionDefaults,
    spec: ExecSpec,
    tx: &StreamSender,
    rx: StreamReceiver,
) -> Result<Value, HandlerError> {
    let taken_up = Instant::now();
    let users = agent.users()?;
    let user = users.resolve(spec.user.as_deref(), defaults.user.as_deref())?;
    let launch = Launch::new(&spec, &user, users.credentials(&user), &defaults.env)?;
    let mut info = ProcessInfo {
        pid: 0,
        command: spec.command.clone(),
        tag: spec.tag.clone(),
        user: user.name.clone(),
        cwd: paths::display(launch.cwd()),
        pty: spec.pty.is_some(),
        started_unix_ms: unix_ms_now(),
        exit: None,
    };
    let launched = tokio::task::spawn_blocking(move || launch.start(Reaper::global()))
        .await
        .map_err(|e| {
            GuestError::new(
                GuestErrorCode::SpawnFailed,
                format!("spawn thread failed: {e}"),
            )
        })??;
    info.pid = launched.pid;
    debug!(pid = info.pid, command = ?info.command, user = %info.user, "started");
    let timeout = spec
        .timeout_ms
        .filter(|&ms| ms > 0)
        .map(Duration::from_millis);
    let (process, reader) = agent.processes().insert(launched, info, timeout)?;
    tx.send_json(&GuestMessage::Event(GuestEvent::Started {
        pid: process.pid(),
    }))?;
    follow(&process, reader, tx, rx, Some(taken_up)).await
}

/// `attach`: follows a process started earlier, optionally replaying its buffered output.
pub async fn attach(
    agent: &Agent,
    pid: u32,
    replay: bool,
    tx: &StreamSender,
    rx: StreamReceiver,
) -> Result<Value, HandlerError> {
    let process = agent.processes().get(pid)?;
    let (reader, lost) = process.attach(if replay {
        StartAt::Oldest
    } else {
        StartAt::Newest
    });
    tx.send_json(&GuestMessage::Event(GuestEvent::Started { pid }))?;
    if lost > 0 {
        tx.send_json(&GuestMessage::Event(GuestEvent::Lost { bytes: lost }))?;
    }
    follow(&process, reader, tx, rx, None).await
}

/// `signal`.
pub fn signal(agent: &Agent, pid: u32, signal: i32) -> Result<Value, HandlerError> {
    agent.processes().get(pid)?.signal(signal)?;
    Ok(Value::Null)
}

/// `write_stdin`: copies the stream's channel 0 to the process's stdin until the host ends the
/// stream; `EOF` on channel 0 also closes the stdin.
pub async fn write_stdin(
    agent: &Agent,
    pid: u32,
    mut rx: StreamReceiver,
) -> Result<Value, HandlerError> {
    let process = agent.processes().get(pid)?;
    loop {
        match rx.recv().await? {
            Some(Inbound::Data {
                channel: channel::STDIN,
                bytes,
            }) => process.write_stdin(&bytes).await?,
            Some(Inbound::Eof {
                channel: channel::STDIN,
            }) => {
                process.close_stdin().await?;
                return Ok(Value::Null);
            }
            Some(other) => debug!(?other, "ignored on a write_stdin stream"),
            None => return Ok(Value::Null),
        }
    }
}

/// `close_stdin`.
pub async fn close_stdin(agent: &Agent, pid: u32) -> Result<Value, HandlerError> {
    agent.processes().get(pid)?.close_stdin().await?;
    Ok(Value::Null)
}

/// `resize_pty`.
pub fn resize_pty(agent: &Agent, pid: u32, size: PtySize) -> Result<Value, HandlerError> {
    agent.processes().get(pid)?.resize(size)?;
    Ok(Value::Null)
}

/// `list_processes`.
pub fn list_processes(agent: &Agent) -> Result<Value, HandlerError> {
    reply_value(agent.processes().list())
}

/// Microseconds since `t` (saturating), as exit statuses report durations.
pub(crate) fn micros_since(t: Instant) -> u64 {
    t.elapsed().as_micros().try_into().unwrap_or(u64::MAX)
}

/// Streams a process's output and exit to the host while feeding its stdin from the host. Returns
/// the exit status, or the stream error that detached it. `taken_up` is when the `exec` that
/// started the process was taken up (for the status's `handled_us`).
async fn follow(
    process: &Process,
    mut reader: RingReader,
    tx: &StreamSender,
    mut rx: StreamReceiver,
    taken_up: Option<Instant>,
) -> Result<Value, HandlerError> {
    let output = async {
        forward_output(process, &mut reader, tx).await?;
        drop(reader);
        tx.send_eof(channel::STDOUT)?;
        tx.send_eof(channel::STDERR)?;
        let status = ExitStatus {
            handled_us: taken_up.map(micros_since),
            ..process.wait_exit().await
        };
        tx.send_json(&GuestMessage::Event(GuestEvent::Exited(status)))?;
        reply_value::<ExitStatus>(status)
    };
    tokio::select! {
        result = output => result,
        detached = forward_input(process, &mut rx) => {
            debug!(pid = process.pid(), error = %detached, "stream detached");
            Err(detached.into())
        }
    }
}

/// Sends output until it ends, or until it has been idle for [`IDLE_AFTER_EXIT`] after the
/// process exited.
async fn forward_output(
    process: &Process,
    reader: &mut RingReader,
    tx: &StreamSender,
) -> Result<(), MuxError> {
    let mut exited = !process.is_running();
    loop {
        let next = if exited {
            match tokio::time::timeout(IDLE_AFTER_EXIT, reader.next()).await {
                Ok(next) => next,
                Err(_) => {
                    debug!(
                        pid = process.pid(),
                        "output still open after exit; stop following it"
                    );
                    return Ok(());
                }
            }
        } else {
            tokio::select! {
                next = reader.next() => next,
                _ = process.wait_exit() => {
                    exited = true;
                    continue;
                }
            }
        };
        match next {
            Output::Data { channel, bytes } => tx.send_data(channel, &bytes).await?,
            Output::End => return Ok(()),
        }
    }
}

/// Feeds the process's stdin from channel 0. Returns only when the stream fails (the host reset it
/// or the connection went away); once the host has closed its side it just waits.
async fn forward_input(process: &Process, rx: &mut StreamReceiver) -> MuxError {
    loop {
        let result = match rx.recv().await {
            Ok(Some(Inbound::Data {
                channel: channel::STDIN,
                bytes,
            })) => process.write_stdin(&bytes).await,
            Ok(Some(Inbound::Eof {
                channel: channel::STDIN,
            })) => process.close_stdin().await,
            Ok(Some(other)) => {
                debug!(?other, "ignored on a process stream");
                Ok(())
            }
            Ok(None) => std::future::pending().await,
            Err(e) => return e,
        };
        if let Err(e) = result {
            debug!(pid = process.pid(), error = %e, "stdin input dropped");
        }
    }
}

fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
