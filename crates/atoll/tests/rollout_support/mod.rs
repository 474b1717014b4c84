//! Helpers for the rollout end-to-end tests (`tests/rollout.rs`): a fleet of sites, each with
//! its own `atoll agent` process, one real control plane, the local Docker Engine, and a
//! sampler that watches Docker and the rollout view side by side. What is not about rollouts
//! (processes, the control plane, agents, Docker, the cleanup guard) is in `tests/support`.
//!
//! Every fleet owns unique site names, its temporary folders and its ports; a guard kills its
//! processes and removes every container labelled with its sites however the test ends. Waits
//! poll a condition until a deadline; nothing sleeps for a fixed time.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use atoll_api::agent::{AppStatus, RolloutView};

use crate::support::{
    Cleanup, ControlPlane, Out, Process, agent_command, connected, demo_image, docker, docker_ps,
    eventually_every, require_docker, tail, unique, unix_ms,
};

/// The demo image, imported once per test run from the binary under test; a tag of its own so
/// that other test files importing theirs at the same time do not race with this one.
pub const IMAGE: &str = "atoll.local/demo:e2e-rollout";
/// How often a sampler or a wait looks again.
pub const POLL: Duration = Duration::from_millis(200);

// ---------------------------------------------------------------------------------------------
// Docker

/// One container of a deployment, as `docker ps -a` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ctr {
    pub id: String,
    /// `created`, `running`, `exited`, ...
    pub state: String,
    pub version: String,
}

/// Every container of a deployment at one moment, by site.
#[derive(Debug, Clone)]
pub struct DockerSnap {
    pub sites: BTreeMap<String, Vec<Ctr>>,
}

impl DockerSnap {
    /// Sites with a container of `version` in any state: sites that were given it.
    pub fn sites_with(&self, version: &str) -> BTreeSet<String> {
        self.sites
            .iter()
            .filter(|(_, cs)| cs.iter().any(|c| c.version == version))
            .map(|(s, _)| s.clone())
            .collect()
    }

    /// The versions of the running containers of `site`.
    pub fn running(&self, site: &str) -> BTreeSet<String> {
        self.sites
            .get(site)
            .into_iter()
            .flatten()
            .filter(|c| c.state == "running")
            .map(|c| c.version.clone())
            .collect()
    }

