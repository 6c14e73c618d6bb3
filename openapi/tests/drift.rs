//! The checked-in documents are what the code generates.
//!
//! `openapi/openapi.json`, `llms.txt` and `llms-full.txt` are rendered from the code; each test
//! fails when the file differs and says how to regenerate it (`UPDATE_OPENAPI=1` /
//! `UPDATE_LLMS=1 cargo test -p platinum-openapi --test drift` rewrites the files). The vendored
//! Swagger UI files must be the release they claim to be.

use platinum_testkit::repo_root;
use sha2::{Digest, Sha256};
use std::path::Path;

/// Compares `path` with `generated`, or rewrites it when `update_var` is set.
fn check(path: &Path, generated: &str, update_var: &str) {
    if std::env::var_os(update_var).is_some() {
        std::fs::write(path, generated).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if current != generated {
        let line = current
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or(
                current.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "{} is not what the code generates (first difference at line {line}). Regenerate it with \
             `{update_var}=1 cargo test -p platinum-openapi --test drift` and review the diff.",
            path.display()
        );
    }
}

#[test]
fn checked_in_openapi_document_matches_the_code() {
    check(
        &repo_root().join("openapi/openapi.json"),
        &platinum_openapi::document_json(),
        "UPDATE_OPENAPI",
    );
}

#[test]
fn checked_in_llms_txt_matches_the_code() {
    check(
        &repo_root().join("llms.txt"),
        &platinum_openapi::llms::llms_txt(),
        "UPDATE_LLMS",
    );
    check(
        &repo_root().join("llms-full.txt"),
        &platinum_openapi::llms::llms_full_txt(),
        "UPDATE_LLMS",
    );
}

#[test]
fn vendored_swagger_ui_is_the_pinned_release() {
    // swagger-ui-dist 5.35.0 from npm (see openapi/assets/swagger-ui/README.md).
    let expected = [
        (
            "LICENSE",
            "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30",
        ),
        (
            "NOTICE",
            "0d20d1adef18aee3f40dd258172155521ce702ac445cb5f7b7d60ed32dad2fb2",
        ),
        (
            "swagger-ui-bundle.js",
            "e6a898692f2d768e807c3ba4626068a69a2c5dd960dd6c76f3e4d3a3de180af2",
        ),
        (
            "swagger-ui-bundle.js.LICENSE.txt",
            "37eb6e7e59aed57b2c1acf076574b818ea07b74265717e0bd67b59e0baf9abbb",
        ),
        (
            "swagger-ui.css",
            "5ed08757e53da3e026d6cbecc61fe5d43585c9560b302d534ad56692519a273d",
        ),
    ];
    let dir = repo_root().join("openapi/assets/swagger-ui");
    for (name, sum) in expected {
        let bytes = std::fs::read(dir.join(name)).unwrap();
        assert_eq!(
            hex::encode(Sha256::digest(&bytes)),
            sum,
            "{name} was modified"
        );
    }
}
