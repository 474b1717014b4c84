//! Accepting a manifest: verify the control plane's signature over the exact bytes received,
//! check it is for this site and newer than what runs here, and keep it on disk (atomically)
//! before anything acts on it, so a restarted agent carries on offline with it.
//!
//! A kept manifest that cannot be read or verified at start is not a reason to stop: it is
//! [`Loaded::Damaged`], and the agent runs on without a desired state (touching nothing that
//! runs) until the control plane sends a fresh one. Stopping would only make systemd restart
//! the agent into the same file for ever.

use std::path::{Path, PathBuf};

use atoll_api::Manifest;
use atoll_api::agent::SignedManifest;
use base64::Engine as _;
use ring::signature::{ED25519, UnparsedPublicKey};

use super::files::{describe, write_atomic};
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
    if manifest.content.schema > atoll_api::manifest::SCHEMA {
        return Err(format!(
            "the manifest is of schema {}, newer than this agent (atoll {}) reads ({}): upgrade the agent",
            manifest.content.schema,
            env!("CARGO_PKG_VERSION"),
            atoll_api::manifest::SCHEMA
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
    pub fn load(&self, signing_key: &[u8], site: &str) -> Loaded {
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Loaded::None,
            Err(e) => return self.damaged(&describe(&e)),
        };
        let signed: SignedManifest = match serde_json::from_slice(&bytes) {
            Ok(s) => s,
            Err(e) => return self.damaged(&format!("not a signed manifest ({e})")),
        };
        match verify(&signed, signing_key, site, 0) {
            Ok(m) => Loaded::Kept(m, signed),
            Err(e) => self.damaged(&e),
        }
    }

    /// Removes the kept manifest, if there is one.
    pub fn forget(&self) -> std::io::Result<()> {
        super::files::remove_if_present(&self.path)?;
        super::files::remove_if_present(&self.aside())
    }

    /// Moves a damaged kept manifest aside (`manifest.json.damaged`, replacing an older one),
    /// for whoever looks into it, so the next start does not meet it again. Returns where it
    /// went.
    pub fn set_aside(&self) -> std::io::Result<PathBuf> {
        let aside = self.aside();
        std::fs::rename(&self.path, &aside)?;
        Ok(aside)
    }

    /// Where a damaged kept manifest is set aside.
    pub fn aside(&self) -> PathBuf {
        self.path.with_extension("json.damaged")
    }

    fn damaged(&self, why: &str) -> Loaded {
        Loaded::Damaged(format!(
            "the kept manifest {} cannot be used: {why}; what runs is left untouched until the control plane sends a fresh manifest",
            self.path.display()
        ))
    }

    /// Keeps `signed`; the error says what failed, with the file.
    pub fn save(&self, signed: &SignedManifest) -> Result<(), String> {
        let bytes = serde_json::to_vec(signed).unwrap_or_default();
        write_atomic(&self.path, &bytes, 0o600).map_err(|e| {
            format!(
                "cannot keep the manifest: {} ({})",
                describe(&e),
                self.path.display()
            )
        })
    }
}

/// What was found in the data folder at start.
#[derive(Debug)]
pub enum Loaded {
    /// No manifest was ever kept: a new agent.
    None,
    /// The kept manifest, verified, and as it was signed (for the site's log).
    Kept(Manifest, SignedManifest),
    /// A manifest file that cannot be read or verified, and why, in words for the report.
    Damaged(String),
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
    fn a_manifest_of_a_newer_schema_is_refused_naming_the_agents_version() {
        let key = signer();
        let public = key.public_key().as_ref().to_vec();
        let mut m = Manifest {
            site: "s".into(),
            revision: 3,
            hash: "sha256:x".into(),
            content: Default::default(),
            sealed: Vec::new(),
        };
        m.content.schema = atoll_api::manifest::SCHEMA + 1;
        let payload = serde_json::to_string(&m).unwrap();
        let signature =
            base64::engine::general_purpose::STANDARD.encode(key.sign(payload.as_bytes()).as_ref());
        let why = verify(&SignedManifest { payload, signature }, &public, "s", 2).unwrap_err();
        assert!(why.contains("schema 2"), "{why}");
        assert!(why.contains(env!("CARGO_PKG_VERSION")), "{why}");
    }

    #[test]
    fn a_manifest_with_fields_this_agent_does_not_know_is_accepted() {
        let key = signer();
        let public = key.public_key().as_ref().to_vec();
        let payload = r#"{"site":"s","revision":3,"hash":"sha256:x","future":1,"content":{"applications":[{"deployment":"d","application":"a","version":"1","future":[1],"services":[{"name":"web","image":"x","replicas":1,"mode":"replicated","ports":[{"container":80,"future":true}],"resources":{"future":"x"},"requires":{"future":"x"},"volumes":[{"name":"v","path":"/v","future":1}],"future":{}}]}],"future":"x"}}"#.to_owned();
        let signature =
            base64::engine::general_purpose::STANDARD.encode(key.sign(payload.as_bytes()).as_ref());
        let m = verify(&SignedManifest { payload, signature }, &public, "s", 2).unwrap();
        assert_eq!(m.content.applications[0].services[0].ports[0].container, 80);
    }

    #[test]
    fn kept_manifests_are_verified_again_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer();
        let public = key.public_key().as_ref().to_vec();
        let kept = Kept::new(dir.path());
        assert!(matches!(kept.load(&public, "s"), Loaded::None));
        kept.save(&signed(&key, "s", 7)).unwrap();
        assert!(matches!(kept.load(&public, "s"), Loaded::Kept(m, _) if m.revision == 7));
        kept.save(&signed(&signer(), "s", 8)).unwrap();
        assert!(
            matches!(kept.load(&public, "s"), Loaded::Damaged(why) if why.contains("does not verify"))
        );
    }

    #[test]
    fn a_damaged_kept_manifest_is_reported_not_fatal() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer();
        let public = key.public_key().as_ref().to_vec();
        let kept = Kept::new(dir.path());
        let path = dir.path().join(MANIFEST_FILE);
        for garbage in [&b"{\"payload\": \"trunc"[..], b"", b"\xff\xfe", b"[]"] {
            std::fs::write(&path, garbage).unwrap();
            match kept.load(&public, "s") {
                Loaded::Damaged(why) => {
                    assert!(why.contains(&path.display().to_string()), "{why}");
                    assert!(why.contains("left untouched"), "{why}");
                }
                other => panic!("{garbage:?}: {other:?}"),
            }
        }
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert!(
            matches!(kept.load(&public, "s"), Loaded::Damaged(_)),
            "unreadable"
        );
    }

    #[test]
    fn a_damaged_kept_manifest_is_set_aside_not_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let kept = Kept::new(dir.path());
        std::fs::write(dir.path().join(MANIFEST_FILE), "garbage").unwrap();
        let aside = kept.set_aside().unwrap();
        assert_eq!(aside, dir.path().join("manifest.json.damaged"));
        assert_eq!(std::fs::read_to_string(&aside).unwrap(), "garbage");
        assert!(matches!(
            kept.load(signer().public_key().as_ref(), "s"),
            Loaded::None
        ));
    }

    #[test]
    fn a_manifest_that_cannot_be_kept_says_why_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let key = signer();
        let kept = Kept::new(&dir.path().join("data"));
        std::fs::write(dir.path().join("data"), "a file, not a folder").unwrap();
        let e = kept.save(&signed(&key, "s", 1)).unwrap_err();
        assert!(e.starts_with("cannot keep the manifest: "), "{e}");
        assert!(e.contains("manifest.json"), "{e}");
    }
}
