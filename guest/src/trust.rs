//! The host's egress CA in the guest's trust store, so HTTPS through the host's secret broker
//! verifies: written as `/usr/local/share/ca-certificates/platinum-egress.crt` and appended to
//! each system bundle present (Debian/Ubuntu, Fedora/RHEL, Alpine/OpenSSL) that lacks it. Runs
//! at every `hello` (boot, reconnect, restore of a snapshot taken before), idempotent.
//!
//! Tools with roots of their own are pointed at the system bundle through the session's
//! environment ([`TRUST_VARIABLES`]: Python's `requests` and pip, which read certifi's bundle
//! otherwise, `httpx` and anything else honouring OpenSSL's `SSL_CERT_FILE`), unless the
//! sandbox's environment sets them itself.

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
/// Variables naming a CA bundle that the session sets to the system bundle holding the CA.
pub const TRUST_VARIABLES: [&str; 2] = ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"];

/// Adds `pem` (certificates only) to the trust store under `root`; the first system bundle
/// that now holds it (its path from the guest's `/`), if any.
pub fn install(root: &Path, pem: &str) -> std::io::Result<Option<String>> {
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
    let mut holding = None;
    for bundle in BUNDLES {
        let path = root.join(bundle);
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        holding.get_or_insert_with(|| format!("/{bundle}"));
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
    Ok(holding)
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
        let holding = format!("/{}", BUNDLES[0]);
        assert_eq!(install(root.path(), PEM).unwrap(), Some(holding.clone()));
        assert_eq!(
            install(root.path(), &format!("{PEM}\n")).unwrap(),
            Some(holding)
        );
        let text = std::fs::read_to_string(&bundle).unwrap();
        assert_eq!(text.matches(PEM).count(), 1);
        assert!(text.starts_with("-----BEGIN CERTIFICATE-----\nOTHER"));
        assert!(!root.path().join(BUNDLES[1]).exists());
        let cert = std::fs::read_to_string(root.path().join(CERT_FILE)).unwrap();
        assert_eq!(cert.trim(), PEM);
    }

    #[test]
    fn without_a_system_bundle_only_the_certificate_is_written() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(install(root.path(), PEM).unwrap(), None);
        assert!(root.path().join(CERT_FILE).is_file());
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
