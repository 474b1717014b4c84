//! The rollout controller: how a new application version reaches a deployment's sites, as a
//! pure state machine `step(rollout, event, now) -> (rollout, commands)`.
//!
//! The shell persists the [`Rollout`] (it is plain serde data, kept as JSON in the store), feeds
//! in site reports, timer ticks and operator controls as [`Event`]s, and performs the
//! [`Command`]s that come back: recompile the manifests of sites whose version changed, record
//! history, wake up when a soak ends. It persists the new state *before* acting on the commands;
//! every command can be recomputed from the state ([`assignment`], [`next_wake`]), so a control
//! plane that restarts between the two recompiles from [`assignment`] and carries on where it
//! stopped. Nothing here reads a clock: the time of every event is an argument.
//!
//! # The model
//!
//! [`start`] plans the *waves* once, from the targeted sites: wave 0 is the canary (if the
//! strategy has one), the rest are the strategy's `waves`, each a cumulative share of **all**
//! targeted sites (`[10%, 50%, 100%]` means 10% updated so far, then 50%, then all), with
//! empty waves dropped and a final 100% wave appended when the user's waves stop short. Sites
//! are ordered by a stable hash of (deployment, site), not by name, so the canary is not always
//! the alphabetically first store and two deployments do not pick the same canaries. A site
//! receives the new version only when its wave is open and a `max_parallel` slot is free.
//!
//! Each site moves through [`SiteState`]: `Waiting` → `Updating` (told to run the new version)
//! → `Soaking` (reported the new version healthy) → `Succeeded` (stayed healthy for the soak);
//! or `Failed` (reported the new version unhealthy, or could not pull its image); or `Pending`
//! (offline while it should update: **not** a failure). A wave closes when none of its sites is
//! still waiting, updating or soaking, its failures are within the failure budget, and at least
//! one of its sites reported an outcome; then the next wave opens. After the last wave the
//! rollout is `Complete`. Failures beyond a wave's budget roll every updated site back
//! (`on_failure: rollback`) or pause the rollout (`on_failure: pause`).
//!
//! # Choices where the issue is silent
//!
//! - **The strategy is captured at start** in [`Policy`] and the wave plan; `step` does not take
//!   the deployment's strategy. A rollout runs under the strategy it started with, which keeps
//!   the state self-contained for persistence and restart; a changed strategy applies to the
//!   next rollout.
//! - **Soak** is the canary's `soak`, and applies to every site of every wave; without a canary
//!   it is zero (healthy once is success). Without a `rollout` section a new version goes to
//!   every site in one wave, with a zero failure budget and `on_failure: rollback`.
//! - **First version** (`from` is `None`): nothing to protect, one wave of all sites at once,
//!   `max_parallel` ignored. There is nothing to roll back to, so a failure beyond the budget
//!   pauses instead, and the rollback control is refused.
//! - **Canary selector**: the selector says which sites may be canaries, `canary.sites` how many
//!   (a share of all targeted sites), picked in hash order among the matching ones. If no site
//!   matches, the canary is picked among all sites and the history says so: silently dropping
//!   the canary would be the dangerous reading.
//! - **Failure budget** is a share of the wave's planned sites and a percentage rounds *down*
//!   (5% of 10 sites tolerates 0), so a budget never tolerates more than it says; `0` (the
//!   default) means any failure trips it. Exactly at the budget continues; above it trips.
//!   Budgets are checked for every opened wave, all the time: a canary that succeeded and turns
//!   unhealthy during a later wave still counts, until the rollout is complete.
//! - **Failures are sticky** for the rollout: a failed site that recovers stays `Failed` (a
//!   flapping version is not a healthy one). It keeps the new version unless the rollout rolls
//!   back. `resume` after a failure pause *accepts* the failures seen so far: they no longer
//!   count against the budget, or the rollout would pause again at once.
//! - **Pending**: the shell decides that a site is offline (it sees the long-poll stop) and says
//!   so with a report whose `connected` is false; until then, a site that never reports keeps
//!   its wave open. A pending site keeps the new-version assignment so it updates when it
//!   returns, takes no `max_parallel` slot (offline sites must not stall the rollout), counts
//!   neither as succeeded nor failed, and does not hold its wave. But a wave whose sites are
//!   *all* pending waits: it has given no evidence about the new version. A returning site
//!   resumes its update even if that briefly exceeds `max_parallel`. After completion its
//!   success or failure is still recorded, but never reopens the rollout.
//! - **Rollback** turns every site that was given the new version to `Reverting`; a site is
//!   `Reverted` when it reports running the old version (whatever its health: bringing the old
//!   version back is the rollback's job, and its health is reported as usual). The rollout is
//!   `RolledBack` when no *connected* site is still reverting; offline ones get the old version
//!   when they return. An operator may roll back a running, paused, aborted or complete rollout.
//! - **Abort** freezes the assignment as it is: sites already given the new version keep it,
//!   the others keep the old one, and nothing moves until an operator rolls back or applies a
//!   version.
//! - **Supersede** (a newer version applied) ends this rollout for good; it remembers the
//!   version it had settled on ([`settled_version`]), which is what the shell should start the
//!   next rollout from. Its assignment stays the last one it gave, but the successor's is the
//!   one that counts.
//! - **Placement changes**: removed sites disappear from the rollout; new sites join the last
//!   wave (so they update when it opens, or at once after completion); during a rollback they
//!   get the old version.
//! - **Every event expires soaks** that are due, not only ticks, so a late timer does not hold
//!   the rollout back; [`Command::WakeAt`] is repeated on every step while a site soaks, and the
//!   shell keeps one timer per rollout at the latest value.
//! - **Controls that do not apply** (pause a complete rollout) change nothing and return
//!   [`Command::Refused`] with a message for the operator; they are not written to history.

use std::collections::{BTreeMap, BTreeSet};

use atoll_spec::deployment::{OnFailure, Rollout as RolloutSpec, Share};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Most failed sites a budget note names; the rest are counted.
const NAMED_FAILURES: usize = 5;

/// A site the deployment targets, as placement sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteInfo {
    pub name: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// The parts of the deployment's strategy that matter after planning, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// How long a site must stay healthy on the new version to succeed.
    pub soak_ms: u64,
    /// Failed sites tolerated per wave.
    pub failure_budget: Share,
    pub on_failure: OnFailure,
    /// At most this many sites updating or soaking at once; `None` is no limit.
    pub max_parallel: Option<u32>,
}

/// One deployment's rollout from one version to the next.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub deployment: String,
    /// The version sites ran before; `None` for a deployment's first version.
    pub from_version: Option<String>,
    pub to_version: String,
    pub policy: Policy,
    pub phase: Phase,
    /// Whether `waves[0]` is the canary.
    pub canary: bool,
    /// Site names by wave, in the order they are started; every targeted site is in exactly
    /// one wave. Planned at start; placement changes add to the last wave.
    pub waves: Vec<Vec<String>>,
    /// How many waves have opened (at least one).
    pub opened: usize,
    pub sites: BTreeMap<String, SiteProgress>,
    pub started_ms: u64,
    pub history: Vec<Note>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Phase {
    /// Opening waves as they succeed.
    Running,
    /// Opens no wave and starts no site until resumed; site reports are still recorded.
    Paused { reason: String },
    /// Every wave closed: the new version is what every site should run.
    Complete,
    /// Every site is assigned the old version; waiting for connected sites to confirm it.
    RollingBack { reason: String },
    /// Every connected site confirmed the old version.
    RolledBack { reason: String },
    /// Stopped by an operator; assignments frozen as they were.
    Aborted,
    /// A newer version took over. `settled` is the version this rollout had settled on.
    Superseded { by: String, settled: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteProgress {
    pub state: SiteState,
    /// Whether the last report said the site is connected; assumed until told otherwise.
    pub online: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SiteState {
    /// Its wave has not opened, or no `max_parallel` slot was free yet.
    Waiting,
    /// Told to run the new version; not yet reported healthy on it.
    Updating {
        since_ms: u64,
    },
    /// Reported the new version healthy; succeeds when the soak ends.
    Soaking {
        healthy_since_ms: u64,
    },
    Succeeded {
        at_ms: u64,
    },
    /// `accepted` once an operator resumed past it: it no longer counts against the budget.
    Failed {
        reason: String,
        accepted: bool,
    },
    /// Offline while it should update or soak. Not a failure.
    Pending {
        since_ms: u64,
    },
    /// Told to return to the old version; not yet confirmed.
    Reverting {
        since_ms: u64,
    },
    /// Reported running the old version again.
    Reverted,
}

impl SiteState {
    /// Whether this site has been given the new version by a rollout that has not turned back.
    pub fn holds_new(&self) -> bool {
        matches!(
            self,
            SiteState::Updating { .. }
                | SiteState::Soaking { .. }
                | SiteState::Succeeded { .. }
                | SiteState::Failed { .. }
                | SiteState::Pending { .. }
        )
    }

    /// Whether this site takes a `max_parallel` slot.
    fn is_active(&self) -> bool {
        matches!(self, SiteState::Updating { .. } | SiteState::Soaking { .. })
    }
}

/// One line of a rollout's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Note {
    pub at_ms: u64,
    pub text: String,
}

/// A site's health as its last report gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    Unhealthy {
        reason: String,
    },
    /// No verdict yet (health checks still starting).
    Unknown,
}

/// What a site last said about this deployment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiteReport {
    pub site: String,
    /// The version the site runs; `None` when it runs none of this deployment.
    pub version: Option<String>,
    pub health: Health,
    /// False when the shell considers the site offline; the other fields are then ignored.
    pub connected: bool,
    /// Why the site cannot pull the new version's image, if it cannot.
    pub image_failed: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Report(SiteReport),
    /// Time passed; soaks that are due end.
    Tick,
    Pause,
    Resume,
    Abort,
    Rollback {
        reason: String,
    },
    /// A newer version was applied; this rollout ends.
    Supersede {
        by_version: String,
    },
    /// The deployment now targets these sites.
    SitesChanged {
        sites: Vec<SiteInfo>,
    },
}

