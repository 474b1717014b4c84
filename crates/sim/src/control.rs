//! The control plane as the agents meet it: revisions published per site, long-polls answered
//! at once or held until a commit wakes them or the wait ends, and report batches stored once
//! each and acknowledged. Its decisions are the real ones (`revision::next`,
//! `revision::answers`, `ReportCursor::admit`, through [`Rules`](crate::rules::Rules)); its
//! capacity is a model: `cpus` cores doing TLS handshakes and manifest answers in arrival
//! order, one writer committing reports, and at most `max_polls` / `max_reports` requests
//! admitted at once, the rest answered 503.

use atoll_store::ReportCursor;
use rand::Rng;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::config::Capacity;
use crate::site::{PollReply, REPORT_TIMEOUT, ReportReply};
use crate::time::{Time, seconds};
use crate::world::{Event, World};

/// Servers taking jobs in arrival order: each job starts when one is free.
#[derive(Debug)]
struct Servers {
    free_at: BinaryHeap<Reverse<Time>>,
}

impl Servers {
    fn new(count: usize) -> Servers {
        Servers {
            free_at: (0..count.max(1)).map(|_| Reverse(0)).collect(),
        }
    }

    /// Queues a job of `cost` arriving at `now`: when it starts and when it is done.
    fn run(&mut self, now: Time, cost: Time) -> (Time, Time) {
        let Reverse(free) = self.free_at.pop().unwrap_or(Reverse(now));
        let start = free.max(now);
        self.free_at.push(Reverse(start + cost));
        (start, start + cost)
    }
}

/// A held long-poll.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    req: u64,
    have: u64,
}

/// What the control plane did, for the outcome.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ControlStats {
    pub handshakes: u64,
    pub polls: u64,
    pub manifests_sent: u64,
    pub reports: u64,
    pub rejected_polls: u64,
    pub rejected_reports: u64,
    pub max_polls_admitted: u32,
    /// Most held long-polls being answered at once after commits woke them.
    pub max_woken: u32,
    pub max_reports_admitted: u32,
    pub max_held: u64,
    /// The longest a job waited for a core, and for the writer.
    pub max_cpu_wait: Time,
    pub max_writer_wait: Time,
}

#[derive(Debug)]
pub struct Control {
    capacity: Capacity,
    revisions: Vec<u64>,
    hashes: Vec<String>,
    held: Vec<Vec<Waiter>>,
    held_count: u64,
    cursors: Vec<ReportCursor>,
    cpus: Servers,
    writer: Servers,
    polls_admitted: u32,
    woken: u32,
    reports_admitted: u32,
    pub stats: ControlStats,
}

impl Control {
    /// Every site starts with its first manifest published.
    pub fn new(sites: usize, capacity: Capacity) -> Control {
        Control {
            cpus: Servers::new(capacity.cpus),
            writer: Servers::new(1),
            capacity,
            revisions: vec![1; sites],
            hashes: vec![String::from("0"); sites],
            held: vec![Vec::new(); sites],
            held_count: 0,
            cursors: vec![ReportCursor::default(); sites],
            polls_admitted: 0,
            woken: 0,
            reports_admitted: 0,
            stats: ControlStats::default(),
        }
    }

    pub fn revision(&self, site: u32) -> u64 {
        self.revisions[site as usize]
    }

    /// The hash of the site's stored manifest content.
    pub fn content(&self, site: u32) -> &str {
        &self.hashes[site as usize]
    }

    fn cpu(&mut self, now: Time, cost: Time) -> Time {
        let (start, done) = self.cpus.run(now, cost);
        self.stats.max_cpu_wait = self.stats.max_cpu_wait.max(start - now);
        done
    }
}

