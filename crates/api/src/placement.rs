//! Which host of a site runs which replica: the one placement decision, made by the control
//! plane (to choose the sites a deployment is placed at, and to say why it is not placed at the
//! others), by each agent (the replicas given to its own host), and by a site cluster's leader
//! (which of the site's hosts runs each replica), so a site decides offline exactly as the
//! control plane would.
//!
//! A host qualifies for a service when it matches the deployment's host selector
//! (`placement.hosts`, over [`Host::facts`]), has at least one device of every class the service
//! requires, carries its required labels and architecture, and has the free capacity its
//! resources ask for: the host's CPUs and memory minus the requests of the replicas placed on it,
//! not measured use. A deployment is placed at a site only whole: every replica of every service
//! finds a host, or none runs and the deployment is unplaced with the reason.
//!
//! The decision is sticky: it takes where each replica runs now ([`Previous`]) and keeps it
//! there while that host is still given (a host left out of `hosts` is taken for dead) and still
//! qualifies, before anything new is placed, so a running replica is never displaced by one that
//! is not running yet. What is left is placed deployment by deployment in the order given (the
//! compiler gives them by name), each replica on the qualifying host with the fewest replicas of
//! its service so far, then the most free memory, then the first name. So a host that dies moves
//! only its own replicas, one that comes back takes nothing back (there is no churn to rebalance),
//! and placing again with the answer as the previous placement gives the same answer. A service
//! with `every_host` has one replica on each qualifying host with room; a replica it keeps keeps
//! its index, and a new one takes the smallest index not in use. The answer depends on nothing
//! but the input: hosts are taken in name order whatever order they are given in.
//!
//! ## Choices where the issue is silent
//!
//! - A kept replica reserves its capacity before anything is placed, in the order of the
//!   deployments, services and indexes; one that no longer fits where it runs (its host shrank,
//!   or the previous placement overfilled it) is placed again like a new one.
//! - A deployment that cannot be completed around its kept replicas is placed afresh, as if none
//!   ran, and the decision starts over with its capacity free: moving some replicas beats not
//!   running the deployment at all. Each start-over drops one deployment's stickiness, so there
//!   are at most as many as deployments.
//! - After the first round, deployments refused are tried again, and `every_host` services
//!   extended to hosts with room, until a round changes nothing, so a refusal and its reason are
//!   judged on what is finally placed. This is what makes the decision a fixed point: placing
//!   again from the answer tries every refused deployment on the same capacity and refuses it
//!   with the same reason. Without a previous placement nothing is ever freed, so the later
//!   rounds change the first one's answer only in a refusal's reason, which gives the free
//!   capacity left once everything is placed (or, rarely, by placing a deployment the ranking
//!   could not fit on more room but fits on less).
//! - Spread is what the ranking guarantees and no more: a host holding a replica of a service
//!   that was not there before holds at most one more replica of that service than any host
//!   that qualifies for it and still has room for one. A host whose replicas were all kept holds
//!   what it held: moving one to spread would restart a healthy container.
//! - The work is bounded by the input: a service asking more than the spec's
//!   [`MAX_REPLICAS`](atoll_spec::application::MAX_REPLICAS) (which apply already refuses), or
//!   a deployment naming a service twice, is refused with the reason rather than placed, and a
//!   host name given twice is one host (the first given).
//!
//! A site with no host enrolled yet places a deployment that asks nothing of hosts beyond
//! resources (capacity is judged once a host reports it, and the site is placed again then), and
//! refuses one that needs devices, labels, an architecture or a host selector: no host can have
//! them yet. An agent that does not advertise [`capability::HOST_PLACEMENT`] ignores host
//! requirements, and one without [`capability::DEVICES`] maps no device: a deployment that needs
//! what one of a site's agents cannot honour is not placed there, naming the agent to upgrade.

mod qualify;

use std::collections::{BTreeMap, BTreeSet};

use atoll_spec::Selector;
use atoll_spec::application::MAX_REPLICAS;

use crate::host::{Host, capability};
use crate::manifest::{DeviceClass, Requires};
use qualify::{qualifies, why_none};

/// What one deployment asks of a site's hosts.
#[derive(Debug, Clone)]
pub struct Want<'a> {
    pub deployment: &'a str,
    /// `placement.hosts`.
    pub hosts: Option<&'a Selector>,
    pub services: Vec<ServiceWant<'a>>,
}

/// What one service asks of the hosts its replicas run on.
#[derive(Debug, Clone)]
pub struct ServiceWant<'a> {
    pub name: &'a str,
    /// How many replicas; ignored with `every_host`.
    pub replicas: u32,
    /// One replica on every qualifying host.
    pub every_host: bool,
    pub requires: Requires,
    /// Thousandths of a core each replica reserves.
    pub cpu_millis: u64,
    /// Bytes of memory each replica reserves.
    pub memory: u64,
}

