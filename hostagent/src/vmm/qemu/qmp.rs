//! A small typed QMP client (QEMU Machine Protocol) over the VM's Unix socket.
//!
//! Protocol, as this client uses it:
//! 1. QEMU sends a greeting `{"QMP": {"version": …, "capabilities": […]}}`;
//! 2. the client sends `qmp_capabilities` to leave negotiation mode;
//! 3. each command is `{"execute": …, "arguments": …, "id": N}`; QEMU answers
//!    `{"return": …, "id": N}` or `{"error": {"class": …, "desc": …}, "id": N}`;
//! 4. asynchronous events (`{"event": …, "data": …, "timestamp": …}`) can arrive at any time,
//!    including between a command and its reply.
//!
//! Commands are serialized behind one lock, and every command carries a fresh `id`: lines that
//! are events, or replies to an earlier command whose caller timed out, are skipped (events are
//! logged), so a reply is never mistaken for another. Errors surface as
//! [`Error::VmmControl`] carrying QEMU's `desc`.
//!
//! Why not the `qapi` crate: qapi 0.15 works with QEMU 10 (greeting, `query-status`, `stop`,
//! errors were checked), but it decodes every line into types generated from one QEMU schema,
//! and a line that fails to decode (an event or enum value from a newer QEMU) ends the stream
//! for all pending commands; its generated crate also adds about 1.5 CPU-minutes to a clean
//! build. The handful of commands the driver needs fit in this module.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::Mutex;
use tracing::{debug, trace};

use crate::error::{Error, Result};

/// Longest QMP line accepted.
const MAX_LINE: usize = 1 << 20;

/// One line from QEMU, classified.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// The connection greeting.
    Greeting {
        /// `QMP.version`.
        version: Value,
    },
    /// A successful reply.
    Return {
        /// The `id` echoed back, if the command had one.
        id: Option<Value>,
        /// The `return` value.
        value: Value,
    },
    /// A failed reply.
    Error {
        /// The `id` echoed back.
        id: Option<Value>,
        /// QEMU's error class (`GenericError`, `CommandNotFound`, …).
        class: String,
        /// QEMU's human-readable description.
        desc: String,
    },
    /// An asynchronous event.
    Event {
        /// Event name (`STOP`, `SHUTDOWN`, `MIGRATION`, …).
        name: String,
        /// Its `data`, or `null`.
        data: Value,
    },
}

/// Classifies one QMP line. Unknown shapes are an error string (the line is skipped by callers).
pub fn parse_message(line: &str) -> std::result::Result<Message, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON ({e}): {line}"))?;
    let Value::Object(mut obj) = value else {
        return Err(format!("not a JSON object: {line}"));
    };
    let id = obj.remove("id");
    if let Some(qmp) = obj.remove("QMP") {
        return Ok(Message::Greeting {
            version: qmp.get("version").cloned().unwrap_or(Value::Null),
        });
    }
    if let Some(value) = obj.remove("return") {
        return Ok(Message::Return { id, value });
    }
    if let Some(error) = obj.remove("error") {
        let field = |name: &str| {
            error
                .get(name)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        return Ok(Message::Error {
            id,
            class: field("class"),
            desc: field("desc"),
        });
    }
    if let Some(Value::String(name)) = obj.remove("event") {
        return Ok(Message::Event {
            name,
            data: obj.remove("data").unwrap_or(Value::Null),
        });
    }
    Err(format!("unknown QMP message: {line}"))
}

/// Reply of `query-status`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct StatusInfo {
    /// vCPUs running.
    pub running: bool,
    /// QEMU's run state (`running`, `paused`, `inmigrate`, `postmigrate`, `shutdown`, …).
    pub status: String,
}

/// Reply of `query-migrate` (the fields the driver reads).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    /// `setup`, `active`, `completed`, `failed`, …; absent before any migration.
    pub status: Option<String>,
    /// Why it failed.
    pub error_desc: Option<String>,
    /// Milliseconds the migration took.
    pub total_time: Option<u64>,
    /// RAM transfer counters.
    pub ram: Option<MigrationRam>,
}

/// RAM counters of a migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub struct MigrationRam {
    /// Bytes transferred.
    pub transferred: u64,
    /// Guest RAM size.
    pub total: u64,
}

