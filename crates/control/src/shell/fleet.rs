//! What the control plane knows, in memory, about agents right now: which manifest revision
//! and content hash each site should have (so waiting long-polls wake the moment it changes,
//! and compare what an agent holds, without reading the store), the manifests committed since start (so the long-polls a commit wakes, every site at
//! once after a fleet-wide change, do not all read the store), and which hosts are in touch.
//!
//! The heads follow the store's manifest-change feed ([`Fleet::follow`], every
//! [`FOLLOW_EVERY`]), so a commit made by another replica wakes the long-polls waiting here
//! within that period: the feed, not a message between replicas, is the truth, and a reader
//! that goes on from the highest number it saw misses no change. A head learnt from the feed
//! comes without its body; the poll it wakes reads the manifest from the store, as for one
//! committed before this process started. On PostgreSQL every manifest commit also
//! NOTIFYs a channel the store listens on ([`Store::manifest_hint`]): a hint that has the feed
//! read at once, so a wake-up usually takes one round trip rather than up to a period. With SQLite (one control plane) the feed only
//! repeats this process's own commits, which `publish` ignores; it is followed anyway: one
//! indexed read per period, and one code path whatever the backend.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atoll_store::{Store, StoreError};
use bytes::Bytes;
use tokio::sync::{Notify, watch};

use super::hostbook::HostBook;
use crate::core;

/// How often the fleet reads the manifests other replicas committed: a commit anywhere wakes
/// the long-polls waiting here within this, plus one read.
pub const FOLLOW_EVERY: Duration = Duration::from_millis(250);
/// How many manifest changes one read of the feed takes at most (a fleet-wide change is read
/// in pages).
const FOLLOW_PAGE: u32 = 10_000;

/// A host counts as connected while it holds a long-poll open, or for this long after its last
/// request (a long-poll ends and the next begins within a round trip).
const CONNECTED_GRACE: Duration = Duration::from_secs(45);

