//! The site cluster's decisions, pure: which hosts vote, when the leader takes a host for down,
//! and where each of the site's replicas runs. The shell (`shell::cluster`) feeds them what the
//! site log holds and what the leader heard, and proposes what they answer.
//!
//! The decision that shaped it: the leader schedules with the very function the control plane
//! and a lone agent use (`core::placement::decide`, over `atoll_api::placement::place`), given
//! the hosts it takes for up and, as the previous placement, the one in the log (or, for a
//! replica the log does not place yet, the host that reports running it). So a host's death
//! moves only its replicas, a host that returns takes nothing back, and a cluster formed
//! around hosts that each ran everything keeps one copy of each replica where it already runs.
//!
//! Choices where the issue is silent:
//! - Voters: one for up to two hosts, three for three or four, five from five on. Voters that
//!   are up keep their seat; a seat is filled from the up hosts in name order; a voter that is
//!   down keeps its seat while no up host can take it (changing who votes needs a majority of
//!   the old voters anyway, and a returning voter then finds its seat).
//! - A host is down once the leader has heard nothing from it for the failure timeout, counted
//!   from when it last heard it, or, for a host it never heard, from when it became leader. Every
//!   host hears every peer (the site channel is a full mesh), so a leader elected after the old
//!   one died already knows since when the dead host is silent, and moves its replicas on time.

use std::collections::{BTreeMap, BTreeSet};

use atoll_api::host::Host;
use atoll_api::manifest::Manifest;
use atoll_api::placement::{Decision, Previous};
use serde::{Deserialize, Serialize};

use super::desired::ReplicaKey;
use super::placement::{decide, every_host_services};

/// Where every replica of the site runs, as the leader decided it: kept in the site log.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    /// The revision of the manifest the placement was made for.
    pub revision: u64,
    /// Deployment → service → replica index → host.
    #[serde(default)]
    pub replicas: BTreeMap<String, BTreeMap<String, BTreeMap<u32, String>>>,
    /// The deployments not placed at the site, and why.
    #[serde(default)]
    pub unplaced: BTreeMap<String, String>,
}

impl Placement {
    /// The placement a decision made for the manifest of `revision`.
    pub fn of(revision: u64, decision: &Decision) -> Placement {
        let mut replicas: BTreeMap<String, BTreeMap<String, BTreeMap<u32, String>>> =
            BTreeMap::new();
        for (deployment, assignments) in &decision.placed {
            let services = replicas.entry(deployment.clone()).or_default();
            for a in assignments {
                services
                    .entry(a.service.clone())
                    .or_default()
                    .insert(a.index, a.host.clone());
            }
        }
        Placement {
            revision,
            replicas,
            unplaced: decision.unplaced.clone(),
        }
    }

    /// Every replica and its host, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (ReplicaKey, &str)> + '_ {
        self.replicas.iter().flat_map(|(deployment, services)| {
            services.iter().flat_map(move |(service, indexes)| {
                indexes.iter().map(move |(index, host)| {
                    (
                        ReplicaKey {
                            deployment: deployment.clone(),
                            service: service.clone(),
                            index: *index,
                        },
                        host.as_str(),
                    )
                })
            })
        })
    }

    /// The host replica `key` is placed on.
    pub fn host_of(&self, key: &ReplicaKey) -> Option<&str> {
        self.replicas
            .get(&key.deployment)?
            .get(&key.service)?
            .get(&key.index)
            .map(String::as_str)
    }

    /// The replicas placed on `host`.
    pub fn on(&self, host: &str) -> BTreeSet<ReplicaKey> {
        self.iter()
            .filter(|(_, h)| *h == host)
            .map(|(k, _)| k)
            .collect()
    }

    /// How many replicas each host holds.
    pub fn load(&self) -> BTreeMap<&str, usize> {
        let mut load = BTreeMap::new();
        for (_, host) in self.iter() {
            *load.entry(host).or_default() += 1;
        }
        load
    }
}

/// How many voters a site of `hosts` hosts has.
pub fn voter_count(hosts: usize) -> usize {
    match hosts {
        0..=2 => 1,
        3 | 4 => 3,
        _ => 5,
    }
}

/// The voters the site should have, given its members, the ones up and the voters now.
pub fn voters(
    members: &BTreeSet<String>,
    up: &BTreeSet<String>,
    current: &BTreeSet<String>,
) -> BTreeSet<String> {
    let seats = voter_count(members.len());
    let mut chosen: BTreeSet<String> = current
        .iter()
        .filter(|h| members.contains(*h) && up.contains(*h))
        .take(seats)
        .cloned()
        .collect();
    for host in members.iter().filter(|h| up.contains(*h)) {
        if chosen.len() == seats {
            break;
        }
        chosen.insert(host.clone());
    }
    // Seats no up host can take stay with the voters that are down.
    for host in current.iter().filter(|h| members.contains(*h)) {
        if chosen.len() == seats {
            break;
        }
        chosen.insert(host.clone());
    }
    chosen
}

