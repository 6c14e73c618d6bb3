//! The host's egress CA in the guest's trust store, so HTTPS through the host's secret broker
//! verifies: written as `/usr/local/share/ca-certificates/platinum-egress.crt` and appended to
//! each system bundle present (Debian/Ubuntu, Fedora/RHEL, Alpine/OpenSSL) that lacks it. Runs
//! at every `hello` (boot, reconnect, restore of a snapshot taken before), idempotent.

use std::io::Write;
use std::path::Path;

/// Where the certificate itself is written, below the root.
pub const CERT_FILE: &str = platinum_protocol::EGRESS_CA_FILE;
/// System bundles the certificate is appended to, when present.
const BUNDLES: [&str; 3] = [
    "etc/ssl/certs/ca-certificates.crt",
    "etc/pki/tls/certs/ca-bundle.crt",
    "etc/ssl/cert.pem",
];
/// Bytes of PEM accepted at most.
const MAX_PEM: usize = 64 * 1024;

/// Adds `pem` (certificates only) to the trust store under `root`.
pub fn install(root: &Path, pem: &str) -> std::io::Result<()> {
    let pem = pem.trim();
    let invalid =
        |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    if pem.len() > MAX_PEM {
        return Err(invalid("the CA PEM is too large"));
    }
    if !pem.starts_with("-----BEGIN CERTIFICATE-----")
        || !pem.ends_with("-----END CERTIFICATE-----")
        || pem.contains("PRIVATE KEY")
    {
        return Err(invalid(
            "the CA PEM holds something other than certificates",
        ));
    }
    let cert = root.join(CERT_FILE);
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::read_to_string(&cert)
        .ok()
        .as_deref()
        .map(str::trim)
        != Some(pem)
    {
        std::fs::write(&cert, format!("{pem}\n"))?;
    }
    for bundle in BUNDLES {
        let path = root.join(bundle);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        if text.contains(pem) {
            continue;
        }
        let mut f = std::fs::OpenOptions::new().append(true).open(&path)?;
        let sep = if text.is_empty() || text.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        f.write_all(format!("{sep}{pem}\n").as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";

    #[test]
    fn the_ca_is_added_once_to_each_bundle_present() {
        let root = tempfile::tempdir().unwrap();
        let bundle = root.path().join(BUNDLES[0]);
        std::fs::create_dir_all(bundle.parent().unwrap()).unwrap();
        std::fs::write(
            &bundle,
            "-----BEGIN CERTIFICATE-----\nOTHER\n-----END CERTIFICATE-----",
        )
        .unwrap();
        install(root.path(), PEM).unwrap();
        install(root.path(), &format!("{PEM}\n")).unwrap();
        let text = std::fs::read_to_string(&bundle).unwrap();
        assert_eq!(text.matches(PEM).count(), 1);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\nOTHER"));
        assert!(!root.path().join(BUNDLES[1]).exists());
        let cert = std::fs::read_to_string(root.path().join(CERT_FILE)).unwrap();
        assert_eq!(cert.trim(), PEM);
    }

    #[test]
    fn anything_but_certificates_is_refused() {
        let root = tempfile::tempdir().unwrap();
        for bad in [
            "hello",
            "-----BEGIN PRIVATE KEY-----\nX\n-----END PRIVATE KEY-----",
            &format!("{PEM}\n-----BEGIN PRIVATE KEY-----\nX\n-----END PRIVATE KEY-----\n{PEM}"),
        ] {
            assert!(install(root.path(), bad).is_err());
        }
        assert!(!root.path().join(CERT_FILE).exists());
    }
}
