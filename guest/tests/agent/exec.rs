//! Processes: exec, stdin, users, env, cwd, timeouts, signals, detach/attach, the output ring,
//! PTYs, and the process list.

use crate::common::{
    EXTRA_GID, TestAgent, USER_ID, collect, fails, ok, outcome, ping, read_until, root_shell, run,
    shell, signal, within,
};
use platinum_protocol::{
    Command, ExecSpec, GuestErrorCode, GuestEvent, ProcessInfo, PtySize, Request, channel,
};
use std::collections::BTreeMap;
use std::time::Duration;

fn argv(args: &[&str]) -> ExecSpec {
    ExecSpec {
        command: Command::Argv(args.iter().map(|a| a.to_string()).collect()),
        ..ExecSpec::shell("")
    }
}

#[tokio::test]
async fn argv_and_shell_report_output_and_exit_codes() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let r = run(&mux, argv(&["sh", "-c", "echo out; echo err >&2; exit 3"])).await;
    assert_eq!(r.stdout, b"out\n");
    assert_eq!(r.stderr, b"err\n");
    assert_eq!(r.status().code, Some(3));
    assert!(!r.status().timed_out);
    assert!(matches!(r.events.first(), Some(GuestEvent::Started { .. })));
    assert!(matches!(r.events.last(), Some(GuestEvent::Exited(s)) if s.code == Some(3)));
    assert_eq!(r.eofs, [channel::STDOUT, channel::STDERR]);

    let r = run(&mux, shell("exit 5")).await;
    assert_eq!(r.status().code, Some(5));
    let r = run(&mux, shell("kill -TERM $$")).await;
    assert_eq!((r.status().code, r.status().signal), (None, Some(15)));
}

#[tokio::test]
async fn environment_layers_later_wins() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let hello = platinum_protocol::Hello {
        protocol: platinum_protocol::PROTOCOL_VERSION,
        unix_ns: 0,
        env: BTreeMap::from([("A".into(), "hello".into()), ("B".into(), "hello".into())]),
        default_user: None,
        trust_pem: None,
    };
    let _: platinum_protocol::HelloReply = ok(&mux, &Request::Hello(hello)).await;
    let spec = ExecSpec {
        env: BTreeMap::from([("B".into(), "request".into())]),
        ..argv(&["env"])
    };
    let out = run(&mux, spec).await.stdout_text();
    let env: BTreeMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(env["A"], "hello");
    assert_eq!(env["B"], "request");
    assert_eq!(
        env["PATH"],
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
    assert_eq!(env["HOME"], agent.home.to_str().expect("utf-8 home"));
    assert_eq!(
        (env["USER"], env["LOGNAME"], env["SHELL"], env["LANG"]),
        ("user", "user", "/bin/sh", "C.UTF-8")
    );
    assert!(!env.contains_key("TERM"), "TERM only on a PTY");
}

#[tokio::test]
async fn working_directory_absolute_relative_default_and_missing() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let sub = agent.home.join("sub");
    std::fs::create_dir(&sub).expect("mkdir");
    let pwd = |cwd: Option<&str>| ExecSpec {
        cwd: cwd.map(str::to_string),
        ..shell("pwd")
    };
    assert_eq!(
        run(&mux, pwd(None)).await.stdout_text().trim(),
        agent.home.to_str().expect("utf-8")
    );
    assert_eq!(run(&mux, pwd(Some("/tmp"))).await.stdout_text(), "/tmp\n");
    assert_eq!(
        run(&mux, pwd(Some("sub"))).await.stdout_text().trim(),
        sub.to_str().expect("utf-8")
    );
    assert_eq!(
        run(&mux, pwd(Some("~/sub"))).await.stdout_text().trim(),
        sub.to_str().expect("utf-8")
    );
    let missing = run(&mux, pwd(Some("/no/such/dir"))).await;
    assert!(
        missing.events.is_empty(),
        "no started event before a spawn failure"
    );
    assert_eq!(missing.error().code, GuestErrorCode::SpawnFailed);
    assert!(
        missing.error().message.contains("/no/such/dir"),
        "{}",
        missing.error().message
    );
    // A directory the user may not enter.
    let denied = run(&mux, pwd(Some("/root"))).await;
    assert_eq!(denied.error().code, GuestErrorCode::SpawnFailed);
}