/// What the shell must do after a step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// These sites' assigned version changed (or they joined or left): recompile their
    /// manifests from [`assignment`].
    Recompile { sites: Vec<String> },
    /// A line added to the rollout's history, to show or log.
    Note(String),
    /// Send a `Tick` at this time: a soak ends then. Replaces any earlier wake-up.
    WakeAt(u64),
    /// The control did not apply to the rollout as it is; nothing changed. Tell the operator.
    Refused(String),
}

/// Starts a rollout of `deployment` from `from` to `to` over `sites`, under `strategy` (`None`
/// when the deployment has no `rollout` section), and opens its first wave.
pub fn start(
    deployment: &str,
    strategy: Option<&RolloutSpec>,
    from: Option<&str>,
    to: &str,
    sites: &[SiteInfo],
    now_ms: u64,
) -> (Rollout, Vec<Command>) {
    let first = from.is_none();
    let plan = plan(deployment, strategy, first, sites);
    let mut r = Rollout {
        deployment: deployment.to_owned(),
        from_version: from.map(str::to_owned),
        to_version: to.to_owned(),
        policy: Policy::new(strategy, first),
        phase: Phase::Running,
        canary: plan.canary,
        sites: plan
            .waves
            .iter()
            .flatten()
            .map(|n| {
                let progress = SiteProgress {
                    state: SiteState::Waiting,
                    online: true,
                };
                (n.clone(), progress)
            })
            .collect(),
        waves: plan.waves,
        opened: 1,
        started_ms: now_ms,
        history: Vec::new(),
    };
    let mut out = Vec::new();
    let sizes: Vec<String> = r.waves.iter().map(|w| w.len().to_string()).collect();
    let text = match from {
        None => format!(
            "rollout of {deployment} {to} started: first version, all {} sites at once",
            r.sites.len()
        ),
        Some(from) => format!(
            "rollout of {deployment} from {from} to {to} started: {} waves of {} sites{}",
            r.waves.len(),
            sizes.join(", "),
            if r.canary {
                ", the first one the canary"
            } else {
                ""
            }
        ),
    };
    r.note(now_ms, text, &mut out);
    for text in plan.notes {
        r.note(now_ms, text, &mut out);
    }
    let before = assignment(&r);
    r.evaluate(now_ms, &mut out);
    r.finish(&before, &mut out);
    (r, out)
}

/// Applies one event at `now_ms` and returns the next state and what the shell must do.
pub fn step(r: &Rollout, event: &Event, now_ms: u64) -> (Rollout, Vec<Command>) {
    let mut next = r.clone();
    let mut out = Vec::new();
    if let Phase::Superseded { .. } = r.phase {
        if let Some(verb) = event.control() {
            out.push(Command::Refused(r.refusal(verb)));
        }
        return (next, out);
    }
    let before = assignment(r);
    match event {
        Event::Report(report) => next.record(report, now_ms, &mut out),
        Event::Tick => {}
        Event::Pause => match next.phase {
            Phase::Running => {
                next.phase = Phase::Paused {
                    reason: "paused by an operator".to_owned(),
                };
                next.note(now_ms, "paused by an operator".to_owned(), &mut out);
            }
            _ => out.push(Command::Refused(r.refusal("pause"))),
        },
        Event::Resume => match next.phase {
            Phase::Paused { .. } => {
                // Resuming past a breach accepts the failures the operator saw; resuming from an
                // operator's pause accepts nothing, so it cannot widen the budget.
                let mut accepted = Vec::new();
                if next.breach().is_some() {
                    for (name, p) in &mut next.sites {
                        if let SiteState::Failed {
                            accepted: flag @ false,
                            ..
                        } = &mut p.state
                        {
                            *flag = true;
                            accepted.push(name.clone());
                        }
                    }
                }
                next.phase = Phase::Running;
                let text = if accepted.is_empty() {
                    "resumed by an operator".to_owned()
                } else {
                    format!(
                        "resumed by an operator, accepting {} failed sites: {}",
                        accepted.len(),
                        named(&accepted)
                    )
                };
                next.note(now_ms, text, &mut out);
            }
            _ => out.push(Command::Refused(r.refusal("resume"))),
        },
        Event::Abort => match next.phase {
            Phase::Running | Phase::Paused { .. } => {
                next.phase = Phase::Aborted;
                next.note(
                    now_ms,
                    "aborted by an operator: sites keep the versions they were given".to_owned(),
                    &mut out,
                );
            }
            _ => out.push(Command::Refused(r.refusal("abort"))),
        },
        Event::Rollback { reason } => match (&next.phase, &next.from_version) {
            (_, None) => out.push(Command::Refused(format!(
                "cannot roll back {} {}: it is the deployment's first version, there is nothing \
                 to roll back to",
                r.deployment, r.to_version
            ))),
            (Phase::Running | Phase::Paused { .. } | Phase::Aborted | Phase::Complete, Some(_)) => {
                let reason = if reason.trim().is_empty() {
                    "rolled back by an operator".to_owned()
                } else {
                    format!("rolled back by an operator: {reason}")
                };
                next.begin_rollback(reason, now_ms, &mut out);
            }
            _ => out.push(Command::Refused(r.refusal("roll back"))),
        },
        Event::Supersede { by_version } => {
            let settled = settled_version(&next).map(str::to_owned);
            next.phase = Phase::Superseded {
                by: by_version.clone(),
                settled,
            };
            next.note(
                now_ms,
                format!("superseded by {by_version}: a new rollout takes over"),
                &mut out,
            );
        }
        Event::SitesChanged { sites } => next.replace_sites(sites, now_ms, &mut out),
    }
    next.expire_soaks(now_ms);
    next.evaluate(now_ms, &mut out);
    next.finish(&before, &mut out);
    (next, out)
}

/// The version each targeted site must run now. Sites with nothing to run (a first version
/// whose wave has not reached them) are left out.
pub fn assignment(r: &Rollout) -> BTreeMap<String, String> {
    r.sites
        .keys()
        .filter_map(|s| r.assigned(s).map(|v| (s.clone(), v.to_owned())))
        .collect()
}

/// When the next soak ends, if a site is soaking: the shell should send a `Tick` then.
pub fn next_wake(r: &Rollout) -> Option<u64> {
    if !matches!(
        r.phase,
        Phase::Running | Phase::Paused { .. } | Phase::Complete | Phase::Aborted
    ) {
        return None;
    }
    r.sites
        .values()
        .filter_map(|p| match p.state {
            SiteState::Soaking { healthy_since_ms } => {
                Some(healthy_since_ms.saturating_add(r.policy.soak_ms))
            }
            _ => None,
        })
        .min()
}

/// The version this rollout has settled on, for everything that comes after it (a returning
/// site, the next rollout's `from`): the new version once complete, else the old one.
pub fn settled_version(r: &Rollout) -> Option<&str> {
    match &r.phase {
        Phase::Complete => Some(&r.to_version),
        Phase::Superseded { settled, .. } => settled.as_deref(),
        _ => r.from_version.as_deref(),
    }
}

impl Rollout {
    /// The version `site` must run now, if it is targeted and has one.
    pub fn assigned(&self, site: &str) -> Option<&str> {
        let progress = self.sites.get(site)?;
        let new = match self.phase {
            Phase::Complete => true,
            Phase::RollingBack { .. } | Phase::RolledBack { .. } => false,
            _ => progress.state.holds_new(),
        };
        if new {
            Some(&self.to_version)
        } else {
            self.from_version.as_deref()
        }
    }

    /// The wave `site` belongs to.
    pub fn wave_of(&self, site: &str) -> Option<usize> {
        self.waves.iter().position(|w| w.iter().any(|n| n == site))
    }

    /// How a note names wave `w`: `canary`, `wave 1`, ...
    pub fn wave_name(&self, w: usize) -> String {
        match (self.canary, w) {
            (true, 0) => "canary".to_owned(),
            (true, w) => format!("wave {w}"),
            (false, w) => format!("wave {}", w + 1),
        }
    }

    fn note(&mut self, at_ms: u64, text: String, out: &mut Vec<Command>) {
        out.push(Command::Note(text.clone()));
        self.history.push(Note { at_ms, text });
    }

    fn refusal(&self, verb: &str) -> String {
        let phase = match &self.phase {
            Phase::Running => "running".to_owned(),
            Phase::Paused { .. } => "paused".to_owned(),
            Phase::Complete => "complete".to_owned(),
            Phase::RollingBack { .. } => "rolling back".to_owned(),
            Phase::RolledBack { .. } => "rolled back".to_owned(),
            Phase::Aborted => "aborted".to_owned(),
            Phase::Superseded { by, .. } => format!("superseded by {by}"),
        };
        format!(
            "cannot {verb} the rollout of {} to {}: it is {phase}",
            self.deployment, self.to_version
        )
    }

    /// Records a site report: the site's own transition, and a note when it fails.
    fn record(&mut self, report: &SiteReport, now: u64, out: &mut Vec<Command>) {
        let on_new = report.version.as_deref() == Some(self.to_version.as_str());
        let on_old = !on_new && report.version.is_some() && report.version == self.from_version;
        let Some(p) = self.sites.get_mut(&report.site) else {
            return;
        };
        if !report.connected {
            p.online = false;
            if p.state.is_active() {
                p.state = SiteState::Pending { since_ms: now };
            }
            return;
        }
        p.online = true;
        let failure = match (&p.state, &report.image_failed, &report.health) {
            (SiteState::Reverting { .. }, _, _) => {
                if on_old {
                    p.state = SiteState::Reverted;
                }
                None
            }
            (SiteState::Waiting | SiteState::Reverted | SiteState::Failed { .. }, _, _) => None,
            (
                SiteState::Updating { .. } | SiteState::Soaking { .. } | SiteState::Pending { .. },
                Some(image),
                _,
            ) => Some(format!("cannot pull the image: {image}")),
            (_, _, Health::Unhealthy { reason }) if on_new => Some(format!("unhealthy: {reason}")),
            (state, _, health) => {
                let next = match (state, on_new, health) {
                    (
                        SiteState::Updating { .. } | SiteState::Pending { .. },
                        true,
                        Health::Healthy,
                    ) => Some(SiteState::Soaking {
                        healthy_since_ms: now,
                    }),
                    (SiteState::Pending { .. }, _, _) | (SiteState::Soaking { .. }, false, _) => {
                        Some(SiteState::Updating { since_ms: now })
                    }
                    _ => None,
                };
                if let Some(next) = next {
                    p.state = next;
                }
                None
            }
        };
        if let Some(reason) = failure {
            p.state = SiteState::Failed {
                reason: reason.clone(),
                accepted: false,
            };
            let text = format!("{} failed on {}: {reason}", report.site, self.to_version);
            self.note(now, text, out);
        }
    }

