//! A build's log while it runs: appended by the build, read from an offset by any number of
//! followers (the SDKs poll with an offset; REST streams).
//!
//! Bounded: a line is cut at [`MAX_LINE`] bytes and a log keeps at most [`MAX_ENTRIES`] lines;
//! past that the build's output is counted, not kept, and one line says so. Offsets are
//! positions in the log and never move.

use std::sync::Mutex;
use time::OffsetDateTime;
use tokio::sync::watch;

use super::model::{BuildLogEntry, LogLevel};

/// Longest line kept, bytes.
pub const MAX_LINE: usize = 4096;
/// Most lines a build's log keeps.
pub const MAX_ENTRIES: usize = 20_000;

/// See the module docs.
#[derive(Debug)]
pub struct BuildLog {
    entries: Mutex<Vec<BuildLogEntry>>,
    dropped: Mutex<u64>,
    /// The number of entries, for followers to wait on; `true` in the second field once the
    /// build ended.
    changed: watch::Sender<(usize, bool)>,
}

impl Default for BuildLog {
    fn default() -> Self {
        BuildLog {
            entries: Mutex::new(Vec::new()),
            dropped: Mutex::new(0),
            changed: watch::channel((0, false)).0,
        }
    }
}

impl BuildLog {
    /// Appends a line.
    pub fn push(&self, level: LogLevel, step: Option<u32>, message: impl Into<String>) {
        let mut message: String = message.into();
        if message.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push_str(" [cut]");
        }
        let len = {
            let mut entries = self.entries.lock().expect("build log");
            if entries.len() >= MAX_ENTRIES {
                let mut dropped = self.dropped.lock().expect("build log");
                *dropped += 1;
                if *dropped == 1 {
                    entries.push(BuildLogEntry {
                        timestamp: OffsetDateTime::now_utc(),
                        level: LogLevel::Warn,
                        message: format!(
                            "the log holds {MAX_ENTRIES} lines; later output is not kept"
                        ),
                        step,
                    });
                }
                return;
            }
            entries.push(BuildLogEntry {
                timestamp: OffsetDateTime::now_utc(),
                level,
                message,
                step,
            });
            entries.len()
        };
        self.changed.send_replace((len, false));
    }

    /// Says the build ended (followers stop waiting).
    pub fn close(&self) {
        let len = self.entries.lock().expect("build log").len();
        self.changed.send_replace((len, true));
    }

    /// Up to `limit` lines from `offset`.
    pub fn read(&self, offset: usize, limit: usize) -> Vec<BuildLogEntry> {
        let entries = self.entries.lock().expect("build log");
        entries.iter().skip(offset).take(limit).cloned().collect()
    }

    /// Every line.
    pub fn all(&self) -> Vec<BuildLogEntry> {
        self.entries.lock().expect("build log").clone()
    }

    /// Lines so far.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("build log").len()
    }

    /// Whether it has no lines.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until there are lines past `offset` or the build ended; returns whether it ended.
    pub async fn wait_past(&self, offset: usize) -> bool {
        let mut rx = self.changed.subscribe();
        let waited = rx.wait_for(|(len, ended)| *len > offset || *ended).await;
        waited.map(|v| v.1).unwrap_or(true)
    }
}

/// Splits output into lines for the log, keeping an unfinished last line for the next chunk.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// The complete lines in `pending + chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.partial.extend_from_slice(chunk);
        let mut lines = Vec::new();
        while let Some(at) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=at).collect();
            lines.push(clean(&line[..line.len() - 1]));
        }
        // A line longer than the log keeps is cut here, so the buffer stays bounded.
        if self.partial.len() > MAX_LINE {
            lines.push(clean(&std::mem::take(&mut self.partial)));
        }
        lines
    }

    /// What is left once the output ended.
    pub fn finish(&mut self) -> Option<String> {
        (!self.partial.is_empty()).then(|| clean(&std::mem::take(&mut self.partial)))
    }
}

/// Text for the log: lossy UTF-8, carriage returns and other control characters dropped.
fn clean(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control() || *c == '\t')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_across_chunks_and_bounded() {
        let mut s = LineSplitter::default();
        assert_eq!(s.feed(b"one\ntw"), vec!["one"]);
        assert_eq!(s.feed(b"o\r\nthree\x1b[0m\n"), vec!["two", "three[0m"]);
        assert_eq!(s.finish(), None);
        let long = vec![b'x'; MAX_LINE + 10];
        assert_eq!(s.feed(&long).len(), 1);
        assert_eq!(s.feed(b"tail").len(), 0);
        assert_eq!(s.finish().as_deref(), Some("tail"));
    }

    #[tokio::test]
    async fn followers_read_from_offsets_and_see_the_end() {
        let log = BuildLog::default();
        log.push(LogLevel::Info, None, "a");
        log.push(LogLevel::Info, Some(1), "b".repeat(MAX_LINE + 5));
        assert_eq!(log.read(1, 10).len(), 1);
        assert!(log.read(1, 10)[0].message.ends_with("[cut]"));
        assert!(!log.wait_past(1).await, "a line past offset 1 is there");
        log.close();
        assert!(log.wait_past(5).await);
        for i in 0..MAX_ENTRIES + 5 {
            log.push(LogLevel::Info, None, format!("{i}"));
        }
        assert_eq!(log.len(), MAX_ENTRIES + 1);
    }
}
