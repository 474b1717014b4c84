//! Accepting a manifest: verify the control plane's signature over the exact bytes received,
//! check it is for this site and newer than what runs here, and keep it on disk (atomically)
//! before anything acts on it, so a restarted agent carries on offline with it.

use std::path::{Path, PathBuf};

use atoll_api::Manifest;
use atoll_api::agent::SignedManifest;
use base64::Engine as _;
use ring::signature::{ED25519, UnparsedPublicKey};

use super::AgentError;
use super::files::write_atomic;
use crate::core::sync::check_revision;

const MANIFEST_FILE: &str = "manifest.json";

/// Why a manifest was refused; said in the log and in the next report.
pub fn verify(
    signed: &SignedManifest,
    signing_key: &[u8],
    site: &str,
    applied: u64,
) -> Result<Manifest, String> {
    let signature = base64::engine::general_purpose::STANDARD
        .decode(&signed.signature)
        .map_err(|_| "the manifest's signature is not base64".to_owned())?;
    UnparsedPublicKey::new(&ED25519, signing_key)
        .verify(signed.payload.as_bytes(), &signature)
        .map_err(|_| "the manifest's signature does not verify with the control plane's key (forged or damaged)".to_owned())?;
    let manifest: Manifest = serde_json::from_str(&signed.payload)
        .map_err(|e| format!("the signed manifest cannot be read: {e}"))?;
    if manifest.site != site {
        return Err(format!(
            "the manifest is for site {}, not this site ({site})",
            manifest.site
        ));
    }
    check_revision(manifest.revision, applied)?;
    Ok(manifest)
}

/// The last accepted manifest, kept in the data folder.
#[derive(Debug)]
pub struct Kept {
    path: PathBuf,
}

impl Kept {
    pub fn new(dir: &Path) -> Kept {
        Kept {
            path: dir.join(MANIFEST_FILE),
        }
    }

    /// The kept manifest, verified again (the file may have been tampered with).
    pub fn load(&self, signing_key: &[u8], site: &str) -> Result<Option<Manifest>, AgentError> {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::Local(format!("{}: {e}", self.path.display()))),
        };
        let signed: SignedManifest = serde_json::from_slice(&bytes)
            .map_err(|e| AgentError::Local(format!("{}: {e}", self.path.display())))?;
        verify(&signed, signing_key, site, 0)
            .map(Some)
            .map_err(|e| AgentError::Local(format!("{}: {e}", self.path.display())))
    }

    /// Removes the kept manifest, if there is one.
    pub fn forget(&self) -> std::io::Result<()> {
        super::files::remove_if_present(&self.path)
    }

    pub fn save(&self, signed: &SignedManifest) -> Result<(), AgentError> {
        let bytes = serde_json::to_vec(signed).unwrap_or_default();
        write_atomic(&self.path, &bytes, 0o600)
            .map_err(|e| AgentError::Local(format!("{}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{Ed25519KeyPair, KeyPair as _};

    fn signer() -> Ed25519KeyPair {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    fn signed(key: &Ed25519KeyPair, site: &str, revision: u64) -> SignedManifest {
        let m = Manifest {
            site: site.into(),
            revision,
            hash: "sha256:x".into(),
            content: Default::default(),
            sealed: Vec::new(),
        };
        let payload = serde_json::to_string(&m).unwrap();
        let signature =
            base64::engine::general_purpose::STANDARD.encode(key.sign(payload.as_bytes()).as_ref());
        SignedManifest { payload, signature }
    }

    #[test]
    fn accepts_only_signed_newer_manifests_for_this_site() {
        let key = signer();
        let public = key.public_key().as_ref().to_vec();
        assert_eq!(
            verify(&signed(&key, "s", 3), &public, "s", 2)
                .unwrap()
                .revision,
            3
        );
        assert!(
            verify(&signed(&key, "s", 2), &public, "s", 2)
                .unwrap_err()
                .contains("not newer")
        );
        assert!(
            verify(&signed(&key, "s", 1), &public, "s", 2)
                .unwrap_err()
                .contains("replayed")
        );
        assert!(
            verify(&signed(&key, "other", 3), &public, "s", 2)
                .unwrap_err()
                .contains("for site other")
        );
        let forger = signer();
        assert!(
            verify(&signed(&forger, "s", 9), &public, "s", 2)
                .unwrap_err()
                .contains("forged")
        );
        let mut tampered = signed(&key, "s", 3);
        tampered.payload = tampered.payload.replace("\"revision\":3", "\"revision\":4");
        assert!(
            verify(&tampered, &public, "s", 2)
                .unwrap_err()
                .contains("does not verify")
        );
        let mut garbage = signed(&key, "s", 3);
        garbage.signature = "%%%".into();
        assert!(verify(&garbage, &public, "s", 2).is_err());
    }

    #[test]
    fn kept_manifests_are_verified_again_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer();
        let public = key.public_key().as_ref().to_vec();
        let kept = Kept::new(dir.path());
        assert!(kept.load(&public, "s").unwrap().is_none());
        kept.save(&signed(&key, "s", 7)).unwrap();
        assert_eq!(kept.load(&public, "s").unwrap().unwrap().revision, 7);
        kept.save(&signed(&signer(), "s", 8)).unwrap();
        assert!(kept.load(&public, "s").is_err());
    }
}
