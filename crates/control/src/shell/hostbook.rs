//! Which site each host belongs to, and whether it still does: the cache that authorizes every
//! agent request without reading the store.
//!
//! The store's host table is the truth; this book follows it by host-change number (every
//! change of a host's membership or credentials takes the next one), so a change made by any
//! control-plane replica reaches every book: the one that made it follows at once, before its
//! caller is answered, the others on their next turn ([`HostBook::follow_every`]). A host the
//! book has not seen is looked for in the store before it is refused, so an enrollment made
//! elsewhere is never refused for being new.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use atoll_store::{HostState, Store, StoreError};
use tokio::sync::watch;

/// How often a book reads what other replicas changed.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
pub struct HostBook {
    book: Mutex<Book>,
    /// How many hosts this book has seen detached: it moves when a followed change detaches
    /// one, so that waiting long-polls look at their host again. Only then: an enrollment or a
    /// renewal takes nothing from a host that waits, and ten thousand enrollments waking ten
    /// thousand waiting polls each would be quadratic.
    detached: watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct Book {
    followed: u64,
    hosts: HashMap<String, Member>,
    /// How many attached hosts each site has, kept with `hosts`.
    attached: HashMap<String, usize>,
}

impl Book {
    /// Puts `member` in the book for `host`, keeping the sites' counts.
    fn insert(&mut self, host: String, member: Member) {
        if let Some(old) = self.hosts.get(&host)
            && old.state == HostState::Attached
            && let Some(n) = self.attached.get_mut(&old.site)
        {
            *n -= 1;
            if *n == 0 {
                self.attached.remove(&old.site);
            }
        }
        if member.state == HostState::Attached {
            *self.attached.entry(member.site.clone()).or_default() += 1;
        }
        self.hosts.insert(host, member);
    }
}

/// What the book knows of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub site: String,
    pub state: HostState,
    /// The serial of the host's current certificate ([`super::tls::serial_hex`]).
    pub serial: String,
    /// The serial of the certificate the last renewal replaced, and until when (RFC 3339) it
    /// is still accepted.
    pub previous: Option<(String, String)>,
    /// The host-change number this entry is from: an older read never overwrites a newer one.
    changed: u64,
}

impl Default for HostBook {
    fn default() -> HostBook {
        HostBook {
            book: Mutex::default(),
            detached: watch::channel(0).0,
        }
    }
}

impl HostBook {
    /// Reads the host changes made since the last one followed (by any replica) into the book.
    /// Whether anything changed.
    pub async fn follow(&self, store: &dyn Store) -> Result<bool, StoreError> {
        let after = self.lock().followed;
        let rows = store.host_changes(after).await?;
        if rows.is_empty() {
            return Ok(false);
        }
        let detached = {
            let mut book = self.lock();
            let mut detached = 0;
            for row in rows {
                book.followed = book.followed.max(row.changed);
                let known = book.hosts.get(&row.id);
                let newer = known.is_none_or(|m| m.changed < row.changed);
                if newer
                    && row.state == HostState::Detached
                    && known.is_some_and(|m| m.state == HostState::Attached)
                {
                    detached += 1;
                }
                if newer {
                    let member = Member {
                        site: row.site,
                        state: row.state,
                        serial: canonical_serial(&row.cert_serial),
                        previous: row
                            .previous_serial
                            .zip(row.previous_until)
                            .map(|(serial, until)| (canonical_serial(&serial), until)),
                        changed: row.changed,
                    };
                    book.insert(row.id, member);
                }
            }
            detached
        };
        if detached > 0 {
            self.detached.send_modify(|n| *n += detached);
        }
        Ok(true)
    }

    /// Follows the store every `period` until `shutdown` turns true: how changes other
    /// replicas make reach this one. A failed read is logged and tried again next turn.
    pub async fn follow_every(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        period: Duration,
        shutdown: watch::Receiver<bool>,
    ) {
        let (book, store) = (&*self, &*store);
        super::periodic::every(period, None, shutdown, move || async move {
            if let Err(e) = book.follow(store).await {
                tracing::warn!(error = %e, "reading host changes failed; trying again");
            }
        })
        .await;
    }

    /// What the book knows of `host`; `None` for a host it has not seen.
    pub fn member(&self, host: &str) -> Option<Member> {
        self.lock().hosts.get(host).cloned()
    }