#[derive(Debug)]
pub struct Fleet {
    revisions: Mutex<HashMap<String, watch::Sender<Head>>>,
    /// Each site's newest manifest committed by this process: revision and how a long-poll
    /// answers it.
    manifests: Mutex<HashMap<String, (u64, Published)>>,
    presence: Mutex<HashMap<String, Presence>>,
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
            hosts: Arc::default(),
            started: Instant::now(),
            followed: Mutex::default(),
        }
    }
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
        Ok(fleet)
    }

    /// Which site each host belongs to, and whether it still does.
    pub fn hosts(&self) -> &Arc<HostBook> {
        &self.hosts
    }

    /// Reads the manifests committed (by any replica) since the last change followed, and
    /// publishes their heads. How many changes it read.
    pub async fn follow(&self, store: &dyn Store) -> Result<usize, StoreError> {
        let mut read = 0;
        loop {
            let after = *self.lock_followed();
            let page = store.manifest_changes(after, FOLLOW_PAGE).await?;
            let full = page.len() == FOLLOW_PAGE as usize;
            read += page.len();
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
        period: Duration,
        hint: Option<Arc<Notify>>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let hinted = async {
                match &hint {
                    Some(hint) => hint.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = ticks.tick() => {}
                () = hinted => {}
            }
            if let Err(e) = self.follow(store.as_ref()).await {
                tracing::warn!(error = %e, "reading manifest changes failed; trying again");
            }
        }
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
        let mut presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        let entry = presence.entry(host.to_owned()).or_insert_with(|| Presence {
            site: site.to_owned(),
            last_seen: Instant::now(),
            open_polls: 0,
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
        let mut presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = presence.get_mut(host) {
            p.open_polls = p.open_polls.saturating_add_signed(delta);
            p.last_seen = Instant::now();
        }
    }

    /// Whether the host holds a long-poll open right now.
    pub fn polling_now(&self, host: &str) -> bool {
        let presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        presence.get(host).is_some_and(|p| p.open_polls > 0)
    }

    pub fn host_connected(&self, host: &str) -> bool {
        let presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        presence
            .get(host)
            .is_some_and(|p| p.open_polls > 0 || p.last_seen.elapsed() < CONNECTED_GRACE)
    }

    /// Which sites are in touch now, in one pass over every host: for deciding about many
    /// sites at once (a rollout step).
    pub fn connectivity(&self) -> Connectivity {
        let presence = self.presence.lock().unwrap_or_else(|e| e.into_inner());
        let mut view = Connectivity {
            connected: HashSet::new(),
            heard_from: HashSet::new(),
            starting: self.started.elapsed() < CONNECTED_GRACE,
        };
        for p in presence.values() {
            if p.open_polls > 0 || p.last_seen.elapsed() < CONNECTED_GRACE {
                view.connected.insert(p.site.clone());
            }
            view.heard_from.insert(p.site.clone());
        }
        view
    }
}

/// The sites in touch at one moment; see [`Fleet::connectivity`].
#[derive(Debug, Clone)]
pub struct Connectivity {
    connected: HashSet<String>,
    heard_from: HashSet<String>,
    /// This control plane started less than the grace period ago.
    starting: bool,
}

impl Connectivity {
    /// A host of the site holds a long-poll open, or made a request within the grace period.
    pub fn connected(&self, site: &str) -> bool {
        self.connected.contains(site)
    }

    /// Whether a site should be taken as in touch when deciding for it (a rollout): connected,
    /// or not heard from only because this control plane started less than the grace period
    /// ago. A restart must not make every site look offline while agents reconnect.
    pub fn presumed_connected(&self, site: &str) -> bool {
        self.connected(site) || (self.starting && !self.heard_from.contains(site))
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
        let mut rx = fleet.watch("s");
        assert_eq!(rx.borrow_and_update().stored(), Some((1, "h1")));
        assert_eq!(fleet.follow(&store).await.unwrap(), 0, "known at start");

        // Another replica commits on the same store: nothing here knows until it follows.
        store
            .commit(1, vec![manifest("s", 2), manifest("t", 1)])
            .await
            .unwrap();
        assert!(!rx.has_changed().unwrap());
        assert_eq!(fleet.follow(&store).await.unwrap(), 2);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().stored(), Some((2, "h2")));
        assert_eq!(fleet.watch("t").borrow().stored(), Some((1, "h1")));
        assert!(
            fleet.manifest("s").is_none(),
            "the body is read from the store when a poll asks"
        );
        assert_eq!(fleet.follow(&store).await.unwrap(), 0, "nothing new");

        // This replica's own commit, published as it commits, is read again and ignored.
        fleet.publish_manifest("s", 3, "h3", Published::Signed(Bytes::from_static(b"3")));
        rx.borrow_and_update();
        store.commit(2, vec![manifest("s", 3)]).await.unwrap();
        assert_eq!(fleet.follow(&store).await.unwrap(), 1);
        assert!(!rx.has_changed().unwrap());
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

    #[test]
    fn after_a_start_sites_not_yet_heard_from_are_presumed_connected_for_the_grace() {
        let fleet = Fleet::default();
        assert!(fleet.connectivity().presumed_connected("s"));
        assert!(
            !fleet.connectivity().connected("s"),
            "views say what is known"
        );
        let old = Fleet {
            started: Instant::now() - CONNECTED_GRACE,
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
            started: Instant::now() - CONNECTED_GRACE,
            ..Fleet::default()
        };
        started_long_ago.seen("h", "s");
        started_long_ago
            .presence
            .lock()
            .unwrap()
            .get_mut("h")
            .unwrap()
            .last_seen = Instant::now() - CONNECTED_GRACE;
        let view = started_long_ago.connectivity();
        assert!(
            !view.connected("s") && !view.presumed_connected("s"),
            "silent too long"
        );
    }
}
