//! The run's script, drawn from the seed: which sites a storm takes down and which partitions
//! cut off, when the fleet and single sites change, which agents restart; and the bookkeeping
//! of how fast each fleet-wide change and the storm converged.

use rand::Rng;
use rand::seq::SliceRandom;

use crate::site::exponential;
use crate::time::{SECOND, Time};
use crate::world::{Event, World};

#[derive(Debug, Default)]
pub struct Scenario {
    storm: Vec<u32>,
    groups: Vec<Group>,
    pub changes: Vec<Change>,
    pub storm_track: Option<StormTrack>,
    /// Content hashes are made up from this counter: each change is new content.
    contents: u64,
    pub unchanged: u64,
}

#[derive(Debug)]
struct Group {
    sites: Vec<u32>,
    end: Time,
}

/// One fleet-wide change.
#[derive(Debug)]
pub struct Change {
    pub at: Time,
    /// Per site, the revision the change published; 0 once the site runs it.
    targets: Vec<u64>,
    /// From publication to running, for sites undisturbed in between.
    pub latencies: Vec<Time>,
    /// Sites a fault touched before they converged (held to the bound from the fault's end).
    pub disturbed: u64,
}

#[derive(Debug)]
pub struct StormTrack {
    pub at: Time,
    pub sites: usize,
    targets: Vec<u64>,
    pub remaining: usize,
    /// When the last undisturbed storm site ran the newest revision, from the storm.
    pub converged_in: Time,
    /// Storm sites that lost a long-poll after the storm (held to the general bound instead).
    pub disturbed: u64,
}

impl World {
    /// Draws the script and schedules it, with every agent's first long-poll spread over one
    /// wait, as in a fleet that has been running for a while.
    pub(crate) fn plan(&mut self) {
        let cfg = &self.cfg;
        let n = cfg.sites;
        let faults_end = cfg.duration - cfg.heal;
        let quiet = cfg.duration - cfg.heal / 2;
        let mut order: Vec<u32> = (0..n as u32).collect();
        order.shuffle(&mut self.rng);
        let storm = cfg.storm.min(n);
        self.scenario.storm = order[..storm].to_vec();
        let rest = &order[storm..];
        let per_group = (cfg.partition_share * n as f64).round() as usize;
        let earliest = 90 * SECOND;
        for (g, sites) in rest
            .chunks(per_group.max(1))
            .take(cfg.partitions)
            .enumerate()
        {
            let Some(latest) = faults_end.checked_sub(cfg.partition_max) else {
                break;
            };
            let start = self.rng.gen_range(earliest.min(latest)..=latest);
            let end = start
                + self
                    .rng
                    .gen_range(30 * SECOND..=cfg.partition_max.max(30 * SECOND));
            self.scenario.groups.push(Group {
                sites: sites.to_vec(),
                end,
            });
            self.agenda.at(start, Event::Partition(g));
        }
        for site in 0..n as u32 {
            let flappy = self.rng.gen_bool(self.cfg.flappy_share);
            self.sites[site as usize].flappy = flappy;
            let first = self.rng.gen_range(0..self.cfg.poll_wait);
            self.agenda.at(first, Event::Poll { site, epoch: 0 });
            let every = if flappy {
                self.cfg.flappy_every
            } else {
                self.cfg.status_every
            };
            let next = exponential(&mut self.rng, every);
            self.agenda.at(next, Event::LocalStatus(site));
        }
        for (i, &at) in self.cfg.fleet_changes.iter().enumerate() {
            self.agenda.at(at, Event::FleetChange(i));
        }
        for _ in 0..self.cfg.site_changes {
            let site = self.rng.gen_range(0..n as u32);
            let at = self.rng.gen_range(0..quiet);
            self.agenda.at(at, Event::SiteChange(site));
        }
        let candidates = &order[storm..];
        for _ in 0..self.cfg.restarts.min(candidates.len()) {
            let site = candidates[self.rng.gen_range(0..candidates.len())];
            let at = self.rng.gen_range(0..faults_end);
            self.agenda.at(at, Event::Restart(site));
        }
        if storm > 0 {
            self.agenda.at(self.cfg.storm_down, Event::StormDown);
            self.agenda.at(self.cfg.storm_up, Event::StormUp);
        }
    }

