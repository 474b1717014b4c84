//! The site cluster's invariants, each failing the run the moment it is broken:
//!
//! - **One leader per term**, and a leader is elected by a majority of the voters.
//! - **A minority side never changes placement**: every entry is committed by a leader that
//!   reaches a majority of the voters.
//! - **No replica that keeps running is moved**: a replica is never placed elsewhere while its
//!   host is alive and the leader has reached it without a break for the failure timeout (its
//!   container would restart for nothing; a host that returns takes nothing back).
//! - **Never more than N on the majority side**: among the hosts the leader of the majority
//!   reaches that have applied its newest placement, a replica runs once, and a service runs
//!   at most its N replicas; a host never runs two replicas of one every-host service. (A host
//!   that has not yet applied what the leader sent it, or is catching up after a cut or a
//!   restart, is not counted: its reconciler cannot act on what it has not received.)
//! - **None lost while a majority lives**: while the site has a leader reaching a majority of
//!   the voters or could elect one (a live voter reaches a majority of the voters, none with
//!   a longer log than its own nor held by the lease of a leader cut off from its own
//!   majority), a replica of a replicated service runs somewhere
//!   again within the failure timeout plus [`Config::bound`](super::Config::bound) of running
//!   nowhere, or of the last fault, or of the site regaining a live voter that reaches a
//!   majority of the voters, or of the election of a leader that had never heard a host it
//!   does not reach (it gives that host one full failure timeout, and may place replicas on
//!   it meanwhile), whichever is later.
//! - **Settled, exactly N**: once the healing phase has had [`Config::settle`](super::Config::settle),
//!   there is a leader, every live host has applied the newest placement, every replicated
//!   service runs exactly its N replicas, each on one live host, and every live host runs one
//!   replica of each every-host service.

use std::collections::BTreeMap;

use atoll_agent::core::ReplicaKey;
use atoll_agent::core::cluster::Placement;

use super::model::{Event, Site};
use crate::time::{Time, seconds};

#[derive(Debug, Default)]
pub struct Ledger {
    /// The leader of each term.
    terms: BTreeMap<u64, String>,
    /// Replicas of replicated services running nowhere, since when.
    missing: BTreeMap<ReplicaKey, Time>,
    /// The last fault (or heal).
    disturbed: Time,
    /// Whether a live voter reaches a majority of the voters, and since when.
    able: bool,
    able_since: Time,
    /// The longest a replica ran nowhere, counted as the invariant counts it (see
    /// `owed_from`).
    pub longest_loss: Time,
}

fn name(key: &ReplicaKey) -> String {
    format!("{}/{}/{}", key.deployment, key.service, key.index)
}

impl Site {
    pub(super) fn ledger_start(&mut self) {
        self.running_changed();
    }

    /// A fault: links and hosts changed.
    pub(super) fn ledger_disturbed(&mut self) {
        self.ledger.disturbed = self.now();
        self.refresh_able();
    }

    /// Whether the site has a leader reaching a majority of the voters, or could elect one: a
    /// live voter reaching a majority of voters whose logs are no longer than its own and that
    /// no leader cut off from its own majority holds (Raft's leader lease keeps a voter that
    /// hears a leader from voting for another).
    pub(super) fn refresh_able(&mut self) {
        let voters: Vec<usize> = self
            .voters()
            .iter()
            .filter_map(|v| self.index_of(v))
            .collect();
        let effective = self.effective_leader();
        let held = |w: usize| {
            self.leaders
                .iter()
                .any(|l| Some(l.host) != effective && self.reaches(l.host, w))
        };
        let able = effective.is_some()
            || voters.iter().any(|&v| {
                let free = voters
                    .iter()
                    .filter(|&&w| {
                        self.reaches(v, w) && !held(w) && self.hosts[w].held <= self.hosts[v].held
                    })
                    .count();
                self.hosts[v].alive && !held(v) && 2 * free > voters.len()
            });
        if able && !self.ledger.able {
            self.ledger.able_since = self.now();
        }
        self.ledger.able = able;
    }

    pub(super) fn ledger_elected(
        &mut self,
        host: usize,
        term: u64,
        votes: usize,
        voters: &std::collections::BTreeSet<String>,
    ) {
        let me = self.hosts[host].name.clone();
        if 2 * votes <= voters.len() {
            self.fail(format!(
                "{me} was elected leader of term {term} by a minority: {votes} of {} voters",
                voters.len()
            ));
            return;
        }
        if let Some(other) = self.ledger.terms.insert(term, me.clone()) {
            self.fail(format!("two leaders in term {term}: {other} and {me}"));
        }
    }

    /// Leader `host` of `term` commits `new` over `placed`, `voters` voting.
    pub(super) fn ledger_commit(
        &mut self,
        host: usize,
        term: u64,
        placed: &Placement,
        new: &Placement,
        voters: &std::collections::BTreeSet<String>,
    ) {
        let me = self.hosts[host].name.clone();
        let reached = self.reached(host, voters);
        if 2 * reached <= voters.len() {
            self.fail(format!(
                "{me}, leader of term {term}, changed the placement from a minority side: it reaches {reached} of {} voters",
                voters.len()
            ));
            return;
        }
        let now = self.now();
        for (key, from) in placed.iter() {
            if new.host_of(&key) == Some(from) {
                continue;
            }
            let Some(f) = self.index_of(from) else {
                continue;
            };
            let since = if f == host {
                Some(0)
            } else {
                self.linked_since(host, f)
            };
            if let Some(since) = since
                && now >= since + self.cfg.failure_timeout
            {
                self.fail(format!(
                    "{me} moved replica {} off {from}, which it has reached without a break for {:.1} s: a replica that kept running would restart",
                    name(&key),
                    seconds(now - since)
                ));
                return;
            }
        }
    }

