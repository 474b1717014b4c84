//! The simulation loop: the agenda's next event, dispatched to the site, the control plane or
//! the scenario, until the run's end; then the final checks. Everything random comes from one
//! generator seeded from the run's seed, and events are totally ordered, so a seed always gives
//! the same run; a digest of every event processed shows it.

use std::time::Instant;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::control::Control;
use crate::ledger::Ledger;
use crate::network::Network;
use crate::outcome::{Counts, Outcome, Violation};
use crate::scenario::Scenario;
use crate::site::{PollReply, ReportReply, Site};
use crate::time::{Agenda, Time};

#[derive(Debug)]
pub enum Event {
    // The scenario.
    FleetChange(usize),
    SiteChange(u32),
    Partition(usize),
    StormDown,
    StormUp,
    Restart(u32),
    Resume(u32),
    LocalStatus(u32),
    // An agent.
    Poll {
        site: u32,
        epoch: u32,
    },
    PollReply {
        site: u32,
        req: u64,
        reply: PollReply,
    },
    Status {
        site: u32,
        epoch: u32,
    },
    ReportWake {
        site: u32,
        token: u64,
    },
    ReportReply {
        site: u32,
        req: u64,
        reply: ReportReply,
    },
    // The control plane.
    PollArrives {
        site: u32,
        req: u64,
        have: u64,
        fresh: bool,
    },
    PollAdmit {
        site: u32,
        req: u64,
        have: u64,
    },
    PollChecked {
        site: u32,
        req: u64,
        have: u64,
    },
    PollAnswered {
        site: u32,
        req: u64,
        woken: bool,
    },
    PollExpires {
        site: u32,
        req: u64,
    },
    ReportArrives {
        site: u32,
        req: u64,
        seqs: Vec<u64>,
        fresh: bool,
    },
    ReportAdmit {
        site: u32,
        req: u64,
        seqs: Vec<u64>,
    },
    ReportCommitted {
        site: u32,
        req: u64,
        seqs: Vec<u64>,
    },
    // The invariants.
    Check {
        site: u32,
        revision: u64,
        since: Time,
    },
}

impl Event {
    /// What the digest takes from an event besides its time: its kind and its subject.
    fn key(&self) -> (u64, u64) {
        match *self {
            Event::FleetChange(i) => (0, i as u64),
            Event::SiteChange(s) => (1, s.into()),
            Event::Partition(i) => (2, i as u64),
            Event::StormDown => (3, 0),
            Event::StormUp => (4, 0),
            Event::Restart(s) => (5, s.into()),
            Event::Resume(s) => (6, s.into()),
            Event::LocalStatus(s) => (7, s.into()),
            Event::Poll { site, .. } => (8, site.into()),
            Event::PollReply { site, req, .. } => (9, u64::from(site) ^ req << 20),
            Event::Status { site, .. } => (10, site.into()),
            Event::ReportWake { site, .. } => (11, site.into()),
            Event::ReportReply { site, req, .. } => (12, u64::from(site) ^ req << 20),
            Event::PollArrives { site, have, .. } => (13, u64::from(site) ^ have << 20),
            Event::PollAdmit { site, .. } => (14, site.into()),
            Event::PollChecked { site, .. } => (15, site.into()),
            Event::PollAnswered { site, .. } => (16, site.into()),
            Event::PollExpires { site, .. } => (17, site.into()),
            Event::ReportArrives { site, ref seqs, .. } => {
                (18, u64::from(site) ^ (seqs.len() as u64) << 20)
            }
            Event::ReportAdmit { site, .. } => (19, site.into()),
            Event::ReportCommitted { site, .. } => (20, site.into()),
            Event::Check { site, revision, .. } => (21, u64::from(site) ^ revision << 20),
        }
    }
}

/// Counters of what the agents met, for the outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    pub refused: u64,
    pub replays: u64,
    pub resends_ignored: u64,
}

