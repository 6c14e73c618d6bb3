//! Powering the VM off (or rebooting it) as PID 1: `SIGTERM` to every process, up to
//! [`TERM_GRACE`] for them to go, `SIGKILL` to the rest, `sync`, remount `/` read-only, then
//! `reboot(2)`. Power-off falls back to a restart, which the VMM (run with `-no-reboot`) turns into
//! an exit as well.

use nix::mount::{MsFlags, mount};
use nix::sys::reboot::{RebootMode, reboot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// How long processes get between `SIGTERM` and `SIGKILL`.
pub const TERM_GRACE: Duration = Duration::from_secs(2);

/// How often the grace period checks whether any process is left.
const POLL: Duration = Duration::from_millis(50);

/// Stops everything and powers off (or reboots). Returns only if the kernel refused both.
pub fn power_off(restart: bool) {
    let everyone = Pid::from_raw(-1);
    // kill(-1) reaches every process but PID 1 itself (kernel threads ignore it).
    if let Err(e) = kill(everyone, Signal::SIGTERM) {
        warn!(error = %e, "cannot send SIGTERM to all processes");
    }
    let deadline = Instant::now() + TERM_GRACE;
    while user_processes_left() && Instant::now() < deadline {
        std::thread::sleep(POLL);
    }
    if user_processes_left() {
        info!("killing processes that outlived SIGTERM");
        if let Err(e) = kill(everyone, Signal::SIGKILL) {
            warn!(error = %e, "cannot send SIGKILL to all processes");
        }
    }
    nix::unistd::sync();
    let ro = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    if let Err(e) = mount(None::<&str>, "/", None::<&str>, ro, None::<&str>) {
        warn!(error = %e, "cannot remount / read-only");
    }
    info!(restart, "powering off");
    let first = if restart {
        RebootMode::RB_AUTOBOOT
    } else {
        RebootMode::RB_POWER_OFF
    };
    let Err(e) = reboot(first);
    warn!(error = %e, "reboot({first:?}) failed; restarting instead");
    let Err(e) = reboot(RebootMode::RB_AUTOBOOT);
    error!(error = %e, "cannot power off or restart");
}

/// `PF_KTHREAD` in the flags of `/proc/<pid>/stat`.
const PF_KTHREAD: u64 = 0x0020_0000;

/// True while a process other than PID 1 and kernel threads is alive (zombies are as good as
/// gone: the reaper collects them).
fn user_processes_left() -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        pid != 1
            && std::fs::read_to_string(entry.path().join("stat"))
                .is_ok_and(|stat| is_live_user_process(&stat))
    })
}

/// Reads `/proc/<pid>/stat`: not a kernel thread, not a zombie.
fn is_live_user_process(stat: &str) -> bool {
    // The command name is parenthesised and may contain anything; fields resume after the last ')'.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return false;
    };
    let mut fields = rest.split_whitespace();
    let state = fields.next();
    // After the state: ppid, pgrp, session, tty_nr, tpgid, then flags.
    let flags = fields
        .nth(5)
        .and_then(|f| f.parse::<u64>().ok())
        .unwrap_or(PF_KTHREAD);
    state != Some("Z") && flags & PF_KTHREAD == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_threads_and_zombies_do_not_count() {
        let user = "42 (sleep) S 1 42 42 0 -1 4194560 100 0 0 0";
        let kthread = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0";
        let zombie = "43 (a) b) Z 1 43 43 0 -1 4194564 0 0";
        assert!(is_live_user_process(user));
        assert!(!is_live_user_process(kthread));
        assert!(!is_live_user_process(zombie));
        assert!(!is_live_user_process("garbage"));
        let own = std::fs::read_to_string("/proc/self/stat").expect("own stat");
        assert!(is_live_user_process(&own));
    }
}
