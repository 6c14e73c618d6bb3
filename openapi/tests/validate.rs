//! The checked-in OpenAPI document validates with two independent tools: `openapi-spec-validator`
//! (PyPI) and `@redocly/cli lint` (npm, `recommended` rules, `openapi/redocly.yaml`), with no
//! errors and no warnings. Both are pinned and installed under ~/.cache/platinum/sdk/mcp by
//! `evals/mcp/setup.sh` ([`platinum_testkit::agent_clients`] runs it).
//!
//! A control case makes sure the validator is really checking: the same document with one
//! response description removed (what utoipa emits for a response declared without one) must
//! be rejected.

use platinum_testkit::{agent_clients, repo_root};
use std::path::Path;
use std::process::Command;

fn spec_validator(file: &Path) -> std::process::Output {
    Command::new(agent_clients().join("py/bin/openapi-spec-validator"))
        .arg(file)
        .output()
        .unwrap()
}

#[test]
fn openapi_document_validates_with_openapi_spec_validator_and_redocly() {
    let file = repo_root().join("openapi/openapi.json");
    let out = spec_validator(&file);
    assert!(
        out.status.success(),
        "openapi-spec-validator rejects {}:\n{}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let bin = agent_clients().join("npm/node_modules/.bin");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(bin.join("redocly"))
        .args(["lint", "--format=json", "--config"])
        .arg(repo_root().join("openapi/redocly.yaml"))
        .arg(&file)
        .env("PATH", path)
        .env("REDOCLY_TELEMETRY", "off")
        .env("REDOCLY_SUPPRESS_UPDATE_NOTICE", "true")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "redocly printed no JSON report ({e}):\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert_eq!(
        (
            report["totals"]["errors"].as_u64(),
            report["totals"]["warnings"].as_u64()
        ),
        (Some(0), Some(0)),
        "redocly lint problems: {:#}",
        report["problems"]
    );
    assert!(out.status.success());
}

#[test]
fn the_validator_rejects_a_response_without_description() {
    let mut doc = serde_json::to_value(platinum_openapi::document()).unwrap();
    let responses = &mut doc["paths"]["/v1/sandboxes"]["get"]["responses"]["200"];
    responses.as_object_mut().unwrap().remove("description");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("broken.json");
    std::fs::write(&file, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = spec_validator(&file);
    assert!(
        !out.status.success(),
        "a response without description must not validate"
    );
}
