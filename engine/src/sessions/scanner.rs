//! The marker scanner: splits a session shell's stdout or stderr on the session's command
//! markers (see [`crate::sessions`]), across read boundaries.

/// Record separator: brackets every marker.
const RS: u8 = 0x1e;
/// Longest marker body (after the prefix) the scanner waits for before calling it text.
const MAX_MARKER_BODY: usize = 96;

/// What the marker scanner found in a channel's bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Piece {
    Text(Vec<u8>),
    Start(String),
    End(String, i32),
}

/// Splits one channel's byte stream on this session's markers, across read boundaries.
pub(super) struct MarkerScanner {
    prefix: Vec<u8>,
    carry: Vec<u8>,
}

impl MarkerScanner {
    pub(super) fn new(nonce: &str) -> Self {
        let mut prefix = vec![RS];
        prefix.extend_from_slice(format!("PTM:{nonce}:").as_bytes());
        MarkerScanner {
            prefix,
            carry: Vec::new(),
        }
    }

    pub(super) fn feed(&mut self, bytes: &[u8]) -> Vec<Piece> {
        let mut data = std::mem::take(&mut self.carry);
        data.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut text_from = 0;
        let mut pos = 0;
        while let Some(i) = data[pos..].iter().position(|b| *b == RS) {
            let start = pos + i;
            let rest = &data[start..];
            let n = rest.len().min(self.prefix.len());
            if rest[..n] != self.prefix[..n] {
                pos = start + 1;
                continue;
            }
            if n < self.prefix.len() {
                // A possible marker cut off at the end: wait for more bytes.
                break;
            }
            let body_start = start + self.prefix.len();
            // A body is short: look no further than its longest, so a candidate prefix followed
            // by a flood of text costs a bounded scan.
            let window = &data[body_start..data.len().min(body_start + MAX_MARKER_BODY + 1)];
            match window.iter().position(|b| *b == RS) {
                Some(j) => {
                    let body = &data[body_start..body_start + j];
                    match parse_marker(body) {
                        Some(piece) => {
                            if start > text_from {
                                out.push(Piece::Text(data[text_from..start].to_vec()));
                            }
                            out.push(piece);
                            pos = body_start + j + 1;
                            text_from = pos;
                        }
                        None => pos = start + 1,
                    }
                }
                None if data.len() - body_start > MAX_MARKER_BODY => pos = start + 1,
                None => break,
            }
        }
        // Everything from the first unresolved possible marker on waits for the next read.
        let keep_from = data[pos..]
            .iter()
            .position(|b| *b == RS)
            .map_or(data.len(), |i| pos + i)
            .max(text_from);
        if keep_from > text_from {
            out.push(Piece::Text(data[text_from..keep_from].to_vec()));
        }
        self.carry = data[keep_from..].to_vec();
        out
    }
}

fn parse_marker(body: &[u8]) -> Option<Piece> {
    let text = std::str::from_utf8(body).ok()?;
    let mut parts = text.split(':');
    let kind = parts.next()?;
    let cid = parts.next()?;
    if cid.is_empty() || !cid.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    match (kind, parts.next(), parts.next()) {
        ("S", None, None) => Some(Piece::Start(cid.to_string())),
        ("E", Some(rc), None) => Some(Piece::End(cid.to_string(), rc.parse().ok()?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(p: &[Piece]) -> Vec<u8> {
        p.iter()
            .flat_map(|p| match p {
                Piece::Text(t) => t.clone(),
                _ => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn markers_are_found_across_reads_and_text_around_them_kept() {
        let stream = b"junk\x1ePTM:n1:S:c1\x1ehello\nno newline\x1ePTM:n1:E:c1:3\x1etail\x1e";
        for split in 1..stream.len() {
            let mut sc = MarkerScanner::new("n1");
            let mut pieces = sc.feed(&stream[..split]);
            pieces.extend(sc.feed(&stream[split..]));
            let markers: Vec<_> = pieces
                .iter()
                .filter(|p| !matches!(p, Piece::Text(_)))
                .collect();
            assert_eq!(
                markers,
                [&Piece::Start("c1".into()), &Piece::End("c1".into(), 3)],
                "split at {split}"
            );
            // The lone trailing RS may start a marker: held back until more bytes come.
            assert_eq!(
                text(&pieces),
                b"junkhello\nno newlinetail",
                "split at {split}"
            );
        }
    }

    #[test]
    fn foreign_and_malformed_markers_are_text() {
        let mut sc = MarkerScanner::new("n1");
        let input = b"a\x1ePTM:other:S:c1\x1eb\x1ePTM:n1:X:c1\x1ec\x1ed";
        assert_eq!(text(&sc.feed(input)), input.to_vec());
        assert_eq!(text(&sc.feed(b"e\x1ePT")), b"e".to_vec());
        assert_eq!(text(&sc.feed(b"x")), b"\x1ePTx".to_vec());
        // A prefix whose body never closes is given up on after a while.
        let mut long = b"\x1ePTM:n1:S:".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_MARKER_BODY + 5));
        assert_eq!(text(&sc.feed(&long)), long);
    }

    #[test]
    fn one_byte_chunks_keep_the_scanner_linear_and_its_carry_bounded() {
        // A hostile command floods one byte at a time with text that keeps looking like the
        // start of a marker: the scanner's carry stays within one marker, and all of it is text.
        let mut sc = MarkerScanner::new("n1");
        let mut unit = b"\x1ePTM:n1:S:".to_vec();
        unit.extend(std::iter::repeat_n(b'a', MAX_MARKER_BODY + 3));
        let input: Vec<u8> = unit.iter().copied().cycle().take(200_000).collect();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        for b in &input {
            out.extend(text(&sc.feed(std::slice::from_ref(b))));
            assert!(sc.carry.len() <= sc.prefix.len() + MAX_MARKER_BODY + 1);
        }
        // Bytes that cannot continue a marker release what is held back.
        out.extend(text(&sc.feed(&[b'.'; MAX_MARKER_BODY + 2])));
        assert_eq!(&out[..input.len()], &input[..]);
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }
}
