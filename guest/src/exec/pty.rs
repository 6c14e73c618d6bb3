//! Pseudo-terminals for `exec` with a `pty` size: opening a pair, resizing it, and making the slave
//! the child's controlling terminal.

use nix::fcntl::{OFlag, open};
use nix::pty::{Winsize, grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::stat::Mode;
use platinum_protocol::PtySize;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// Both ends of a new pseudo-terminal.
pub struct Pty {
    /// The agent's end: output is read from it, input written to it. Non-blocking.
    pub master: OwnedFd,
    /// The child's terminal.
    pub slave: OwnedFd,
}

/// Opens a pseudo-terminal of `size`.
///
/// Both ends are created close-on-exec atomically (not `openpty` + `fcntl`, which leaves a window
/// in which a concurrent fork inherits them), so only the child that gets the slave as its stdio
/// holds it, and the master reads `EIO` as soon as that child's session is gone.
pub fn open_pty(size: PtySize) -> std::io::Result<Pty> {
    let master =
        posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?;
    grantpt(&master)?;
    unlockpt(&master)?;
    let slave_path = ptsname_r(&master)?;
    let slave = open(
        slave_path.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let master = OwnedFd::from(master);
    resize(master.as_fd(), size)?;
    Ok(Pty { master, slave })
}

/// Sets the terminal size; the kernel sends `SIGWINCH` to the terminal's foreground group.
pub fn resize(master: BorrowedFd<'_>, size: PtySize) -> std::io::Result<()> {
    let ws = Winsize {
        ws_row: size.rows,
        ws_col: size.cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one `winsize` from the pointer, which is valid for the call.
    let rc = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// In the child, after `setsid`: makes stdin (the slave) the controlling terminal. Async-signal-safe.
pub fn acquire_controlling_terminal() -> std::io::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument; fd 0 is open (it is the slave) in the child.
    let rc = unsafe { libc::ioctl(libc::STDIN_FILENO, libc::TIOCSCTTY, 0) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