    /// `site version/state ...`, one site a line, for messages.
    pub fn describe(&self) -> String {
        self.sites
            .iter()
            .map(|(s, cs)| {
                let cs: Vec<String> = cs
                    .iter()
                    .map(|c| format!("{}/{}", c.version, c.state))
                    .collect();
                format!("  {s}: {}", cs.join(" "))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `docker ps -a --filter label=io.atoll.deployment=D`: every container of the deployment, by
/// its `io.atoll.site` label.
pub fn docker_snap(deployment: &str) -> DockerSnap {
    let lines = docker_ps(
        &format!("io.atoll.deployment={deployment}"),
        "{{.ID}} {{.State}} {{.Label \"io.atoll.site\"}} {{.Label \"io.atoll.version\"}}",
    );
    let mut sites: BTreeMap<String, Vec<Ctr>> = BTreeMap::new();
    for line in &lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        let [id, state, site, version] = cells[..] else {
            panic!("unexpected `docker ps` line {line:?}");
        };
        sites.entry(site.to_owned()).or_default().push(Ctr {
            id: id.to_owned(),
            state: state.to_owned(),
            version: version.to_owned(),
        });
    }
    DockerSnap { sites }
}

/// When Docker created a container, in milliseconds since the epoch.
pub fn created_ms(id: &str) -> Option<u64> {
    let out = docker(&[
        "inspect",
        "--type",
        "container",
        "--format",
        "{{.Created}}",
        id,
    ]);
    (out.code == Some(0)).then(|| unix_ms(out.stdout.trim()))
}

// ---------------------------------------------------------------------------------------------
// Names

/// The order in which a rollout of `deployment` takes `sites`, as the rollout module
/// documents it: by a stable hash of (deployment, site), SHA-256 over `deployment`, a zero byte
/// and `site`, its first 8 bytes big-endian; ties by name.
pub fn rollout_order(deployment: &str, sites: &[String]) -> Vec<String> {
    let rank = |site: &str| {
        let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
        ctx.update(deployment.as_bytes());
        ctx.update(&[0]);
        ctx.update(site.as_bytes());
        let digest = ctx.finish();
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest.as_ref()[..8]);
        u64::from_be_bytes(first)
    };
    let mut order = sites.to_vec();
    order.sort_by_cached_key(|s| (rank(s), s.clone()));
    order
}

// ---------------------------------------------------------------------------------------------
// Waiting

/// Polls `check`, pausing [`POLL`] after each look, until it returns `Ok`; past `deadline`,
/// fails with `what` and the last `Err`.
#[track_caller]
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    check: impl FnMut() -> Result<T, String>,
) -> T {
    eventually_every(what, deadline, POLL, check)
}

// ---------------------------------------------------------------------------------------------
// Resources

/// The rollout strategy of the tests: a one-site canary soaking `soak`, waves of 25%, 50% and
/// 100%, no failure tolerated, roll back on failure, at most `max_parallel` sites at once.
#[derive(Debug, Clone)]
pub struct Strategy {
    pub soak: &'static str,
    pub max_parallel: Option<u32>,
}

/// The one-service application `app` at `version`, whose HTTP health check asks for
/// `health_path` (`/healthz` passes, anything else is a 404), and its deployment on the sites
/// labelled `run: RUN`.
pub fn app_yaml(
    app: &str,
    deployment: &str,
    run: &str,
    version: &str,
    health_path: &str,
    strategy: &Strategy,
) -> String {
    let max_parallel = strategy
        .max_parallel
        .map(|n| format!("\n  max_parallel: {n}"))
        .unwrap_or_default();
    format!(
        "kind: Application
name: {app}
version: \"{version}\"
description: the demo web server, for rollout tests
services:
  - name: web
    image: {IMAGE}
    args: [demo, serve, --listen, \"0.0.0.0:8080\"]
    env:
      RELEASE: \"{version}\"
    health:
      http: {{ port: 8080, path: {health_path} }}
      interval: 1s
      failures: 2
---
kind: Deployment
name: {deployment}
application: {app}
placement:
  sites: \"run == {run}\"
rollout:
  canary: {{ sites: 1, soak: {soak} }}
  waves: [\"25%\", \"50%\", \"100%\"]
  failure_budget: 0
  on_failure: rollback{max_parallel}
",
        soak = strategy.soak,
    )
}

// ---------------------------------------------------------------------------------------------
// The fleet: a control plane, N sites each with its agent process, and the cleanup guard

/// Fields drop in order: the agents first (so they recreate nothing), then the control plane,
/// then the guard removes the containers, and last the folders go.
#[derive(Debug)]
pub struct Fleet {
    agents: BTreeMap<String, Option<Process>>,
    cp: Option<ControlPlane>,
    cleanup: Cleanup,
    /// Unique to this fleet; every name below starts with it.
    pub tag: String,
    pub sites: Vec<String>,
    pub app: String,
    pub deployment: String,
    /// The `run` label that the deployment selects.
    pub run: String,
    pub started: Instant,
    tmp: tempfile::TempDir,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        // Kill the agents before anything else, so none recreates a container the guard
        // removes, and say what they logged when the test failed.
        let panicking = thread::panicking();
        if panicking && let Some(cp) = &self.cp {
            eprintln!(
                "--- control plane stderr (tail):\n{}",
                tail(&cp.stderr(), 60)
            );
        }
        for (site, agent) in &mut self.agents {
            if let Some(mut agent) = agent.take() {
                agent.kill9();
                if panicking {
                    let log = tail(&agent.stderr(), 8);
                    if !log.is_empty() {
                        eprintln!("--- agent of {site} stderr (tail):\n{log}");
                    }
                }
            }
        }
        if let Some(mut cp) = self.cp.take() {
            cp.kill9();
        }
    }
}

impl Fleet {
    /// Docker checked, the demo image made, a control plane started, `n` sites applied, each
    /// with an agent enrolled and connected.
    pub fn start(n: usize) -> Fleet {
        require_docker();
        demo_image(IMAGE);
        // Starts with a letter: a DNS-label-safe prefix for names.
        let tag = format!("r{}", unique());
        let sites: Vec<String> = (1..=n).map(|i| format!("{tag}-s{i:02}")).collect();
        let tmp = tempfile::tempdir().unwrap();
        let cleanup = Cleanup::new(sites.iter().cloned());
        let cp = ControlPlane::start(&tmp.path().join("data"));
        let mut fleet = Fleet {
            agents: BTreeMap::new(),
            cp: Some(cp),
            cleanup,
            app: format!("{tag}-app"),
            deployment: format!("{tag}-web"),
            run: format!("{tag}-run"),
            sites,
            tag,
            started: Instant::now(),
            tmp,
        };
        let yaml: String = fleet
            .sites
            .iter()
            .map(|s| {
                format!(
                    "kind: Site\nname: {s}\ndescription: a rollout test site\nlabels: {{ run: {} }}\n---\n",
                    fleet.run
                )
            })
            .collect();
        fleet.apply("sites.yaml", &yaml);
        let url = fleet.cp().url.clone();
        for site in fleet.sites.clone() {
            let (token, _) = fleet.cp().join_token(&site, &[]);
            fleet.start_agent(&site, Some((&url, &token)));
        }
        fleet.wait_connected(Duration::from_secs(60));
        fleet
    }

    pub fn cp(&self) -> &ControlPlane {
        self.cp.as_ref().expect("the control plane is stopped")
    }

    pub fn cli(&self, args: &[&str]) -> Out {
        self.cp().cli(args)
    }

    fn agent_dir(&self, site: &str) -> PathBuf {
        self.tmp.path().join("agents").join(site)
    }

    /// Starts `site`'s agent (again); it needs `--control` and `--token` only to enroll.
    pub fn start_agent(&mut self, site: &str, enroll: Option<(&str, &str)>) {
        assert!(
            self.agents.get(site).is_none_or(Option::is_none),
            "the agent of {site} already runs"
        );
        let cmd = agent_command(self.tmp.path(), &self.agent_dir(site), "warn", enroll);
        self.agents
            .insert(site.to_owned(), Some(Process::spawn(cmd)));
    }

    /// Sends `signal` (`STOP`, `CONT`) to `site`'s agent: a stopped agent keeps its
    /// containers running but says nothing, as a host that hangs or a process far into its
    /// reconnection backoff would.
    pub fn signal_agent(&self, site: &str, signal: &str) {
        self.agents
            .get(site)
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("the agent of {site} does not run"))
            .signal(signal);
    }

    /// SIGKILL of `site`'s agent, as a power cut would.
    pub fn kill_agent(&mut self, site: &str) {
        let mut agent = self
            .agents
            .get_mut(site)
            .and_then(Option::take)
            .unwrap_or_else(|| panic!("the agent of {site} does not run"));
        agent.kill9();
    }

    /// SIGKILL of the control plane; its address, for [`Fleet::restart_control_plane`].
    pub fn kill_control_plane(&mut self) -> String {
        self.cp.take().expect("the control plane runs").crash()
    }

    /// Starts the control plane again on its data folder, at the address its agents know.
    pub fn restart_control_plane(&mut self, address: &str) {
        assert!(self.cp.is_none(), "the control plane runs");
        self.cp = Some(ControlPlane::restart(
            &self.tmp.path().join("data"),
            address,
        ));
    }

    #[track_caller]
    pub fn apply(&self, file: &str, yaml: &str) -> Out {
        self.cp().apply_yaml(&self.tmp.path().join(file), yaml)
    }

    /// Applies the application at `version` (health path `health_path`) and the deployment.
    #[track_caller]
    pub fn deploy(&self, version: &str, health_path: &str, strategy: &Strategy) -> Out {
        let yaml = app_yaml(
            &self.app,
            &self.deployment,
            &self.run,
            version,
            health_path,
            strategy,
        );
        self.apply(&format!("app-{version}.yaml"), &yaml)
    }

    /// Waits until `get sites` shows every site of the fleet connected with one host.
    #[track_caller]
    pub fn wait_connected(&self, deadline: Duration) {
        eventually("every site connected", deadline, || {
            let items = self.cp().sites()?;
            let missing: Vec<&String> = self
                .sites
                .iter()
                .filter(|s| {
                    !items
                        .iter()
                        .any(|i| i["resource"]["name"] == s.as_str() && connected(i))
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("not connected: {missing:?}"))
            }
        });
    }

    /// `atoll rollout status D -o json`, parsed; `Err` with what was said when it fails.
    pub fn view(&self) -> Result<RolloutView, String> {
        let Some(cp) = &self.cp else {
            return Err("the control plane is stopped".into());
        };
        let out = cp.cli(&["rollout", "status", &self.deployment, "-o", "json"]);
        if out.code != Some(0) {
            return Err(format!(
                "rollout status exited {:?}: {}{}",
                out.code, out.stdout, out.stderr
            ));
        }
        serde_json::from_str(&out.stdout).map_err(|e| {
            format!(
                "rollout status -o json is not a RolloutView ({e}):\n{}",
                out.stdout
            )
        })
    }

    /// The view, which must be available.
    #[track_caller]
    pub fn view_ok(&self) -> RolloutView {
        self.view().unwrap_or_else(|e| panic!("{e}"))
    }

    /// `atoll status APP -o json`, parsed.
    pub fn status(&self) -> Result<AppStatus, String> {
        let out = self.cli(&["status", &self.app, "-o", "json"]);
        if out.code != Some(0) {
            return Err(format!("atoll status: {}{}", out.stdout, out.stderr));
        }
        serde_json::from_str(&out.stdout)
            .map_err(|e| format!("status -o json is not an AppStatus ({e}):\n{}", out.stdout))
    }

    /// `atoll rollout history D`: every rollout of the deployment, as text.
    pub fn history_text(&self) -> Out {
        self.cli(&["rollout", "history", &self.deployment])
    }

    /// Ok when `atoll status` shows every site with its `web` replica running `version` and
    /// healthy, and Docker shows exactly one running container of `version` at each site.
    pub fn all_on(&self, version: &str) -> Result<(), String> {
        let status = self.status()?;
        let mut wrong = Vec::new();
        for site in &self.sites {
            let Some(s) = status.sites.iter().find(|s| &s.site == site) else {
                wrong.push(format!("{site}: not in atoll status"));
                continue;
            };
            let replicas = s.services.get("web").map(Vec::as_slice).unwrap_or_default();
            let fine = s.version == version
                && replicas.len() == 1
                && replicas.iter().all(|r| {
                    r.status.state == atoll_api::agent::ReplicaState::Running
                        && r.status.version.as_deref() == Some(version)
                        && r.status.health == Some(atoll_api::agent::ReplicaHealth::Healthy)
                });
            if !fine {
                wrong.push(format!(
                    "{site}: version {} replicas {}",
                    s.version,
                    serde_json::to_string(&replicas).unwrap()
                ));
            }
        }
        let snap = docker_snap(&self.deployment);
        for site in &self.sites {
            let cs = snap.sites.get(site).map(Vec::as_slice).unwrap_or_default();
            if cs.len() != 1 || cs[0].state != "running" || cs[0].version != version {
                wrong.push(format!("{site}: docker shows {cs:?}"));
            }
        }
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(wrong.join("\n"))
        }
    }