    /// Ends the soaks that are due at `now`.
    fn expire_soaks(&mut self, now: u64) {
        if !matches!(
            self.phase,
            Phase::Running | Phase::Paused { .. } | Phase::Complete | Phase::Aborted
        ) {
            return;
        }
        let soak = self.policy.soak_ms;
        for p in self.sites.values_mut() {
            if let SiteState::Soaking { healthy_since_ms } = p.state {
                let due = healthy_since_ms.saturating_add(soak);
                if due <= now {
                    p.state = SiteState::Succeeded { at_ms: due };
                }
            }
        }
    }

    /// Starts waiting sites of opened waves while slots are free; offline ones become pending
    /// without taking a slot.
    fn fill(&mut self, now: u64) {
        let limit = match (&self.phase, &self.from_version, self.policy.max_parallel) {
            (Phase::Complete, _, _) | (_, None, _) | (_, _, None) => usize::MAX,
            (_, _, Some(n)) => n.max(1) as usize,
        };
        let mut active = self.sites.values().filter(|p| p.state.is_active()).count();
        for name in self.waves.iter().take(self.opened).flatten() {
            let Some(p) = self.sites.get_mut(name) else {
                continue;
            };
            if p.state != SiteState::Waiting {
                continue;
            }
            if !p.online {
                p.state = SiteState::Pending { since_ms: now };
            } else if active < limit {
                p.state = SiteState::Updating { since_ms: now };
                active += 1;
            }
        }
    }

    /// Whether opened wave `w` may close: nothing left to wait for, and some evidence.
    fn settled(&self, w: usize) -> bool {
        let Some(names) = self.waves.get(w) else {
            return true;
        };
        let states: Vec<&SiteState> = names
            .iter()
            .filter_map(|n| self.sites.get(n).map(|p| &p.state))
            .collect();
        let done = states.iter().all(|s| {
            matches!(
                s,
                SiteState::Succeeded { .. } | SiteState::Failed { .. } | SiteState::Pending { .. }
            )
        });
        let evidence = states.is_empty()
            || states
                .iter()
                .any(|s| !matches!(s, SiteState::Pending { .. }));
        done && evidence
    }

    /// The first opened wave whose unaccepted failures exceed the budget, described.
    fn breach(&self) -> Option<String> {
        for (w, names) in self.waves.iter().enumerate().take(self.opened) {
            let failed: Vec<String> = names
                .iter()
                .filter_map(|n| match self.sites.get(n).map(|p| &p.state) {
                    Some(SiteState::Failed {
                        reason,
                        accepted: false,
                    }) => Some(format!("{n} ({reason})")),
                    _ => None,
                })
                .collect();
            let tolerated = self.policy.tolerated(names.len());
            if failed.len() > tolerated {
                return Some(format!(
                    "{}: {} of {} sites failed, over the failure budget of {} ({tolerated} \
                     tolerated): {}",
                    self.wave_name(w),
                    failed.len(),
                    names.len(),
                    self.policy.failure_budget,
                    named(&failed)
                ));
            }
        }
        None
    }

    /// Acts on the state as it now is: budget, waves, completion, end of a rollback.
    fn evaluate(&mut self, now: u64, out: &mut Vec<Command>) {
        if matches!(self.phase, Phase::Running | Phase::Paused { .. })
            && let Some(breach) = self.breach()
        {
            if self.policy.on_failure == OnFailure::Rollback && self.from_version.is_some() {
                self.begin_rollback(breach, now, out);
            } else if self.phase == Phase::Running {
                let text = match (&self.from_version, self.policy.on_failure) {
                    (None, OnFailure::Rollback) => format!(
                        "paused: {breach}; this is the first version, there is nothing to roll \
                         back to"
                    ),
                    _ => format!("paused: {breach}; resume to accept these failures, or roll back"),
                };
                self.phase = Phase::Paused { reason: breach };
                self.note(now, text, out);
            }
        }
        loop {
            match self.phase {
                Phase::Running => {}
                Phase::Complete => {
                    self.fill(now);
                    break;
                }
                _ => break,
            }
            self.fill(now);
            if !(0..self.opened).all(|w| self.settled(w)) {
                break;
            }
            if self.opened < self.waves.len() {
                self.opened += 1;
                let w = self.opened - 1;
                let text = format!(
                    "{} opened: {} sites",
                    self.wave_name(w),
                    self.waves.get(w).map_or(0, Vec::len)
                );
                self.note(now, text, out);
            } else {
                self.phase = Phase::Complete;
                let pending = self
                    .sites
                    .values()
                    .filter(|p| matches!(p.state, SiteState::Pending { .. }))
                    .count();
                let text = if pending == 0 {
                    format!("complete: every site runs {}", self.to_version)
                } else {
                    format!(
                        "complete: every connected site runs {}; {pending} offline sites will \
                         get it when they return",
                        self.to_version
                    )
                };
                self.note(now, text, out);
            }
        }
        if let Phase::RollingBack { reason } = &self.phase
            && !self
                .sites
                .values()
                .any(|p| p.online && matches!(p.state, SiteState::Reverting { .. }))
        {
            let reason = reason.clone();
            let text = format!(
                "rolled back: every connected site runs {}",
                self.from_version.as_deref().unwrap_or("nothing")
            );
            self.phase = Phase::RolledBack { reason };
            self.note(now, text, out);
        }
    }

    fn begin_rollback(&mut self, reason: String, now: u64, out: &mut Vec<Command>) {
        for p in self.sites.values_mut() {
            if p.state.holds_new() {
                p.state = SiteState::Reverting { since_ms: now };
            }
        }
        let text = format!(
            "rolling back to {}: {reason}",
            self.from_version.as_deref().unwrap_or("nothing")
        );
        self.phase = Phase::RollingBack { reason };
        self.note(now, text, out);
    }

    fn replace_sites(&mut self, sites: &[SiteInfo], now: u64, out: &mut Vec<Command>) {
        let mut keep = BTreeSet::new();
        let mut added: Vec<String> = Vec::new();
        for s in sites {
            if keep.insert(s.name.as_str()) && !self.sites.contains_key(&s.name) {
                added.push(s.name.clone());
            }
        }
        let removed: Vec<String> = self
            .sites
            .keys()
            .filter(|n| !keep.contains(n.as_str()))
            .cloned()
            .collect();
        for n in &removed {
            self.sites.remove(n);
        }
        for wave in &mut self.waves {
            wave.retain(|n| keep.contains(n.as_str()));
        }
        // Waves that have opened stay, so `opened` keeps counting the same waves.
        let opened = self.opened;
        let mut index = 0;
        self.waves.retain(|w| {
            index += 1;
            index <= opened || !w.is_empty()
        });
        let deployment = self.deployment.clone();
        added.sort_by_cached_key(|n| (rank(&deployment, n), n.clone()));
        for n in &added {
            let progress = SiteProgress {
                state: SiteState::Waiting,
                online: true,
            };
            self.sites.insert(n.clone(), progress);
        }
        match self.waves.last_mut() {
            Some(last) => last.extend(added.iter().cloned()),
            None => self.waves.push(added.clone()),
        }
        let mut parts = Vec::new();
        if !added.is_empty() {
            parts.push(format!(
                "{} sites joined the last wave: {}",
                added.len(),
                named(&added)
            ));
        }
        if !removed.is_empty() {
            parts.push(format!("{} sites left: {}", removed.len(), named(&removed)));
        }
        if !parts.is_empty() {
            self.note(now, format!("placement changed: {}", parts.join("; ")), out);
        }
    }

    /// Appends the commands every step ends with: recompiles and the next wake-up.
    fn finish(&self, before: &BTreeMap<String, String>, out: &mut Vec<Command>) {
        let after = assignment(self);
        let changed: Vec<String> = before
            .keys()
            .chain(after.keys())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter(|k| before.get(*k) != after.get(*k))
            .cloned()
            .collect();
        if !changed.is_empty() {
            out.push(Command::Recompile { sites: changed });
        }
        if let Some(at) = next_wake(self) {
            out.push(Command::WakeAt(at));
        }
    }
}

impl Event {
    /// The verb of an operator control, for refusals.
    fn control(&self) -> Option<&'static str> {
        match self {
            Event::Pause => Some("pause"),
            Event::Resume => Some("resume"),
            Event::Abort => Some("abort"),
            Event::Rollback { .. } => Some("roll back"),
            _ => None,
        }
    }
}

impl Policy {
    fn new(strategy: Option<&RolloutSpec>, first: bool) -> Policy {
        let soak_ms = strategy.and_then(|s| s.canary.as_ref()).map_or(0, |c| {
            u64::try_from(c.soak.0.as_millis()).unwrap_or(u64::MAX)
        });
        Policy {
            soak_ms,
            failure_budget: strategy
                .and_then(|s| s.failure_budget)
                .unwrap_or(Share::Count(0)),
            on_failure: strategy.map_or(OnFailure::Rollback, |s| s.on_failure),
            max_parallel: if first {
                None
            } else {
                strategy.and_then(|s| s.max_parallel)
            },
        }
    }

    /// Failed sites tolerated in a wave of `size` sites. A percentage rounds down, unlike
    /// [`Share::of`], so that a budget never tolerates more than it says.
    pub fn tolerated(&self, size: usize) -> usize {
        match self.failure_budget {
            Share::Count(n) => n as usize,
            Share::Percent(p) => size * p as usize / 100,
        }
    }
}

