//! Finding the static guest agent binary (`platinum-guest`) that images pack as `/init`.
//!
//! Search order: an explicit path, `$PLATINUM_GUEST_AGENT`, the static build's place in the Cargo
//! target directory this executable runs from (`<target>/x86_64-unknown-linux-gnu/release/`, as
//! `guest/build-static.sh` leaves it), then `platinum-guest` next to this executable (installs).

use std::path::{Path, PathBuf};

/// Environment variable naming the agent binary.
pub const AGENT_ENV: &str = "PLATINUM_GUEST_AGENT";

/// Where the agent binary is, or a message saying how to build it.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf, String> {
    let mut tried = Vec::new();
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Some(p) = explicit {
        candidates.push(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os(AGENT_ENV) {
        candidates.push(PathBuf::from(p));
    }
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        // In a Cargo target dir, `target/{debug,release}/platinum-guest` is the dynamic host build;
        // the static one is under the explicit target triple, so look there first:
        // target/{debug,release}/platinum and target/debug/deps/<test binary>.
        for target in [dir.parent(), dir.parent().and_then(Path::parent)]
            .into_iter()
            .flatten()
        {
            candidates.push(target.join("x86_64-unknown-linux-gnu/release/platinum-guest"));
        }
        candidates.push(dir.join("platinum-guest"));
    }
    for c in candidates {
        if c.is_file() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(format!(
        "the static guest agent (platinum-guest) was not found (tried: {}). Build it with `guest/build-static.sh` \
         or set {AGENT_ENV}",
        tried.join(", ")
    ))
}
