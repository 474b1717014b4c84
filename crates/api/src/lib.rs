//! Wire types between the CLI, the control plane and (later) the agent.
//!
//! This crate is the sole owner of the JSON shapes on the wire: the server serializes these
//! types and the clients deserialize the same ones, so the two cannot drift apart. Resources
//! themselves travel as `atoll_spec::Resource`, in the shape users write them.

pub mod agent;
pub mod host;
pub mod labels;
pub mod manifest;
pub mod placement;
pub mod secret;
pub mod site;
pub mod whole;

use std::collections::BTreeMap;

use atoll_spec::{Diagnostic, Kind, Resource, Source};
use serde::{Deserialize, Serialize};

pub use manifest::{
    DeviceClass, DeviceRule, Manifest, ManifestApplication, ManifestContent, ManifestSecret,
    ManifestService, RenderedFile, SealedSecret, SiteHost,
};

/// The path prefix of every API call.
pub const API_PREFIX: &str = "/v1";
/// The largest request body the control plane reads.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// `POST /v1/apply` with `Content-Type: application/json`. A raw YAML stream
/// (`Content-Type: application/yaml`) is accepted too, as one source named `request`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// Named YAML (or JSON) texts; the names appear in error messages, so the CLI sends paths.
    pub sources: Vec<Source>,
    /// Validate and report what would change, but store nothing.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResponse {
    pub dry_run: bool,
    /// One entry per document, in the order they were given.
    pub results: Vec<ApplyResult>,
    /// Every site whose manifest changed, with its new revision.
    pub manifests: Vec<ManifestChange>,
    /// What the apply was accepted despite, for a person: a deployment none of whose selected
    /// sites has hosts that meet its requirements.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A site a deployment's site selector picks where it is not placed, and why: no host there
/// meets its requirements.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unplaced {
    pub site: String,
    pub deployment: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyResult {
    pub kind: Kind,
    pub name: String,
    pub outcome: Outcome,
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestChange {
    pub site: String,
    pub revision: u64,
}

/// A stored resource with its bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceView {
    pub generation: u64,
    pub created_at: String,
    pub updated_at: String,
    pub resource: Resource,
}

/// `GET /v1/sites` and `GET /v1/sites/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteView {
    #[serde(flatten)]
    pub view: ResourceView,
    /// The site's current manifest revision, if it has ever had one.
    pub revision: Option<u64>,
    /// `deployment/application@version` for each application placed on the site.
    pub applications: Vec<Placed>,
    /// Hosts enrolled in the site.
    #[serde(default)]
    pub hosts: u32,
    /// Whether any of its hosts is in touch with the control plane now.
    #[serde(default)]
    pub connected: bool,
    /// The lowest manifest revision its hosts run (None until one reports).
    #[serde(default)]
    pub applied_revision: Option<u64>,
    #[serde(default)]
    pub last_seen: Option<String>,
    /// From every replica its hosts reported, and their conditions: healthy, degraded,
    /// unhealthy or unknown.
    #[serde(default = "unknown")]
    pub health: agent::Health,
    /// Reports its hosts' agents dropped, their outboxes full while offline (the sum of each
    /// host's newest count): events and statuses the control plane never got. 0 from a control
    /// plane older than this field.
    #[serde(default)]
    pub dropped_reports: u64,
    /// How many of its events the control plane's retention has pruned (its oldest received,
    /// past `--events-kept` or `--events-kept-for`).
    #[serde(default)]
    pub events_pruned: u64,
    /// The conditions its hosts have raised (a manifest a host cannot keep...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<SiteCondition>,
}

/// A host's condition, as its site shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteCondition {
    pub host: String,
    #[serde(flatten)]
    pub condition: agent::HostCondition,
}

fn unknown() -> agent::Health {
    agent::Health::Unknown
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    pub deployment: String,
    pub application: String,
    pub version: String,
}

/// `GET /v1/applications` and `GET /v1/applications/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplicationView {
    #[serde(flatten)]
    pub view: ResourceView,
    /// Every version ever applied, oldest first.
    pub versions: Vec<VersionInfo>,
    /// Deployments that run this application.
    pub deployments: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub applied_at: String,
}

/// `GET /v1/deployments` and `GET /v1/deployments/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentView {
    #[serde(flatten)]
    pub view: ResourceView,
    /// The version sites are given: the pinned one, or the application's newest applied.
    pub version: Option<String>,
    /// Sites the placement selects, by name.
    pub sites: Vec<String>,
    /// The phase of the deployment's current rollout (`running`, `rolled_back`...), if it has
    /// one: after a rollback `version` is still the version targeted, while the sites are given
    /// and run the previous one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// For each version, how many of the selected sites run it, from their hosts' reports (a
    /// site runs a version when every replica of the deployment there does, on its own
    /// container). None from a control plane older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<BTreeMap<String, u32>>,
    /// Sites the site selector picks where the deployment is not placed, with the reason; they
    /// are not in `sites`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unplaced: Vec<Unplaced>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct List<T> {
    pub items: Vec<T>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteResponse {
    pub kind: Kind,
    pub name: String,
    pub manifests: Vec<ManifestChange>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

/// The error code of a refusal to a host that was detached from its site (its site was
/// deleted): the host's identity will never be accepted again, so its agent removes what atoll
/// runs there and stops. A plain `forbidden` is another site's or a blocked host's refusal.
pub const HOST_DETACHED: &str = "host_detached";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    /// Stable, machine-readable: `unauthorized`, `forbidden`, [`HOST_DETACHED`], `malformed`,
    /// `invalid`, `not_found`, `conflict`, `too_large`, `unsupported_media_type`, `no_route`,
    /// `method_not_allowed`, `internal`.
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub diagnostics: Vec<Diagnostic>,
}