#[tokio::test]
async fn runs_as_the_requested_user_with_their_groups() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let ids = run(&mux, shell("id -u; id -g; id -G")).await.stdout_text();
    let groups: Vec<u32> = ids
        .lines()
        .nth(2)
        .expect("groups")
        .split(' ')
        .map(|g| g.parse().expect("gid"))
        .collect();
    assert_eq!(
        ids.lines().take(2).collect::<Vec<_>>(),
        [USER_ID.to_string(), USER_ID.to_string()]
    );
    assert!(
        groups.contains(&EXTRA_GID),
        "supplementary groups: {groups:?}"
    );
    let nobody = ExecSpec {
        user: Some("nobody".into()),
        cwd: Some("/".into()),
        ..shell("id -u")
    };
    assert_eq!(run(&mux, nobody).await.stdout_text(), "65534\n");
    assert_eq!(run(&mux, root_shell("id -u")).await.stdout_text(), "0\n");
    let ghost = ExecSpec {
        user: Some("ghost".into()),
        ..shell("id -u")
    };
    assert_eq!(
        run(&mux, ghost).await.error().code,
        GuestErrorCode::UserNotFound
    );
}

#[tokio::test]
async fn stdin_streams_until_eof() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let (tx, mut rx) = mux
        .open_json(&Request::Exec(ExecSpec {
            stdin: true,
            ..argv(&["cat"])
        }))
        .expect("open")
        .split();
    let payload: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    tx.send_data(channel::STDIN, &payload).await.expect("stdin");
    tx.send_eof(channel::STDIN).expect("eof");
    let r = collect(&mut rx).await;
    assert_eq!(r.stdout, payload);
    assert_eq!(r.status().code, Some(0));
    // Without stdin the process reads /dev/null.
    assert_eq!(run(&mux, argv(&["cat"])).await.status().code, Some(0));
}

#[tokio::test]
async fn timeout_kills_the_whole_process_group() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let spec = ExecSpec {
        timeout_ms: Some(500),
        ..shell("sleep 100 & echo $!; sleep 100")
    };
    let r = run(&mux, spec).await;
    let status = r.status();
    assert!(status.timed_out);
    assert_eq!(status.signal, Some(9));
    let background: i32 = r.stdout_text().trim().parse().expect("background pid");
    within("background sleep to die", async {
        while std::fs::read_to_string(format!("/proc/{background}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| !rest.starts_with('Z'))
        }) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn background_children_holding_the_output_do_not_hold_the_stream() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    // The subshell's sleep keeps stdout and stderr open long after the shell exits.
    let r = within("exec to end", run(&mux, shell("(sleep 60 &); echo hi"))).await;
    assert_eq!(r.stdout_text(), "hi\n");
    assert_eq!(r.status().code, Some(0));
    // Its process group outlives the leader; a signal still reaches the leftovers.
    signal(&mux, r.pid(), 9).await;
}

#[tokio::test]
async fn signal_reaches_the_process_and_unknown_pids_are_typed_errors() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let (_tx, mut rx) = mux
        .open_json(&Request::Exec(shell("echo ready; exec sleep 100")))
        .expect("open")
        .split();
    let (events, _) = read_until(&mut rx, "ready").await;
    let Some(GuestEvent::Started { pid }) = events.first() else {
        panic!("no started: {events:?}")
    };
    signal(&mux, *pid, 15).await;
    let r = collect(&mut rx).await;
    assert_eq!(r.status().signal, Some(15));
    // An unknown pid, the one that just exited, and attaching to an unknown pid.
    for request in [
        Request::Signal {
            pid: 999_999,
            signal: 15,
        },
        Request::Signal {
            pid: *pid,
            signal: 15,
        },
        Request::Attach {
            pid: 999_999,
            replay: true,
        },
    ] {
        assert_eq!(
            fails(&mux, &request).await.code,
            GuestErrorCode::NoSuchProcess,
            "{request:?}"
        );
    }
}

#[tokio::test]
async fn spawn_failures_are_typed_and_the_agent_keeps_serving() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let r = run(&mux, argv(&["/no/such/binary"])).await;
    assert!(r.events.is_empty());
    assert_eq!(r.error().code, GuestErrorCode::SpawnFailed);
    assert!(
        r.error().message.contains("No such file"),
        "{}",
        r.error().message
    );
    let not_found_in_path = run(&mux, argv(&["no-such-program-anywhere"])).await;
    assert_eq!(not_found_in_path.error().code, GuestErrorCode::SpawnFailed);
    let script = agent.home.join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").expect("write");
    let r = run(&mux, argv(&[script.to_str().expect("utf-8")])).await;
    assert_eq!(r.error().code, GuestErrorCode::SpawnFailed);
    assert!(
        r.error().message.contains("Permission denied"),
        "{}",
        r.error().message
    );
    assert_eq!(
        run(&mux, argv(&[])).await.error().code,
        GuestErrorCode::InvalidArgument
    );
    ping(&mux, "alive").await;
}

