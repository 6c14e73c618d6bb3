//! Session-level behaviour: hello, ping, health, metrics, bad input, serve-mode limits.

use crate::common::{TestAgent, call, fails, ok, outcome, ping, root_shell, run, shell};
use bytes::Bytes;
use platinum_protocol::{
    ClockReply, GuestErrorCode, HealthReply, Hello, HelloReply, MetricsReply, PROTOCOL_VERSION,
    Request,
};
use std::collections::BTreeMap;

fn hello(default_user: Option<&str>, env: &[(&str, &str)]) -> Request {
    Request::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        unix_ns: 1,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<BTreeMap<_, _>>(),
        default_user: default_user.map(str::to_string),
        trust_pem: None,
    })
}

#[tokio::test]
async fn hello_ping_health_and_metrics() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let reply: HelloReply = ok(&mux, &hello(None, &[])).await;
    assert_eq!(reply.protocol, PROTOCOL_VERSION);
    assert_eq!(reply.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(reply.boot_id.len(), 32);
    assert_eq!(
        reply.kernel,
        nix::sys::utsname::uname()
            .expect("uname")
            .release()
            .to_string_lossy()
    );

    // The boot id is fixed for the agent's life, across sessions.
    let again: HelloReply = ok(&agent.connect().await, &hello(None, &[])).await;
    assert_eq!(again.boot_id, reply.boot_id);

    ping(&mux, "päyload").await;

    let health: HealthReply = ok(&mux, &Request::Health).await;
    assert_eq!(health.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(health.running_processes, 0);

    // `read_clock` answers the agent's wall clock (here the test host's own).
    let unix_ns = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as i64
    };
    let before = unix_ns(std::time::SystemTime::now());
    let clock: ClockReply = ok(&mux, &Request::ReadClock).await;
    let after = unix_ns(std::time::SystemTime::now());
    assert!((before..=after).contains(&clock.unix_ns), "{clock:?}");

    let metrics: MetricsReply = ok(&mux, &Request::Metrics).await;
    assert!(metrics.cpu_count >= 1);
    assert!((0.0..=100.0).contains(&metrics.cpu_used_pct));
    assert!(metrics.mem_total > 0 && metrics.mem_used <= metrics.mem_total);
    assert!(metrics.disk_total > 0 && metrics.disk_used <= metrics.disk_total);
}

#[tokio::test]
async fn serve_mode_leaves_the_clock_and_the_power_alone() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let before = std::time::SystemTime::now();
    // A hello with a clock in 1970 must not move the host's clock.
    let _: HelloReply = ok(&mux, &hello(None, &[])).await;
    assert!(std::time::SystemTime::now() >= before);
    assert_eq!(
        fails(&mux, &Request::SetClock { unix_ns: 1 }).await.code,
        GuestErrorCode::Unsupported
    );
    assert_eq!(
        fails(&mux, &Request::Shutdown { reboot: false }).await.code,
        GuestErrorCode::Unsupported
    );
    ping(&mux, "still here").await;
}

#[tokio::test]
async fn malformed_and_unknown_requests_get_typed_errors_and_the_session_goes_on() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    let raw = |payload: &'static [u8]| {
        let (_tx, mut rx) = mux.open(Bytes::from_static(payload)).expect("open").split();
        async move { outcome(&mut rx).await.expect_err("must fail").code }
    };
    assert_eq!(raw(b"{not json").await, GuestErrorCode::InvalidArgument);
    assert_eq!(
        raw(br#"{"op":"exec","command":{"nope":1}}"#).await,
        GuestErrorCode::InvalidArgument
    );
    assert_eq!(
        raw(br#"{"op":"teleport","to":"mars"}"#).await,
        GuestErrorCode::Unsupported
    );
    assert_eq!(
        raw(br#"{"payload":"no op"}"#).await,
        GuestErrorCode::InvalidArgument
    );
    ping(&mux, "after").await;
}

#[tokio::test]
async fn hello_sets_the_default_user_and_environment() {
    let agent = TestAgent::start();
    let mux = agent.connect().await;
    // Before hello: `user` exists, so it is the default.
    assert_eq!(run(&mux, shell("id -u")).await.stdout_text(), "4242\n");
    let err = fails(&mux, &hello(Some("ghost"), &[])).await;
    assert_eq!(err.code, GuestErrorCode::UserNotFound);
    let _: HelloReply = ok(&mux, &hello(Some("root"), &[("SANDBOX", "yes")])).await;
    let r = run(&mux, shell("echo $(id -u) $SANDBOX")).await;
    assert_eq!(r.stdout_text(), "0 yes\n");
    // Defaults belong to the session that set them.
    let other = agent.connect().await;
    assert_eq!(
        run(&other, shell("echo $(id -u) ${SANDBOX:-unset}"))
            .await
            .stdout_text(),
        "4242 unset\n"
    );
    assert!(call(&other, &Request::ListProcesses).await.is_ok());
    assert_eq!(
        run(&other, root_shell("id -un")).await.stdout_text(),
        "root\n"
    );
}
