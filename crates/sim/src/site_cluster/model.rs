//! The site as the model runs it: its hosts, the links between them, Raft's outcome, and the
//! events that move them on a virtual clock, one seeded generator drawing everything.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use atoll_agent::core::ReplicaKey;
use atoll_agent::core::cluster::{Liveness, Placement};
use atoll_api::host::{Host, Inventory, capability};
use atoll_api::manifest::{
    Manifest, ManifestApplication, ManifestContent, ManifestService, Requires, Resources,
};
use atoll_spec::application::Mode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::ledger::Ledger;
use super::{Config, Outcome};
use crate::outcome::Violation;
use crate::time::{Agenda, MILLISECOND, Time};

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0100_0000_01b3;

#[derive(Debug, Clone)]
pub(super) enum Event {
    /// A host tells every peer it reaches that it lives, and what it runs.
    Heartbeat {
        from: usize,
    },
    Hear {
        from: usize,
        to: usize,
        running: BTreeSet<ReplicaKey>,
    },
    /// Every leader appends, then schedules; voters that heard no leader stand.
    Turn,
    /// A host's reconciler applies entry `seq` of the log.
    Deliver {
        host: usize,
        seq: usize,
    },
    Fault,
    /// The end of the chaos: every cut healed, every dead host but perhaps one back.
    Heal,
    Settled,
    /// Is `key`, running nowhere since `since`, still lost?
    Lost {
        key: ReplicaKey,
        since: Time,
    },
}

impl Event {
    /// What the digest takes from an event besides its time.
    fn key(&self) -> [u64; 3] {
        match self {
            Event::Heartbeat { from } => [1, *from as u64, 0],
            Event::Hear { from, to, .. } => [2, *from as u64, *to as u64],
            Event::Turn => [3, 0, 0],
            Event::Deliver { host, seq } => [4, *host as u64, *seq as u64],
            Event::Fault => [5, 0, 0],
            Event::Heal => [6, 0, 0],
            Event::Settled => [7, 0, 0],
            Event::Lost { key, since } => [8, u64::from(key.index), *since],
        }
    }
}

/// One committed entry of the site log: the placement and the voters, whole.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub placement: Placement,
    pub voters: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub(super) struct HostState {
    pub name: String,
    pub alive: bool,
    /// The replicas its reconciler runs.
    pub running: BTreeSet<ReplicaKey>,
    /// Entries of the log it holds (in its folder) and has applied.
    pub held: usize,
    pub applied: usize,
    /// Raft's term as this host knows it.
    pub term: u64,
    /// When it last heard a leader (or led), and when it stands if it hears none before.
    pub leader_contact: Time,
    pub stand_at: Time,
    /// When it last heard each peer, in milliseconds, and what each said it runs.
    pub heard: BTreeMap<String, u64>,
    pub reports: BTreeMap<String, BTreeSet<ReplicaKey>>,
}

#[derive(Debug, Clone)]
pub(super) struct Leader {
    pub host: usize,
    pub term: u64,
    /// When it was elected, and the hosts its host had never heard then.
    pub since: Time,
    pub unheard: Vec<usize>,
    pub liveness: Liveness,
}

pub(super) struct Site {
    pub cfg: Config,
    rng: StdRng,
    pub agenda: Agenda<Event>,
    pub manifest: Manifest,
    /// Replicated services: (deployment, service, replicas); and every-host ones.
    pub replicated: Vec<(String, String, u32)>,
    pub every_host: Vec<(String, String)>,
    pub hosts: Vec<HostState>,
    inventory: Inventory,
    /// Cut pairs, lower index first.
    pub cut: BTreeSet<(usize, usize)>,
    /// Since when each pair's link has worked without a break.
    pub linked_since: BTreeMap<(usize, usize), Time>,
    pub initial_voters: BTreeSet<String>,
    pub log: Vec<Entry>,
    pub leaders: Vec<Leader>,
    pub ledger: Ledger,
    pub violation: Option<Violation>,
    chaos_over: bool,
    events: u64,
    digest: u64,
    pub faults: u64,
    pub elections: u64,
    pub commits: u64,
    pub moves: u64,
}

fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

fn service(name: &str, replicas: u32, mode: Mode) -> ManifestService {
    ManifestService {
        name: name.into(),
        image: format!("{name}:1"),
        command: Vec::new(),
        args: Vec::new(),
        env: BTreeMap::new(),
        replicas,
        mode,
        ports: Vec::new(),
        resources: Resources::default(),
        requires: Requires::default(),
        health: None,
        files: Vec::new(),
        secrets: Vec::new(),
        on_secret_change: Default::default(),
        volumes: Vec::new(),
    }
}

/// The site's manifest drawn from the seed: one to three replicated services of one to three
/// replicas, over one or two deployments, and one every-host service.
fn draw_manifest(rng: &mut StdRng) -> Manifest {
    let mut shop = vec![service("probe", 1, Mode::EveryHost)];
    let mut data = Vec::new();
    for (i, name) in ["web", "db", "cache"]
        .iter()
        .take(rng.gen_range(1..=3))
        .enumerate()
    {
        let s = service(name, rng.gen_range(1..=3), Mode::Replicated);
        if i == 1 { data.push(s) } else { shop.push(s) }
    }
    let mut applications = vec![ManifestApplication {
        deployment: "shop".into(),
        application: "app-shop".into(),
        version: "1.0.0".into(),
        services: shop,
        hosts: None,
    }];
    if !data.is_empty() {
        applications.push(ManifestApplication {
            deployment: "data".into(),
            application: "app-data".into(),
            version: "1.0.0".into(),
            services: data,
            hosts: None,
        });
    }
    applications.sort_by(|a, b| a.deployment.cmp(&b.deployment));
    Manifest {
        site: "site".into(),
        revision: 1,
        hash: "sha256:model".into(),
        content: ManifestContent {
            applications,
            ..ManifestContent::default()
        },
        sealed: Vec::new(),
    }
}

impl Site {
    pub fn new(cfg: Config) -> Site {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let count = cfg.hosts.unwrap_or_else(|| rng.gen_range(2..=6));
        let manifest = draw_manifest(&mut rng);
        let mut replicated = Vec::new();
        let mut every_host = Vec::new();
        for app in &manifest.content.applications {
            for s in &app.services {
                match s.mode {
                    Mode::EveryHost => every_host.push((app.deployment.clone(), s.name.clone())),
                    _ => replicated.push((app.deployment.clone(), s.name.clone(), s.replicas)),
                }
            }
        }
        let hosts: Vec<HostState> = (0..count)
            .map(|i| HostState {
                name: format!("h{i}"),
                alive: true,
                running: BTreeSet::new(),
                held: 0,
                applied: 0,
                term: 0,
                leader_contact: 0,
                stand_at: rng.gen_range(cfg.election_min..=cfg.election_max),
                heard: BTreeMap::new(),
                reports: BTreeMap::new(),
            })
            .collect();
        let members: BTreeSet<String> = hosts.iter().map(|h| h.name.clone()).collect();
        let initial_voters = (cfg.rules.voters)(&members, &members, &BTreeSet::new());
        let mut site = Site {
            rng,
            agenda: Agenda::default(),
            manifest,
            replicated,
            every_host,
            hosts,
            inventory: Inventory {
                arch: "x86_64".into(),
                cpus: 2,
                memory_bytes: 4 << 30,
                capabilities: capability::ALL.iter().map(|c| (*c).to_owned()).collect(),
                ..Inventory::default()
            },
            cut: BTreeSet::new(),
            linked_since: BTreeMap::new(),
            initial_voters,
            log: Vec::new(),
            leaders: Vec::new(),
            ledger: Ledger::default(),
            violation: None,
            chaos_over: false,
            events: 0,
            digest: FNV_OFFSET,
            faults: 0,
            elections: 0,
            commits: 0,
            moves: 0,
            cfg,
        };
        for from in 0..count {
            let phase = site.rng.gen_range(0..site.cfg.heartbeat);
            site.agenda.at(phase, Event::Heartbeat { from });
        }
        site.agenda.at(site.cfg.tick, Event::Turn);
        let first = site.gap();
        site.agenda.at(first, Event::Fault);
        site.agenda.at(site.cfg.chaos, Event::Heal);
        site.topology_changed();
        site.ledger_start();
        site
    }

