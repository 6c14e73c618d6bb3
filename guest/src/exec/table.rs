//! The table of processes started through the agent, shared by every session.
//!
//! A [`Process`] owns what the agent holds of a child: its info, its stdin (pipe or PTY master),
//! its PTY (for resizing), its output ring, and its exit status once known. Two tasks serve each
//! process: the *pump* copies its output into the ring until every output fd is closed, and the
//! *waiter* collects its exit status from the reaper (killing the whole process group first if the
//! request's timeout fires). Exited processes stay listed, with their output, until
//! [`MAX_EXITED`] newer ones have exited.

use crate::exec::output_ring::{OutputRing, RingReader, StartAt};
use crate::exec::pty;
use crate::exec::spawn::Launched;
use bytes::Bytes;
use nix::errno::Errno;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use platinum_protocol::{ExitStatus, GuestError, GuestErrorCode, ProcessInfo, PtySize};
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::watch;
use tracing::{debug, warn};

/// How many exited processes stay in the table.
pub const MAX_EXITED: usize = 256;

/// The character a terminal reads as end of input (`^D`, the default `VEOF`).
const TERMINAL_EOF: u8 = 0x04;

/// Where a process's input goes.
struct Stdin {
    writer: pipe::Sender,
    /// The writer is a PTY master: "closing" stdin sends end-of-input instead of hanging up the
    /// terminal.
    terminal: bool,
}

/// One process started through the agent.
pub struct Process {
    pid: u32,
    info: Mutex<ProcessInfo>,
    output: Arc<OutputRing>,
    stdin: tokio::sync::Mutex<Option<Stdin>>,
    pty: Option<OwnedFd>,
    exit: watch::Sender<Option<ExitStatus>>,
}

