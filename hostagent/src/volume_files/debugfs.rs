//! Running `debugfs` (and `e2fsck` for journal replay; both e2fsprogs) on a volume image a
//! guest wrote, treating the image as hostile: a cleared environment, resource limits (CPU
//! time, address space, size of the files it may write, no core dumps), a wall-clock timeout,
//! output capped at 64 MiB, and commands fed from a script file the host built. Only names the
//! `debugfs` command parser carries intact are ever put in a script ([`quote`]); the only host
//! paths in one are files in a private scratch directory.
//!
//! `debugfs -f` echoes each command (`debugfs: <command>`) before its output, so the output
//! splits into one [`Section`] per command; a section whose echo differs from the command sent
//! (a name in the image forging an echo line) makes the whole run fail.

use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use platinum_protocol::{GuestError, GuestErrorCode};

use crate::error::{Error, IoContext, Result};
use crate::tool::find_program;

/// Wall-clock limit of one run.
const TIMEOUT: Duration = Duration::from_secs(120);
/// CPU seconds one run may use.
const CPU_SECONDS: u64 = 60;
/// Address space of one run (the block bitmaps of a 1 TiB volume take 32 MiB).
const ADDRESS_SPACE: u64 = 4 << 30;
/// Most output (each of stdout and stderr) one run may print.
const MAX_OUTPUT: usize = 64 << 20;
/// The echo `debugfs -f` prints before each command's output.
const ECHO: &str = "debugfs: ";

/// A failure inside a volume, classified like the guest's file errors.
pub(crate) fn volume_error(code: GuestErrorCode, message: impl Into<String>) -> Error {
    Error::Volume(GuestError::new(code, message))
}

/// `s` as one `debugfs` argument: in double quotes, refused when it holds what the parser
/// cannot carry (a double quote, a control character such as a newline).
pub(crate) fn quote(s: &str) -> Result<String> {
    if s.chars().any(|c| c == '"' || c.is_control()) {
        return Err(volume_error(
            GuestErrorCode::InvalidArgument,
            format!("{s:?}: names with double quotes or control characters are not supported"),
        ));
    }
    Ok(format!("\"{s}\""))
}

/// The output of one command of a script.
#[derive(Debug, Default)]
pub(crate) struct Section {
    /// Its standard output lines.
    pub lines: Vec<String>,
}

/// What a run printed.
#[derive(Debug)]
pub(crate) struct Output {
    /// One section per command, in order.
    pub sections: Vec<Section>,
    /// Standard error, less the version banner: what went wrong, when anything did.
    pub errors: Vec<String>,
}

/// Runs `script` (one command a line) against `image` (`write`: opened read-write) with
/// `scratch` as the directory for the script file. `fsize` bounds every file `debugfs` writes
/// (the image itself when `write`, dumped files otherwise).
pub(crate) async fn run(
    image: &Path,
    write: bool,
    script: &[String],
    scratch: &Path,
    fsize: u64,
) -> Result<Output> {
    let script_path: PathBuf = scratch.join("script");
    let mut text = script.join("\n");
    text.push('\n');
    std::fs::write(&script_path, text).ctx(|| format!("writing {}", script_path.display()))?;
    let stdin =
        std::fs::File::open(&script_path).ctx(|| format!("opening {}", script_path.display()))?;
    let mut args: Vec<&std::ffi::OsStr> = Vec::new();
    if write {
        args.push("-w".as_ref());
    }
    args.extend(["-f".as_ref(), "-".as_ref(), image.as_os_str()]);
    let output = sandboxed("debugfs", &args, Stdio::from(stdin), scratch, fsize).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let errors: Vec<String> = String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("debugfs "))
        .map(str::to_owned)
        .collect();
    if !output.status.success() {
        return Err(volume_error(
            GuestErrorCode::Io,
            format!(
                "reading the volume image failed ({}): {}",
                output.status,
                errors.join("; ")
            ),
        ));
    }
    Ok(Output {
        sections: split(&stdout, script)?,
        errors,
    })
}

