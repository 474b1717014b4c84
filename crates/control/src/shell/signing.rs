//! The control plane's manifest-signing key (Ed25519).
//!
//! Agents receive the public key at enrollment and refuse any manifest whose signature does not
//! verify, so a compromised network path or a forged response cannot change what a site runs.
//! The key is made on first start and kept in the data folder, readable by the owner only.

use std::path::Path;
use std::sync::Arc;

use atoll_api::Manifest;
use atoll_api::agent::SignedManifest;
use base64::Engine as _;
use bytes::Bytes;
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use super::files::write_atomic;
use super::fleet::Published;

pub const SIGNING_KEY_FILE: &str = "signing-key.pk8";

pub struct ManifestSigner {
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for ManifestSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestSigner")
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl ManifestSigner {
    pub fn load_or_create(dir: &Path) -> Result<ManifestSigner, String> {
        let path = dir.join(SIGNING_KEY_FILE);
        if !path.exists() {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|_| "cannot generate the manifest-signing key".to_owned())?;
            write_atomic(&path, pkcs8.as_ref(), true)
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let key = Ed25519KeyPair::from_pkcs8(&bytes).map_err(|e| {
            format!("{}: not an Ed25519 key ({e}); restore it from a backup, since agents trust only this key", path.display())
        })?;
        Ok(ManifestSigner { key })
    }

    /// The raw public key, base64, as agents receive it.
    pub fn public_key(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.public_key().as_ref())
    }

    /// A long-poll's answer: the manifest's JSON and its signature, as JSON.
    pub fn sign(&self, manifest: &Manifest) -> Bytes {
        // A manifest is plain data: serializing it cannot fail.
        self.sign_payload(serde_json::to_string(manifest).unwrap_or_default())
    }

    /// How long-polls will answer a manifest serialized as the store keeps it: signed now,
    /// unless its services read secrets, which are sealed to the site's hosts (and the whole
    /// signed) when asked for. The text only rules sealing out (a service's `secrets` is left
    /// out when empty); sealing looks at the parsed manifest.
    pub fn publish(&self, body: String) -> Published {
        if body.contains("\"secrets\":") {
            Published::Unsealed(Arc::from(body))
        } else {
            Published::Signed(self.sign_payload(body))
        }
    }

    /// [`Self::sign`] for a manifest already serialized, as the store keeps it: sending a
    /// stored manifest needs no parsing and serializing again.
    pub fn sign_payload(&self, payload: String) -> Bytes {
        let signature = self.key.sign(payload.as_bytes());
        let signed = SignedManifest {
            payload,
            signature: base64::engine::general_purpose::STANDARD.encode(signature.as_ref()),
        };
        // Two strings: serializing cannot fail.
        Bytes::from(serde_json::to_vec(&signed).unwrap_or_default())
    }
}

/// Below this many manifests for each core, signing stays on one thread.
const SIGNED_PER_THREAD: usize = 500;

/// Readies manifests for the long-polls that will ask for them ([`ManifestSigner::publish`]),
/// shared out over the cores.
pub fn sign_all(
    signer: &Arc<ManifestSigner>,
    mut manifests: Vec<(String, u64, String)>,
) -> Vec<tokio::task::JoinHandle<Vec<(String, u64, Published)>>> {
    let per_thread = crate::core::per_thread(manifests.len(), SIGNED_PER_THREAD);
    let mut parts = Vec::new();
    while !manifests.is_empty() {
        let part = manifests.split_off(manifests.len().saturating_sub(per_thread));
        let signer = signer.clone();
        parts.push(tokio::task::spawn_blocking(move || {
            part.into_iter()
                .map(|(site, revision, body)| (site, revision, signer.publish(body)))
                .collect()
        }));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use ring::signature::{ED25519, UnparsedPublicKey};

    #[test]
    fn signatures_verify_with_the_published_key_and_the_key_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let signer = ManifestSigner::load_or_create(dir.path()).unwrap();
        let again = ManifestSigner::load_or_create(dir.path()).unwrap();
        assert_eq!(signer.public_key(), again.public_key());
        let manifest = Manifest {
            site: "s".into(),
            revision: 3,
            hash: "sha256:x".into(),
            content: Default::default(),
            sealed: Vec::new(),
        };
        let signed: SignedManifest = serde_json::from_slice(&signer.sign(&manifest)).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let public = b64.decode(signer.public_key()).unwrap();
        let signature = b64.decode(&signed.signature).unwrap();
        UnparsedPublicKey::new(&ED25519, &public)
            .verify(signed.payload.as_bytes(), &signature)
            .unwrap();
        let forged = signed.payload.replace("\"revision\":3", "\"revision\":4");
        assert!(
            UnparsedPublicKey::new(&ED25519, &public)
                .verify(forged.as_bytes(), &signature)
                .is_err()
        );
    }
}