impl Process {
    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// A copy of its info.
    pub fn info(&self) -> ProcessInfo {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True until its exit status is known.
    pub fn is_running(&self) -> bool {
        self.exit.borrow().is_none()
    }

    /// Attaches a reader to its output; returns it and the number of bytes lost before it.
    pub fn attach(&self, at: StartAt) -> (RingReader, u64) {
        self.output.attach(at)
    }

    /// Waits for its exit status.
    pub async fn wait_exit(&self) -> ExitStatus {
        let mut rx = self.exit.subscribe();
        match rx.wait_for(Option::is_some).await {
            Ok(status) => (*status).unwrap_or(UNKNOWN_EXIT),
            // The sender lives in `self`, so the channel cannot close while we borrow it.
            Err(_) => UNKNOWN_EXIT,
        }
    }

    /// Writes to its stdin.
    pub async fn write_stdin(&self, bytes: &[u8]) -> Result<(), GuestError> {
        let mut stdin = self.stdin.lock().await;
        let Some(stdin) = stdin.as_mut() else {
            return Err(GuestError::new(
                GuestErrorCode::InvalidArgument,
                format!("process {} has no open stdin", self.pid),
            ));
        };
        stdin
            .writer
            .write_all(bytes)
            .await
            .map_err(|e| GuestError::from_io(&e, format!("write to stdin of {}", self.pid)))
    }

    /// Closes its stdin (on a PTY: sends end-of-input).
    pub async fn close_stdin(&self) -> Result<(), GuestError> {
        let mut slot = self.stdin.lock().await;
        match slot.as_mut() {
            Some(stdin) if stdin.terminal => {
                stdin.writer.write_all(&[TERMINAL_EOF]).await.map_err(|e| {
                    GuestError::from_io(&e, format!("send end-of-input to {}", self.pid))
                })
            }
            Some(_) => {
                *slot = None;
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Resizes its PTY.
    pub fn resize(&self, size: PtySize) -> Result<(), GuestError> {
        let Some(master) = &self.pty else {
            return Err(GuestError::new(
                GuestErrorCode::InvalidArgument,
                format!("process {} has no PTY", self.pid),
            ));
        };
        pty::resize(master.as_fd(), size)
            .map_err(|e| GuestError::from_io(&e, format!("resize PTY of {}", self.pid)))
    }

    /// Sends `signal` (0 only checks) to its process group, falling back to the process itself when
    /// it left its group. Once it has exited only the group is tried: its pid may be reused, but not
    /// while the group it led still has members.
    pub fn signal(&self, signal: i32) -> Result<(), GuestError> {
        let sig = match signal {
            0 => None,
            n => Some(Signal::try_from(n).map_err(|_| {
                GuestError::new(
                    GuestErrorCode::InvalidArgument,
                    format!("unknown signal {n}"),
                )
            })?),
        };
        let pid = Pid::from_raw(self.pid as i32);
        let result = match killpg(pid, sig) {
            Err(Errno::ESRCH) if self.is_running() => kill(pid, sig),
            other => other,
        };
        match result {
            Ok(()) => Ok(()),
            Err(Errno::ESRCH) => Err(GuestError::new(
                GuestErrorCode::NoSuchProcess,
                format!("process {} has exited", self.pid),
            )),
            Err(e) => Err(GuestError::from_io(
                &e.into(),
                format!("signal {signal} to {}", self.pid),
            )),
        }
    }

    fn finish(&self, status: ExitStatus) {
        self.info
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .exit = Some(status);
        self.exit.send_replace(Some(status));
    }
}

const UNKNOWN_EXIT: ExitStatus = ExitStatus {
    code: None,
    signal: None,
    timed_out: false,
    elapsed_us: None,
    handled_us: None,
};

#[derive(Default)]
struct Entries {
    by_pid: HashMap<u32, Arc<Process>>,
    /// Exited processes, oldest first.
    exited: VecDeque<Arc<Process>>,
}

/// Every process started through the agent.
pub struct ProcessTable {
    entries: Mutex<Entries>,
    ring_capacity: usize,
}

impl ProcessTable {
    /// An empty table whose processes each buffer `ring_capacity` bytes of output.
    pub fn new(ring_capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::default(),
            ring_capacity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes over a launched child: registers it, attaches the first reader to its output before
    /// any output is read (so the starting stream misses nothing), and starts its pump and waiter.
    /// Must run inside the runtime.
    pub fn insert(
        self: &Arc<Self>,
        launched: Launched,
        info: ProcessInfo,
        timeout: Option<Duration>,
    ) -> Result<(Arc<Process>, RingReader), GuestError> {
        let Launched {
            pid,
            exit,
            stdin,
            outputs,
            pty,
            started,
        } = launched;
        let io_err =
            |e: std::io::Error| GuestError::from_io(&e, format!("set up the stdio of {pid}"));
        let terminal = pty.is_some();
        let stdin = stdin
            .map(|fd| async_writer(fd, terminal).map(|writer| Stdin { writer, terminal }))
            .transpose()
            .map_err(io_err)?;
        let readers: Vec<_> = outputs
            .into_iter()
            .map(|(channel, fd)| async_reader(fd, terminal).map(|r| (channel, r)))
            .collect::<Result<_, _>>()
            .map_err(io_err)?;
        let output = OutputRing::new(self.ring_capacity);
        let (reader, _) = output.attach(StartAt::Oldest);
        let process = Arc::new(Process {
            pid,
            info: Mutex::new(info),
            output: output.clone(),
            stdin: tokio::sync::Mutex::new(stdin),
            pty,
            exit: watch::Sender::new(None),
        });
        self.lock().by_pid.insert(pid, process.clone());
        tokio::spawn(pump(output, readers));
        tokio::spawn(self.clone().wait(process.clone(), exit, timeout, started));
        Ok((process, reader))
    }

    /// A process by pid, or `no_such_process`.
    pub fn get(&self, pid: u32) -> Result<Arc<Process>, GuestError> {
        self.lock().by_pid.get(&pid).cloned().ok_or_else(|| {
            GuestError::new(
                GuestErrorCode::NoSuchProcess,
                format!("no process {pid} was started through the agent"),
            )
        })
    }

    /// Info on every process in the table, oldest first.
    pub fn list(&self) -> Vec<ProcessInfo> {
        let mut infos: Vec<_> = self.lock().by_pid.values().map(|p| p.info()).collect();
        infos.sort_by_key(|i| (i.started_unix_ms, i.pid));
        infos
    }

    /// Kills the process group of every process still running (serve mode, on the way out).
    pub fn kill_running(&self) {
        let running: Vec<_> = self
            .lock()
            .by_pid
            .values()
            .filter(|p| p.is_running())
            .cloned()
            .collect();
        for process in running {
            if let Err(e) = process.signal(Signal::SIGKILL as i32) {
                warn!(pid = process.pid, error = %e, "cannot kill a process on the way out");
            }
        }
    }

    /// How many are still running.
    pub fn running(&self) -> u32 {
        self.lock()
            .by_pid
            .values()
            .filter(|p| p.is_running())
            .count() as u32
    }

    async fn wait(
        self: Arc<Self>,
        process: Arc<Process>,
        mut exit: tokio::sync::oneshot::Receiver<ExitStatus>,
        timeout: Option<Duration>,
        started: std::time::Instant,
    ) {
        let mut timed_out = false;
        let status = match timeout {
            None => exit.await,
            Some(limit) => tokio::select! {
                status = &mut exit => status,
                () = tokio::time::sleep(limit) => {
                    timed_out = true;
                    debug!(pid = process.pid, ?limit, "timeout: killing the process group");
                    if let Err(e) = process.signal(Signal::SIGKILL as i32) {
                        warn!(pid = process.pid, error = %e, "cannot kill a timed-out process");
                    }
                    exit.await
                }
            },
        };
        let elapsed_us = Some(super::micros_since(started));
        let status = ExitStatus {
            timed_out,
            elapsed_us,
            ..status.unwrap_or(UNKNOWN_EXIT)
        };
        debug!(pid = process.pid, ?status, "process exited");
        // Its stdin has no reader any more.
        process.stdin.lock().await.take();
        process.finish(status);
        let mut entries = self.lock();
        entries.exited.push_back(process);
        while entries.exited.len() > MAX_EXITED {
            if let Some(old) = entries.exited.pop_front()
                && entries
                    .by_pid
                    .get(&old.pid)
                    .is_some_and(|p| Arc::ptr_eq(p, &old))
            {
                entries.by_pid.remove(&old.pid);
            }
        }
    }
}

fn async_reader(fd: OwnedFd, terminal: bool) -> std::io::Result<pipe::Receiver> {
    if terminal {
        // A PTY master (already non-blocking), not a pipe: skip tokio's pipe check.
        pipe::Receiver::from_owned_fd_unchecked(fd)
    } else {
        pipe::Receiver::from_owned_fd(fd)
    }
}

fn async_writer(fd: OwnedFd, terminal: bool) -> std::io::Result<pipe::Sender> {
    if terminal {
        pipe::Sender::from_owned_fd_unchecked(fd)
    } else {
        pipe::Sender::from_owned_fd(fd)
    }
}

/// Copies every output fd into the ring until all are closed, then closes the ring.
async fn pump(ring: Arc<OutputRing>, readers: Vec<(u8, pipe::Receiver)>) {
    let mut copies = tokio::task::JoinSet::new();
    for (channel, reader) in readers {
        copies.spawn(copy_output(ring.clone(), channel, reader));
    }
    while copies.join_next().await.is_some() {}
    ring.close();
}

async fn copy_output(ring: Arc<OutputRing>, channel: u8, mut reader: pipe::Receiver) {
    let mut buf = vec![0u8; ring.capacity().min(platinum_protocol::MAX_DATA_CHUNK)];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) => return,
            Ok(n) => {
                ring.append(channel, Bytes::copy_from_slice(&buf[..n]))
                    .await
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // A PTY master reads EIO once the terminal's session has ended: that is its EOF.
            Err(e) if e.raw_os_error() == Some(libc::EIO) => return,
            Err(e) => {
                warn!(channel, error = %e, "reading process output failed");
                return;
            }
        }
    }
}
