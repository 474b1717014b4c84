//! The site cluster's rules the model runs. Three are the agent's own decisions, the very
//! functions its leader calls (`atoll_agent::core::cluster`); two are what the model stands in
//! for (Raft's commit quorum, a host's reconciler), kept here so a test can break them too. A test
//! swaps one for a broken version to show that the invariants catch it.

use std::collections::{BTreeMap, BTreeSet};

use atoll_agent::core::ReplicaKey;
use atoll_agent::core::cluster::{self, Liveness, Placement, Schedule};
use atoll_api::host::Host;
use atoll_api::manifest::Manifest;

/// `atoll_agent::core::cluster::schedule`'s shape.
pub type ScheduleRule = fn(
    manifest: &Manifest,
    up: &[Host],
    placed: &Placement,
    running: &BTreeMap<String, BTreeSet<ReplicaKey>>,
) -> Schedule;

/// `atoll_agent::core::cluster::voters`'s shape.
pub type VotersRule = fn(
    members: &BTreeSet<String>,
    up: &BTreeSet<String>,
    current: &BTreeSet<String>,
) -> BTreeSet<String>;

#[derive(Debug, Clone, Copy)]
pub struct ClusterRules {
    /// Agent, the leader: where every replica runs (`core::cluster::schedule`).
    pub schedule: ScheduleRule,
    /// Agent, the leader: who votes (`core::cluster::voters`).
    pub voters: VotersRule,
    /// Agent, the leader: is a host silent for the failure timeout (`Liveness::down`)?
    pub down: fn(liveness: &Liveness, host: &str, now_ms: u64, timeout_ms: u64) -> bool,
    /// Raft, modelled: may a leader reaching `reached` of `voters` voters commit? (Elections
    /// take a majority of votes in the model itself.)
    pub commits: fn(reached: usize, voters: usize) -> bool,
    /// A host's reconciler, modelled: what it runs, given what the placement it applied puts on
    /// it and what it ran before.
    pub reconcile:
        fn(placed: &BTreeSet<ReplicaKey>, ran: &BTreeSet<ReplicaKey>) -> BTreeSet<ReplicaKey>,
}

impl Default for ClusterRules {
    fn default() -> ClusterRules {
        ClusterRules {
            schedule: cluster::schedule,
            voters: cluster::voters,
            down: Liveness::down,
            commits: |reached, voters| 2 * reached > voters,
            reconcile: |placed, _| placed.clone(),
        }
    }
}
