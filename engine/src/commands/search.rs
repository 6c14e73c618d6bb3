//! Searching and editing files in a sandbox with the guest's own tools: lines matching a regex
//! (`grep`), paths whose name matches a glob (`find`), literal replacement in files, and the TCP
//! ports something listens on. Every front end that offers these (Daytona's toolbox today) calls
//! them here. Commands run as the default user on the engine's one run path ([`Engine::run`]),
//! with argv (never a shell line built from the caller's input).

use bytes::Bytes;
use serde::Serialize;

use crate::commands::files::CreateAs;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::model::ExecRequest;

/// Most matches [`Engine::find_in_files`] returns.
pub const MAX_FIND_MATCHES: usize = 10_000;
/// Longest matched line [`Engine::find_in_files`] returns (longer ones are cut).
pub const MAX_FIND_LINE: usize = 4096;
/// Largest file [`Engine::replace_in_file`] edits.
pub const MAX_REPLACE_BYTES: usize = 64 << 20;

/// A line that matched a search.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextMatch {
    /// The file, as the search printed it (under the searched path).
    pub file: String,
    /// 1-based line number.
    pub line: u64,
    /// The line (cut at [`MAX_FIND_LINE`] bytes).
    pub content: String,
}

/// A path operand that a tool cannot take for an option.
fn operand(path: &str) -> String {
    if path.starts_with('-') {
        format!("./{path}")
    } else {
        path.to_string()
    }
}

impl Engine {
    /// Runs `argv` (a search under `path`) once `path` is known to exist, so that a missing one
    /// is `file_not_found` rather than an empty result.
    async fn search_under(
        &self,
        id: &str,
        path: &str,
        argv: Vec<String>,
    ) -> Result<crate::RunOutput> {
        self.stat(id, path, None).await?;
        self.run(id, ExecRequest::argv(argv)).await?.finish().await
    }

    /// Lines matching the regular expression `pattern` (grep's basic syntax) in the files under
    /// `path`, binary files skipped; at most [`MAX_FIND_MATCHES`].
    pub async fn find_in_files(
        &self,
        id: &str,
        path: &str,
        pattern: &str,
    ) -> Result<Vec<TextMatch>> {
        let argv = vec![
            "grep".to_string(),
            "-rnIHZs".into(),
            "--color=never".into(),
            "-e".into(),
            pattern.to_string(),
            "--".into(),
            operand(path),
        ];
        let out = self.search_under(id, path, argv).await?;
        // 0: matches, 1: none, 2: some files were unreadable (what was readable still counts).
        if out.exit_code() > 2 {
            return Err(Error::InvalidRequest(format!(
                "search failed: {}",
                out.stderr_text().trim()
            )));
        }
        Ok(parse_grep(&out.stdout))
    }

    /// Paths under `path` whose file name matches the glob `pattern`.
    pub async fn find_files(&self, id: &str, path: &str, pattern: &str) -> Result<Vec<String>> {
        let argv = vec![
            "find".to_string(),
            operand(path),
            "-name".into(),
            pattern.to_string(),
            "-print0".into(),
        ];
        let out = self.search_under(id, path, argv).await?;
        Ok(out
            .stdout
            .split(|b| *b == 0)
            .filter(|p| !p.is_empty())
            .map(|p| String::from_utf8_lossy(p).into_owned())
            .collect())
    }

    /// Replaces every occurrence of `from` (literal text, not empty) in the file at `path` with
    /// `to`; returns how many were replaced (the file is rewritten only when that is not 0).
    pub async fn replace_in_file(
        &self,
        id: &str,
        path: &str,
        from: &str,
        to: &str,
    ) -> Result<usize> {
        if from.is_empty() {
            return Err(Error::InvalidRequest("the text to replace is empty".into()));
        }
        let data = self.read_to_vec(id, path, None, MAX_REPLACE_BYTES).await?;
        let (new, count) = replace_bytes(&data, from.as_bytes(), to.as_bytes());
        if count > 0 {
            let body = futures::stream::once(async move {
                Ok::<_, std::convert::Infallible>(Bytes::from(new))
            });
            self.write_file(id, path, CreateAs::default(), None, body)
                .await?;
        }
        Ok(count)
    }

