//! Links: the sandbox bridge and per-VM TAP devices, with `ip` and `bridge` from iproute2.

use std::net::Ipv4Addr;

use crate::error::Result;
use crate::tool::Tool;

fn ip() -> Result<Tool> {
    Ok(Tool::new("configuring links", "ip")?.network())
}

async fn exists(name: &str) -> bool {
    match ip() {
        Ok(t) => t.args(["link", "show", "dev", name]).output().await.is_ok(),
        Err(_) => false,
    }
}

/// Creates the bridge with the gateway address if missing, and brings it up.
pub async fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    if !exists(name).await {
        ip()?
            .args(["link", "add", "name", name, "type", "bridge"])
            .output()
            .await?;
    }
    let addr = format!("{gateway}/{prefix}");
    let current = ip()?
        .args(["-4", "-o", "addr", "show", "dev", name])
        .output()
        .await?;
    if !current.contains(&format!(" {addr} ")) {
        ip()?
            .args(["addr", "replace", &addr, "dev", name])
            .output()
            .await?;
    }
    ip()?
        .args(["link", "set", "dev", name, "up"])
        .output()
        .await
        .map(drop)
}

/// Creates a TAP (replacing a stale one), attaches it to the bridge as an isolated port, and
/// brings it up.
pub async fn create_tap(tap: &str, bridge: &str) -> Result<()> {
    if exists(tap).await {
        delete_tap(tap).await?;
    }
    ip()?
        .args(["tuntap", "add", "dev", tap, "mode", "tap", "vnet_hdr"])
        .output()
        .await?;
    ip()?
        .args(["link", "set", "dev", tap, "master", bridge])
        .output()
        .await?;
    Tool::new("isolating a bridge port", "bridge")?
        .network()
        .args(["link", "set", "dev", tap, "isolated", "on"])
        .output()
        .await?;
    ip()?
        .args(["link", "set", "dev", tap, "up"])
        .output()
        .await
        .map(drop)
}

/// Deletes a TAP if it exists.
pub async fn delete_tap(tap: &str) -> Result<()> {
    delete_link(tap).await
}

/// Deletes a link (TAP or bridge) if it exists.
pub async fn delete_link(name: &str) -> Result<()> {
    if exists(name).await {
        ip()?.args(["link", "delete", "dev", name]).output().await?;
    }
    Ok(())
}