#[tokio::test]
async fn a_detached_process_keeps_running_and_attach_replays_its_output() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let spec = ExecSpec {
        stdin: true,
        tag: Some("bg".into()),
        ..shell("echo before; read line; echo after $line; exit 7")
    };
    let (tx, mut rx) = mux.open_json(&Request::Exec(spec)).expect("open").split();
    let (events, _) = read_until(&mut rx, "before").await;
    let Some(GuestEvent::Started { pid }) = events.first().cloned() else {
        panic!("no started: {events:?}")
    };
    // Detach: drop the stream. The process waits on its stdin.
    drop((tx, rx));
    let list: Vec<ProcessInfo> = ok(&mux, &Request::ListProcesses).await;
    let info = list.iter().find(|p| p.pid == pid).expect("listed");
    assert_eq!(
        (info.exit, info.tag.as_deref(), info.user.as_str()),
        (None, Some("bg"), "user")
    );

    // Another session feeds it and closes its stdin.
    let other = agent.connect().await;
    let (stdin, mut stdin_rx) = other
        .open_json(&Request::WriteStdin { pid })
        .expect("open")
        .split();
    stdin
        .send_data(channel::STDIN, b"x\n")
        .await
        .expect("stdin");
    stdin.send_eof(channel::STDIN).expect("eof");
    assert!(outcome(&mut stdin_rx).await.is_ok());

    let (_tx, mut rx) = other
        .open_json(&Request::Attach { pid, replay: true })
        .expect("open")
        .split();
    let r = collect(&mut rx).await;
    assert_eq!(r.events.first(), Some(&GuestEvent::Started { pid }));
    assert_eq!(r.stdout_text(), "before\nafter x\n");
    assert_eq!(r.status().code, Some(7));

    // Attaching to an exited process without replay: just the exit.
    let (_tx, mut rx) = mux
        .open_json(&Request::Attach { pid, replay: false })
        .expect("open")
        .split();
    let r = collect(&mut rx).await;
    assert!(r.stdout.is_empty());
    assert_eq!(r.status().code, Some(7));
    let list: Vec<ProcessInfo> = ok(&mux, &Request::ListProcesses).await;
    assert_eq!(
        list.iter()
            .find(|p| p.pid == pid)
            .and_then(|p| p.exit)
            .and_then(|e| e.code),
        Some(7)
    );
}

#[tokio::test]
async fn output_beyond_the_ring_is_reported_as_lost() {
    let ring = 64 * 1024;
    let agent = TestAgent::start_with(&["--output-ring-bytes", &ring.to_string()]);
    let mux = agent.connect().await;
    let script = "head -c 300000 /dev/zero | tr '\\0' a; echo; read go; echo tail-marker";
    let (tx, mut rx) = mux
        .open_json(&Request::Exec(ExecSpec {
            stdin: true,
            ..shell(script)
        }))
        .expect("open")
        .split();
    let (events, _) = read_until(&mut rx, "a").await;
    let Some(GuestEvent::Started { pid }) = events.first().cloned() else {
        panic!("no started")
    };
    drop((tx, rx));
    // Detached, it writes the rest with nobody attached: the ring keeps only the newest bytes.
    let (stdin, mut stdin_rx) = mux
        .open_json(&Request::WriteStdin { pid })
        .expect("open")
        .split();
    stdin
        .send_data(channel::STDIN, b"go\n")
        .await
        .expect("stdin");
    stdin.close().expect("close");
    assert!(outcome(&mut stdin_rx).await.is_ok());
    let (_tx, mut rx) = mux
        .open_json(&Request::Attach { pid, replay: false })
        .expect("open")
        .split();
    assert_eq!(
        collect(&mut rx).await.status().code,
        Some(0),
        "wait for the end"
    );

    let (_tx, mut rx) = mux
        .open_json(&Request::Attach { pid, replay: true })
        .expect("open")
        .split();
    let r = collect(&mut rx).await;
    let Some(GuestEvent::Lost { bytes: lost }) = r.events.get(1).cloned() else {
        panic!("no lost event: {:?}", r.events)
    };
    let total = 300_000 + 1 + "tail-marker\n".len() as u64;
    assert_eq!(r.stdout.len() as u64, ring as u64);
    assert_eq!(lost + r.stdout.len() as u64, total);
    assert!(r.stdout_text().ends_with("aaa\ntail-marker\n"));
}

#[tokio::test]
async fn a_foreground_exec_loses_nothing_even_past_the_ring() {
    let agent = TestAgent::start_with(&["--output-ring-bytes", "65536"]);
    let mux = agent.connect().await;
    let r = run(&mux, shell("head -c 5000000 /dev/zero")).await;
    assert_eq!(r.stdout.len(), 5_000_000);
    assert!(
        r.events
            .iter()
            .all(|e| !matches!(e, GuestEvent::Lost { .. }))
    );
}