    /// Deploys the first version and waits until every site runs it, healthy.
    #[track_caller]
    pub fn first_version(&self, version: &str, strategy: &Strategy, deadline: Duration) {
        let out = self.deploy(version, "/healthz", strategy);
        assert!(
            out.stdout.contains(&format!(
                "application/{} created (version {version})",
                self.app
            )),
            "{}",
            out.stdout
        );
        eventually(
            &format!("every site runs {version}, healthy"),
            deadline,
            || self.all_on(version),
        );
    }

    /// The agent's stderr, for messages.
    pub fn agent_log(&self, site: &str) -> String {
        self.agents
            .get(site)
            .and_then(Option::as_ref)
            .map(Process::stderr)
            .unwrap_or_default()
    }

    /// Time since the fleet started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

// ---------------------------------------------------------------------------------------------
// Views

/// Small questions about a rollout view.
pub trait ViewExt {
    fn state_of(&self, site: &str) -> Option<&str>;
    fn wave_of(&self, site: &str) -> Option<usize>;
    fn sites_in_open_waves(&self) -> BTreeSet<String>;
    fn in_states(&self, states: &[&str]) -> BTreeSet<String>;
    fn assigned(&self, version: &str) -> BTreeSet<String>;
    fn assignment(&self) -> BTreeMap<String, Option<String>>;
    fn opened(&self) -> usize;
    fn describe(&self) -> String;
}

impl ViewExt for RolloutView {
    fn state_of(&self, site: &str) -> Option<&str> {
        self.waves
            .iter()
            .flat_map(|w| &w.sites)
            .find(|s| s.site == site)
            .map(|s| s.state.as_str())
    }

