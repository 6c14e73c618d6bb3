//! The one place that reaps: collects every child (and, as PID 1, every orphan) and hands the exit
//! statuses of processes the agent started to whoever waits for them.
//!
//! As PID 1 the agent inherits every orphan in the VM, so it must reap with `waitpid(-1)`. That
//! rules out `tokio::process` (which waits on its own children only) and makes spawning delicate:
//! when `exec` fails, std's `Command::spawn` reaps the failed child itself and panics if someone
//! else already did. So one lock guards the table of waiters, and both sides hold it:
//!
//! * [`Reaper::spawn`] forks, execs and registers the child's pid while holding it;
//! * the reaper thread runs its `waitpid(-1, WNOHANG)` loop while holding it.
//!
//! Hence no status can be reaped before its waiter is registered, and std's internal wait on a
//! failed exec never races the reaper. Each waiter is a oneshot channel, which keeps the status
//! until the waiting task gets to it. Statuses of pids nobody registered (orphans) are dropped.
//!
//! The reaper is one thread per process, not a task: it sleeps in `waitid(P_ALL, WEXITED | WNOWAIT)`
//! (which waits for a zombie without reaping it, so the lock is free while it sleeps), needs no
//! signal handler, and outlives any tokio runtime. Outside PID 1 (test mode) it only ever sees the
//! agent's own children.

use nix::errno::Errno;
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid, waitpid};
use nix::unistd::Pid;
use platinum_protocol::ExitStatus;
use std::collections::HashMap;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use tokio::sync::oneshot;
use tracing::{debug, error, warn};

#[derive(Default)]
struct Table {
    waiters: HashMap<i32, oneshot::Sender<ExitStatus>>,
    /// Bumped by every spawn; lets the reaper sleep while the agent has no children at all.
    spawned: u64,
}

/// The process-wide reaper.
pub struct Reaper {
    table: Mutex<Table>,
    child_spawned: Condvar,
}

impl Reaper {
    /// The reaper of this process, started on first use.
    pub fn global() -> &'static Reaper {
        static REAPER: OnceLock<Reaper> = OnceLock::new();
        REAPER.get_or_init(|| {
            // The thread's first `global()` waits until this initialisation has finished.
            if let Err(e) = std::thread::Builder::new().name("reaper".into()).spawn(|| Reaper::global().run()) {
                error!(error = %e, "cannot start the reaper thread; exit statuses will not be collected");
            }
            Reaper { table: Mutex::default(), child_spawned: Condvar::new() }
        })
    }

    /// Spawns `cmd` and registers its pid; the receiver gets its exit status. Blocking: call it
    /// from a blocking thread.
    pub fn spawn(
        &self,
        cmd: &mut Command,
    ) -> std::io::Result<(Child, oneshot::Receiver<ExitStatus>)> {
        let mut table = self.lock();
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        table.waiters.insert(child.id() as i32, tx);
        table.spawned += 1;
        drop(table);
        self.child_spawned.notify_one();
        Ok((child, rx))
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn run(&self) {
        loop {
            let spawned_before = self.lock().spawned;
            match waitid(Id::All, WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Ok(_) => self.reap_all(),
                Err(Errno::EINTR) => {}
                Err(Errno::ECHILD) => {
                    // No children at all: sleep until the next spawn.
                    let table = self.lock();
                    let _table = self
                        .child_spawned
                        .wait_while(table, |t| t.spawned == spawned_before)
                        .unwrap_or_else(PoisonError::into_inner);
                }
                Err(e) => {
                    error!(error = %e, "waitid failed; the reaper stops");
                    return;
                }
            }
        }
    }

    fn reap_all(&self) {
        let mut table = self.lock();
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (
                    pid,
                    ExitStatus {
                        code: Some(code),
                        signal: None,
                        timed_out: false,
                        elapsed_us: None,
                        handled_us: None,
                    },
                ),
                Ok(WaitStatus::Signaled(pid, sig, _core)) => (
                    pid,
                    ExitStatus {
                        code: None,
                        signal: Some(sig as i32),
                        timed_out: false,
                        elapsed_us: None,
                        handled_us: None,
                    },
                ),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                // Stop/continue reports are not requested; nothing else can come back.
                Ok(_) | Err(Errno::EINTR) => continue,
                Err(e) => {
                    warn!(error = %e, "waitpid failed");
                    return;
                }
            };
            match table.waiters.remove(&pid.as_raw()) {
                // The waiting task may be gone; then nobody wants the status.
                Some(tx) => drop(tx.send(status)),
                None => debug!(pid = pid.as_raw(), ?status, "reaped an orphan"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn delivers_exit_codes_and_signals_and_reports_exec_failures() {
        let (statuses, missing) = tokio::task::spawn_blocking(|| {
            let reaper = Reaper::global();
            let (_c1, rx1) = reaper
                .spawn(Command::new("/bin/sh").args(["-c", "exit 7"]))
                .expect("spawn sh");
            let (_c2, rx2) = reaper
                .spawn(Command::new("/bin/sh").args(["-c", "kill -9 $$"]))
                .expect("spawn sh");
            // A failed exec must come back as an error, not as a panic inside std.
            let missing = reaper
                .spawn(&mut Command::new("/nonexistent/binary"))
                .map(|_| ())
                .map_err(|e| e.kind());
            ([rx1, rx2], missing)
        })
        .await
        .expect("spawn thread");
        assert_eq!(missing, Err(std::io::ErrorKind::NotFound));
        let [rx1, rx2] = statuses;
        assert_eq!(rx1.await.expect("status").code, Some(7));
        assert_eq!(rx2.await.expect("status").signal, Some(9));
    }
}
