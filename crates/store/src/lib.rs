//! The control plane's durable state, behind one trait.
//!
//! The store keeps rows; it knows nothing of what a spec means. Writes go in as one batch per
//! API call and commit in one transaction, guarded by the store's version: a batch computed from
//! a snapshot that is no longer current is refused with [`StoreError::Conflict`], so decisions
//! made from snapshots can never overwrite each other (the control plane simply recomputes).
//! A `commit` that returns `Ok` is durable.
//!
//! Backends: SQLite (embedded, the default) and PostgreSQL (one database behind several
//! control-plane replicas). Every backend must pass the conformance suite in `conformance.rs`,
//! written against the trait only, and both do.

mod columns;
mod group;
mod location;
#[cfg(any(test, feature = "test-cluster"))]
pub mod pg_cluster;
mod pg_listen;
mod postgres;
mod report;
mod sqlite;

#[cfg(test)]
mod conformance;

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use location::StoreLocation;
pub use postgres::PostgresStore;
pub use report::ReportCursor;
pub use sqlite::{SqliteStore, backup};

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

/// A join token as stored: the secret itself is never kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokenRow {
    pub id: String,
    pub hash: String,
    pub site: String,
    pub uses_left: u32,
    pub expires_at: String,
    pub created_at: String,
}

/// Why a join token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    Unknown,
    Expired,
    UsedUp,
}

/// A host as stored. Its default is what a new host starts with besides its own facts:
/// attached, no previous certificate, no key waiting, numbered by the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRow {
    pub id: String,
    pub site: String,
    pub hostname: String,
    /// JSON of the hardware and software inventory.
    pub inventory: String,
    pub cert_serial: String,
    pub cert_expiry: String,
    pub enrolled_at: String,
    pub last_seen: Option<String>,
    /// The host's X25519 public key (base64) that secrets are sealed to.
    pub recipient: Option<String>,
    /// The certificate the last renewal replaced, accepted until `previous_until`.
    pub previous_serial: Option<String>,
    pub previous_until: Option<String>,
    /// A new sealing key the host sent at renewal, waiting for an operator's approval.
    pub pending_recipient: Option<String>,
    pub state: HostState,
    /// When the host was detached from its site.
    pub detached_at: Option<String>,
    /// The host-change sequence number of the host's last change of membership or
    /// credentials: the store sets it; a cache reads what changed after the highest it saw.
    pub changed: u64,
    /// The labels operators gave the host (`atoll label host`), stored as a JSON object. An
    /// enrollment starts with none; only [`Store::set_host_labels`] changes them.
    pub labels: BTreeMap<String, String>,
}

/// Whether a host still belongs to its site. A host is attached from enrollment until its site
/// is deleted; then it is detached for good: a site re-created under the same name is a new
/// site, and no old host belongs to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostState {
    #[default]
    Attached,
    Detached,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Attached => "attached",
            HostState::Detached => "detached",
        }
    }

    /// The state stored as `text`; `None` for a state this atoll does not know.
    pub fn parse(text: &str) -> Option<HostState> {
        match text {
            "attached" => Some(HostState::Attached),
            "detached" => Some(HostState::Detached),
            _ => None,
        }
    }
}

/// What an enrollment found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolled {
    /// The host is stored, attached to its site.
    Yes,
    /// A host with this id exists already (its record untouched): draw another id.
    IdTaken,
    /// The join token is gone: its site was deleted since the token was used.
    SiteDeleted,
}

/// A secret as stored: its bookkeeping in the clear, its values encrypted.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretRow {
    pub name: String,
    /// JSON of the keys, versions and sites; never a value.
    pub meta: String,
    /// Which master key wraps `wrapped_key`.
    pub key_id: String,
    /// This version's data key, encrypted under the master key.
    pub wrapped_key: Vec<u8>,
    /// The values, encrypted under the data key.
    pub ciphertext: Vec<u8>,
    pub updated_at: String,
}

impl std::fmt::Debug for SecretRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRow")
            .field("name", &self.name)
            .field("meta", &self.meta)
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// A secret's bookkeeping without its values: what compiling manifests needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretHead {
    pub name: String,
    pub meta: String,
}