#[tokio::test]
async fn pty_output_and_resize() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let pty = Some(PtySize {
        cols: 100,
        rows: 40,
    });
    let r = run(
        &mux,
        ExecSpec {
            pty,
            ..shell("stty size; test -t 0 && echo tty; echo $TERM")
        },
    )
    .await;
    assert_eq!(r.stdout_text(), "40 100\r\ntty\r\nxterm-256color\r\n");
    assert!(r.stderr.is_empty());

    let (tx, mut rx) = mux
        .open_json(&Request::Exec(ExecSpec {
            pty,
            ..shell("echo go; read x; stty size")
        }))
        .expect("open")
        .split();
    let (events, _) = read_until(&mut rx, "go").await;
    let Some(GuestEvent::Started { pid }) = events.first().cloned() else {
        panic!("no started")
    };
    let _: serde_json::Value = ok(
        &mux,
        &Request::ResizePty {
            pid,
            size: PtySize {
                cols: 132,
                rows: 50,
            },
        },
    )
    .await;
    tx.send_data(channel::STDIN, b"\n").await.expect("stdin");
    let r = collect(&mut rx).await;
    assert!(r.stdout_text().contains("50 132"), "{:?}", r.stdout_text());
    assert_eq!(r.status().code, Some(0));

    // Closing a terminal's stdin sends end-of-input.
    let (tx, mut rx) = mux
        .open_json(&Request::Exec(ExecSpec {
            pty,
            ..shell("echo go; cat; echo done")
        }))
        .expect("open")
        .split();
    read_until(&mut rx, "go").await;
    tx.send_eof(channel::STDIN).expect("eof");
    let r = collect(&mut rx).await;
    assert!(r.stdout_text().contains("done"));

    let plain = run(&mux, shell("true")).await.pid();
    let err = fails(
        &mux,
        &Request::ResizePty {
            pid: plain,
            size: PtySize { cols: 1, rows: 1 },
        },
    )
    .await;
    assert_eq!(err.code, GuestErrorCode::InvalidArgument);
}

#[tokio::test]
async fn list_processes_shows_running_and_exited() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let done = run(
        &mux,
        ExecSpec {
            tag: Some("done".into()),
            ..shell("exit 2")
        },
    )
    .await
    .pid();
    let (_tx, mut rx) = mux
        .open_json(&Request::Exec(ExecSpec {
            tag: Some("running".into()),
            ..shell("echo up; exec sleep 100")
        }))
        .expect("open")
        .split();
    let (events, _) = read_until(&mut rx, "up").await;
    let Some(GuestEvent::Started { pid: running }) = events.first().cloned() else {
        panic!("no started")
    };
    let list: Vec<ProcessInfo> = ok(&mux, &Request::ListProcesses).await;
    let find = |pid| list.iter().find(|p| p.pid == pid).expect("listed").clone();
    assert_eq!(find(done).exit.and_then(|e| e.code), Some(2));
    assert_eq!(find(running).exit, None);
    assert_eq!(
        find(running).command,
        Command::Shell("echo up; exec sleep 100".into())
    );
    assert_eq!(find(running).cwd, agent.home.to_str().expect("utf-8"));
    let health: platinum_protocol::HealthReply = ok(&mux, &Request::Health).await;
    assert_eq!(health.running_processes, 1);
    signal(&mux, running, 9).await;
    assert_eq!(collect(&mut rx).await.status().signal, Some(9));
}

#[tokio::test]
async fn a_host_that_resets_the_stream_detaches_without_killing() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let spec = ExecSpec {
        stdin: true,
        ..shell("echo up; read x; echo got $x")
    };
    let (tx, mut rx) = mux.open_json(&Request::Exec(spec)).expect("open").split();
    let (events, _) = read_until(&mut rx, "up").await;
    let Some(GuestEvent::Started { pid }) = events.first().cloned() else {
        panic!("no started")
    };
    tx.reset("host gave up");
    drop(rx);
    // The whole connection going away detaches too.
    mux.shutdown("host restarts");
    let mux = agent.connect().await;
    let list: Vec<ProcessInfo> = ok(&mux, &Request::ListProcesses).await;
    assert_eq!(
        list.iter().find(|p| p.pid == pid).map(|p| p.exit),
        Some(None),
        "still running"
    );
    let _: serde_json::Value = ok(&mux, &Request::CloseStdin { pid }).await;
    let (_tx, mut rx) = mux
        .open_json(&Request::Attach { pid, replay: true })
        .expect("open")
        .split();
    let r = collect(&mut rx).await;
    // Closing stdin ended its `read`; the output is intact.
    assert_eq!(r.stdout_text(), "up\ngot\n");
    assert_eq!(r.status().code, Some(0));
}
