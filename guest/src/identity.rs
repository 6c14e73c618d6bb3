//! `reidentify`: a VM restored from another sandbox's memory (a fork, a restored snapshot) takes
//! on its own identity: hostname, MAC and IPv4 address, and a reseeded random number generator
//! (copies of one memory image would otherwise produce the same "random" bytes).
//!
//! PID 1 only, like every request that changes the machine.

use crate::agent::{Agent, Mode};
use crate::init::cmdline::NetParams;
use crate::init::net;
use platinum_protocol::{GuestError, GuestErrorCode, Identity, MAX_IDENTITY_ENTROPY, NetIdentity};
use std::io::Write;
use std::os::fd::AsRawFd;
use tracing::info;

/// `RNDRESEEDCRNG` = `_IO('R', 0x07)`: reseed the kernel's CRNG from its input pool now.
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;

/// `reidentify`.
pub fn reidentify(agent: &Agent, identity: &Identity) -> Result<(), GuestError> {
    if agent.mode() == Mode::Serve {
        return Err(crate::system::not_pid1("reidentify"));
    }
    if identity.entropy.len() > MAX_IDENTITY_ENTROPY {
        return Err(GuestError::new(
            GuestErrorCode::InvalidArgument,
            format!("at most {MAX_IDENTITY_ENTROPY} entropy bytes"),
        ));
    }
    if !identity.entropy.is_empty() {
        reseed(&identity.entropy).map_err(|e| GuestError::from_io(&e, "reseed the RNG"))?;
    }
    nix::unistd::sethostname(&identity.hostname)
        .map_err(|e| GuestError::from_io(&e.into(), "set the hostname"))?;
    if let Some(n) = &identity.net {
        let mac = parse_mac(&n.mac)?;
        let iface = net::reconfigure(mac, &params(n))
            .map_err(|e| GuestError::from_io(&e, "reconfigure the network interface"))?;
        info!(hostname = %identity.hostname, %iface, addr = %n.addr, mac = %n.mac, "took on a new identity");
    } else {
        info!(hostname = %identity.hostname, "took on a new identity");
    }
    Ok(())
}

fn params(n: &NetIdentity) -> NetParams {
    NetParams {
        addr: n.addr,
        prefix: n.prefix.min(32),
        gateway: n.gateway,
        dns: n.dns.clone(),
    }
}

/// Mixes `bytes` into the input pool (a write to `/dev/urandom`) and forces the CRNG to reseed
/// from it.
fn reseed(bytes: &[u8]) -> std::io::Result<()> {
    let mut dev = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    dev.write_all(bytes)?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    if unsafe { libc::ioctl(dev.as_raw_fd(), RNDRESEEDCRNG) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// `aa:bb:cc:dd:ee:ff` -> bytes.
fn parse_mac(text: &str) -> Result<[u8; 6], GuestError> {
    let bad = || GuestError::new(GuestErrorCode::InvalidArgument, format!("bad MAC {text:?}"));
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut out {
        let part = parts.next().ok_or_else(bad)?;
        if part.len() != 2 {
            return Err(bad());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("02:42:0a:2a:00:05").unwrap(),
            [2, 0x42, 0x0a, 0x2a, 0, 5]
        );
        for bad in [
            "",
            "02:42:0a:2a:00",
            "02:42:0a:2a:00:05:06",
            "2:42:0a:2a:00:05",
            "zz:42:0a:2a:00:05",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }
}