/// The newest status a host reported (opaque JSON) and the highest report sequence stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatusRow {
    pub host: String,
    pub site: String,
    pub seq: u64,
    pub status: String,
    pub updated_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRow {
    pub host: String,
    pub seq: u64,
    pub idx: u32,
    pub site: String,
    /// When the agent says the event happened.
    pub at: String,
    pub kind: String,
    pub message: String,
    /// When the control plane received it: events are ordered and retained by this time.
    pub received_at: String,
}

/// How many events a site keeps: at most `keep` (its newest by time received), none received
/// before `received_after` (RFC 3339, the caller's now less the age kept). Applied as reports
/// arrive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRetention {
    pub keep: u64,
    pub received_after: String,
}

/// A site's events: how many are kept and how many retention removed, ever.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub site: String,
    pub kept: u64,
    pub pruned: u64,
}

/// One batch of an agent's report: its sequence number, events, and possibly a new status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportBatch {
    pub seq: u64,
    /// `(at, kind, message)` of each event.
    pub events: Vec<(String, String, String)>,
    pub status: Option<String>,
}

/// What storing a report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportRecorded {
    /// The highest sequence stored for the host: the acknowledgement.
    pub acked: u64,
    /// How many of the site's events retention removed in this transaction.
    pub pruned: u64,
}

/// A host's new inventory, and the events the control plane made of its change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InventoryChange {
    pub host: String,
    pub hostname: String,
    /// JSON of the inventory.
    pub inventory: String,
    /// When it was received (RFC 3339): the events' time and the host's last-seen time.
    pub now: String,
    /// `(kind, message)` of each event, in order.
    pub events: Vec<(String, String)>,
    pub retention: EventRetention,
}

/// A deployment's rollout state (opaque JSON) and when it last changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRow {
    pub deployment: String,
    pub state: String,
    pub at: String,
}

/// One change in a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write {
    /// Create or replace a resource.
    PutResource(ResourceRow),
    /// The site is being deleted: detaches its hosts for good (each change taking the next
    /// host-change number), and forgets its join tokens and its events, so that a site made
    /// again under the name starts with none of the old one's hosts, tokens or history.
    RetireSite {
        site: String,
        at: String,
    },
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
    /// It takes the next manifest-change number ([`Store::manifest_changes`]).
    PutManifest(ManifestRow),
    PutToken(TokenRow),
    /// Create or replace a deployment's current rollout.
    PutRollout(RolloutRow),
    /// Create or replace a secret.
    PutSecret(SecretRow),
    DeleteSecret {
        name: String,
    },
    /// Create or replace a setting.
    PutSetting {
        name: String,
        value: String,
    },
    /// Move a deployment's current rollout to its history (a newer one replaces it, or the
    /// deployment is deleted).
    ArchiveRollout {
        deployment: String,
        at: String,
    },
    Audit {
        at: String,
        actor: String,
        action: String,
        detail: String,
    },
    /// The batch commits only while lease `lease` still has fence `fence` (see
    /// [`Store::acquire_lease`]); otherwise the whole batch is refused with
    /// [`StoreError::Conflict`] (`expected` the fence given, `actual` the lease's, 0 for no
    /// lease). So a holder that was paused while another took its lease over cannot write.
    Fenced {
        lease: String,
        fence: u64,
    },
}

/// A lease as stored: its holder (empty once released), its fence, and when it expires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRow {
    pub name: String,
    pub holder: String,
    /// Grows by one every time the lease changes hands; never reset.
    pub fence: u64,
    /// Milliseconds since the Unix epoch.
    pub expires_at_ms: u64,
}

/// What one replica saw of one host, as it records it ([`Store::put_presence`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceSeen {
    pub host: String,
    pub site: String,
    /// The long-polls the host holds open on that replica now.
    pub polls: u32,
    /// How long ago the replica last heard from the host, on its own monotonic clock: the
    /// store turns it into a time on its own clock, so no two replicas' clocks are compared.
    pub seen_ago_ms: u64,
}

/// One replica's record of one host, as stored: one row per replica and host, which only that
/// replica writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceRow {
    pub replica: String,
    pub host: String,
    pub site: String,
    pub polls: u32,
    /// Milliseconds since the Unix epoch, on the store's clock.
    pub seen_at_ms: u64,
}