    fn wave_of(&self, site: &str) -> Option<usize> {
        self.waves
            .iter()
            .find(|w| w.sites.iter().any(|s| s.site == site))
            .map(|w| w.index)
    }

    fn sites_in_open_waves(&self) -> BTreeSet<String> {
        self.waves
            .iter()
            .filter(|w| w.open)
            .flat_map(|w| w.sites.iter().map(|s| s.site.clone()))
            .collect()
    }

    fn in_states(&self, states: &[&str]) -> BTreeSet<String> {
        self.waves
            .iter()
            .flat_map(|w| &w.sites)
            .filter(|s| states.contains(&s.state.as_str()))
            .map(|s| s.site.clone())
            .collect()
    }

    fn assigned(&self, version: &str) -> BTreeSet<String> {
        self.waves
            .iter()
            .flat_map(|w| &w.sites)
            .filter(|s| s.version.as_deref() == Some(version))
            .map(|s| s.site.clone())
            .collect()
    }

    fn assignment(&self) -> BTreeMap<String, Option<String>> {
        self.waves
            .iter()
            .flat_map(|w| &w.sites)
            .map(|s| (s.site.clone(), s.version.clone()))
            .collect()
    }

    fn opened(&self) -> usize {
        self.waves.iter().filter(|w| w.open).count()
    }

