//! This host's CA for brokered TLS: made once (ECDSA P-256), its key in `<data>/egress-ca.key`
//! (0600, written atomically, never sent anywhere) and its certificate in `<data>/egress-ca.pem`,
//! which every sandbox trusts. It signs a leaf certificate per host name the broker answers
//! for, kept in memory (bounded) and re-minted well before it expires.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::{Error, IoContext, Result};

/// The CA key's file in the data directory.
pub const KEY_FILE: &str = "egress-ca.key";
/// The CA certificate's file in the data directory.
pub const CERT_FILE: &str = "egress-ca.pem";
/// Leaf certificates kept at most (the cache is emptied when full).
const MAX_LEAVES: usize = 1024;
/// A leaf is minted again after this long (it is valid for 90 days).
const LEAF_REFRESH: Duration = Duration::from_secs(7 * 24 * 3600);

/// The host CA.
pub struct HostCa {
    cert_pem: String,
    cert_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaves: Mutex<HashMap<String, (Instant, Arc<ServerConfig>)>>,
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_err)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Platinum egress broker CA");
    dn.push(DnType::OrganizationName, "Platinum");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(params)
}

fn tls_err(e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("egress CA: {e}"))
}

/// The crypto provider the broker's TLS uses on both sides.
pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl HostCa {
    /// Reads the CA from `dir`, making it (key 0600, certificate beside it) when there is none.
    pub fn load_or_create(dir: &Path) -> Result<HostCa> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let params = ca_params()?;
        let key = match std::fs::read_to_string(&key_path) {
            Ok(pem) => KeyPair::from_pem(&pem).map_err(tls_err)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = KeyPair::generate().map_err(tls_err)?;
                crate::private_file::write(&key_path, key.serialize_pem().as_bytes())
                    .ctx(|| format!("writing {}", key_path.display()))?;
                let _ = std::fs::remove_file(&cert_path);
                tracing::info!(path = %key_path.display(), "made this host's egress CA");
                key
            }
            Err(e) => return Err(e).ctx(|| format!("reading {}", key_path.display())),
        };
        let cert_pem = match std::fs::read_to_string(&cert_path) {
            Ok(pem) if pem.contains("BEGIN CERTIFICATE") => pem,
            _ => {
                let pem = params.self_signed(&key).map_err(tls_err)?.pem();
                crate::private_file::write(&cert_path, pem.as_bytes())
                    .ctx(|| format!("writing {}", cert_path.display()))?;
                pem
            }
        };
        Self::from_parts(cert_pem, key, params)
    }

    /// A CA that exists in memory only (tests).
    pub fn ephemeral() -> Result<HostCa> {
        let params = ca_params()?;
        let key = KeyPair::generate().map_err(tls_err)?;
        let pem = params.self_signed(&key).map_err(tls_err)?.pem();
        Self::from_parts(pem, key, params)
    }

    fn from_parts(cert_pem: String, key: KeyPair, params: CertificateParams) -> Result<HostCa> {
        let cert_der = pem_certificates(&cert_pem)?
            .into_iter()
            .next()
            .ok_or_else(|| tls_err("no certificate in the CA file"))?;
        Ok(HostCa {
            cert_pem,
            cert_der,
            issuer: Issuer::new(params, key),
            leaves: Mutex::new(HashMap::new()),
        })
    }

    /// The CA certificate (PEM): what sandboxes trust.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA certificate (DER).
    pub fn certificate_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// A TLS server configuration presenting a leaf certificate for `name` (HTTP/1.1 by ALPN).
    pub fn server_config(&self, name: &str) -> Result<Arc<ServerConfig>> {
        let name = name.to_ascii_lowercase();
        {
            let leaves = self.leaves.lock().expect("leaf cache");
            if let Some((made, config)) = leaves.get(&name)
                && made.elapsed() < LEAF_REFRESH
            {
                return Ok(config.clone());
            }
        }
        let config = Arc::new(self.mint(&name)?);
        let mut leaves = self.leaves.lock().expect("leaf cache");
        if leaves.len() >= MAX_LEAVES {
            leaves.clear();
        }
        leaves.insert(name, (Instant::now(), config.clone()));
        Ok(config)
    }

    fn mint(&self, name: &str) -> Result<ServerConfig> {
        let mut params = CertificateParams::new(vec![name.to_string()]).map_err(tls_err)?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::NoCa;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(90);
        let key = KeyPair::generate().map_err(tls_err)?;
        let leaf = params.signed_by(&key, &self.issuer).map_err(tls_err)?;
        let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_err)?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), self.cert_der.clone()], key_der)
            .map_err(tls_err)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(config)
    }
}

/// The certificates in a PEM text.
pub fn pem_certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(tls_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_ca_is_made_once_with_a_private_key_and_signs_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let ca = HostCa::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = HostCa::load_or_create(dir.path()).unwrap();
        assert_eq!(again.certificate_pem(), ca.certificate_pem());
        assert!(!ca.certificate_pem().contains("PRIVATE KEY"));
        let leaf = ca.server_config("api.example.com").unwrap();
        assert!(Arc::ptr_eq(
            &leaf,
            &ca.server_config("API.example.com").unwrap()
        ));
    }
}
