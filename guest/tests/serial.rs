//! The virtio-serial session loop, in process, over a pair of FIFOs that behave like a port: the
//! agent's read end returns end of file while no host has it open and blocks while one does, and
//! what the agent writes waits in the other FIFO, stale bytes included, for the next host.

mod support;

use nix::sys::stat::Mode;
use platinum_guest::transport::serial::serve_port;
use platinum_guest::{Agent, AgentConfig, Mode as AgentMode};
use platinum_protocol::{
    ExecSpec, GuestEvent, GuestMessage, Inbound, Mux, Outcome, PingReply, ProcessInfo, Request,
};
use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;
use support::host_session;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

const PATIENCE: Duration = Duration::from_secs(30);

/// A host attaching to the port: opens both FIFOs, handshakes, starts a session.
async fn attach_host(to_guest: &Path, from_guest: &Path) -> Mux {
    let writer = pipe::OpenOptions::new()
        .open_sender(to_guest)
        .expect("open the host->guest FIFO");
    let reader = pipe::OpenOptions::new()
        .open_receiver(from_guest)
        .expect("open the guest->host FIFO");
    host_session(reader, writer, PATIENCE).await
}

async fn call(mux: &Mux, request: &Request) -> serde_json::Value {
    let (_tx, mut rx) = mux.open_json(request).expect("open").split();
    let item = tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("in time")
        .expect("stream");
    let Some(Inbound::Msg(m)) = item else {
        panic!("expected the outcome, got {item:?}")
    };
    match serde_json::from_slice::<GuestMessage>(&m).expect("message") {
        GuestMessage::Outcome(Outcome::Ok(v)) => v,
        other => panic!("unexpected {other:?}"),
    }
}

async fn ping(mux: &Mux, payload: &str) {
    let reply: PingReply = serde_json::from_value(
        call(
            mux,
            &Request::Ping {
                payload: payload.into(),
            },
        )
        .await,
    )
    .expect("ping");
    assert_eq!(reply.payload, payload);
}

// One thread: the old host's tasks have exited before the guest can answer the next host.
#[tokio::test]
async fn sessions_restart_on_a_new_magic_or_after_end_of_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let to_guest = dir.path().join("to-guest");
    let from_guest = dir.path().join("from-guest");
    for fifo in [&to_guest, &from_guest] {
        nix::unistd::mkfifo(fifo, Mode::from_bits_truncate(0o600)).expect("mkfifo");
    }
    // The agent's ends. Read end: opened without waiting for a writer, then blocking again, so it
    // reads end of file while no host is attached. Write end: read-write, so it never blocks on
    // open and output waits in the FIFO like bytes a disconnected port never delivered.
    let port_in = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&to_guest)
        .expect("open");
    let flags = nix::fcntl::fcntl(&port_in, nix::fcntl::FcntlArg::F_GETFL).expect("getfl");
    let blocking = nix::fcntl::OFlag::from_bits_retain(flags) & !nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&port_in, nix::fcntl::FcntlArg::F_SETFL(blocking)).expect("setfl");
    let port_out = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&from_guest)
        .expect("open");
    let agent = Agent::new(AgentConfig::new(AgentMode::Serve));
    let served = tokio::spawn(serve_port(agent, port_in, port_out));

    // Half a frame of a session long gone, then end of file.
    {
        let mut stale = pipe::OpenOptions::new()
            .open_sender(&to_guest)
            .expect("open");
        stale
            .write_all(b"\x00\x00\x10stale bytes of a session long gone")
            .await
            .expect("write");
    }
    // From here on some writer always holds the port open, so the agent sees no end of file
    // between the next two hosts: it must notice the second host's magic by itself.
    let keeper = pipe::OpenOptions::new()
        .open_sender(&to_guest)
        .expect("open");

    let first = attach_host(&to_guest, &from_guest).await;
    ping(&first, "one").await;
    let (_tx, mut rx) = first
        .open_json(&Request::Exec(ExecSpec {
            user: Some("root".into()),
            ..ExecSpec::shell("echo up; exec sleep 60")
        }))
        .expect("open")
        .split();
    let pid = loop {
        match rx.recv().await.expect("stream") {
            Some(Inbound::Msg(m)) => {
                if let GuestMessage::Event(GuestEvent::Started { pid }) =
                    serde_json::from_slice(&m).expect("message")
                {
                    break pid;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    };
    // The host goes away mid-session, leaving unread answers in the FIFO.
    ping(&first, "unread").await;
    first.shutdown("host detaches");
    drop((first, rx));

    let second = attach_host(&to_guest, &from_guest).await;
    ping(&second, "two").await;
    let list: Vec<ProcessInfo> =
        serde_json::from_value(call(&second, &Request::ListProcesses).await).expect("list");
    assert_eq!(
        list.iter().find(|p| p.pid == pid).map(|p| p.exit),
        Some(None),
        "the process outlived its session"
    );

    // Now every writer goes: the agent reads end of file (repeatedly, paced) until the next host.
    second.shutdown("host detaches");
    drop((second, keeper));
    let third = attach_host(&to_guest, &from_guest).await;
    ping(&third, "three").await;
    call(&third, &Request::Signal { pid, signal: 9 }).await;
    assert!(!served.is_finished(), "the port loop never ends on its own");
}
