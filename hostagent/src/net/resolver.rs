//! The host's DNS resolver for sandboxes whose egress rules name domains: their DNS (to any
//! server, UDP and TCP port 53) is redirected here by the firewall (see [`super::egress`]).
//!
//! A query is answered per the asking sandbox's rules ([`super::EgressRules::may_resolve`]): a name it
//! may not resolve gets NXDOMAIN without leaving the host (so under a default of deny, query
//! names cannot carry data out), any other is asked of the host's upstream resolvers as a new
//! query of ours (one question, our id) and the answer relayed. The addresses of allowed names
//! are handed to the firewall (set `learned`) before the answer goes back, so the connection
//! that follows it is let through.
//!
//! A hostile guest is bounded: at most [`super::policies::MAX_QUERIES`] of its queries in flight (the rest are
//! dropped, as a busy resolver would), TCP connections count against its proxy connections and
//! close after [`IDLE`] without a query, and malformed messages are dropped.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::policies::Policies;

/// How long an upstream resolver gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(4);
/// How long a guest's TCP connection may stay idle.
pub const IDLE: Duration = Duration::from_secs(10);
/// UDP payload size we offer upstream (the DNS flag day's safe size).
const EDNS_PAYLOAD: u16 = 1232;

/// The resolvers the host asks.
#[derive(Debug, Clone)]
pub struct Upstream {
    servers: Vec<SocketAddr>,
}

impl Upstream {
    /// Asks `servers` (port 53 when none is given), in order.
    pub fn new(servers: Vec<SocketAddr>) -> Upstream {
        Upstream { servers }
    }

    /// Sends `query` as a query of ours (fresh id, one question, recursion desired) and returns
    /// the first answer that matches it.
    pub async fn exchange(&self, query: &Query, tcp: bool) -> std::io::Result<Message> {
        let mut msg = Message::new();
        let id: u16 = rand::random();
        msg.set_id(id)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(true)
            .add_query(query.clone());
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_PAYLOAD);
        msg.set_edns(edns);
        let bytes = msg.to_vec().map_err(std::io::Error::other)?;
        let mut last = std::io::Error::other("no upstream resolver");
        for server in &self.servers {
            let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
                if tcp {
                    exchange_tcp(*server, &bytes).await
                } else {
                    exchange_udp(*server, &bytes).await
                }
            })
            .await
            .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut)));
            match got.and_then(|b| Message::from_vec(&b).map_err(std::io::Error::other)) {
                Ok(answer) if answer.id() == id && answer.queries() == msg.queries() => {
                    if answer.truncated() && !tcp {
                        return Box::pin(self.exchange(query, true)).await;
                    }
                    return Ok(answer);
                }
                Ok(_) => last = std::io::Error::other("an answer that does not match the query"),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The IPv4 addresses `name` resolves to, with their TTLs.
    pub async fn lookup_a(&self, name: &str) -> std::io::Result<Vec<(Ipv4Addr, u32)>> {
        let name = Name::from_ascii(name).map_err(std::io::Error::other)?;
        let answer = self
            .exchange(&Query::query(name, RecordType::A), false)
            .await?;
        Ok(addresses(&answer))
    }
}

async fn exchange_udp(server: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let bind: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0".parse().expect("address")
    } else {
        "[::]:0".parse().expect("address")
    };
    let socket = UdpSocket::bind(bind).await?;
    socket.connect(server).await?;
    socket.send(bytes).await?;
    let mut buf = vec![0u8; 65535];
    let n = socket.recv(&mut buf).await?;
    buf.truncate(n);
    Ok(buf)
}

async fn exchange_tcp(server: SocketAddr, bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect(server).await?;
    write_framed(&mut s, bytes).await?;
    read_framed(&mut s).await
}

async fn write_framed(s: &mut TcpStream, bytes: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(bytes.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    s.write_all(&out).await
}

async fn read_framed(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = s.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    s.read_exact(&mut buf).await?;
    Ok(buf)
}

/// The A records of an answer (every name in it: a CNAME chain's addresses are the query's).
fn addresses(answer: &Message) -> Vec<(Ipv4Addr, u32)> {
    answer
        .answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some((a.0, r.ttl())),
            _ => None,
        })
        .collect()
}

/// What the resolver needs to answer a query.
pub struct Resolver {
    /// The sandboxes' rules and learned addresses.
    pub policies: Arc<Policies>,
    /// Where allowed names are resolved.
    pub upstream: Upstream,
    /// The nftables table the learned addresses go to.
    pub table: String,
}

/// An answer of our own to `query`: the same id and question, no records.
fn refusal(query: &Message, code: ResponseCode) -> Message {
    let mut m = Message::error_msg(query.id(), query.op_code(), code);
    m.set_recursion_desired(query.recursion_desired())
        .set_recursion_available(true)
        .add_queries(query.queries().iter().cloned());
    m
}

