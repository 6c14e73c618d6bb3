//! The machine-wide requests: `hello`, `set_clock`, `read_clock`, `health` and `shutdown`.
//!
//! Only PID 1 owns the machine: in [`Mode::Serve`] (development and tests, usually on someone's
//! host) `hello` leaves the clock alone, and `set_clock` and `shutdown` answer `unsupported`.

use crate::agent::{Agent, Mode};
use crate::init::power;
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_settime};
use platinum_protocol::{
    ClockReply, GuestError, GuestErrorCode, HealthReply, Hello, HelloReply, PROTOCOL_VERSION,
};
use std::collections::BTreeMap;
use std::time::Duration;
use tracing::{info, warn};

/// Agent version reported to the host.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `hello`: checks the session's default user, sets the clock and trusts the host's CA (PID 1
/// only) and describes the agent. Also the environment of the session's processes: the
/// hello's, with [`crate::trust::TRUST_VARIABLES`] naming the system bundle that holds the CA
/// where the hello does not set them.
pub fn hello(
    agent: &Agent,
    hello: &Hello,
) -> Result<(HelloReply, BTreeMap<String, String>), GuestError> {
    if let Some(user) = &hello.default_user {
        agent.users()?.require_user(user)?;
    }
    if hello.protocol != PROTOCOL_VERSION {
        warn!(
            host = hello.protocol,
            guest = PROTOCOL_VERSION,
            "host speaks another protocol version"
        );
    }
    let mut env = hello.env.clone();
    if agent.mode() == Mode::Init && hello.unix_ns > 0 {
        set_realtime(hello.unix_ns)?;
    }
    if agent.mode() == Mode::Init
        && let Some(pem) = &hello.trust_pem
    {
        // A trust store that cannot be written (a read-only image) is no reason to refuse the
        // session: brokered HTTPS then fails verification in the guest, closed.
        match crate::trust::install(std::path::Path::new("/"), pem) {
            Ok(Some(bundle)) => {
                for var in crate::trust::TRUST_VARIABLES {
                    env.entry(var.to_string()).or_insert_with(|| bundle.clone());
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "adding the host's CA to the trust store"),
        }
    }
    let reply = HelloReply {
        protocol: PROTOCOL_VERSION,
        agent_version: AGENT_VERSION.to_string(),
        boot_id: agent.boot_id().to_string(),
        kernel: kernel_release(),
    };
    Ok((reply, env))
}

/// `set_clock`.
pub fn set_clock(agent: &Agent, unix_ns: i64) -> Result<(), GuestError> {
    match agent.mode() {
        Mode::Init => set_realtime(unix_ns),
        Mode::Serve => Err(not_pid1("set_clock")),
    }
}

/// `read_clock`.
pub fn read_clock() -> ClockReply {
    let unix_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos().try_into().unwrap_or(i64::MAX));
    ClockReply { unix_ns }
}

/// `health`.
pub fn health(agent: &Agent) -> HealthReply {
    HealthReply {
        agent_version: AGENT_VERSION.to_string(),
        uptime_ms: agent.started().elapsed().as_millis() as u64,
        running_processes: agent.processes().running(),
    }
}

/// `shutdown`: answers first, then powers off (or reboots) on a thread of its own.
pub fn shutdown(agent: &Agent, reboot: bool) -> Result<(), GuestError> {
    if agent.mode() == Mode::Serve {
        return Err(not_pid1("shutdown"));
    }
    info!(reboot, "shutdown requested");
    std::thread::Builder::new()
        .name("shutdown".into())
        .spawn(move || {
            // Give the writer task a moment to put the `ok` on the wire before processes die.
            std::thread::sleep(Duration::from_millis(100));
            power::power_off(reboot);
        })
        .map_err(|e| GuestError::from_io(&e, "start the shutdown thread"))?;
    Ok(())
}

/// `uname -r`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn set_realtime(unix_ns: i64) -> Result<(), GuestError> {
    if unix_ns <= 0 {
        return Err(GuestError::new(
            GuestErrorCode::InvalidArgument,
            format!("clock {unix_ns} is before 1970"),
        ));
    }
    let ts = TimeSpec::new(unix_ns / 1_000_000_000, unix_ns % 1_000_000_000);
    clock_settime(ClockId::CLOCK_REALTIME, ts)
        .map_err(|e| GuestError::from_io(&e.into(), "set the clock"))
}

pub(crate) fn not_pid1(op: &str) -> GuestError {
    GuestError::new(
        GuestErrorCode::Unsupported,
        format!("{op} is only available when the agent runs as PID 1"),
    )
}
