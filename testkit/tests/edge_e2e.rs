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

use platinum_testkit::{TestServer, poll_until_ok, sandbox_path};
use reqwest::header::HeaderMap;
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

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
    for s in secrets {
        assert!(!raw.contains(s), "a credential reached the service: {raw}");
    }
    assert!(!raw.to_ascii_lowercase().contains("platinum"), "{raw}");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_edge_serves_sandbox_ports_to_token_cookie_and_public_access() {
    let t = TestServer::start().await.unwrap();
    let s = t.create(json!({ "timeout_secs": 0 })).await.unwrap();
    let id = s["id"].as_str().unwrap().to_string();
    t.write_file(&id, "/tmp/echo.py", ECHO_SERVER)
        .await
        .unwrap();
    t.exec_with(
        &id,
        json!({"command": "exec python3 /tmp/echo.py", "background": true}),
    )
    .await
    .unwrap();
    poll_until_ok(
        || t.req(Method::GET, &sandbox_path(&id, "/ports/8000/ready")),
        Duration::from_secs(60),
    )
    .await
    .unwrap();
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