    /// What some host runs changed.
    pub(super) fn running_changed(&mut self) {
        if let Some(leader) = self.effective_leader() {
            let newest = self.log.len();
            let counted: Vec<usize> = (0..self.hosts.len())
                .filter(|&h| self.reaches(leader, h) && self.hosts[h].applied == newest)
                .collect();
            for (deployment, service, n) in self.replicated.clone() {
                let mut on: BTreeMap<&ReplicaKey, &str> = BTreeMap::new();
                let mut twice = None;
                for &h in &counted {
                    for key in self.hosts[h]
                        .running
                        .iter()
                        .filter(|k| k.deployment == deployment && k.service == service)
                    {
                        if let Some(other) = on.insert(key, &self.hosts[h].name) {
                            twice = Some((name(key), other.to_owned(), self.hosts[h].name.clone()));
                        }
                    }
                }
                let count = on.len();
                if let Some((key, a, b)) = twice {
                    self.fail(format!(
                        "replica {key} runs on both {a} and {b} on the majority side"
                    ));
                    return;
                }
                if count > n as usize {
                    self.fail(format!(
                        "{deployment}/{service} runs {count} replicas on the majority side, more than its {n}"
                    ));
                    return;
                }
            }
        }
        for (deployment, service) in self.every_host.clone() {
            for h in &self.hosts {
                let count = h
                    .running
                    .iter()
                    .filter(|k| k.deployment == deployment && k.service == service)
                    .count();
                if count > 1 {
                    let what = format!(
                        "{} runs {count} replicas of the every-host service {deployment}/{service}",
                        h.name
                    );
                    self.fail(what);
                    return;
                }
            }
        }
        let now = self.now();
        let budget = self.cfg.failure_timeout + self.cfg.bound;
        for (deployment, service, n) in self.replicated.clone() {
            for index in 0..n {
                let key = ReplicaKey {
                    deployment: deployment.clone(),
                    service: service.clone(),
                    index,
                };
                let runs = self
                    .hosts
                    .iter()
                    .any(|h| h.alive && h.running.contains(&key));
                match (runs, self.ledger.missing.get(&key).copied()) {
                    (false, None) => {
                        self.ledger.missing.insert(key.clone(), now);
                        self.agenda
                            .at(now + budget, Event::Lost { key, since: now });
                    }
                    (true, Some(since)) => {
                        let from = self.owed_from(since);
                        self.ledger.longest_loss =
                            self.ledger.longest_loss.max(now.saturating_sub(from));
                        self.ledger.missing.remove(&key);
                    }
                    _ => {}
                }
            }
        }
    }

    /// From when a replica running nowhere since `since` is owed: the later of its loss, the
    /// last fault, the site's regaining a majority, and the election of a leader that had never
    /// heard a host it does not reach (its host started since the host died or was cut off):
    /// `Liveness` gives such a host one full failure timeout from the election, and `schedule`
    /// may place replicas on it meanwhile.
    fn owed_from(&self, since: Time) -> Time {
        let from = since.max(self.ledger.disturbed).max(self.ledger.able_since);
        match self.effective() {
            Some(l) if l.unheard.iter().any(|&h| !self.linked(l.host, h)) => from.max(l.since),
            _ => from,
        }
    }

    /// `key` has run nowhere since `since`: is it owed by now?
    pub(super) fn lost(&mut self, key: ReplicaKey, since: Time) {
        if self.ledger.missing.get(&key) != Some(&since) {
            return;
        }
        let now = self.now();
        let budget = self.cfg.failure_timeout + self.cfg.bound;
        if !self.ledger.able {
            self.agenda.at(now + budget, Event::Lost { key, since });
            return;
        }
        let from = self.owed_from(since);
        if now < from + budget {
            self.agenda.at(from + budget, Event::Lost { key, since });
            return;
        }
        self.fail(format!(
            "replica {} has run nowhere for {:.1} s ({:.1} s since the last fault) while a majority of the voters lives",
            name(&key),
            seconds(now - since),
            seconds(now - from)
        ));
    }

    /// The end of the run, the site healed and settled.
    pub(super) fn final_checks(&mut self) {
        if self.effective_leader().is_none() {
            self.fail("the settled site has no leader reaching a majority".to_owned());
            return;
        }
        let newest = self.log.len();
        for h in self.hosts.iter().filter(|h| h.alive) {
            if h.applied != newest {
                let what = format!(
                    "{} has applied {} of the {newest} entries of the settled site's log",
                    h.name, h.applied
                );
                self.fail(what);
                return;
            }
        }
        for (deployment, service, n) in self.replicated.clone() {
            let mut count: BTreeMap<u32, Vec<&str>> = BTreeMap::new();
            for h in self.hosts.iter().filter(|h| h.alive) {
                for k in h
                    .running
                    .iter()
                    .filter(|k| k.deployment == deployment && k.service == service)
                {
                    count.entry(k.index).or_default().push(&h.name);
                }
            }
            let exact =
                count.len() == n as usize && count.iter().all(|(i, on)| *i < n && on.len() == 1);
            if !exact {
                let what = format!(
                    "settled, {deployment}/{service} should run exactly {n} replicas, one each; it runs {count:?}"
                );
                self.fail(what);
                return;
            }
        }
        for (deployment, service) in self.every_host.clone() {
            for h in self.hosts.iter().filter(|h| h.alive) {
                let count = h
                    .running
                    .iter()
                    .filter(|k| k.deployment == deployment && k.service == service)
                    .count();
                if count != 1 {
                    let what = format!(
                        "settled, {} runs {count} replicas of the every-host service {deployment}/{service}, not one",
                        h.name
                    );
                    self.fail(what);
                    return;
                }
            }
        }
    }
}
