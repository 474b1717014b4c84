//! The host's identity: its private key, the certificate the control plane issued for it, the
//! CA it trusts and the key that signs its manifests. Made once at enrollment, kept in the data
//! folder (the private key with mode 0600), so a restarted agent never enrolls again.
//!
//! First contact is verified without any prior secret but the join token: the token carries
//! the SHA-256 of the control plane's CA certificate, and the TLS handshake is accepted only if
//! the server's chain includes that exact CA and verifies against it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use atoll_api::agent::{
    EnrollRequest, EnrollResponse, Inventory, JoinToken, RenewRequest, RenewResponse,
};
use base64::Engine as _;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::AgentError;
use super::files::write_atomic;

const IDENTITY_FILE: &str = "identity.json";
const KEY_FILE: &str = "host-key.pem";
const CERT_FILE: &str = "host-cert.pem";
const CA_FILE: &str = "ca.pem";
/// The X25519 key secrets are sealed to, base64.
const SEALING_KEY_FILE: &str = "sealing-key";
/// How long an enrollment or a renewal may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// What the agent keeps about itself, besides the key and certificates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Stored {
    site: String,
    host: String,
    control_url: String,
    /// Raw Ed25519 public key, base64.
    signing_key: String,
    certificate_expires_at: String,
    /// When this agent received the certificate: with the expiry, its lifetime.
    certificate_received_at: String,
    /// Whether the control plane knows the sealing key (a host enrolled before secrets
    /// existed registers it with its next certificate renewal, which is then due at once).
    #[serde(default)]
    sealing_registered: bool,
}

#[derive(Clone)]
pub struct Identity {
    pub site: String,
    pub host: String,
    pub control_url: String,
    pub signing_key: Vec<u8>,
    pub certificate_expires_at: String,
    certificate_received_at: String,
    /// The private key secrets are sealed to; it never leaves the host.
    pub sealing: Arc<atoll_seal::Identity>,
    sealing_registered: bool,
    key_pem: String,
    cert_pem: String,
    ca_pem: String,
    dir: PathBuf,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("site", &self.site)
            .field("host", &self.host)
            .field("control_url", &self.control_url)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AgentError + '_ {
    move |e| AgentError::Local(format!("{}: {e}", path.display()))
}

impl Identity {
    /// Removes the identity kept in `dir` (the host was detached: it is worth nothing now, and
    /// the host may enroll anew). Files already gone are no problem.
    pub fn forget(dir: &Path) -> std::io::Result<()> {
        for name in [
            IDENTITY_FILE,
            KEY_FILE,
            CERT_FILE,
            CA_FILE,
            SEALING_KEY_FILE,
        ] {
            super::files::remove_if_present(&dir.join(name))?;
        }
        Ok(())
    }

