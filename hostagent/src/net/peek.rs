//! The name a new connection asks for, read from its first bytes without answering them: the
//! server name of a TLS ClientHello (rustls's [`Acceptor`], which parses but does not
//! handshake) or the `Host` of an HTTP/1 request head (`httparse`). The bytes read are kept, to
//! be sent on unchanged.

use std::time::Duration;

use rustls::server::{Accepted, Acceptor};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Most bytes read while looking for the name (a ClientHello with post-quantum key shares is
/// about 2 KiB; request heads are rarely above 8 KiB).
pub const MAX_PEEK: usize = 16 * 1024;
/// How long the first bytes may take.
pub const PEEK_TIMEOUT: Duration = Duration::from_secs(10);

/// What the first bytes were.
pub enum Protocol {
    /// A TLS ClientHello, parsed (`None` when it was not valid TLS).
    Tls(Option<Box<Accepted>>),
    /// An HTTP/1 request head.
    Http,
    /// Something else, or nothing within the limits.
    Other,
}

/// A connection's first bytes and the name they ask for.
pub struct Peeked {
    /// Everything read so far.
    pub bytes: Vec<u8>,
    /// What they were.
    pub protocol: Protocol,
    /// The TLS server name or HTTP host (lowercase, without port or trailing dot).
    pub name: Option<String>,
}

/// Reads from `r` until the name can be told (or it is clear there is none).
pub async fn peek<R: AsyncRead + Unpin>(r: &mut R) -> Peeked {
    let mut bytes = Vec::new();
    let mut acceptor = Acceptor::default();
    let read = async {
        let mut chunk = vec![0u8; 4096];
        loop {
            let n = match r.read(&mut chunk).await {
                Ok(0) | Err(_) => return (Protocol::Other, None),
                Ok(n) => n,
            };
            let fresh = &chunk[..n];
            bytes.extend_from_slice(fresh);
            if bytes[0] == 0x16 {
                let mut rd: &[u8] = fresh;
                while !rd.is_empty() {
                    if acceptor.read_tls(&mut rd).is_err() {
                        return (Protocol::Tls(None), None);
                    }
                }
                match acceptor.accept() {
                    Ok(Some(accepted)) => {
                        let name = accepted.client_hello().server_name().map(clean);
                        return (Protocol::Tls(Some(Box::new(accepted))), name);
                    }
                    Ok(None) => {}
                    Err(_) => return (Protocol::Tls(None), None),
                }
            } else {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                let mut req = httparse::Request::new(&mut headers);
                match req.parse(&bytes) {
                    Ok(httparse::Status::Complete(_)) => {
                        let host = req
                            .headers
                            .iter()
                            .find(|h| h.name.eq_ignore_ascii_case("host"))
                            .and_then(|h| std::str::from_utf8(h.value).ok())
                            .map(host_of);
                        return (Protocol::Http, host);
                    }
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return (Protocol::Other, None),
                }
            }
            if bytes.len() >= MAX_PEEK {
                return (Protocol::Other, None);
            }
        }
    };
    let (protocol, name) = tokio::time::timeout(PEEK_TIMEOUT, read)
        .await
        .unwrap_or((Protocol::Other, None));
    Peeked {
        bytes,
        protocol,
        name: name.filter(|n| !n.is_empty()),
    }
}

fn clean(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The host part of a `Host` header value (`name`, `name:port`, `[v6]:port`).
fn host_of(value: &str) -> String {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        v.rsplit_once(':')
            .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
            .map_or(v, |(h, _)| h)
    };
    clean(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn http_host_is_read_in_pieces_and_kept() {
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for part in [
                &b"GET / HT"[..],
                b"TP/1.1\r\nHost: API.example.com:8080\r\n",
                b"\r\n",
            ] {
                client.write_all(part).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        let p = peek(&mut server).await;
        assert!(matches!(p.protocol, Protocol::Http));
        assert_eq!(p.name.as_deref(), Some("api.example.com"));
        assert_eq!(
            p.bytes,
            b"GET / HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n"
        );
        drop(writer.await.unwrap());
    }

    #[tokio::test]
    async fn other_bytes_and_closed_connections_have_no_name() {
        let mut ssh: &[u8] = b"SSH-2.0-OpenSSH_9.2\r\n";
        let p = peek(&mut ssh).await;
        assert!(matches!(p.protocol, Protocol::Other) && p.name.is_none());
        let mut bad_tls: &[u8] = b"\x16\x03\x01\x00\x05hello";
        let p = peek(&mut bad_tls).await;
        assert!(matches!(p.protocol, Protocol::Tls(None) | Protocol::Other));
        assert!(p.name.is_none());
        assert_eq!(host_of("[2001:db8::1]:443"), "2001:db8::1");
        assert_eq!(host_of("Example.COM."), "example.com");
    }
}
