//! The product's edge proxy against a real microVM: one sandbox runs a service that echoes
//! what it receives and tries to set cookies, and every access rule is checked through the path
//! form (`/edge/<id>/<port>/`) and the Host form (`<port>-<id>.<domain>`): no credential is
//! refused; a token in the query becomes a cookie and a redirect, and the cookie then works; a
//! header token works; tokens for another port or sandbox, expired, revoked or of a deleted key
//! are refused while a rotation keeps older tokens valid; a public exposure needs nothing; the
//! guest never sees a token or the cookie and cannot set cookies for other domains; a paused
//! sandbox is resumed by its traffic (once for concurrent requests), a suspended one restored
//! (the latencies are printed);
//! tokens survive a server restart.
//!
//! A second sandbox serves [`STREAM_SERVER`]: HTTP/2 clients (h2c, prior knowledge) reach it in
//! both forms, with streaming both ways (each proven by order: the next piece is only sent once
//! the other side has shown it got the first, so a buffering proxy would never finish); a
//! WebSocket upgrade echoes frames both ways and the guest sees none of the credentials sent with
//! it; a path form without its slash is redirected to it.

use futures::{SinkExt, StreamExt};
use platinum_testkit::{TestServer, poll_until_ok, sandbox_path};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// Echoes each request's path and headers as JSON, and tries to set cookies: one for the
/// parent domain, one named like the edge cookie, one host-only.
const ECHO_SERVER: &str = r#"
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def handle_one(self):
        body = json.dumps({"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("set-cookie", "x=1; Domain=edge.test; Path=/")
        self.send_header("set-cookie", "platinum_edge=planted; Path=/")
        self.send_header("set-cookie", "app=1; Path=/")
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = handle_one
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8000), H).serve_forever()
"#;

/// HTTP/1.1 on port 8002: `/stream` sends a piece, waits for `/release`, sends another; `POST
/// /upload` reads a chunked body, counting what arrived (`/seen`); a WebSocket upgrade first sends
/// the headers of its handshake, then echoes every frame; anything else echoes its request.
/// The protocol code is by hand: the guest image has Python's standard library only.
const STREAM_SERVER: &str = r#"
import base64, hashlib, http.server, json, struct, threading
released = threading.Event()
seen = [0]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.headers.get("upgrade", "").lower() == "websocket":
            return self.websocket()
        if self.path == "/stream":
            self.send_response(200)
            self.send_header("content-type", "text/plain")
            self.send_header("keep-alive", "timeout=5")
            self.send_header("connection", "close")
            self.end_headers()
            self.wfile.write(b"first\n")
            released.wait()
            self.wfile.write(b"second\n")
            return
        if self.path == "/release":
            released.set()
            return self.reply(b"released")
        if self.path == "/seen":
            return self.reply(str(seen[0]).encode())
        self.reply(json.dumps({"path": self.path, "version": self.request_version,
                               "headers": [[k, v] for k, v in self.headers.items()]}).encode())
    def do_POST(self):
        total = 0
        while True:
            size = int(self.rfile.readline().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline() not in (b"\r\n", b""):
                    pass
                break
            total += len(self.rfile.read(size))
            self.rfile.readline()
            seen[0] = total
        self.reply(str(total).encode())
    def reply(self, body):
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def websocket(self):
        key = self.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        self.send_response(101)
        self.send_header("upgrade", "websocket")
        self.send_header("connection", "Upgrade")
        self.send_header("sec-websocket-accept", base64.b64encode(hashlib.sha1(key.encode()).digest()).decode())
        self.end_headers()
        self.close_connection = True
        self.frame(1, json.dumps([[k, v] for k, v in self.headers.items()]).encode())
        while True:
            b0, b1 = self.rfile.read(2)
            n = b1 & 127
            if n == 126:
                n = struct.unpack(">H", self.rfile.read(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if b1 & 128 else b"\0\0\0\0"
            data = bytes(c ^ mask[i % 4] for i, c in enumerate(self.rfile.read(n)))
            self.frame(b0 & 15, data)
            if b0 & 15 == 8:
                return
    def frame(self, op, data):
        n = len(data)
        size = bytes([n]) if n < 126 else bytes([126]) + struct.pack(">H", n) if n < 65536 else bytes([127]) + struct.pack(">Q", n)
        self.wfile.write(bytes([128 | op]) + size + data)
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8002), H).serve_forever()
"#;

const TOKEN_HEADER: &str = "x-platinum-edge-token";

struct Edge {
    http: Client,
    base: String,
    id: String,
}

impl Edge {
    /// A path-form request (no API key).
    fn path(&self, rest: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}/edge/{}/8000{rest}", self.base, self.id))
    }

    /// A Host-form request (no API key) for `<port>-<id>.edge.test`.
    fn host(&self, port: u16, rest: &str) -> reqwest::RequestBuilder {
        self.http
            .get(format!("{}{rest}", self.base))
            .header("host", format!("{port}-{}.edge.test", self.id))
    }
}