    /// The identity kept in `dir`, if this host has enrolled.
    pub fn load(dir: &Path) -> Result<Option<Identity>, AgentError> {
        let path = dir.join(IDENTITY_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&path)(e)),
        };
        let stored: Stored = serde_json::from_str(&text).map_err(|e| {
            AgentError::Local(format!(
                "{}: {e}; remove the data folder's identity files to enroll again",
                path.display()
            ))
        })?;
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read_to_string(&p).map_err(io(&p))
        };
        let signing_key = base64::engine::general_purpose::STANDARD
            .decode(&stored.signing_key)
            .map_err(|e| AgentError::Local(format!("{}: signing key: {e}", path.display())))?;
        let (sealing, fresh) = load_sealing_key(dir)?;
        Ok(Some(Identity {
            sealing: Arc::new(sealing),
            sealing_registered: stored.sealing_registered && !fresh,
            key_pem: read(KEY_FILE)?,
            cert_pem: read(CERT_FILE)?,
            ca_pem: read(CA_FILE)?,
            site: stored.site,
            host: stored.host,
            control_url: stored.control_url,
            signing_key,
            certificate_expires_at: stored.certificate_expires_at,
            certificate_received_at: stored.certificate_received_at,
            dir: dir.to_owned(),
        }))
    }

    /// Makes a key, asks the control plane at `url` to certify it with `token`, and keeps the
    /// result in `dir`.
    pub async fn enroll(
        dir: &Path,
        url: &str,
        token: &JoinToken,
        inventory: Inventory,
    ) -> Result<Identity, AgentError> {
        let key = rcgen::KeyPair::generate()
            .map_err(|e| AgentError::Local(format!("cannot make a host key: {e}")))?;
        let csr = certificate_request(&key)?;
        let sealing = atoll_seal::Identity::generate();
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Local(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerCheck {
                chain: Chain::PinnedCa(token.ca_fingerprint.clone()),
                provider: provider(),
            }))
            .with_no_client_auth();
        let http = http_client(tls)?;
        let request = EnrollRequest {
            token: token.to_string(),
            csr_pem: csr,
            inventory,
            recipient: Some(sealing.recipient()),
        };
        let response: EnrollResponse = super::client::send(
            &http,
            reqwest::Method::POST,
            &format!("{}/v1/enroll", url.trim_end_matches('/')),
            Some(&request),
            REQUEST_TIMEOUT,
        )
        .await?
        .ok_or_else(|| {
            AgentError::Protocol("the control plane answered the enrollment with no content".into())
        })?;
        let ca = CertificateDer::from_pem_slice(response.ca_pem.as_bytes()).map_err(|e| {
            AgentError::Protocol(format!(
                "the CA certificate sent at enrollment is not PEM: {e}"
            ))
        })?;
        if hex::encode(Sha256::digest(ca.as_ref())) != token.ca_fingerprint {
            return Err(AgentError::Protocol(
                "the CA sent at enrollment does not match the join token's fingerprint".into(),
            ));
        }
        let identity = Identity {
            site: response.site,
            host: response.host,
            control_url: url.trim_end_matches('/').to_owned(),
            signing_key: base64::engine::general_purpose::STANDARD
                .decode(&response.signing_key)
                .map_err(|e| AgentError::Protocol(format!("signing key: {e}")))?,
            certificate_expires_at: response.certificate_expires_at,
            certificate_received_at: super::clock::now_rfc3339(),
            sealing: Arc::new(sealing),
            sealing_registered: true,
            key_pem: key.serialize_pem(),
            cert_pem: response.certificate_pem,
            ca_pem: response.ca_pem,
            dir: dir.to_owned(),
        };
        identity.save()?;
        Ok(identity)
    }

    fn save(&self) -> Result<(), AgentError> {
        // The keys first: a certificate on disk without its key would be useless.
        let path = self.dir.join(SEALING_KEY_FILE);
        let sealing = base64::engine::general_purpose::STANDARD.encode(self.sealing.to_bytes());
        write_atomic(&path, sealing.as_bytes(), 0o600).map_err(io(&path))?;
        let path = self.dir.join(KEY_FILE);
        write_atomic(&path, self.key_pem.as_bytes(), 0o600).map_err(io(&path))?;
        for (name, text) in [(CERT_FILE, &self.cert_pem), (CA_FILE, &self.ca_pem)] {
            let path = self.dir.join(name);
            write_atomic(&path, text.as_bytes(), 0o644).map_err(io(&path))?;
        }
        let stored = Stored {
            site: self.site.clone(),
            host: self.host.clone(),
            control_url: self.control_url.clone(),
            signing_key: base64::engine::general_purpose::STANDARD.encode(&self.signing_key),
            certificate_expires_at: self.certificate_expires_at.clone(),
            certificate_received_at: self.certificate_received_at.clone(),
            sealing_registered: self.sealing_registered,
        };
        let path = self.dir.join(IDENTITY_FILE);
        write_atomic(
            &path,
            serde_json::to_string_pretty(&stored)
                .unwrap_or_default()
                .as_bytes(),
            0o600,
        )
        .map_err(io(&path))
    }

    /// An HTTPS client that presents this host's certificate and trusts only the control
    /// plane's CA. Each request says how long it may take (long-polls need more than their
    /// wait).
    pub fn client(&self) -> Result<reqwest::Client, AgentError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| AgentError::Local(format!("ca.pem: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| AgentError::Local(format!("ca.pem: {e}")))?;
        }
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AgentError::Local(format!("host certificate: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
            .map_err(|e| AgentError::Local(format!("host key: {e}")))?;
        let tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| AgentError::Local(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| AgentError::Local(format!("host certificate: {e}")))?;
        http_client(tls)
    }

    /// The TLS settings of the host-to-host channel: both ends present this host's
    /// certificate and accept only a chain to the control plane's CA (who the peer is, and
    /// whether it still belongs, is judged after the handshake, on the membership list).
    pub fn site_tls(&self) -> Result<(rustls::ServerConfig, rustls::ClientConfig), AgentError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.ca_pem.as_bytes()) {
            let cert = cert.map_err(|e| AgentError::Local(format!("ca.pem: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| AgentError::Local(format!("ca.pem: {e}")))?;
        }
        let chain = CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| AgentError::Local(format!("host certificate: {e}")))?;
        let key = || {
            PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes())
                .map_err(|e| AgentError::Local(format!("host key: {e}")))
        };
        let peers = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider(),
        )
        .build()
        .map_err(|e| AgentError::Local(format!("ca.pem: {e}")))?;
        let server = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AgentError::Local(e.to_string()))?
            .with_client_cert_verifier(peers.clone())
            .with_single_cert(chain.clone(), key()?)
            .map_err(|e| AgentError::Local(format!("host certificate: {e}")))?;
        let client = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| AgentError::Local(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerCheck {
                chain: Chain::SitePeer(peers),
                provider: provider(),
            }))
            .with_client_auth_cert(chain, key()?)
            .map_err(|e| AgentError::Local(format!("host certificate: {e}")))?;
        Ok((server, client))
    }

    /// When a third of the certificate's life is left, or less: well before expiry, so that a
    /// site offline for a while still reconnects with a valid certificate.
    pub fn renewal_due(&self, now: std::time::SystemTime) -> bool {
        if !self.sealing_registered {
            return true;
        }
        let parse = |t: &str| humantime::parse_rfc3339(t).ok();
        let (Some(received), Some(expires)) = (
            parse(&self.certificate_received_at),
            parse(&self.certificate_expires_at),
        ) else {
            return true;
        };
        let lifetime = expires.duration_since(received).unwrap_or_default();
        expires
            .duration_since(now)
            .is_ok_and(|left| left < lifetime / 3)
            || now >= expires
    }

    /// Replaces the key and certificate with fresh ones, over the current mTLS identity.
    pub async fn renew(&mut self) -> Result<(), AgentError> {
        let key = rcgen::KeyPair::generate()
            .map_err(|e| AgentError::Local(format!("cannot make a host key: {e}")))?;
        let request = RenewRequest {
            csr_pem: certificate_request(&key)?,
            recipient: Some(self.sealing.recipient()),
        };
        let url = format!(
            "{}/v1/sites/{}/hosts/{}/certificate",
            self.control_url, self.site, self.host
        );
        let response: RenewResponse = super::client::send(
            &self.client()?,
            reqwest::Method::POST,
            &url,
            Some(&request),
            REQUEST_TIMEOUT,
        )
        .await?
        .ok_or_else(|| {
            AgentError::Protocol("the control plane answered the renewal with no content".into())
        })?;
        if response.sealing_key_pending {
            tracing::warn!(
                host = %self.host,
                "the control plane keeps this host's secrets sealed to its previous sealing key until an operator approves the new one (`atoll host approve-key {}`)",
                self.host
            );
        }
        self.key_pem = key.serialize_pem();
        self.cert_pem = response.certificate_pem;
        self.certificate_expires_at = response.certificate_expires_at;
        self.certificate_received_at = super::clock::now_rfc3339();
        self.sealing_registered = true;
        self.save()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(received: &str, expires: &str) -> Identity {
        Identity {
            site: "s".into(),
            host: "h".into(),
            control_url: "https://x".into(),
            signing_key: Vec::new(),
            certificate_expires_at: expires.into(),
            certificate_received_at: received.into(),
            sealing: Arc::new(atoll_seal::Identity::generate()),
            sealing_registered: true,
            key_pem: String::new(),
            cert_pem: String::new(),
            ca_pem: String::new(),
            dir: PathBuf::new(),
        }
    }

    #[test]
    fn renewal_is_due_when_a_third_of_the_lifetime_is_left() {
        let at = |t: &str| humantime::parse_rfc3339(t).unwrap();
        // A 30-day certificate received on the 1st.
        let id = identity("2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z");
        assert!(!id.renewal_due(at("2026-01-15T00:00:00Z")));
        assert!(!id.renewal_due(at("2026-01-20T23:00:00Z")));
        assert!(id.renewal_due(at("2026-01-21T01:00:00Z")));
        assert!(id.renewal_due(at("2026-02-15T00:00:00Z")), "expired");
        let mut unregistered = identity("2026-01-01T00:00:00Z", "2026-01-31T00:00:00Z");
        unregistered.sealing_registered = false;
        assert!(
            unregistered.renewal_due(at("2026-01-02T00:00:00Z")),
            "sealing key unknown"
        );
        assert!(
            identity("garbage", "2026-01-31T00:00:00Z").renewal_due(at("2026-01-02T00:00:00Z"))
        );
    }
}

