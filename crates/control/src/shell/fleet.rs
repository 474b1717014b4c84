//! What the control plane knows, in memory, about agents right now: which manifest revision
//! and content hash each site should have (so waiting long-polls wake the moment it changes,
//! and compare what an agent holds, without reading the store), the manifests committed since start (so the long-polls a commit wakes, every site at
//! once after a fleet-wide change, do not all read the store), and which hosts are in touch.
//!
//! The heads follow the store's manifest-change feed ([`Fleet::follow`], every
//! [`FOLLOW_EVERY`]), so a commit made by another replica wakes the long-polls waiting here
//! within that period: the feed, not a message between replicas, is the truth, and a reader
//! that goes on from the highest number it saw misses no change. The manifests the feed names
//! that this process did not commit are read in one go and signed before their heads are
//! published, so the polls they wake answer from memory; a manifest committed before this
//! process started is read from the store by the poll that needs it. On PostgreSQL every manifest commit also
//! NOTIFYs a channel the store listens on ([`Store::manifest_hint`]): a hint that has the feed
//! read at once, so a wake-up usually takes one round trip rather than up to a period. With SQLite (one control plane) the feed only
//! repeats this process's own commits, which `publish` ignores; it is followed anyway: one
//! indexed read per period, and one code path whatever the backend.
//!
//! Presence is shared the same way: this process keeps its own hosts' open polls and last
//! requests in memory (the truth for this replica, at once), writes what changed of them to the
//! store with a heartbeat once a second in one write ([`Fleet::flush_presence`]), and follows
//! the other replicas' records by presence-change number ([`Fleet::follow_presence`]). Its
//! readers ([`Fleet::host_connected`], [`Fleet::connectivity`]) judge both with
//! `core::presence`, on the store's clock, and read no store themselves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_store::{PresenceRow, PresenceSeen, Store, StoreError};
use bytes::Bytes;
use tokio::sync::{Notify, watch};

use super::hostbook::HostBook;
use super::periodic;
use super::signing::{ManifestSigner, sign_all};
use crate::core;
pub use crate::core::presence::Connectivity;
use crate::core::presence::{Record, Written};

/// How often the fleet reads the manifests other replicas committed: a commit anywhere wakes
/// the long-polls waiting here within this, plus one read.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How many manifest changes one read of the feed takes at most (a fleet-wide change is read
/// in pages).
const FOLLOW_PAGE: u32 = 10_000;

/// How often this replica writes its presence (with its heartbeat) and reads the others'.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// How many presence records one read takes at most.
const PRESENCE_PAGE: u32 = 10_000;
/// A replica silent this long is forgotten, its records with it, by the next write of any
/// other: long past the grace, so nothing it said still counts.
const FORGET_REPLICAS_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug)]
pub struct Fleet {
    revisions: Mutex<HashMap<String, watch::Sender<Head>>>,
    /// Each site's newest manifest committed by this process: revision and how a long-poll
    /// answers it.
    manifests: Mutex<HashMap<String, (u64, Published)>>,
    /// The hosts in touch with this replica: its own truth, written to the store.
    presence: Mutex<HashMap<String, Presence>>,
    /// The other replicas' records, following the store. Locked after `presence` when both are.
    shared: Mutex<Shared>,
    /// This process's name in the store's presence records: random, so a restarted process
    /// never takes a dead one's records for its own.
    replica: String,
    /// Which site each host belongs to, following the store.
    hosts: Arc<HostBook>,
    /// When this control plane started: presence is only known from then on.
    started: Instant,
    /// The highest manifest-change number followed.
    followed: Mutex<u64>,
}

impl Default for Fleet {
    fn default() -> Fleet {
        Fleet {
            revisions: Mutex::default(),
            manifests: Mutex::default(),
            presence: Mutex::default(),
            shared: Mutex::default(),
            replica: format!("{}-{:016x}", std::process::id(), rand::random::<u64>()),
            hosts: Arc::default(),
            started: Instant::now(),
            followed: Mutex::default(),
        }
    }
}

/// What the store says of the other replicas' presence.
#[derive(Debug, Default)]
struct Shared {
    /// The highest presence-change number followed.
    followed: u64,
    /// Every other replica's record of each host, by host.
    rows: HashMap<String, Vec<PresenceRow>>,
    /// Each replica's last heartbeat, on the store's clock.
    beats: HashMap<String, u64>,
    /// The store's clock at the last read, and this process's clock then: the store's now is
    /// estimated from them. None before the first read (a fleet with no store).
    clock: Option<(u64, Instant)>,
    /// The store held a record that counted, or another live replica, at the first read: then
    /// this replica trusts the records rather than presume unknown sites connected.
    knew_at_start: bool,
}

