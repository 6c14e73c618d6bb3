//! Secrets brokered at egress, with a real VM and a real HTTPS server standing in for an
//! outside API in a network namespace (traffic stays on this machine): the server the secret is
//! bound to sees the secret; the guest holds only the placeholder (its environment, memory
//! snapshot and disk are searched for the secret's bytes); a host the secret is not bound to
//! sees only the placeholder. An egress header rule sets a header from a secret on requests to
//! its host only, over what the guest sent. Needs root (bridge, TAPs, nftables, a namespace) and the host's
//! transparent egress proxy, which hands TLS connections to hosts with bound secrets to the
//! broker.

use std::io::Read;
use std::net::Ipv4Addr;
use std::path::Path;

use platinum_testkit::netns::Namespace;
use platinum_testkit::{TestServer, test_network};
use reqwest::Method;
use serde_json::{Value, json};

/// The bound host and an unbound one, both served by the namespace's HTTPS server.
const API_HOST: &str = "api.secrets.test";
const OTHER_HOST: &str = "other.secrets.test";
const SECRET: &str = "sk-e2e-4f1c9a7d2b8e6035-do-not-leak";
/// A secret bound to no host, used only by a header rule.
const RULE_SECRET: &str = "rk-e2e-77a0c3e915d24b68-do-not-leak";

/// The HTTPS server: logs every request's `Authorization` and `X-Api-Key` headers (one line
/// each) and answers
/// `200 seen`, never echoing what it got (so the secret cannot come back into the guest).
const SERVER: &str = r#"
import http.server, ssl, sys
cert, key, log, addr = sys.argv[1:5]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(log, "a") as f:
            f.write(self.headers.get("Host", "") + " " + self.headers.get("Authorization", "")
                    + " key=" + self.headers.get("X-Api-Key", "") + "\n")
        self.send_response(200)
        self.send_header("Content-Length", "4")
        self.end_headers()
        self.wfile.write(b"seen")
    def log_message(self, *a):
        pass
s = http.server.ThreadingHTTPServer((addr, 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
s.socket = ctx.wrap_socket(s.socket, server_side=True)
s.serve_forever()
"#;

/// A test CA (written to `dir/ca.pem`) and a certificate of it for both hosts.
fn certificates(dir: &Path) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![API_HOST.into(), OTHER_HOST.into()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

/// Whether `needle` occurs in the file at `path` (read in chunks that overlap).
fn file_contains(path: &Path, needle: &[u8]) -> bool {
    let mut f = std::fs::File::open(path).unwrap();
    let mut buf = vec![0u8; 8 << 20];
    let mut carry: Vec<u8> = Vec::new();
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return false;
        }
        carry.extend_from_slice(&buf[..n]);
        if carry.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
        let keep = carry.len().saturating_sub(needle.len());
        carry.drain(..keep);
    }
}

/// Files under `dir` (recursively) that hold `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let ty = e.file_type().unwrap();
            if ty.is_dir() {
                stack.push(e.path());
            } else if ty.is_file() && file_contains(&e.path(), needle) {
                found.push(e.path().display().to_string());
            }
        }
    }
    found
}