async fn status(req: reqwest::RequestBuilder) -> u16 {
    req.send().await.unwrap().status().as_u16()
}

fn all(resp: &Response, name: &str) -> Vec<String> {
    resp.headers()
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// Sends, requires 200 and checks that no edge credential reached the service and that the
/// service's cookies for other domains and named like the edge cookie were dropped.
async fn served(req: reqwest::RequestBuilder, secrets: &[&str]) -> (Value, HeaderMap) {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "served: {:?}", resp.headers());
    let cookies = all(&resp, "set-cookie");
    let guest_cookies: Vec<&String> = cookies
        .iter()
        .filter(|c| !c.contains("HttpOnly; SameSite=Lax"))
        .collect();
    assert_eq!(guest_cookies, ["app=1; Path=/"], "guest cookies");
    let headers = resp.headers().clone();
    let raw = resp.text().await.unwrap();
    no_credential(&raw, secrets);
    (serde_json::from_str(&raw).unwrap(), headers)
}

async fn mint(t: &TestServer, id: &str, port: u16, ttl: u64) -> Value {
    t.expect(
        t.req(
            Method::POST,
            &sandbox_path(id, &format!("/ports/{port}/tokens")),
        )
        .json(&json!({ "ttl_secs": ttl })),
        200,
    )
    .await
    .unwrap()
}

fn token(v: &Value) -> String {
    v["token"].as_str().unwrap().to_string()
}

/// A new sandbox running Python `script`, once its `port` accepts connections.
async fn sandbox_serving(t: &TestServer, script: &'static str, port: u16) -> String {
    let s = t.create(json!({ "timeout_secs": 0 })).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    t.write_file(&id, "/tmp/server.py", script).await.unwrap();
    t.exec_with(
        &id,
        json!({"command": "exec python3 /tmp/server.py", "background": true}),
    )
    .await
    .unwrap();
    poll_until_ok(
        || {
            t.req(
                Method::GET,
                &sandbox_path(&id, &format!("/ports/{port}/ready")),
            )
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    id
}

/// Asserts that what the guest saw holds none of `secrets` and nothing named `platinum*`.
fn no_credential(seen: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !seen.contains(s),
            "a credential reached the service: {seen}"
        );
    }
    assert!(!seen.to_ascii_lowercase().contains("platinum"), "{seen}");
}

