//! One virtual site's agent: the sync loop (long-poll, accept, pause) and the reporter (send the
//! outbox, forget what is acknowledged, back off), each decision made by the agent's own core:
//! `check_revision` through [`Rules`](crate::rules::Rules), `pause_after`, `Backoff` and the
//! outbox `Queue`. The IO timings around them follow the agent's shell: a long-poll's client
//! times out after the wait plus 30 s, a report's after 30 s, a connection attempt after 10 s.

use atoll_agent::core::outbox::{BATCH_LIMIT, GATHER, Queue};
use atoll_agent::core::retry::Backoff;
use atoll_agent::core::sync::{Polled, pause_after};
use rand::Rng;

use crate::time::{MILLISECOND, SECOND, Time};
use crate::world::{Event, World};

/// `identity::http_client`'s connect timeout.
pub const CONNECT_TIMEOUT: Time = 10 * SECOND;
/// `Session`: the long-poll client's timeout is the wait plus this margin.
pub const POLL_MARGIN: Time = 30 * SECOND;
/// `Session`: the short client's timeout, which reports use.
pub const REPORT_TIMEOUT: Time = 30 * SECOND;

/// How a long-poll ended, as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollReply {
    NotModified,
    Manifest(u64),
    /// 503: the control plane is over capacity.
    Unavailable,
    TimedOut,
    ConnectFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportReply {
    Acked(u64),
    Unavailable,
    TimedOut,
    ConnectFailed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reporter {
    /// Waiting for a new batch or the sync loop's "reachable again".
    Idle,
    /// Holding a new batch for the ones that follow it, until the wake with this token.
    Gathering(u64),
    Sending(u64),
    /// Backing off after a failure, until the wake with this token (or a notification).
    Sleeping(u64),
}

#[derive(Debug)]
pub struct Site {
    pub up: bool,
    /// Grows at each start, so events of an earlier run of the agent are ignored.
    epoch: u32,
    /// The revision of the kept manifest (0: none).
    pub applied: u64,
    pub queue: Queue,
    sync_backoff: Backoff,
    report_backoff: Backoff,
    /// The long-poll in flight, if any.
    poll: Option<u64>,
    poll_connected: bool,
    report_connected: bool,
    /// The sync loop's "offline" flag: its first answer after a failure wakes the reporter.
    offline: bool,
    reporter: Reporter,
    /// A notification that came while the reporter was busy (tokio's `Notify` permit).
    permit: bool,
    /// The latest end of a fault that touched this site: a partition, an outage, a restart, a
    /// lost long-poll. Convergence is owed from then on.
    pub disturbed: Time,
    /// Its status changes often (a flapping health check).
    pub flappy: bool,
}

impl Site {
    pub fn new(applied: u64, outbox_capacity: usize) -> Site {
        Site {
            up: true,
            epoch: 0,
            applied,
            queue: Queue::restore(Vec::new(), 1, 0, outbox_capacity),
            sync_backoff: Backoff::agent(),
            report_backoff: Backoff::agent(),
            poll: None,
            // The run starts from a fleet in its steady state, connections open.
            poll_connected: true,
            report_connected: true,
            offline: false,
            reporter: Reporter::Idle,
            permit: false,
            disturbed: 0,
            flappy: false,
        }
    }
}

impl World {
    /// The sync loop sends its next long-poll.
    pub(crate) fn poll(&mut self, site: u32, epoch: u32) {
        let now = self.agenda.now();
        let s = &mut self.sites[site as usize];
        if !s.up || s.epoch != epoch || s.poll.is_some() {
            return;
        }
        let req = self.next_id();
        let s = &mut self.sites[site as usize];
        s.poll = Some(req);
        let (have, fresh) = (s.applied, !s.poll_connected);
        if fresh && self.net.is_cut(site as usize, now) {
            let reply = PollReply::ConnectFailed;
            self.agenda
                .after(CONNECT_TIMEOUT, Event::PollReply { site, req, reply });
            return;
        }
        let reply = PollReply::TimedOut;
        self.agenda.after(
            self.cfg.poll_wait + POLL_MARGIN,
            Event::PollReply { site, req, reply },
        );
        if !self.net.loses(site as usize, now, &mut self.rng) {
            let delay = self.net.delay(site as usize, &mut self.rng);
            self.agenda.after(
                delay,
                Event::PollArrives {
                    site,
                    req,
                    have,
                    fresh,
                },
            );
        }
    }

    pub(crate) fn poll_reply(&mut self, site: u32, req: u64, reply: PollReply) {
        let now = self.agenda.now();
        let s = &mut self.sites[site as usize];
        if s.poll != Some(req) || !s.up {
            return;
        }
        s.poll = None;
        let polled = match reply {
            PollReply::TimedOut | PollReply::ConnectFailed => {
                s.poll_connected = false;
                s.disturbed = s.disturbed.max(now);
                Polled::Unreachable
            }
            // A 503 is an answer on an open connection, which stays open.
            PollReply::Unavailable => {
                s.poll_connected = true;
                Polled::Unreachable
            }
            PollReply::NotModified => Polled::NotModified,
            PollReply::Manifest(revision) => match (self.cfg.rules.accept)(revision, s.applied) {
                Ok(()) => Polled::Accepted,
                Err(_) => Polled::Refused,
            },
        };
        let s = &mut self.sites[site as usize];
        if polled == Polled::Unreachable {
            s.offline = true;
        } else {
            s.poll_connected = true;
            if s.offline {
                s.offline = false;
                self.notify_reporter(site);
            }
        }
        match (polled, reply) {
            (Polled::Accepted, PollReply::Manifest(revision)) => self.apply(site, revision),
            (Polled::Refused, _) => {
                self.stats.refused += 1;
                self.push_batch(site);
            }
            _ => {}
        }
        let s = &mut self.sites[site as usize];
        let pause = pause_after(polled, &mut s.sync_backoff, &mut self.rng);
        let epoch = s.epoch;
        self.agenda.after(
            pause.map_or(0, crate::time::from_duration),
            Event::Poll { site, epoch },
        );
    }

    /// The agent keeps a manifest it accepted, says so in a report, and its reconciler reports
    /// the status a moment later.
    fn apply(&mut self, site: u32, revision: u64) {
        let s = &mut self.sites[site as usize];
        let published = self.control.revision(site);
        if revision < s.applied {
            let from = s.applied;
            self.fail(format!(
                "site {site} went back from revision {from} to {revision}"
            ));
        } else if revision > published {
            self.fail(format!(
                "site {site} applied revision {revision}, never published (newest {published})"
            ));
        }
        let s = &mut self.sites[site as usize];
        s.applied = revision;
        let epoch = s.epoch;
        self.stats.accepted += 1;
        self.converged(site, revision);
        self.push_batch(site);
        let settle = self.rng.gen_range(300 * MILLISECOND..=2 * SECOND);
        self.agenda.after(settle, Event::Status { site, epoch });
    }

    /// The reconciler's status after a pass.
    pub(crate) fn status(&mut self, site: u32, epoch: u32) {
        let s = &self.sites[site as usize];
        if s.up && s.epoch == epoch {
            self.push_batch(site);
        }
    }

    /// A status change of the site's own (a health check flapping, a container restarting).
    pub(crate) fn local_status(&mut self, site: u32) {
        // The fleet goes quiet halfway through the healing phase, so every outbox can drain.
        if self.agenda.now() >= self.cfg.duration - self.cfg.heal / 2 {
            return;
        }
        if self.sites[site as usize].up {
            self.push_batch(site);
        }
        let every = if self.sites[site as usize].flappy {
            self.cfg.flappy_every
        } else {
            self.cfg.status_every
        };
        let next = exponential(&mut self.rng, every);
        self.agenda.after(next, Event::LocalStatus(site));
    }

    /// Queues a report batch in the outbox and wakes the reporter.
    fn push_batch(&mut self, site: u32) {
        let pushed = self.sites[site as usize].queue.push();
        self.ledger_produced(site, pushed.seq, &pushed.dropped);
        self.notify_reporter(site);
    }

    fn notify_reporter(&mut self, site: u32) {
        let s = &mut self.sites[site as usize];
        match s.reporter {
            Reporter::Sending(_) => s.permit = true,
            Reporter::Gathering(_) => {}
            Reporter::Sleeping(_) => self.send_reports(site),
            Reporter::Idle => {
                let token = self.next_id();
                self.sites[site as usize].reporter = Reporter::Gathering(token);
                self.agenda.after(
                    crate::time::from_duration(GATHER),
                    Event::ReportWake { site, token },
                );
            }
        }
    }

    /// The reporter's loop: send the oldest batches, or wait for a notification.
    fn send_reports(&mut self, site: u32) {
        let now = self.agenda.now();
        let s = &mut self.sites[site as usize];
        let seqs: Vec<u64> = s.queue.pending(BATCH_LIMIT).collect();
        if seqs.is_empty() {
            s.reporter = Reporter::Idle;
            s.permit = false;
            return;
        }
        let fresh = !s.report_connected;
        let req = self.next_id();
        self.sites[site as usize].reporter = Reporter::Sending(req);
        if fresh && self.net.is_cut(site as usize, now) {
            let reply = ReportReply::ConnectFailed;
            self.agenda
                .after(CONNECT_TIMEOUT, Event::ReportReply { site, req, reply });
            return;
        }
        let reply = ReportReply::TimedOut;
        self.agenda
            .after(REPORT_TIMEOUT, Event::ReportReply { site, req, reply });
        if !self.net.loses(site as usize, now, &mut self.rng) {
            let delay = self.net.delay(site as usize, &mut self.rng);
            self.agenda.after(
                delay,
                Event::ReportArrives {
                    site,
                    req,
                    seqs,
                    fresh,
                },
            );
        }
    }

    pub(crate) fn report_reply(&mut self, site: u32, req: u64, reply: ReportReply) {
        let s = &mut self.sites[site as usize];
        if s.reporter != Reporter::Sending(req) || !s.up {
            return;
        }
        match reply {
            ReportReply::Acked(acked) => {
                s.report_connected = true;
                s.report_backoff.reset();
                let forgotten = s.queue.acknowledge(acked).forgotten;
                self.ledger_forgotten(site, &forgotten);
                self.send_reports(site);
            }
            ReportReply::Unavailable | ReportReply::TimedOut | ReportReply::ConnectFailed => {
                s.report_connected = reply == ReportReply::Unavailable;
                let pause = s.report_backoff.next(&mut self.rng);
                if std::mem::take(&mut s.permit) {
                    self.send_reports(site);
                } else {
                    let token = self.next_id();
                    self.sites[site as usize].reporter = Reporter::Sleeping(token);
                    self.agenda.after(
                        crate::time::from_duration(pause),
                        Event::ReportWake { site, token },
                    );
                }
            }
        }
    }

    pub(crate) fn report_wake(&mut self, site: u32, token: u64) {
        let s = &self.sites[site as usize];
        if s.up
            && matches!(s.reporter, Reporter::Sleeping(t) | Reporter::Gathering(t) if t == token)
        {
            self.send_reports(site);
        }
    }

    /// The agent stops until `until`: whatever it had in flight is forgotten; the kept
    /// manifest and the outbox stay on disk.
    pub(crate) fn stop(&mut self, site: u32, until: Time) {
        let s = &mut self.sites[site as usize];
        s.up = false;
        s.disturbed = s.disturbed.max(until);
        s.epoch += 1;
        s.poll = None;
        s.reporter = Reporter::Idle;
        s.permit = false;
    }

    /// The agent starts: reopens its outbox, polls at once, sends what waits, and its first
    /// reconcile pass reports a status.
    pub(crate) fn start(&mut self, site: u32) {
        let now = self.agenda.now();
        let capacity = self.cfg.outbox_capacity;
        let s = &mut self.sites[site as usize];
        let queued = s.queue.pending(usize::MAX).collect();
        s.queue = Queue::restore(queued, s.queue.next_seq(), s.queue.dropped(), capacity);
        s.up = true;
        s.epoch += 1;
        s.sync_backoff = Backoff::agent();
        s.report_backoff = Backoff::agent();
        s.poll_connected = false;
        s.report_connected = false;
        s.offline = false;
        s.disturbed = s.disturbed.max(now);
        let epoch = s.epoch;
        self.agenda.after(0, Event::Poll { site, epoch });
        self.send_reports(site);
        let settle = self.rng.gen_range(300 * MILLISECOND..=2 * SECOND);
        self.agenda.after(settle, Event::Status { site, epoch });
    }
}

/// An exponentially distributed delay with mean `mean` (a Poisson process's gaps).
pub fn exponential(rng: &mut impl Rng, mean: Time) -> Time {
    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
    (-u.ln() * mean as f64) as Time
}
