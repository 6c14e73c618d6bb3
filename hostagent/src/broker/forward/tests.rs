//! The broker in-process: a sandbox-side client trusting the host CA, a loopback HTTPS server
//! with a certificate of its own test CA standing in for the outside API.

use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::AsyncReadExt;

const PLACEHOLDER: &str = "platinum-secret-0123456789abcdef";
const SECRET: &str = "sk-live-hunter2";

/// An HTTPS server for `name` that answers each request with its `authorization` header, and
/// reports every one it saw. A request asking for an upgrade is switched (`101`) and then
/// echoes what it gets.
struct Upstream {
    addr: SocketAddr,
    ca: CertificateDer<'static>,
    seen: tokio::sync::mpsc::UnboundedReceiver<String>,
}

async fn upstream(name: &str) -> Upstream {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![name.to_string()])
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    let tx = tx.clone();
                    async move {
                        let auth = req
                            .headers()
                            .get("authorization")
                            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
                            .unwrap_or_default();
                        let _ = tx.send(auth.clone());
                        if req.headers().contains_key(UPGRADE) {
                            let upgrade = hyper::upgrade::on(&mut req);
                            tokio::spawn(async move {
                                let mut io = TokioIo::new(upgrade.await.unwrap());
                                let (mut r, mut w) = tokio::io::split(&mut io);
                                let _ = tokio::io::copy(&mut r, &mut w).await;
                            });
                            let switched = Response::builder()
                                .status(StatusCode::SWITCHING_PROTOCOLS)
                                .header(UPGRADE, "echo")
                                .header("connection", "upgrade")
                                .body(Full::new(Bytes::new()))
                                .unwrap();
                            return Ok::<_, Infallible>(switched);
                        }
                        // `/uri...`: the request target as the server got it.
                        let body = if req.uri().path().starts_with("/uri") {
                            req.uri().to_string()
                        } else {
                            auth
                        };
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Upstream {
        addr,
        ca: ca_cert.der().clone(),
        seen,
    }
}

fn broker_trusting(root: Option<&CertificateDer<'static>>) -> Arc<Broker> {
    let options = BrokerOptions {
        extra_roots: root.into_iter().cloned().collect(),
        native_roots: false,
        connect_timeout: Duration::from_secs(5),
        ..Default::default()
    };
    Arc::new(Broker::new(Arc::new(HostCa::ephemeral().unwrap()), options).unwrap())
}

