//! The control plane's durable state, behind one trait.
//!
//! The store keeps rows; it knows nothing of what a spec means. Writes go in as one batch per
//! API call and commit in one transaction, guarded by the store's version: a batch computed from
//! a snapshot that is no longer current is refused with [`StoreError::Conflict`], so decisions
//! made from snapshots can never overwrite each other (the control plane simply recomputes).
//! A `commit` that returns `Ok` is durable.
//!
//! Backends: SQLite (embedded, the default). Every backend must pass the conformance suite in
//! `conformance.rs`, written against the trait only.

mod sqlite;

#[cfg(test)]
mod conformance;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use sqlite::SqliteStore;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store changed since the snapshot the batch was computed from.
    #[error(
        "the store changed since this change was computed (version {expected} is now {actual}); try again"
    )]
    Conflict { expected: u64, actual: u64 },
    #[error("store: {0}")]
    Backend(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRow {
    pub kind: String,
    pub name: String,
    pub generation: u64,
    /// Canonical JSON of the resource.
    pub spec: String,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppVersionRow {
    pub name: String,
    pub version: String,
    pub spec: String,
    pub applied_at: String,
}

/// A site's manifest without its body: what deciding whether a manifest changed needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestHead {
    pub site: String,
    pub revision: u64,
    pub hash: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRow {
    pub site: String,
    pub revision: u64,
    pub hash: String,
    pub body: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRow {
    pub id: String,
    pub name: String,
    /// SHA-256 of the token, hex; the token itself is never stored.
    pub hash: String,
    pub role: String,
    pub created_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace a resource.
    PutResource(ResourceRow),
    DeleteResource {
        kind: String,
        name: String,
    },
    /// Record an application version. Versions are immutable: putting an existing version with
    /// other content is a [`StoreError::Corrupt`] bug in the caller, refused.
    PutAppVersion(AppVersionRow),
    /// Forget every version of an application (when the application is deleted).
    DeleteAppVersions {
        name: String,
    },
    /// Create or replace a site's manifest; its revision must be higher than the stored one.
    PutManifest(ManifestRow),
    PutToken(TokenRow),
    Audit {
        at: String,
        actor: String,
        action: String,
        detail: String,
    },
}

/// Everything the control plane's pure core needs to decide an apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub resources: Vec<ResourceRow>,
    pub manifests: Vec<ManifestHead>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current version: it grows by one with every committed batch.
    async fn version(&self) -> Result<u64>;
    async fn snapshot(&self) -> Result<Snapshot>;
    /// Commits `writes` in one transaction if the store is still at version `base`; returns the
    /// new version.
    async fn commit(&self, base: u64, writes: Vec<Write>) -> Result<u64>;

    async fn resource(&self, kind: &str, name: &str) -> Result<Option<ResourceRow>>;
    /// All resources of a kind, ordered by name.
    async fn resources(&self, kind: &str) -> Result<Vec<ResourceRow>>;
    async fn app_version(&self, name: &str, version: &str) -> Result<Option<AppVersionRow>>;
    /// All versions of an application, oldest applied first.
    async fn app_versions(&self, name: &str) -> Result<Vec<AppVersionRow>>;
    async fn manifest(&self, site: &str) -> Result<Option<ManifestRow>>;
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>>;
    /// The newest `limit` audit entries, newest first.
    async fn audit(&self, limit: u32) -> Result<Vec<AuditRow>>;
}