impl World {
    /// An apply compiled new content for `site`: the planner's revision rule decides whether it
    /// is a new revision; a new one wakes the site's held long-polls.
    pub(crate) fn publish(&mut self, site: u32, hash: String) -> Option<u64> {
        let now = self.agenda.now();
        let c = &mut self.control;
        let i = site as usize;
        let stored = c.revisions[i];
        let revision = (self.cfg.rules.next_revision)(Some((stored, &c.hashes[i])), &hash)?;
        if revision <= stored {
            self.fail(format!(
                "the control plane published revision {revision} for site {site} over {stored}"
            ));
            return None;
        }
        let c = &mut self.control;
        c.revisions[i] = revision;
        c.hashes[i] = hash;
        let answers = self.cfg.rules.answers;
        let (woken, held): (Vec<Waiter>, Vec<Waiter>) = std::mem::take(&mut c.held[i])
            .into_iter()
            .partition(|w| answers(revision, w.have));
        c.held[i] = held;
        c.held_count -= woken.len() as u64;
        for w in woken {
            c.woken += 1;
            let cost = c.capacity.poll_check + c.capacity.poll_answer;
            let done = c.cpu(now, cost);
            let req = w.req;
            self.agenda.at(
                done,
                Event::PollAnswered {
                    site,
                    req,
                    woken: true,
                },
            );
        }
        self.check_load();
        self.obligation(site, revision, now);
        Some(revision)
    }

    /// A long-poll reached the control plane; on a new connection, the TLS handshake first.
    pub(crate) fn poll_arrives(&mut self, site: u32, req: u64, have: u64, fresh: bool) {
        let now = self.agenda.now();
        if fresh {
            self.control.stats.handshakes += 1;
            let cost = self.control.capacity.handshake;
            let done = self.control.cpu(now, cost);
            self.agenda.at(done, Event::PollAdmit { site, req, have });
        } else {
            self.poll_admit(site, req, have);
        }
    }

    pub(crate) fn poll_admit(&mut self, site: u32, req: u64, have: u64) {
        let now = self.agenda.now();
        let c = &mut self.control;
        c.stats.polls += 1;
        // Held polls woken by a commit are work in progress too: while they are answered, new
        // requests wait their turn at the agents rather than in the control plane's memory.
        if c.polls_admitted + c.woken >= c.capacity.max_polls {
            c.stats.rejected_polls += 1;
            self.reply_poll(site, req, PollReply::Unavailable);
            return;
        }
        c.polls_admitted += 1;
        let cost = c.capacity.poll_check;
        let done = c.cpu(now, cost);
        self.check_load();
        self.agenda.at(done, Event::PollChecked { site, req, have });
    }

    /// The site's revision was read: answer now, or hold the poll until a commit or the wait's
    /// end (`Agents::poll_manifest`).
    pub(crate) fn poll_checked(&mut self, site: u32, req: u64, have: u64) {
        let now = self.agenda.now();
        let c = &mut self.control;
        if (self.cfg.rules.answers)(c.revisions[site as usize], have) {
            let cost = c.capacity.poll_answer;
            let done = c.cpu(now, cost);
            let woken = false;
            self.agenda
                .at(done, Event::PollAnswered { site, req, woken });
            return;
        }
        c.polls_admitted -= 1;
        c.held[site as usize].push(Waiter { req, have });
        c.held_count += 1;
        c.stats.max_held = c.stats.max_held.max(c.held_count);
        self.agenda
            .after(self.cfg.poll_wait, Event::PollExpires { site, req });
    }

    pub(crate) fn poll_answered(&mut self, site: u32, req: u64, woken: bool) {
        let c = &mut self.control;
        if woken {
            c.woken -= 1;
        } else {
            c.polls_admitted -= 1;
        }
        c.stats.manifests_sent += 1;
        let revision = c.revisions[site as usize];
        self.reply_poll(site, req, PollReply::Manifest(revision));
    }

    pub(crate) fn poll_expires(&mut self, site: u32, req: u64) {
        let c = &mut self.control;
        let held = &mut c.held[site as usize];
        if let Some(at) = held.iter().position(|w| w.req == req) {
            held.swap_remove(at);
            c.held_count -= 1;
            self.reply_poll(site, req, PollReply::NotModified);
        }
    }