    /// The phase, each wave's sites and states, and the history.
    fn describe(&self) -> String {
        let mut text = format!(
            "{} {} → {}: {}{}\n",
            self.deployment,
            self.from_version.as_deref().unwrap_or("(none)"),
            self.to_version,
            self.phase,
            self.reason
                .as_deref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
        for w in &self.waves {
            let sites: Vec<String> = w
                .sites
                .iter()
                .map(|s| {
                    format!(
                        "{}={}@{}",
                        s.site,
                        s.state,
                        s.version.as_deref().unwrap_or("-")
                    )
                })
                .collect();
            text.push_str(&format!(
                "  wave {}{}{}: {}\n",
                w.index,
                if w.canary { " (canary)" } else { "" },
                if w.open { " open" } else { "" },
                sites.join(" ")
            ));
        }
        for n in &self.history {
            text.push_str(&format!("  {} {}\n", n.at, n.text));
        }
        text
    }
}

// ---------------------------------------------------------------------------------------------
// Sampling

/// One look at the fleet: Docker first, then the rollout view, so that the view is never older
/// than the containers it is compared with.
#[derive(Debug, Clone)]
pub struct Sample {
    pub since_start: Duration,
    pub docker: DockerSnap,
    /// `None` while the control plane is down or does not answer.
    pub view: Option<RolloutView>,
}

/// Looks at the fleet every [`POLL`], checks invariants at every sample, and keeps the samples
/// for checks made at the end.
#[derive(Debug, Default)]
pub struct Sampler {
    pub samples: Vec<Sample>,
    /// Samples whose Docker listing has not been checked against a view yet (the control
    /// plane was down): they are checked against the next view, which can only be newer.
    unchecked: Vec<usize>,
    /// First time each (site, version) was seen in Docker, and the container then seen.
    pub first_seen: BTreeMap<(String, String), (Duration, String)>,
}

impl Sampler {
    /// Takes one sample, then calls `invariant(docker, view)` for every Docker listing not yet
    /// checked, with the first view taken at or after it; panics on the first violation with
    /// the whole picture.
    #[track_caller]
    pub fn sample(
        &mut self,
        fleet: &Fleet,
        invariant: &mut dyn FnMut(&DockerSnap, &RolloutView) -> Result<(), String>,
    ) -> &Sample {
        let docker = docker_snap(&fleet.deployment);
        let since_start = fleet.elapsed();
        for (site, cs) in &docker.sites {
            for c in cs {
                self.first_seen
                    .entry((site.clone(), c.version.clone()))
                    .or_insert_with(|| (since_start, c.id.clone()));
            }
        }
        let view = fleet.view().ok();
        self.samples.push(Sample {
            since_start,
            docker,
            view,
        });
        let index = self.samples.len() - 1;
        self.unchecked.push(index);
        if let Some(view) = &self.samples[index].view {
            for i in std::mem::take(&mut self.unchecked) {
                let docker = &self.samples[i].docker;
                if let Err(why) = invariant(docker, view) {
                    panic!(
                        "invariant broken at {:?} (sample {i} of {}): {why}\n--- docker:\n{}\n--- \
                         the next rollout view:\n{}",
                        self.samples[i].since_start,
                        self.samples.len(),
                        docker.describe(),
                        view.describe()
                    );
                }
            }
        }
        &self.samples[index]
    }

