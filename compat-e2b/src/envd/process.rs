//! `process.Process`: commands and PTYs over the engine's exec commands.
//!
//! `Start` runs `cmd` + `args` directly (the SDK sends `/bin/bash -l -c <command>`) as the
//! request's user, with the request's `envs` over the sandbox's, and `Connect-Timeout-Ms` as the
//! process's lifetime (the guest kills it when it runs out; the stream then ends with
//! `deadline_exceeded`). Its stream is `start{pid}`, `data` (stdout, stderr, or pty bytes),
//! `keepalive` after `Keepalive-Ping-Interval` seconds of silence, and `end{exitCode, exited,
//! status, error}` in Go's `ProcessState` words (`exit status 1`, `signal: killed`; a signal
//! gives exit code -1). Closing the stream detaches; the process keeps running and `Connect`
//! re-attaches to it. When the sandbox goes away mid-stream, the stream ends with `unavailable`.

use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use platinum_engine::model::{CommandLine, ExecRequest};
use platinum_engine::process::is_internal_tag;
use platinum_engine::{ExecEvent, ExecStream, StreamOptions};
use platinum_engine::{ExitStatus, PtySize};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::Ctx;
use crate::connect::{
    self, RequestStream, StreamSink, base64_bytes, enum_value, flexible_u32, to_base64,
};
use crate::envd::{authorize, stream_broken};
use crate::error::{ConnectCode, ConnectError};
use crate::routing::SandboxId;

/// PTY size when a request asks for a PTY without one.
const DEFAULT_PTY: PtySize = PtySize { cols: 80, rows: 24 };

/// How processes were started through envd, for `List` (the engine keeps a display string; E2B
/// reports `cmd`, `args` and `envs` separately).
#[derive(Default)]
pub struct Started {
    map: Mutex<HashMap<(String, u32), ProcessConfig>>,
}

impl Started {
    fn insert(&self, sandbox: &str, pid: u32, config: ProcessConfig) {
        self.map
            .lock()
            .expect("started processes")
            .insert((sandbox.to_string(), pid), config);
    }

    fn remove(&self, sandbox: &str, pid: u32) {
        self.map
            .lock()
            .expect("started processes")
            .remove(&(sandbox.to_string(), pid));
    }

    fn get(&self, sandbox: &str, pid: u32) -> Option<ProcessConfig> {
        self.map
            .lock()
            .expect("started processes")
            .get(&(sandbox.to_string(), pid))
            .cloned()
    }

    /// Forgets the sandbox's processes that are not in `running`.
    fn retain(&self, sandbox: &str, running: &[u32]) {
        self.map
            .lock()
            .expect("started processes")
            .retain(|(s, pid), _| s != sandbox || running.contains(pid));
    }
}

/// `ProcessConfig`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProcessConfig {
    cmd: String,
    args: Vec<String>,
    envs: BTreeMap<String, String>,
    cwd: Option<String>,
}

