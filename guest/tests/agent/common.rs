//! Test support: a `platinum-guest serve --unix` subprocess per test, and a host-side client built
//! from `platinum_protocol` exactly as the host agent uses it.
//!
//! `PLATINUM_GUEST_BIN` replaces the binary under test (say, the static release build).
//!
//! Each agent gets a temp dir with its socket, its log, and its own passwd/group files: the
//! system's entries plus `user` (uid 4242, home inside the temp dir, member of `extra`), so
//! requests without a user run as a non-root user. Readiness is the agent's `listening` line on
//! stdout. On drop the agent gets SIGTERM (it then kills what it started); if the test failed its
//! log is printed.

use crate::support::host_session;
use platinum_protocol::{
    ExecSpec, ExitStatus, GuestError, GuestEvent, GuestMessage, Inbound, Mux, Outcome, PingReply,
    Request, StreamReceiver,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio::net::UnixStream;

/// uid and gid of the test user `user`.
pub const USER_ID: u32 = 4242;
/// A supplementary group of `user`.
pub const EXTRA_GID: u32 = 4343;

/// Upper bound for any single wait in these tests.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub struct TestAgent {
    child: Child,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// Home of `user`.
    pub home: PathBuf,
    log: PathBuf,
}

impl TestAgent {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    pub fn start_with(extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        // Processes run as `user` must be able to reach their home inside it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod tempdir");
        let home = dir.path().join("home/user");
        std::fs::create_dir_all(&home).expect("mkdir home");
        std::os::unix::fs::chown(&home, Some(USER_ID), Some(USER_ID)).expect("chown home");
        let passwd = dir.path().join("passwd");
        let group = dir.path().join("group");
        let system_passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
        let system_group = std::fs::read_to_string("/etc/group").expect("read /etc/group");
        std::fs::write(
            &passwd,
            format!(
                "{system_passwd}user:x:{USER_ID}:{USER_ID}:Test User:{}:/bin/sh\n",
                home.display()
            ),
        )
        .expect("write passwd");
        std::fs::write(
            &group,
            format!("{system_group}user:x:{USER_ID}:\nextra:x:{EXTRA_GID}:user\n"),
        )
        .expect("write group");
        let socket = dir.path().join("agent.sock");
        let log = dir.path().join("agent.log");
        // PLATINUM_GUEST_BIN runs the suite against another build (e.g. the static one).
        let binary = std::env::var_os("PLATINUM_GUEST_BIN")
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_platinum-guest").into());
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--unix")
            .arg(&socket)
            .arg("--passwd")
            .arg(&passwd)
            .arg("--group")
            .arg(&group)
            .args(extra_args)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start platinum-guest");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read readiness line");
        assert_eq!(
            line.trim(),
            format!("listening unix:{}", socket.display()),
            "agent did not come up"
        );
        Self {
            child,
            dir,
            socket,
            home,
            log,
        }
    }

    /// A new host session.
    pub async fn connect(&self) -> Mux {
        let stream = UnixStream::connect(&self.socket).await.expect("connect");
        let (reader, writer) = stream.into_split();
        host_session(reader, writer, PATIENCE).await
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- agent log ----\n{log}---- end of agent log ----");
        }
    }
}

/// Hands a tree made by the test (as root) to `user`.
pub fn give_to_user(path: &std::path::Path) {
    std::os::unix::fs::lchown(path, Some(USER_ID), Some(USER_ID)).expect("chown");
    if std::fs::symlink_metadata(path).expect("stat").is_dir() {
        for entry in std::fs::read_dir(path).expect("list") {
            give_to_user(&entry.expect("entry").path());
        }
    }
}

/// Waits for `fut`, failing the test after [`PATIENCE`].
pub async fn within<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Reads the outcome, which must be the next thing on the stream.
pub async fn outcome(rx: &mut StreamReceiver) -> Result<Value, GuestError> {
    let Some(Inbound::Msg(m)) = within("outcome", rx.recv()).await.expect("stream") else {
        panic!("expected the outcome");
    };
    match serde_json::from_slice::<GuestMessage>(&m).expect("guest message") {
        GuestMessage::Outcome(Outcome::Ok(v)) => Ok(v),
        GuestMessage::Outcome(Outcome::Error(e)) => Err(e),
        GuestMessage::Event(e) => panic!("unexpected event {e:?}"),
    }
}

/// One plain request.
pub async fn call(mux: &Mux, request: &Request) -> Result<Value, GuestError> {
    let (_tx, mut rx) = mux.open_json(request).expect("open").split();
    outcome(&mut rx).await
}

