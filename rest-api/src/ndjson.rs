//! Process output as NDJSON: one [`ExecStreamEvent`] per line, text decoded incrementally.
//!
//! Dropping the response (client disconnects) only detaches from the process; it keeps running
//! and can be re-attached through `/v1/sandboxes/{id}/processes/{pid}/output`.

use axum::response::Response;
use bytes::Bytes;
use platinum_engine::text::Utf8Stream;
use platinum_engine::{ExecEvent, ExecStream};
use platinum_frontend_http::ndjson::line;
use serde::Serialize;
use utoipa::ToSchema;

/// One line of a process output stream.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ExecStreamEvent {
    /// First line: the process runs.
    Started {
        /// Guest pid.
        pid: u32,
    },
    /// Text written to stdout.
    Stdout {
        /// The text (UTF-8; invalid bytes replaced).
        data: String,
    },
    /// Text written to stderr.
    Stderr {
        /// The text.
        data: String,
    },
    /// Replayed output starts after this many bytes were dropped from the guest's buffer.
    Lost {
        /// Bytes missing.
        bytes: u64,
    },
    /// Last line: how the process ended.
    Exit {
        /// Exit code (128 + signal for signals).
        exit_code: i32,
        /// Signal that ended it.
        signal: Option<i32>,
        /// The timeout killed it.
        timed_out: bool,
    },
    /// Last line when the stream broke (sandbox deleted, VM died).
    Error {
        /// Machine code.
        code: String,
        /// Explanation.
        message: String,
    },
}

struct State {
    stream: ExecStream,
    out: Utf8Stream,
    err: Utf8Stream,
    started: bool,
    done: bool,
}

/// Streams a process's events as an NDJSON response.
pub fn response(stream: ExecStream) -> Response {
    let state = State {
        stream,
        out: Utf8Stream::default(),
        err: Utf8Stream::default(),
        started: false,
        done: false,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        if !st.started {
            st.started = true;
            let ev = ExecStreamEvent::Started {
                pid: st.stream.pid(),
            };
            return Some((Ok::<_, std::io::Error>(line(&ev)), st));
        }
        loop {
            let ev = match st.stream.next().await {
                Ok(Some(ExecEvent::Stdout(b))) => ExecStreamEvent::Stdout {
                    data: st.out.push(&b),
                },
                Ok(Some(ExecEvent::Stderr(b))) => ExecStreamEvent::Stderr {
                    data: st.err.push(&b),
                },
                Ok(Some(ExecEvent::Lost(bytes))) => ExecStreamEvent::Lost { bytes },
                Ok(Some(ExecEvent::Exited(exit))) => {
                    st.done = true;
                    let mut tail = Vec::new();
                    for (data, is_err) in [(st.out.finish(), false), (st.err.finish(), true)] {
                        if !data.is_empty() {
                            tail.extend_from_slice(&line(&if is_err {
                                ExecStreamEvent::Stderr { data }
                            } else {
                                ExecStreamEvent::Stdout { data }
                            }));
                        }
                    }
                    let ev = ExecStreamEvent::Exit {
                        exit_code: exit.shell_code(),
                        signal: exit.signal,
                        timed_out: exit.timed_out,
                    };
                    tail.extend_from_slice(&line(&ev));
                    return Some((Ok(Bytes::from(tail)), st));
                }
                Ok(None) => return None,
                Err(e) => {
                    st.done = true;
                    ExecStreamEvent::Error {
                        code: e.code().as_str().into(),
                        message: e.to_string(),
                    }
                }
            };
            // Skip empty text (a chunk that ended mid-character).
            if matches!(&ev, ExecStreamEvent::Stdout { data } | ExecStreamEvent::Stderr { data } if data.is_empty())
            {
                continue;
            }
            return Some((Ok(line(&ev)), st));
        }
    });
    platinum_frontend_http::ndjson::response(body)
}