    /// TCP ports something in the sandbox listens on (IPv4 and IPv6), ascending.
    pub async fn listening_ports(&self, id: &str) -> Result<Vec<u16>> {
        let argv = ["cat", "/proc/net/tcp", "/proc/net/tcp6"].map(String::from);
        let out = self
            .run(id, ExecRequest::argv(argv.to_vec()))
            .await?
            .finish()
            .await?;
        Ok(listening_ports(&out.stdout_text()))
    }
}

/// Parses `grep -Z -n -H` output: `file NUL line : content LF`.
fn parse_grep(out: &[u8]) -> Vec<TextMatch> {
    let mut matches = Vec::new();
    let mut rest = out;
    while !rest.is_empty() && matches.len() < MAX_FIND_MATCHES {
        let Some(nul) = rest.iter().position(|b| *b == 0) else {
            break;
        };
        let file = String::from_utf8_lossy(&rest[..nul]).into_owned();
        rest = &rest[nul + 1..];
        let Some(colon) = rest.iter().position(|b| *b == b':') else {
            break;
        };
        let line = String::from_utf8_lossy(&rest[..colon]).parse().unwrap_or(0);
        rest = &rest[colon + 1..];
        let end = rest.iter().position(|b| *b == b'\n').unwrap_or(rest.len());
        let mut content = String::from_utf8_lossy(&rest[..end]).into_owned();
        if content.len() > MAX_FIND_LINE {
            let mut cut = MAX_FIND_LINE;
            while !content.is_char_boundary(cut) {
                cut -= 1;
            }
            content.truncate(cut);
        }
        rest = rest.get(end + 1..).unwrap_or_default();
        matches.push(TextMatch {
            file,
            line,
            content,
        });
    }
    matches
}

/// Replaces every occurrence of `from` (not empty) in `data`; returns the result and the count.
fn replace_bytes(data: &[u8], from: &[u8], to: &[u8]) -> (Vec<u8>, usize) {
    let mut out = Vec::with_capacity(data.len());
    let mut count = 0;
    let mut i = 0;
    while i < data.len() {
        if data[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
            count += 1;
        } else {
            out.push(data[i]);
            i += 1;
        }
    }
    (out, count)
}

/// Local ports in `LISTEN` state from `/proc/net/tcp{,6}` text.
fn listening_ports(proc_net: &str) -> Vec<u16> {
    let mut ports: Vec<u16> = proc_net
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            // sl local_address rem_address st ...; 0A = LISTEN.
            if f.len() < 4 || f[3] != "0A" {
                return None;
            }
            let port = f[1].rsplit(':').next()?;
            u16::from_str_radix(port, 16).ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grep_output_parses_even_with_colons_and_newlines_in_names() {
        let out = b"a:b.txt\x003:hello: world\nsub/x\ny.py\x0010:x = 1\n";
        let m = parse_grep(out);
        let at = |file: &str, line, content: &str| TextMatch {
            file: file.into(),
            line,
            content: content.into(),
        };
        assert_eq!(
            m,
            [
                at("a:b.txt", 3, "hello: world"),
                at("sub/x\ny.py", 10, "x = 1")
            ]
        );
        assert!(parse_grep(b"").is_empty());
        let long = [b"f\x001:".as_slice(), &[b'x'; 5000], b"\n"].concat();
        assert_eq!(parse_grep(&long)[0].content.len(), MAX_FIND_LINE);
    }

    #[test]
    fn replace_is_literal() {
        assert_eq!(
            replace_bytes(b"a.b a.b", b"a.b", b"X"),
            (b"X X".to_vec(), 2)
        );
        assert_eq!(replace_bytes(b"aaa", b"aa", b"b"), (b"ba".to_vec(), 1));
        assert_eq!(replace_bytes(b"xyz", b"q", b"r"), (b"xyz".to_vec(), 0));
    }

    #[test]
    fn listening_ports_come_from_proc_net_tcp() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue\n\
             0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
             1: 0100007F:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000\n\
             2: 0100007F:9C40 0100007F:1F90 01 00000000:00000000 00:00000000 00000000\n\
             0: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 0\n";
        assert_eq!(listening_ports(text), [3000, 8080]);
    }

    #[test]
    fn operands_never_look_like_options() {
        assert_eq!(operand("-rf"), "./-rf");
        assert_eq!(operand("/home/user"), "/home/user");
    }
}
