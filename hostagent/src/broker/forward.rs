//! One brokered connection: the guest's TLS is terminated with a leaf of the host CA for the
//! name it asked for (SNI), a TLS connection to the real server is opened (verified against the
//! host's trust store, for that same name), and HTTP/1.1 requests are forwarded one by one with
//! every placeholder in a request header value, path or query (percent-encoded there) replaced
//! by its secret, then the headers the sandbox's rules set for that host put in (replacing any
//! of the same name the sandbox sent, marked sensitive so that they are never logged or
//! HPACK-indexed). Bodies stream through
//! untouched; headers are bounded; a connection idle between requests, or older than its
//! lifetime, is closed. An upgrade (WebSocket) gets the same treatment of its request; once the
//! server switches protocols, bytes are copied both ways untouched (frames are not searched
//! for placeholders) until either side closes or the connection's lifetime ends.
//!
//! Fails closed: a ClientHello for another name than the proxy saw, a server whose certificate
//! does not verify for the name, or a request whose `Host` names another host gets nothing
//! forwarded (the last a `421`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderName, HeaderValue, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Mutex;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use zeroize::Zeroizing;

use super::ca::{HostCa, provider};
use super::registry::{BrokerPlan, host_matches};
use super::replay::Replay;
use crate::error::{Error, Result};

/// Limits and trust of the broker.
#[derive(Debug, Clone)]
pub struct BrokerOptions {
    /// Roots trusted for upstream servers besides the host's own trust store (tests).
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// Whether the host's trust store is loaded at all (tests leave it out).
    pub native_roots: bool,
    /// TLS handshakes and the TCP connect to the server.
    pub connect_timeout: Duration,
    /// Waiting for a request's headers, the next one's included (idle connections end).
    pub idle_timeout: Duration,
    /// A connection's whole life.
    pub max_lifetime: Duration,
    /// Bytes of request or response headers at most.
    pub max_header_bytes: usize,
}

impl Default for BrokerOptions {
    fn default() -> Self {
        BrokerOptions {
            extra_roots: Vec::new(),
            native_roots: true,
            connect_timeout: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(60),
            max_lifetime: Duration::from_secs(3600),
            max_header_bytes: 64 * 1024,
        }
    }
}

/// The broker: the host CA and the trust it verifies servers with.
pub struct Broker {
    ca: Arc<HostCa>,
    upstream_tls: Arc<ClientConfig>,
    options: BrokerOptions,
}

type Body = BoxBody<Bytes, hyper::Error>;

/// The two halves of a switched connection: the sandbox's and the server's.
type Upgrade = (hyper::upgrade::OnUpgrade, hyper::upgrade::OnUpgrade);
/// Where the one upgrade of a connection is handed over (taken once).
type UpgradeSlot = std::sync::Mutex<Option<tokio::sync::oneshot::Sender<Upgrade>>>;

fn invalid(what: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("egress broker: {what}"))
}

