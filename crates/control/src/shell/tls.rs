//! The control plane's own PKI: a CA made on first start, and the server certificate it signs.
//!
//! The CA (ECDSA P-256) lives in the data folder and is the root every client trusts:
//! `ca.pem` is public and handed to users and agents, `ca-key.pem` never leaves the folder
//! (mode 0600). The server certificate is issued afresh at every start, for this host's names
//! and any the operator adds, so a name added later needs only a restart.

use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls::server::ProducesTickets;
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};
use time::{Duration, OffsetDateTime};

use super::files::write_atomic;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}; if the CA is damaged, restore it from a backup (agents trust it)")]
    Invalid { path: String, message: String },
    #[error("cannot issue a certificate: {0}")]
    Issue(#[from] rcgen::Error),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// The CA and the server's certificate chain and key.
pub struct Pki {
    pub ca_pem: String,
    /// SHA-256 of the CA certificate's DER, hex: what a client can pin on first contact.
    pub ca_fingerprint: String,
    ca_der: CertificateDer<'static>,
    ca_key: KeyPair,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: PrivateKeyDer<'static>,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

/// Who an agent's client certificate says it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AgentIdentity {
    pub site: String,
    pub host: String,
    /// The certificate's serial number ([`serial_hex`]): which of the host's certificates
    /// this is, since a renewal replaces the one before.
    pub serial: String,
}

/// A certificate serial number as hex, without leading zero bytes (DER may drop them), so the
/// serial issued and the one read back from the certificate compare equal.
pub fn serial_hex(bytes: &[u8]) -> String {
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(bytes.len().saturating_sub(1));
    hex::encode(&bytes[first..])
}

impl AgentIdentity {
    /// The identity is a URI in the certificate's subject alternative names; the control plane
    /// chooses it at enrollment and ignores whatever the request asked for.
    fn uri(&self) -> String {
        atoll_api::site::identity_uri(&self.site, &self.host)
    }

    fn from_uri(uri: &str, serial: &str) -> Option<AgentIdentity> {
        let (site, host) = atoll_api::site::parse_identity_uri(uri)?;
        Some(AgentIdentity {
            site: site.to_owned(),
            host: host.to_owned(),
            serial: serial.to_owned(),
        })
    }

    /// Reads the identity from a client certificate the TLS layer already verified against
    /// the CA.
    pub fn from_certificate(der: &[u8]) -> Option<AgentIdentity> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let serial = serial_hex(cert.raw_serial());
        let san = cert.subject_alternative_name().ok()??;
        san.value.general_names.iter().find_map(|name| match name {
            x509_parser::extensions::GeneralName::URI(uri) => AgentIdentity::from_uri(uri, &serial),
            _ => None,
        })
    }
}

/// A certificate issued to an agent.
#[derive(Debug, Clone)]
pub struct Issued {
    pub pem: String,
    /// Serial number, hex.
    pub serial: String,
}