    /// How many hosts of `site` are attached, as far as the book has followed.
    pub fn attached_in(&self, site: &str) -> usize {
        self.lock().attached.get(site).copied().unwrap_or(0)
    }

    /// [`Self::member`], following the store first when the book has not seen `host`.
    pub async fn find(&self, store: &dyn Store, host: &str) -> Result<Option<Member>, StoreError> {
        if let Some(member) = self.member(host) {
            return Ok(Some(member));
        }
        self.follow(store).await?;
        Ok(self.member(host))
    }

    /// Changes whenever a followed change detaches a host this book knew attached.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.detached.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A stored serial as [`super::tls::serial_hex`] writes it (older stores kept leading zero
/// bytes).
pub fn canonical_serial(stored: &str) -> String {
    hex::decode(stored).map_or_else(
        |_| stored.to_owned(),
        |bytes| super::tls::serial_hex(&bytes),
    )
}

#[cfg(test)]
mod tests {
    use atoll_store::{Enrolled, HostRow, JoinTokenRow, SqliteStore, Write};

    use super::*;

    fn host(id: &str, site: &str) -> HostRow {
        HostRow {
            id: id.into(),
            site: site.into(),
            hostname: id.into(),
            inventory: "{}".into(),
            cert_serial: "01".into(),
            cert_expiry: "2099-01-01T00:00:00Z".into(),
            enrolled_at: "2026-01-01T00:00:00Z".into(),
            last_seen: None,
            recipient: None,
            ..HostRow::default()
        }
    }

    async fn enroll(store: &dyn Store, id: &str, site: &str) {
        let token = format!("t-{id}");
        store
            .create_join_token(JoinTokenRow {
                id: token.clone(),
                hash: format!("h-{id}"),
                site: site.into(),
                uses_left: 1,
                expires_at: "2099-01-01T00:00:00Z".into(),
                created_at: "2026-01-01T00:00:00Z".into(),
            })
            .await
            .unwrap();
        assert_eq!(
            store.enroll_host(host(id, site), &token).await.unwrap(),
            Enrolled::Yes
        );
    }

    #[tokio::test]
    async fn a_book_follows_enrollments_and_detachments_made_by_another_replica() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("atoll.db")).unwrap();
        let book = HostBook::default();
        let woken = book.watch();
        enroll(&store, "h1", "a").await;
        // Not seen yet: found in the store on first ask.
        let found = book.find(&store, "h1").await.unwrap().unwrap();
        assert_eq!(
            (found.site.as_str(), found.state),
            ("a", HostState::Attached)
        );
        // A new host takes nothing from those waiting: they are not woken.
        assert!(!woken.has_changed().unwrap());

        let writes = vec![Write::RetireSite {
            site: "a".into(),
            at: "2026-02-01T00:00:00Z".into(),
        }];
        store.commit(0, writes).await.unwrap();
        // The cached entry stands until the book follows; then it says detached and wakes.
        assert_eq!(book.member("h1").unwrap().state, HostState::Attached);
        assert!(book.follow(&store).await.unwrap());
        assert_eq!(book.member("h1").unwrap().state, HostState::Detached);
        assert!(woken.has_changed().unwrap());
        assert!(!book.follow(&store).await.unwrap(), "nothing new");
        assert!(book.find(&store, "nobody").await.unwrap().is_none());
    }

    /// What says whether an enrollment changes its site's members: counted as the book
    /// follows, not by reading every host per enrollment (ten thousand of them took minutes).
    #[tokio::test]
    async fn a_book_counts_each_sites_attached_hosts() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("atoll.db")).unwrap();
        let book = HostBook::default();
        enroll(&store, "a1", "a").await;
        enroll(&store, "b1", "b").await;
        enroll(&store, "a2", "a").await;
        book.follow(&store).await.unwrap();
        assert_eq!((book.attached_in("a"), book.attached_in("b")), (2, 1));
        assert_eq!(book.attached_in("nowhere"), 0);
        let writes = vec![Write::RetireSite {
            site: "a".into(),
            at: "2026-02-01T00:00:00Z".into(),
        }];
        store.commit(0, writes).await.unwrap();
        book.follow(&store).await.unwrap();
        assert_eq!((book.attached_in("a"), book.attached_in("b")), (0, 1));
    }
}
