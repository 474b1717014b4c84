//! Who counts as connected, from the presence records of every replica: the decisions, no IO.
//!
//! Each replica knows the hosts that talk to it (their open long-polls, when it last heard from
//! each) and writes that to the store about once a second, with a heartbeat; it reads back the
//! other replicas' records (`shell::fleet`). The choices made here:
//!
//! - **One clock.** Every time compared is on the store's clock, in milliseconds since the
//!   epoch: a replica sends how long ago it heard from a host on its own monotonic clock, and
//!   the store dates it on its own; a replica estimates the store's now as the now of its last
//!   read plus its own monotonic time since. No two replicas' clocks are ever compared.
//! - **A record counts** while its replica's open polls are trusted (it holds one, and the
//!   replica's heartbeat is younger than [`BEAT_TTL_MS`]) or while it was seen within
//!   [`GRACE_MS`]. So a replica killed with `kill -9` stops vouching for its open polls
//!   5 s after its last heartbeat; its hosts then count for what is left of the grace since
//!   they were last seen, time to reconnect to another replica, which records them.
//! - **Writes are bounded.** A host's record is written again only when whether it polls
//!   changes or it was seen [`REFRESH_MS`] after the time last written ([`due`]): a host that
//!   holds its long-poll continuously (30 s each) is written about once a poll, never for each
//!   request, and all of a replica's changes of a second go in one write.
//! - **The presumption after a start** (a site not heard from is taken as in touch for the
//!   grace, so a restart does not make every site look offline) applies only when the store
//!   had no record that counted, and no other replica was alive, when this replica started
//!   ([`presuming`]): the whole control plane restarted. A replica joining running ones
//!   trusts their records instead.

use std::collections::HashSet;

/// A host counts as connected for this long after it was last heard from (a long-poll ends
/// and the next begins within a round trip).
pub const GRACE_MS: u64 = 45_000;
/// A replica's open polls count while its last heartbeat is younger than this; it beats about
/// once a second.
pub const BEAT_TTL_MS: u64 = 5_000;
/// A host's record is written again once it was seen this much later than the time written.
/// A third of the grace: a record is never staler than that plus a flush when its replica dies.
pub const REFRESH_MS: u64 = 15_000;

/// One record of a host: this replica's own, or another's as the store has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub site: &'a str,
    /// The long-polls the host holds open on the record's replica.
    pub polls: u32,
    /// When the record's replica last heard from the host, on the store's clock.
    pub seen_at_ms: u64,
    /// Whether the record's replica's heartbeat is recent ([`alive`]).
    pub replica_alive: bool,
}

/// Whether a replica whose last heartbeat was at `beat_at_ms` (none: it is not in the store)
/// still vouches for its open polls at `now_ms`.
pub fn alive(beat_at_ms: Option<u64>, now_ms: u64) -> bool {
    beat_at_ms.is_some_and(|beat| now_ms.saturating_sub(beat) < BEAT_TTL_MS)
}

/// Whether `record` makes its host connected at `now_ms`.
pub fn counts(record: &Record<'_>, now_ms: u64) -> bool {
    (record.polls > 0 && record.replica_alive)
        || now_ms.saturating_sub(record.seen_at_ms) < GRACE_MS
}

/// Whether a replica that started `since_start_ms` ago presumes the sites it has not heard
/// from connected: within the grace, and only if the store held no record that counted and
/// no other live replica when it started (`store_knew`).
pub fn presuming(since_start_ms: u64, store_knew: bool) -> bool {
    since_start_ms < GRACE_MS && !store_knew
}

/// What a replica last wrote of a host: whether it polled, and when it was seen then, on the
/// replica's monotonic clock (milliseconds since the replica started).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub polling: bool,
    pub seen_ms: u64,
}

/// Whether a host's record must be written: never written, its polling changed, or it was seen
/// [`REFRESH_MS`] or more after the time last written.
pub fn due(written: Option<Written>, now: Written) -> bool {
    written.is_none_or(|w| {
        w.polling != now.polling || now.seen_ms.saturating_sub(w.seen_ms) >= REFRESH_MS
    })
}

/// Whether a replica may drop a host from memory: what it wrote is what it knows, no poll is
/// open, and the host has been silent past the grace (so its record no longer counts anyway).
pub fn forgettable(written: Option<Written>, now: Written, silent_ms: u64) -> bool {
    !now.polling && written == Some(now) && silent_ms >= GRACE_MS
}

/// The sites in touch at one moment: for deciding about many sites at once (a rollout step).
#[derive(Debug, Clone, Default)]
pub struct Connectivity {
    connected: HashSet<String>,
    heard_from: HashSet<String>,
    presuming: bool,
}