/// A site's place in a deployment's order: the first 8 bytes of SHA-256 over the deployment
/// and site names. Stable across builds and platforms, unlike `std`'s hasher.
fn rank(deployment: &str, site: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(deployment.as_bytes());
    h.update([0]);
    h.update(site.as_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

struct Plan {
    canary: bool,
    waves: Vec<Vec<String>>,
    notes: Vec<String>,
}

/// Plans the waves: canary first, then cumulative shares of all sites, empty waves dropped,
/// the last one reaching every site. Never returns no wave.
fn plan(deployment: &str, strategy: Option<&RolloutSpec>, first: bool, sites: &[SiteInfo]) -> Plan {
    let mut seen = BTreeSet::new();
    let mut all: Vec<&SiteInfo> = sites
        .iter()
        .filter(|s| seen.insert(s.name.as_str()))
        .collect();
    all.sort_by_cached_key(|s| (rank(deployment, &s.name), s.name.clone()));
    let names = |v: &[&SiteInfo]| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    let strategy = match strategy {
        Some(s) if !first => s,
        _ => {
            return Plan {
                canary: false,
                waves: vec![names(&all)],
                notes: Vec::new(),
            };
        }
    };
    let total = all.len();
    let mut notes = Vec::new();
    let mut canary: Vec<&SiteInfo> = Vec::new();
    if let Some(c) = &strategy.canary {
        let want = c.sites.of(total);
        canary = match &c.selector {
            Some(sel) => all
                .iter()
                .copied()
                .filter(|s| sel.matches(&s.labels))
                .collect(),
            None => all.clone(),
        };
        if let Some(sel) = &c.selector
            && canary.is_empty()
            && want > 0
        {
            notes.push(format!(
                "no site matches the canary selector `{}`; the canary is picked among all sites",
                sel.source()
            ));
            canary = all.clone();
        }
        canary.truncate(want);
    }
    let chosen: BTreeSet<&str> = canary.iter().map(|s| s.name.as_str()).collect();
    let mut order = names(&canary);
    order.extend(
        all.iter()
            .filter(|s| !chosen.contains(s.name.as_str()))
            .map(|s| s.name.clone()),
    );
    let mut bounds = vec![canary.len()];
    for share in &strategy.waves {
        let prev = bounds.last().copied().unwrap_or(0);
        bounds.push(share.of(total).max(prev));
    }
    if bounds.last().is_some_and(|b| *b < total) {
        bounds.push(total);
    }
    let mut waves = Vec::new();
    let mut begin = 0;
    for end in bounds {
        if end > begin {
            waves.push(order[begin..end].to_vec());
            begin = end;
        }
    }
    if waves.is_empty() {
        waves.push(Vec::new());
    }
    Plan {
        canary: !canary.is_empty(),
        waves,
        notes,
    }
}

/// The first few names of a list, and how many more.
fn named(names: &[String]) -> String {
    let mut text = names
        .iter()
        .take(NAMED_FAILURES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > NAMED_FAILURES {
        text.push_str(&format!(" and {} more", names.len() - NAMED_FAILURES));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use atoll_spec::Selector;
    use atoll_spec::deployment::Canary;
    use atoll_spec::units::Span;
    use proptest::prelude::*;

    const DEPLOYMENT: &str = "pos-prod";
    const OLD: &str = "1.0";
    const NEW: &str = "2.0";
    const SOAK: u64 = 120_000;

    fn sites(n: usize) -> Vec<SiteInfo> {
        (0..n)
            .map(|i| SiteInfo {
                name: format!("store-{i:03}"),
                labels: BTreeMap::new(),
            })
            .collect()
    }

    fn shares(list: &[&str]) -> Vec<Share> {
        list.iter().map(|s| Share::parse(s).unwrap()).collect()
    }

    /// The design document's example: one canary soaking 2m, then 10%, 50%, 100%.
    fn strategy() -> RolloutSpec {
        RolloutSpec {
            canary: Some(Canary {
                sites: Share::Count(1),
                selector: None,
                soak: Span::from_secs(SOAK / 1000),
            }),
            waves: shares(&["10%", "50%", "100%"]),
            failure_budget: None,
            on_failure: OnFailure::Rollback,
            max_parallel: None,
            prefetch: false,
        }
    }

    /// One wave of every site, soaking 2m (a canary of no site still sets the soak): for
    /// budget and parallelism tests.
    fn one_wave() -> RolloutSpec {
        RolloutSpec {
            canary: Some(Canary {
                sites: Share::Count(0),
                selector: None,
                soak: Span::from_secs(SOAK / 1000),
            }),
            waves: Vec::new(),
            ..strategy()
        }
    }

    fn begin(spec: &RolloutSpec, n: usize) -> Rollout {
        start(DEPLOYMENT, Some(spec), Some(OLD), NEW, &sites(n), 0).0
    }

    fn send(r: &mut Rollout, event: Event, now: u64) -> Vec<Command> {
        let (next, commands) = step(r, &event, now);
        *r = next;
        commands
    }

    fn report(site: &str, version: &str, health: Health) -> Event {
        Event::Report(SiteReport {
            site: site.to_owned(),
            version: Some(version.to_owned()),
            health,
            connected: true,
            image_failed: None,
        })
    }

    fn healthy(site: &str, version: &str) -> Event {
        report(site, version, Health::Healthy)
    }

    fn sick(site: &str) -> Event {
        report(
            site,
            NEW,
            Health::Unhealthy {
                reason: "http 500 on /healthz".to_owned(),
            },
        )
    }

    fn offline(site: &str) -> Event {
        Event::Report(SiteReport {
            site: site.to_owned(),
            version: None,
            health: Health::Unknown,
            connected: false,
            image_failed: None,
        })
    }

    fn state<'a>(r: &'a Rollout, site: &str) -> &'a SiteState {
        &r.sites[site].state
    }

    fn on_new(r: &Rollout) -> Vec<String> {
        assignment(r)
            .into_iter()
            .filter(|(_, v)| v == NEW)
            .map(|(s, _)| s)
            .collect()
    }

    fn recompiled(commands: &[Command]) -> Vec<String> {
        commands
            .iter()
            .filter_map(|c| match c {
                Command::Recompile { sites } => Some(sites.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }

    fn sorted(names: &[String]) -> Vec<String> {
        let mut names = names.to_vec();
        names.sort();
        names
    }

    fn count(r: &Rollout, pred: impl Fn(&SiteState) -> bool) -> usize {
        r.sites.values().filter(|p| pred(&p.state)).count()
    }

    fn is_active(s: &SiteState) -> bool {
        s.is_active()
    }

    /// Every site that updates or soaks reports the new version healthy at `now`; then the
    /// soak ends. Returns the time after.
    fn pass(r: &mut Rollout, now: u64) -> u64 {
        let started: Vec<String> = r
            .sites
            .iter()
            .filter(|(_, p)| matches!(p.state, SiteState::Updating { .. }))
            .map(|(n, _)| n.clone())
            .collect();
        for site in started {
            send(r, healthy(&site, NEW), now);
        }
        send(r, Event::Tick, now + SOAK);
        now + SOAK
    }

    #[test]
    fn plans_the_canary_then_cumulative_waves_of_all_sites() {
        let r = begin(&strategy(), 20);
        let sizes: Vec<usize> = r.waves.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 1, 8, 10]);
        assert!(r.canary);
        assert_eq!(r.opened, 1);
        let all: BTreeSet<&String> = r.waves.iter().flatten().collect();
        assert_eq!(all.len(), 20);
        assert_eq!(r.sites.len(), 20);
    }

    #[test]
    fn site_order_is_a_stable_hash_not_the_alphabet() {
        let a = begin(&strategy(), 50);
        let again = begin(&strategy(), 50);
        assert_eq!(a, again);
        let order: Vec<&String> = a.waves.iter().flatten().collect();
        let mut sorted = order.clone();
        sorted.sort();
        assert_ne!(order, sorted, "sites are started in name order");
        let other = start("kiosk", Some(&strategy()), Some(OLD), NEW, &sites(50), 0).0;
        let other_order: Vec<&String> = other.waves.iter().flatten().collect();
        assert_ne!(order, other_order, "two deployments pick the same canaries");
        // The order does not depend on the order placement lists the sites in.
        let mut reversed = sites(50);
        reversed.reverse();
        let b = start(DEPLOYMENT, Some(&strategy()), Some(OLD), NEW, &reversed, 0).0;
        assert_eq!(a.waves, b.waves);
    }

    #[test]
    fn empty_waves_are_dropped_and_a_last_wave_reaches_every_site() {
        let spec = RolloutSpec {
            waves: shares(&["10%", "20%", "50%"]),
            ..strategy()
        };
        let r = begin(&spec, 5);
        // 10% and 20% of 5 round up to 1, the canary itself; 50% is 3; then all 5.
        let sizes: Vec<usize> = r.waves.iter().map(Vec::len).collect();
        assert_eq!(sizes, [1, 2, 2]);
        let counts = RolloutSpec {
            canary: None,
            waves: shares(&["2", "1", "4"]),
            ..strategy()
        };
        let sizes: Vec<usize> = begin(&counts, 6).waves.iter().map(Vec::len).collect();
        assert_eq!(sizes, [2, 2, 2]);
    }

    #[test]
    fn no_strategy_is_one_wave_of_every_site() {
        let (r, commands) = start(DEPLOYMENT, None, Some(OLD), NEW, &sites(4), 0);
        assert_eq!(r.waves.len(), 1);
        assert!(!r.canary);
        assert_eq!(on_new(&r).len(), 4);
        assert_eq!(recompiled(&commands).len(), 4);
        assert_eq!(r.policy.failure_budget, Share::Count(0));
    }

    #[test]
    fn a_first_version_deploys_everywhere_at_once() {
        let spec = RolloutSpec {
            max_parallel: Some(1),
            ..strategy()
        };
        let (mut r, commands) = start(DEPLOYMENT, Some(&spec), None, NEW, &sites(10), 0);
        assert_eq!(r.waves.len(), 1);
        assert_eq!(count(&r, |s| matches!(s, SiteState::Updating { .. })), 10);
        assert_eq!(recompiled(&commands).len(), 10);
        assert_eq!(on_new(&r).len(), 10);
        pass(&mut r, 1000);
        assert_eq!(r.phase, Phase::Complete);
    }

    #[test]
    fn a_passing_canary_opens_the_waves_in_order() {
        let mut r = begin(&strategy(), 20);
        let canary = r.waves[0][0].clone();
        assert_eq!(on_new(&r), std::slice::from_ref(&canary));

        let commands = send(&mut r, healthy(&canary, NEW), 1_000);
        assert_eq!(
            *state(&r, &canary),
            SiteState::Soaking {
                healthy_since_ms: 1_000
            }
        );
        assert!(commands.contains(&Command::WakeAt(1_000 + SOAK)));

        let commands = send(&mut r, Event::Tick, SOAK + 999);
        assert_eq!(r.opened, 1, "opened before the soak ended");
        assert!(recompiled(&commands).is_empty());

        let commands = send(&mut r, Event::Tick, 1_000 + SOAK);
        assert_eq!(
            *state(&r, &canary),
            SiteState::Succeeded {
                at_ms: 1_000 + SOAK
            }
        );
        assert_eq!(r.opened, 2);
        assert_eq!(recompiled(&commands), sorted(&r.waves[1]));
        assert!(
            r.history.iter().any(|n| n.text == "wave 1 opened: 1 sites"),
            "{:?}",
            r.history
        );

        let mut now = 200_000;
        for opened in 3..=4 {
            now = pass(&mut r, now);
            assert_eq!(r.opened, opened);
            let expected: usize = r.waves[..opened].iter().map(Vec::len).sum();
            assert_eq!(on_new(&r).len(), expected);
        }
        pass(&mut r, now);
        assert_eq!(r.phase, Phase::Complete);
        assert_eq!(on_new(&r).len(), 20);
        assert_eq!(next_wake(&r), None);
        assert_eq!(settled_version(&r), Some(NEW));
    }

    #[test]
    fn a_report_of_the_old_version_is_not_success() {
        let mut r = begin(&strategy(), 5);
        let canary = r.waves[0][0].clone();
        send(&mut r, healthy(&canary, OLD), 1_000);
        send(&mut r, Event::Tick, 1_000 + 10 * SOAK);
        assert_eq!(*state(&r, &canary), SiteState::Updating { since_ms: 0 });
        assert_eq!(r.opened, 1);
        // And an unhealthy old version is not the new version's failure.
        send(
            &mut r,
            report(
                &canary,
                OLD,
                Health::Unhealthy {
                    reason: "disk full".into(),
                },
            ),
            2_000 + 10 * SOAK,
        );
        assert_eq!(r.phase, Phase::Running);
    }

    #[test]
    fn a_failing_canary_rolls_every_site_back() {
        let mut r = begin(&strategy(), 10);
        let canary = r.waves[0][0].clone();
        let commands = send(&mut r, sick(&canary), 1_000);
        assert!(
            matches!(r.phase, Phase::RollingBack { .. }),
            "{:?}",
            r.phase
        );
        assert_eq!(recompiled(&commands), std::slice::from_ref(&canary));
        assert!(assignment(&r).values().all(|v| v == OLD));
        assert_eq!(assignment(&r).len(), 10);
        // Still on the new version: not yet reverted.
        send(&mut r, healthy(&canary, NEW), 2_000);
        assert!(matches!(r.phase, Phase::RollingBack { .. }));
        send(&mut r, healthy(&canary, OLD), 3_000);
        assert_eq!(*state(&r, &canary), SiteState::Reverted);
        let Phase::RolledBack { reason } = &r.phase else {
            panic!("{:?}", r.phase)
        };
        assert!(reason.contains("canary: 1 of 1 sites failed"), "{reason}");
        assert!(reason.contains("http 500"), "{reason}");
        assert_eq!(settled_version(&r), Some(OLD));
    }

    #[test]
    fn a_late_failure_rolls_back_every_updated_site_including_offline_ones() {
        let mut r = begin(&strategy(), 20);
        let mut now = pass(&mut r, 1_000);
        now = pass(&mut r, now);
        assert_eq!(r.opened, 3);
        let wave2 = r.waves[2].clone();
        send(&mut r, offline(&wave2[0]), now);
        send(&mut r, sick(&wave2[1]), now + 1);
        assert!(matches!(r.phase, Phase::RollingBack { .. }));
        let reverting = count(&r, |s| matches!(s, SiteState::Reverting { .. }));
        assert_eq!(reverting, 10, "canary, wave 1 and wave 2 all turn back");
        assert!(on_new(&r).is_empty());
        for site in r.waves[..3].iter().flatten().cloned().collect::<Vec<_>>() {
            if site != wave2[0] {
                send(&mut r, healthy(&site, OLD), now + 2);
            }
        }
        // The offline site does not hold the rollback; it gets the old version when it returns.
        assert!(matches!(r.phase, Phase::RolledBack { .. }), "{:?}", r.phase);
        assert_eq!(r.assigned(&wave2[0]), Some(OLD));
        send(&mut r, healthy(&wave2[0], OLD), now + 3);
        assert_eq!(*state(&r, &wave2[0]), SiteState::Reverted);
    }

    #[test]
    fn an_image_that_cannot_be_pulled_is_a_failure() {
        let mut r = begin(&strategy(), 5);
        let canary = r.waves[0][0].clone();
        send(
            &mut r,
            Event::Report(SiteReport {
                site: canary.clone(),
                version: Some(OLD.to_owned()),
                health: Health::Healthy,
                connected: true,
                image_failed: Some("manifest unknown".to_owned()),
            }),
            1_000,
        );
        assert!(r.history.iter().any(|n| n.text
            == format!("{canary} failed on 2.0: cannot pull the image: manifest unknown")));
        assert!(matches!(r.phase, Phase::RollingBack { .. }));
    }

    #[test]
    fn on_failure_pause_pauses_and_resume_accepts_the_failures() {
        let spec = RolloutSpec {
            on_failure: OnFailure::Pause,
            ..strategy()
        };
        let mut r = begin(&spec, 10);
        let canary = r.waves[0][0].clone();
        send(&mut r, sick(&canary), 1_000);
        assert!(matches!(r.phase, Phase::Paused { .. }));
        assert_eq!(r.assigned(&canary), Some(NEW), "pausing does not revert");
        // Nothing opens while paused.
        send(&mut r, Event::Tick, 10 * SOAK);
        assert_eq!(r.opened, 1);
        let commands = send(&mut r, Event::Resume, 10 * SOAK);
        assert_eq!(r.phase, Phase::Running);
        assert_eq!(r.opened, 2, "the accepted canary closes its wave");
        assert_eq!(recompiled(&commands), sorted(&r.waves[1]));
        assert_eq!(
            *state(&r, &canary),
            SiteState::Failed {
                reason: "unhealthy: http 500 on /healthz".to_owned(),
                accepted: true
            }
        );
        assert!(
            r.history
                .iter()
                .any(|n| n.text.contains("accepting 1 failed sites: "))
        );
    }

    #[test]
    fn operators_pause_and_resume() {
        let mut r = begin(&strategy(), 10);
        let canary = r.waves[0][0].clone();
        send(&mut r, Event::Pause, 10);
        assert_eq!(
            r.phase,
            Phase::Paused {
                reason: "paused by an operator".into()
            }
        );
        send(&mut r, healthy(&canary, NEW), 1_000);
        let commands = send(&mut r, Event::Tick, 1_000 + SOAK);
        assert!(
            matches!(state(&r, &canary), SiteState::Succeeded { .. }),
            "reports are still recorded while paused"
        );
        assert_eq!(r.opened, 1);
        assert!(recompiled(&commands).is_empty());
        // A failure beyond the budget still rolls back while paused, with on_failure: rollback.
        let mut failing = r.clone();
        send(&mut failing, sick(&canary), 2_000 + SOAK);
        assert!(matches!(failing.phase, Phase::RollingBack { .. }));

        let commands = send(&mut r, Event::Resume, 2_000 + SOAK);
        assert_eq!(r.phase, Phase::Running);
        assert_eq!(r.opened, 2);
        assert_eq!(recompiled(&commands), sorted(&r.waves[1]));
    }

    #[test]
    fn abort_freezes_the_assignment() {
        let mut r = begin(&strategy(), 20);
        let now = pass(&mut r, 1_000);
        let before = assignment(&r);
        let commands = send(&mut r, Event::Abort, now);
        assert_eq!(r.phase, Phase::Aborted);
        assert!(recompiled(&commands).is_empty());
        pass(&mut r, now + 1);
        send(&mut r, Event::Tick, now + 100 * SOAK);
        assert_eq!(assignment(&r), before);
        assert_eq!(on_new(&r).len(), 2);
        // An operator may still roll an aborted rollout back.
        send(
            &mut r,
            Event::Rollback { reason: "".into() },
            now + 100 * SOAK,
        );
        assert!(on_new(&r).is_empty());
    }

    #[test]
    fn controls_that_do_not_apply_are_refused_and_change_nothing() {
        let mut r = begin(&strategy(), 3);
        let before = r.clone();
        let commands = send(&mut r, Event::Resume, 5);
        assert_eq!(r, before);
        assert_eq!(
            commands,
            [Command::Refused(
                "cannot resume the rollout of pos-prod to 2.0: it is running".into()
            )]
        );
        let mut now = 1_000;
        while r.phase == Phase::Running {
            now = pass(&mut r, now);
        }
        assert_eq!(r.phase, Phase::Complete);
        for event in [Event::Pause, Event::Resume, Event::Abort] {
            let before = r.clone();
            let commands = send(&mut r, event, now);
            assert_eq!(r, before);
            assert!(
                matches!(commands[..], [Command::Refused(_)]),
                "{commands:?}"
            );
        }
    }

    #[test]
    fn a_newer_version_supersedes_the_rollout_visibly() {
        let mut r = begin(&strategy(), 10);
        let before = assignment(&r);
        let commands = send(
            &mut r,
            Event::Supersede {
                by_version: "3.0".into(),
            },
            1_000,
        );
        assert_eq!(
            r.phase,
            Phase::Superseded {
                by: "3.0".into(),
                settled: Some(OLD.into())
            }
        );
        assert!(commands.contains(&Command::Note(
            "superseded by 3.0: a new rollout takes over".into()
        )));
        assert!(recompiled(&commands).is_empty());
        assert_eq!(assignment(&r), before);
        let frozen = r.clone();
        let canary = r.waves[0][0].clone();
        assert!(send(&mut r, sick(&canary), 2_000).is_empty());
        let commands = send(&mut r, Event::Pause, 2_000);
        assert_eq!(
            commands,
            [Command::Refused(
                "cannot pause the rollout of pos-prod to 2.0: it is superseded by 3.0".into()
            )]
        );
        assert_eq!(r, frozen);

        // A complete rollout that is superseded settled on its new version.
        let mut done = begin(&one_wave(), 2);
        pass(&mut done, 1);
        send(
            &mut done,
            Event::Supersede {
                by_version: "3.0".into(),
            },
            SOAK + 2,
        );
        assert_eq!(settled_version(&done), Some(NEW));
    }

    #[test]
    fn an_offline_canary_is_pending_and_the_others_carry_on() {
        let spec = RolloutSpec {
            canary: Some(Canary {
                sites: Share::Count(2),
                selector: None,
                soak: Span::from_secs(120),
            }),
            ..strategy()
        };
        let mut r = begin(&spec, 20);
        let (gone, here) = (r.waves[0][0].clone(), r.waves[0][1].clone());
        send(&mut r, offline(&gone), 500);
        assert_eq!(*state(&r, &gone), SiteState::Pending { since_ms: 500 });
        send(&mut r, healthy(&here, NEW), 1_000);
        send(&mut r, Event::Tick, 1_000 + SOAK);
        assert_eq!(r.opened, 2, "an offline canary held the rollout");
        assert_eq!(r.phase, Phase::Running);
        assert_eq!(
            r.assigned(&gone),
            Some(NEW),
            "it gets the new version on return"
        );
        // Back, and healthy: it soaks like any other.
        send(&mut r, healthy(&gone, OLD), 2_000 + SOAK);
        assert_eq!(
            *state(&r, &gone),
            SiteState::Updating {
                since_ms: 2_000 + SOAK
            }
        );
    }

    #[test]
    fn a_canary_that_is_all_offline_waits() {
        let mut r = begin(&strategy(), 10);
        let canary = r.waves[0][0].clone();
        send(&mut r, offline(&canary), 500);
        send(&mut r, Event::Tick, 100 * SOAK);
        assert_eq!(r.opened, 1);
        assert_eq!(r.phase, Phase::Running);
        send(&mut r, healthy(&canary, NEW), 100 * SOAK + 1);
        send(&mut r, Event::Tick, 101 * SOAK + 1);
        assert_eq!(r.opened, 2);
    }

    #[test]
    fn a_site_that_returns_after_completion_gets_the_new_version_and_never_reopens() {
        let mut r = begin(&one_wave(), 4);
        let late = r.waves[0][3].clone();
        send(&mut r, offline(&late), 10);
        let now = pass(&mut r, 1_000);
        assert_eq!(r.phase, Phase::Complete);
        assert!(r.history.iter().any(|n| {
            n.text
                .contains("1 offline sites will get it when they return")
        }));
        assert_eq!(r.assigned(&late), Some(NEW));
        send(&mut r, healthy(&late, OLD), now);
        assert!(matches!(state(&r, &late), SiteState::Updating { .. }));
        send(&mut r, sick(&late), now + 1);
        assert!(matches!(state(&r, &late), SiteState::Failed { .. }));
        assert_eq!(r.phase, Phase::Complete);
        assert_eq!(r.assigned(&late), Some(NEW));
    }

    #[test]
    fn max_parallel_bounds_the_sites_updating_at_once() {
        let spec = RolloutSpec {
            max_parallel: Some(2),
            ..one_wave()
        };
        let mut r = begin(&spec, 6);
        assert_eq!(count(&r, is_active), 2);
        assert_eq!(on_new(&r).len(), 2);
        // An offline site of the open wave becomes pending without taking a slot.
        let waiting = r.waves[0][5].clone();
        assert_eq!(*state(&r, &waiting), SiteState::Waiting);
        send(&mut r, offline(&waiting), 10);
        assert_eq!(*state(&r, &waiting), SiteState::Pending { since_ms: 10 });
        assert_eq!(count(&r, is_active), 2);
        let mut now = 1_000;
        let first = r.waves[0][0].clone();
        send(&mut r, healthy(&first, NEW), now);
        assert_eq!(count(&r, is_active), 2, "soaking still holds a slot");
        // Two succeed, two start; then two succeed and the last one starts.
        for given in [5, 6] {
            now = pass(&mut r, now);
            assert!(count(&r, is_active) <= 2);
            assert_eq!(count(&r, |s| *s != SiteState::Waiting), given);
        }
        now = pass(&mut r, now);
        assert_eq!(r.phase, Phase::Complete, "{:?}", r.sites);
        assert!(now > 0);
    }

    #[test]
    fn a_failure_budget_tolerates_exactly_its_share() {
        let spec = RolloutSpec {
            failure_budget: Some(Share::Percent(20)),
            ..one_wave()
        };
        let mut r = begin(&spec, 10);
        let wave = r.waves[0].clone();
        send(&mut r, sick(&wave[0]), 1);
        send(&mut r, sick(&wave[1]), 2);
        assert_eq!(r.phase, Phase::Running, "2 of 10 is within 20%");
        send(&mut r, sick(&wave[2]), 3);
        let Phase::RollingBack { reason } = &r.phase else {
            panic!("{:?}", r.phase)
        };
        assert!(
            reason.starts_with(
                "wave 1: 3 of 10 sites failed, over the failure budget of 20% (2 tolerated)"
            ),
            "{reason}"
        );
        // Within budget, the wave closes with its failures and the rollout completes.
        let mut r = begin(&spec, 10);
        send(&mut r, sick(&wave[0]), 1);
        pass(&mut r, 2);
        assert_eq!(r.phase, Phase::Complete);
        assert_eq!(r.assigned(&wave[0]), Some(NEW));
    }

    #[test]
    fn resuming_an_operator_pause_does_not_widen_the_budget() {
        let spec = RolloutSpec {
            failure_budget: Some(Share::Count(1)),
            ..one_wave()
        };
        let mut r = begin(&spec, 5);
        let wave = r.waves[0].clone();
        send(&mut r, sick(&wave[0]), 1);
        send(&mut r, Event::Pause, 2);
        send(&mut r, Event::Resume, 3);
        assert_eq!(
            *state(&r, &wave[0]),
            SiteState::Failed {
                reason: "unhealthy: http 500 on /healthz".into(),
                accepted: false
            }
        );
        send(&mut r, sick(&wave[1]), 4);
        assert!(matches!(r.phase, Phase::RollingBack { .. }));
    }

    #[test]
    fn a_percentage_budget_rounds_down() {
        let policy = Policy {
            soak_ms: 0,
            failure_budget: Share::Percent(5),
            on_failure: OnFailure::Rollback,
            max_parallel: None,
        };
        assert_eq!(policy.tolerated(10), 0);
        assert_eq!(policy.tolerated(20), 1);
        assert_eq!(policy.tolerated(39), 1);
        let counted = Policy {
            failure_budget: Share::Count(3),
            ..policy
        };
        assert_eq!(counted.tolerated(1), 3);
    }

    #[test]
    fn a_selector_picks_the_canary() {
        let mut list = sites(20);
        list[7].labels.insert("canary".into(), "true".into());
        let spec = RolloutSpec {
            canary: Some(Canary {
                sites: Share::Count(1),
                selector: Some(Selector::parse(r#"canary == "true""#).unwrap()),
                soak: Span::from_secs(120),
            }),
            ..strategy()
        };
        let (r, commands) = start(DEPLOYMENT, Some(&spec), Some(OLD), NEW, &list, 0);
        assert_eq!(r.waves[0], ["store-007"]);
        assert_eq!(recompiled(&commands), ["store-007"]);

        // No site matches: a canary is still picked, and the history says why.
        let (r, _) = start(DEPLOYMENT, Some(&spec), Some(OLD), NEW, &sites(20), 0);
        assert!(r.canary);
        assert_eq!(r.waves[0].len(), 1);
        assert!(
            r.history
                .iter()
                .any(|n| n.text.contains("no site matches the canary selector"))
        );
    }

    #[test]
    fn sites_added_mid_rollout_join_the_last_wave_and_removed_ones_disappear() {
        let mut r = begin(&strategy(), 20);
        let canary = r.waves[0][0].clone();
        let gone = r.waves[3][0].clone();
        let mut list: Vec<SiteInfo> = sites(20).into_iter().filter(|s| s.name != gone).collect();
        list.push(SiteInfo {
            name: "store-new".into(),
            labels: BTreeMap::new(),
        });
        let commands = send(&mut r, Event::SitesChanged { sites: list }, 10);
        assert!(!r.sites.contains_key(&gone));
        assert!(r.waves.iter().flatten().all(|n| *n != gone));
        assert_eq!(r.waves.last().unwrap().last().unwrap(), "store-new");
        assert_eq!(*state(&r, "store-new"), SiteState::Waiting);
        assert_eq!(r.wave_of("store-new"), Some(r.waves.len() - 1));
        assert_eq!(r.assigned("store-new"), Some(OLD));
        let mut changed = recompiled(&commands);
        changed.sort();
        assert_eq!(changed, [gone.clone(), "store-new".to_owned()]);
        assert_eq!(*state(&r, &canary), SiteState::Updating { since_ms: 0 });

        let mut now = 1_000;
        while r.phase == Phase::Running {
            now = pass(&mut r, now);
        }
        assert_eq!(r.phase, Phase::Complete);
        // After completion a new site gets the new version at once.
        let mut list: Vec<SiteInfo> = r
            .sites
            .keys()
            .map(|n| SiteInfo {
                name: n.clone(),
                labels: BTreeMap::new(),
            })
            .collect();
        list.push(SiteInfo {
            name: "store-newer".into(),
            labels: BTreeMap::new(),
        });
        let commands = send(&mut r, Event::SitesChanged { sites: list }, now);
        assert_eq!(recompiled(&commands), ["store-newer"]);
        assert_eq!(r.assigned("store-newer"), Some(NEW));
        assert!(matches!(
            state(&r, "store-newer"),
            SiteState::Updating { .. }
        ));
        assert_eq!(r.phase, Phase::Complete);
    }

    #[test]
    fn a_complete_rollout_can_be_rolled_back_but_a_first_version_cannot() {
        let mut r = begin(&one_wave(), 3);
        pass(&mut r, 1);
        assert_eq!(r.phase, Phase::Complete);
        let commands = send(
            &mut r,
            Event::Rollback {
                reason: "receipts print twice".into(),
            },
            SOAK + 10,
        );
        assert_eq!(recompiled(&commands).len(), 3);
        assert_eq!(
            r.phase,
            Phase::RollingBack {
                reason: "rolled back by an operator: receipts print twice".into()
            }
        );
        let commands = send(&mut r, Event::Rollback { reason: "".into() }, SOAK + 11);
        assert!(matches!(commands[..], [Command::Refused(_)]));

        let (mut first, _) = start(DEPLOYMENT, Some(&strategy()), None, NEW, &sites(3), 0);
        let commands = send(&mut first, Event::Rollback { reason: "".into() }, 1);
        assert!(matches!(commands[..], [Command::Refused(_)]));
        // A failure pauses instead: there is no older version to return to.
        let site = first.waves[0][0].clone();
        send(&mut first, sick(&site), 2);
        let Phase::Paused { .. } = first.phase else {
            panic!("{:?}", first.phase)
        };
        assert!(
            first
                .history
                .iter()
                .any(|n| n.text.contains("nothing to roll back to"))
        );
    }

    #[test]
    fn a_succeeded_site_that_turns_unhealthy_still_counts() {
        let mut r = begin(&strategy(), 20);
        let canary = r.waves[0][0].clone();
        let now = pass(&mut r, 1_000);
        assert_eq!(r.opened, 2);
        send(&mut r, sick(&canary), now + 1);
        assert!(matches!(r.phase, Phase::RollingBack { .. }));
    }

    #[test]
    fn a_soak_starts_over_after_an_outage() {
        let mut r = begin(&strategy(), 5);
        let canary = r.waves[0][0].clone();
        send(&mut r, healthy(&canary, NEW), 1_000);
        send(&mut r, offline(&canary), 60_000);
        assert_eq!(*state(&r, &canary), SiteState::Pending { since_ms: 60_000 });
        assert_eq!(next_wake(&r), None);
        send(&mut r, healthy(&canary, NEW), 90_000);
        send(&mut r, Event::Tick, 1_000 + SOAK);
        assert_eq!(r.opened, 1);
        let commands = send(&mut r, Event::Tick, 90_000 + SOAK);
        assert_eq!(r.opened, 2);
        assert!(!recompiled(&commands).is_empty());
    }

    #[test]
    fn zero_sites_complete_at_once() {
        let (r, commands) = start(DEPLOYMENT, Some(&strategy()), Some(OLD), NEW, &[], 0);
        assert_eq!(r.phase, Phase::Complete);
        assert!(recompiled(&commands).is_empty());
    }

    #[test]
    fn a_restarted_control_plane_carries_on_where_it_stopped() {
        let mut r = begin(&strategy(), 20);
        let canary = r.waves[0][0].clone();
        send(&mut r, healthy(&canary, NEW), 1_000);
        let json = serde_json::to_string(&r).unwrap();
        let restored: Rollout = serde_json::from_str(&json).unwrap();
        assert_eq!(restored, r);
        // The shell reschedules from the stored state alone.
        assert_eq!(next_wake(&restored), Some(1_000 + SOAK));
        let a = step(&r, &Event::Tick, 1_000 + SOAK);
        let b = step(&restored, &Event::Tick, 1_000 + SOAK);
        assert_eq!(a, b);
        assert_eq!(a.0.opened, 2);
        assert!(json.contains(r#""phase":{"kind":"running"}"#), "{json}");
    }

    // ---- properties ----

    #[derive(Debug, Clone)]
    enum Op {
        Report {
            site: usize,
            version: u8,
            health: u8,
            connected: bool,
            image: bool,
        },
        Tick(u64),
        Pause,
        Resume,
        Abort,
        Rollback,
        Supersede,
        Change {
            keep: u16,
            add: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            70 => (
                any::<usize>(),
                0u8..4,
                0u8..4,
                prop::bool::weighted(0.8),
                prop::bool::weighted(0.04),
            )
                .prop_map(|(site, version, health, connected, image)| Op::Report {
                    site,
                    version,
                    health,
                    connected,
                    image,
                }),
            20 => (0u64..200_000).prop_map(Op::Tick),
            2 => Just(Op::Pause),
            3 => Just(Op::Resume),
            1 => Just(Op::Abort),
            1 => Just(Op::Rollback),
            1 => Just(Op::Supersede),
            2 => (any::<u16>(), 0u8..3).prop_map(|(keep, add)| Op::Change { keep, add }),
        ]
    }

    fn share() -> impl Strategy<Value = Share> {
        prop_oneof![
            (0u32..6).prop_map(Share::Count),
            (0u32..=100).prop_map(Share::Percent),
        ]
    }

    fn spec() -> impl Strategy<Value = Option<RolloutSpec>> {
        proptest::option::weighted(
            0.9,
            (
                proptest::option::weighted(0.8, (share(), any::<bool>(), 0u64..3)),
                prop::collection::vec(share(), 0..4),
                proptest::option::of(share()),
                any::<bool>(),
                proptest::option::of(1u32..4),
            )
                .prop_map(|(canary, waves, failure_budget, pause, max_parallel)| {
                    RolloutSpec {
                        canary: canary.map(|(sites, by_label, minutes)| Canary {
                            sites,
                            selector: by_label
                                .then(|| Selector::parse(r#"canary == "true""#).unwrap()),
                            soak: Span::from_secs(minutes * 60),
                        }),
                        waves,
                        failure_budget,
                        on_failure: if pause {
                            OnFailure::Pause
                        } else {
                            OnFailure::Rollback
                        },
                        max_parallel,
                        prefetch: false,
                    }
                }),
        )
    }

    fn site_list() -> impl Strategy<Value = Vec<SiteInfo>> {
        prop::collection::vec(any::<bool>(), 0..10).prop_map(|labels| {
            labels
                .into_iter()
                .enumerate()
                .map(|(i, canary)| SiteInfo {
                    name: format!("s{i}"),
                    labels: [("canary".to_owned(), canary.to_string())].into(),
                })
                .collect()
        })
    }

    /// How far along a phase is; phases of one rank other than 0 never turn into each other.
    fn rank_of(p: &Phase) -> u8 {
        match p {
            Phase::Running | Phase::Paused { .. } => 0,
            Phase::Complete | Phase::Aborted => 1,
            Phase::RollingBack { .. } => 2,
            Phase::RolledBack { .. } => 3,
            Phase::Superseded { .. } => 4,
        }
    }

    fn unaccepted_failures(r: &Rollout, wave: &[String]) -> usize {
        wave.iter()
            .filter(|n| {
                matches!(
                    r.sites[*n].state,
                    SiteState::Failed {
                        accepted: false,
                        ..
                    }
                )
            })
            .count()
    }

    fn event_for(r: &Rollout, op: &Op, fresh: &mut usize) -> Event {
        let names: Vec<&String> = r.sites.keys().collect();
        match *op {
            Op::Report {
                site,
                version,
                health,
                connected,
                image,
            } => Event::Report(SiteReport {
                site: names
                    .get(site % names.len().max(1))
                    .map_or_else(|| "ghost".to_owned(), |s| (*s).clone()),
                version: match version {
                    0 => None,
                    1 => Some(OLD.to_owned()),
                    _ => Some(NEW.to_owned()),
                },
                health: match health {
                    0 | 1 => Health::Healthy,
                    2 => Health::Unhealthy {
                        reason: "crash".to_owned(),
                    },
                    _ => Health::Unknown,
                },
                connected,
                image_failed: image.then(|| "pull denied".to_owned()),
            }),
            Op::Tick(_) => Event::Tick,
            Op::Pause => Event::Pause,
            Op::Resume => Event::Resume,
            Op::Abort => Event::Abort,
            Op::Rollback => Event::Rollback {
                reason: "operator".to_owned(),
            },
            Op::Supersede => Event::Supersede {
                by_version: "3.0".to_owned(),
            },
            Op::Change { keep, add } => {
                let mut sites: Vec<SiteInfo> = names
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| keep & (1 << (i % 16)) != 0)
                    .map(|(_, n)| SiteInfo {
                        name: (*n).clone(),
                        labels: BTreeMap::new(),
                    })
                    .collect();
                for _ in 0..add {
                    *fresh += 1;
                    sites.push(SiteInfo {
                        name: format!("n{fresh}"),
                        labels: BTreeMap::new(),
                    });
                }
                Event::SitesChanged { sites }
            }
        }
    }

    /// Checks one step from `prev` to `next` on `event`. `bad` holds every site that ever
    /// reported, connected, the new version unhealthy or an image it could not pull.
    fn check_step(
        prev: &Rollout,
        event: &Event,
        next: &Rollout,
        commands: &[Command],
        bad: &BTreeSet<String>,
    ) -> Result<(), TestCaseError> {
        // Structure: every site in exactly one wave, and at least one wave open.
        let in_waves: Vec<&String> = next.waves.iter().flatten().collect();
        let unique: BTreeSet<&String> = in_waves.iter().copied().collect();
        prop_assert_eq!(in_waves.len(), unique.len());
        prop_assert_eq!(unique, next.sites.keys().collect::<BTreeSet<_>>());
        prop_assert!(next.opened >= 1 && next.opened <= next.waves.len());

        // 1. Never more sites on the new version than the opened waves hold.
        let opened_size: usize = next.waves[..next.opened].iter().map(Vec::len).sum();
        let assigned = assignment(next);
        let new_count = assigned.values().filter(|v| *v == NEW).count();
        prop_assert!(
            new_count <= opened_size,
            "{} sites on the new version, opened waves hold {}",
            new_count,
            opened_size
        );
        if next.canary && next.opened == 1 {
            prop_assert!(new_count <= next.waves[0].len());
        }

        // 2. After a rollback, every site is assigned the old version.
        if matches!(
            next.phase,
            Phase::RollingBack { .. } | Phase::RolledBack { .. }
        ) {
            prop_assert!(next.from_version.is_some(), "rolled back a first version");
            prop_assert_eq!(assigned.len(), next.sites.len());
            prop_assert!(assigned.values().all(|v| v == OLD));
        }

        // 3. Only sites that reported a failure fail, and only they trip a budget.
        for (name, p) in &next.sites {
            if matches!(p.state, SiteState::Failed { .. }) {
                prop_assert!(bad.contains(name), "{} failed without reporting it", name);
            }
        }
        let operator = matches!(event, Event::Pause | Event::Rollback { .. });
        let tripped = matches!(
            (&prev.phase, &next.phase),
            (Phase::Running, Phase::Paused { .. })
                | (
                    Phase::Running | Phase::Paused { .. },
                    Phase::RollingBack { .. } | Phase::RolledBack { .. }
                )
        );
        if tripped && !operator {
            let over = next.waves[..next.opened].iter().any(|w| {
                w.iter().filter(|n| bad.contains(*n)).count() > next.policy.tolerated(w.len())
            });
            prop_assert!(over, "a budget tripped without enough reported failures");
        }

        // 5. Phases only move forward; completion means every connected site succeeded.
        let (a, b) = (rank_of(&prev.phase), rank_of(&next.phase));
        prop_assert!(a <= b, "{:?} -> {:?}", prev.phase, next.phase);
        if a == b && a != 0 {
            prop_assert_eq!(
                std::mem::discriminant(&prev.phase),
                std::mem::discriminant(&next.phase)
            );
        }
        if prev.phase != Phase::Complete && next.phase == Phase::Complete {
            prop_assert_eq!(next.opened, next.waves.len());
            for p in next.sites.values() {
                prop_assert!(
                    matches!(
                        p.state,
                        SiteState::Succeeded { .. }
                            | SiteState::Pending { .. }
                            | SiteState::Failed { .. }
                    ),
                    "complete with {:?}",
                    p.state
                );
            }
            for w in &next.waves {
                prop_assert!(unaccepted_failures(next, w) <= next.policy.tolerated(w.len()));
            }
        }
        if let Phase::Superseded { .. } = prev.phase {
            prop_assert_eq!(prev, next);
        }

        // A wave opens only when every earlier one has settled, with some evidence.
        if next.opened > prev.opened {
            for w in &next.waves[..next.opened - 1] {
                let states: Vec<&SiteState> = w.iter().map(|n| &next.sites[n].state).collect();
                let done = states.iter().all(|s| {
                    matches!(
                        s,
                        SiteState::Succeeded { .. }
                            | SiteState::Failed { .. }
                            | SiteState::Pending { .. }
                    )
                });
                let evidence = w.is_empty()
                    || states
                        .iter()
                        .any(|s| !matches!(s, SiteState::Pending { .. }));
                prop_assert!(done && evidence, "a wave opened before {:?} settled", w);
            }
        }

        // max_parallel: the controller never starts a site beyond the limit.
        let started = next.sites.iter().any(|(n, p)| {
            matches!(p.state, SiteState::Updating { .. })
                && prev
                    .sites
                    .get(n)
                    .is_some_and(|q| q.state == SiteState::Waiting)
        });
        if let (true, Some(_), Some(limit), Phase::Running | Phase::Paused { .. }) = (
            started,
            &next.from_version,
            next.policy.max_parallel,
            &next.phase,
        ) {
            let active = next.sites.values().filter(|p| p.state.is_active()).count();
            prop_assert!(active <= limit.max(1) as usize);
        }

        // Recompile names exactly the sites whose assignment changed.
        let before = assignment(prev);
        let mut changed: BTreeSet<String> = before
            .keys()
            .chain(assigned.keys())
            .filter(|k| before.get(*k) != assigned.get(*k))
            .cloned()
            .collect();
        for c in commands {
            if let Command::Recompile { sites } = c {
                for s in sites {
                    prop_assert!(changed.remove(s), "{} recompiled without a change", s);
                }
            }
        }
        prop_assert!(changed.is_empty(), "not recompiled: {:?}", changed);
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn rollouts_keep_their_invariants(
            sites in site_list(),
            spec in spec(),
            first in prop::bool::weighted(0.15),
            ops in prop::collection::vec(op(), 0..80),
        ) {
            let from = (!first).then_some(OLD);
            let (mut r, commands) = start(DEPLOYMENT, spec.as_ref(), from, NEW, &sites, 0);
            let empty = Rollout { sites: BTreeMap::new(), waves: vec![Vec::new()], ..r.clone() };
            let before_start = Rollout {
                sites: r.sites.keys().map(|n| (n.clone(), SiteProgress { state: SiteState::Waiting, online: true })).collect(),
                waves: r.waves.clone(),
                ..empty
            };
            check_step(&before_start, &Event::Tick, &r, &commands, &BTreeSet::new())?;
            let mut now = 0;
            let mut fresh = 0;
            let mut bad = BTreeSet::new();
            for op in &ops {
                now += match op { Op::Tick(dt) => *dt, _ => 1_000 };
                let event = event_for(&r, op, &mut fresh);
                if let Event::Report(rep) = &event {
                    let unhealthy_new = rep.version.as_deref() == Some(NEW)
                        && matches!(rep.health, Health::Unhealthy { .. });
                    if rep.connected && (unhealthy_new || rep.image_failed.is_some()) {
                        bad.insert(rep.site.clone());
                    }
                }
                // 4. What the store keeps is the whole state: a restart changes nothing.
                let json = serde_json::to_string(&r).unwrap();
                let restored: Rollout = serde_json::from_str(&json).unwrap();
                prop_assert_eq!(&restored, &r);
                let (next, commands) = step(&r, &event, now);
                prop_assert_eq!(step(&restored, &event, now), (next.clone(), commands.clone()));
                check_step(&r, &event, &next, &commands, &bad)?;
                r = next;
            }

            // Heal: every site connects and runs what it is assigned, healthy, for long enough.
            // A live rollout must then complete, and a rollback must finish.
            if let Phase::Paused { .. } = r.phase {
                r = step(&r, &Event::Resume, now).0;
            }
            let rounds = r.sites.len() + r.waves.len() + 2;
            for _ in 0..rounds {
                let names: Vec<String> = r.sites.keys().cloned().collect();
                for name in names {
                    now += 1;
                    let version = r.assigned(&name).map(str::to_owned);
                    let event = Event::Report(SiteReport {
                        site: name,
                        version,
                        health: Health::Healthy,
                        connected: true,
                        image_failed: None,
                    });
                    let (next, commands) = step(&r, &event, now);
                    check_step(&r, &event, &next, &commands, &bad)?;
                    r = next;
                }
                now += r.policy.soak_ms;
                r = step(&r, &Event::Tick, now).0;
            }
            match r.phase {
                Phase::Running | Phase::Paused { .. } => {
                    prop_assert!(false, "stuck in {:?}: {:?}", r.phase, r.sites)
                }
                Phase::RollingBack { .. } => prop_assert!(false, "rollback never finished"),
                Phase::Complete => {
                    let settled = r.sites.values().all(|p| !matches!(
                        p.state,
                        SiteState::Waiting | SiteState::Updating { .. } | SiteState::Soaking { .. }
                    ));
                    prop_assert!(settled, "complete with unsettled sites: {:?}", r.sites);
                }
                _ => {}
            }
        }

        #[test]
        fn plans_cover_every_site_in_cumulative_waves(
            sites in site_list(),
            spec in spec(),
        ) {
            let (r, _) = start(DEPLOYMENT, spec.as_ref(), Some(OLD), NEW, &sites, 0);
            prop_assert_eq!(&r, &start(DEPLOYMENT, spec.as_ref(), Some(OLD), NEW, &sites, 0).0);
            let total = sites.len();
            let mut ends = Vec::new();
            let mut sum = 0;
            for w in &r.waves {
                prop_assert!(!w.is_empty() || total == 0, "empty wave");
                sum += w.len();
                ends.push(sum);
            }
            prop_assert_eq!(sum, total);
            let Some(spec) = spec else {
                prop_assert_eq!(r.waves.len(), 1);
                return Ok(());
            };
            let canary = spec.canary.as_ref().map_or(0, |c| {
                let want = c.sites.of(total);
                let matching = sites
                    .iter()
                    .filter(|s| c.selector.as_ref().is_none_or(|sel| sel.matches(&s.labels)))
                    .count();
                want.min(if matching == 0 { total } else { matching })
            });
            prop_assert_eq!(r.canary, canary > 0);
            if let (true, Some(c)) = (r.canary, &spec.canary) {
                prop_assert_eq!(r.waves[0].len(), canary);
                if let Some(sel) = &c.selector {
                    let labels: BTreeMap<&String, &BTreeMap<String, String>> =
                        sites.iter().map(|s| (&s.name, &s.labels)).collect();
                    let any = sites.iter().any(|s| sel.matches(&s.labels));
                    prop_assert!(!any || r.waves[0].iter().all(|n| sel.matches(labels[n])));
                }
            }
            // Every wave ends at the canary, at a cumulative share, or at all sites.
            let mut allowed = BTreeSet::from([canary, total]);
            let mut prev = canary;
            for share in &spec.waves {
                prev = prev.max(share.of(total));
                allowed.insert(prev);
            }
            for end in ends {
                prop_assert!(allowed.contains(&end), "a wave ends at {}", end);
            }
        }
    }
}