/// What the leader heard of each host, in its memory only.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Liveness {
    /// When this host became leader.
    leader_since_ms: u64,
    /// When each host was last heard from.
    heard_ms: BTreeMap<String, u64>,
}

impl Liveness {
    /// A leader's memory from the moment it became leader.
    pub fn new(leader_since_ms: u64) -> Liveness {
        Liveness {
            leader_since_ms,
            heard_ms: BTreeMap::new(),
        }
    }

    /// Notes that `host` was heard from at `now_ms`.
    pub fn heard(&mut self, host: &str, now_ms: u64) {
        let at = self.heard_ms.entry(host.to_owned()).or_default();
        *at = (*at).max(now_ms);
    }

    fn last(&self, host: &str) -> u64 {
        self.heard_ms
            .get(host)
            .copied()
            .unwrap_or(self.leader_since_ms)
    }

    /// Whether `host` has been silent for at least `timeout_ms` at `now_ms`.
    pub fn down(&self, host: &str, now_ms: u64, timeout_ms: u64) -> bool {
        now_ms.saturating_sub(self.last(host)) >= timeout_ms
    }
}

/// A replica the leader moved from one host to another, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    pub key: ReplicaKey,
    pub from: String,
    pub to: String,
    pub reason: String,
}

/// The leader's answer: the placement to keep, and the replicas it moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub placement: Placement,
    pub moves: Vec<Move>,
}

/// Places the manifest's replicas on the hosts that are `up`, keeping each where the log's
/// `placed` has it, or, for a replica the log does not place, where a host reports `running`
/// it (the first by name of the hosts that do).
pub fn schedule(
    manifest: &Manifest,
    up: &[Host],
    placed: &Placement,
    running: &BTreeMap<String, BTreeSet<ReplicaKey>>,
) -> Schedule {
    let live: BTreeSet<&str> = up.iter().map(|h| h.name.as_str()).collect();
    let every_host = every_host_services(manifest);
    let mut previous = Previous::default();
    // A report counts only for a replica the log does not place at all: the log's word on any
    // other is final, even when its host is down (a stale report would swap replicas). A host
    // runs an every-host service as its replica 0 whatever its index in the placement, so its
    // report names no index of the site's.
    for (host, keys) in running.iter().rev() {
        for k in keys.iter().filter(|k| {
            placed.host_of(k).is_none()
                && !every_host.contains(&(k.deployment.as_str(), k.service.as_str()))
        }) {
            previous.insert(&k.deployment, &k.service, k.index, host);
        }
    }
    for (k, host) in placed.iter() {
        if live.contains(host) {
            previous.insert(&k.deployment, &k.service, k.index, host);
        }
    }
    let placement = Placement::of(manifest.revision, &decide(manifest, up, &previous));
    let moves = placement
        .iter()
        .filter_map(|(key, to)| {
            let from = placed.host_of(&key)?;
            (from != to).then(|| Move {
                reason: if live.contains(from) {
                    format!("host {from} no longer qualifies or has no room")
                } else {
                    format!("host {from} is down")
                },
                from: from.to_owned(),
                to: to.to_owned(),
                key,
            })
        })
        .collect();
    Schedule { placement, moves }
}

#[cfg(test)]
mod tests {
    use atoll_api::host::{Inventory, capability};
    use proptest::prelude::*;

    use super::*;
    use crate::core::fixtures::{manifest, service};

    fn set(hosts: &[&str]) -> BTreeSet<String> {
        hosts.iter().map(|h| (*h).to_owned()).collect()
    }

    fn host(name: &str) -> Host {
        Host {
            name: name.into(),
            inventory: Inventory {
                arch: "x86_64".into(),
                cpus: 2,
                memory_bytes: 4 << 30,
                capabilities: capability::ALL.iter().map(|c| (*c).to_owned()).collect(),
                ..Inventory::default()
            },
            labels: BTreeMap::new(),
        }
    }

    fn key(d: &str, s: &str, i: u32) -> ReplicaKey {
        ReplicaKey {
            deployment: d.into(),
            service: s.into(),
            index: i,
        }
    }

    fn two_web_and_an_agent() -> Manifest {
        let mut web = service("web", "web:1");
        web.replicas = 2;
        let mut agent = service("probe", "probe:1");
        agent.mode = atoll_spec::application::Mode::EveryHost;
        manifest(vec![("shop", web), ("shop", agent)])
    }