impl Connectivity {
    /// Judges `records` at `now_ms` for a replica that started at `started_at_ms` (both on the
    /// store's clock): a site is connected when one of its hosts' records counts, heard from
    /// when one was seen since this replica started.
    pub fn judge<'a>(
        records: impl IntoIterator<Item = Record<'a>>,
        now_ms: u64,
        started_at_ms: u64,
        presuming: bool,
    ) -> Connectivity {
        let mut view = Connectivity {
            presuming,
            ..Connectivity::default()
        };
        for record in records {
            if counts(&record, now_ms) && !view.connected.contains(record.site) {
                view.connected.insert(record.site.to_owned());
            }
            if record.seen_at_ms >= started_at_ms && !view.heard_from.contains(record.site) {
                view.heard_from.insert(record.site.to_owned());
            }
        }
        view
    }

    /// A host of the site holds a long-poll open on a live replica, or was heard from within
    /// the grace.
    pub fn connected(&self, site: &str) -> bool {
        self.connected.contains(site)
    }

    /// Whether a site should be taken as in touch when deciding for it (a rollout): connected,
    /// or not heard from only because the whole control plane started less than the grace ago
    /// ([`presuming`]).
    pub fn presumed_connected(&self, site: &str) -> bool {
        self.connected(site) || (self.presuming && !self.heard_from.contains(site))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    fn record(site: &str, polls: u32, seen_ago: u64, replica_alive: bool) -> Record<'_> {
        Record {
            site,
            polls,
            seen_at_ms: NOW - seen_ago,
            replica_alive,
        }
    }

    #[test]
    fn an_open_poll_counts_only_while_its_replica_beats() {
        assert!(counts(&record("s", 1, 600_000, true), NOW));
        assert!(
            !counts(&record("s", 1, 600_000, false), NOW),
            "a dead replica's poll"
        );
        assert!(
            !counts(&record("s", 0, 600_000, true), NOW),
            "no poll, silent too long"
        );
    }

    #[test]
    fn a_record_counts_for_the_grace_after_the_host_was_seen_whoever_holds_it() {
        for alive in [true, false] {
            assert!(counts(&record("s", 0, GRACE_MS - 1, alive), NOW));
            assert!(!counts(&record("s", 0, GRACE_MS, alive), NOW));
        }
        let future = Record {
            seen_at_ms: NOW + 1_000,
            ..record("s", 0, 0, false)
        };
        assert!(
            counts(&future, NOW),
            "a time ahead of the estimate is recent"
        );
    }

    #[test]
    fn a_replica_is_alive_until_its_heartbeat_is_older_than_the_ttl() {
        assert!(alive(Some(NOW), NOW));
        assert!(alive(Some(NOW - BEAT_TTL_MS + 1), NOW));
        assert!(!alive(Some(NOW - BEAT_TTL_MS), NOW));
        assert!(!alive(None, NOW), "a forgotten replica");
        assert!(
            alive(Some(NOW + 10), NOW),
            "a beat after the estimate of now"
        );
    }

    #[test]
    fn after_a_whole_restart_sites_not_yet_heard_from_are_presumed_connected_for_the_grace() {
        assert!(presuming(0, false));
        assert!(presuming(GRACE_MS - 1, false));
        assert!(!presuming(GRACE_MS, false));
        assert!(
            !presuming(0, true),
            "the store knew: other replicas' records are trusted"
        );

        let started = NOW - 1_000;
        let view = Connectivity::judge([record("old", 0, 600_000, false)], NOW, started, true);
        assert!(view.presumed_connected("never") && !view.connected("never"));
        assert!(
            view.presumed_connected("old"),
            "a record from before the start is not hearing from the site"
        );
        let view = Connectivity::judge([record("heard", 0, 500, true)], NOW, started, true);
        assert!(view.presumed_connected("heard"), "connected");
        let gone = Record {
            seen_at_ms: started,
            ..record("gone", 0, 0, true)
        };
        let view = Connectivity::judge([gone], started + GRACE_MS, started, true);
        assert!(
            !view.presumed_connected("gone"),
            "heard from since the start, then silent: not presumed"
        );
        let view = Connectivity::judge([], NOW, started, false);
        assert!(!view.presumed_connected("never"), "not presuming");
    }

    #[test]
    fn a_site_is_connected_when_any_record_of_any_host_counts() {
        let view = Connectivity::judge(
            [
                record("s", 1, 600_000, false),
                record("s", 0, 1_000, false),
                record("t", 1, 600_000, false),
            ],
            NOW,
            NOW,
            false,
        );
        assert!(view.connected("s"));
        assert!(!view.connected("t") && !view.presumed_connected("t"));
        assert!(!view.connected("u"));
    }

    #[test]
    fn a_host_is_written_when_its_polling_changes_or_its_time_moved_past_the_refresh() {
        let at = |polling, seen_ms| Written { polling, seen_ms };
        assert!(due(None, at(false, 0)), "never written");
        assert!(!due(Some(at(true, 1_000)), at(true, 1_000)));
        assert!(
            due(Some(at(true, 1_000)), at(false, 1_000)),
            "its poll ended"
        );
        assert!(due(Some(at(false, 1_000)), at(true, 1_000)), "it polls");
        assert!(!due(
            Some(at(true, 1_000)),
            at(true, 1_000 + REFRESH_MS - 1)
        ));
        assert!(due(Some(at(true, 1_000)), at(true, 1_000 + REFRESH_MS)));
        assert!(
            !due(Some(at(true, 5_000)), at(true, 1_000)),
            "an older time"
        );
    }

    #[test]
    fn a_host_is_forgotten_only_once_written_idle_and_silent_past_the_grace() {
        let idle = Written {
            polling: false,
            seen_ms: 0,
        };
        assert!(forgettable(Some(idle), idle, GRACE_MS));
        assert!(!forgettable(Some(idle), idle, GRACE_MS - 1), "still counts");
        assert!(!forgettable(None, idle, GRACE_MS), "never written");
        let polling = Written {
            polling: true,
            ..idle
        };
        assert!(!forgettable(Some(polling), polling, GRACE_MS), "polls");
        assert!(
            !forgettable(Some(polling), idle, GRACE_MS),
            "its end not yet written"
        );
    }
}