impl Want<'_> {
    /// Whether the deployment asks anything of hosts beyond capacity.
    pub fn reads_hosts(&self) -> bool {
        self.hosts.is_some() || self.services.iter().any(|s| !s.requires.is_empty())
    }

    fn maps_devices(&self) -> bool {
        self.services.iter().any(|s| !s.requires.devices.is_empty())
    }
}

/// One replica given to one host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Assignment {
    pub service: String,
    pub index: u32,
    pub host: String,
}

/// The decision for one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Each placed deployment's replicas and their hosts, by service in the order wanted, then
    /// by index (none when the site has no host yet).
    pub placed: BTreeMap<String, Vec<Assignment>>,
    /// Each deployment that is not placed, and why, for a person.
    pub unplaced: BTreeMap<String, String>,
}

impl Decision {
    /// The replicas of `deployment` given to `host`, by service, as indexes.
    pub fn on_host<'a>(
        &'a self,
        deployment: &str,
        host: &'a str,
    ) -> impl Iterator<Item = &'a Assignment> + 'a {
        self.placed
            .get(deployment)
            .into_iter()
            .flatten()
            .filter(move |a| a.host == host)
    }
}

/// Where each replica of a site runs now: `(deployment, service, index)` → host name, as the
/// site's last decision gave it (`Previous::from(&decision)`) and its hosts run it. Empty for a
/// decision made from nothing, as the control plane makes it. An entry for a deployment or
/// service no longer wanted, an index past a service's replicas, or a host not given is ignored;
/// for an `every_host` service only the host counts (two indexes on one host keep the lower).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Previous {
    /// Deployment → service → index → host.
    runs: BTreeMap<String, BTreeMap<String, BTreeMap<u32, String>>>,
}

impl Previous {
    /// Records that replica `index` of `service` of `deployment` runs on `host`, and returns
    /// the host recorded for it before, if any.
    pub fn insert(
        &mut self,
        deployment: &str,
        service: &str,
        index: u32,
        host: &str,
    ) -> Option<String> {
        self.runs
            .entry(deployment.to_owned())
            .or_default()
            .entry(service.to_owned())
            .or_default()
            .insert(index, host.to_owned())
    }

    /// The host replica `index` of `service` of `deployment` runs on.
    pub fn host(&self, deployment: &str, service: &str, index: u32) -> Option<&str> {
        self.service(deployment, service)?
            .get(&index)
            .map(String::as_str)
    }

    fn service(&self, deployment: &str, service: &str) -> Option<&BTreeMap<u32, String>> {
        self.runs.get(deployment)?.get(service)
    }
}

impl From<&Decision> for Previous {
    fn from(decision: &Decision) -> Self {
        let mut previous = Previous::default();
        for (deployment, assignments) in &decision.placed {
            for a in assignments {
                previous.insert(deployment, &a.service, a.index, &a.host);
            }
        }
        previous
    }
}

/// Free capacity of one host while placing.
#[derive(Debug, Clone, Copy)]
struct Free {
    cpu_millis: u64,
    memory: u64,
}

impl Free {
    fn fits(&self, service: &ServiceWant<'_>) -> bool {
        self.cpu_millis >= service.cpu_millis && self.memory >= service.memory
    }

    /// Takes what a replica of `service` reserves; only after [`Free::fits`].
    fn take(&mut self, service: &ServiceWant<'_>) {
        self.cpu_millis -= service.cpu_millis;
        self.memory -= service.memory;
    }
}

/// Places `wants`, in order, on `hosts`, keeping what runs where `previous` says it runs; see
/// the module documentation for the rules.
pub fn place(
    hosts: &[Host],
    classes: &[DeviceClass],
    wants: &[Want<'_>],
    previous: &Previous,
) -> Decision {
    let site = Site::new(hosts, classes, wants);
    let mut sticky = vec![true; wants.len()];
    // Each start-over turns one more deployment's stickiness off, and one whose stickiness is
    // off never asks for one: at most `wants.len()` start-overs.
    loop {
        match site.attempt(wants, previous, &sticky) {
            Ok(decision) => return decision,
            Err(i) => sticky[i] = false,
        }
    }
}

/// What one deployment has so far in an attempt.
#[derive(Debug, Clone)]
enum Progress {
    /// Before its first round: the replicas it keeps where they run.
    Kept(Vec<Assignment>),
    Placed(Vec<Assignment>),
    Unplaced(String),
}

/// What a decision reads of the site, worked out once: its hosts in name order, their facts,
/// where each service qualifies, and why a deployment is refused whatever the capacity.
struct Site<'h> {
    hosts: Vec<&'h Host>,
    by_name: BTreeMap<&'h str, usize>,
    facts: Vec<BTreeMap<String, String>>,
    classes: &'h [DeviceClass],
    /// By deployment, by service, by host: `Ok` or why the host does not qualify.
    qualifies: Vec<Vec<Vec<Result<(), String>>>>,
    /// By deployment: why it is refused on this site whatever the capacity.
    refused: Vec<Option<String>>,
}

