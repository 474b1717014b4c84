//! A site's manifest: everything the site must run, rendered for it.
//!
//! The control plane compiles it; the agent receives it. Content is hashed over its canonical
//! JSON (fields in declaration order, maps sorted), so equal content always has the same hash,
//! and the revision grows exactly when the hash changes.
//!
//! Agents in the field are older than the control plane, so these types are this crate's own
//! (not the `spec` types users write, which refuse unknown fields) and every one of them reads
//! past fields it does not know. What an older agent could not honour is never sent to it: the
//! control plane checks the capabilities each agent advertises
//! ([`crate::host::capability`]). A change an older agent would misread whatever it ignores
//! raises [`SCHEMA`]; an agent refuses a manifest of a schema newer than its own. Every field
//! added since the first agent is left out when empty, so a manifest that uses none of them is
//! byte for byte what that agent always got, with the same hash. Enumerations (`Mode`,
//! `Protocol`, `OnSecretChange`, `HealthCheck`) and units are shared with `spec`: an unknown
//! variant cannot be read past, and a new one comes with a capability.

use std::collections::BTreeMap;

use atoll_spec::application::{File, HealthCheck, Mode, OnSecretChange, Protocol};
use atoll_spec::units::{ByteSize, Cpu, Span};
use serde::{Deserialize, Serialize};

/// The manifest schema this build writes and reads. An agent refuses a manifest whose
/// [`ManifestContent::schema`] is higher, and reports its own version with the refusal.
pub const SCHEMA: u32 = 1;

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

impl Manifest {
    /// The service `service` of deployment `deployment`, if the manifest has it.
    pub fn service(&self, deployment: &str, service: &str) -> Option<&ManifestService> {
        self.content
            .applications
            .iter()
            .filter(|a| a.deployment == deployment)
            .flat_map(|a| &a.services)
            .find(|s| s.name == service)
    }
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestContent {
    /// The schema of this content; [`SCHEMA`] when left out.
    #[serde(default = "schema_one", skip_serializing_if = "is_schema_one")]
    pub schema: u32,
    /// Sorted by deployment name.
    pub applications: Vec<ManifestApplication>,
    /// Images to pull ahead of time: a rollout with `prefetch: true` lists the new version's
    /// images at sites whose wave has not opened yet, so the switch-over takes seconds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefetch: Vec<String>,
    /// The device classes the requirements of `applications` name, so the site decides offline
    /// which of its hosts qualify. Sorted by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_classes: Vec<DeviceClass>,
    /// The labels of the site's hosts, for host selectors and `requires.host_labels`; only when
    /// a requirement reads labels. Host name → labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// The hosts attached to the site, sorted by id, when it has two or more (a single-host
    /// site's manifest is byte for byte what it was before the site cluster): who the site's
    /// agents accept on their host-to-host channel, and where they reach each other. A
    /// detached host leaves the list with the next revision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub site_hosts: Vec<SiteHost>,
    /// The site's cluster settings (`cluster:` of the site), when it sets any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterSettings>,
}

/// How the hosts of a site work as one cluster, as the site sets it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSettings {
    /// How long the site's leader waits on a silent host before it takes it for down; the
    /// agent's `--site-failure-timeout` when left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_timeout_ms: Option<u64>,
}

/// One member of a site cluster, as the control plane lists it in the site's manifest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SiteHost {
    /// The host's id, as its certificate names it ([`crate::site::identity_uri`]).
    pub host: String,
    /// `ip:port` its agent listens on for its peers (`--listen-site`); left out when the host
    /// never said (an agent older than the site cluster, or one with no site address yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The host that forms the site's log, if its own and every other host's are empty: the
    /// first of the site's hosts to enroll (by id among those of the same second). One host,
    /// named by the control plane, so two hosts do not each form a log of their own whoever
    /// meets whom first; and since a host enrolling in the same second can take the name, the
    /// founder forms only once every other host has said its log is empty.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub founder: bool,
}

impl Default for ManifestContent {
    /// Empty content of schema 1.
    fn default() -> ManifestContent {
        ManifestContent {
            schema: 1,
            applications: Vec::new(),
            prefetch: Vec::new(),
            device_classes: Vec::new(),
            host_labels: BTreeMap::new(),
            cluster: None,
            site_hosts: Vec::new(),
        }
    }
}

fn schema_one() -> u32 {
    1
}

