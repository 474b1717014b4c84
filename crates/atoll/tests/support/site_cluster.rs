//! A three-host site running one application on `support::site_lan`, shared by the site-cluster
//! suites: a control plane on the machine, a `web` service of `replicas: N` and a `probe` on
//! every host, an agent per host, and what a test reads back: each host's containers (id and
//! start time, from its own engine), the roles the hosts report, and the agents' last words.
//!
//! The decision that shaped it: a test asserts on what the hosts' engines run, never on what
//! the agents say they run, so a replica restarted behind a report's back is still caught; and
//! every wait is a condition with a deadline that must also hold for a few seconds, so a site
//! that passes through the right count on its way elsewhere is not taken for settled.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::site_lan::{LanHost, SiteLan};
use super::{ATOLL, ControlPlane, Process, eventually_every, run, tail, unique, unix_ms};

/// How long a site may take to settle (every engine pulling nothing: the image is loaded).
pub const SETTLE: Duration = Duration::from_secs(120);
pub const POLL: Duration = Duration::from_millis(200);
/// How long the counts must hold before a site is taken for settled.
const STABLE: Duration = Duration::from_secs(5);

/// A running container: the index of its host, its id, when it started.
pub type Seen = (usize, String, String);

/// A site's `web` replicas and `probe`s.
pub type Census = (Vec<Seen>, Vec<Seen>);

/// A host as the control plane shows it: its id, the LAN host it is, its role and term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reported {
    pub id: String,
    pub host: Option<usize>,
    pub role: String,
    pub term: u64,
}

/// The site, its application and its agents. Fields drop in order: agents, then the control
/// plane, then the folders, then the LAN's hosts.
pub struct Shop {
    pub agents: Vec<Option<Process>>,
    pub cp: ControlPlane,
    pub site: String,
    id: String,
    image: String,
    agent_args: Vec<String>,
    dirs: Vec<PathBuf>,
    tmp: tempfile::TempDir,
    pub lan: SiteLan,
}

impl Shop {
    /// Three hosts of the new site `PREFIX-ID`, each agent run with `agent_args` beside the
    /// usual ones, the image `image` loaded into every host's engine, and the application
    /// (`web` at `replicas`) applied once the three have formed the site's cluster.
    ///
    /// Two facts of the product shape it. The agents enroll one at a time in host order, each
    /// in a second of its own, so the first host founds the site: the control plane names as
    /// founder the host enrolled first, by an enrollment time kept to the second and then by
    /// host id, so hosts enrolled within one second can each be named founder in turn (the
    /// agents guard against forming two logs then, which this fixture does not test).
    /// And the application comes after: a founder alone runs every replica, and the site's
    /// placement keeps what runs where it runs before it spreads, so replicas placed before the
    /// other hosts joined stay on the founder.
    pub fn start(prefix: &str, image: &str, replicas: u32, agent_args: &[&str]) -> Shop {
        let lan = SiteLan::new(3);
        let tmp = tempfile::tempdir().unwrap();
        let id = unique();
        let cp =
            ControlPlane::start_on(&tmp.path().join("control"), &format!("{}:0", lan.gateway()));
        for host in lan.hosts() {
            let mut load = host.command(ATOLL);
            load.args(["demo", "image", "--tag", image]);
            run(load).ok("atoll demo image, into a host's engine");
        }
        let dirs = (0..3)
            .map(|k| tmp.path().join(format!("agent{k}")))
            .collect();
        let mut shop = Shop {
            agents: (0..3).map(|_| None).collect(),
            cp,
            site: format!("{prefix}-{id}"),
            id,
            image: image.to_owned(),
            agent_args: agent_args.iter().map(|a| (*a).to_owned()).collect(),
            dirs,
            tmp,
            lan,
        };
        shop.cp
            .apply_yaml(
                &shop.tmp.path().join("site.yaml"),
                &format!(
                    "kind: Site\nname: {}\nlabels: {{ run: {} }}\n",
                    shop.site, shop.id
                ),
            )
            .ok("apply the site");
        for k in 0..3 {
            shop.start_agent(k, true);
            shop.enrolled(k);
        }
        shop.one_leader();
        shop.apply("1.0.0", replicas).ok("apply the application");
        shop
    }

