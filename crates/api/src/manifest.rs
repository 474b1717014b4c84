//! A site's manifest: everything the site must run, rendered for it.
//!
//! The control plane compiles it; the agent (next) receives it. Content is hashed over its
//! canonical JSON (fields in declaration order, maps sorted), so equal content always has the
//! same hash, and the revision grows exactly when the hash changes.

use std::collections::BTreeMap;

use atoll_spec::application::{File, Health, Mode, Port, Requires, Resources, SecretRef, Volume};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub site: String,
    pub revision: u64,
    /// `sha256:` and the hex digest of the canonical JSON of `content`.
    pub hash: String,
    pub content: ManifestContent,
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
    pub secrets: Vec<SecretRef>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
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
