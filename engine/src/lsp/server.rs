//! One language server: a process in the sandbox spoken to with JSON-RPC over its stdin and
//! stdout, through the guest agent (never over a TCP port).
//!
//! A pump task owns the process's output stream: it splits stdout into messages
//! ([`super::framing`]), hands each response to the request waiting for it, answers the server's
//! own requests (`workspace/configuration` with nulls, anything else with `null`, as a client
//! without those features does) and drops its notifications. When the process exits, the stream
//! breaks or the server writes something unreadable, every waiting request fails with why, and so
//! does every later one.

use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;
use tokio::sync::oneshot;

use super::framing::{Decoder, encode};
use crate::error::{Error, Result};
use crate::process::{ExecEvent, ExecStream, StdinWriter};

/// How long one request may take (the first ones index the project; TCG guests are slow).
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);
/// Requests one server may have waiting at once.
const MAX_PENDING: usize = 64;

type Reply = std::result::Result<Value, String>;

/// A running language server.
pub(crate) struct LanguageServer {
    /// Guest pid of the server process.
    pub(crate) pid: u32,
    /// What the server said it can do (`initialize`'s `capabilities`), once initialized.
    capabilities: Mutex<Value>,
    stdin: StdinWriter,
    pending: Mutex<HashMap<i64, oneshot::Sender<Reply>>>,
    next_id: AtomicI64,
    /// Why it stopped serving, once it did.
    ended: Mutex<Option<String>>,
    pump: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for LanguageServer {
    fn drop(&mut self) {
        if let Some(pump) = self.pump.lock().expect("lsp pump").take() {
            pump.abort();
        }
    }
}

impl LanguageServer {
    /// Takes over a freshly started server process and starts reading its output.
    pub(crate) fn new(stream: ExecStream) -> std::sync::Arc<Self> {
        let server = std::sync::Arc::new(LanguageServer {
            pid: stream.pid(),
            capabilities: Mutex::new(Value::Null),
            stdin: stream.stdin(),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicI64::new(1),
            ended: Mutex::new(None),
            pump: Mutex::new(None),
        });
        let weak = std::sync::Arc::downgrade(&server);
        let pump = tokio::spawn(pump(stream, weak));
        *server.pump.lock().expect("lsp pump") = Some(pump);
        server
    }

    /// Initializes the server for `project`: `initialize` (its capabilities are kept), then
    /// `initialized`.
    pub(crate) async fn initialize(&self, params: Value) -> Result<()> {
        let reply = self.request("initialize", params).await?;
        *self.capabilities.lock().expect("lsp state") =
            reply.get("capabilities").cloned().unwrap_or(Value::Null);
        self.notify("initialized", json!({})).await
    }

    /// Whether the server announced `provider` (e.g. `workspaceSymbolProvider`).
    pub(crate) fn provides(&self, provider: &str) -> bool {
        match self.capabilities.lock().expect("lsp state").get(provider) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(_) => true,
        }
    }

    /// Why the server no longer serves, if it does not.
    pub(crate) fn ended(&self) -> Option<String> {
        self.ended.lock().expect("lsp state").clone()
    }