    pub fn run(mut self) -> Result<Outcome, Violation> {
        let started = Instant::now();
        while self.violation.is_none() {
            let Some((at, event)) = self.agenda.pop() else {
                break;
            };
            self.events += 1;
            let key = event.key();
            self.digest = [at, key[0], key[1], key[2]]
                .iter()
                .fold(self.digest, |h, x| {
                    x.to_le_bytes()
                        .iter()
                        .fold(h, |h, b| (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME))
                });
            if !self.dispatch(event) {
                break;
            }
        }
        match self.violation.take() {
            Some(v) => Err(v),
            None => Ok(Outcome {
                seed: self.cfg.seed,
                hosts: self.hosts.len(),
                services: self.replicated.iter().map(|(_, _, n)| *n).collect(),
                simulated: self.agenda.now(),
                events: self.events,
                digest: self.digest,
                faults: self.faults,
                elections: self.elections,
                commits: self.commits,
                moves: self.moves,
                longest_loss: self.ledger.longest_loss,
                wall: started.elapsed(),
            }),
        }
    }

    pub fn now(&self) -> Time {
        self.agenda.now()
    }

    fn now_ms(&self) -> u64 {
        self.now() / MILLISECOND
    }

    pub fn fail(&mut self, what: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation {
                seed: self.cfg.seed,
                at: self.now(),
                what,
            });
        }
    }

    fn latency(&mut self) -> Time {
        self.rng
            .gen_range(self.cfg.latency_min..=self.cfg.latency_max)
    }

    /// The time to the next fault: mostly long enough for the site to settle between two.
    fn gap(&mut self) -> Time {
        let s = crate::time::SECOND;
        if self.rng.gen_bool(0.3) {
            self.rng.gen_range(s..5 * s)
        } else {
            self.rng.gen_range(10 * s..40 * s)
        }
    }

    /// Whether `a` and `b` reach each other now.
    pub fn linked(&self, a: usize, b: usize) -> bool {
        a != b && self.hosts[a].alive && self.hosts[b].alive && !self.cut.contains(&pair(a, b))
    }

    /// Whether `a` reaches `b` or is `b`, alive.
    pub fn reaches(&self, a: usize, b: usize) -> bool {
        (a == b && self.hosts[a].alive) || self.linked(a, b)
    }

    pub fn linked_since(&self, a: usize, b: usize) -> Option<Time> {
        self.linked_since.get(&pair(a, b)).copied()
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.hosts.iter().position(|h| h.name == name)
    }

    /// The voters as the log held by `host` has them.
    pub fn voters_held_by(&self, host: usize) -> &BTreeSet<String> {
        match self.hosts[host].held {
            0 => &self.initial_voters,
            n => &self.log[n - 1].voters,
        }
    }

    pub fn voters(&self) -> &BTreeSet<String> {
        self.log.last().map_or(&self.initial_voters, |e| &e.voters)
    }

    fn placement_held_by(&self, host: usize) -> Placement {
        match self.hosts[host].held {
            0 => Placement::default(),
            n => self.log[n - 1].placement.clone(),
        }
    }

    /// How many of `voters` `host` reaches, itself included.
    pub fn reached(&self, host: usize, voters: &BTreeSet<String>) -> usize {
        voters
            .iter()
            .filter_map(|v| self.index_of(v))
            .filter(|&v| self.reaches(host, v))
            .count()
    }

    /// The leader of the highest term that reaches a majority of the voters: the one whose
    /// side is the majority side.
    pub fn effective_leader(&self) -> Option<usize> {
        self.effective().map(|l| l.host)
    }

    pub fn effective(&self) -> Option<&Leader> {
        let voters = self.voters();
        self.leaders
            .iter()
            .filter(|l| 2 * self.reached(l.host, voters) > voters.len())
            .max_by_key(|l| l.term)
    }

    /// Runs `event`; false once the run is over.
    fn dispatch(&mut self, event: Event) -> bool {
        match event {
            Event::Heartbeat { from } => self.heartbeat(from),
            Event::Hear { from, to, running } => self.hear(from, to, running),
            Event::Turn => self.turn(),
            Event::Deliver { host, seq } => self.deliver(host, seq),
            Event::Fault => self.fault(),
            Event::Heal => self.heal(),
            Event::Settled => {
                self.final_checks();
                return false;
            }
            Event::Lost { key, since } => self.lost(key, since),
        }
        true
    }

    fn heartbeat(&mut self, from: usize) {
        let period = self.cfg.heartbeat;
        self.agenda.after(period, Event::Heartbeat { from });
        for to in 0..self.hosts.len() {
            if self.linked(from, to) {
                let latency = self.latency();
                let running = self.hosts[from].running.clone();
                self.agenda
                    .after(latency, Event::Hear { from, to, running });
            }
        }
    }

    fn hear(&mut self, from: usize, to: usize, running: BTreeSet<ReplicaKey>) {
        if !self.linked(from, to) {
            return;
        }
        let now_ms = self.now_ms();
        let name = self.hosts[from].name.clone();
        let host = &mut self.hosts[to];
        let at = host.heard.entry(name.clone()).or_default();
        *at = (*at).max(now_ms);
        host.reports.insert(name.clone(), running);
        for l in self.leaders.iter_mut().filter(|l| l.host == to) {
            l.liveness.heard(&name, now_ms);
        }
    }

    fn turn(&mut self) {
        let tick = self.cfg.tick;
        self.agenda.after(tick, Event::Turn);
        self.appends();
        let leaders: Vec<usize> = self.leaders.iter().map(|l| l.host).collect();
        for host in leaders {
            if self.violation.is_none() {
                self.schedule(host);
            }
        }
        for host in 0..self.hosts.len() {
            if self.violation.is_none() {
                self.maybe_stand(host);
            }
        }
        self.refresh_able();
    }

    /// Every leader reaches its hosts: one that meets a higher term steps down; the others
    /// take its term and what they miss of its log.
    fn appends(&mut self) {
        let now = self.now();
        let mut i = 0;
        while i < self.leaders.len() {
            let Leader { host: l, term, .. } = self.leaders[i];
            let reached: Vec<usize> = (0..self.hosts.len())
                .filter(|&h| self.linked(l, h))
                .collect();
            if reached.iter().any(|&h| self.hosts[h].term > term) {
                self.leaders.remove(i);
                self.reset_election(l);
                continue;
            }
            self.hosts[l].leader_contact = now;
            let held = self.hosts[l].held;
            for h in reached {
                self.reset_election(h);
                let host = &mut self.hosts[h];
                host.term = term;
                host.leader_contact = now;
                if host.held < held {
                    host.held = held;
                    let latency = self.latency();
                    self.agenda
                        .after(latency, Event::Deliver { host: h, seq: held });
                }
            }
            i += 1;
        }
    }

    fn reset_election(&mut self, host: usize) {
        let timeout = self
            .rng
            .gen_range(self.cfg.election_min..=self.cfg.election_max);
        self.hosts[host].stand_at = self.agenda.now() + timeout;
    }

    /// A live voter that has heard no leader for its election timeout stands.
    fn maybe_stand(&mut self, c: usize) {
        let now = self.now();
        let host = &self.hosts[c];
        if !host.alive
            || self.leaders.iter().any(|l| l.host == c)
            || now < host.stand_at
            || !self.voters_held_by(c).contains(&host.name)
        {
            return;
        }
        let voters = self.voters_held_by(c).clone();
        let held = host.held;
        let lease = self.cfg.election_min;
        let grantors: Vec<usize> = voters
            .iter()
            .filter_map(|v| self.index_of(v))
            .filter(|&v| {
                v != c
                    && self.linked(c, v)
                    && !self.leaders.iter().any(|l| l.host == v)
                    && now >= self.hosts[v].leader_contact + lease
                    && self.hosts[v].held <= held
            })
            .collect();
        if 2 * (grantors.len() + 1) <= voters.len() {
            self.reset_election(c);
            return;
        }
        let term = grantors
            .iter()
            .map(|&g| self.hosts[g].term)
            .chain([self.hosts[c].term])
            .max()
            .unwrap_or(0)
            + 1;
        for &g in &grantors {
            self.hosts[g].term = term;
            self.reset_election(g);
        }
        self.hosts[c].term = term;
        self.hosts[c].leader_contact = now;
        let now_ms = self.now_ms();
        let mut liveness = Liveness::new(now_ms);
        for (peer, at) in &self.hosts[c].heard {
            liveness.heard(peer, *at);
        }
        let unheard = (0..self.hosts.len())
            .filter(|&h| h != c && !self.hosts[c].heard.contains_key(&self.hosts[h].name))
            .collect();
        self.leaders.push(Leader {
            host: c,
            term,
            since: now,
            unheard,
            liveness,
        });
        self.elections += 1;
        self.ledger_elected(c, term, grantors.len() + 1, &voters);
    }

    /// A leader's turn: the hosts it takes for up, the voters and the placement, committed
    /// when they change and it can.
    fn schedule(&mut self, l: usize) {
        let Some(leader) = self.leaders.iter().find(|x| x.host == l).cloned() else {
            return;
        };
        let now_ms = self.now_ms();
        let timeout_ms = self.cfg.failure_timeout / MILLISECOND;
        let down = self.cfg.rules.down;
        let me = self.hosts[l].name.clone();
        let up: BTreeSet<String> = self
            .hosts
            .iter()
            .map(|h| h.name.clone())
            .filter(|h| *h == me || !down(&leader.liveness, h, now_ms, timeout_ms))
            .collect();
        let members: BTreeSet<String> = self.hosts.iter().map(|h| h.name.clone()).collect();
        let current = self.voters_held_by(l).clone();
        let voters = (self.cfg.rules.voters)(&members, &up, &current);
        let up_hosts: Vec<Host> = up
            .iter()
            .map(|name| Host {
                name: name.clone(),
                inventory: self.inventory.clone(),
                labels: BTreeMap::new(),
            })
            .collect();
        let mut running: BTreeMap<String, BTreeSet<ReplicaKey>> = self.hosts[l]
            .reports
            .iter()
            .filter(|(h, _)| up.contains(*h))
            .map(|(h, r)| (h.clone(), r.clone()))
            .collect();
        running.insert(me, self.hosts[l].running.clone());
        let placed = self.placement_held_by(l);
        let schedule = (self.cfg.rules.schedule)(&self.manifest, &up_hosts, &placed, &running);
        if schedule.placement == placed && voters == current {
            return;
        }
        if !(self.cfg.rules.commits)(self.reached(l, &current), current.len()) {
            return;
        }
        self.ledger_commit(l, leader.term, &placed, &schedule.placement, &current);
        self.commits += 1;
        self.moves += schedule.moves.len() as u64;
        self.log.push(Entry {
            placement: schedule.placement,
            voters,
        });
        let seq = self.log.len();
        self.refresh_able();
        for h in 0..self.hosts.len() {
            if self.reaches(l, h) && self.hosts[h].term <= leader.term {
                self.hosts[h].held = seq;
                let latency = if h == l { 0 } else { self.latency() };
                self.agenda.after(latency, Event::Deliver { host: h, seq });
            }
        }
    }

    fn deliver(&mut self, host: usize, seq: usize) {
        let h = &self.hosts[host];
        if !h.alive || h.applied >= seq {
            return;
        }
        let placed = self.log[seq - 1].placement.on(&h.name);
        let running = (self.cfg.rules.reconcile)(&placed, &h.running);
        let h = &mut self.hosts[host];
        h.applied = seq;
        h.running = running;
        self.running_changed();
    }

    fn fault(&mut self) {
        if self.chaos_over {
            return;
        }
        self.faults += 1;
        let n = self.hosts.len();
        let alive: Vec<usize> = (0..n).filter(|&h| self.hosts[h].alive).collect();
        let dead: Vec<usize> = (0..n).filter(|&h| !self.hosts[h].alive).collect();
        match self.rng.gen_range(0..5) {
            0 if alive.len() > 1 => {
                let h = alive[self.rng.gen_range(0..alive.len())];
                self.kill(h);
            }
            1 if !dead.is_empty() => {
                let h = dead[self.rng.gen_range(0..dead.len())];
                self.revive(h);
            }
            2 => {
                let h = self.rng.gen_range(0..n);
                for other in (0..n).filter(|&o| o != h) {
                    self.cut.insert(pair(h, other));
                }
            }
            3 => {
                let a = self.rng.gen_range(0..n);
                let b = (a + self.rng.gen_range(1..n)) % n;
                self.cut.insert(pair(a, b));
            }
            _ => self.cut.clear(),
        }
        self.topology_changed();
        self.running_changed();
        let gap = self.gap();
        self.agenda.after(gap, Event::Fault);
    }

    fn kill(&mut self, h: usize) {
        let host = &mut self.hosts[h];
        host.alive = false;
        host.running.clear();
        host.applied = 0;
        self.leaders.retain(|l| l.host != h);
    }

    /// A dead host starts again from its folder: its term and its log, nothing running, no
    /// memory of its peers; its reconciler runs what the placement it holds gives it.
    fn revive(&mut self, h: usize) {
        let placed = self.placement_held_by(h).on(&self.hosts[h].name);
        let running = (self.cfg.rules.reconcile)(&placed, &BTreeSet::new());
        let host = &mut self.hosts[h];
        host.alive = true;
        host.running = running;
        host.applied = host.held;
        host.heard.clear();
        host.reports.clear();
        self.reset_election(h);
    }

    /// The end of the chaos: every cut healed and every dead host back, but, at a site of
    /// three or more, perhaps one, so the settled site is also checked with a host gone.
    fn heal(&mut self) {
        self.chaos_over = true;
        self.cut.clear();
        let mut dead: Vec<usize> = (0..self.hosts.len())
            .filter(|&h| !self.hosts[h].alive)
            .collect();
        if self.hosts.len() >= 3 && !dead.is_empty() && self.rng.gen_bool(0.5) {
            dead.remove(self.rng.gen_range(0..dead.len()));
        }
        for h in dead {
            self.revive(h);
        }
        self.topology_changed();
        self.running_changed();
        let settle = self.cfg.settle();
        self.agenda.after(settle, Event::Settled);
    }

    /// Links that broke or came back since the last change.
    fn topology_changed(&mut self) {
        let now = self.now();
        let n = self.hosts.len();
        for a in 0..n {
            for b in a + 1..n {
                if self.linked(a, b) {
                    self.linked_since.entry((a, b)).or_insert(now);
                } else {
                    self.linked_since.remove(&(a, b));
                }
            }
        }
        self.ledger_disturbed();
    }
}
