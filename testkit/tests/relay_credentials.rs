//! Credentials never cross into a sandbox: a service in a real microVM that echoes what it
//! receives is called through all three relays (`/v1/.../ports`, E2B port routing, Daytona
//! previews) with every credential each one accepts, and none of them (API key, access and
//! traffic tokens, preview tokens, token query parameters, Platinum cookies) reaches it; every
//! proxied response carries the sandboxing CSP; a Platinum cookie the service tries to set is
//! dropped; and an E2B port request without a token is refused.
//!
//! One sandbox serves every check.

use platinum_testkit::{TestServer, poll_until_ok, sandbox_path};
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};
use std::time::Duration;

/// Echoes each request's path and headers as JSON, and tries to set a Platinum cookie.
const ECHO_SERVER: &str = r#"
import http.server, json
class H(http.server.BaseHTTPRequestHandler):
    def handle_one(self):
        n = int(self.headers.get("content-length") or 0)
        if n:
            self.rfile.read(n)
        body = json.dumps({"path": self.path, "headers": [[k, v] for k, v in self.headers.items()]}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.send_header("set-cookie", "platinum_session=planted; Path=/")
        self.send_header("set-cookie", "app=1; Path=/")
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = handle_one
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", 8000), H).serve_forever()
"#;

/// What the service saw, and the response's CSP and cookies.
struct Echo {
    path: String,
    headers: Vec<(String, String)>,
    csp: Vec<String>,
    set_cookies: Vec<String>,
    raw: String,
}

impl Echo {
    fn header(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

async fn echo(req: RequestBuilder) -> Echo {
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200, "the echo server answers");
    let all = |name: &str| -> Vec<String> {
        resp.headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let (csp, set_cookies) = (all("content-security-policy"), all("set-cookie"));
    let raw = resp.text().await.unwrap();
    let body: Value = serde_json::from_str(&raw).unwrap();
    Echo {
        path: body["path"].as_str().unwrap().to_string(),
        headers: body["headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_string(),
                    p[1].as_str().unwrap().to_string(),
                )
            })
            .collect(),
        csp,
        set_cookies,
        raw,
    }
}

/// The checks every relay must pass: no secret anywhere in what the service saw, no credential
/// header, only the non-Platinum cookie, the CSP, and no Platinum `Set-Cookie`.
fn assert_clean(relay: &str, e: &Echo, secrets: &[&str]) {
    for s in secrets {
        assert!(
            !e.raw.contains(s),
            "{relay}: a credential reached the service: {}",
            e.raw
        );
    }
    for h in [
        "authorization",
        "x-api-key",
        "x-access-token",
        "e2b-traffic-access-token",
        "x-daytona-preview-token",
    ] {
        assert!(e.header(h).is_empty(), "{relay}: {h} reached the service");
    }
    assert_eq!(e.header("cookie"), ["keep=1"], "{relay}: {}", e.raw);
    assert!(
        !e.path.contains("DAYTONA_SANDBOX_AUTH_KEY") && !e.path.contains("signature"),
        "{relay}: {}",
        e.path
    );
    assert!(e.path.ends_with("/echo?x=1"), "{relay}: {}", e.path);
    assert!(
        e.csp
            .iter()
            .any(|c| c.starts_with("sandbox ") && !c.contains("allow-same-origin")),
        "{relay}: CSP {:?}",
        e.csp
    );
    assert_eq!(e.set_cookies, ["app=1; Path=/"], "{relay}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_credential_reaches_a_sandbox_through_any_relay() {
    let t = TestServer::start().await.unwrap();
    let s = t.create(json!({})).await.unwrap();
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
    let v1 = |path: &str| {
        t.req(
            Method::GET,
            &sandbox_path(&id, &format!("/ports/8000{path}")),
        )
    };
    poll_until_ok(|| v1("/ready"), Duration::from_secs(60))
        .await
        .unwrap();
    let query = "x=1&DAYTONA_SANDBOX_AUTH_KEY=qtoken&signature=v1_qsig";
    let cookie = "platinum_session=cookiesecret; keep=1";

    // E2B's tokens for this sandbox (created over /v1: not public to E2B routing).
    let e2b = t
        .expect(
            t.anon(Method::POST, &format!("/sandboxes/{id}/connect"))
                .header("X-API-KEY", &t.key)
                .json(&json!({"timeout": 600})),
            200,
        )
        .await
        .unwrap();
    let access = e2b["envdAccessToken"].as_str().unwrap().to_string();
    let traffic = e2b["trafficAccessToken"].as_str().unwrap().to_string();
    // Daytona's preview token for port 8000, and a signed link.
    let preview = t
        .expect(
            t.req(
                Method::GET,
                &format!("/api/sandbox/{id}/ports/8000/preview-url"),
            ),
            200,
        )
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let signed = t
        .expect(
            t.req(
                Method::GET,
                &format!("/api/sandbox/{id}/ports/8000/signed-preview-url?expiresInSeconds=600"),
            ),
            200,
        )
        .await
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let secrets = [
        t.key.as_str(),
        access.as_str(),
        traffic.as_str(),
        preview.as_str(),
        signed.as_str(),
        "qtoken",
        "v1_qsig",
        "cookiesecret",
    ];

    // 1. /v1/sandboxes/{id}/ports/8000 with the API key (as a bearer and as X-API-Key).
    let e = echo(
        v1(&format!("/echo?{query}"))
            .header("X-API-Key", &t.key)
            .header("Cookie", cookie),
    )
    .await;
    assert_clean("/v1 ports", &e, &secrets);

    // 2. E2B header routing with the access and traffic tokens (and the API key, too).
    let e2b_port = || {
        t.anon(Method::GET, &format!("/echo?{query}"))
            .header("E2b-Sandbox-Id", &id)
            .header("E2b-Sandbox-Port", "8000")
    };
    let e = echo(
        e2b_port()
            .header("X-Access-Token", &access)
            .header("E2B-Traffic-Access-Token", &traffic)
            .header("X-API-KEY", &t.key)
            .header("Cookie", cookie),
    )
    .await;
    assert_clean("E2B routing", &e, &secrets);
    let (status, body) = t.call(e2b_port()).await.unwrap();
    assert_eq!(
        (status, body["code"].as_i64()),
        (401, Some(401)),
        "an E2B port request without a token: {body}"
    );

    // 3. Daytona previews: the token as header and query, Daytona's cookie; and a signed link.
    let e = echo(
        t.anon(
            Method::GET,
            &format!("/preview/{id}/8000/echo?{query}&DAYTONA_SANDBOX_AUTH_KEY={preview}"),
        )
        .header("X-Daytona-Preview-Token", &preview)
        .header(
            "Cookie",
            format!("daytona-sandbox-auth-{id}={preview}; {cookie}"),
        ),
    )
    .await;
    assert_clean("Daytona preview", &e, &secrets);
    let e = echo(
        t.anon(Method::GET, &format!("/preview/s/{signed}/echo?{query}"))
            .header("Cookie", cookie),
    )
    .await;
    assert_clean("Daytona signed preview", &e, &secrets);
}