    /// Samples every [`POLL`], checking `invariant`, until `done` says `Ok` for a sample;
    /// past `deadline`, fails with `what` and the last sample.
    #[track_caller]
    pub fn until<T>(
        &mut self,
        fleet: &Fleet,
        what: &str,
        deadline: Duration,
        invariant: &mut dyn FnMut(&DockerSnap, &RolloutView) -> Result<(), String>,
        mut done: impl FnMut(&Sample) -> Result<T, String>,
    ) -> T {
        let start = Instant::now();
        loop {
            let round = Instant::now();
            let sample = self.sample(fleet, invariant);
            match done(sample) {
                Ok(v) => return v,
                Err(seen) if start.elapsed() >= deadline => panic!(
                    "{what}: not within {deadline:?}; last seen: {seen}\n--- docker:\n{}\n--- \
                     view:\n{}",
                    sample.docker.describe(),
                    sample
                        .view
                        .as_ref()
                        .map_or("(none)".to_owned(), ViewExt::describe)
                ),
                Err(_) => thread::sleep(POLL.saturating_sub(round.elapsed())),
            }
        }
    }

    /// How many samples had a view.
    pub fn views(&self) -> usize {
        self.samples.iter().filter(|s| s.view.is_some()).count()
    }
}

/// `done` for [`Sampler::until`]: the view's phase is `phase`.
pub fn phase_is(phase: &str) -> impl FnMut(&Sample) -> Result<RolloutView, String> + '_ {
    move |s| match &s.view {
        Some(v) if v.phase == phase => Ok(v.clone()),
        Some(v) => Err(format!("phase {}", v.phase)),
        None => Err("no view".into()),
    }
}

/// An invariant that holds always.
pub fn nothing(_: &DockerSnap, _: &RolloutView) -> Result<(), String> {
    Ok(())
}
