//! The official E2B SDKs, unmodified, against a real server with real microVMs: runs
//! `evals/e2b/run.sh` (every flow, Python and JS) with the SDKs pointed at a test server through
//! `E2B_API_URL` / `E2B_SANDBOX_URL` only. The runner installs the pinned SDKs on first use.

use platinum_testkit::{TestServer, test_engine_config};
use std::path::PathBuf;
use std::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn official_sdks_run_every_flow() {
    let t = TestServer::start().await.unwrap();
    let runner = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../evals/e2b/run.sh");
    let started = Instant::now();
    let status = tokio::process::Command::new(&runner)
        .env("E2B_API_URL", &t.url)
        .env("E2B_SANDBOX_URL", &t.url)
        .env("E2B_API_KEY", &t.key)
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
}