impl Broker {
    /// A broker signing with `ca`.
    pub fn new(ca: Arc<HostCa>, options: BrokerOptions) -> Result<Broker> {
        let mut roots = RootCertStore::empty();
        if options.native_roots {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                tracing::warn!(error = %e, "reading the host's trust store");
            }
            let (added, _) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                tracing::warn!(
                    "the host's trust store has no usable certificate; brokered requests fail"
                );
            }
        }
        for root in &options.extra_roots {
            roots.add(root.clone()).map_err(invalid)?;
        }
        let mut upstream = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(invalid)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        upstream.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Broker {
            ca,
            upstream_tls: Arc::new(upstream),
            options,
        })
    }

    /// The host CA.
    pub fn ca(&self) -> &Arc<HostCa> {
        &self.ca
    }

    /// Brokers one intercepted connection from a sandbox: `client_hello` is what the egress
    /// proxy already read from `client` (read again first), `sni` the name in it, `upstream`
    /// the address the sandbox connected to, `plan` what is done to its requests to `sni`
    /// ([`super::SecretRegistry::plan`]). Ends when either side closes.
    pub async fn broker<S>(
        &self,
        client: S,
        client_hello: Vec<u8>,
        sni: &str,
        upstream: SocketAddr,
        plan: BrokerPlan,
    ) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        if sni.starts_with('*') {
            return Err(invalid(format!("{sni:?} is no host name")));
        }
        let name = match ServerName::try_from(sni.to_string()) {
            Ok(n @ ServerName::DnsName(_)) => n,
            _ => return Err(invalid(format!("{sni:?} is no host name"))),
        };
        let served = self.serve(client, client_hello, sni, name, upstream, plan);
        match tokio::time::timeout(self.options.max_lifetime, served).await {
            Ok(r) => r,
            Err(_) => Ok(()),
        }
    }

    async fn serve<S>(
        &self,
        client: S,
        client_hello: Vec<u8>,
        sni: &str,
        name: ServerName<'static>,
        upstream: SocketAddr,
        plan: BrokerPlan,
    ) -> Result<()>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let limit = self.options.connect_timeout;
        let acceptor = TlsAcceptor::from(self.ca.server_config(sni)?);
        let tls = tokio::time::timeout(limit, acceptor.accept(Replay::new(client_hello, client)))
            .await
            .map_err(|_| invalid("the sandbox's TLS handshake timed out"))?
            .map_err(invalid)?;
        let asked = tls.get_ref().1.server_name().unwrap_or_default();
        if !asked.eq_ignore_ascii_case(sni) {
            return Err(invalid(format!(
                "the ClientHello names {asked:?}, not {sni:?}"
            )));
        }
        let tcp = tokio::time::timeout(limit, tokio::net::TcpStream::connect(upstream))
            .await
            .map_err(|_| invalid(format!("connecting to {upstream} timed out")))?
            .map_err(invalid)?;
        let connector = TlsConnector::from(self.upstream_tls.clone());
        let server = tokio::time::timeout(limit, connector.connect(name, tcp))
            .await
            .map_err(|_| invalid(format!("the TLS handshake with {upstream} timed out")))?
            .map_err(|e| invalid(format!("{sni} at {upstream}: {e}")))?;
        let (sender, conn) = hyper::client::conn::http1::Builder::new()
            .max_buf_size(self.options.max_header_bytes.max(8192))
            .handshake::<_, Incoming>(TokioIo::new(server))
            .await
            .map_err(invalid)?;
        let upstream_task = tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "brokered upstream connection ended");
            }
        });
        tracing::debug!(
            sni,
            %upstream,
            secrets = plan.replacements.len(),
            headers = plan.set_headers.len(),
            "brokering a connection"
        );
        let sender = Arc::new(Mutex::new(sender));
        let plan = Arc::new(plan);
        let host = sni.to_string();
        // An upgrade hands both connections over; they are spliced here, within this call's
        // lifetime, not in a task of their own.
        let (upgraded_tx, upgraded_rx) = tokio::sync::oneshot::channel::<Upgrade>();
        let upgraded_tx = Arc::new(std::sync::Mutex::new(Some(upgraded_tx)));
        let service = hyper::service::service_fn(move |req: Request<Incoming>| {
            let (sender, plan, host) = (sender.clone(), plan.clone(), host.clone());
            let upgraded = upgraded_tx.clone();
            async move { Ok::<_, Infallible>(forward(req, &host, &plan, &sender, &upgraded).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Some(self.options.idle_timeout))
            .max_buf_size(self.options.max_header_bytes.max(8192))
            .serve_connection(TokioIo::new(tls), service)
            .with_upgrades()
            .await;
        if let Ok((client, server)) = upgraded_rx.await {
            match (client.await, server.await) {
                (Ok(client), Ok(server)) => {
                    let (mut c, mut s) = (TokioIo::new(client), TokioIo::new(server));
                    if let Err(e) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                        tracing::debug!(error = %e, sni, "brokered upgraded connection ended");
                    }
                }
                (c, s) => {
                    tracing::debug!(client = ?c.err(), server = ?s.err(), "upgrade failed")
                }
            }
        }
        upstream_task.abort();
        served.map_err(invalid)
    }
}

fn reply(status: StatusCode, text: &'static str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r
}

