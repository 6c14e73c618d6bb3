//! Reading the end of a guest console log or a VMM log, to explain why a VM died.
//!
//! Logs can grow without bound (a chatty guest under a long-running sandbox), so [`tail`] never
//! reads more than [`MAX_TAIL_BYTES`] from the end of the file.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{IoContext, Result};

/// Upper bound on the bytes [`tail`] reads, whatever `lines` asks for.
pub const MAX_TAIL_BYTES: u64 = 256 * 1024;

/// Bytes budgeted per requested line before the [`MAX_TAIL_BYTES`] cap.
const BYTES_PER_LINE: u64 = 512;

/// The last `lines` lines of the file at `path` (lossy UTF-8, `\n`-joined, no trailing newline).
/// A file that does not exist yet reads as empty: a VM that died before writing anything has
/// nothing to show.
pub fn tail(path: &Path, lines: usize) -> Result<String> {
    if lines == 0 {
        return Ok(String::new());
    }
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(crate::Error::io(format!("opening {}", path.display()), e)),
    };
    let len = file
        .metadata()
        .ctx(|| format!("stat {}", path.display()))?
        .len();
    let budget = (lines as u64)
        .saturating_mul(BYTES_PER_LINE)
        .min(MAX_TAIL_BYTES);
    let start = len.saturating_sub(budget);
    file.seek(SeekFrom::Start(start))
        .ctx(|| format!("seeking in {}", path.display()))?;
    let mut buf = Vec::with_capacity((len - start) as usize);
    file.take(budget)
        .read_to_end(&mut buf)
        .ctx(|| format!("reading {}", path.display()))?;
    let text = String::from_utf8_lossy(&buf);
    let mut all: Vec<&str> = text.lines().collect();
    // A read that started mid-file may begin mid-line; drop that partial first line.
    if start > 0 && all.len() > 1 {
        all.remove(0);
    }
    let skip = all.len().saturating_sub(lines);
    Ok(all[skip..].join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_last_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let text: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, text).expect("write");
        assert_eq!(tail(&path, 3).expect("tail"), "line 97\nline 98\nline 99");
        assert_eq!(tail(&path, 0).expect("tail"), "");
        assert_eq!(tail(&path, 1000).expect("tail").lines().count(), 100);
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(tail(&dir.path().join("absent"), 5).expect("tail"), "");
    }

    #[test]
    fn huge_files_are_read_only_from_the_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("big.log");
        let mut text = "x".repeat(2 * MAX_TAIL_BYTES as usize);
        text.push_str("\nlast line\n");
        std::fs::write(&path, text).expect("write");
        let out = tail(&path, 1_000_000).expect("tail");
        assert!(out.len() as u64 <= MAX_TAIL_BYTES);
        assert!(out.ends_with("last line"));
    }

    #[test]
    fn partial_first_line_is_dropped_and_bad_utf8_is_lossy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.log");
        let mut bytes = b"a".repeat(2000);
        bytes.extend_from_slice(b"\nok \xff\nend\n");
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(tail(&path, 2).expect("tail"), "ok \u{fffd}\nend");
    }
}
