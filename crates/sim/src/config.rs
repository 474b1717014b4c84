//! What a run simulates: the fleet, the faults, the control plane's capacity, and the bounds
//! the invariants hold it to. `Config::new` is the scenario the tests and the documented
//! full-size run use; every field can be changed.

use crate::rules::Rules;
use crate::time::{MILLISECOND, SECOND, Time};

#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub sites: usize,
    /// Simulated time of the whole run.
    pub duration: Time,
    /// The last part of the run, without new faults: every site must converge and every outbox
    /// drain within it.
    pub heal: Time,
    /// Sites whose agents are all down for a while (a power cut) and all start again at the same
    /// instant; 0 for no storm.
    pub storm: usize,
    /// When the storm's agents stop, and when they all start again.
    pub storm_down: Time,
    pub storm_up: Time,
    /// Groups of sites cut off from the control plane, each for a random while.
    pub partitions: usize,
    /// The share of the fleet in each partition group.
    pub partition_share: f64,
    /// Longest partition.
    pub partition_max: Time,
    /// Agents restarted at random moments (outbox and kept manifest survive).
    pub restarts: usize,
    /// Probability that a message (request or answer) is lost on the way; an agent notices only
    /// when its request times out.
    pub loss: f64,
    /// Probability that a long-poll's answer is replaced on the way by an older signed manifest
    /// of the same site (a stale cache or a replay); the agent must refuse it.
    pub replay: f64,
    /// Changes to one site's manifest, at random moments over the run.
    pub site_changes: usize,
    /// Moments when every site's manifest changes at once (a new application version).
    pub fleet_changes: Vec<Time>,
    /// The agent's outbox capacity (batches); small, so full outboxes and drops happen.
    pub outbox_capacity: usize,
    /// The share of sites whose status changes often (a flapping health check): one batch every
    /// `flappy_every` on average; the others one every `status_every`.
    pub flappy_share: f64,
    pub flappy_every: Time,
    pub status_every: Time,
    /// How long the agent's long-poll is held (the agent's `poll_wait`).
    pub poll_wait: Time,
    /// A connected site must run the newest revision within this long of its publication (or of
    /// the end of the last fault that touched it). Three minutes: coming back from a fault, an
    /// agent's backoff may be at its 60 s cap, and a 503 while the control plane sheds load
    /// (a fleet-wide change, a storm) does not reset it, so it may wait the cap twice; the
    /// third minute is for the queues.
    pub bound: Time,
    /// Every storm site must run the newest revision within this long of the storm.
    pub storm_bound: Time,
    pub control: Capacity,
    pub rules: Rules,
}

/// The control plane's capacity model: `cpus` cores serving TLS handshakes and manifest
/// long-polls, one SQLite writer committing reports, and a bound on requests admitted at once
/// per kind; past it a request is answered 503 at once, which the agent takes as unreachable
/// and backs off from. The costs are assumptions, not measurements; see `docs/benchmarks.md`.
#[derive(Debug, Clone)]
pub struct Capacity {
    pub cpus: usize,
    pub handshake: Time,
    /// Reading the site's revision to decide whether to answer or hold.
    pub poll_check: Time,
    /// Reading, signing and sending a manifest.
    pub poll_answer: Time,
    /// One report transaction (fsync included), plus each batch in it.
    pub report_commit: Time,
    pub report_batch: Time,
    pub max_polls: u32,
    pub max_reports: u32,
}

impl Default for Capacity {
    fn default() -> Capacity {
        Capacity {
            cpus: 2,
            handshake: MILLISECOND,
            poll_check: 50,
            poll_answer: 250,
            report_commit: MILLISECOND,
            report_batch: 20,
            max_polls: 1_000,
            max_reports: 200,
        }
    }
}

impl Config {
    /// The standard scenario at `sites` sites: 30 simulated minutes; four fleet-wide changes
    /// (the third while a storm of a fifth of the fleet, at most 10,000 sites, is down); five partitions of 4 % of the
    /// fleet for up to 10 minutes; restarts, losses and replays; the last 10 minutes heal.
    pub fn new(sites: usize, seed: u64) -> Config {
        let minute = 60 * SECOND;
        Config {
            seed,
            sites,
            duration: 30 * minute,
            heal: 10 * minute,
            storm: (sites / 5).min(10_000),
            storm_down: 10 * minute,
            storm_up: 15 * minute,
            partitions: 5,
            partition_share: 0.04,
            partition_max: 10 * minute,
            restarts: sites / 200,
            loss: 0.000_5,
            replay: 0.001,
            site_changes: sites / 5,
            fleet_changes: vec![minute, 5 * minute, 12 * minute, 22 * minute],
            outbox_capacity: 8,
            flappy_share: 0.02,
            flappy_every: 30 * SECOND,
            status_every: 15 * minute,
            poll_wait: 30 * SECOND,
            bound: 3 * minute,
            storm_bound: minute,
            control: Capacity::default(),
            rules: Rules::default(),
        }
    }
}