/// One plain request that must succeed.
pub async fn ok<T: DeserializeOwned>(mux: &Mux, request: &Request) -> T {
    let value = call(mux, request)
        .await
        .unwrap_or_else(|e| panic!("{request:?} failed: {e}"));
    serde_json::from_value(value).expect("reply shape")
}

/// One plain request that must fail.
pub async fn fails(mux: &Mux, request: &Request) -> GuestError {
    match call(mux, request).await {
        Ok(v) => panic!("{request:?} succeeded with {v}"),
        Err(e) => e,
    }
}

/// Pings the agent, which must echo `payload` (the session still serves).
pub async fn ping(mux: &Mux, payload: &str) {
    let pong: PingReply = ok(
        mux,
        &Request::Ping {
            payload: payload.into(),
        },
    )
    .await;
    assert_eq!(pong.payload, payload);
}

/// Sends `signal` to process `pid`, which must succeed.
pub async fn signal(mux: &Mux, pid: u32, signal: i32) {
    let _: Value = ok(mux, &Request::Signal { pid, signal }).await;
}

/// Everything an exec or attach stream carried.
#[derive(Debug, Default)]
pub struct Run {
    pub events: Vec<GuestEvent>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub eofs: Vec<u8>,
    pub outcome: Option<Result<Value, GuestError>>,
}

impl Run {
    pub fn status(&self) -> ExitStatus {
        match &self.outcome {
            Some(Ok(v)) => serde_json::from_value(v.clone()).expect("exit status"),
            other => panic!("no exit status: {other:?}"),
        }
    }

    pub fn error(&self) -> &GuestError {
        match &self.outcome {
            Some(Err(e)) => e,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn pid(&self) -> u32 {
        match self.events.first() {
            Some(GuestEvent::Started { pid }) => *pid,
            other => panic!("first event is not started: {other:?}"),
        }
    }
}

/// Reads one stream to its end: events, output, outcome, then the guest's CLOSE.
pub async fn collect(rx: &mut StreamReceiver) -> Run {
    let mut run = Run::default();
    loop {
        match within("process stream", rx.recv()).await.expect("stream") {
            Some(Inbound::Data { channel: 1, bytes }) => run.stdout.extend_from_slice(&bytes),
            Some(Inbound::Data { channel: 2, bytes }) => run.stderr.extend_from_slice(&bytes),
            Some(Inbound::Eof { channel }) => run.eofs.push(channel),
            Some(Inbound::Msg(m)) => {
                match serde_json::from_slice::<GuestMessage>(&m).expect("guest message") {
                    GuestMessage::Event(e) => run.events.push(e),
                    GuestMessage::Outcome(Outcome::Ok(v)) => run.outcome = Some(Ok(v)),
                    GuestMessage::Outcome(Outcome::Error(e)) => run.outcome = Some(Err(e)),
                }
            }
            Some(other) => panic!("unexpected {other:?}"),
            None => {
                assert!(
                    run.outcome.is_some(),
                    "stream closed without an outcome: {run:?}"
                );
                return run;
            }
        }
    }
}

/// Runs a process to its end.
pub async fn run(mux: &Mux, spec: ExecSpec) -> Run {
    let (_tx, mut rx) = mux.open_json(&Request::Exec(spec)).expect("open").split();
    collect(&mut rx).await
}

/// A shell command run as `user`.
pub fn shell(cmd: &str) -> ExecSpec {
    ExecSpec::shell(cmd)
}

/// A shell command run as `root`.
pub fn root_shell(cmd: &str) -> ExecSpec {
    ExecSpec {
        user: Some("root".into()),
        ..ExecSpec::shell(cmd)
    }
}

/// Reads until `pattern` has appeared on stdout; returns what was read.
pub async fn read_until(rx: &mut StreamReceiver, pattern: &str) -> (Vec<GuestEvent>, String) {
    let mut events = Vec::new();
    let mut out = String::new();
    while !out.contains(pattern) {
        match within("output", rx.recv()).await.expect("stream") {
            Some(Inbound::Data { channel: 1, bytes }) => {
                out.push_str(&String::from_utf8_lossy(&bytes))
            }
            Some(Inbound::Msg(m)) => {
                match serde_json::from_slice::<GuestMessage>(&m).expect("guest message") {
                    GuestMessage::Event(e) => events.push(e),
                    GuestMessage::Outcome(o) => {
                        panic!("ended before {pattern:?}: {o:?}, output {out:?}")
                    }
                }
            }
            Some(_) => {}
            None => panic!("stream closed before {pattern:?}"),
        }
    }
    (events, out)
}
