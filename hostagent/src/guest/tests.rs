//! The client against a scripted guest over an in-memory pipe: a guest that answers `hello`
//! and then never answers again must not hang any request.

use bytes::{Bytes, BytesMut};
use platinum_protocol::handshake::guest_handshake;
use platinum_protocol::{
    ExecSpec, GuestMessage, Hello, HelloReply, Mux, Outcome, PROTOCOL_VERSION, PathRequest,
    Request, Role, Stream,
};
use std::io::Cursor;
use std::time::Duration;
use tokio::io::AsyncReadExt;

use super::{DEFAULT_CALL_TIMEOUT, GuestClient};
use crate::error::Error;

/// Starts a session with a guest that answers `hello` and keeps every later request open
/// without a word (and without granting credit).
async fn wedged_guest() -> GuestClient {
    let (host_end, guest_end) = tokio::io::duplex(4 * 1024 * 1024);
    tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(guest_end);
        let mut early = BytesMut::new();
        guest_handshake(&mut r, &mut w, &mut early)
            .await
            .expect("guest handshake");
        let (_mux, mut incoming) = Mux::new(Cursor::new(early.freeze()).chain(r), w, Role::Guest);
        let mut held: Vec<Stream> = Vec::new();
        while let Some(stream) = incoming.accept().await {
            let request: Request =
                serde_json::from_slice(stream.open_payload()).expect("a request");
            if let Request::Hello(_) = request {
                let reply = HelloReply {
                    protocol: PROTOCOL_VERSION,
                    agent_version: "wedged".into(),
                    boot_id: "b".into(),
                    kernel: "k".into(),
                };
                let value = serde_json::to_value(reply).expect("reply");
                stream
                    .tx
                    .send_json(&GuestMessage::Outcome(Outcome::Ok(value)))
                    .expect("answer hello");
                stream.tx.close().expect("close");
            }
            held.push(stream);
        }
    });
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        ..Hello::default()
    };
    GuestClient::start(host_end, hello, Duration::from_secs(5))
        .await
        .expect("session")
}

/// A guest that shakes hands and then never answers `hello`: the failed start closes the
/// connection (a leaked one keeps a virtio-serial chardev from taking the next attempt).
#[tokio::test]
async fn a_start_without_an_answer_to_hello_closes_the_connection() {
    let (host_end, guest_end) = tokio::io::duplex(64 * 1024);
    let guest = tokio::spawn(async move {
        let (mut r, mut w) = tokio::io::split(guest_end);
        let mut early = BytesMut::new();
        guest_handshake(&mut r, &mut w, &mut early)
            .await
            .expect("guest handshake");
        // Read (and ignore) everything until the host hangs up.
        let mut buf = vec![0u8; 4096];
        while r.read(&mut buf).await.expect("read") > 0 {}
        w
    });
    let hello = Hello {
        protocol: PROTOCOL_VERSION,
        ..Hello::default()
    };
    let err = GuestClient::start(host_end, hello, Duration::from_millis(300))
        .await
        .err()
        .expect("no session without an answer to hello");
    assert!(err.to_string().contains("no answer to hello"), "{err}");
    tokio::time::timeout(Duration::from_secs(5), guest)
        .await
        .expect("the host closed the connection")
        .expect("guest task");
}

fn at(path: &str) -> PathRequest {
    PathRequest {
        path: path.into(),
        user: None,
    }
}

/// Asserts that `err` is the deadline of [`DEFAULT_CALL_TIMEOUT`] and names `what`.
fn assert_deadline(err: Error, what: &str) {
    match &err {
        Error::Timeout { what: w, seconds } => {
            assert_eq!(*seconds, DEFAULT_CALL_TIMEOUT.as_secs());
            assert!(w.contains(what), "{err}");
        }
        other => panic!("expected a timeout naming {what}, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn requests_to_a_wedged_guest_fail_at_their_deadline() {
    let guest = wedged_guest().await;
    let started = tokio::time::Instant::now();
    let err = guest
        .exec(ExecSpec::shell("true"))
        .await
        .err()
        .expect("exec fails");
    assert_deadline(err, "exec");
    assert!(started.elapsed() >= DEFAULT_CALL_TIMEOUT);
    assert_deadline(
        guest.attach(7, true).await.err().expect("attach fails"),
        "attach",
    );
    assert_deadline(
        guest
            .read_file(at("/etc/hostname"))
            .await
            .err()
            .expect("read fails"),
        "read_file",
    );
    assert_deadline(
        guest.connect_port(8080).await.expect_err("connect fails"),
        "connect_port",
    );
    assert_deadline(
        guest
            .watch(at("/tmp"), false, false)
            .await
            .err()
            .expect("watch fails"),
        "watch",
    );
    assert_deadline(guest.stat(at("/")).await.expect_err("stat fails"), "stat");
    // The session itself is fine: only the requests gave up.
    assert!(!guest.is_closed());
    assert!(guest.violation().is_none());
}

#[tokio::test(start_paused = true)]
async fn an_upload_to_a_guest_that_grants_no_credit_fails_with_a_timeout() {
    let guest = wedged_guest().await;
    let started = tokio::time::Instant::now();
    let body =
        futures::stream::iter((0..4).map(|_| Ok::<_, Error>(Bytes::from(vec![0u8; 1024 * 1024]))));
    let req: platinum_protocol::WriteFile =
        serde_json::from_value(serde_json::json!({ "path": "/tmp/big" })).expect("request");
    let err = guest.write_file(req, body).await.expect_err("upload fails");
    assert!(
        matches!(&err, Error::Transport(platinum_protocol::MuxError::Timeout(m)) if m.contains("credit")),
        "{err:?}"
    );
    assert!(started.elapsed() >= platinum_protocol::mux::CREDIT_WAIT);
    let err = guest
        .write_stdin(1, Bytes::from(vec![0u8; 2 * 1024 * 1024]))
        .await
        .expect_err("stdin write fails");
    assert!(
        matches!(
            &err,
            Error::Transport(platinum_protocol::MuxError::Timeout(_))
        ),
        "{err:?}"
    );
}