/// The host's sealing key, made (and kept) if the data folder has none yet; `true` when made
/// now, so the control plane does not know it yet.
fn load_sealing_key(dir: &Path) -> Result<(atoll_seal::Identity, bool), AgentError> {
    let path = dir.join(SEALING_KEY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
                .decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| {
                    AgentError::Local(format!(
                        "{}: not a sealing key; remove the data folder's identity files to enroll again",
                        path.display()
                    ))
                })?;
            Ok((atoll_seal::Identity::from_bytes(bytes), false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = atoll_seal::Identity::generate();
            let text = base64::engine::general_purpose::STANDARD.encode(key.to_bytes());
            write_atomic(&path, text.as_bytes(), 0o600).map_err(io(&path))?;
            Ok((key, true))
        }
        Err(e) => Err(io(&path)(e)),
    }
}

fn certificate_request(key: &rcgen::KeyPair) -> Result<String, AgentError> {
    rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(key))
        .and_then(|csr| csr.pem())
        .map_err(|e| AgentError::Local(format!("cannot make a certificate request: {e}")))
}

/// The agent's HTTP client. HTTP/2 when the control plane offers it: the manifest long-poll
/// and the reports then share one connection, so a site costs the control plane one
/// connection (and one handshake) instead of two.
fn http_client(mut tls: rustls::ClientConfig) -> Result<reqwest::Client, AgentError> {
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .build()
        .map_err(|e| AgentError::Local(format!("HTTP client: {e}")))
}

