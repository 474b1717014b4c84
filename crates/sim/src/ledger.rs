//! The invariants, kept as the run goes, each failing the run the moment it is broken:
//!
//! - **Reports are neither lost nor duplicated.** Every batch an outbox numbers is, in the end,
//!   stored by the control plane exactly once, or counted as dropped by its full outbox; an
//!   agent never forgets (on an acknowledgement) a batch the control plane has not stored;
//!   sequence numbers are never reused or skipped; the drop count the agent reports is the
//!   number of batches it dropped.
//! - **Revisions never go backwards** at a site, and a site never runs a revision that was not
//!   published (checked in `site`), and the control plane only publishes growing revisions
//!   (checked in `control`).
//! - **Connected sites converge**: a site runs a newly published revision within
//!   `Config::bound` of its publication, or of the end of the last fault that touched it (a
//!   partition, an outage, a restart, a lost long-poll).
//! - **A storm converges**: every site of the storm runs the newest revision within
//!   `Config::storm_bound` of the instant they all started.
//! - **The control plane holds**: admitted requests within their bounds, no job waiting longer
//!   than its client (checked in `control`).

use crate::time::{Time, seconds};
use crate::world::{Event, World};

const RECORDED: u8 = 1;
const DROPPED: u8 = 2;

#[derive(Debug, Default)]
pub struct Ledger {
    /// Per site, per batch (sequence number - 1): what became of it.
    fates: Vec<Vec<u8>>,
    drops: Vec<u64>,
    pub produced: u64,
    pub recorded: u64,
    pub dropped: u64,
}

impl Ledger {
    pub fn new(sites: usize) -> Ledger {
        Ledger {
            fates: vec![Vec::new(); sites],
            drops: vec![0; sites],
            ..Ledger::default()
        }
    }
}

impl World {
    pub(crate) fn ledger_produced(&mut self, site: u32, seq: u64, dropped: &[u64]) {
        let fates = &mut self.ledger.fates[site as usize];
        let expected = fates.len() as u64 + 1;
        if seq != expected {
            self.fail(format!(
                "site {site} numbered a batch {seq} where {expected} was next: a number reused or skipped"
            ));
            return;
        }
        fates.push(0);
        self.ledger.produced += 1;
        for &d in dropped {
            let fate = &mut self.ledger.fates[site as usize][(d - 1) as usize];
            if *fate & DROPPED != 0 {
                self.fail(format!("site {site} dropped batch {d} twice"));
                return;
            }
            *fate |= DROPPED;
            self.ledger.drops[site as usize] += 1;
            self.ledger.dropped += 1;
        }
    }

    pub(crate) fn ledger_recorded(&mut self, site: u32, seq: u64) {
        let fates = &mut self.ledger.fates[site as usize];
        let Some(fate) = seq.checked_sub(1).and_then(|i| fates.get_mut(i as usize)) else {
            self.fail(format!(
                "the control plane stored batch {seq} of site {site}, which it never produced"
            ));
            return;
        };
        if *fate & RECORDED != 0 {
            self.fail(format!(
                "the control plane stored batch {seq} of site {site} twice"
            ));
            return;
        }
        *fate |= RECORDED;
        self.ledger.recorded += 1;
    }

    /// The agent let go of these batches on an acknowledgement: each must be stored.
    pub(crate) fn ledger_forgotten(&mut self, site: u32, seqs: &[u64]) {
        for &seq in seqs {
            let fate = self.ledger.fates[site as usize][(seq - 1) as usize];
            if fate & RECORDED == 0 {
                self.fail(format!(
                    "site {site} forgot batch {seq} on an acknowledgement, but the control plane never stored it: lost"
                ));
                return;
            }
        }
    }

    /// A new revision for `site` at `since`: the site owes it within the bound.
    pub(crate) fn obligation(&mut self, site: u32, revision: u64, since: Time) {
        self.agenda.at(
            since + self.cfg.bound,
            Event::Check {
                site,
                revision,
                since,
            },
        );
    }

    pub(crate) fn check(&mut self, site: u32, revision: u64, since: Time) {
        let s = &self.sites[site as usize];
        if s.applied >= revision {
            return;
        }
        if s.disturbed > since {
            let since = s.disturbed;
            self.obligation(site, revision, since);
            return;
        }
        let applied = s.applied;
        self.fail(format!(
            "site {site}, connected and undisturbed since {:.3} s, still runs revision {applied} {:.3} s later, not {revision}",
            seconds(since),
            seconds(self.cfg.bound)
        ));
    }

    /// The end of the run, after the healing phase: every site runs its newest revision, every
    /// outbox is empty, and every batch was stored or counted as dropped.
    pub(crate) fn final_checks(&mut self) {
        for site in 0..self.sites.len() {
            let s = &self.sites[site];
            let newest = self.control.revision(site as u32);
            let problem = if !s.up {
                Some("is still down".to_owned())
            } else if s.applied != newest {
                Some(format!(
                    "ends at revision {}, the newest being {newest}",
                    s.applied
                ))
            } else if !s.queue.is_empty() {
                Some(format!("ends with {} batches unsent", s.queue.len()))
            } else if s.queue.dropped() != self.ledger.drops[site] {
                Some(format!(
                    "counts {} dropped batches, having dropped {}",
                    s.queue.dropped(),
                    self.ledger.drops[site]
                ))
            } else {
                self.ledger.fates[site]
                    .iter()
                    .position(|f| *f == 0)
                    .map(|i| format!("batch {} was neither stored nor dropped: lost", i + 1))
            };
            if let Some(problem) = problem {
                self.fail(format!("at the end, site {site} {problem}"));
                return;
            }
        }
    }
}