    /// Sends a request and waits for its result.
    pub(crate) async fn request(&self, method: &str, params: Value) -> Result<Value> {
        let gone = |why: String| Error::Conflict(format!("the language server stopped: {why}"));
        if let Some(why) = self.ended() {
            return Err(gone(why));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = self.pending.lock().expect("lsp pending");
            if pending.len() >= MAX_PENDING {
                return Err(Error::CapacityExhausted(format!(
                    "{MAX_PENDING} requests are already waiting on this language server"
                )));
            }
            pending.insert(id, tx);
        }
        let sent = self
            .write(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        if let Err(e) = sent {
            self.pending.lock().expect("lsp pending").remove(&id);
            return Err(e);
        }
        match tokio::time::timeout(REQUEST_TIMEOUT, rx).await {
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(message))) => Err(Error::InvalidRequest(format!(
                "the language server refused {method}: {message}"
            ))),
            Ok(Err(_)) => Err(gone(self.ended().unwrap_or_else(|| "it went away".into()))),
            Err(_) => {
                self.pending.lock().expect("lsp pending").remove(&id);
                Err(Error::GuestUnreachable(format!(
                    "the language server did not answer {method} within {} s",
                    REQUEST_TIMEOUT.as_secs()
                )))
            }
        }
    }

    /// Sends a notification.
    pub(crate) async fn notify(&self, method: &str, params: Value) -> Result<()> {
        if let Some(why) = self.ended() {
            return Err(Error::Conflict(format!(
                "the language server stopped: {why}"
            )));
        }
        self.write(&json!({"jsonrpc": "2.0", "method": method, "params": params}))
            .await
    }

    async fn write(&self, message: &Value) -> Result<()> {
        self.stdin.write(&encode(message)).await
    }

    /// Marks the server ended and fails everything waiting on it.
    fn end(&self, why: String) {
        tracing::debug!(pid = self.pid, %why, "language server ended");
        self.ended
            .lock()
            .expect("lsp state")
            .get_or_insert(why.clone());
        for (_, waiting) in self.pending.lock().expect("lsp pending").drain() {
            let _ = waiting.send(Err(why.clone()));
        }
    }

    /// Routes one message from the server.
    async fn received(&self, message: Value) {
        let id = message.get("id").cloned();
        match (message.get("method").and_then(Value::as_str), id) {
            // A response to one of ours.
            (None, Some(id)) => {
                let Some(id) = id.as_i64() else { return };
                let Some(waiting) = self.pending.lock().expect("lsp pending").remove(&id) else {
                    return;
                };
                let reply = match message.get("error") {
                    Some(e) => Err(e
                        .get("message")
                        .and_then(Value::as_str)
                        .unwrap_or("error")
                        .to_string()),
                    None => Ok(message.get("result").cloned().unwrap_or(Value::Null)),
                };
                let _ = waiting.send(reply);
            }
            // The server asks something of us.
            (Some(method), Some(id)) => {
                let result = match method {
                    "workspace/configuration" => {
                        let n = message
                            .pointer("/params/items")
                            .and_then(Value::as_array)
                            .map_or(0, Vec::len)
                            .min(1024);
                        Value::Array(vec![Value::Null; n])
                    }
                    _ => Value::Null,
                };
                let answer = json!({"jsonrpc": "2.0", "id": id, "result": result});
                if let Err(e) = self.write(&answer).await {
                    tracing::debug!(error = %e, method, "could not answer the language server");
                }
            }
            // Diagnostics, logs, progress: not asked for.
            _ => {}
        }
    }
}

/// Reads the server's output until it ends (see the module docs).
async fn pump(mut stream: ExecStream, weak: std::sync::Weak<LanguageServer>) {
    let mut decoder = Decoder::default();
    let why = loop {
        let event = match stream.next().await {
            Ok(Some(event)) => event,
            Ok(None) => break "its output ended".to_string(),
            Err(e) => break format!("lost its process: {e}"),
        };
        let Some(server) = weak.upgrade() else {
            return;
        };
        match event {
            ExecEvent::Stdout(bytes) => {
                decoder.push(&bytes);
                loop {
                    match decoder.next_message() {
                        Ok(Some(message)) => server.received(message).await,
                        Ok(None) => break,
                        Err(e) => {
                            // Unreadable from here on: stop it rather than guess.
                            server.end(e.to_string());
                            let _ = server.stdin.close();
                            return;
                        }
                    }
                }
            }
            ExecEvent::Stderr(bytes) => {
                tracing::trace!(len = bytes.len(), "language server stderr");
            }
            ExecEvent::Lost(_) => {}
            ExecEvent::Exited(status) => {
                break format!("it exited with code {}", status.shell_code());
            }
        }
    };
    if let Some(server) = weak.upgrade() {
        server.end(why);
    }
}
