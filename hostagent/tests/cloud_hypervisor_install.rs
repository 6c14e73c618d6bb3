//! Review of `scripts/install-cloud-hypervisor.sh`, the real-host installer of the Cloud
//! Hypervisor binary (it downloads, so it cannot run for real here):
//! - the pinned version is v53 or later and matches what the driver requires;
//! - the pinned checksum is a SHA-256 (64 lowercase hex digits), and the download URL is the
//!   upstream release asset for exactly that version, over https;
//! - the script checks the download with `sha256sum --check` before it installs anything;
//! - run with a stand-in `curl` that delivers the wrong bytes, it fails and installs nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use platinum_hostagent::vmm::cloud_hypervisor::driver::{MIN_MAJOR_VERSION, parse_version};

fn script_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-cloud-hypervisor.sh")
}

fn script() -> String {
    std::fs::read_to_string(script_path()).expect("scripts/install-cloud-hypervisor.sh")
}

/// The value of a `NAME="value"` line.
fn assignment(text: &str, name: &str) -> String {
    let prefix = format!("{name}=\"");
    let line = text
        .lines()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("the script assigns no {name}"));
    line[prefix.len()..]
        .strip_suffix('"')
        .unwrap_or_else(|| panic!("{name} is not a plain quoted value: {line}"))
        .to_string()
}

#[test]
fn the_pin_is_v53_or_later_with_a_sha256() {
    let text = script();
    let version = assignment(&text, "CH_VERSION");
    let parsed = parse_version(&format!("cloud-hypervisor {version}"))
        .unwrap_or_else(|| panic!("CH_VERSION {version:?} is not vN.M"));
    assert!(
        parsed.major >= MIN_MAJOR_VERSION,
        "pinned {version} is older than the driver's minimum v{MIN_MAJOR_VERSION}"
    );
    let checksum = assignment(&text, "CH_SHA256");
    assert_eq!(checksum.len(), 64, "{checksum}");
    assert!(
        checksum
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
        "CH_SHA256 must be lowercase hex: {checksum}"
    );
    let url = assignment(&text, "CH_URL");
    assert_eq!(
        url,
        "https://github.com/cloud-hypervisor/cloud-hypervisor/releases/download/${CH_VERSION}/cloud-hypervisor-static"
    );
}

#[test]
fn the_download_is_verified_before_it_is_installed() {
    let text = script();
    assert!(text.starts_with("#!/usr/bin/env bash\n"));
    assert!(text.contains("\nset -euo pipefail\n"));
    let position = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("the script lacks {needle:?}"))
    };
    let download = position("curl --fail");
    let check = position("| sha256sum --check --strict -");
    let install = position("install -m 0755");
    assert!(
        download < check && check < install,
        "download, check, install must come in that order"
    );
    assert!(text.contains("echo \"${CH_SHA256}  $tmp/cloud-hypervisor\""));
    let syntax = Command::new("bash")
        .arg("-n")
        .arg(script_path())
        .status()
        .expect("bash");
    assert!(syntax.success(), "bash -n failed");
}

#[test]
#[cfg_attr(
    not(target_arch = "x86_64"),
    ignore = "the installer only runs on x86_64"
)]
fn a_corrupted_download_installs_nothing() {
    assert_eq!(
        std::env::consts::ARCH,
        "x86_64",
        "the installer only runs on x86_64"
    );
    let work = tempfile::tempdir().expect("tempdir");
    let bin = work.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    // A `curl` that writes the wrong bytes to its --output file.
    let fake_curl = "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --output ]; then printf 'not the release' > \"$2\"; fi\n  shift\ndone\n";
    let writer = Command::new("/bin/sh")
        .args([
            "-c",
            "printf '%s' \"$1\" > \"$2\" && chmod 755 \"$2\"",
            "sh",
            fake_curl,
        ])
        .arg(bin.join("curl"))
        .status()
        .expect("sh");
    assert!(writer.success());
    let dest = work.path().join("dest");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let output = Command::new("bash")
        .arg(script_path())
        .arg(&dest)
        .env("PATH", path)
        .output()
        .expect("run the installer");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("FAILED") || stderr.contains("FAILED"),
        "{stdout}{stderr}"
    );
    assert!(
        !dest.join("cloud-hypervisor").exists(),
        "a binary was installed"
    );
}
