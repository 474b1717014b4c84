//! The agent ↔ control plane protocol: enrollment, signed manifests, reports.
//!
//! Every connection starts at the agent. It enrolls once with a join token (which carries the
//! control plane's CA fingerprint, so the first contact is verified without any other secret),
//! then long-polls its site's manifest and posts reports over mutual TLS.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A join token: `atoll1.<secret>.<sha256 of the CA certificate, hex>`.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub secret: String,
    pub ca_fingerprint: String,
}

impl JoinToken {
    pub const PREFIX: &'static str = "atoll1";

    pub fn parse(text: &str) -> Result<JoinToken, String> {
        let hint = "a join token looks like atoll1.<secret>.<fingerprint>; create one with `atoll token create --site NAME`";
        let mut parts = text.trim().split('.');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some(Self::PREFIX), Some(secret), Some(fp), None)
                if !secret.is_empty()
                    && fp.len() == 64
                    && fp.bytes().all(|b| b.is_ascii_hexdigit()) =>
            {
                Ok(JoinToken {
                    secret: secret.to_owned(),
                    ca_fingerprint: fp.to_ascii_lowercase(),
                })
            }
            _ => Err(format!("malformed join token: {hint}")),
        }
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}.{}",
            Self::PREFIX,
            self.secret,
            self.ca_fingerprint
        )
    }
}

/// Never print the secret by accident.
impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_fingerprint", &self.ca_fingerprint)
            .finish_non_exhaustive()
    }
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    pub site: String,
    /// Seconds until the token expires; default one day.
    #[serde(default, deserialize_with = "crate::whole::option_u64")]
    pub ttl_seconds: Option<u64>,
    /// How many hosts may enroll with it; default one.
    #[serde(default, deserialize_with = "crate::whole::option_u32")]
    pub uses: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTokenResponse {
    pub token: String,
    pub site: String,
    pub expires_at: String,
    pub uses: u32,
}

pub use crate::host::{Device, Inventory, RuntimeInventory};

/// `POST /v1/enroll`: no client certificate yet; the join token proves the right to join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub token: String,
    /// A PKCS#10 request for the host's key, which never leaves the host.
    pub csr_pem: String,
    pub inventory: Inventory,
    /// The host's X25519 public key (base64) that secrets are sealed to. Its private half never
    /// leaves the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub site: String,
    pub host: String,
    pub certificate_pem: String,
    pub certificate_expires_at: String,
    pub ca_pem: String,
    /// The control plane's manifest-signing key: raw Ed25519 public key, base64.
    pub signing_key: String,
}

/// `POST /v1/sites/{site}/hosts/{host}/certificate` over mTLS: a fresh certificate for a new key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RenewRequest {
    pub csr_pem: String,
    /// The host's sealing key, for a host enrolled before it had one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RenewResponse {
    pub certificate_pem: String,
    pub certificate_expires_at: String,
    /// The sealing key sent differs from the host's registered one: secrets stay sealed to the
    /// old key until an operator approves the new one (`atoll host approve-key HOST`).
    #[serde(default)]
    pub sealing_key_pending: bool,
}

/// `GET /v1/sites/{site}/manifest?have=N` over mTLS: the manifest as signed bytes. The agent
/// verifies `signature` over exactly `payload` before parsing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedManifest {
    /// The `Manifest` as JSON text.
    pub payload: String,
    /// Ed25519 over `payload`'s bytes, base64.
    pub signature: String,
}