    #[test]
    fn voters_are_one_three_or_five_by_the_size_of_the_site() {
        let counts: Vec<usize> = (0..8).map(voter_count).collect();
        assert_eq!(counts, [1, 1, 1, 3, 3, 5, 5, 5]);
        let all = set(&["a", "b", "c", "d"]);
        assert_eq!(voters(&all, &all, &set(&[])), set(&["a", "b", "c"]));
        assert_eq!(
            voters(&set(&["a", "b"]), &set(&["a", "b"]), &set(&[])),
            set(&["a"])
        );
    }

    #[test]
    fn a_voter_down_gives_its_seat_to_a_host_up_and_keeps_it_when_there_is_none() {
        let four = set(&["a", "b", "c", "d"]);
        let now = set(&["a", "b", "c"]);
        assert_eq!(
            voters(&four, &set(&["a", "c", "d"]), &now),
            set(&["a", "c", "d"])
        );
        let three = set(&["a", "b", "c"]);
        assert_eq!(voters(&three, &set(&["a", "c"]), &now), now);
        assert_eq!(
            voters(&set(&["a", "c"]), &set(&["a", "c"]), &now),
            set(&["a"]),
            "a host that left the site leaves the voters, and two hosts have one"
        );
    }

    #[test]
    fn a_new_leader_gives_a_host_it_never_heard_one_full_timeout() {
        let mut l = Liveness::new(10_000);
        assert!(!l.down("b", 14_999, 5_000));
        assert!(l.down("b", 15_000, 5_000));
        l.heard("b", 14_000);
        assert!(!l.down("b", 18_999, 5_000));
        assert!(l.down("b", 19_000, 5_000));
        l.heard("b", 12_000);
        assert!(
            !l.down("b", 18_999, 5_000),
            "an older hearing changes nothing"
        );
    }

    #[test]
    fn a_host_silent_since_before_the_election_is_down_on_time() {
        let mut l = Liveness::new(10_000);
        l.heard("dead", 4_000);
        assert!(
            l.down("dead", 14_000, 10_000),
            "silent since 4 s, not since 10 s"
        );
    }

    #[test]
    fn replicas_are_spread_and_every_host_runs_the_agent_service() {
        let m = two_web_and_an_agent();
        let s = schedule(
            &m,
            &[host("h-a"), host("h-b"), host("h-c")],
            &Placement::default(),
            &BTreeMap::new(),
        );
        assert!(s.moves.is_empty());
        let web: BTreeSet<&str> = (0..2)
            .map(|i| s.placement.host_of(&key("shop", "web", i)).unwrap())
            .collect();
        assert_eq!(web.len(), 2, "{:?}", s.placement);
        for h in ["h-a", "h-b", "h-c"] {
            assert!(
                s.placement.on(h).iter().any(|k| k.service == "probe"),
                "{h}: {:?}",
                s.placement
            );
        }
    }

    #[test]
    fn a_host_down_moves_only_its_replicas_and_takes_nothing_back_when_it_returns() {
        let m = two_web_and_an_agent();
        let all = [host("h-a"), host("h-b"), host("h-c")];
        let first = schedule(&m, &all, &Placement::default(), &BTreeMap::new()).placement;
        let victim = first.host_of(&key("shop", "web", 0)).unwrap().to_owned();
        let up: Vec<Host> = all.iter().filter(|h| h.name != victim).cloned().collect();
        let after = schedule(&m, &up, &first, &BTreeMap::new());
        let moved: Vec<&ReplicaKey> = after.moves.iter().map(|mv| &mv.key).collect();
        assert_eq!(moved, [&key("shop", "web", 0)]);
        assert_eq!(after.moves[0].reason, format!("host {victim} is down"));
        assert_ne!(
            after.placement.host_of(&key("shop", "web", 0)),
            after.placement.host_of(&key("shop", "web", 1))
        );
        let back = schedule(&m, &all, &after.placement, &BTreeMap::new());
        assert!(back.moves.is_empty(), "{:?}", back.moves);
        let web_back: Vec<ReplicaKey> = back
            .placement
            .on(&victim)
            .into_iter()
            .filter(|k| k.service == "web")
            .collect();
        assert!(web_back.is_empty(), "{web_back:?}");
    }