/// Replays the journal of `image` when it needs it (`e2fsck -E journal_only`, a guest that
/// stopped without unmounting leaves committed changes there), so `debugfs` sees them.
pub(crate) async fn replay_journal(image: &Path, scratch: &Path, fsize: u64) -> Result<()> {
    let args: [&std::ffi::OsStr; 4] = [
        "-E".as_ref(),
        "journal_only".as_ref(),
        "-p".as_ref(),
        image.as_os_str(),
    ];
    let output = sandboxed("e2fsck", &args, Stdio::null(), scratch, fsize).await?;
    // 0: nothing to do; 1: the journal was replayed.
    match output.status.code() {
        Some(0 | 1) => Ok(()),
        _ => Err(volume_error(
            GuestErrorCode::Io,
            format!(
                "the volume's journal could not be replayed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        )),
    }
}

/// Runs e2fsprogs tool `program` with `args` in `scratch`, sandboxed (see the module
/// documentation), and collects its output.
async fn sandboxed(
    program: &str,
    args: &[&std::ffi::OsStr],
    stdin: Stdio,
    scratch: &Path,
    fsize: u64,
) -> Result<std::process::Output> {
    let path = find_program(program).ok_or_else(|| Error::MissingProgram {
        program: program.into(),
        hint: "apt-get install e2fsprogs".into(),
    })?;
    let mut command = std::process::Command::new(path);
    command.env_clear().current_dir(scratch).args(args);
    // SAFETY: runs in the child between fork and exec and only calls setrlimit, which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            limit(libc::RLIMIT_CPU, CPU_SECONDS)?;
            limit(libc::RLIMIT_AS, ADDRESS_SPACE)?;
            limit(libc::RLIMIT_FSIZE, fsize)?;
            limit(libc::RLIMIT_CORE, 0)
        });
    }
    let mut command = tokio::process::Command::from(command);
    command
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    tracing::debug!(
        program,
        ?args,
        "running an e2fsprogs tool on a volume image"
    );
    let mut child = command.spawn().ctx(|| format!("starting {program}"))?;
    let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
        return Err(Error::Invalid(format!(
            "{program}'s output pipes are missing"
        )));
    };
    let run = async {
        let (stdout, stderr) = tokio::try_join!(capped(stdout), capped(stderr))?;
        let status = child.wait().await?;
        Ok::<_, std::io::Error>(std::process::Output {
            status,
            stdout,
            stderr,
        })
    };
    // On a timeout or too much output the child is dropped, which kills it.
    tokio::time::timeout(TIMEOUT, run)
        .await
        .map_err(|_| Error::Timeout {
            what: format!("{program} on a volume image"),
            seconds: TIMEOUT.as_secs(),
        })?
        .map_err(|e| volume_error(GuestErrorCode::Io, format!("running {program}: {e}")))
}

/// All of `pipe`, or an error once it passes [`MAX_OUTPUT`] bytes (a hostile image can make
/// a listing as long as it likes).
async fn capped(pipe: impl tokio::io::AsyncRead + Unpin) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt as _;
    let mut out = Vec::new();
    pipe.take(MAX_OUTPUT as u64 + 1)
        .read_to_end(&mut out)
        .await?;
    if out.len() > MAX_OUTPUT {
        return Err(std::io::Error::other(format!(
            "more than {MAX_OUTPUT} bytes of output"
        )));
    }
    Ok(out)
}

/// Sets resource limit `resource` (soft and hard) to `value`.
fn limit(resource: libc::__rlimit_resource_t, value: u64) -> std::io::Result<()> {
    let l = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `l` is a valid rlimit.
    if unsafe { libc::setrlimit(resource, &l) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Splits `stdout` at the command echoes into one section per command of `script`.
fn split(stdout: &str, script: &[String]) -> Result<Vec<Section>> {
    let mut sections: Vec<Section> = Vec::with_capacity(script.len());
    for line in stdout.lines() {
        if let Some(command) = line.strip_prefix(ECHO) {
            if script.get(sections.len()).map(String::as_str) != Some(command) {
                return Err(malformed("a command echo does not match the script"));
            }
            sections.push(Section::default());
        } else if let Some(section) = sections.last_mut() {
            section.lines.push(line.to_owned());
        }
    }
    if sections.len() != script.len() {
        return Err(malformed("debugfs did not run every command"));
    }
    Ok(sections)
}

/// An image whose `debugfs` output cannot be trusted.
pub(crate) fn malformed(why: &str) -> Error {
    volume_error(
        GuestErrorCode::Io,
        format!("the volume image could not be read: {why}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_refuses_what_the_parser_cannot_carry() {
        assert_eq!(quote("a b").unwrap(), "\"a b\"");
        for bad in ["a\"b", "a\nb", "a\rb", "a\tb"] {
            assert!(quote(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn output_splits_at_matching_echoes_only() {
        let script = vec!["ls -p \"/\"".to_string(), "stat \"/a\"".to_string()];
        let out = "debugfs: ls -p \"/\"\n/2/040755/0/0/.//\ndebugfs: stat \"/a\"\nInode: 12\n";
        let s = split(out, &script).unwrap();
        assert_eq!(s[0].lines, ["/2/040755/0/0/.//"]);
        assert_eq!(s[1].lines, ["Inode: 12"]);
        let forged = "debugfs: ls -p \"/\"\ndebugfs: rm x\n";
        assert!(split(forged, &script).is_err());
    }
}