fn is_schema_one(n: &u32) -> bool {
    *n == 1
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestApplication {
    pub deployment: String,
    pub application: String,
    pub version: String,
    pub services: Vec<ManifestService>,
    /// The deployment's host selector (`placement.hosts`): which of the site's hosts may run
    /// its replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosts: Option<String>,
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

/// A published port. `host` is the port on the host, if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Port {
    pub container: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<u16>,
    #[serde(default, skip_serializing_if = "is_tcp")]
    pub protocol: Protocol,
}

fn is_tcp(p: &Protocol) -> bool {
    *p == Protocol::Tcp
}

/// What one replica asks of its host: limits on its container, and the capacity placement
/// reserves for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<Cpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
}

/// What a host must have for a replica to be placed on it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Requires {
    /// Device classes: the host needs at least one device of each, all mapped into the
    /// containers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub host_labels: BTreeMap<String, String>,
    /// The host's architecture, in OCI names (`amd64`, `arm64`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
}

impl Requires {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.host_labels.is_empty() && self.arch.is_none()
    }
}

/// A health probe. Serialized flat, as written: `{ http: {...}, interval: 5s, ... }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    #[serde(flatten)]
    pub check: HealthCheck,
    pub interval: Span,
    pub timeout: Span,
    pub failures: u32,
    pub start_period: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub path: String,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
}

/// A device class as the site receives it: a device has the class when any rule matches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceClass {
    pub name: String,
    pub rules: Vec<DeviceRule>,
    /// `nvidia`: the class's devices are NVIDIA GPUs, given to containers as device requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
}

/// One rule of a device class: every attribute it names must match its glob.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subsystem: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

impl DeviceClass {
    /// Whether `device` has this class: the one rule of device classes, which the control plane
    /// and the site both apply.
    pub fn matches(&self, device: &crate::host::Device) -> bool {
        self.rules.iter().any(|r| r.matches(device))
    }
}

impl DeviceRule {
    /// The rule of `spec`'s device classes ([`atoll_spec::device_class::RuleFields`]), except
    /// that a rule naming no attribute this agent knows (one of a newer control plane's) matches
    /// nothing rather than everything.
    pub fn matches(&self, device: &crate::host::Device) -> bool {
        let fields = atoll_spec::device_class::RuleFields {
            subsystem: self.subsystem.as_deref(),
            vendor: self.vendor.as_deref(),
            product: self.product.as_deref(),
            name: self.name.as_deref(),
            path: self.path.as_deref(),
            serial: self.serial.as_deref(),
        };
        fields != atoll_spec::device_class::RuleFields::default()
            && fields.matches(&device.attributes())
    }
}

impl From<&atoll_spec::DeviceClass> for DeviceClass {
    fn from(c: &atoll_spec::DeviceClass) -> DeviceClass {
        DeviceClass {
            name: c.name.clone(),
            rules: c
                .rules
                .iter()
                .map(|r| DeviceRule {
                    subsystem: r.subsystem.clone(),
                    vendor: r.vendor.clone(),
                    product: r.product.clone(),
                    name: r.name.clone(),
                    path: r.path.clone(),
                    serial: r.serial.clone(),
                })
                .collect(),
            gpu: c.gpu.map(|g| g.as_str().to_owned()),
        }
    }
}

impl From<&atoll_spec::application::Port> for Port {
    fn from(p: &atoll_spec::application::Port) -> Port {
        Port {
            container: p.container,
            host: p.host,
            protocol: p.protocol,
        }
    }
}

impl From<&atoll_spec::application::Resources> for Resources {
    fn from(r: &atoll_spec::application::Resources) -> Resources {
        Resources {
            cpu: r.cpu,
            memory: r.memory,
        }
    }
}

impl From<&atoll_spec::application::Requires> for Requires {
    fn from(r: &atoll_spec::application::Requires) -> Requires {
        Requires {
            devices: r.devices.clone(),
            host_labels: r.host_labels.clone(),
            arch: r.arch.map(|a| a.as_str().to_owned()),
        }
    }
}

impl From<&atoll_spec::application::Health> for Health {
    fn from(h: &atoll_spec::application::Health) -> Health {
        Health {
            check: h.check.clone(),
            interval: h.interval,
            timeout: h.timeout,
            failures: h.failures,
            start_period: h.start_period,
        }
    }
}

impl From<&atoll_spec::application::Volume> for Volume {
    fn from(v: &atoll_spec::application::Volume) -> Volume {
        Volume {
            name: v.name.clone(),
            path: v.path.clone(),
            read_only: v.read_only,
        }
    }
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