/// A sandbox's TLS client: trusting only the host CA of `broker`.
fn sandbox_tls(broker: &Broker) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(broker.ca().certificate_der().clone()).unwrap();
    Arc::new(
        ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// What the sandbox gets for `GET /` with `Host: host` and `Authorization: Bearer
/// <placeholder>` over TLS to `sni` (trusting only the host CA): status and body, or the error.
async fn request(
    broker: Arc<Broker>,
    sni: &str,
    host: &str,
    upstream: SocketAddr,
    plan: BrokerPlan,
) -> std::result::Result<(u16, String), String> {
    request_to(broker, sni, host, upstream, plan, "/").await
}

/// [`request`] for `target` (path and query).
async fn request_to(
    broker: Arc<Broker>,
    sni: &str,
    host: &str,
    upstream: SocketAddr,
    plan: BrokerPlan,
    target: &str,
) -> std::result::Result<(u16, String), String> {
    let config = sandbox_tls(&broker);
    let (sandbox_side, mut proxy_side) = tokio::io::duplex(64 * 1024);
    let sni_owned = sni.to_string();
    let brokered = tokio::spawn(async move {
        // As the egress proxy does: the start of the ClientHello is read before the broker.
        let mut peeked = vec![0u8; 5];
        proxy_side.read_exact(&mut peeked).await.unwrap();
        broker
            .broker(proxy_side, peeked, &sni_owned, upstream, plan)
            .await
    });
    let name = ServerName::try_from(sni.to_string()).unwrap();
    let result = async {
        let tls = TlsConnector::from(config)
            .connect(name, sandbox_side)
            .await
            .map_err(|e| format!("sandbox TLS: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(conn);
        let req = Request::get(target)
            .header(HOST, host)
            .header("authorization", format!("Bearer {PLACEHOLDER}"))
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    }
    .await;
    brokered.abort();
    result
}

fn bound() -> BrokerPlan {
    BrokerPlan {
        replacements: vec![(PLACEHOLDER.to_string(), Zeroizing::new(SECRET.to_string()))],
        set_headers: Vec::new(),
    }
}

#[tokio::test]
async fn the_server_the_secret_is_bound_to_sees_the_secret() {
    let mut up = upstream("api.test").await;
    let broker = broker_trusting(Some(&up.ca));
    let got = request(broker, "api.test", "api.test", up.addr, bound()).await;
    assert_eq!(got, Ok((200, format!("Bearer {SECRET}"))));
    assert_eq!(up.seen.recv().await.unwrap(), format!("Bearer {SECRET}"));
}

#[tokio::test]
async fn a_host_without_the_secret_sees_only_the_placeholder() {
    let mut up = upstream("other.test").await;
    let broker = broker_trusting(Some(&up.ca));
    // The registry gives nothing to replace for a host the secret is not bound to.
    let got = request(
        broker,
        "other.test",
        "other.test",
        up.addr,
        BrokerPlan::default(),
    )
    .await;
    assert_eq!(got, Ok((200, format!("Bearer {PLACEHOLDER}"))));
    assert_eq!(
        up.seen.recv().await.unwrap(),
        format!("Bearer {PLACEHOLDER}")
    );
}

#[tokio::test]
async fn a_request_for_another_host_on_the_connection_is_refused() {
    let mut up = upstream("api.test").await;
    let broker = broker_trusting(Some(&up.ca));
    let got = request(broker, "api.test", "evil.test", up.addr, bound()).await;
    assert_eq!(got.map(|(status, _)| status), Ok(421));
    assert!(up.seen.try_recv().is_err());
}

#[tokio::test]
async fn a_server_that_cannot_prove_the_name_gets_nothing() {
    // The sandbox claims api.test but connects to a server with a certificate for another
    // name, and then to one nobody vouches for: both fail closed.
    let mut wrong_name = upstream("evil.test").await;
    let broker = broker_trusting(Some(&wrong_name.ca));
    let got = request(broker, "api.test", "api.test", wrong_name.addr, bound()).await;
    assert!(got.is_err(), "{got:?}");
    assert!(wrong_name.seen.try_recv().is_err());

    let mut untrusted = upstream("api.test").await;
    let broker = broker_trusting(None);
    let got = request(broker, "api.test", "api.test", untrusted.addr, bound()).await;
    assert!(got.is_err(), "{got:?}");
    assert!(untrusted.seen.try_recv().is_err());
}

#[tokio::test]
async fn names_that_are_no_host_names_are_refused() {
    let broker = broker_trusting(None);
    let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
    for sni in ["*.api.test", "127.0.0.1", ""] {
        let (_a, b) = tokio::io::duplex(64);
        assert!(
            broker
                .broker(b, Vec::new(), sni, addr, bound())
                .await
                .is_err()
        );
    }
}

#[tokio::test]
async fn a_header_rule_sets_its_header_over_what_the_sandbox_sent() {
    let mut up = upstream("api.test").await;
    let broker = broker_trusting(Some(&up.ca));
    // The sandbox sends a placeholder in `authorization`; the rule's value wins, and the
    // placeholder in it is not replaced (rule values are final).
    let plan = BrokerPlan {
        set_headers: vec![(
            "Authorization".into(),
            Zeroizing::new(format!("Token {SECRET} {PLACEHOLDER}")),
        )],
        ..bound()
    };
    let got = request(broker, "api.test", "api.test", up.addr, plan).await;
    let expected = format!("Token {SECRET} {PLACEHOLDER}");
    assert_eq!(got, Ok((200, expected.clone())));
    assert_eq!(up.seen.recv().await.unwrap(), expected);
}

#[tokio::test]
async fn placeholders_in_the_path_and_query_are_replaced_percent_encoded() {
    let up = upstream("api.test").await;
    let broker = broker_trusting(Some(&up.ca));
    let plan = BrokerPlan {
        replacements: vec![(
            PLACEHOLDER.to_string(),
            Zeroizing::new("k&y=1/é".to_string()),
        )],
        set_headers: Vec::new(),
    };
    let target = format!("/uri/{PLACEHOLDER}?key={PLACEHOLDER}&x=1");
    let got = request_to(broker, "api.test", "api.test", up.addr, plan, &target).await;
    assert_eq!(
        got,
        Ok((
            200,
            "/uri/k%26y%3D1%2F%C3%A9?key=k%26y%3D1%2F%C3%A9&x=1".into()
        ))
    );
}

#[tokio::test]
async fn an_upgrade_is_brokered_then_spliced_both_ways() {
    use tokio::io::AsyncWriteExt;
    let mut up = upstream("api.test").await;
    let broker = broker_trusting(Some(&up.ca));
    let config = sandbox_tls(&broker);
    let (sandbox_side, proxy_side) = tokio::io::duplex(64 * 1024);
    let brokered = tokio::spawn(async move {
        broker
            .broker(proxy_side, Vec::new(), "api.test", up.addr, bound())
            .await
    });
    let tls = TlsConnector::from(config)
        .connect(ServerName::try_from("api.test").unwrap(), sandbox_side)
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::get("/ws")
        .header(HOST, "api.test")
        .header(UPGRADE, "echo")
        .header("connection", "upgrade")
        .header("authorization", format!("Bearer {PLACEHOLDER}"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    assert_eq!(up.seen.recv().await.unwrap(), format!("Bearer {SECRET}"));
    let mut io = TokioIo::new(hyper::upgrade::on(resp).await.unwrap());
    for frame in [&b"hello"[..], b" again"] {
        io.write_all(frame).await.unwrap();
        let mut got = vec![0u8; frame.len()];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(got, frame);
    }
    drop(io);
    // Closing one side ends the brokered connection.
    let ended = tokio::time::timeout(Duration::from_secs(10), brokered).await;
    assert!(ended.is_ok(), "the brokered connection outlived both sides");
}

#[test]
fn placeholders_are_replaced_everywhere_in_a_value_and_only_there() {
    let r = bound().replacements;
    let v = format!("a {PLACEHOLDER} b {PLACEHOLDER}");
    assert_eq!(
        replace(v.as_bytes(), &r).unwrap().as_slice(),
        format!("a {SECRET} b {SECRET}").as_bytes()
    );
    assert!(replace(b"nothing here", &r).is_none());
}