    #[test]
    fn hosts_that_each_ran_everything_keep_one_copy_where_it_runs() {
        let mut web = service("web", "web:1");
        web.replicas = 3;
        let m = manifest(vec![("shop", web)]);
        let everything: BTreeSet<ReplicaKey> = (0..3).map(|i| key("shop", "web", i)).collect();
        let running = BTreeMap::from([
            ("h-a".to_owned(), everything.clone()),
            ("h-b".to_owned(), everything),
        ]);
        let s = schedule(
            &m,
            &[host("h-a"), host("h-b")],
            &Placement::default(),
            &running,
        );
        assert_eq!(s.placement.iter().count(), 3);
        assert!(
            s.placement.iter().all(|(_, h)| h == "h-a"),
            "each replica stays on the first host running it: {:?}",
            s.placement
        );
    }

    /// Found by the simulator (seed 17030): a host that runs the every-host `probe` reports it
    /// as replica 0, and that report took index 0 from the dead host the log placed it on, so
    /// the host stopped its own replica 2 to start replica 0.
    #[test]
    fn a_stale_report_of_an_every_host_replica_does_not_swap_indexes() {
        let mut probe = service("probe", "probe:1");
        probe.mode = atoll_spec::application::Mode::EveryHost;
        let m = manifest(vec![("shop", probe)]);
        let mut placed = Placement::default();
        let probes = placed
            .replicas
            .entry("shop".into())
            .or_default()
            .entry("probe".into())
            .or_default();
        probes.insert(0, "h-c".into());
        probes.insert(1, "h-b".into());
        probes.insert(2, "h-a".into());
        let running =
            BTreeMap::from([("h-a".to_owned(), BTreeSet::from([key("shop", "probe", 0)]))]);
        let s = schedule(&m, &[host("h-a"), host("h-b")], &placed, &running);
        assert_eq!(s.placement.host_of(&key("shop", "probe", 2)), Some("h-a"));
        assert_eq!(s.placement.host_of(&key("shop", "probe", 1)), Some("h-b"));
        assert_eq!(s.placement.host_of(&key("shop", "probe", 0)), None);
        assert!(s.moves.is_empty(), "{:?}", s.moves);
    }

    proptest! {
        /// Whatever the hosts up and the placement before, each replicated service has its
        /// replicas once each on distinct keys, on up hosts only, and a replica whose host
        /// stays up is never moved.
        #[test]
        fn placements_are_whole_on_live_hosts_and_keep_what_lives(
            replicas in 1u32..5,
            alive in proptest::collection::vec(any::<bool>(), 4),
            alive_after in proptest::collection::vec(any::<bool>(), 4),
        ) {
            let mut web = service("web", "web:1");
            web.replicas = replicas;
            let m = manifest(vec![("shop", web)]);
            let names = ["h-a", "h-b", "h-c", "h-d"];
            let pick = |alive: &[bool]| -> Vec<Host> {
                names.iter().zip(alive).filter(|(_, a)| **a).map(|(n, _)| host(n)).collect()
            };
            let before = schedule(&m, &pick(&alive), &Placement::default(), &BTreeMap::new());
            let up = pick(&alive_after);
            let after = schedule(&m, &up, &before.placement, &BTreeMap::new());
            let live: BTreeSet<&str> = up.iter().map(|h| h.name.as_str()).collect();
            if up.is_empty() {
                prop_assert_eq!(after.placement.iter().count(), 0);
            } else {
                prop_assert_eq!(after.placement.iter().count(), replicas as usize);
            }
            for (k, h) in after.placement.iter() {
                prop_assert!(live.contains(h));
                if let Some(was) = before.placement.host_of(&k) && live.contains(was) {
                    prop_assert_eq!(was, h);
                }
            }
            for mv in &after.moves {
                prop_assert!(!live.contains(mv.from.as_str()));
            }
        }

        /// The voters are always members, as many as the site's size asks when enough are
        /// members, and every voter up keeps its seat.
        #[test]
        fn voters_are_members_of_the_right_number(
            members in proptest::collection::btree_set("[a-g]", 0..7),
            up in proptest::collection::btree_set("[a-g]", 0..7),
            current in proptest::collection::btree_set("[a-g]", 0..5),
        ) {
            let chosen = voters(&members, &up, &current);
            prop_assert!(chosen.is_subset(&members));
            prop_assert!(chosen.len() <= voter_count(members.len()));
            let eligible = members.iter().filter(|m| up.contains(*m) || current.contains(*m)).count();
            prop_assert_eq!(chosen.len(), voter_count(members.len()).min(eligible));
            let kept = current.iter().filter(|c| members.contains(*c) && up.contains(*c)).count();
            let kept_in = current.iter().filter(|c| members.contains(*c) && up.contains(*c) && chosen.contains(*c)).count();
            prop_assert_eq!(kept_in, kept.min(voter_count(members.len())));
        }
    }
}