/// The largest body of a report request (`POST /v1/sites/{site}/reports`), in bytes: a larger
/// one is refused with 413. The agent packs its requests under it.
pub const MAX_REPORT_BYTES: usize = 1024 * 1024;
/// The most batches one report request carries.
pub const MAX_BATCHES_PER_REPORT: usize = 100;
/// The most events one batch carries: the agent splits a longer list over several batches.
pub const MAX_EVENTS_PER_BATCH: usize = 100;
/// The longest event message, in bytes (UTF-8): the agent cuts a longer one, marking the cut
/// ([`TRUNCATED_MARK`]).
pub const MAX_EVENT_MESSAGE_BYTES: usize = 4096;
/// The longest event kind, in bytes.
pub const MAX_EVENT_KIND_BYTES: usize = 64;
/// The longest time (RFC 3339) of an event or a batch, in bytes.
pub const MAX_EVENT_AT_BYTES: usize = 64;
/// What ends a message the agent cut to [`MAX_EVENT_MESSAGE_BYTES`], followed by how many bytes
/// were cut: `… [cut 3600000 bytes]`.
pub const TRUNCATED_MARK: &str = "… [cut ";

/// `POST /v1/sites/{site}/reports` over mTLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// Oldest first; sequence numbers grow by one per batch, per host.
    pub batches: Vec<Report>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub seq: u64,
    pub at: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<AgentEvent>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<HostStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentEvent {
    /// When it happened; for a folded event, when it last happened.
    pub at: String,
    /// `container`, `manifest`, `pull`, `refused`, `outbox`...
    pub kind: String,
    pub message: String,
    /// How many times it happened, when the agent folded repeats into this one event (at least
    /// 2); absent for an event that happened once. A control plane older than this field reads
    /// a folded event as one event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
}

/// A host's view of its work, as of one report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    /// The manifest revision the host is running.
    pub applied_revision: u64,
    pub replicas: Vec<ReplicaStatus>,
    /// Why the newest manifest offered was refused, if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// Reports that did not fit the agent's bounded outbox while offline and were dropped.
    #[serde(default)]
    pub dropped_reports: u64,
    /// The version of each secret the host has delivered to its services.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, u64>,
    /// What is wrong on the host itself, beside its replicas (a manifest it cannot keep, a
    /// kept manifest found damaged); empty when nothing is.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<HostCondition>,
    /// The host's place in its site cluster, as the host sees it. None from a host of a
    /// single-host site (a cluster of one, with no election) and from an agent older than the
    /// site cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<HostCluster>,
    /// What the host has left for replicas placed on it: its CPUs and memory minus the requests
    /// of the replicas placed on it (as placement counts, not measured use). None when the agent
    /// does not say (an agent older than this field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub free: Option<FreeResources>,
}

/// A host's view of its site cluster (the site's hosts as one Raft group) as of one report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCluster {
    pub role: ClusterRole,
    /// The Raft term the host is in.
    pub term: u64,
    /// The host the reporting host follows as leader in `term` (itself when it leads); None
    /// while it knows of none (an election is running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The hosts that vote, by host name, as the host last learnt them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<String>,
}

/// What a host is in its site cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterRole {
    /// It leads: it decides the site's placement and commits it to the site log.
    Leader,
    /// It votes in elections and for commits, and follows the leader.
    Voter,
    /// It follows the log without voting (past the voters a site keeps: 1, 3 or 5).
    NonVoter,
    /// It stands for election.
    Candidate,
    /// A role this version does not know (a newer agent's).
    #[serde(other)]
    Unknown,
}

impl ClusterRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ClusterRole::Leader => "leader",
            ClusterRole::Voter => "voter",
            ClusterRole::NonVoter => "non-voter",
            ClusterRole::Candidate => "candidate",
            ClusterRole::Unknown => "unknown",
        }
    }
}

/// A host's capacity not reserved by the replicas placed on it. Not [`crate::manifest::Resources`],
/// which is what one replica asks for (each part optional, written as people write it): this is
/// a count, with both parts always known, in the units placement counts in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FreeResources {
    /// Thousandths of a core.
    pub cpu_millis: u64,
    pub memory_bytes: u64,
}

/// A problem of the host, not of one replica: while one is raised the site is not healthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCondition {
    pub kind: ConditionKind,
    /// What happened and what to do, for a person.
    pub message: String,
    /// When it was raised.
    pub since: String,
}