struct Conn {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

/// A negotiated QMP connection.
pub struct Qmp {
    conn: Mutex<Conn>,
    next_id: AtomicU64,
    timeout: Duration,
}

impl std::fmt::Debug for Qmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qmp")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Qmp {
    /// Connects to `socket`, reads the greeting and negotiates capabilities. `timeout` bounds
    /// the connect and, afterwards, every command.
    pub async fn connect(socket: &Path, timeout: Duration) -> Result<Qmp> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(socket))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("QMP connect to {}", socket.display()),
                seconds: timeout.as_secs(),
            })?
            .map_err(|e| Error::io(format!("connecting to QMP socket {}", socket.display()), e))?;
        Self::handshake(stream, timeout).await
    }

    async fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp> {
        let (read, writer) = stream.into_split();
        let mut conn = Conn {
            reader: BufReader::new(read),
            writer,
        };
        let greeting = tokio::time::timeout(timeout, read_message(&mut conn.reader, "greeting"))
            .await
            .map_err(|_| Error::Timeout {
                what: "QMP greeting".to_string(),
                seconds: timeout.as_secs(),
            })??;
        match greeting {
            Message::Greeting { version } => debug!(%version, "QMP greeting"),
            other => {
                return Err(Error::VmmControl {
                    request: "greeting".to_string(),
                    message: format!("expected the QMP greeting, got {other:?}"),
                });
            }
        }
        let qmp = Qmp {
            conn: Mutex::new(conn),
            next_id: AtomicU64::new(1),
            timeout,
        };
        qmp.execute::<Value>("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` and decodes its `return` value as `T`.
    pub async fn execute<T: DeserializeOwned>(
        &self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<T> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "execute": command, "id": id });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let value = tokio::time::timeout(self.timeout, self.round_trip(command, id, &request))
            .await
            .map_err(|_| Error::Timeout {
                what: format!("QMP `{command}`"),
                seconds: self.timeout.as_secs(),
            })??;
        serde_json::from_value(value).map_err(|e| Error::VmmControl {
            request: command.to_string(),
            message: format!("unexpected reply shape: {e}"),
        })
    }

    /// Runs `command`, ignoring its return value.
    pub async fn run(&self, command: &str, arguments: Option<Value>) -> Result<()> {
        self.execute::<serde::de::IgnoredAny>(command, arguments)
            .await
            .map(|_| ())
    }

    /// `query-status`.
    pub async fn query_status(&self) -> Result<StatusInfo> {
        self.execute("query-status", None).await
    }

    /// `query-migrate`.
    pub async fn query_migrate(&self) -> Result<MigrationInfo> {
        self.execute("query-migrate", None).await
    }

    /// Hands QEMU a file descriptor in a new fd set (`add-fd`; the descriptor travels as
    /// `SCM_RIGHTS` with the command) and returns the set's id, for paths `/dev/fdset/<id>`. A
    /// QEMU that dropped its privileges can open no new path, but it can use what it is given.
    /// Give the set back with [`Qmp::remove_fd_set`].
    pub async fn add_fd(&self, fd: BorrowedFd<'_>) -> Result<u64> {
        self.add_fd_to(fd, None, None).await
    }

    /// [`Qmp::add_fd`] into fd set `set` (a new one for `None`), labelled `opaque` (which
    /// `query-fdsets` shows, so a set can be found again by what it holds).
    pub async fn add_fd_to(
        &self,
        fd: BorrowedFd<'_>,
        set: Option<u64>,
        opaque: Option<&str>,
    ) -> Result<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "execute": "add-fd", "id": id, "arguments": {} });
        if let Some(set) = set {
            request["arguments"]["fdset-id"] = json!(set);
        }
        if let Some(opaque) = opaque {
            request["arguments"]["opaque"] = json!(opaque);
        }
        let reply = tokio::time::timeout(
            self.timeout,
            self.exchange("add-fd", id, &request, Some(fd)),
        )
        .await
        .map_err(|_| Error::Timeout {
            what: "QMP `add-fd`".to_string(),
            seconds: self.timeout.as_secs(),
        })??;
        reply["fdset-id"].as_u64().ok_or_else(|| Error::VmmControl {
            request: "add-fd".to_string(),
            message: format!("no fdset-id in {reply}"),
        })
    }

    /// The fd sets whose descriptors carry an opaque label starting with `prefix`
    /// (`query-fdsets`).
    pub async fn fd_sets_labelled(&self, prefix: &str) -> Result<Vec<u64>> {
        let sets: Vec<Value> = self.execute("query-fdsets", None).await?;
        Ok(sets
            .iter()
            .filter(|set| {
                set["fds"].as_array().is_some_and(|fds| {
                    fds.iter()
                        .any(|fd| fd["opaque"].as_str().is_some_and(|o| o.starts_with(prefix)))
                })
            })
            .filter_map(|set| set["fdset-id"].as_u64())
            .collect())
    }

    /// Closes QEMU's copies of the descriptors in fd set `set` (`remove-fd`).
    pub async fn remove_fd_set(&self, set: u64) -> Result<()> {
        self.run("remove-fd", Some(json!({ "fdset-id": set })))
            .await
    }

    async fn round_trip(&self, command: &str, id: u64, request: &Value) -> Result<Value> {
        self.exchange(command, id, request, None).await
    }

    async fn exchange(
        &self,
        command: &str,
        id: u64,
        request: &Value,
        fd: Option<BorrowedFd<'_>>,
    ) -> Result<Value> {
        let mut conn = self.conn.lock().await;
        let mut line = request.to_string();
        line.push('\n');
        trace!(%line, "QMP send");
        let written = match fd {
            None => conn.writer.write_all(line.as_bytes()).await,
            Some(fd) => send_with_fd(conn.writer.as_ref(), line.as_bytes(), fd).await,
        };
        written.map_err(|e| Error::VmmControl {
            request: command.to_string(),
            message: format!("writing to QMP: {e}"),
        })?;
        loop {
            match read_message(&mut conn.reader, command).await? {
                Message::Return {
                    id: Some(got),
                    value,
                } if got == id => return Ok(value),
                Message::Error {
                    id: Some(got),
                    class,
                    desc,
                } if got == id => {
                    debug!(command, %class, %desc, "QMP error");
                    return Err(Error::VmmControl {
                        request: command.to_string(),
                        message: desc,
                    });
                }
                Message::Event { name, data } => debug!(event = %name, %data, "QMP event"),
                other => debug!(?other, "skipping QMP reply that is not ours"),
            }
        }
    }
}

