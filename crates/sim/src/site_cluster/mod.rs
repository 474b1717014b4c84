//! A deterministic model of one site cluster: 2 to 6 hosts, a manifest with replicated and
//! every-host services, and faults drawn from a seed (host deaths, returns, a host cut from the
//! others, a pair of hosts cut from each other, heals), with the invariants of the site cluster
//! checked as the run goes and once it has settled (see [`ledger`] for the list).
//!
//! The decision that shaped it: the leader's decisions are the agent's own, called through
//! [`rules`] (`atoll_agent::core::cluster::schedule`, `voters` and `Liveness::down`, judged on
//! heartbeats carried by the model's network), and Raft's outcome is modelled rather than run.
//! openraft 0.10 draws its election timeouts from `AsyncRuntime::thread_rng`, and the site
//! log's type configuration (`atoll_agent::site_log`) takes the default Tokio runtime, whose
//! generator is the thread's, seeded by the operating system: its elections cannot be replayed
//! from a seed without changing the agent's Raft types (openraft ships a
//! `DeterministicRng<TokioRuntime>` wrapper that would do it). So the model holds what Raft
//! promises, and the real site log is driven apart, over `LocalNet` with random cuts, by the
//! test `tests/site_log_chaos.rs`, which is seeded but not replayable bit for bit.
//!
//! What the model takes from Raft: a voter that has not heard a leader for its election
//! timeout (drawn from the seed) stands; it wins when it reaches a majority of the voters that
//! have not heard a leader lately (Raft's leader lease) and hold no longer log than its own,
//! and the new term is one more than any of theirs. A leader steps down when it reaches a host
//! of a higher term; one cut off from its majority goes on believing it leads and takes its
//! turns, but commits nothing, and its lease still holds the voters it reaches (so a partial
//! partition can leave a site without a leader that commits, as it can in Raft). An entry (the placement and the voters, whole) is committed by a leader
//! reaching a majority of the voters, and held at once by every host it reaches; the others
//! take it on the leader's next append after they are reached again.
//!
//! Choices where the issue is silent:
//! - Each host's reconciler applies what it holds a network latency after it gets it, and runs
//!   exactly the replicas that placement gives it; a host cut off keeps what it runs. A host
//!   that returns after its death starts with nothing running and runs what the placement in
//!   its folder gives it until it catches up (its containers died with it).
//! - Services reserve no CPU or memory, so every live host has room: "none lost while a
//!   majority lives and has capacity" reduces to "while a majority lives".
//! - Every host sends every peer a heartbeat each heartbeat period, carrying what it runs; the
//!   leader keeps what it hears in a `Liveness`, built at its election from what its host
//!   heard before, as the agent's leader does.

pub mod ledger;
mod model;
pub mod rules;

use std::fmt;
use std::time::Duration;

pub use self::rules::ClusterRules;
use crate::outcome::Violation;
use crate::time::{MILLISECOND, SECOND, Time, seconds};

/// One run of the site-cluster model.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    /// Hosts at the site; drawn from 2 to 6 when not given.
    pub hosts: Option<usize>,
    /// How long faults happen before the healing phase.
    pub chaos: Time,
    /// How often every host tells every peer it lives (the default, 5 s).
    pub heartbeat: Time,
    /// A host silent this long is down (the default, 10 s).
    pub failure_timeout: Time,
    /// A lost replica runs again within the failure timeout plus this (the issue: 15 s after
    /// the death of its host).
    pub bound: Time,
    /// How often a leader takes its turn: appends to the hosts, then schedules.
    pub tick: Time,
    /// A voter's election timeout is drawn between these (the site log's default timers).
    pub election_min: Time,
    pub election_max: Time,
    /// A message's latency is drawn between these.
    pub latency_min: Time,
    pub latency_max: Time,
    pub rules: ClusterRules,
}

impl Config {
    pub fn new(seed: u64) -> Config {
        Config {
            seed,
            hosts: None,
            chaos: 240 * SECOND,
            heartbeat: 5 * SECOND,
            failure_timeout: 10 * SECOND,
            bound: 5 * SECOND,
            tick: SECOND,
            election_min: 3 * SECOND,
            election_max: 5 * SECOND,
            latency_min: MILLISECOND,
            latency_max: 20 * MILLISECOND,
            rules: ClusterRules::default(),
        }
    }

    /// How long after the healing phase the site must have settled: a host's death noticed,
    /// an election, and a turn to place what it ran, with time to spare.
    pub fn settle(&self) -> Time {
        self.failure_timeout + self.bound + self.election_max + 2 * self.tick + 5 * SECOND
    }
}

/// A run's figures, when every invariant held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub hosts: usize,
    /// Replicated services and the replicas each asks.
    pub services: Vec<u32>,
    pub simulated: Time,
    pub events: u64,
    /// A digest of every event processed: the same seed and configuration give the same one.
    pub digest: u64,
    pub faults: u64,
    pub elections: u64,
    pub commits: u64,
    pub moves: u64,
    /// The longest a replica of a replicated service ran nowhere, counted as the invariant
    /// counts it: from the later of its loss, the last fault, and the site's being able to
    /// elect again (at most the failure timeout plus the bound).
    pub longest_loss: Time,
    pub wall: Duration,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "seed {}: {} hosts, replicas {:?}, {:.0} s simulated in {:.1} ms, {} events \
             (digest {:016x}); {} faults, {} elections, {} commits, {} moves; longest loss {:.1} s",
            self.seed,
            self.hosts,
            self.services,
            seconds(self.simulated),
            self.wall.as_secs_f64() * 1000.0,
            self.events,
            self.digest,
            self.faults,
            self.elections,
            self.commits,
            self.moves,
            seconds(self.longest_loss),
        )
    }
}

/// Runs the model for `config`'s seed: its figures, or the first invariant broken.
pub fn run(config: Config) -> Result<Outcome, Violation> {
    model::Site::new(config).run()
}