    fn new_content(&mut self) -> String {
        self.scenario.contents += 1;
        self.scenario.contents.to_string()
    }

    /// A new application version: every site's manifest changes.
    pub(crate) fn fleet_change(&mut self, _index: usize) {
        let n = self.sites.len();
        let mut targets = vec![0; n];
        for (site, target) in targets.iter_mut().enumerate() {
            let content = self.new_content();
            *target = self.publish(site as u32, content).unwrap_or(0);
        }
        self.scenario.changes.push(Change {
            at: self.agenda.now(),
            targets,
            latencies: Vec::with_capacity(n),
            disturbed: 0,
        });
    }

    /// One site's manifest recompiled; now and then to the same content (an apply that
    /// changes nothing there), which must not make a revision.
    pub(crate) fn site_change(&mut self, site: u32) {
        let content = if self.rng.gen_bool(0.1) {
            self.control.content(site).to_owned()
        } else {
            self.new_content()
        };
        if self.publish(site, content).is_none() {
            self.scenario.unchanged += 1;
        }
    }

    pub(crate) fn partition(&mut self, group: usize) {
        let Group { sites, end } = &self.scenario.groups[group];
        for &site in sites {
            self.net.cut(site as usize, *end);
            let s = &mut self.sites[site as usize];
            s.disturbed = s.disturbed.max(*end);
        }
    }

    pub(crate) fn restart(&mut self, site: u32) {
        if !self.sites[site as usize].up {
            return;
        }
        let down = self.rng.gen_range(SECOND..=10 * SECOND);
        self.stop(site, self.agenda.now() + down);
        self.agenda.after(down, Event::Resume(site));
    }

    pub(crate) fn storm_down(&mut self) {
        let up = self.cfg.storm_up;
        for site in self.scenario.storm.clone() {
            self.stop(site, up);
        }
    }

    /// Every storm site's agent starts at this same instant.
    pub(crate) fn storm_up(&mut self) {
        let sites = self.scenario.storm.clone();
        let mut targets = vec![0; self.sites.len()];
        for &site in &sites {
            targets[site as usize] = self.control.revision(site);
        }
        self.scenario.storm_track = Some(StormTrack {
            at: self.agenda.now(),
            sites: sites.len(),
            targets,
            remaining: sites.len(),
            converged_in: 0,
            disturbed: 0,
        });
        for site in sites {
            self.start(site);
        }
    }

    /// `site` now runs `revision`: the changes and the storm it completes.
    pub(crate) fn converged(&mut self, site: u32, revision: u64) {
        let now = self.agenda.now();
        let i = site as usize;
        let disturbed = self.sites[i].disturbed;
        for change in &mut self.scenario.changes {
            let target = &mut change.targets[i];
            if *target != 0 && revision >= *target {
                *target = 0;
                if disturbed <= change.at {
                    change.latencies.push(now - change.at);
                } else {
                    change.disturbed += 1;
                }
            }
        }
        let bound = self.cfg.storm_bound;
        let Some(storm) = &mut self.scenario.storm_track else {
            return;
        };
        let target = &mut storm.targets[i];
        if *target == 0 || revision < *target {
            return;
        }
        *target = 0;
        storm.remaining -= 1;
        if disturbed > storm.at {
            storm.disturbed += 1;
            return;
        }
        let took = now - storm.at;
        storm.converged_in = storm.converged_in.max(took);
        if took > bound {
            self.fail(format!(
                "storm site {site} ran the newest revision only {:.3} s after the storm",
                crate::time::seconds(took)
            ));
        }
    }
}