impl ProcessConfig {
    fn json(&self) -> Value {
        let mut v = json!({ "cmd": self.cmd, "args": self.args, "envs": self.envs });
        if let Some(cwd) = &self.cwd {
            v["cwd"] = json!(cwd);
        }
        v
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Pty {
    size: Option<Size>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Size {
    #[serde(deserialize_with = "flexible_u32")]
    cols: Option<u32>,
    #[serde(deserialize_with = "flexible_u32")]
    rows: Option<u32>,
}

impl Pty {
    fn size(&self) -> PtySize {
        let clamp = |v: Option<u32>, d: u16| v.map_or(d, |v| v.clamp(1, u16::MAX as u32) as u16);
        match &self.size {
            Some(s) => PtySize {
                cols: clamp(s.cols, DEFAULT_PTY.cols),
                rows: clamp(s.rows, DEFAULT_PTY.rows),
            },
            None => DEFAULT_PTY,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Selector {
    #[serde(deserialize_with = "flexible_u32")]
    pid: Option<u32>,
    tag: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Input {
    #[serde(deserialize_with = "base64_bytes")]
    stdin: Option<Bytes>,
    #[serde(deserialize_with = "base64_bytes")]
    pty: Option<Bytes>,
}

impl Input {
    fn bytes(self) -> Option<Bytes> {
        self.stdin.or(self.pty)
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StartRequest {
    process: Option<ProcessConfig>,
    pty: Option<Pty>,
    tag: Option<String>,
    stdin: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SelectRequest {
    process: Option<Selector>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SendInputRequest {
    process: Option<Selector>,
    input: Option<Input>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SendSignalRequest {
    process: Option<Selector>,
    signal: Value,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UpdateRequest {
    process: Option<Selector>,
    pty: Option<Pty>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StreamInputRequest {
    start: Option<SelectRequest>,
    data: Option<DataEvent>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DataEvent {
    input: Option<Input>,
}

/// One `process.Process` RPC.
pub async fn rpc(
    State(ctx): State<Ctx>,
    Extension(SandboxId(id)): Extension<SandboxId>,
    Path(method): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let user = match authorize(&ctx, &id, &headers) {
        Ok(u) => u,
        Err(e) => return e.into_response(),
    };
    tracing::debug!(sandbox = %id, method, "envd process RPC");
    match method.as_str() {
        "Start" => {
            server_stream(&headers, body, async |r: StartRequest| {
                start(ctx, id, user, &headers, r).await
            })
            .await
        }
        "Connect" => {
            server_stream(&headers, body, async |r: SelectRequest| {
                reconnect(ctx, id, &headers, r).await
            })
            .await
        }
        "StreamInput" => stream_input(ctx, id, &headers, body).await,
        "List" => unary(&headers, body, |_: Value| list(&ctx, &id)).await,
        "SendInput" => unary(&headers, body, |r| send_input(&ctx, &id, r)).await,
        "SendSignal" => unary(&headers, body, |r| send_signal(&ctx, &id, r)).await,
        "Update" => unary(&headers, body, |r| update(&ctx, &id, r)).await,
        "CloseStdin" => unary(&headers, body, |r| close_stdin(&ctx, &id, r)).await,
        other => ConnectError::new(
            ConnectCode::Unimplemented,
            format!("process.Process/{other} is not implemented"),
        )
        .into_response(),
    }
}

/// Runs a unary RPC: parse, call, render.
pub async fn unary<T, F, Fut>(headers: &HeaderMap, body: Body, call: F) -> Response
where
    T: serde::de::DeserializeOwned,
    F: FnOnce(T) -> Fut,
    Fut: std::future::Future<Output = Result<Value, ConnectError>>,
{
    match connect::unary_request::<T>(headers, body).await {
        Err(r) => r.into_response(),
        Ok(Err(e)) => e.into_response(),
        Ok(Ok(req)) => match call(req).await {
            Ok(v) => connect::unary_ok(v),
            Err(e) => e.into_response(),
        },
    }
}

/// Runs a server-streaming RPC: parse, then `call` answers with the stream (a request that
/// cannot be read is a stream that ends with the error at once).
pub async fn server_stream<T, F>(headers: &HeaderMap, body: Body, call: F) -> Response
where
    T: serde::de::DeserializeOwned,
    F: AsyncFnOnce(T) -> Response,
{
    match connect::stream_request::<T>(headers, body).await {
        Err(r) => r.into_response(),
        Ok(Err(e)) => connect::stream_error(e).await,
        Ok(Ok(req)) => call(req).await,
    }
}

/// The pid a selector names (a tag is looked up among running processes).
async fn resolve(ctx: &Ctx, id: &str, selector: Option<Selector>) -> Result<u32, ConnectError> {
    let Some(selector) = selector else {
        return Err(ConnectError::invalid("process selector is required"));
    };
    if let Some(pid) = selector.pid {
        return Ok(pid);
    }
    let Some(tag) = selector.tag else {
        return Err(ConnectError::invalid(
            "process selector needs a pid or a tag",
        ));
    };
    ctx.engine
        .list_processes(id)
        .await?
        .into_iter()
        .find(|p| p.running && p.tag.as_deref() == Some(tag.as_str()))
        .map(|p| p.pid)
        .ok_or_else(|| {
            ConnectError::new(
                ConnectCode::NotFound,
                format!("no running process with tag {tag:?}"),
            )
        })
}

async fn start(
    ctx: Ctx,
    id: String,
    user: Option<String>,
    headers: &HeaderMap,
    req: StartRequest,
) -> Response {
    let Some(config) = req.process.filter(|p| !p.cmd.is_empty()) else {
        return connect::stream_error(ConnectError::invalid("process.cmd is required")).await;
    };
    let pty = req.pty.as_ref().map(Pty::size);
    let mut argv = vec![config.cmd.clone()];
    argv.extend(config.args.iter().cloned());
    let exec = ExecRequest {
        command: CommandLine::Argv(argv),
        env: config.envs.clone(),
        cwd: config.cwd.clone().filter(|c| !c.is_empty()),
        user,
        timeout_ms: connect::timeout_ms(headers),
        stdin: None,
        background: false,
    };
    let opts = StreamOptions {
        // envd keeps stdin open unless the request says otherwise; a PTY always takes input.
        stdin: pty.is_some() || req.stdin.unwrap_or(true),
        pty,
        tag: req.tag.clone(),
    };
    match ctx.engine.exec_stream(&id, exec, opts).await {
        Err(e) => connect::stream_error(e.into()).await,
        Ok(stream) => {
            tracing::debug!(sandbox = %id, pid = stream.pid(), cmd = %config.cmd, "process started");
            ctx.processes.insert(&id, stream.pid(), config);
            follow(ctx, id, stream, headers, pty.is_some())
        }
    }
}

async fn reconnect(ctx: Ctx, id: String, headers: &HeaderMap, req: SelectRequest) -> Response {
    let pid = match resolve(&ctx, &id, req.process).await {
        Ok(pid) => pid,
        Err(e) => return connect::stream_error(e).await,
    };
    let pty = ctx
        .engine
        .list_processes(&id)
        .await
        .ok()
        .and_then(|list| list.into_iter().find(|p| p.pid == pid))
        .is_some_and(|p| p.pty);
    match ctx.engine.attach(&id, pid, false).await {
        Ok(stream) => follow(ctx, id, stream, headers, pty),
        Err(e) => connect::stream_error(e.into()).await,
    }
}

/// Streams a process's events to the client until it exits, the client leaves (the process
/// keeps running), or the sandbox goes away.
fn follow(
    ctx: Ctx,
    id: String,
    mut stream: ExecStream,
    headers: &HeaderMap,
    pty: bool,
) -> Response {
    let keepalive = connect::keepalive_interval(headers);
    let (sink, response) = connect::streaming();
    tokio::spawn(async move {
        let pid = stream.pid();
        if send(&sink, json!({ "start": { "pid": pid } }))
            .await
            .is_err()
        {
            return;
        }
        let end = loop {
            let event = tokio::select! {
                event = stream.next() => event,
                _ = tokio::time::sleep(keepalive) => {
                    if send(&sink, json!({ "keepalive": {} })).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = sink.closed() => {
                    tracing::debug!(sandbox = %id, pid, "client left; process keeps running");
                    return;
                }
            };
            let data = match event {
                Ok(Some(ExecEvent::Stdout(b))) if pty => json!({ "pty": to_base64(&b) }),
                Ok(Some(ExecEvent::Stdout(b))) => json!({ "stdout": to_base64(&b) }),
                Ok(Some(ExecEvent::Stderr(b))) => json!({ "stderr": to_base64(&b) }),
                Ok(Some(ExecEvent::Lost(_))) => continue,
                Ok(Some(ExecEvent::Exited(status))) => {
                    ctx.processes.remove(&id, pid);
                    if status.timed_out {
                        break Some(ConnectError::new(
                            ConnectCode::DeadlineExceeded,
                            format!("process {pid} ran past its timeout and was killed"),
                        ));
                    }
                    if send(&sink, json!({ "end": end_event(&status) }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    break None;
                }
                Ok(None) => {
                    break Some(ConnectError::new(
                        ConnectCode::Internal,
                        "process stream ended without an exit",
                    ));
                }
                Err(e) => break Some(stream_broken(&ctx, &id, e).await),
            };
            if send(&sink, json!({ "data": data })).await.is_err() {
                return;
            }
        };
        sink.finish(end).await;
    });
    response
}

async fn send(sink: &StreamSink, event: Value) -> Result<(), connect::Gone> {
    sink.send(&json!({ "event": event })).await
}

/// Go's name of a signal, as `ProcessState.String()` prints it.
fn signal_name(signal: i32) -> String {
    match signal {
        1 => "hangup".into(),
        2 => "interrupt".into(),
        3 => "quit".into(),
        4 => "illegal instruction".into(),
        6 => "aborted".into(),
        7 => "bus error".into(),
        8 => "floating point exception".into(),
        9 => "killed".into(),
        10 => "user defined signal 1".into(),
        11 => "segmentation fault".into(),
        12 => "user defined signal 2".into(),
        13 => "broken pipe".into(),
        14 => "alarm clock".into(),
        15 => "terminated".into(),
        other => format!("signal {other}"),
    }
}

/// `EndEvent` the way envd fills it from Go's `ProcessState`.
fn end_event(status: &ExitStatus) -> Value {
    match (status.code, status.signal) {
        (Some(code), _) => {
            let text = format!("exit status {code}");
            let mut v = json!({ "exitCode": code, "exited": true, "status": text });
            if code != 0 {
                v["error"] = json!(text);
            }
            v
        }
        (None, Some(signal)) => {
            let text = format!("signal: {}", signal_name(signal));
            json!({ "exitCode": -1, "exited": false, "status": text, "error": text })
        }
        (None, None) => json!({ "exitCode": -1, "exited": false, "status": "unknown" }),
    }
}

async fn list(ctx: &Ctx, id: &str) -> Result<Value, ConnectError> {
    let running: Vec<_> = ctx
        .engine
        .list_processes(id)
        .await?
        .into_iter()
        .filter(|p| p.running)
        .filter(|p| !p.tag.as_deref().is_some_and(is_internal_tag))
        .collect();
    ctx.processes
        .retain(id, &running.iter().map(|p| p.pid).collect::<Vec<_>>());
    let processes: Vec<Value> = running
        .iter()
        .map(|p| {
            let config = ctx
                .processes
                .get(id, p.pid)
                .unwrap_or_else(|| ProcessConfig {
                    cmd: p.command.clone(),
                    cwd: Some(p.cwd.clone()),
                    ..ProcessConfig::default()
                });
            let mut v = json!({ "config": config.json(), "pid": p.pid });
            if let Some(tag) = &p.tag {
                v["tag"] = json!(tag);
            }
            v
        })
        .collect();
    Ok(json!({ "processes": processes }))
}

async fn send_input(ctx: &Ctx, id: &str, req: SendInputRequest) -> Result<Value, ConnectError> {
    let pid = resolve(ctx, id, req.process).await?;
    let Some(data) = req.input.and_then(Input::bytes) else {
        return Err(ConnectError::invalid(
            "input.stdin or input.pty is required",
        ));
    };
    ctx.engine.write_stdin(id, pid, data).await?;
    Ok(json!({}))
}

async fn send_signal(ctx: &Ctx, id: &str, req: SendSignalRequest) -> Result<Value, ConnectError> {
    let pid = resolve(ctx, id, req.process).await?;
    let names = [("SIGNAL_SIGKILL", 9), ("SIGNAL_SIGTERM", 15)];
    let signal = match enum_value(&req.signal, &names) {
        Some(s @ (9 | 15)) => s as i32,
        _ => {
            return Err(ConnectError::invalid(format!(
                "unsupported signal {}; use SIGNAL_SIGKILL or SIGNAL_SIGTERM",
                req.signal
            )));
        }
    };
    ctx.engine.signal_process(id, pid, signal).await?;
    Ok(json!({}))
}

async fn update(ctx: &Ctx, id: &str, req: UpdateRequest) -> Result<Value, ConnectError> {
    let pid = resolve(ctx, id, req.process).await?;
    if let Some(pty) = req.pty {
        ctx.engine.resize_pty(id, pid, pty.size()).await?;
    }
    Ok(json!({}))
}

async fn close_stdin(ctx: &Ctx, id: &str, req: SelectRequest) -> Result<Value, ConnectError> {
    let pid = resolve(ctx, id, req.process).await?;
    ctx.engine.close_stdin(id, pid).await?;
    Ok(json!({}))
}

/// `StreamInput`: `start{process}`, then `data{input}` messages as they arrive, then `{}`.
async fn stream_input(ctx: Ctx, id: String, headers: &HeaderMap, body: Body) -> Response {
    let mut requests = match RequestStream::new(headers, body) {
        Ok(r) => r,
        Err(refused) => return refused.into_response(),
    };
    let result = async {
        let mut pid = None;
        while let Some(msg) = requests.next::<StreamInputRequest>().await? {
            if let Some(start) = msg.start {
                pid = Some(resolve(&ctx, &id, start.process).await?);
            } else if let Some(data) = msg.data.and_then(|d| d.input).and_then(Input::bytes) {
                let Some(pid) = pid else {
                    return Err(ConnectError::invalid("data before start"));
                };
                ctx.engine.write_stdin(&id, pid, data).await?;
            }
        }
        Ok::<_, ConnectError>(())
    }
    .await;
    let (sink, response) = connect::streaming();
    match result {
        Ok(()) => {
            let _ = sink.send(&json!({})).await;
            sink.finish(None).await;
        }
        Err(e) => sink.finish(Some(e)).await,
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_events_read_like_go() {
        let exit = |code, signal| ExitStatus {
            code,
            signal,
            timed_out: false,
            guest_elapsed: None,
            guest_handled: None,
        };
        assert_eq!(
            end_event(&exit(Some(0), None)),
            json!({"exitCode": 0, "exited": true, "status": "exit status 0"})
        );
        assert_eq!(end_event(&exit(Some(3), None))["error"], "exit status 3");
        let killed = end_event(&exit(None, Some(9)));
        assert_eq!(
            (killed["exitCode"].as_i64(), killed["status"].as_str()),
            (Some(-1), Some("signal: killed"))
        );
    }

    #[test]
    fn requests_parse_from_both_sdks() {
        let r: StartRequest = serde_json::from_str(
            r#"{"process":{"cmd":"/bin/bash","args":["-l","-c","ls"],"envs":{"A":"1"}},"pty":{"size":{"cols":100,"rows":"30"}},"stdin":false,"unknown":1}"#,
        )
        .unwrap();
        assert_eq!(r.process.unwrap().args, vec!["-l", "-c", "ls"]);
        assert_eq!(
            r.pty.unwrap().size(),
            PtySize {
                cols: 100,
                rows: 30
            }
        );
        assert_eq!(r.stdin, Some(false));
        let r: SendInputRequest =
            serde_json::from_str(r#"{"process":{"pid":7},"input":{"pty":"aGk="}}"#).unwrap();
        assert_eq!(r.input.unwrap().bytes(), Some(Bytes::from_static(b"hi")));
        let r: SendSignalRequest =
            serde_json::from_str(r#"{"process":{"tag":"t"},"signal":"SIGNAL_SIGKILL"}"#).unwrap();
        assert_eq!(r.process.unwrap().tag.as_deref(), Some("t"));
        let r: StreamInputRequest =
            serde_json::from_str(r#"{"data":{"input":{"stdin":"eA=="}}}"#).unwrap();
        assert!(r.data.is_some());
    }
}
