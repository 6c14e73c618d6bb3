//! The hybrid vsock transport (Firecracker's design, spoken by Cloud Hypervisor and
//! vhost-device-vsock): a Unix socket on the host multiplexes connections to guest vsock ports.
//!
//! Host to guest, step by step:
//! 1. connect to the VMM's Unix socket (`--vsock socket=…` in CH, `uds-path=…` in
//!    vhost-device-vsock);
//! 2. write `CONNECT <port>\n`;
//! 3. read the reply **one byte at a time up to `\n`**, never further: whatever follows is
//!    already payload from the guest;
//! 4. `OK <n>\n` means connected. The number differs between VMMs (CH sends its host-side port,
//!    vhost-device-vsock the guest port), so it is ignored. A reset or EOF instead means nobody
//!    listens on that guest port yet ([`ConnectError::Refused`], retryable).
//!
//! Nothing is written after `CONNECT` until `OK` arrives: vhost-device-vsock parses the command
//! through a fresh `BufReader` and may drop bytes that came in the same write.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use super::{ConnectError, open};

/// Longest reply line accepted (`OK ` plus a 32-bit port and `\n` is far below this).
const MAX_REPLY: usize = 64;

/// Connects to guest `port` through the hybrid vsock socket at `socket`.
pub async fn connect(
    socket: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, ConnectError> {
    let attempt = async {
        let mut stream = open(socket, timeout).await?;
        let io = |source| ConnectError::Io {
            path: socket.to_path_buf(),
            source,
        };
        match stream
            .write_all(format!("CONNECT {port}\n").as_bytes())
            .await
        {
            Ok(()) => {}
            Err(e) if is_reset(&e) => return Err(ConnectError::Refused { port }),
            Err(e) => return Err(io(e)),
        }
        let line = read_line(&mut stream, port, socket).await?;
        if line.starts_with(b"OK ") {
            Ok(stream)
        } else {
            Err(ConnectError::Protocol {
                path: socket.to_path_buf(),
                reply: String::from_utf8_lossy(&line).into_owned(),
            })
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(ConnectError::Timeout {
                path: socket.to_path_buf(),
                timeout,
            })
        })
}

/// Reads one reply line byte by byte, without the `\n`. EOF or a reset before any byte means
/// the connection was refused.
async fn read_line(
    stream: &mut UnixStream,
    port: u32,
    socket: &Path,
) -> Result<Vec<u8>, ConnectError> {
    let mut line = Vec::with_capacity(16);
    loop {
        let mut byte = [0u8; 1];
        match stream.read(&mut byte).await {
            Ok(0) if line.is_empty() => return Err(ConnectError::Refused { port }),
            Ok(0) => {
                return Err(ConnectError::Protocol {
                    path: socket.to_path_buf(),
                    reply: format!("{} (then EOF)", String::from_utf8_lossy(&line)),
                });
            }
            Ok(_) if byte[0] == b'\n' => return Ok(line),
            Ok(_) => {
                line.push(byte[0]);
                if line.len() > MAX_REPLY {
                    return Err(ConnectError::Protocol {
                        path: socket.to_path_buf(),
                        reply: format!("{}…", String::from_utf8_lossy(&line)),
                    });
                }
            }
            Err(e) if is_reset(&e) && line.is_empty() => {
                return Err(ConnectError::Refused { port });
            }
            Err(e) => {
                return Err(ConnectError::Io {
                    path: socket.to_path_buf(),
                    source: e,
                });
            }
        }
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;
    use tokio::net::UnixListener;

    /// What the fake VMM does after reading the `CONNECT` line.
    #[derive(Clone, Copy)]
    enum Behaviour {
        /// `OK 1073741824\n`, then echo everything.
        Echo,
        /// `OK` and a greeting in the same write, then echo.
        OkWithPayload,
        /// Close without answering (nobody listens in the guest).
        Refuse,
        /// Answer something else.
        Garbage,
        /// Never answer.
        Silent,
    }

    /// A fake hybrid vsock server speaking the documented protocol; returns the socket path and
    /// the CONNECT lines it received.
    async fn server(
        dir: &Path,
        behaviour: Behaviour,
    ) -> (PathBuf, tokio::task::JoinHandle<Vec<u8>>) {
        let path = dir.join("vsock.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut command = Vec::new();
            loop {
                let mut b = [0u8; 1];
                if conn.read(&mut b).await.expect("read command") == 0 {
                    return command;
                }
                if b[0] == b'\n' {
                    break;
                }
                command.push(b[0]);
            }
            match behaviour {
                Behaviour::Refuse => return command,
                Behaviour::Garbage => {
                    conn.write_all(b"ERR no\n").await.expect("write");
                    return command;
                }
                Behaviour::Silent => {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    return command;
                }
                Behaviour::Echo => conn.write_all(b"OK 1073741824\n").await.expect("write ok"),
                Behaviour::OkWithPayload => {
                    conn.write_all(b"OK 18047\nhello").await.expect("write ok")
                }
            }
            let mut buf = [0u8; 1024];
            loop {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => conn.write_all(&buf[..n]).await.expect("echo"),
                }
            }
            command
        });
        (path, task)
    }

    #[tokio::test]
    async fn connect_then_echo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, task) = server(dir.path(), Behaviour::Echo).await;
        let mut stream = connect(&path, 18047, Duration::from_secs(2))
            .await
            .expect("connect");
        stream.write_all(b"ping").await.expect("write");
        let mut buf = [0u8; 4];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"ping");
        drop(stream);
        assert_eq!(task.await.expect("server"), b"CONNECT 18047");
    }

    #[tokio::test]
    async fn payload_right_after_ok_is_not_swallowed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _task) = server(dir.path(), Behaviour::OkWithPayload).await;
        let mut stream = connect(&path, 18047, Duration::from_secs(2))
            .await
            .expect("connect");
        let mut buf = [0u8; 5];
        stream.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"hello");
    }

    #[tokio::test]
    async fn closed_without_reply_is_a_retryable_refusal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _task) = server(dir.path(), Behaviour::Refuse).await;
        let err = connect(&path, 1234, Duration::from_secs(2))
            .await
            .expect_err("refused");
        assert!(matches!(err, ConnectError::Refused { port: 1234 }), "{err}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn other_replies_are_protocol_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _task) = server(dir.path(), Behaviour::Garbage).await;
        let err = connect(&path, 1, Duration::from_secs(2))
            .await
            .expect_err("garbage");
        assert!(
            matches!(&err, ConnectError::Protocol { reply, .. } if reply == "ERR no"),
            "{err}"
        );
        assert!(!err.is_retryable());
    }

    #[tokio::test]
    async fn a_silent_vmm_times_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, _task) = server(dir.path(), Behaviour::Silent).await;
        let err = connect(&path, 1, Duration::from_millis(200))
            .await
            .expect_err("silent");
        assert!(matches!(err, ConnectError::Timeout { .. }), "{err}");
    }
}