/// The presence records changed since a change number, with what judging them needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PresenceChanges {
    /// The store's clock when it read them, in milliseconds since the Unix epoch.
    pub now_ms: u64,
    /// The rows changed after the number asked for, each with its change number, in number
    /// order; a (replica, host) appears once, as it is now.
    pub rows: Vec<(u64, PresenceRow)>,
    /// Every replica's last heartbeat (its last [`Store::put_presence`]), on the store's clock.
    pub beats: Vec<(String, u64)>,
}

/// Everything the control plane's pure core needs to decide an apply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub version: u64,
    pub resources: Vec<ResourceRow>,
    pub manifests: Vec<ManifestHead>,
    pub rollouts: Vec<RolloutRow>,
    pub secrets: Vec<SecretHead>,
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
    /// The stored manifests of `sites` (those that have one), in any order, in one read: how a
    /// replica keeps the manifests another committed, ready for its long-polls.
    async fn manifests_of(&self, sites: &[String]) -> Result<Vec<ManifestRow>>;
    /// The manifests written after manifest-change number `after`, each with its number, in
    /// number order, at most `limit` of them: how a control plane learns what other replicas
    /// committed. Every manifest write takes the next number, and a number is never seen
    /// before every lower one is committed, so a reader that goes on after the highest number
    /// it saw misses no change. A site appears once, with its newest manifest.
    async fn manifest_changes(&self, after: u64, limit: u32) -> Result<Vec<(u64, ManifestHead)>>;
    /// The highest manifest-change number committed; 0 before any.
    async fn last_manifest_change(&self) -> Result<u64>;
    /// A hint that manifests may have been committed elsewhere, so a follower of
    /// [`Store::manifest_changes`] reads at once rather than at its next period; ready when
    /// returned. A hint may be lost or ring for nothing new: the feed is the truth. `None`
    /// for a backend without one (SQLite, whose one control plane makes every commit itself).
    async fn manifest_hint(&self) -> Result<Option<std::sync::Arc<tokio::sync::Notify>>>;
    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>>;
    /// The newest `limit` audit entries, newest first.
    async fn audit(&self, limit: u32) -> Result<Vec<AuditRow>>;
    /// Every deployment's current rollout (also in the snapshot), without the rest of it.
    async fn rollouts(&self) -> Result<Vec<RolloutRow>>;
    /// A deployment's finished rollouts, oldest first (the current one is in the snapshot).
    async fn rollout_history(&self, deployment: &str) -> Result<Vec<RolloutRow>>;
    async fn secret(&self, name: &str) -> Result<Option<SecretRow>>;
    /// Every secret with its encrypted values, ordered by name.
    async fn secrets(&self) -> Result<Vec<SecretRow>>;
    async fn setting(&self, name: &str) -> Result<Option<String>>;

    // Enrollment and reports: not versioned, never in a conflict with desired-state commits.

    /// Records a mutating call that is not a desired-state commit (a token made, a host
    /// enrolled).
    async fn append_audit(&self, at: &str, actor: &str, action: &str, detail: &str) -> Result<()>;
    async fn create_join_token(&self, token: JoinTokenRow) -> Result<()>;
    /// Uses a join token once, atomically: the token's row if it was valid at `now` (RFC 3339),
    /// else why not.
    async fn use_join_token(
        &self,
        hash: &str,
        now: &str,
    ) -> Result<Result<JoinTokenRow, TokenRefusal>>;
    /// Enrolls a new host with the join token `token` (its id) used for it: an insert that
    /// never replaces a row, made only while the token is still stored (a site's deletion
    /// forgets its tokens in the same commit that detaches its hosts, so a host enrolling while
    /// its site is deleted is either detached with the rest or not stored). The state,
    /// `changed` and labels given are ignored: a new host is attached, unlabelled, at the next
    /// host-change number.
    async fn enroll_host(&self, host: HostRow, token: &str) -> Result<Enrolled>;
    /// Replaces an attached host's credentials and facts (a renewal), at the next host-change
    /// number; its site, state and labels are kept. `Ok(false)` when no attached host has its id.
    async fn put_host(&self, host: HostRow, replacing: &str) -> Result<bool>;
    /// Replaces an attached host's labels with `labels`, only while they are still `old` (so
    /// two changes made from one reading cannot both win). Not a host change: labels are not
    /// membership or credentials. `Ok(false)` when no attached host has this id and labels.
    async fn set_host_labels(
        &self,
        id: &str,
        old: &BTreeMap<String, String>,
        labels: &BTreeMap<String, String>,
    ) -> Result<bool>;
    async fn host(&self, id: &str) -> Result<Option<HostRow>>;
    /// The hosts attached to their sites (the members of every site), ordered by site then id.
    async fn hosts(&self) -> Result<Vec<HostRow>>;
    /// Every host ever enrolled, detached ones too, ordered by site then id.
    async fn all_hosts(&self) -> Result<Vec<HostRow>>;
    /// The hosts attached to one site, ordered by id.
    async fn site_hosts(&self, site: &str) -> Result<Vec<HostRow>>;
    /// The hosts whose membership or credentials changed after host-change number `after`,
    /// in the order of their changes.
    async fn host_changes(&self, after: u64) -> Result<Vec<HostRow>>;
    /// Stores the batches of a host's report that are newer than what is stored, in one
    /// transaction: their events, the newest status among them, the host's last-seen time.
    /// Returns the highest sequence now stored, which the agent may forget up to. Each event is
    /// received at `now`; in the same transaction, the site's events beyond `retention` are
    /// removed (oldest received first) and counted in its [`EventCounts::pruned`].
    async fn record_report(
        &self,
        host: &str,
        site: &str,
        now: &str,
        batches: Vec<ReportBatch>,
        retention: &EventRetention,
    ) -> Result<ReportRecorded>;
    /// Replaces an attached host's inventory and hostname, and stores `change.events` in its
    /// site's events, in one transaction. The events are the control plane's own, not a
    /// report's: they take sequence 0, which no report batch has (batches are numbered from 1),
    /// and the next index of that sequence, so they never collide with a batch or one another.
    /// Retention applies as for a report. The host-change number does not move (an inventory
    /// is neither membership nor credentials). `Ok(false)` when no attached host has its id.
    async fn put_inventory(&self, change: InventoryChange) -> Result<bool>;
    async fn host_statuses(&self) -> Result<Vec<HostStatusRow>>;
    /// The newest `limit` events of a site by time received, oldest first.
    async fn events(&self, site: &str, limit: u32) -> Result<Vec<EventRow>>;
    /// Every site that has had events, ordered by site.
    async fn event_counts(&self) -> Result<Vec<EventCounts>>;

    // Leases: a loop that must run on one replica at a time runs under one.

    /// Takes lease `name` for `holder` until `now_ms + ttl` (milliseconds since the Unix
    /// epoch, the caller's clock), atomically, when it is free, expired or already `holder`'s;
    /// returns its fence, or `None` when another holder has it. A renewal by the holder keeps
    /// the fence; a change of holder (a takeover, or a take after a release) increments it.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
        now_ms: u64,
    ) -> Result<Option<u64>>;
    /// Gives lease `name` up if `holder` has it, keeping its fence (so the next holder's is
    /// higher); `Ok(false)` when `holder` did not have it.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<bool>;
    async fn lease(&self, name: &str) -> Result<Option<LeaseRow>>;

    // Presence: which hosts each replica is in touch with, shared by every replica.

    /// In one transaction: `replica`'s heartbeat, at the store's clock now; each of `seen` as
    /// `replica`'s record of its host (replacing the one before), seen at the store's now minus
    /// its `seen_ago_ms`, at the next presence-change number; and every other replica whose
    /// last heartbeat is older than `forget_after` forgotten, its records with it. A reader
    /// that saw change `n` never later finds a lower one committed. Returns the store's now,
    /// in milliseconds since the Unix epoch.
    async fn put_presence(
        &self,
        replica: &str,
        seen: Vec<PresenceSeen>,
        forget_after: std::time::Duration,
    ) -> Result<u64>;
    /// The presence records changed after change number `after`, at most `limit` of them, the
    /// replicas' heartbeats and the store's clock now.
    async fn presence_changes(&self, after: u64, limit: u32) -> Result<PresenceChanges>;
}

/// A lease's holder names it: an empty one is what a released lease has.
fn check_holder(holder: &str) -> Result<()> {
    if holder.is_empty() {
        return Err(StoreError::Backend(
            "a lease holder must have a name: the empty one marks a released lease".into(),
        ));
    }
    Ok(())
}

/// A duration in milliseconds as stored, cut to what the column holds.
fn millis(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Milliseconds as stored: a ttl too long for the column is cut to the longest one.
fn lease_expiry(now_ms: u64, ttl: std::time::Duration) -> u64 {
    let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_add(ttl).min(i64::MAX as u64)
}