/// How a server's certificate is checked; the signatures of the handshake are checked the same
/// way whatever the chain.
#[derive(Debug)]
struct ServerCheck {
    chain: Chain,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug)]
enum Chain {
    /// The control plane: its chain must carry the CA with this fingerprint (the join token's)
    /// and verify against that CA as the only root.
    PinnedCa(String),
    /// A peer agent: a chain to the control plane's CA, checked as a client certificate is
    /// (host certificates carry no DNS name to check; the identity URI is judged after the
    /// handshake).
    SitePeer(Arc<dyn rustls::server::danger::ClientCertVerifier>),
}

impl ServerCertVerifier for ServerCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.chain {
            Chain::PinnedCa(fingerprint) => {
                let ca = intermediates
                    .iter()
                    .find(|c| hex::encode(Sha256::digest(c.as_ref())) == *fingerprint)
                    .ok_or_else(|| {
                        rustls::Error::General(
                            "the control plane's CA does not match the join token's fingerprint"
                                .into(),
                        )
                    })?;
                let mut roots = RootCertStore::empty();
                roots.add(ca.clone().into_owned())?;
                let inner = WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    self.provider.clone(),
                )
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
                inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
            }
            Chain::SitePeer(peers) => peers
                .verify_client_cert(end_entity, intermediates, now)
                .map(|_| ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The site and host a certificate's identity URI names, if any.
pub fn named_by(der: &[u8]) -> Option<(String, String)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let san = cert.subject_alternative_name().ok()??;
    san.value.general_names.iter().find_map(|name| match name {
        x509_parser::extensions::GeneralName::URI(uri) => atoll_api::site::parse_identity_uri(uri)
            .map(|(site, host)| (site.to_owned(), host.to_owned())),
        _ => None,
    })
}