    /// Applies the site and the application at `version` with `web` at `replicas` (a version
    /// applied is immutable: other content needs another version).
    pub fn apply(&self, version: &str, replicas: u32) -> super::Out {
        let (site, id, image) = (&self.site, &self.id, &self.image);
        self.cp.apply_yaml(
            &self.tmp.path().join("site.yaml"),
            &format!(
                "kind: Site\nname: {site}\nlabels: {{ run: {id} }}\n---\n\
                 kind: Application\nname: shop-{id}\nversion: {version}\nservices:\n\
                 \x20 - name: web\n    image: {image}\n    args: [demo, tick, --every, 1s]\n    replicas: {replicas}\n\
                 \x20 - name: probe\n    image: {image}\n    args: [demo, tick, --every, 1s]\n    mode: every-host\n\
                 ---\nkind: Deployment\nname: shop-{id}\napplication: shop-{id}\nplacement:\n  sites: run == {id}\n"
            ),
        )
    }

    /// Starts host `k`'s agent from its folder, listening for its peers on the host's address;
    /// enrolled with a new join token when `enroll`, else with no control plane at all.
    pub fn start_agent(&mut self, k: usize, enroll: bool) {
        let host = &self.lan.hosts()[k];
        let mut cmd = host.command(ATOLL);
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&self.dirs[k])
            .args(["--interval", "2s"])
            .args(["--listen-site", &host.address.to_string()])
            .args(&self.agent_args)
            .env("ATOLL_LOG", "info");
        if enroll {
            let (token, _) = self.cp.join_token(&self.site, &[]);
            cmd.args(["--control", &self.cp.url])
                .env("ATOLL_JOIN_TOKEN", token);
        }
        self.agents[k] = Some(Process::spawn(cmd));
    }

    /// Waits until host `k` is enrolled, and then until the second of its enrollment is past.
    #[track_caller]
    fn enrolled(&self, k: usize) {
        let address = self.lan.hosts()[k].address.to_string();
        let at = eventually_every("the host enrolls", SETTLE, POLL, || {
            let out = self
                .cp
                .cli(&["get", "hosts", "--site", &self.site, "-o", "json"]);
            out.json()["items"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|h| {
                    h["inventory"]["site_address"]
                        .as_str()
                        .is_some_and(|a| a.split(':').next() == Some(address.as_str()))
                })
                .and_then(|h| h["enrolled_at"].as_str().map(unix_ms))
                .ok_or_else(|| format!("no host at {address}\n{}", self.logs()))
        });
        let next_second = (at / 1000 + 1) * 1000;
        eventually_every("the second of the enrollment passes", SETTLE, POLL, || {
            (now_ms() >= next_second)
                .then_some(())
                .ok_or_else(|| "waiting".to_owned())
        });
    }

    /// Kills host `k`'s agent with SIGKILL, leaving its engine and containers running.
    pub fn kill_agent(&mut self, k: usize) {
        if let Some(mut agent) = self.agents[k].take() {
            agent.kill9();
        }
    }

    /// Host `k` dies: its agent, its engine and its containers.
    pub fn kill_host(&mut self, k: usize) {
        self.lan.host(k).kill();
        self.kill_agent(k);
    }

    /// Each listed host's running containers of `service`.
    pub fn census(&self, hosts: &[usize], service: &str) -> Vec<Seen> {
        hosts
            .iter()
            .flat_map(|k| {
                running(&self.lan.hosts()[*k], &self.site, service)
                    .into_iter()
                    .map(move |(id, started)| (*k, id, started))
            })
            .collect()
    }

    /// The agents' last words, and any panic they logged.
    pub fn logs(&self) -> String {
        self.agents
            .iter()
            .enumerate()
            .filter_map(|(k, a)| {
                let log = a.as_ref()?.stderr();
                let panics: Vec<&str> = log.lines().filter(|l| l.contains("panicked at")).collect();
                Some(format!(
                    "--- host {k}:\n{}\n{}",
                    panics.join("\n"),
                    tail(&log, 12)
                ))
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Waits until `web` runs exactly `replicas` times spread over the listed hosts (on as many
    /// of them as it can) and `probe` once on each, and stays so for a few seconds; returns
    /// the web replicas and the probes.
    #[track_caller]
    pub fn settled(&self, hosts: &[usize], replicas: usize, what: &str) -> Census {
        let mut stable_since: Option<(Instant, Census)> = None;
        eventually_every(what, SETTLE, POLL, || {
            let web = self.census(hosts, "web");
            let probe = self.census(hosts, "probe");
            let web_hosts: BTreeSet<usize> = web.iter().map(|(k, _, _)| *k).collect();
            let probe_hosts: BTreeSet<usize> = probe.iter().map(|(k, _, _)| *k).collect();
            let good = web.len() == replicas
                && web_hosts.len() == replicas.min(hosts.len())
                && probe.len() == hosts.len()
                && probe_hosts.len() == hosts.len();
            if !good {
                stable_since = None;
                return Err(format!("web {web:?}\nprobe {probe:?}\n{}", self.logs()));
            }
            let seen = (web, probe);
            match &stable_since {
                Some((since, was)) if *was == seen && since.elapsed() >= STABLE => Ok(seen),
                Some((_, was)) if *was == seen => Err("settling".to_owned()),
                _ => {
                    stable_since = Some((Instant::now(), seen));
                    Err("settling".to_owned())
                }
            }
        })
    }

    /// The site's hosts as the control plane shows them, each mapped to its LAN host by the
    /// site address it reports.
    pub fn reported(&self) -> Vec<Reported> {
        let out = self
            .cp
            .cli(&["get", "hosts", "--site", &self.site, "-o", "json"]);
        let hosts = out.json();
        hosts["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                let address = h["inventory"]["site_address"].as_str().unwrap_or("");
                Reported {
                    id: h["id"].as_str().unwrap_or("").to_owned(),
                    host: self
                        .lan
                        .hosts()
                        .iter()
                        .position(|l| address.split(':').next() == Some(&l.address.to_string())),
                    role: h["status"]["cluster"]["role"]
                        .as_str()
                        .unwrap_or("-")
                        .to_owned(),
                    term: h["status"]["cluster"]["term"].as_u64().unwrap_or(0),
                }
            })
            .collect()
    }

    /// Waits until the control plane shows one leader and two followers, every host mapped to
    /// its LAN host; returns them.
    #[track_caller]
    pub fn one_leader(&self) -> Vec<Reported> {
        eventually_every("one leader among the hosts", SETTLE, POLL, || {
            let hosts = self.reported();
            let leaders = hosts.iter().filter(|h| h.role == "leader").count();
            let followers = hosts
                .iter()
                .filter(|h| h.role == "voter" || h.role == "non_voter")
                .count();
            let mapped = hosts.iter().all(|h| h.host.is_some());
            (leaders == 1 && followers == 2 && mapped)
                .then(|| hosts.clone())
                .ok_or_else(|| format!("hosts {hosts:?}"))
        })
    }
}

/// What happened to the site's containers on a host's engine since `since` (Unix time, as
/// `docker events --since` takes it) until now: one line a create, start, kill, die, stop or
/// destroy, with the container's service.
pub fn container_events(host: &LanHost, site: &str, since: &str) -> Vec<String> {
    let until = unix_now();
    let out = host.docker(&[
        "events",
        "--since",
        since,
        "--until",
        &until,
        "--filter",
        "type=container",
        "--filter",
        &format!("label=io.atoll.site={site}"),
        "--format",
        "{{.Action}} {{index .Actor.Attributes \"io.atoll.service\"}} {{.Actor.ID}}",
    ]);
    assert!(out.code == Some(0), "docker events: {}", out.stderr);
    out.stdout
        .lines()
        .filter(|l| {
            let action = l.split(' ').next().unwrap_or("");
            [
                "create", "start", "kill", "die", "stop", "destroy", "restart",
            ]
            .contains(&action)
        })
        .map(str::to_owned)
        .collect()
}

/// Now as Unix time with fractions of a second, as `docker events` takes it.
pub fn unix_now() -> String {
    let now = since_epoch();
    format!("{}.{:09}", now.as_secs(), now.subsec_nanos())
}

fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap()
}

#[allow(clippy::disallowed_methods)] // a test has no clock module to go through
fn since_epoch() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
}

