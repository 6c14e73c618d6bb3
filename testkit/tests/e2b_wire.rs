//! E2B wire details with real microVMs that the SDK flows (`e2b_sdk.rs`) do not reach: the v1
//! control-plane paths, routing by Host, the proxy's 502s, forwarding to a service listening in
//! the sandbox (only with a token: the traffic or the envd access token), access tokens and
//! signed file URLs, the raw Connect framing, the code interpreter's refusals, and an access token
//! that survives a server restart.
//!
//! One sandbox is booted (and booted again after the restart); every check shares it. The
//! snapshot and fork routes' refusals need no VM and have a test of their own.

use base64::Engine as _;
use platinum_testkit::{TestServer, poll_until_ok};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::time::Duration;

const ENVD: &str = "49983";

struct E2b<'a> {
    t: &'a TestServer,
}

impl E2b<'_> {
    /// A control-plane request with the API key.
    fn api(&self, method: Method, path: &str) -> RequestBuilder {
        self.t.anon(method, path).header("X-API-KEY", &self.t.key)
    }

    /// A request for a sandbox port, routed by the E2B headers.
    fn port(&self, method: Method, id: &str, port: &str, path: &str) -> RequestBuilder {
        self.t
            .anon(method, path)
            .header("E2b-Sandbox-Id", id)
            .header("E2b-Sandbox-Port", port)
    }

    /// Connects to a sandbox through `path` (v1 or v2), requiring `status`; returns the envd
    /// access token it answers with.
    async fn connect(&self, path: &str, timeout: u64, status: u16) -> String {
        let s = self
            .t
            .expect(
                self.api(Method::POST, path)
                    .json(&json!({"timeout": timeout})),
                status,
            )
            .await
            .unwrap();
        s["envdAccessToken"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }
}