impl<'h> Site<'h> {
    fn new(hosts: &'h [Host], classes: &'h [DeviceClass], wants: &[Want<'_>]) -> Self {
        let mut sorted: Vec<&Host> = hosts.iter().collect();
        sorted.sort_by(|a, b| a.name.cmp(&b.name));
        sorted.dedup_by(|later, first| later.name == first.name);
        let by_name = sorted
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.as_str(), i))
            .collect();
        let facts: Vec<BTreeMap<String, String>> =
            sorted.iter().map(|h| h.facts(classes)).collect();
        let qualifies = wants
            .iter()
            .map(|want| {
                want.services
                    .iter()
                    .map(|service| {
                        sorted
                            .iter()
                            .zip(&facts)
                            .map(|(h, f)| qualifies(h, f, classes, want.hosts, &service.requires))
                            .collect()
                    })
                    .collect()
            })
            .collect();
        let refused = wants.iter().map(|w| refusal(&sorted, w)).collect();
        Site {
            hosts: sorted,
            by_name,
            facts,
            classes,
            qualifies,
            refused,
        }
    }

    fn capacity(&self) -> Vec<Free> {
        self.hosts
            .iter()
            .map(|h| Free {
                cpu_millis: u64::from(h.inventory.cpus) * 1000,
                memory: h.inventory.memory_bytes,
            })
            .collect()
    }

    /// One decision with the stickiness of the deployments `sticky` marks, or the first
    /// deployment that cannot be completed around the replicas it keeps.
    fn attempt(
        &self,
        wants: &[Want<'_>],
        previous: &Previous,
        sticky: &[bool],
    ) -> Result<Decision, usize> {
        let mut free = self.capacity();
        let mut progress: Vec<Progress> = wants
            .iter()
            .enumerate()
            .map(|(w, want)| {
                Progress::Kept(if sticky[w] {
                    self.keep(w, want, previous, &mut free)
                } else {
                    Vec::new()
                })
            })
            .collect();
        // Rounds until one changes nothing. After the first, a round can only add a replica
        // to an `every_host` service (at most one per service and host) or place a refused
        // deployment, so there are at most that many rounds, plus two.
        loop {
            let mut changed = false;
            for (w, want) in wants.iter().enumerate() {
                let from: &[Assignment] = match &progress[w] {
                    Progress::Kept(a) | Progress::Placed(a) => a,
                    Progress::Unplaced(_) => &[],
                };
                match self.fill(w, want, from, &free) {
                    Ok((assignments, after)) => {
                        let grew = match &progress[w] {
                            Progress::Placed(a) => a.len() != assignments.len(),
                            Progress::Kept(_) | Progress::Unplaced(_) => true,
                        };
                        changed |= grew;
                        free = after;
                        progress[w] = Progress::Placed(assignments);
                    }
                    Err(reason) => match &progress[w] {
                        Progress::Kept(kept) if !kept.is_empty() => return Err(w),
                        Progress::Kept(_) => {
                            changed = true;
                            progress[w] = Progress::Unplaced(reason);
                        }
                        Progress::Unplaced(_) => progress[w] = Progress::Unplaced(reason),
                        // What is placed has every replica it needs: filling it again only
                        // adds, and never fails.
                        Progress::Placed(_) => {}
                    },
                }
            }
            if !changed {
                break;
            }
        }
        let mut decision = Decision::default();
        for (want, p) in wants.iter().zip(progress) {
            match p {
                Progress::Placed(a) => {
                    decision.placed.insert(want.deployment.to_owned(), a);
                }
                Progress::Unplaced(reason) => {
                    decision.unplaced.insert(want.deployment.to_owned(), reason);
                }
                // Every deployment leaves `Kept` in the first round.
                Progress::Kept(_) => {}
            }
        }
        Ok(decision)
    }

    /// The replicas of deployment `w` that stay where `previous` says they run, their
    /// capacity taken from `free`.
    fn keep(
        &self,
        w: usize,
        want: &Want<'_>,
        previous: &Previous,
        free: &mut [Free],
    ) -> Vec<Assignment> {
        if self.refused[w].is_some() {
            return Vec::new();
        }
        let mut kept = Vec::new();
        for (s, service) in want.services.iter().enumerate() {
            let Some(runs) = previous.service(want.deployment, service.name) else {
                continue;
            };
            let runs = if service.every_host {
                runs.range(..)
            } else {
                runs.range(..service.replicas)
            };
            let mut holds = vec![false; self.hosts.len()];
            for (&index, host) in runs {
                let Some(&h) = self.by_name.get(host.as_str()) else {
                    continue;
                };
                if (service.every_host && holds[h])
                    || self.qualifies[w][s][h].is_err()
                    || !free[h].fits(service)
                {
                    continue;
                }
                free[h].take(service);
                holds[h] = true;
                kept.push(Assignment {
                    service: service.name.to_owned(),
                    index,
                    host: self.hosts[h].name.clone(),
                });
            }
        }
        kept
    }

    /// Deployment `w` completed from the replicas it has (`from`, whose capacity `free` has
    /// already taken): its replicas and the capacity left, or why it cannot be completed.
    fn fill(
        &self,
        w: usize,
        want: &Want<'_>,
        from: &[Assignment],
        free: &[Free],
    ) -> Result<(Vec<Assignment>, Vec<Free>), String> {
        if let Some(why) = &self.refused[w] {
            return Err(why.clone());
        }
        if self.hosts.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let mut free = free.to_vec();
        let mut assignments = Vec::new();
        for (s, service) in want.services.iter().enumerate() {
            let fixed = &self.qualifies[w][s];
            let mut mine: Vec<Assignment> = from
                .iter()
                .filter(|a| a.service == service.name)
                .cloned()
                .collect();
            let mut on_host = vec![0u32; self.hosts.len()];
            for a in &mine {
                if let Some(&h) = self.by_name.get(a.host.as_str()) {
                    on_host[h] += 1;
                }
            }
            let taken: BTreeSet<u32> = mine.iter().map(|a| a.index).collect();
            if service.every_host {
                let mut unused = (0..=u32::MAX).filter(|i| !taken.contains(i));
                for h in 0..self.hosts.len() {
                    if on_host[h] == 0 && fixed[h].is_ok() && free[h].fits(service) {
                        free[h].take(service);
                        mine.push(Assignment {
                            service: service.name.to_owned(),
                            // A site has far fewer hosts than there are indexes.
                            index: unused.next().unwrap_or(u32::MAX),
                            host: self.hosts[h].name.clone(),
                        });
                    }
                }
                if mine.is_empty() {
                    return Err(self.why_none(fixed, &free, service));
                }
            } else {
                for index in (0..service.replicas).filter(|i| !taken.contains(i)) {
                    let best = (0..self.hosts.len())
                        .filter(|&h| fixed[h].is_ok() && free[h].fits(service))
                        .min_by(|&a, &b| {
                            on_host[a]
                                .cmp(&on_host[b])
                                .then(free[b].memory.cmp(&free[a].memory))
                                .then(self.hosts[a].name.cmp(&self.hosts[b].name))
                        });
                    let Some(h) = best else {
                        return Err(self.why_none(fixed, &free, service));
                    };
                    free[h].take(service);
                    on_host[h] += 1;
                    mine.push(Assignment {
                        service: service.name.to_owned(),
                        index,
                        host: self.hosts[h].name.clone(),
                    });
                }
            }
            mine.sort_by_key(|a| a.index);
            assignments.extend(mine);
        }
        Ok((assignments, free))
    }

    fn why_none(
        &self,
        fixed: &[Result<(), String>],
        free: &[Free],
        service: &ServiceWant<'_>,
    ) -> String {
        why_none(&self.hosts, &self.facts, fixed, free, service, self.classes)
    }
}

