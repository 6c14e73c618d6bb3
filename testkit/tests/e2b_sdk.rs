//! The official E2B SDKs, unmodified, against a real server with real microVMs: runs
//! `evals/e2b/run.sh` (every flow, Python and JS) with the SDKs pointed at a test server through
//! `E2B_API_URL` / `E2B_SANDBOX_URL` only. The runner installs the pinned SDKs on first use.
//! The SDKs get an `e2b_`-form key (the only form they accept), which the runner creates through
//! `POST /v1/keys` with the server's own key and revokes when it ends. The server runs as shipped
//! (template ready snapshots on) with a warm pool of the default template, so the flows run on
//! claimed and restored sandboxes alike, on a sandbox network (template builds install apt and
//! pip packages from the internet).

use platinum_testkit::{TestServer, test_engine_config, test_network};
use std::path::PathBuf;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn official_sdks_run_every_flow() {
    // A sandbox network, so template builds reach Debian's mirror and PyPI (apt and pip steps).
    let net = test_network();
    let t = TestServer::start_with(|c| {
        c.engine.template_snapshots = true;
        c.network = Some(net.clone());
    })
    .await
    .unwrap();
    t.expect(
        t.req(reqwest::Method::POST, "/v1/pools")
            .json(&serde_json::json!({ "size": 2 })),
        201,
    )
    .await
    .unwrap();
    let runner = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../evals/e2b/run.sh");
    let started = Instant::now();
    let status = tokio::process::Command::new(&runner)
        .env("E2B_API_URL", &t.url)
        .env("E2B_SANDBOX_URL", &t.url)
        .env_remove("E2B_API_KEY")
        .env("PLATINUM_API_KEY", &t.key)
        .env("E2B_FLOW_ONLINE", "1")
        .env(
            "E2B_FLOW_UPLOAD_LIMIT",
            test_engine_config().max_upload_bytes.to_string(),
        )
        .kill_on_drop(true)
        .status()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", runner.display()));
    eprintln!("E2B SDK flows took {:.0?}", started.elapsed());
    assert!(
        status.success(),
        "E2B SDK conformance failed ({status}); see the output above"
    );
    // The flows ran with a key made for them in E2B's form, revoked again at the end.
    let all = t
        .expect(
            t.req(reqwest::Method::GET, "/v1/keys")
                .query(&[("include_revoked", true)]),
            200,
        )
        .await
        .unwrap();
    let made: Vec<_> = all["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["name"] == "e2b-conformance")
        .collect();
    assert!(!made.is_empty(), "no e2b-form key was created: {all}");
    assert!(
        made.iter()
            .all(|k| k["format"] == "e2b" && k["revoked"] == true && k["last_used_at"].is_string()),
        "{all}"
    );
}
