//! `watch`: directory changes streamed as `fs_event`s, recursive watching, typed errors, and the
//! end of a watch when its directory goes away.

use crate::common::{TestAgent, give_to_user, outcome, within};
use platinum_protocol::{
    FsEvent, FsOp, GuestErrorCode, GuestEvent, GuestMessage, Inbound, PathRequest, Request,
    StreamReceiver, StreamSender,
};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn watch_req(path: &Path, recursive: bool) -> Request {
    Request::Watch {
        at: PathRequest {
            path: path.to_str().expect("utf-8 path").into(),
            user: None,
        },
        recursive,
        allow_network_mounts: false,
    }
}

/// Opens a watch and waits for `watching`.
async fn start(mux: &platinum_protocol::Mux, req: Request) -> (StreamSender, StreamReceiver) {
    let (tx, mut rx) = mux.open_json(&req).expect("open").split();
    let first = within("watching", rx.recv_json::<GuestMessage>())
        .await
        .expect("first message");
    assert_eq!(first, GuestMessage::Event(GuestEvent::Watching));
    (tx, rx)
}

/// Reads events until one matches `name` and `op`; returns everything read.
async fn until(rx: &mut StreamReceiver, name: &str, op: FsOp) -> Vec<FsEvent> {
    let mut seen = Vec::new();
    within(&format!("{op:?} {name}"), async {
        loop {
            match rx.recv().await.expect("stream") {
                Some(Inbound::Msg(m)) => {
                    match serde_json::from_slice::<GuestMessage>(&m).expect("message") {
                        GuestMessage::Event(GuestEvent::FsEvent(e)) => {
                            let hit = e.name == name && e.op == op;
                            seen.push(e);
                            if hit {
                                return;
                            }
                        }
                        other => panic!("unexpected {other:?} after {seen:?}"),
                    }
                }
                other => panic!("unexpected {other:?} after {seen:?}"),
            }
        }
    })
    .await;
    seen
}

#[tokio::test]
async fn reports_changes_by_name_and_op() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let dir = agent.home.join("watched");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    give_to_user(&dir);
    let (_tx, mut rx) = start(&mux, watch_req(&dir, false)).await;

    std::fs::write(dir.join("a.txt"), b"one").unwrap();
    until(&mut rx, "a.txt", FsOp::Create).await;
    until(&mut rx, "a.txt", FsOp::Write).await;
    std::fs::set_permissions(dir.join("a.txt"), std::fs::Permissions::from_mode(0o600)).unwrap();
    until(&mut rx, "a.txt", FsOp::Chmod).await;
    std::fs::rename(dir.join("a.txt"), dir.join("b.txt")).unwrap();
    until(&mut rx, "a.txt", FsOp::Rename).await;
    until(&mut rx, "b.txt", FsOp::Create).await;
    // Not recursive: a change inside `sub` is invisible; the next event is the removal.
    std::fs::write(dir.join("sub/inner.txt"), b"x").unwrap();
    std::fs::remove_file(dir.join("b.txt")).unwrap();
    let seen = until(&mut rx, "b.txt", FsOp::Remove).await;
    assert!(
        seen.iter().all(|e| !e.name.contains("inner")),
        "non-recursive watch saw {seen:?}"
    );
}

#[tokio::test]
async fn recursive_watches_follow_new_directories() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let dir = agent.home.join("tree");
    std::fs::create_dir_all(dir.join("old")).unwrap();
    give_to_user(&dir);
    let (_tx, mut rx) = start(&mux, watch_req(&dir, true)).await;

    std::fs::write(dir.join("old/x.txt"), b"x").unwrap();
    until(&mut rx, "old/x.txt", FsOp::Create).await;
    std::fs::create_dir(dir.join("new")).unwrap();
    until(&mut rx, "new", FsOp::Create).await;
    // Give the agent a moment to add the new watch; either way the file must be reported
    // (by the watch, or by the scan of the new directory).
    tokio::time::sleep(Duration::from_millis(100)).await;
    std::fs::create_dir_all(dir.join("new/deeper")).unwrap();
    std::fs::write(dir.join("new/deeper/f.txt"), b"f").unwrap();
    until(&mut rx, "new/deeper/f.txt", FsOp::Create).await;
}

#[tokio::test]
async fn the_watch_ends_when_its_directory_goes_away() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let dir = agent.home.join("doomed");
    std::fs::create_dir_all(&dir).unwrap();
    give_to_user(&dir);
    let (_tx, mut rx) = start(&mux, watch_req(&dir, false)).await;
    std::fs::remove_dir(&dir).unwrap();
    until(&mut rx, ".", FsOp::Remove).await;
    assert_eq!(outcome(&mut rx).await, Ok(serde_json::Value::Null));
}

#[tokio::test]
async fn bad_paths_get_typed_errors() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let file = agent.home.join("plain.txt");
    std::fs::write(&file, b"x").unwrap();
    give_to_user(&file);
    let private = agent.dir.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();

    for (path, code) in [
        (agent.home.join("missing"), GuestErrorCode::NotFound),
        (file.clone(), GuestErrorCode::NotADirectory),
        (private.join("inside"), GuestErrorCode::PermissionDenied),
    ] {
        let (_tx, mut rx) = mux.open_json(&watch_req(&path, true)).unwrap().split();
        let err = outcome(&mut rx).await.expect_err("watch should fail");
        assert_eq!(err.code, code, "{}: {err:?}", path.display());
    }
    // The user cannot watch a directory it may not read, even though it exists.
    let (_tx, mut rx) = mux.open_json(&watch_req(&private, false)).unwrap().split();
    let err = outcome(&mut rx).await.expect_err("watch should fail");
    assert_eq!(err.code, GuestErrorCode::PermissionDenied, "{err:?}");
    // The agent still serves after the failures, and a reset watch leaves nothing behind.
    let (tx, rx) = start(&mux, watch_req(&agent.home, false)).await;
    drop((tx, rx));
    let (_tx, _rx) = start(&mux, watch_req(&agent.home, true)).await;
}

#[tokio::test]
async fn the_agents_own_writes_look_like_plain_writes() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let dir = agent.home.join("out");
    std::fs::create_dir_all(&dir).unwrap();
    give_to_user(&dir);
    let (_tx, mut rx) = start(&mux, watch_req(&dir, false)).await;
    // An atomic write_file: a temporary file renamed over the destination.
    let req = platinum_protocol::WriteFile {
        at: PathRequest {
            path: dir.join("r.txt").to_str().unwrap().into(),
            user: None,
        },
        mode: None,
        append: false,
        create_parents: true,
        owner: None,
        metadata: Default::default(),
    };
    let (wtx, mut wrx) = mux.open_json(&Request::WriteFile(req)).unwrap().split();
    wtx.send_data(platinum_protocol::channel::STDIN, b"data")
        .await
        .unwrap();
    wtx.send_eof(platinum_protocol::channel::STDIN).unwrap();
    outcome(&mut wrx).await.expect("write_file");
    let seen = until(&mut rx, "r.txt", FsOp::Write).await;
    assert!(
        seen.iter().all(|e| e.name == "r.txt"),
        "temporary files leaked into the watch: {seen:?}"
    );
    assert_eq!(seen.first().map(|e| e.op), Some(FsOp::Create), "{seen:?}");
}