/// Forwards one request, placeholders replaced and the plan's headers set; an upgrade the
/// server accepts is handed to `upgraded`.
async fn forward(
    mut req: Request<Incoming>,
    sni: &str,
    plan: &BrokerPlan,
    sender: &Mutex<hyper::client::conn::http1::SendRequest<Incoming>>,
    upgraded: &UpgradeSlot,
) -> Response<Body> {
    let client_upgrade = req
        .headers()
        .contains_key(UPGRADE)
        .then(|| hyper::upgrade::on(&mut req));
    let host = req
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| req.uri().authority().map(|a| a.to_string()));
    if !host.is_some_and(|h| host_matches(sni, &h)) {
        return reply(
            StatusCode::MISDIRECTED_REQUEST,
            "the Host of this request is not the name its TLS connection was opened for\n",
        );
    }
    let (mut parts, body) = req.into_parts();
    for value in parts.headers.values_mut() {
        if let Some(replaced) = replace(value.as_bytes(), &plan.replacements) {
            match HeaderValue::from_bytes(&replaced) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    *value = v;
                }
                Err(_) => {
                    return reply(StatusCode::BAD_REQUEST, "a header cannot hold its secret\n");
                }
            }
        }
    }
    // In the path and query too (an API key as a query parameter), percent-encoded there.
    if let Some(pq) = parts.uri.path_and_query()
        && let Some(replaced) = replace_with(pq.as_str().as_bytes(), &plan.replacements, |s| {
            percent_encoding::utf8_percent_encode(s, URL_UNSAFE).to_string()
        })
    {
        let mut uri = parts.uri.clone().into_parts();
        match String::from_utf8(replaced.to_vec()).map(|pq| pq.parse()) {
            Ok(Ok(pq)) => uri.path_and_query = Some(pq),
            _ => return reply(StatusCode::BAD_REQUEST, "a URL cannot hold its secret\n"),
        }
        match hyper::Uri::from_parts(uri) {
            Ok(u) => parts.uri = u,
            Err(_) => return reply(StatusCode::BAD_REQUEST, "a URL cannot hold its secret\n"),
        }
    }
    // Set after the replacements, so a rule's value is never searched for placeholders.
    for (name, value) in &plan.set_headers {
        let (Ok(name), Ok(mut value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value.as_bytes()),
        ) else {
            // The engine checked both; a rule that still cannot be sent fails the request
            // rather than letting it out without the header it is for.
            return reply(StatusCode::BAD_GATEWAY, "a header rule cannot be applied\n");
        };
        value.set_sensitive(true);
        parts.headers.insert(name, value);
    }
    let mut sender = sender.lock().await;
    if sender.ready().await.is_err() {
        return reply(
            StatusCode::BAD_GATEWAY,
            "the server closed the connection\n",
        );
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(mut resp) => {
            if resp.status() == StatusCode::SWITCHING_PROTOCOLS
                && let Some(client) = client_upgrade
                && let Some(tx) = upgraded.lock().expect("upgrade slot").take()
            {
                let _ = tx.send((client, hyper::upgrade::on(&mut resp)));
            }
            resp.map(|b| b.boxed())
        }
        Err(e) => {
            tracing::debug!(error = %e, sni, "brokered request failed");
            reply(StatusCode::BAD_GATEWAY, "the server did not answer\n")
        }
    }
}

/// What a secret put into a URL is percent-encoded against: all but RFC 3986's unreserved
/// characters.
const URL_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `value` with every placeholder replaced; `None` when it holds none.
fn replace(
    value: &[u8],
    replacements: &[(String, Zeroizing<String>)],
) -> Option<Zeroizing<Vec<u8>>> {
    replace_with(value, replacements, |s| s.to_string())
}

/// `value` with every placeholder replaced by its secret as `encode` writes it; `None` when it
/// holds none.
fn replace_with(
    value: &[u8],
    replacements: &[(String, Zeroizing<String>)],
    encode: impl Fn(&str) -> String,
) -> Option<Zeroizing<Vec<u8>>> {
    let mut out: Option<Zeroizing<Vec<u8>>> = None;
    for (placeholder, secret) in replacements {
        let p = placeholder.as_bytes();
        let current: &[u8] = out.as_deref().map_or(value, |v| v.as_slice());
        if p.is_empty() || !current.windows(p.len()).any(|w| w == p) {
            continue;
        }
        let secret = Zeroizing::new(encode(secret));
        let mut next = Zeroizing::new(Vec::with_capacity(current.len() + secret.len()));
        let mut i = 0;
        while i < current.len() {
            if current[i..].starts_with(p) {
                next.extend_from_slice(secret.as_bytes());
                i += p.len();
            } else {
                next.push(current[i]);
                i += 1;
            }
        }
        out = Some(next);
    }
    out
}

#[cfg(test)]
mod tests;