fn envelope(flag: u8, json: &Value) -> Vec<u8> {
    let payload = json.to_string().into_bytes();
    let mut out = vec![flag];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

fn envelopes(mut body: &[u8]) -> Vec<(u8, Value)> {
    let mut out = Vec::new();
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        out.push((body[0], serde_json::from_slice(&body[5..5 + len]).unwrap()));
        body = &body[5 + len..];
    }
    assert!(body.is_empty(), "trailing bytes after the envelopes");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn e2b_wire_details() {
    let t = TestServer::start().await.unwrap();
    let e = E2b { t: &t };

    // --- control plane, v1 paths ---
    let s = t
        .expect(
            e.api(Method::POST, "/sandboxes").json(&json!({
                "templateID": "base", "timeout": 600, "secure": true,
                "metadata": {"suite": "wire"}, "envVars": {"WIRE": "1"},
                "network": {"maskRequestHost": "masked.test:${PORT}"}
            })),
            201,
        )
        .await
        .unwrap();
    let id = s["sandboxID"].as_str().unwrap().to_string();
    let token = s["envdAccessToken"].as_str().unwrap().to_string();
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(
        (s["envdVersion"].as_str(), s["templateID"].as_str()),
        (Some("0.6.4"), Some("base"))
    );
    assert!(s["clientID"].is_string() && token.len() >= 32, "{s}");
    // Not created with allowPublicTraffic: its service ports need this token.
    let traffic = s["trafficAccessToken"]
        .as_str()
        .expect("a private sandbox has a traffic access token")
        .to_string();
    assert!(traffic.len() >= 32 && traffic != token, "{s}");

    let list = t
        .expect(e.api(Method::GET, "/sandboxes?metadata=suite%3Dwire"), 200)
        .await
        .unwrap();
    assert_eq!(list.as_array().map(|l| l.len()), Some(1), "{list}");
    assert_eq!(list[0]["state"], "running");
    let (status, body) = t
        .call(
            t.anon(Method::GET, "/v2/sandboxes")
                .header("X-API-KEY", "nope"),
        )
        .await
        .unwrap();
    assert_eq!((status, body["code"].as_i64()), (401, Some(401)), "{body}");
    t.expect(
        e.api(Method::POST, "/v2/sandboxes")
            .json(&json!({"timeout": 30})),
        400,
    )
    .await
    .unwrap();
    let (status, body) = t
        .call(e.api(Method::POST, "/v2/sandboxes").body("{not json"))
        .await
        .unwrap();
    assert_eq!((status, body["code"].as_i64()), (400, Some(400)), "{body}");
    for bad in [
        json!({"templateID": "base", "metadata": {"platinum.e2b/public": "true"}}),
        json!({"templateID": "base", "network": {"allowPublicTraffic": "yes"}}),
    ] {
        t.expect(e.api(Method::POST, "/v2/sandboxes").json(&bad), 400)
            .await
            .expect("reserved labels and non-boolean allowPublicTraffic are refused");
    }
    assert_eq!(
        e.connect(&format!("/sandboxes/{id}/connect"), 600, 200)
            .await,
        token,
        "connect returns the same token"
    );

    // --- routing ---
    t.expect(e.port(Method::GET, &id, ENVD, "/health"), 204)
        .await
        .expect("envd health by headers");
    let by_host = t
        .anon(Method::GET, "/health")
        .header("Host", format!("{ENVD}-{id}.sandbox.test"));
    assert_eq!(t.call(by_host).await.unwrap().0, 204, "envd health by Host");
    let (status, body) = t.call(t.anon(Method::GET, "/health")).await.unwrap();
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("ok")),
        "the server's own health"
    );
    let (status, body) = t
        .call(e.port(Method::GET, "nosuchsandbox", ENVD, "/health"))
        .await
        .unwrap();
    assert_eq!(status, 502);
    assert!(
        body["message"].as_str().unwrap().contains("was not found"),
        "{body}"
    );
    assert_eq!(body["sandboxId"], "nosuchsandbox");
    t.expect(
        t.anon(Method::GET, "/health").header("E2b-Sandbox-Id", &id),
        400,
    )
    .await
    .expect("an id without a port");

    // --- envd: tokens and Connect framing ---
    let list_rpc = || {
        e.port(Method::POST, &id, ENVD, "/process.Process/List")
            .header("Content-Type", "application/json")
            .body("{}")
    };
    t.expect(list_rpc(), 401)
        .await
        .expect("RPC without the token");
    t.expect(list_rpc().header("X-Access-Token", "wrong"), 401)
        .await
        .unwrap();
    let (status, body) = t
        .call(list_rpc().header("X-Access-Token", &token))
        .await
        .unwrap();
    assert_eq!(
        (status, body["processes"].is_array()),
        (200, true),
        "{body}"
    );
    t.expect(
        e.port(Method::POST, &id, ENVD, "/filesystem.Filesystem/Stat")
            .header("X-Access-Token", &token)
            .header("Content-Type", "application/proto")
            .body(vec![0u8]),
        415,
    )
    .await
    .expect("the binary codec is refused");
    let start =
        json!({"process": {"cmd": "/bin/bash", "args": ["-l", "-c", "echo $WIRE-hi; exit 4"]}});
    let resp = e
        .port(Method::POST, &id, ENVD, "/process.Process/Start")
        .header("X-Access-Token", &token)
        .header("Content-Type", "application/connect+json")
        .header("Connect-Protocol-Version", "1")
        .body(envelope(0, &start))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/connect+json");
    let msgs = envelopes(&resp.bytes().await.unwrap());
    assert!(
        msgs[0].1["event"]["start"]["pid"].as_u64().is_some(),
        "{msgs:?}"
    );
    let stdout: Vec<u8> = msgs
        .iter()
        .filter_map(|(_, m)| m["event"]["data"]["stdout"].as_str())
        .flat_map(|b| base64::engine::general_purpose::STANDARD.decode(b).unwrap())
        .collect();
    assert_eq!(stdout, b"1-hi\n");
    let end = &msgs[msgs.len() - 2].1["event"]["end"];
    assert_eq!(
        (end["exitCode"].as_i64(), end["status"].as_str()),
        (Some(4), Some("exit status 4")),
        "{msgs:?}"
    );
    assert_eq!(
        msgs.last().unwrap(),
        &(2u8, json!({})),
        "end-of-stream envelope"
    );
    t.expect_error(
        e.port(Method::POST, &id, ENVD, "/filesystem.Filesystem/Stat")
            .header("X-Access-Token", &token)
            .header("Content-Type", "application/json")
            .body(r#"{"path": "/nope"}"#),
        404,
        "not_found",
    )
    .await
    .unwrap();

    // --- /files: token, signature, expiry ---
    let (status, body) = t
        .call(
            e.port(Method::POST, &id, ENVD, "/files?path=/tmp/signed.txt")
                .header("X-Access-Token", &token)
                .header("Content-Type", "application/octet-stream")
                .body("signed content"),
        )
        .await
        .unwrap();
    assert_eq!(
        (status, body[0]["path"].as_str()),
        (200, Some("/tmp/signed.txt")),
        "{body}"
    );
    let sig = platinum_e2b::auth::file_signature("/tmp/signed.txt", "read", "", &token, None);
    let get = |query: String| e.port(Method::GET, &id, ENVD, &format!("/files?{query}"));
    let ok = get(format!(
        "path=/tmp/signed.txt&signature={}",
        urlencode(&sig)
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "signed content");
    let bad = get("path=/tmp/signed.txt&signature=v1_bogus".into())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    let past = time_now() - 10;
    let expired =
        platinum_e2b::auth::file_signature("/tmp/signed.txt", "read", "", &token, Some(past));
    let old = get(format!(
        "path=/tmp/signed.txt&signature={}&signature_expiration={past}",
        urlencode(&expired)
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(old.status(), 401, "expired signature");
    assert_eq!(
        get("path=/tmp/signed.txt".into())
            .send()
            .await
            .unwrap()
            .status(),
        401,
        "no credentials"
    );
    // Without routing headers or host (`E2B_SANDBOX_URL`): the signature names the sandbox.
    let unrouted = |query: String| t.anon(Method::GET, &format!("/files?{query}"));
    let signed = unrouted(format!(
        "path=/tmp/signed.txt&signature={}",
        urlencode(&sig)
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(signed.status(), 200, "routed by its signature");
    assert_eq!(signed.text().await.unwrap(), "signed content");
    let old = unrouted(format!(
        "path=/tmp/signed.txt&signature={}&signature_expiration={past}",
        urlencode(&expired)
    ))
    .send()
    .await
    .unwrap();
    assert_eq!(old.status(), 401, "routed, then refused as expired");
    let forged = unrouted("path=/tmp/signed.txt&signature=v1_bogus".into())
        .send()
        .await
        .unwrap();
    assert_eq!(
        forged.status(),
        404,
        "no sandbox signed it: not sandbox traffic"
    );
    let envs = t
        .expect(
            e.port(Method::GET, &id, ENVD, "/envs")
                .header("X-Access-Token", &token),
            200,
        )
        .await
        .unwrap();
    assert_eq!(envs["WIRE"], "1");

    // --- code interpreter refusals ---
    let exec = |body: Value| e.port(Method::POST, &id, "49999", "/execute").json(&body);
    t.expect(exec(json!({"code": "1"})), 401)
        .await
        .expect("no token");
    let both = exec(json!({"code": "1", "context_id": "x", "language": "python"}))
        .header("X-Access-Token", &token);
    t.expect(both, 400).await.unwrap();
    let unknown = exec(json!({"code": "1", "context_id": "nope"})).header("X-Access-Token", &token);
    t.expect(unknown, 404).await.unwrap();

    // --- a service inside the sandbox, through the proxy ---
    t.exec(
        &id,
        "mkdir -p /tmp/www && echo served-by-the-sandbox > /tmp/www/index.txt",
    )
    .await
    .unwrap();
    let bg = json!({"command": "cd /tmp/www && exec python3 -m http.server 8123 --bind 127.0.0.1", "background": true});
    t.exec_with(&id, bg).await.unwrap();
    let page = poll_until_ok(
        || {
            e.port(Method::GET, &id, "8123", "/index.txt")
                .header("E2B-Traffic-Access-Token", &traffic)
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(page, "served-by-the-sandbox\n");
    // No token, a wrong one, or the API key: the proxy's 401, by header or by Host routing.
    for req in [
        e.port(Method::GET, &id, "8123", "/index.txt"),
        e.port(Method::GET, &id, "8123", "/index.txt")
            .header("E2B-Traffic-Access-Token", &token),
        e.port(Method::GET, &id, "8123", "/index.txt")
            .header("X-Access-Token", &traffic),
        e.port(Method::GET, &id, "8123", "/index.txt")
            .header("X-API-KEY", &t.key),
        t.anon(Method::GET, "/index.txt")
            .header("Host", format!("8123-{id}.sandbox.test")),
        e.port(Method::GET, &id, "8124", "/"),
    ] {
        let (status, body) = t.call(req).await.unwrap();
        assert_eq!(
            (status, body["code"].as_i64(), body["sandboxId"].as_str()),
            (401, Some(401), Some(id.as_str())),
            "{body}"
        );
    }
    // The envd access token opens the ports too.
    let with_access = e
        .port(Method::GET, &id, "8123", "/index.txt")
        .header("X-Access-Token", &token);
    assert_eq!(
        with_access.send().await.unwrap().text().await.unwrap(),
        "served-by-the-sandbox\n"
    );
    let by_host = t
        .anon(Method::GET, "/index.txt")
        .header("Host", format!("8123-{id}.sandbox.test"))
        .header("E2B-Traffic-Access-Token", &traffic);
    assert_eq!(
        by_host.send().await.unwrap().text().await.unwrap(),
        "served-by-the-sandbox\n"
    );
    let (status, body) = t
        .call(
            e.port(Method::GET, &id, "8124", "/")
                .header("E2B-Traffic-Access-Token", &traffic),
        )
        .await
        .unwrap();
    assert_eq!(status, 502);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("port is not open"),
        "{body}"
    );
    // maskRequestHost: the service sees the mask, `${PORT}` its port, as its Host.
    let echo_host = "import http.server as h\n\
        class H(h.BaseHTTPRequestHandler):\n\
        \x20   def do_GET(self):\n\
        \x20       b = self.headers['Host'].encode()\n\
        \x20       self.send_response(200); self.send_header('Content-Length', str(len(b)))\n\
        \x20       self.end_headers(); self.wfile.write(b)\n\
        h.HTTPServer(('127.0.0.1', 8125), H).serve_forever()\n";
    let command =
        format!("cat > /tmp/echo_host.py <<'EOF'\n{echo_host}EOF\nexec python3 /tmp/echo_host.py");
    t.exec_with(&id, json!({"command": command, "background": true}))
        .await
        .unwrap();
    let seen = poll_until_ok(
        || {
            e.port(Method::GET, &id, "8125", "/")
                .header("E2B-Traffic-Access-Token", &traffic)
        },
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(seen, "masked.test:8125");

    // --- restart: the sandbox comes back through connect, with the same token ---
    let t = t.restart(|_| {}).await.unwrap();
    let e = E2b { t: &t };
    let info = t
        .expect(e.api(Method::GET, &format!("/sandboxes/{id}")), 200)
        .await
        .unwrap();
    assert_eq!(info["state"], "paused", "stopped at shutdown: {info}");
    assert_eq!(info["envdAccessToken"], token.as_str());
    assert_eq!(
        info["network"]["maskRequestHost"], "masked.test:${PORT}",
        "{info}"
    );
    assert_eq!(
        e.connect(&format!("/v2/sandboxes/{id}/connect"), 300, 201)
            .await,
        token,
        "the token survives the restart"
    );
    t.expect(e.port(Method::GET, &id, ENVD, "/health"), 204)
        .await
        .unwrap();

    // --- kill ---
    let sandbox = |method: Method| e.api(method, &format!("/sandboxes/{id}"));
    t.expect(sandbox(Method::DELETE), 204).await.unwrap();
    t.expect(sandbox(Method::DELETE), 404).await.unwrap();
    t.expect(sandbox(Method::GET), 404).await.unwrap();
    let (status, body) = t
        .call(e.port(Method::GET, &id, ENVD, "/health"))
        .await
        .unwrap();
    assert!(
        status == 502 && body["message"].as_str().unwrap().contains("was not found"),
        "{body}"
    );
}

/// The snapshot and fork routes' answers that need no VM: empty lists, unknown sandboxes and
/// snapshots, templates that cannot be deleted, malformed queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2b_snapshot_routes_without_a_vm() {
    let t = TestServer::start().await.unwrap();
    let e = E2b { t: &t };
    let listed = t
        .expect(e.api(Method::GET, "/snapshots"), 200)
        .await
        .unwrap();
    assert_eq!(listed, json!([]));
    for (method, path, body, status) in [
        (
            Method::POST,
            "/sandboxes/nosuchsandbox0/snapshots",
            json!({}),
            404,
        ),
        (
            Method::POST,
            "/sandboxes/nosuchsandbox0/fork",
            json!({"count": 2}),
            404,
        ),
        (
            Method::POST,
            "/sandboxes/nosuchsandbox0/fork",
            json!({"count": -1}),
            400,
        ),
        (
            Method::POST,
            "/sandboxes/nosuchsandbox0/fork",
            json!({"timeout": 0}),
            400,
        ),
        (
            Method::POST,
            "/sandboxes/nosuchsandbox0/pause",
            json!({"memory": false}),
            404,
        ),
        (
            Method::POST,
            "/v2/sandboxes",
            json!({"templateID": "snapnosuchsnapshot0"}),
            404,
        ),
        (Method::DELETE, "/templates/base", json!({}), 400),
        (
            Method::DELETE,
            "/templates/snapnosuchsnapshot0",
            json!({}),
            404,
        ),
        (Method::GET, "/snapshots?limit=0", json!({}), 400),
        (Method::GET, "/snapshots?nextToken=nonsense", json!({}), 400),
    ] {
        let (got, answer) = t
            .call(e.api(method.clone(), path).json(&body))
            .await
            .unwrap();
        assert_eq!(
            (got, answer["code"].as_u64()),
            (status, Some(u64::from(status))),
            "{method} {path} {body}: {answer}"
        );
        assert!(answer["message"].is_string(), "{answer}");
    }
    // Without the API key, nothing.
    let (got, _) = t.call(t.anon(Method::GET, "/snapshots")).await.unwrap();
    assert_eq!(got, 401);
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
