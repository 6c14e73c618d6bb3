//! The `platinum.*` parameters of the kernel command line (`/proc/cmdline`).
//!
//! | parameter | default | meaning |
//! |---|---|---|
//! | `platinum.root=` | `/dev/vda` | root block device; empty: stay in the initramfs |
//! | `platinum.rootfstype=` | `ext4` | its filesystem |
//! | `platinum.hostname=` | `platinum` | the VM's hostname |
//! | `platinum.debug=1` | off | debug logging |
//! | `platinum.ip=` | none | `ADDR/PREFIX` for the first ethernet interface (no network without it) |
//! | `platinum.gw=` | none | default gateway |
//! | `platinum.dns=` | none | comma-separated name servers for `/etc/resolv.conf` |
//! | `platinum.share=` | none | virtio-fs tag of the host share, mounted at `/mnt/dnah-share` |
//!
//! Anything else on the command line is the kernel's business and ignored here. Values may be
//! double-quoted, as the kernel allows.

/// The boot parameters the agent reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// Root block device; `None` to serve from the initramfs.
    pub root: Option<String>,
    /// Filesystem type of the root device.
    pub rootfstype: String,
    /// Hostname to set.
    pub hostname: String,
    /// Log at debug level.
    pub debug: bool,
    /// The host share's virtio-fs tag, if the VM has one.
    pub share: Option<String>,
    /// Network settings, when the host attached a network.
    pub net: Option<NetParams>,
}

/// Static network configuration from the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetParams {
    /// Interface address.
    pub addr: std::net::Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway.
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Name servers.
    pub dns: Vec<std::net::IpAddr>,
}

impl Default for BootParams {
    fn default() -> Self {
        Self {
            root: Some("/dev/vda".into()),
            rootfstype: "ext4".into(),
            hostname: "platinum".into(),
            debug: false,
            share: None,
            net: None,
        }
    }
}

/// Parses a kernel command line.
pub fn parse(cmdline: &str) -> BootParams {
    let mut params = BootParams::default();
    let (mut ip, mut gw, mut dns) = (None, None, Vec::new());
    for (key, value) in tokens(cmdline) {
        match (key, value) {
            ("platinum.root", Some(v)) => params.root = (!v.is_empty()).then(|| v.to_string()),
            ("platinum.rootfstype", Some(v)) if !v.is_empty() => params.rootfstype = v.to_string(),
            ("platinum.hostname", Some(v)) if !v.is_empty() => params.hostname = v.to_string(),
            ("platinum.debug", v) => {
                params.debug = matches!(v, None | Some("1" | "true" | "yes" | "on"))
            }
            ("platinum.ip", Some(v)) => {
                ip = v.split_once('/').and_then(|(a, p)| {
                    Some((a.parse().ok()?, p.parse::<u8>().ok().filter(|p| *p <= 32)?))
                })
            }
            ("platinum.gw", Some(v)) => gw = v.parse().ok(),
            ("platinum.share", Some(v)) if !v.is_empty() => params.share = Some(v.to_string()),
            ("platinum.dns", Some(v)) => {
                dns = v.split(',').filter_map(|d| d.parse().ok()).collect()
            }
            _ => {}
        }
    }
    params.net = ip.map(|(addr, prefix)| NetParams {
        addr,
        prefix,
        gateway: gw,
        dns,
    });
    params
}

/// Splits on whitespace outside double quotes into `key` / `key=value` pairs, quotes removed.
fn tokens(cmdline: &str) -> Vec<(&str, Option<&str>)> {
    let mut out = Vec::new();
    let mut start = None;
    let mut quoted = false;
    let bytes = cmdline.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied();
        match c {
            Some(b'"') => {
                quoted = !quoted;
                start.get_or_insert(i);
            }
            Some(c) if !c.is_ascii_whitespace() || quoted => {
                start.get_or_insert(i);
            }
            _ => {
                if let Some(s) = start.take() {
                    out.push(split_token(&cmdline[s..i]));
                }
            }
        }
    }
    out
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .unwrap_or(s)
}

fn split_token(token: &str) -> (&str, Option<&str>) {
    match token.split_once('=') {
        Some((key, value)) => (unquote(key), Some(unquote(value))),
        None => (unquote(token), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_when_nothing_is_given() {
        assert_eq!(
            parse("console=ttyS0 quiet root=/dev/sda rw\n"),
            BootParams::default()
        );
    }

    #[test]
    fn reads_platinum_parameters_and_ignores_the_rest() {
        let p = parse(
            "console=ttyS0 platinum.root=/dev/vdb platinum.rootfstype=xfs platinum.hostname=\"sbx 42\" \
             platinum.debug=1 platinum.unknown=x platinum.share=dnah-share init=/init\n",
        );
        assert_eq!(
            p,
            BootParams {
                root: Some("/dev/vdb".into()),
                rootfstype: "xfs".into(),
                hostname: "sbx 42".into(),
                debug: true,
                share: Some("dnah-share".into()),
                net: None,
            }
        );
    }

    #[test]
    fn reads_network_parameters() {
        let p = parse(
            "platinum.ip=10.42.0.7/16 platinum.gw=10.42.0.1 platinum.dns=10.255.255.53,1.1.1.1",
        );
        assert_eq!(
            p.net,
            Some(NetParams {
                addr: "10.42.0.7".parse().unwrap(),
                prefix: 16,
                gateway: Some("10.42.0.1".parse().unwrap()),
                dns: vec!["10.255.255.53".parse().unwrap(), "1.1.1.1".parse().unwrap()],
            })
        );
        assert_eq!(
            parse("platinum.ip=10.42.0.7/40").net,
            None,
            "bad prefix: no network"
        );
        assert_eq!(parse("platinum.ip=nonsense").net, None);
    }

    #[test]
    fn edge_cases() {
        assert_eq!(
            parse("platinum.root=").root,
            None,
            "empty root: stay in the initramfs"
        );
        assert!(parse("platinum.debug").debug);
        assert!(!parse("platinum.debug=0").debug);
        assert_eq!(parse("platinum.hostname=").hostname, "platinum");
        assert_eq!(
            parse("platinum.hostname=a platinum.hostname=b").hostname,
            "b",
            "the last one wins"
        );
        assert_eq!(parse("").root.as_deref(), Some("/dev/vda"));
    }
}