/// A committed manifest, ready for the long-polls it wakes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    /// Signed when it was committed: the answer's body, as it goes out.
    Signed(Bytes),
    /// Its services read secrets, sealed to the site's hosts when asked for: the manifest's
    /// JSON, to be sealed and signed then.
    Unsealed(Arc<str>),
}

/// A site's newest manifest as the fleet knows it: its revision and content hash, together, so
/// that a poll never compares one revision's hash with another's number. Revision 0: none yet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    pub revision: u64,
    pub hash: Arc<str>,
}

impl Head {
    /// `(revision, hash)`, as `core::revision` takes it; none before the site's first manifest.
    pub fn stored(&self) -> Option<(u64, &str)> {
        (self.revision > 0).then_some((self.revision, &*self.hash))
    }
}

#[derive(Debug, Clone)]
struct Presence {
    site: String,
    last_seen: Instant,
    open_polls: u32,
    /// What was last written of it to the store.
    written: Option<Written>,
}

/// Milliseconds of a duration, as the presence rules count them.
fn ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Fleet {
    /// A fleet that knows every stored manifest's revision, as a starting control plane must:
    /// long-polls read the store only when the fleet says there is something newer.
    pub async fn from_store(store: &dyn Store) -> Result<Fleet, StoreError> {
        let fleet = Fleet::default();
        // The number first: a commit between it and the snapshot is read again by the first
        // follow, which publishing ignores.
        *fleet.lock_followed() = store.last_manifest_change().await?;
        for head in store.snapshot().await?.manifests {
            fleet.publish(&head.site, head.revision, &head.hash);
        }
        fleet.hosts.follow(store).await?;
        fleet.follow_presence(store).await?;
        let now = fleet.now_ms();
        let mut shared = fleet.lock_shared();
        let knew = shared.beats.iter().any(|(replica, beat)| {
            *replica != fleet.replica && core::presence::alive(Some(*beat), now)
        }) || shared
            .rows
            .values()
            .flatten()
            .any(|row| core::presence::counts(&shared.record(row, &fleet.replica, now), now));
        shared.knew_at_start = knew;
        drop(shared);
        Ok(fleet)
    }

    /// Which site each host belongs to, and whether it still does.
    pub fn hosts(&self) -> &Arc<HostBook> {
        &self.hosts
    }

    /// Reads the manifests committed (by any replica) since the last change followed, and
    /// publishes their heads. The manifests this process did not commit itself are read in one
    /// go and readied by `signer` first, as a commit here readies its own, so the long-polls
    /// their heads wake answer from memory: a fleet-wide change made elsewhere had each of
    /// thousands of woken polls read its manifest and sign it. How many changes it read.
    pub async fn follow(
        &self,
        store: &dyn Store,
        signer: &Arc<ManifestSigner>,
    ) -> Result<usize, StoreError> {
        let mut read = 0;
        loop {
            let after = *self.lock_followed();
            let page = store.manifest_changes(after, FOLLOW_PAGE).await?;
            let full = page.len() == FOLLOW_PAGE as usize;
            read += page.len();
            let unknown: Vec<String> = page
                .iter()
                .filter(|(_, head)| {
                    self.manifest(&head.site)
                        .is_none_or(|(revision, _)| revision < head.revision)
                })
                .map(|(_, head)| head.site.clone())
                .collect();
            if !unknown.is_empty() {
                let rows = store.manifests_of(&unknown).await?;
                let hashes: HashMap<String, String> = rows
                    .iter()
                    .map(|r| (r.site.clone(), r.hash.clone()))
                    .collect();
                let bodies = rows
                    .into_iter()
                    .map(|r| (r.site, r.revision, r.body))
                    .collect();
                for part in sign_all(signer, bodies) {
                    // A signing thread that panicked readies nothing: its polls read the store.
                    for (site, revision, published) in part.await.unwrap_or_default() {
                        if let Some(hash) = hashes.get(&site) {
                            self.publish_manifest(&site, revision, hash, published);
                        }
                    }
                }
            }
            for (number, head) in page {
                self.publish(&head.site, head.revision, &head.hash);
                let mut followed = self.lock_followed();
                *followed = (*followed).max(number);
            }
            if !full {
                return Ok(read);
            }
        }
    }

    /// Follows the store every `period`, and at once when `hint` rings, until `shutdown`
    /// turns true: how commits other replicas make wake the long-polls held here. A failed
    /// read is logged and tried again next turn.
    pub async fn follow_every(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        signer: Arc<ManifestSigner>,
        period: Duration,
        hint: Option<Arc<Notify>>,
        shutdown: watch::Receiver<bool>,
    ) {
        let (fleet, store, signer) = (&*self, &*store, &signer);
        periodic::every(period, hint, shutdown, move || async move {
            if let Err(e) = fleet.follow(store, signer).await {
                tracing::warn!(error = %e, "reading manifest changes failed; trying again");
            }
        })
        .await;
    }

    fn lock_followed(&self) -> std::sync::MutexGuard<'_, u64> {
        self.followed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A site's manifest is now at `revision` with content `hash`: wake everyone waiting for
    /// it.
    pub fn publish(&self, site: &str, revision: u64, hash: &str) {
        let head = Head {
            revision,
            hash: Arc::from(hash),
        };
        let mut revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        match revisions.get(site) {
            Some(tx) => {
                tx.send_if_modified(|current| {
                    let newer = core::revision::answers(revision, current.revision);
                    if newer {
                        *current = head;
                    }
                    newer
                });
            }
            None => {
                revisions.insert(site.to_owned(), watch::channel(head).0);
            }
        }
    }

    /// A site's manifest was committed at `revision` with content `hash`: keep it, and wake
    /// everyone waiting for it.
    pub fn publish_manifest(&self, site: &str, revision: u64, hash: &str, manifest: Published) {
        {
            let mut manifests = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
            let newer = manifests.get(site).is_none_or(|(r, _)| *r < revision);
            if newer {
                manifests.insert(site.to_owned(), (revision, manifest));
            }
        }
        self.publish(site, revision, hash);
    }

    /// The site's newest manifest committed by this process, if any.
    pub fn manifest(&self, site: &str) -> Option<(u64, Published)> {
        let manifests = self.manifests.lock().unwrap_or_else(|e| e.into_inner());
        manifests.get(site).cloned()
    }

    /// A receiver that changes whenever the site's revision grows.
    pub fn watch(&self, site: &str) -> watch::Receiver<Head> {
        let mut revisions = self.revisions.lock().unwrap_or_else(|e| e.into_inner());
        revisions
            .entry(site.to_owned())
            .or_insert_with(|| watch::channel(Head::default()).0)
            .subscribe()
    }

    /// Marks a host as seen now. `polling` holds the mark while a long-poll is open.
    pub fn seen(&self, host: &str, site: &str) {
        let mut presence = self.lock_presence();
        let entry = presence.entry(host.to_owned()).or_insert_with(|| Presence {
            site: site.to_owned(),
            last_seen: Instant::now(),
            open_polls: 0,
            written: None,
        });
        entry.last_seen = Instant::now();
        entry.site = site.to_owned();
    }

    pub fn polling<'a>(&'a self, host: &'a str, site: &str) -> PollGuard<'a> {
        self.seen(host, site);
        self.adjust(host, 1);
        PollGuard { fleet: self, host }
    }

    fn adjust(&self, host: &str, delta: i32) {
        let mut presence = self.lock_presence();
        if let Some(p) = presence.get_mut(host) {
            p.open_polls = p.open_polls.saturating_add_signed(delta);
            p.last_seen = Instant::now();
        }
    }

    fn lock_presence(&self) -> std::sync::MutexGuard<'_, HashMap<String, Presence>> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The store's clock now, as this process estimates it (the now of its last read plus its
    /// own time since); before any read, milliseconds on a clock of this process's own.
    fn now_ms(&self) -> u64 {
        let shared = self.lock_shared();
        match shared.clock {
            Some((store_ms, read_at)) => store_ms.saturating_add(ms(read_at.elapsed())),
            None => ms(self.started.elapsed()),
        }
    }

    /// This replica's record of a host, on the store's clock estimated as `now_ms`.
    fn own_record(p: &Presence, now_ms: u64) -> Record<'_> {
        Record {
            site: &p.site,
            polls: p.open_polls,
            seen_at_ms: now_ms.saturating_sub(ms(p.last_seen.elapsed())),
            replica_alive: true,
        }
    }

    /// Whether the host holds a long-poll open on this replica right now.
    pub fn polling_now(&self, host: &str) -> bool {
        self.lock_presence()
            .get(host)
            .is_some_and(|p| p.open_polls > 0)
    }

    /// Whether the host is in touch with any replica: holding a long-poll open on a live one,
    /// or heard from within the grace.
    pub fn host_connected(&self, host: &str) -> bool {
        let now = self.now_ms();
        let presence = self.lock_presence();
        if presence
            .get(host)
            .is_some_and(|p| core::presence::counts(&Self::own_record(p, now), now))
        {
            return true;
        }
        let shared = self.lock_shared();
        shared.rows.get(host).is_some_and(|rows| {
            rows.iter()
                .any(|row| core::presence::counts(&shared.record(row, &self.replica, now), now))
        })
    }

    /// Which sites are in touch now, with any replica, in one pass over every record: for
    /// deciding about many sites at once (a rollout step).
    pub fn connectivity(&self) -> Connectivity {
        let now = self.now_ms();
        let started_at = now.saturating_sub(ms(self.started.elapsed()));
        let presence = self.lock_presence();
        let shared = self.lock_shared();
        let presuming = core::presence::presuming(ms(self.started.elapsed()), shared.knew_at_start);
        let own = presence.values().map(|p| Self::own_record(p, now));
        let others = shared
            .rows
            .values()
            .flatten()
            .map(|row| shared.record(row, &self.replica, now));
        Connectivity::judge(own.chain(others), now, started_at, presuming)
    }

    /// Writes what changed of this replica's presence since the last write, with its
    /// heartbeat, in one write; forgets the hosts silent past the grace whose last state is
    /// written. How many host records it wrote.
    pub async fn flush_presence(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let mut seen = Vec::new();
        let mut written = Vec::new();
        {
            let presence = self.lock_presence();
            for (host, p) in presence.iter() {
                let now = self.written(p);
                if core::presence::due(p.written, now) {
                    seen.push(PresenceSeen {
                        host: host.clone(),
                        site: p.site.clone(),
                        polls: p.open_polls,
                        seen_ago_ms: ms(p.last_seen.elapsed()),
                    });
                    written.push((host.clone(), now));
                }
            }
        }
        store
            .put_presence(&self.replica, seen, FORGET_REPLICAS_AFTER)
            .await?;
        let mut presence = self.lock_presence();
        for (host, state) in &written {
            if let Some(p) = presence.get_mut(host) {
                p.written = Some(*state);
            }
        }
        presence.retain(|_, p| {
            !core::presence::forgettable(p.written, self.written(p), ms(p.last_seen.elapsed()))
        });
        Ok(written.len())
    }

    /// A host's state as it would be written now, on this process's monotonic clock.
    fn written(&self, p: &Presence) -> Written {
        Written {
            polling: p.open_polls > 0,
            seen_ms: ms(p.last_seen.saturating_duration_since(self.started)),
        }
    }

    /// Reads the presence records changed (by any replica) since the last read, and every
    /// replica's heartbeat. How many records it read.
    pub async fn follow_presence(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let mut read = 0;
        loop {
            let after = self.lock_shared().followed;
            let changes = store.presence_changes(after, PRESENCE_PAGE).await?;
            let full = changes.rows.len() == PRESENCE_PAGE as usize;
            read += changes.rows.len();
            let mut shared = self.lock_shared();
            shared.clock = Some((changes.now_ms, Instant::now()));
            let forgotten = shared
                .beats
                .keys()
                .any(|r| !changes.beats.iter().any(|(b, _)| b == r));
            shared.beats = changes.beats.into_iter().collect();
            for (number, row) in changes.rows {
                shared.followed = shared.followed.max(number);
                if row.replica == self.replica {
                    continue;
                }
                let rows = shared.rows.entry(row.host.clone()).or_default();
                match rows.iter_mut().find(|r| r.replica == row.replica) {
                    Some(kept) => *kept = row,
                    None => rows.push(row),
                }
            }
            if forgotten {
                let Shared { rows, beats, .. } = &mut *shared;
                rows.retain(|_, of_host| {
                    of_host.retain(|r| beats.contains_key(&r.replica));
                    !of_host.is_empty()
                });
            }
            if !full {
                return Ok(read);
            }
        }
    }

    /// Writes this replica's presence and reads the others' every `period` until `shutdown`
    /// turns true. A failed write or read is logged and tried again next turn; the records
    /// not written stay due.
    pub async fn share_presence_every(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        period: Duration,
        shutdown: watch::Receiver<bool>,
    ) {
        let (fleet, store) = (&*self, &*store);
        periodic::every(period, None, shutdown, move || async move {
            if let Err(e) = fleet.flush_presence(store).await {
                tracing::warn!(error = %e, "writing presence failed; trying again");
            }
            if let Err(e) = fleet.follow_presence(store).await {
                tracing::warn!(error = %e, "reading presence failed; trying again");
            }
        })
        .await;
    }
}

