//! A site's manifest: everything the site must run, rendered for it.
//!
//! The control plane compiles it; the agent (next) receives it. Content is hashed over its
//! canonical JSON (fields in declaration order, maps sorted), so equal content always has the
//! same hash, and the revision grows exactly when the hash changes.

use std::collections::BTreeMap;

use atoll_spec::application::{
    File, Health, Mode, OnSecretChange, Port, Requires, Resources, Volume,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub site: String,
    pub revision: u64,
    /// `sha256:` and the hex digest of the canonical JSON of `content`.
    pub hash: String,
    pub content: ManifestContent,
    /// The values of the secrets `content` references, sealed to the site's hosts. Only the
    /// copy an agent receives carries them (they are sealed when it asks, to the hosts enrolled
    /// then); they are not part of the hash: a secret's new version shows in `content` as
    /// the version of the references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealed: Vec<SealedSecret>,
}

/// One secret's values for one site, as a JSON object of key → base64 value, sealed to the
/// site's hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedSecret {
    pub name: String,
    /// The secret's version at this site.
    pub version: u64,
    pub sealed: Sealed,
}

/// Bytes sealed to one or more X25519 public keys: a random file key encrypts the payload
/// (ChaCha20-Poly1305) and is wrapped for each recipient through an ephemeral X25519 agreement
/// and HKDF-SHA256. All binary fields are base64 (standard, padded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    pub stanzas: Vec<Stanza>,
    pub payload: String,
}

/// The file key wrapped for one recipient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stanza {
    /// The recipient's public key.
    pub recipient: String,
    pub ephemeral: String,
    pub wrapped: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestContent {
    /// Sorted by deployment name.
    pub applications: Vec<ManifestApplication>,
    /// Images to pull ahead of time: a rollout with `prefetch: true` lists the new version's
    /// images at sites whose wave has not opened yet, so the switch-over takes seconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefetch: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestApplication {
    pub deployment: String,
    pub application: String,
    pub version: String,
    pub services: Vec<ManifestService>,
}

/// A service with its templates rendered for one site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestService {
    pub name: String,
    pub image: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    pub replicas: u32,
    pub mode: Mode,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    pub resources: Resources,
    pub requires: Requires,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<RenderedFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<ManifestSecret>,
    #[serde(default, skip_serializing_if = "is_restart")]
    pub on_secret_change: OnSecretChange,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
}

fn is_restart(o: &OnSecretChange) -> bool {
    *o == OnSecretChange::Restart
}

/// A secret a service reads, resolved for the site: which keys, where, and which version. The
/// values travel sealed beside the content, never in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSecret {
    pub name: String,
    /// The one key delivered; without it, every key in `keys` is a file in the folder `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The keys this site has values for, sorted.
    pub keys: Vec<String>,
    /// The file (with `key`) or folder in the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The environment variable that holds the value, when the application asks for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
    /// The newest version among the values this site gets: it grows when one of them changes.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenderedFile {
    pub path: String,
    pub content: String,
    #[serde(with = "atoll_spec::application::octal_mode")]
    pub mode: u32,
}

impl RenderedFile {
    pub fn from_spec(file: &File, content: String) -> RenderedFile {
        RenderedFile {
            path: file.path.clone(),
            content,
            mode: file.mode,
        }
    }
}