/// Runs `command` as root in the sandbox; its stdout, requiring exit status 0.
async fn ok(t: &TestServer, id: &str, command: &str) -> String {
    let r: Value = t
        .exec_with(id, json!({"command": command, "user": "root"}))
        .await
        .unwrap();
    assert_eq!(r["exit_code"].as_i64(), Some(0), "`{command}`: {r}");
    r["stdout"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_bound_server_sees_the_secret_and_the_guest_never_does() {
    if !nix::unistd::geteuid().is_root() {
        panic!("this test needs root to create a bridge, TAPs, nftables rules and a namespace");
    }
    let files = tempfile::tempdir().unwrap();
    certificates(files.path());
    let script = files.path().join("server.py");
    std::fs::write(&script, SERVER).unwrap();
    let log = files.path().join("requests.log");
    std::fs::write(&log, "").unwrap();
    let (api, other) = (
        Ipv4Addr::new(203, 0, 113, 60),
        Ipv4Addr::new(203, 0, 113, 61),
    );
    let arg = |p: &Path| p.display().to_string();
    let servers: Vec<Namespace> = [api, other]
        .iter()
        .map(|addr| {
            let (cert, key, log) = (
                arg(&files.path().join("cert.pem")),
                arg(&files.path().join("key.pem")),
                arg(&log),
            );
            let script = arg(&script);
            let addr = addr.to_string();
            Namespace::create(
                &[addr.parse().unwrap()],
                &["/usr/bin/python3", &script, &cert, &key, &log, &addr],
            )
        })
        .collect();

    let net = test_network();
    let ca = files.path().join("ca.pem");
    let t = TestServer::start_with(|c| {
        c.network = Some(net.clone());
        c.egress_extra_ca = Some(ca.clone());
    })
    .await
    .unwrap();
    let secret = t
        .expect(
            t.req(Method::POST, "/v1/secrets").json(&json!({
                "name": "api-token", "value": SECRET, "hosts": [API_HOST],
            })),
            201,
        )
        .await
        .unwrap();
    assert!(!secret.to_string().contains(SECRET));
    let placeholder = secret["placeholder"].as_str().unwrap().to_string();
    let sb = t
        .create(json!({"secrets": {"API_TOKEN": "api-token"}}))
        .await
        .unwrap();
    let id = sb["id"].as_str().unwrap();
    assert_eq!(sb["env"]["API_TOKEN"].as_str(), Some(placeholder.as_str()));
    assert_eq!(ok(&t, id, "printenv API_TOKEN").await.trim(), placeholder);

    // `curl` to `host` at `addr` with `flags`, sending `header` (in double quotes: the guest's
    // shell expands variables in it).
    let curl_with = |host: &str, addr: Ipv4Addr, flags: &str, header: &str| {
        format!(
            "curl -sS {flags} --max-time 20 --resolve {host}:443:{addr} -H \"{header}\" \
             https://{host}/"
        )
    };
    let curl = |host: &str, addr: Ipv4Addr, flags: &str| {
        curl_with(host, addr, flags, "Authorization: Bearer $API_TOKEN")
    };
    // The bound host: brokered, so the guest's curl verifies the host CA's leaf.
    assert_eq!(ok(&t, id, &curl(API_HOST, api, "")).await, "seen");
    // So do Python and Node.js, which keep roots of their own (the session points them at the
    // system bundle).
    ok(&t, id, &format!("echo '{api} {API_HOST}' >> /etc/hosts")).await;
    let python = format!(
        "python3 -c 'import urllib.request; \
         print(urllib.request.urlopen(\"https://{API_HOST}/\").read().decode())'"
    );
    assert_eq!(ok(&t, id, &python).await.trim(), "seen");
    let node = format!(
        "node -e 'require(\"https\").get(\"https://{API_HOST}/\", \
         r => r.on(\"data\", d => process.stdout.write(d)))'"
    );
    assert_eq!(ok(&t, id, &node).await.trim(), "seen");
    // Another host: spliced untouched, so the guest sees that server's own (test-CA)
    // certificate, which it does not trust (-k).
    assert_eq!(ok(&t, id, &curl(OTHER_HOST, other, "-k")).await, "seen");
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(
        seen.contains(&format!("{API_HOST} Bearer {SECRET}")),
        "the bound host did not get the secret: {seen}"
    );
    assert!(
        seen.contains(&format!("{OTHER_HOST} Bearer {placeholder}")),
        "the other host did not get the placeholder: {seen}"
    );
    assert!(!seen.contains(&format!("{OTHER_HOST} Bearer {SECRET}")));

    // Header rules, set at runtime: the bound secret for its own host (a rule may not send it
    // elsewhere), and a secret bound to no host for the other one, replacing what the guest
    // sends.
    t.expect(
        t.req(Method::POST, "/v1/secrets")
            .json(&json!({"name": "rule-token", "value": RULE_SECRET})),
        201,
    )
    .await
    .unwrap();
    let policy_path = format!("/v1/sandboxes/{id}/egress-policy");
    let rules = |api: &str, other: &str| {
        json!({"header_rules": [
            {"host": API_HOST, "headers": {"X-Api-Key": api}},
            {"host": OTHER_HOST, "headers": {"X-Api-Key": other}},
        ]})
    };
    t.expect_error(
        t.req(Method::PUT, &policy_path)
            .json(&rules("k", "${secrets.api-token}")),
        400,
        "invalid_request",
    )
    .await
    .unwrap();
    let set = t
        .expect(
            t.req(Method::PUT, &policy_path)
                .json(&rules("api ${secrets.api-token}", "${secrets.rule-token}")),
            200,
        )
        .await
        .unwrap();
    assert_eq!(set["header_rules"][0]["host"], API_HOST, "{set}");
    assert!(!set.to_string().contains(SECRET) && !set.to_string().contains(RULE_SECRET));
    std::fs::write(&log, "").unwrap();
    let keyed =
        |host: &str, addr: Ipv4Addr, flags: &str| curl_with(host, addr, flags, "X-Api-Key: guest");
    // Both hosts are brokered now (the guest trusts the host CA's leaf for each).
    assert_eq!(ok(&t, id, &keyed(API_HOST, api, "")).await, "seen");
    assert_eq!(ok(&t, id, &keyed(OTHER_HOST, other, "")).await, "seen");
    let seen = std::fs::read_to_string(&log).unwrap();
    assert!(
        seen.contains(&format!("{API_HOST}  key=api {SECRET}\n")),
        "{seen}"
    );
    assert!(
        seen.contains(&format!("{OTHER_HOST}  key={RULE_SECRET}\n")),
        "{seen}"
    );
    assert!(!seen.contains("key=guest"), "{seen}");
    // The policy without rules: requests to the other host are spliced again, as the guest
    // sent them (its own certificate: -k).
    t.expect(t.req(Method::PUT, &policy_path).json(&json!({})), 200)
        .await
        .unwrap();
    assert_eq!(ok(&t, id, &keyed(OTHER_HOST, other, "-k")).await, "seen");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .ends_with(&format!("{OTHER_HOST}  key=guest\n"))
    );

    nothing_of_the_guest_holds_the_secret(&t, id, &placeholder).await;
    t.delete(id).await.unwrap();
    drop(servers);
}

/// Nothing of sandbox `id` holds [`SECRET`] or [`RULE_SECRET`]: its memory (a snapshot), its disk, console and
/// record; nor does the database. The snapshot does hold the placeholder (the search finds
/// what is there).
async fn nothing_of_the_guest_holds_the_secret(t: &TestServer, id: &str, placeholder: &str) {
    ok(t, id, "sync").await;
    let snap = t
        .expect(
            t.req(Method::POST, &format!("/v1/sandboxes/{id}/snapshots"))
                .json(&json!({})),
            201,
        )
        .await
        .unwrap();
    let data = t.data_dir();
    let snap_dir = data.join("snapshots").join(snap["id"].as_str().unwrap());
    assert!(snap_dir.is_dir(), "{snap}");
    for secret in [SECRET, RULE_SECRET] {
        assert_eq!(
            files_containing(&snap_dir, secret.as_bytes()),
            Vec::<String>::new()
        );
        assert_eq!(
            files_containing(&data.join("sandboxes").join(id), secret.as_bytes()),
            Vec::<String>::new()
        );
        assert!(!file_contains(&data.join("platinum.db"), secret.as_bytes()));
    }
    assert!(!files_containing(&snap_dir, placeholder.as_bytes()).is_empty());
}

/// Without any network: the sandbox's variable holds the placeholder, the guest trusts the
/// host's CA (and only its certificate reaches the guest), and nothing of the guest holds the
/// secret; a secret is not deleted while a sandbox holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sandbox_holds_the_placeholder_and_trusts_the_host_ca() {
    let t = TestServer::start().await.unwrap();
    let secret = t
        .expect(
            t.req(Method::POST, "/v1/secrets").json(&json!({
                "name": "api-token", "value": SECRET, "hosts": [API_HOST],
            })),
            201,
        )
        .await
        .unwrap();
    let placeholder = secret["placeholder"].as_str().unwrap().to_string();
    let sb = t
        .create(json!({"secrets": {"API_TOKEN": "api-token"}}))
        .await
        .unwrap();
    let id = sb["id"].as_str().unwrap();
    assert_eq!(ok(&t, id, "printenv API_TOKEN").await.trim(), placeholder);
    let ca = std::fs::read_to_string(t.data_dir().join("egress-ca.pem")).unwrap();
    // Once in the system bundle (its first line of base64 is as good as unique).
    let line = ca.lines().nth(1).unwrap();
    let count = format!("grep -cF '{line}' /etc/ssl/certs/ca-certificates.crt");
    assert_eq!(ok(&t, id, &count).await.trim(), "1");
    let extra = ok(&t, id, "cat \"$NODE_EXTRA_CA_CERTS\"").await;
    assert_eq!(extra.trim(), ca.trim());
    // Python's requests, pip and OpenSSL-based clients are pointed at the system bundle.
    assert_eq!(
        ok(&t, id, "echo $SSL_CERT_FILE $REQUESTS_CA_BUNDLE")
            .await
            .trim(),
        "/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt"
    );
    assert_eq!(
        ok(
            &t,
            id,
            "grep -rl 'PRIVATE KEY' /usr/local/share/ca-certificates/ || true"
        )
        .await,
        ""
    );
    let held = t
        .expect(
            t.req(Method::GET, &format!("/v1/sandboxes/{id}/secrets")),
            200,
        )
        .await
        .unwrap();
    assert_eq!(
        held["secrets"]["API_TOKEN"]["name"].as_str(),
        Some("api-token")
    );
    assert!(!held.to_string().contains(SECRET));
    nothing_of_the_guest_holds_the_secret(&t, id, &placeholder).await;
    t.expect_error(
        t.req(Method::DELETE, "/v1/secrets/api-token"),
        409,
        "conflict",
    )
    .await
    .unwrap();
    t.delete(id).await.unwrap();
    t.expect(t.req(Method::DELETE, "/v1/secrets/api-token"), 204)
        .await
        .unwrap();
}