impl Resolver {
    /// The answer to `bytes` from the sandbox at `from`, if any (`None`: drop the query).
    pub async fn answer(&self, from: Ipv4Addr, bytes: &[u8], tcp: bool) -> Option<Vec<u8>> {
        let query = Message::from_vec(bytes).ok()?;
        if query.message_type() != MessageType::Query {
            return None;
        }
        let Some(sandbox) = self.policies.get(from).filter(|s| s.internet) else {
            return refusal(&query, ResponseCode::Refused).to_vec().ok();
        };
        if query.op_code() != OpCode::Query || query.queries().len() != 1 {
            return refusal(&query, ResponseCode::NotImp).to_vec().ok();
        }
        let question = &query.queries()[0];
        let name = question.name().to_ascii();
        let name = name.trim_end_matches('.');
        let response = match sandbox.rules.may_resolve(name) {
            false => {
                tracing::debug!(sandbox = %from, name, "DNS query refused by the egress policy");
                refusal(&query, ResponseCode::NXDomain)
            }
            true => {
                let _permit = sandbox.queries.clone().try_acquire_owned().ok()?;
                match self.upstream.exchange(question, tcp).await {
                    Ok(mut answer) => {
                        let learned = self.policies.learn(from, name, &addresses(&answer));
                        if !learned.is_empty()
                            && let Err(e) =
                                super::firewall::learn(&self.table, from, &learned).await
                        {
                            tracing::warn!(sandbox = %from, name, error = %e, "adding learned addresses to the firewall");
                        }
                        answer
                            .set_id(query.id())
                            .set_recursion_desired(query.recursion_desired());
                        answer
                    }
                    Err(e) => {
                        tracing::debug!(sandbox = %from, name, error = %e, "upstream resolvers failed");
                        refusal(&query, ResponseCode::ServFail)
                    }
                }
            }
        };
        let out = response.to_vec().ok()?;
        let limit = query
            .extensions()
            .as_ref()
            .map_or(512, |e| usize::from(e.max_payload().max(512)));
        if !tcp && out.len() > limit {
            return response.truncate().to_vec().ok();
        }
        Some(out)
    }

    /// Answers UDP queries on `socket` until the task is dropped.
    pub async fn serve_udp(self: Arc<Self>, socket: UdpSocket) {
        let socket = Arc::new(socket);
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, peer) = match socket.recv_from(&mut buf).await {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(error = %e, "sandbox DNS (UDP) receive");
                    continue;
                }
            };
            let SocketAddr::V4(peer) = peer else { continue };
            let bytes = buf[..n].to_vec();
            let (me, socket) = (self.clone(), socket.clone());
            tokio::spawn(async move {
                if let Some(out) = me.answer(*peer.ip(), &bytes, false).await {
                    let _ = socket.send_to(&out, peer).await;
                }
            });
        }
    }

    /// Answers TCP queries on `listener` until the task is dropped.
    pub async fn serve_tcp(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(got) => got,
                Err(e) => {
                    tracing::debug!(error = %e, "sandbox DNS (TCP) accept");
                    continue;
                }
            };
            let SocketAddr::V4(peer) = peer else { continue };
            let me = self.clone();
            tokio::spawn(async move { me.serve_connection(stream, peer).await });
        }
    }

    async fn serve_connection(&self, mut stream: TcpStream, peer: SocketAddrV4) {
        let Some(sandbox) = self.policies.get(*peer.ip()) else {
            return;
        };
        let Ok(_permit) = sandbox.connections.clone().try_acquire_owned() else {
            return;
        };
        while let Ok(Ok(bytes)) = tokio::time::timeout(IDLE, read_framed(&mut stream)).await {
            let Some(out) = self.answer(*peer.ip(), &bytes, true).await else {
                return;
            };
            if write_framed(&mut stream, &out).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::EgressRules;
    use crate::net::names::NamePattern;
    use hickory_proto::rr::Record;
    use hickory_proto::rr::rdata::A;

    /// A one-record authoritative stand-in for an upstream resolver on loopback.
    async fn fake_upstream(addr: Ipv4Addr) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let at = socket.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let (n, peer) = socket.recv_from(&mut buf).await.unwrap();
                let q = Message::from_vec(&buf[..n]).unwrap();
                let mut a = Message::new();
                a.set_id(q.id())
                    .set_message_type(MessageType::Response)
                    .add_queries(q.queries().iter().cloned());
                let name = q.queries()[0].name().clone();
                a.add_answer(Record::from_rdata(name, 7, RData::A(A(addr))));
                socket.send_to(&a.to_vec().unwrap(), peer).await.unwrap();
            }
        });
        at
    }

    fn query(name: &str) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.to_vec().unwrap()
    }

    #[tokio::test]
    async fn answers_allowed_names_and_refuses_the_rest() {
        let target = Ipv4Addr::new(203, 0, 113, 9);
        let upstream = Upstream::new(vec![fake_upstream(target).await]);
        let policies = Arc::new(Policies::default());
        let sandbox = Ipv4Addr::new(10, 42, 0, 7);
        let r = Resolver {
            policies: policies.clone(),
            upstream,
            // Deny-listed names only: nothing is learned, so no firewall is needed.
            table: "unused".into(),
        };
        // Unknown sandbox: refused.
        let a = Message::from_vec(
            &r.answer(sandbox, &query("a.example.com."), false)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(a.response_code(), ResponseCode::Refused);
        policies.set(
            sandbox,
            "sb",
            EgressRules {
                deny_names: vec![NamePattern::parse("*.blocked.example").unwrap()],
                ..EgressRules::default()
            },
            true,
        );
        let a = Message::from_vec(
            &r.answer(sandbox, &query("a.example.com."), false)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!((a.id(), a.response_code()), (4242, ResponseCode::NoError));
        assert_eq!(addresses(&a), vec![(target, 7)]);
        let a = Message::from_vec(
            &r.answer(sandbox, &query("x.Blocked.example."), false)
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(a.response_code(), ResponseCode::NXDomain);
        assert!(a.answers().is_empty());
        assert_eq!(a.queries().len(), 1);
        // Garbage is dropped.
        assert!(r.answer(sandbox, b"\x00\x01garbage", false).await.is_none());
    }
}