/// The kinds of [`HostCondition`]: typed, so that the control plane decides on the kind and
/// never on the words of the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConditionKind {
    /// The agent could not keep (persist) a new manifest, so it does not apply it: a full or
    /// failing disk. What runs keeps running.
    ManifestNotKept,
    /// The kept manifest could not be read or verified at start: the agent runs on, touching
    /// nothing, until the control plane sends it a fresh one.
    KeptManifestDamaged,
    /// A kind this version does not know (a newer agent's).
    #[serde(other)]
    Unknown,
}

impl ConditionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionKind::ManifestNotKept => "manifest not kept",
            ConditionKind::KeptManifestDamaged => "kept manifest damaged",
            ConditionKind::Unknown => "unknown condition",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub deployment: String,
    pub service: String,
    pub replica: u32,
    pub state: ReplicaState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    pub image: String,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The application version this replica belongs to, from the manifest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// What the service's health check says; None when it has no check (or is not running).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<ReplicaHealth>,
}

/// The verdict of a replica's health check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum ReplicaHealth {
    /// Within its start period, not yet passing.
    Starting,
    Healthy,
    Unhealthy {
        reason: String,
    },
}

/// How a service, an application or a site is doing, from its replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Nothing reported yet.
    Unknown,
    /// Every replica runs and passes its check (or has none).
    Healthy,
    /// Some replicas are not running or not yet passing, none has failed.
    Degraded,
    /// A replica failed (crash loop, image that cannot be pulled) or fails its check.
    Unhealthy,
}