    /// Sends a long-poll's answer back, unless the network loses it; a stale cache on the way
    /// may replace a 200 or a 304 with an older signed manifest of the site.
    fn reply_poll(&mut self, site: u32, req: u64, reply: PollReply) {
        let now = self.agenda.now();
        if self.net.loses(site as usize, now, &mut self.rng) {
            return;
        }
        let reply = match reply {
            PollReply::Manifest(_) | PollReply::NotModified
                if self.net.replays(now, &mut self.rng) =>
            {
                let newest = self.control.revisions[site as usize];
                self.stats.replays += 1;
                PollReply::Manifest(self.rng.gen_range(1..=newest))
            }
            other => other,
        };
        let delay = self.net.delay(site as usize, &mut self.rng);
        self.agenda
            .after(delay, Event::PollReply { site, req, reply });
    }

    pub(crate) fn report_arrives(&mut self, site: u32, req: u64, seqs: Vec<u64>, fresh: bool) {
        let now = self.agenda.now();
        if fresh {
            self.control.stats.handshakes += 1;
            let cost = self.control.capacity.handshake;
            let done = self.control.cpu(now, cost);
            self.agenda.at(done, Event::ReportAdmit { site, req, seqs });
        } else {
            self.report_admit(site, req, seqs);
        }
    }

    pub(crate) fn report_admit(&mut self, site: u32, req: u64, seqs: Vec<u64>) {
        let now = self.agenda.now();
        let c = &mut self.control;
        c.stats.reports += 1;
        if c.reports_admitted >= c.capacity.max_reports {
            c.stats.rejected_reports += 1;
            self.reply_report(site, req, ReportReply::Unavailable);
            return;
        }
        c.reports_admitted += 1;
        let cost = c.capacity.report_commit + c.capacity.report_batch * seqs.len() as Time;
        let (start, done) = c.writer.run(now, cost);
        c.stats.max_writer_wait = c.stats.max_writer_wait.max(start - now);
        self.check_load();
        self.agenda
            .at(done, Event::ReportCommitted { site, req, seqs });
    }

    /// The report transaction commits: new batches are stored, resends ignored
    /// (`SqliteStore::record_report`), and the highest stored sequence is the acknowledgement.
    pub(crate) fn report_committed(&mut self, site: u32, req: u64, seqs: Vec<u64>) {
        let admit = self.cfg.rules.admit_report;
        for seq in seqs {
            if admit(&mut self.control.cursors[site as usize], seq) {
                self.ledger_recorded(site, seq);
            } else {
                self.stats.resends_ignored += 1;
            }
        }
        let c = &mut self.control;
        c.reports_admitted -= 1;
        let acked = c.cursors[site as usize].acked();
        self.reply_report(site, req, ReportReply::Acked(acked));
    }

    fn reply_report(&mut self, site: u32, req: u64, reply: ReportReply) {
        let now = self.agenda.now();
        if self.net.loses(site as usize, now, &mut self.rng) {
            return;
        }
        let delay = self.net.delay(site as usize, &mut self.rng);
        self.agenda
            .after(delay, Event::ReportReply { site, req, reply });
    }

    /// The control plane does not fall over: admitted requests stay within their bounds, and
    /// no job waits for a core or the writer as long as its client waits for the answer (work
    /// done for a client that gave up is how an overloaded server collapses).
    fn check_load(&mut self) {
        let c = &mut self.control;
        let s = &mut c.stats;
        s.max_polls_admitted = s.max_polls_admitted.max(c.polls_admitted);
        s.max_reports_admitted = s.max_reports_admitted.max(c.reports_admitted);
        s.max_woken = s.max_woken.max(c.woken);
        let report_wait = s.max_writer_wait;
        let poll_wait = s.max_cpu_wait;
        let problem = if c.polls_admitted > c.capacity.max_polls {
            Some(format!("{} long-polls admitted at once", c.polls_admitted))
        } else if c.reports_admitted > c.capacity.max_reports {
            Some(format!("{} reports admitted at once", c.reports_admitted))
        } else if poll_wait >= REPORT_TIMEOUT {
            Some(format!("a job waited {} s for a core", seconds(poll_wait)))
        } else if report_wait >= REPORT_TIMEOUT {
            Some(format!(
                "a report waited {} s for the writer",
                seconds(report_wait)
            ))
        } else {
            None
        };
        if let Some(problem) = problem {
            self.fail(format!("the control plane is overloaded: {problem}"));
        }
    }
}