impl Shared {
    /// Another replica's record, judged with its heartbeat.
    fn record<'a>(&self, row: &'a PresenceRow, own: &str, now_ms: u64) -> Record<'a> {
        Record {
            site: &row.site,
            polls: row.polls,
            seen_at_ms: row.seen_at_ms,
            replica_alive: row.replica != own
                && core::presence::alive(self.beats.get(&row.replica).copied(), now_ms),
        }
    }
}

/// Ends a long-poll's hold on "connected" when dropped, however the request ends.
#[derive(Debug)]
pub struct PollGuard<'a> {
    fleet: &'a Fleet,
    host: &'a str,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        self.fleet.adjust(self.host, -1);
    }
}

#[cfg(test)]
mod tests {
    use atoll_store::{ManifestRow, SqliteStore, Write};

    use super::*;

    #[tokio::test]
    async fn watchers_wake_on_a_newer_revision_only() {
        let fleet = Fleet::default();
        let mut rx = fleet.watch("s");
        rx.borrow_and_update();
        fleet.publish("s", 2, "two");
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().stored(), Some((2, "two")));
        fleet.publish("s", 1, "one");
        assert!(!rx.has_changed().unwrap());
        assert_eq!(fleet.watch("other").borrow().stored(), None);
    }

    fn manifest(site: &str, revision: u64) -> Write {
        Write::PutManifest(ManifestRow {
            site: site.into(),
            revision,
            hash: format!("h{revision}"),
            body: "{}".into(),
            updated_at: "2026-01-01T00:00:00Z".into(),
        })
    }

    #[tokio::test]
    async fn a_commit_made_by_another_replica_wakes_the_watchers_when_the_fleet_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("atoll.db")).unwrap();
        store.commit(0, vec![manifest("s", 1)]).await.unwrap();
        let fleet = Fleet::from_store(&store).await.unwrap();
        let signer = Arc::new(ManifestSigner::load_or_create(dir.path()).unwrap());
        let mut rx = fleet.watch("s");
        assert_eq!(rx.borrow_and_update().stored(), Some((1, "h1")));
        assert_eq!(
            fleet.follow(&store, &signer).await.unwrap(),
            0,
            "known at start"
        );

        // Another replica commits on the same store: nothing here knows until it follows.
        store
            .commit(1, vec![manifest("s", 2), manifest("t", 1)])
            .await
            .unwrap();
        assert!(!rx.has_changed().unwrap());
        assert_eq!(fleet.follow(&store, &signer).await.unwrap(), 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().stored(), Some((2, "h2")));
        assert_eq!(fleet.watch("t").borrow().stored(), Some((1, "h1")));
        // The woken polls answer from memory: the manifest another replica committed, signed.
        let Some((2, Published::Signed(answer))) = fleet.manifest("s") else {
            panic!("kept signed: {:?}", fleet.manifest("s"));
        };
        let signed: atoll_api::agent::SignedManifest = serde_json::from_slice(&answer).unwrap();
        assert_eq!(signed.payload, "{}");
        assert_eq!(
            fleet.follow(&store, &signer).await.unwrap(),
            0,
            "nothing new"
        );

        // This replica's own commit, published as it commits, is read again and ignored.
        fleet.publish_manifest("s", 3, "h3", Published::Signed(Bytes::from_static(b"3")));
        rx.borrow_and_update();
        store.commit(2, vec![manifest("s", 3)]).await.unwrap();
        assert_eq!(fleet.follow(&store, &signer).await.unwrap(), 1);
        assert!(!rx.has_changed().unwrap());
        assert_eq!(
            fleet.manifest("s"),
            Some((3, Published::Signed(Bytes::from_static(b"3")))),
            "its own kept as it was"
        );
    }

    #[test]
    fn a_published_manifest_is_kept_until_a_newer_one() {
        let fleet = Fleet::default();
        assert!(fleet.manifest("s").is_none());
        fleet.publish_manifest("s", 2, "h2", Published::Unsealed(Arc::from("two")));
        fleet.publish_manifest("s", 1, "h1", Published::Signed(Bytes::from_static(b"one")));
        assert_eq!(
            fleet.manifest("s"),
            Some((2, Published::Unsealed(Arc::from("two"))))
        );
        assert_eq!(fleet.watch("s").borrow().stored(), Some((2, "h2")));
    }

    const GRACE: Duration = Duration::from_millis(core::presence::GRACE_MS);

    #[test]
    fn after_a_start_sites_not_yet_heard_from_are_presumed_connected_for_the_grace() {
        let fleet = Fleet::default();
        assert!(fleet.connectivity().presumed_connected("s"));
        assert!(
            !fleet.connectivity().connected("s"),
            "views say what is known"
        );
        let old = Fleet {
            started: Instant::now() - GRACE,
            ..Fleet::default()
        };
        assert!(!old.connectivity().presumed_connected("s"));
        old.seen("h", "s");
        assert!(old.connectivity().presumed_connected("s"));
    }

    #[test]
    fn presence_follows_open_polls() {
        let fleet = Fleet::default();
        assert!(!fleet.connectivity().connected("s"));
        {
            let _poll = fleet.polling("h", "s");
            assert!(fleet.host_connected("h") && fleet.connectivity().connected("s"));
        }
        assert!(fleet.host_connected("h"), "still within the grace period");
        assert!(!fleet.connectivity().connected("other"));
        let started_long_ago = Fleet {
            started: Instant::now() - GRACE,
            ..Fleet::default()
        };
        started_long_ago.seen("h", "s");
        started_long_ago
            .lock_presence()
            .get_mut("h")
            .unwrap()
            .last_seen = Instant::now() - GRACE;
        let view = started_long_ago.connectivity();
        assert!(
            !view.connected("s") && !view.presumed_connected("s"),
            "silent too long"
        );
    }

    fn sqlite() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("atoll.db")).unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn a_host_polling_another_replica_is_connected_here_once_both_share_their_presence() {
        let (_dir, store) = sqlite();
        let a = Fleet::from_store(&store).await.unwrap();
        let b = Fleet::from_store(&store).await.unwrap();
        let poll = b.polling("h", "s");
        assert!(!a.host_connected("h") && !a.connectivity().connected("s"));
        assert_eq!(b.flush_presence(&store).await.unwrap(), 1);
        assert_eq!(a.follow_presence(&store).await.unwrap(), 1);
        assert!(a.host_connected("h") && a.connectivity().connected("s"));
        assert!(!a.polling_now("h"), "the poll is held by the other replica");
        assert!(!a.host_connected("other"));

        // Nothing changed: the next write is a heartbeat alone.
        assert_eq!(b.flush_presence(&store).await.unwrap(), 0);
        drop(poll);
        assert_eq!(b.flush_presence(&store).await.unwrap(), 1, "its poll ended");
        assert_eq!(a.follow_presence(&store).await.unwrap(), 1);
        assert!(a.host_connected("h"), "seen within the grace");
        // Its own records come back from the store and are not taken for another's.
        assert_eq!(
            b.follow_presence(&store).await.unwrap(),
            1,
            "its one row, as it is now"
        );
        assert!(b.lock_shared().rows.is_empty());
    }

    #[tokio::test]
    async fn presence_writes_one_row_per_change_never_one_per_request() {
        let (_dir, store) = sqlite();
        let fleet = Fleet::from_store(&store).await.unwrap();
        let hosts: Vec<String> = (0..1000).map(|i| format!("h{i}")).collect();
        let polls: Vec<PollGuard<'_>> = hosts.iter().map(|h| fleet.polling(h, h)).collect();
        assert_eq!(fleet.flush_presence(&store).await.unwrap(), 1000);
        // Requests of hosts already written as polling, within the refresh: nothing to write.
        for h in &hosts {
            fleet.seen(h, h);
        }
        assert_eq!(fleet.flush_presence(&store).await.unwrap(), 0);
        drop(polls);
        assert_eq!(fleet.flush_presence(&store).await.unwrap(), 1000);
    }

    #[tokio::test]
    async fn a_replica_joining_live_ones_trusts_their_records_rather_than_presume() {
        let (_dir, store) = sqlite();
        let first = Fleet::from_store(&store).await.unwrap();
        assert!(
            first.connectivity().presumed_connected("s"),
            "the first replica of a control plane presumes"
        );
        first.flush_presence(&store).await.unwrap();
        let joining = Fleet::from_store(&store).await.unwrap();
        assert!(
            !joining.connectivity().presumed_connected("s"),
            "another replica is alive and has not heard of s"
        );
    }
}