#[derive(Debug)]
pub struct World {
    pub(crate) cfg: Config,
    pub(crate) rng: StdRng,
    pub(crate) agenda: Agenda<Event>,
    pub(crate) net: Network,
    pub(crate) sites: Vec<Site>,
    pub(crate) control: Control,
    pub(crate) ledger: Ledger,
    pub(crate) scenario: Scenario,
    pub(crate) stats: Stats,
    ids: u64,
    events: u64,
    digest: u64,
    violation: Option<Violation>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Runs one seeded simulation to its end: its outcome, or the first invariant it broke.
pub fn run(cfg: Config) -> Result<Outcome, Violation> {
    let wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let net = Network::new(
        cfg.sites,
        cfg.loss,
        cfg.replay,
        cfg.duration - cfg.heal,
        &mut rng,
    );
    let mut world = World {
        sites: (0..cfg.sites)
            .map(|_| Site::new(1, cfg.outbox_capacity))
            .collect(),
        control: Control::new(cfg.sites, cfg.control.clone()),
        ledger: Ledger::new(cfg.sites),
        scenario: Scenario::default(),
        stats: Stats::default(),
        agenda: Agenda::default(),
        net,
        rng,
        ids: 0,
        events: 0,
        digest: FNV_OFFSET,
        violation: None,
        cfg,
    };
    world.plan();
    while world.violation.is_none() {
        let Some((at, event)) = world.agenda.pop() else {
            break;
        };
        if at > world.cfg.duration {
            break;
        }
        world.events += 1;
        let (kind, subject) = event.key();
        world.digest = [at, kind, subject].iter().fold(world.digest, |h, x| {
            x.to_le_bytes()
                .iter()
                .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
        });
        world.dispatch(event);
    }
    if world.violation.is_none() {
        world.final_checks();
    }
    match world.violation.take() {
        Some(v) => Err(v),
        None => Ok(world.outcome(Counts {
            events: world.events,
            digest: world.digest,
            wall: wall.elapsed(),
        })),
    }
}

impl World {
    fn dispatch(&mut self, event: Event) {
        match event {
            Event::FleetChange(i) => self.fleet_change(i),
            Event::SiteChange(site) => self.site_change(site),
            Event::Partition(i) => self.partition(i),
            Event::StormDown => self.storm_down(),
            Event::StormUp => self.storm_up(),
            Event::Restart(site) => self.restart(site),
            Event::Resume(site) => self.start(site),
            Event::LocalStatus(site) => self.local_status(site),
            Event::Poll { site, epoch } => self.poll(site, epoch),
            Event::PollReply { site, req, reply } => self.poll_reply(site, req, reply),
            Event::Status { site, epoch } => self.status(site, epoch),
            Event::ReportWake { site, token } => self.report_wake(site, token),
            Event::ReportReply { site, req, reply } => self.report_reply(site, req, reply),
            Event::PollArrives {
                site,
                req,
                have,
                fresh,
            } => self.poll_arrives(site, req, have, fresh),
            Event::PollAdmit { site, req, have } => self.poll_admit(site, req, have),
            Event::PollChecked { site, req, have } => self.poll_checked(site, req, have),
            Event::PollAnswered { site, req, woken } => self.poll_answered(site, req, woken),
            Event::PollExpires { site, req } => self.poll_expires(site, req),
            Event::ReportArrives {
                site,
                req,
                seqs,
                fresh,
            } => self.report_arrives(site, req, seqs, fresh),
            Event::ReportAdmit { site, req, seqs } => self.report_admit(site, req, seqs),
            Event::ReportCommitted { site, req, seqs } => self.report_committed(site, req, seqs),
            Event::Check {
                site,
                revision,
                since,
            } => self.check(site, revision, since),
        }
    }

    /// A fresh identifier for a request or a timer.
    pub(crate) fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    /// Fails the run with the first invariant broken.
    pub(crate) fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                seed: self.cfg.seed,
                at: self.agenda.now(),
                what,
            });
        }
    }
}