impl Pki {
    /// Loads the CA from `dir`, creating it on first start, and issues a server certificate for
    /// `names` (DNS names or IP addresses).
    pub fn load_or_create(dir: &Path, names: &[String]) -> Result<Pki, PkiError> {
        let ca_path = dir.join("ca.pem");
        let key_path = dir.join("ca-key.pem");
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| PkiError::Io { path, source }
        };
        if !ca_path.exists() {
            let key = KeyPair::generate()?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "atoll control plane CA");
            params.distinguished_name = dn;
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(3650);
            let cert = params.self_signed(&key)?;
            write_atomic(&key_path, key.serialize_pem().as_bytes(), true).map_err(io(&key_path))?;
            write_atomic(&ca_path, cert.pem().as_bytes(), false).map_err(io(&ca_path))?;
        }
        let ca_pem = std::fs::read_to_string(&ca_path).map_err(io(&ca_path))?;
        let key_pem = std::fs::read_to_string(&key_path).map_err(io(&key_path))?;
        let invalid = |path: &Path, message: String| PkiError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let ca_key = KeyPair::from_pem(&key_pem).map_err(|e| invalid(&key_path, e.to_string()))?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
            .map_err(|e| invalid(&ca_path, e.to_string()))?;
        let issuer = Issuer::from_ca_cert_der(&ca_der, &ca_key)
            .map_err(|e| invalid(&ca_path, e.to_string()))?;

        let server_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "atoll control plane");
        params.distinguished_name = dn;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::hours(1);
        params.not_after = now + Duration::days(365);
        let server_cert = params.signed_by(&server_key, &issuer)?;

        let ca_der = ca_der.into_owned();
        Ok(Pki {
            ca_fingerprint: hex::encode(Sha256::digest(ca_der.as_ref())),
            ca_pem,
            server_chain: vec![server_cert.der().clone(), ca_der.clone()],
            ca_der,
            ca_key,
            server_key: PrivateKeyDer::try_from(server_key.serialize_der()).map_err(|e| {
                PkiError::Invalid {
                    path: "server key".into(),
                    message: e.to_owned(),
                }
            })?,
        })
    }

    /// Signs an agent's certificate request for `identity`, valid until `not_after`. Only the
    /// request's public key is used: names, usages and lifetime are the control plane's choice.
    pub fn issue_agent_certificate(
        &self,
        csr_pem: &str,
        identity: &AgentIdentity,
        not_after: OffsetDateTime,
    ) -> Result<Issued, PkiError> {
        let csr = rcgen::CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, identity.host.as_str());
        dn.push(DnType::OrganizationalUnitName, identity.site.as_str());
        params.distinguished_name = dn;
        let uri = identity.uri().try_into()?;
        params.subject_alt_names = vec![rcgen::SanType::URI(uri)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.not_before = OffsetDateTime::now_utc() - Duration::minutes(5);
        params.not_after = not_after;
        let mut serial = [0u8; 16];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut serial);
        serial[0] &= 0x7f;
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let issuer = Issuer::from_ca_cert_der(&self.ca_der, &self.ca_key)?;
        let cert = params.signed_by(&csr.public_key, &issuer)?;
        Ok(Issued {
            pem: cert.pem(),
            serial: serial_hex(&serial),
        })
    }

    /// The server's TLS settings. Client certificates are optional at this layer (users come
    /// with tokens, new hosts with join tokens); when one is presented it must chain to the CA,
    /// and the agent routes require it. Session tickets are made and opened by `ticketer`.
    pub fn server_config(
        &self,
        ticketer: Arc<dyn ProducesTickets>,
    ) -> Result<Arc<ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Invalid {
            path: "ca.pem".into(),
            message: e.to_string(),
        })?;
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.server_chain.clone(), self.server_key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Agents reconnecting (after a restart of either side, or for a report once their idle
        // connection closed) resume their session with a ticket instead of a full handshake
        // with certificate checks. Tickets are stateless, so ten thousand sites cost no memory
        // here; the resumed session keeps the client certificate, so identities hold. Every
        // replica opens every other's tickets (`shell::tickets`).
        config.ticketer = ticketer;
        Ok(Arc::new(config))
    }
}

/// The names a server certificate is issued for: this host's usual names, the listen address
/// if it is specific, and whatever the operator adds.
pub fn server_names(listen: &std::net::SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    names.extend(extra.iter().cloned());
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ca_is_made_once_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["localhost".to_owned()];
        let first = Pki::load_or_create(dir.path(), &names).unwrap();
        let second = Pki::load_or_create(dir.path(), &names).unwrap();
        assert_eq!(first.ca_pem, second.ca_pem);
        assert_eq!(first.ca_fingerprint.len(), 64);
        first
            .server_config(crate::shell::tickets::SharedTicketer::shared(
                &crate::shell::vault::Vault::from_key([1; 32]),
            ))
            .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join("ca-key.pem"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_damaged_ca_key_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        Pki::load_or_create(dir.path(), &[]).unwrap();
        std::fs::write(dir.path().join("ca-key.pem"), "garbage").unwrap();
        let err = Pki::load_or_create(dir.path(), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("ca-key.pem"), "{err}");
    }
}
