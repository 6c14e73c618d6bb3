//! Running a file operation with a user's permissions, on one blocking thread.
//!
//! Linux keeps filesystem credentials (fsuid, fsgid) and supplementary groups per thread, but
//! glibc's `setgroups`/`setfsuid` wrappers broadcast the change to every thread of the process. So
//! the raw syscalls are used: they change only the calling thread, which is a tokio blocking-pool
//! thread for the duration of the operation. While the fsuid is not 0 the kernel also drops the
//! thread's filesystem capabilities (`CAP_DAC_OVERRIDE` and friends), so the operation is checked
//! exactly like the user's own. [`FsCreds`] restores root's credentials when dropped, so a thread
//! never goes back to the pool as another user, whatever the operation did, panics included.

use crate::users::Credentials;
use platinum_protocol::{GuestError, GuestErrorCode};
use tracing::error;

/// Runs `op` on a blocking thread with `creds` as the filesystem credentials.
pub async fn run_as<T, F>(creds: Credentials, op: F) -> Result<T, GuestError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, GuestError> + Send + 'static,
{
    tokio::task::spawn_blocking(move || {
        let _guard = FsCreds::assume(&creds)?;
        op()
    })
    .await
    .map_err(|e| GuestError::new(GuestErrorCode::Io, format!("file operation failed: {e}")))?
}

/// While alive, the current thread accesses files as another user.
struct FsCreds {
    /// Root's supplementary groups, restored on drop; `None` when nothing was switched.
    saved_groups: Option<Vec<libc::gid_t>>,
}

impl FsCreds {
    fn assume(creds: &Credentials) -> Result<Self, GuestError> {
        if creds.is_root() {
            return Ok(Self { saved_groups: None });
        }
        let fail = |what: &str, e: std::io::Error| {
            GuestError::new(
                GuestErrorCode::Io,
                format!("cannot switch to uid {}: {what}: {e}", creds.uid),
            )
        };
        let saved = thread_groups().map_err(|e| fail("getgroups", e))?;
        // From here on the guard exists, so every early return restores root.
        let guard = Self {
            saved_groups: Some(saved),
        };
        set_thread_groups(&creds.groups).map_err(|e| fail("setgroups", e))?;
        // setfsuid/setfsgid return the previous id and report no errors; asking again with an
        // invalid id (-1) returns the current one, which confirms the switch.
        // SAFETY: plain syscalls on integer arguments; they affect only this thread.
        let (gid_now, uid_now) = unsafe {
            libc::syscall(libc::SYS_setfsgid, creds.gid);
            libc::syscall(libc::SYS_setfsuid, creds.uid);
            (
                libc::syscall(libc::SYS_setfsgid, -1),
                libc::syscall(libc::SYS_setfsuid, -1),
            )
        };
        if uid_now != i64::from(creds.uid) || gid_now != i64::from(creds.gid) {
            return Err(GuestError::new(
                GuestErrorCode::Io,
                format!(
                    "cannot switch to uid {} gid {}: the kernel kept {uid_now}/{gid_now}",
                    creds.uid, creds.gid
                ),
            ));
        }
        Ok(guard)
    }
}

impl Drop for FsCreds {
    fn drop(&mut self) {
        let Some(groups) = self.saved_groups.take() else {
            return;
        };
        // SAFETY: as above; 0 is root.
        unsafe {
            libc::syscall(libc::SYS_setfsuid, 0);
            libc::syscall(libc::SYS_setfsgid, 0);
        }
        if let Err(e) = set_thread_groups(&groups) {
            error!(error = %e, "cannot restore root's groups on a blocking thread");
        }
    }
}

fn thread_groups() -> std::io::Result<Vec<libc::gid_t>> {
    // SAFETY: with size 0 getgroups only returns the count.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut groups = vec![0; n as usize];
    // SAFETY: the buffer holds `n` entries.
    let n = unsafe { libc::getgroups(n, groups.as_mut_ptr()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    groups.truncate(n as usize);
    Ok(groups)
}

fn set_thread_groups(groups: &[libc::gid_t]) -> std::io::Result<()> {
    // SAFETY: the raw syscall reads `len` gids from the slice; it affects only this thread.
    let rc = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}