impl Drop for Shop {
    /// A failed test's agents leave their whole logs in the test's target folder, named after
    /// the site: a failure message holds only their last lines.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(&self.site);
        if std::fs::create_dir_all(&dir).is_err() {
            return;
        }
        for (k, agent) in self.agents.iter().enumerate() {
            if let Some(agent) = agent {
                let _ = std::fs::write(dir.join(format!("agent{k}.log")), agent.stderr());
            }
        }
        eprintln!("the agents' logs are in {}", dir.display());
    }
}

/// The running containers of `service` on a host, by id, with when each started; none when its
/// engine is down or unreachable.
pub fn running(host: &LanHost, site: &str, service: &str) -> BTreeMap<String, String> {
    let out = host.docker(&[
        "ps",
        "--no-trunc",
        "--filter",
        &format!("label=io.atoll.site={site}"),
        "--filter",
        &format!("label=io.atoll.service={service}"),
        "--filter",
        "status=running",
        "--format",
        "{{.ID}}",
    ]);
    if out.code != Some(0) {
        return BTreeMap::new();
    }
    out.stdout
        .lines()
        .map(|id| {
            let started = host.docker(&["inspect", "--format", "{{.State.StartedAt}}", id]);
            (id.to_owned(), started.stdout.trim().to_owned())
        })
        .collect()
}