/// Writes `bytes` with `fd` attached (`SCM_RIGHTS`); the whole line goes in one `sendmsg` or
/// the call fails (a QMP line is far below a socket buffer).
async fn send_with_fd(
    stream: &UnixStream,
    bytes: &[u8],
    fd: BorrowedFd<'_>,
) -> std::io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let fds = [fd.as_raw_fd()];
    loop {
        stream.writable().await?;
        let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
            sendmsg::<()>(
                stream.as_raw_fd(),
                &[std::io::IoSlice::new(bytes)],
                &[ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                None,
            )
            .map_err(std::io::Error::from)
        });
        match sent {
            Ok(n) if n == bytes.len() => return Ok(()),
            Ok(n) => {
                return Err(std::io::Error::other(format!(
                    "sent {n} of {} bytes with a descriptor",
                    bytes.len()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Reads the next well-formed message; malformed lines are logged and skipped.
async fn read_message(reader: &mut BufReader<OwnedReadHalf>, request: &str) -> Result<Message> {
    loop {
        let mut line = String::new();
        let n = reader
            .read_line(&mut line)
            .await
            .map_err(|e| Error::VmmControl {
                request: request.to_string(),
                message: format!("reading from QMP: {e}"),
            })?;
        if n == 0 {
            return Err(Error::VmmControl {
                request: request.to_string(),
                message: "QMP connection closed (QEMU exited?)".to_string(),
            });
        }
        if line.len() > MAX_LINE {
            return Err(Error::VmmControl {
                request: request.to_string(),
                message: format!("QMP line of {} bytes exceeds {MAX_LINE}", line.len()),
            });
        }
        trace!(line = line.trim_end(), "QMP recv");
        match parse_message(line.trim_end()) {
            Ok(message) => return Ok(message),
            Err(e) => debug!(error = %e, "skipping unparsable QMP line"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;
    use tokio::net::UnixListener;

    #[test]
    fn messages_are_classified() {
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 2, "minor": 0, "major": 10}, "package": ""}, "capabilities": ["oob"]}}"#;
        assert!(
            matches!(parse_message(greeting), Ok(Message::Greeting { version }) if version["qemu"]["major"] == 10)
        );
        assert_eq!(
            parse_message(r#"{"return": {"status": "running", "running": true}, "id": 7}"#),
            Ok(Message::Return {
                id: Some(json!(7)),
                value: json!({"status": "running", "running": true})
            })
        );
        assert_eq!(
            parse_message(r#"{"return": {}}"#),
            Ok(Message::Return {
                id: None,
                value: json!({})
            })
        );
        assert_eq!(
            parse_message(
                r#"{"id": 3, "error": {"class": "GenericError", "desc": "'-incoming' was not specified on the command line"}}"#
            ),
            Ok(Message::Error {
                id: Some(json!(3)),
                class: "GenericError".to_string(),
                desc: "'-incoming' was not specified on the command line".to_string(),
            })
        );
        assert_eq!(
            parse_message(r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}"#),
            Ok(Message::Event {
                name: "STOP".to_string(),
                data: Value::Null
            })
        );
        assert!(matches!(
            parse_message(r#"{"event": "MIGRATION", "data": {"status": "completed"}, "timestamp": {}}"#),
            Ok(Message::Event { name, data }) if name == "MIGRATION" && data["status"] == "completed"
        ));
        assert!(parse_message("[]").is_err());
        assert!(parse_message("{\"something\": 1}").is_err());
        assert!(parse_message("not json").is_err());
    }

    #[test]
    fn typed_replies_decode_from_qemu_shapes() {
        let info: MigrationInfo = serde_json::from_value(json!({
            "status": "completed", "total-time": 412, "setup-time": 1,
            "ram": {"transferred": 1000, "total": 268435456, "remaining": 0, "mbps": 1.5}
        }))
        .expect("decode");
        assert_eq!(info.status.as_deref(), Some("completed"));
        assert_eq!(info.total_time, Some(412));
        assert_eq!(
            info.ram,
            Some(MigrationRam {
                transferred: 1000,
                total: 268435456
            })
        );
        let empty: MigrationInfo = serde_json::from_value(json!({})).expect("decode");
        assert_eq!(empty, MigrationInfo::default());
        let failed: MigrationInfo =
            serde_json::from_value(json!({"status": "failed", "error-desc": "disk full"}))
                .expect("decode");
        assert_eq!(failed.error_desc.as_deref(), Some("disk full"));
    }

    /// Reads one request line from the fake QEMU side and returns its `id` and `execute`.
    async fn read_request(reader: &mut BufReader<OwnedReadHalf>) -> (Value, String) {
        let mut line = String::new();
        reader.read_line(&mut line).await.expect("request");
        let v: Value = serde_json::from_str(&line).expect("json request");
        (
            v["id"].clone(),
            v["execute"].as_str().expect("execute").to_string(),
        )
    }

    #[tokio::test]
    async fn events_and_stale_replies_are_not_taken_for_replies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let (read, mut write) = stream.into_split();
            let mut reader = BufReader::new(read);
            write
                .write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"major\": 10}}, \"capabilities\": []}}\n")
                .await
                .expect("greeting");
            let (id, cmd) = read_request(&mut reader).await;
            assert_eq!(cmd, "qmp_capabilities");
            write
                .write_all(format!("{{\"return\": {{}}, \"id\": {id}}}\n").as_bytes())
                .await
                .expect("caps");

            let (id, cmd) = read_request(&mut reader).await;
            assert_eq!(cmd, "query-status");
            // An event, a reply to somebody else and garbage come first, all in one write.
            let burst = format!(
                "{{\"event\": \"RESUME\", \"timestamp\": {{}}}}\n{{\"return\": {{\"status\": \"paused\", \"running\": false}}, \"id\": 999}}\nnot json\n{{\"return\": {{\"status\": \"running\", \"running\": true}}, \"id\": {id}}}\n"
            );
            write.write_all(burst.as_bytes()).await.expect("burst");

            let (id, cmd) = read_request(&mut reader).await;
            assert_eq!(cmd, "cont");
            write
                .write_all(
                    format!("{{\"id\": {id}, \"error\": {{\"class\": \"GenericError\", \"desc\": \"nope\"}}}}\n").as_bytes(),
                )
                .await
                .expect("error");
            // Close: the next command sees EOF.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest).await;
        });

        let qmp = Qmp::connect(&path, Duration::from_secs(5))
            .await
            .expect("connect");
        let status = qmp.query_status().await.expect("status");
        assert_eq!(
            status,
            StatusInfo {
                running: true,
                status: "running".to_string()
            }
        );
        match qmp.run("cont", None).await {
            Err(Error::VmmControl { request, message }) => {
                assert_eq!(request, "cont");
                assert_eq!(message, "nope");
            }
            other => panic!("expected VmmControl, got {other:?}"),
        }
        drop(qmp);
        server.await.expect("server");
    }

    #[tokio::test]
    async fn eof_is_a_control_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("qmp.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            drop(stream);
        });
        let err = Qmp::connect(&path, Duration::from_secs(5))
            .await
            .expect_err("closed");
        assert!(
            matches!(err, Error::VmmControl { ref message, .. } if message.contains("closed")),
            "{err}"
        );
    }
}