/// Why `want` is refused on a site with `hosts` whatever their capacity, if it is.
fn refusal(hosts: &[&Host], want: &Want<'_>) -> Option<String> {
    if let Some(s) = want
        .services
        .iter()
        .find(|s| !s.every_host && s.replicas > MAX_REPLICAS)
    {
        return Some(format!(
            "service {} asks for {} replicas, more than the most, {MAX_REPLICAS}",
            s.name, s.replicas
        ));
    }
    let mut names = BTreeSet::new();
    if let Some(s) = want.services.iter().find(|s| !names.insert(s.name)) {
        return Some(format!("service {} is named twice", s.name));
    }
    if hosts.is_empty() {
        return want.reads_hosts().then(|| {
            "no host enrolled yet: the deployment needs hosts with the facts it requires".into()
        });
    }
    if want.reads_hosts()
        && let Some(h) = hosts
            .iter()
            .find(|h| !h.inventory.can(capability::HOST_PLACEMENT))
    {
        return Some(format!(
            "the agent on {} cannot check host requirements; upgrade it",
            h.name
        ));
    }
    if want.maps_devices()
        && let Some(h) = hosts.iter().find(|h| !h.inventory.can(capability::DEVICES))
    {
        return Some(format!(
            "the agent on {} cannot map devices; upgrade it",
            h.name
        ));
    }
    None
}

#[cfg(test)]
mod tests;