impl Health {
    /// The health of a set of replicas.
    pub fn of<'a>(replicas: impl IntoIterator<Item = &'a ReplicaStatus>) -> Health {
        let mut seen = false;
        let mut worst = Health::Healthy;
        for r in replicas {
            seen = true;
            let h = match (r.state, &r.health) {
                (ReplicaState::Failed, _) | (_, Some(ReplicaHealth::Unhealthy { .. })) => {
                    Health::Unhealthy
                }
                (ReplicaState::Running, None | Some(ReplicaHealth::Healthy)) => Health::Healthy,
                _ => Health::Degraded,
            };
            worst = worst.max(h);
        }
        if seen { worst } else { Health::Unknown }
    }

    /// The health of the hosts that sent `statuses`: their replicas', and at least degraded
    /// while one of them has a condition raised.
    pub fn of_hosts<'a>(statuses: impl IntoIterator<Item = &'a HostStatus>) -> Health {
        let statuses: Vec<&HostStatus> = statuses.into_iter().collect();
        let replicas = Health::of(statuses.iter().flat_map(|s| &s.replicas));
        if statuses.iter().any(|s| !s.conditions.is_empty()) {
            replicas.max(Health::Degraded)
        } else {
            replicas
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplicaState {
    Running,
    Starting,
    Pulling,
    Replacing,
    Failed,
    Missing,
}

impl ReplicaState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Running => "running",
            ReplicaState::Starting => "starting",
            ReplicaState::Pulling => "pulling",
            ReplicaState::Replacing => "replacing",
            ReplicaState::Failed => "failed",
            ReplicaState::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportAck {
    /// The highest sequence number stored; the agent forgets batches up to it.
    pub acked: u64,
}

/// `GET /v1/hosts` and `GET /v1/hosts/{name}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostView {
    pub id: String,
    pub site: String,
    pub inventory: Inventory,
    pub enrolled_at: String,
    pub certificate_expires_at: String,
    pub connected: bool,
    pub last_seen: Option<String>,
    pub status: Option<HostStatus>,
    /// When the host was detached from its site (the site was deleted): it is refused for good.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detached_at: Option<String>,
    /// The host sent a new sealing key at renewal that waits for an operator's approval
    /// (`atoll host approve-key`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sealing_key_pending: bool,
    /// The labels operators gave the host (`atoll label host`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `GET /v1/applications/{name}/status`: every site that should run the application, and how
/// each of its services is doing there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppStatus {
    pub application: String,
    pub services: Vec<String>,
    pub sites: Vec<SiteAppStatus>,
    /// Sites a deployment of the application selects where it is not placed, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unplaced: Vec<crate::Unplaced>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteAppStatus {
    pub site: String,
    pub deployment: String,
    pub version: String,
    pub connected: bool,
    /// Service name → its replicas at the site, each with the host that runs it (empty when
    /// the site never reported).
    pub services: BTreeMap<String, Vec<HostedReplica>>,
}

/// A replica as an application's status shows it: as its host reported it, and which host that
/// is. A row of its own rather than a field of [`ReplicaStatus`], which an agent reports of its
/// own host; flattened, so the JSON is the replica's with `host` beside its fields, which a
/// client older than `host` reads past.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedReplica {
    /// The host that reported the replica; None from a control plane older than this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(flatten)]
    pub status: ReplicaStatus,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventView {
    pub host: String,
    pub seq: u64,
    /// When the event happened, as its agent claimed; the time it was received instead when the
    /// claim is further in the future than the control plane allows for clock skew (then
    /// `claimed_at` says what was claimed).
    pub at: String,
    pub kind: String,
    pub message: String,
    /// When the control plane received the event: events are ordered and kept by this time.
    #[serde(default)]
    pub received_at: String,
    /// The time the agent claimed, only when it is not the one shown in `at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_tokens_round_trip_and_hide_their_secret() {
        let t = JoinToken {
            secret: "s3cr3t".into(),
            ca_fingerprint: "ab".repeat(32),
        };
        assert_eq!(JoinToken::parse(&t.to_string()), Ok(t.clone()));
        assert!(!format!("{t:?}").contains("s3cr3t"));
        for bad in [
            "",
            "atoll1",
            "atoll1..x",
            "atoll2.s.abab",
            &format!("atoll1.s.{}", "zz".repeat(32)),
        ] {
            assert!(JoinToken::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_condition_kind_from_a_newer_agent_is_read_as_unknown() {
        let status: HostStatus = serde_json::from_str(
            r#"{"applied_revision":1,"replicas":[],"conditions":[{"kind":"disk_on_fire","message":"m","since":"t","extra":1}]}"#,
        )
        .unwrap();
        assert_eq!(status.conditions[0].kind, ConditionKind::Unknown);
        let old: HostStatus =
            serde_json::from_str(r#"{"applied_revision":1,"replicas":[]}"#).unwrap();
        assert!(old.conditions.is_empty());
    }

    #[test]
    fn a_status_with_its_cluster_and_free_resources_round_trips() {
        let status = HostStatus {
            applied_revision: 3,
            cluster: Some(HostCluster {
                role: ClusterRole::NonVoter,
                term: 7,
                leader: Some("h1".into()),
                voters: vec!["h1".into(), "h2".into(), "h3".into()],
            }),
            free: Some(FreeResources {
                cpu_millis: 1500,
                memory_bytes: 3 << 30,
            }),
            ..HostStatus::default()
        };
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["cluster"]["role"], "non_voter");
        assert_eq!(json["free"]["cpu_millis"], 1500);
        assert_eq!(serde_json::from_value::<HostStatus>(json).unwrap(), status);
    }

    #[test]
    fn a_status_of_an_old_agent_has_no_cluster_nor_free_resources() {
        let old: HostStatus =
            serde_json::from_str(r#"{"applied_revision":1,"replicas":[]}"#).unwrap();
        assert_eq!((old.cluster, old.free), (None, None));
        // And a lone host's status says nothing of either, as before these fields.
        let json = serde_json::to_string(&HostStatus::default()).unwrap();
        assert!(
            !json.contains("cluster") && !json.contains("free"),
            "{json}"
        );
    }

    #[test]
    fn a_cluster_role_from_a_newer_agent_is_read_as_unknown() {
        let cluster: HostCluster =
            serde_json::from_str(r#"{"role":"witness","term":2,"extra":true}"#).unwrap();
        assert_eq!(cluster.role, ClusterRole::Unknown);
        assert_eq!(
            (cluster.leader, cluster.voters),
            (None, Vec::<String>::new())
        );
        for (role, word) in [
            (ClusterRole::Leader, "leader"),
            (ClusterRole::Voter, "voter"),
            (ClusterRole::NonVoter, "non_voter"),
            (ClusterRole::Candidate, "candidate"),
        ] {
            assert_eq!(serde_json::to_value(role).unwrap(), word);
            assert_eq!(role.as_str(), word.replace('_', "-"));
        }
    }

    #[test]
    fn a_hosted_replica_is_the_replica_with_its_host_beside_its_fields() {
        let replica = ReplicaStatus {
            deployment: "pos".into(),
            service: "web".into(),
            replica: 1,
            state: ReplicaState::Running,
            container_id: None,
            image: "web:1".into(),
            restarts: 0,
            last_exit_code: None,
            since: None,
            message: None,
            version: Some("1".into()),
            health: Some(ReplicaHealth::Healthy),
        };
        let hosted = HostedReplica {
            host: Some("h2".into()),
            status: replica.clone(),
        };
        let json = serde_json::to_value(&hosted).unwrap();
        assert_eq!(
            (&json["host"], &json["state"]),
            (&"h2".into(), &"running".into())
        );
        assert_eq!(
            serde_json::from_value::<HostedReplica>(json.clone()).unwrap(),
            hosted
        );
        // A client older than `host` reads the row as the replica it always was.
        assert_eq!(
            serde_json::from_value::<ReplicaStatus>(json).unwrap(),
            replica
        );
        // A control plane older than `host` sends the replica alone.
        let old = serde_json::to_value(&replica).unwrap();
        let read: HostedReplica = serde_json::from_value(old).unwrap();
        assert_eq!((read.host, read.status), (None, replica));
    }

    #[test]
    fn a_host_with_a_condition_is_not_healthy() {
        let mut status = HostStatus::default();
        assert_eq!(Health::of_hosts([&status]), Health::Unknown);
        status.conditions.push(HostCondition {
            kind: ConditionKind::ManifestNotKept,
            message: "cannot keep the manifest: no space left on device".into(),
            since: "t".into(),
        });
        assert_eq!(Health::of_hosts([&status]), Health::Degraded);
    }

    #[test]
    fn a_folded_event_carries_its_count_and_a_single_one_none() {
        let once = AgentEvent {
            at: "t".into(),
            kind: "container".into(),
            message: "m".into(),
            count: None,
        };
        assert!(!serde_json::to_string(&once).unwrap().contains("count"));
        let folded: AgentEvent =
            serde_json::from_str(r#"{"at":"t","kind":"k","message":"m","count":4}"#).unwrap();
        assert_eq!(folded.count, Some(4));
    }
}

/// `GET /v1/deployments/{name}/rollout`: a rollout as people look at it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub deployment: String,
    pub from_version: Option<String>,
    pub to_version: String,
    /// `running`, `paused`, `complete`, `rolling_back`, `rolled_back`, `aborted`, `superseded`.
    pub phase: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub started_at: String,
    pub waves: Vec<WaveView>,
    pub history: Vec<NoteView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveView {
    /// 0 is the canary when there is one.
    pub index: usize,
    pub canary: bool,
    pub open: bool,
    pub sites: Vec<SiteRollout>,
}

impl WaveView {
    /// How many of the wave's sites are in `state`.
    pub fn count(&self, state: &str) -> usize {
        self.sites.iter().filter(|s| s.state == state).count()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteRollout {
    pub site: String,
    /// `waiting`, `updating`, `soaking`, `succeeded`, `failed`, `pending`, `reverting`, `reverted`.
    pub state: String,
    /// The version the site is told to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NoteView {
    pub at: String,
    pub text: String,
}

/// `GET /v1/deployments/{name}/rollouts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutHistory {
    pub current: Option<RolloutView>,
    /// Oldest first.
    pub past: Vec<RolloutView>,
}