/// [`no_credential`], and the cookie the client sent beside them (`keep=1`) did arrive.
fn guest_saw_no_credential(seen: &str, secrets: &[&str]) {
    no_credential(seen, secrets);
    assert!(seen.contains("keep=1"), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_serves_sandbox_ports_to_token_cookie_and_public_access() {
    let t = TestServer::start().await.unwrap();
    let id = sandbox_serving(&t, ECHO_SERVER, 8000).await;
    let e = Edge {
        http: Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(300))
            .build()
            .unwrap(),
        base: t.url.clone(),
        id: id.clone(),
    };

    // No credential: the path form refuses; the Host form is not the product's and E2B's routing
    // refuses it (its own 401).
    let refused = e.path("/x").send().await.unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "unauthorized");
    assert_eq!(status(e.host(8000, "/x")).await, 401);

    // A token in the query: cookie + redirect without it; the cookie then works.
    let minted = mint(&t, &id, 8000, 600).await;
    let tok = token(&minted);
    let url = minted["url"].as_str().unwrap();
    assert!(
        url.ends_with(&format!("/edge/{id}/8000/?platinum_token={tok}")),
        "{url}"
    );
    let r = e
        .http
        .get(format!(
            "{}/edge/{id}/8000/echo?q=1&platinum_token={tok}",
            t.url
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], format!("/edge/{id}/8000/echo?q=1"));
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.starts_with(&format!("platinum_edge={tok}; Path=/edge/{id}/8000;")),
        "{cookie}"
    );
    assert!(
        cookie.contains("HttpOnly")
            && cookie.contains("SameSite=Lax")
            && !cookie.contains("Secure")
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let (echo, _) = served(
        e.path("/echo?q=1")
            .header("cookie", format!("{pair}; keep=1")),
        &[&tok],
    )
    .await;
    assert_eq!(echo["path"], "/echo?q=1");
    // Behind HTTPS the cookie is Secure.
    let r = e
        .path(&format!("/?platinum_token={tok}"))
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .ends_with("; Secure")
    );

    // A header token, in the Host form: the guest's cookie for the parent domain is dropped.
    let (echo, _) = served(e.host(8000, "/h").header(TOKEN_HEADER, &tok), &[&tok]).await;
    assert_eq!(echo["path"], "/h");
    // A query token in the Host form: a host-only cookie for `/`.
    let r = e
        .host(8000, &format!("/?platinum_token={tok}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    let host_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        host_cookie.contains("; Path=/;") && !host_cookie.contains("Domain"),
        "{host_cookie}"
    );
    served(e.host(8000, "/c").header("cookie", pair.clone()), &[&tok]).await;

    // Another port, another sandbox, tampered, expired, revoked: refused.
    let other_port = token(&mint(&t, &id, 8001, 600).await);
    assert_eq!(
        status(e.path("/").header(TOKEN_HEADER, &other_port)).await,
        401
    );
    let other_sandbox = e
        .http
        .get(format!("{}/edge/zzzzzzzzzzzzzzzzzzzz/8000/", t.url))
        .header(TOKEN_HEADER, &tok);
    assert_eq!(status(other_sandbox).await, 401);
    assert_eq!(
        status(e.host(8000, "/").header(TOKEN_HEADER, &other_port)).await,
        401
    );
    let tampered = tok.replacen(".8000.", ".8001.", 1);
    assert_eq!(
        status(e.host(8001, "/").header(TOKEN_HEADER, &tampered)).await,
        401
    );
    let short = token(&mint(&t, &id, 8000, 1).await);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(status(e.path("/").header(TOKEN_HEADER, &short)).await, 401);
    let revoked = token(&mint(&t, &id, 8000, 600).await);
    served(e.path("/").header(TOKEN_HEADER, &revoked), &[&revoked]).await;
    t.expect(
        t.req(Method::POST, "/v1/edge/tokens/revoke")
            .json(&json!({ "token": revoked })),
        204,
    )
    .await
    .unwrap();
    assert_eq!(
        status(e.path("/").header(TOKEN_HEADER, &revoked)).await,
        401
    );
    served(e.path("/").header(TOKEN_HEADER, &tok), &[&tok]).await;

    // Rotation: the new key signs; the old token works until its key is deleted.
    let old_kid = minted["kid"].as_str().unwrap().to_string();
    let rotated = t
        .expect(t.req(Method::POST, "/v1/edge/keys/rotate"), 200)
        .await
        .unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    let fresh = mint(&t, &id, 8000, 3600).await;
    assert_eq!(fresh["kid"], new_kid);
    let fresh = token(&fresh);
    served(e.path("/").header(TOKEN_HEADER, &tok), &[&tok]).await;
    let keys = t
        .expect(t.req(Method::GET, "/v1/edge/keys"), 200)
        .await
        .unwrap();
    assert_eq!(keys["keys"].as_array().unwrap().len(), 2);
    assert!(!keys.to_string().contains("secret"));
    t.expect(
        t.req(Method::DELETE, &format!("/v1/edge/keys/{old_kid}")),
        204,
    )
    .await
    .unwrap();
    assert_eq!(status(e.path("/").header(TOKEN_HEADER, &tok)).await, 401);
    let gone = t
        .expect(
            t.req(Method::DELETE, &format!("/v1/edge/keys/{old_kid}")),
            404,
        )
        .await
        .unwrap();
    assert_eq!(gone["code"], "edge_key_not_found");
    served(e.path("/").header(TOKEN_HEADER, &fresh), &[&fresh]).await;

    // A public exposure needs no credential, in both forms, until it is closed.
    t.expect(
        t.req(Method::POST, &sandbox_path(&id, "/expose"))
            .json(&json!({"port": 8000, "public": true})),
        200,
    )
    .await
    .unwrap();
    let listed = t
        .expect(t.req(Method::GET, &sandbox_path(&id, "/expose")), 200)
        .await
        .unwrap();
    assert_eq!(listed["exposures"][0]["port"], 8000);
    assert_eq!(listed["exposures"][0]["public"], true);
    served(e.path("/pub"), &[]).await;
    served(e.host(8000, "/pub"), &[]).await;
    t.expect(
        t.req(Method::DELETE, &sandbox_path(&id, "/expose/8000")),
        204,
    )
    .await
    .unwrap();
    assert_eq!(status(e.path("/pub")).await, 401);

    // Latency through the edge while running, then a paused sandbox woken by its traffic.
    let t0 = Instant::now();
    served(e.path("/warm").header(TOKEN_HEADER, &fresh), &[&fresh]).await;
    let running = t0.elapsed();
    t.action(&id, "pause").await.unwrap();
    let t0 = Instant::now();
    let requests = (0..3).map(|i| {
        let req = e.path(&format!("/wake{i}")).header(TOKEN_HEADER, &fresh);
        async move { served(req, &[]).await }
    });
    let woken = futures::future::join_all(requests).await;
    let paused = t0.elapsed();
    let resumed_ms: Vec<u64> = woken
        .iter()
        .filter_map(|(_, h)| h.get("x-platinum-edge-resumed-ms"))
        .map(|v| v.to_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(resumed_ms.len(), 1, "one request resumed it");
    let events = t
        .expect(t.req(Method::GET, &sandbox_path(&id, "/events")), 200)
        .await
        .unwrap();
    let resumes = events
        .as_array()
        .unwrap()
        .iter()
        .filter(|ev| ev["kind"] == "edge_resumed")
        .count();
    assert_eq!(resumes, 1);
    println!(
        "edge latency: running {:.1} ms; paused -> served {:.1} ms (resume itself {} ms)",
        running.as_secs_f64() * 1e3,
        paused.as_secs_f64() * 1e3,
        resumed_ms[0]
    );

    // Paused to disk (with memory): the edge restores it, and the service answers again.
    let suspended = t
        .expect(
            t.req(Method::POST, &sandbox_path(&id, "/pause"))
                .json(&json!({ "memory": true })),
            200,
        )
        .await
        .unwrap();
    assert_eq!(suspended["state"], "suspended");
    let t0 = Instant::now();
    let (_, headers) = served(e.path("/disk").header(TOKEN_HEADER, &fresh), &[]).await;
    println!(
        "edge latency: suspended to disk -> served {:.1} ms (resume itself {} ms)",
        t0.elapsed().as_secs_f64() * 1e3,
        headers["x-platinum-edge-resumed-ms"].to_str().unwrap()
    );

    // Tokens and keys survive a restart (the restart stops the sandbox: a verified token gets
    // `invalid_state`, since traffic never starts a stopped sandbox; a bad one still 401).
    let t = t.restart(|_| {}).await.unwrap();
    let e = Edge {
        base: t.url.clone(),
        ..e
    };
    let r = e
        .path("/")
        .header(TOKEN_HEADER, &fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 409);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["code"], "invalid_state");
    assert_eq!(status(e.path("/").header(TOKEN_HEADER, &tok)).await, 401);
    t.delete(&id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_speaks_http2_streams_both_ways_and_passes_websockets() {
    let t = TestServer::start().await.unwrap();
    let id = sandbox_serving(&t, STREAM_SERVER, 8002).await;
    let tok = token(&mint(&t, &id, 8002, 600).await);
    let addr: SocketAddr = t.url.trim_start_matches("http://").parse().unwrap();
    let host = format!("8002-{id}.edge.test");
    // HTTP/2 without TLS: prior knowledge (h2c); the Host form's name resolves to the server.
    let h2 = Client::builder()
        .http2_prior_knowledge()
        .resolve(&host, addr)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap();
    let path_url = format!("{}/edge/{id}/8002", t.url);
    let host_url = format!("http://{host}:{}", addr.port());
    let with_token = |req: reqwest::RequestBuilder| req.header(TOKEN_HEADER, &tok);

    // Both forms over HTTP/2; the service is spoken to in HTTP/1.1 and gets no credential.
    for base in [&path_url, &host_url] {
        let r = with_token(h2.get(format!("{base}/echo?q=1")))
            .bearer_auth(&t.key)
            .header("cookie", format!("platinum_edge={tok}; keep=1"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.version(), reqwest::Version::HTTP_2);
        assert_eq!(r.status().as_u16(), 200, "{base}");
        let raw = r.text().await.unwrap();
        guest_saw_no_credential(&raw, &[&tok, &t.key]);
        let echo: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(echo["path"], "/echo?q=1");
        assert_eq!(echo["version"], "HTTP/1.1");
    }

    // A streamed response arrives in pieces: the second is only sent after the first has come
    // through (a buffering edge would wait for both and never release the second).
    let resp = with_token(h2.get(format!("{path_url}/stream")))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    for hop in ["connection", "keep-alive", "transfer-encoding"] {
        assert!(!resp.headers().contains_key(hop), "{hop} over HTTP/2");
    }
    let mut body = resp.bytes_stream();
    let mut got = Vec::new();
    while !got.ends_with(b"first\n") {
        got.extend_from_slice(&body.next().await.unwrap().unwrap());
    }
    assert_eq!(got, b"first\n");
    let released = with_token(h2.get(format!("{host_url}/release")));
    assert_eq!(status(released).await, 200);
    while let Some(piece) = body.next().await {
        got.extend_from_slice(&piece.unwrap());
    }
    assert_eq!(got, b"first\nsecond\n");

    // A streamed request body: the second piece is only sent once the service has the first.
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Vec<u8>>>(1);
    let pieces = futures::stream::unfold(rx, |mut rx| async { rx.recv().await.map(|p| (p, rx)) });
    let upload = tokio::spawn(
        with_token(h2.post(format!("{path_url}/upload")))
            .body(reqwest::Body::wrap_stream(pieces))
            .send(),
    );
    tx.send(Ok(vec![b'a'; 1000])).await.unwrap();
    let seen = || with_token(h2.get(format!("{path_url}/seen")));
    let mut polls = 0;
    while seen().send().await.unwrap().text().await.unwrap() != "1000" {
        polls += 1;
        assert!(polls < 600, "the first piece never reached the service");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tx.send(Ok(vec![b'b'; 1000])).await.unwrap();
    drop(tx);
    let done = upload.await.unwrap().unwrap();
    assert_eq!(done.version(), reqwest::Version::HTTP_2);
    assert_eq!(done.text().await.unwrap(), "2000");

    // The path form without its slash is redirected to it, the query kept; a query token is
    // still turned into the cookie (and leaves the URL); without a credential it is refused.
    let r = with_token(h2.get(format!("{path_url}?x=1")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 308);
    assert_eq!(r.headers()["location"], format!("/edge/{id}/8002/?x=1"));
    let r = h2
        .get(format!("{path_url}?platinum_token={tok}&x=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], format!("/edge/{id}/8002/?x=1"));
    assert!(r.headers().contains_key("set-cookie"));
    assert_eq!(status(h2.get(&path_url)).await, 401);
    let followed = Client::new()
        .get(format!("{path_url}?x=1"))
        .header(TOKEN_HEADER, &tok)
        .send()
        .await
        .unwrap();
    let echo: Value = followed.json().await.unwrap();
    assert_eq!(echo["path"], "/?x=1");

    // WebSocket (an HTTP/1.1 upgrade), in both forms: frames echo both ways, and the handshake
    // the guest saw carries none of the credentials sent with it.
    for uri in [
        format!("ws://{addr}/edge/{id}/8002/ws"),
        format!("ws://{host}:{}/ws", addr.port()),
    ] {
        let mut req = uri.as_str().into_client_request().unwrap();
        let headers = req.headers_mut();
        headers.insert(TOKEN_HEADER, tok.parse().unwrap());
        headers.insert(
            "authorization",
            format!("Bearer {}", t.key).parse().unwrap(),
        );
        headers.insert(
            "cookie",
            format!("platinum_edge={tok}; keep=1").parse().unwrap(),
        );
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut ws, resp) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        assert_eq!(resp.status().as_u16(), 101, "{uri}");
        let handshake = ws.next().await.unwrap().unwrap().into_text().unwrap();
        guest_saw_no_credential(&handshake, &[&tok, &t.key]);
        for msg in [
            Message::text("hello through the edge"),
            Message::binary(vec![0u8, 1, 2, 255]),
            Message::binary(vec![7u8; 70_000]),
        ] {
            ws.send(msg.clone()).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), msg, "{uri}");
        }
        ws.close(None).await.unwrap();
    }
    t.delete(&id).await.unwrap();
}
