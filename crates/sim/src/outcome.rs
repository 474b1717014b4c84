//! What a run reports: its figures when every invariant held, or the first one broken, with the
//! seed to run it again.

use std::fmt;
use std::time::Duration;

use crate::control::ControlStats;
use crate::time::{Time, seconds};
use crate::world::{Stats, World};

/// An invariant broken: the seed replays the run up to this point.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub at: Time,
    pub what: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invariant broken (seed {}, at {:.3} s simulated): {}",
            self.seed,
            seconds(self.at),
            self.what
        )
    }
}

impl std::error::Error for Violation {}

/// How long the sites took to run one fleet-wide change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeSummary {
    pub at: Time,
    /// Sites measured: those no fault touched before they converged.
    pub measured: usize,
    pub p50: Time,
    pub p99: Time,
    pub max: Time,
    /// Sites a fault touched first.
    pub disturbed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StormSummary {
    pub at: Time,
    pub sites: usize,
    pub converged_in: Time,
    pub disturbed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reports {
    pub produced: u64,
    pub stored: u64,
    pub dropped: u64,
    pub resends_ignored: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub sites: usize,
    pub simulated: Time,
    pub events: u64,
    /// A digest of every event processed: the same seed and configuration give the same one.
    pub digest: u64,
    pub wall: Duration,
    pub changes: Vec<ChangeSummary>,
    pub storm: Option<StormSummary>,
    pub reports: Reports,
    pub agents: Stats,
    pub unchanged_applies: u64,
    pub control: ControlStats,
}

/// The loop's own counters, handed to [`World::outcome`].
#[derive(Debug)]
pub struct Counts {
    pub events: u64,
    pub digest: u64,
    pub wall: Duration,
}

fn percentile(sorted: &[Time], p: f64) -> Time {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl World {
    pub(crate) fn outcome(&mut self, counts: Counts) -> Outcome {
        let changes = self
            .scenario
            .changes
            .iter_mut()
            .map(|c| {
                c.latencies.sort_unstable();
                ChangeSummary {
                    at: c.at,
                    measured: c.latencies.len(),
                    p50: percentile(&c.latencies, 0.5),
                    p99: percentile(&c.latencies, 0.99),
                    max: c.latencies.last().copied().unwrap_or(0),
                    disturbed: c.disturbed,
                }
            })
            .collect();
        Outcome {
            seed: self.cfg.seed,
            sites: self.cfg.sites,
            simulated: self.cfg.duration,
            events: counts.events,
            digest: counts.digest,
            wall: counts.wall,
            changes,
            storm: self.scenario.storm_track.as_ref().map(|s| StormSummary {
                at: s.at,
                sites: s.sites,
                converged_in: s.converged_in,
                disturbed: s.disturbed,
            }),
            reports: Reports {
                produced: self.ledger.produced,
                stored: self.ledger.recorded,
                dropped: self.ledger.dropped,
                resends_ignored: self.stats.resends_ignored,
            },
            agents: self.stats.clone(),
            unchanged_applies: self.scenario.unchanged,
            control: self.control.stats.clone(),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = seconds;
        writeln!(
            f,
            "seed {}: {} sites, {:.0} s simulated, {} events in {:.2} s wall, digest {:016x}",
            self.seed,
            self.sites,
            s(self.simulated),
            self.events,
            self.wall.as_secs_f64(),
            self.digest
        )?;
        for (i, c) in self.changes.iter().enumerate() {
            writeln!(
                f,
                "  change {} at {:.0} s: converged p50 {:.3} s, p99 {:.3} s, max {:.3} s over {} sites ({} touched by a fault first)",
                i + 1,
                s(c.at),
                s(c.p50),
                s(c.p99),
                s(c.max),
                c.measured,
                c.disturbed
            )?;
        }
        if let Some(storm) = &self.storm {
            writeln!(
                f,
                "  storm at {:.0} s: {} sites started at once, all on the newest revision within {:.3} s ({} lost a long-poll first)",
                s(storm.at),
                storm.sites,
                s(storm.converged_in),
                storm.disturbed
            )?;
        }
        let r = &self.reports;
        writeln!(
            f,
            "  reports: {} batches produced, {} stored exactly once, {} dropped by full outboxes (counted), {} resends ignored",
            r.produced, r.stored, r.dropped, r.resends_ignored
        )?;
        let a = &self.agents;
        writeln!(
            f,
            "  agents: {} manifests accepted, {} refused ({} replays injected), {} applies with no new revision",
            a.accepted, a.refused, a.replays, self.unchanged_applies
        )?;
        let c = &self.control;
        write!(
            f,
            "  control plane: {} polls ({} answered 503), {} manifests sent, {} reports ({} answered 503), {} handshakes; \
             at most {} polls and {} reports admitted, {} woken polls in progress, {} held; longest wait for a core {:.3} s, for the writer {:.3} s",
            c.polls,
            c.rejected_polls,
            c.manifests_sent,
            c.reports,
            c.rejected_reports,
            c.handshakes,
            c.max_polls_admitted,
            c.max_reports_admitted,
            c.max_woken,
            c.max_held,
            s(c.max_cpu_wait),
            s(c.max_writer_wait)
        )
    }
}
