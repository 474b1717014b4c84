//! End-to-end tests of the edge agent: the real `atoll` binary as the control plane and as the
//! agent (separate processes), real TLS, and the local Docker Engine running containers of an
//! image made of this very binary (`atoll demo image`), so nothing is pulled from a registry.
//!
//! Each test owns a site with a unique name, its own control plane, folders and ports, and a
//! guard that removes every container labelled with its site (and any container it made
//! itself) however the test ends. Waits poll a condition until a deadline; nothing sleeps for a
//! fixed time. Without a reachable Docker Engine every test fails, saying so.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{
    Cleanup, ControlPlane, Out, Process, connected, demo_image, docker, docker_ok, docker_ps,
    eventually_every, require_docker, tail, unique, unix_ms,
};

/// The demo image, built once per test run from the binary under test.
const IMAGE: &str = "atoll.local/demo:e2e";
const APP: &str = "demo";
const DEPLOYMENT: &str = "demo-e2e";
/// Where the web service's rendered file is mounted.
const CONFIG_PATH: &str = "/etc/demo/config.toml";
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

// ---------------------------------------------------------------------------------------------
// Docker

/// A container as `docker inspect` describes it.
#[derive(Debug, Clone)]
struct Ctr {
    id: String,
    name: String,
    running: bool,
    started_at: String,
    env: Vec<String>,
    labels: BTreeMap<String, String>,
    raw: Value,
}

impl Ctr {
    fn from_inspect(v: &Value) -> Ctr {
        Ctr {
            id: v["Id"].as_str().unwrap_or_default().to_owned(),
            name: v["Name"]
                .as_str()
                .unwrap_or_default()
                .trim_start_matches('/')
                .to_owned(),
            running: v["State"]["Running"].as_bool().unwrap_or(false),
            started_at: v["State"]["StartedAt"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            env: v["Config"]["Env"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            labels: v["Config"]["Labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            raw: v.clone(),
        }
    }

    fn managed(&self) -> bool {
        self.labels.get("io.atoll.managed").map(String::as_str) == Some("true")
    }

    fn label(&self, key: &str) -> &str {
        self.labels.get(key).map_or("", String::as_str)
    }

    /// Identity and start time: what "untouched" means.
    fn fingerprint(&self) -> (String, String, bool) {
        (self.id.clone(), self.started_at.clone(), self.running)
    }
}

/// The container with this id or name, if it exists.
fn inspect(id: &str) -> Option<Ctr> {
    let out = docker(&["inspect", "--type", "container", id]);
    if out.code != Some(0) {
        return None;
    }
    let v: Value = serde_json::from_str(&out.stdout).ok()?;
    v.as_array()?.first().map(Ctr::from_inspect)
}

/// Every container labelled `io.atoll.site=SITE`, managed or not, by name.
fn site_containers(site: &str) -> BTreeMap<String, Ctr> {
    docker_ps(&format!("io.atoll.site={site}"), "{{.ID}}")
        .iter()
        // A container removed between the listing and its inspection is simply not listed.
        .filter_map(|id| inspect(id))
        .map(|c| (c.name.clone(), c))
        .collect()
}

/// The containers the agent manages for `site`, by name.
fn managed(site: &str) -> BTreeMap<String, Ctr> {
    site_containers(site)
        .into_iter()
        .filter(|(_, c)| c.managed())
        .collect()
}

/// `docker run -d` of the demo image running `demo tick`, with extra `docker run` options.
fn run_foreign(name: &str, options: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(options);
    args.extend_from_slice(&[IMAGE, "demo", "tick", "--every", "1s"]);
    docker_ok(&args)
}

// ---------------------------------------------------------------------------------------------
// Waiting and small utilities

/// Polls `check` every [`POLL`] until it returns `Ok`, and returns that value. Past `deadline`,
/// fails with `what` and the last `Err` (a description of what was seen instead).
#[track_caller]
fn eventually<T>(what: &str, deadline: Duration, check: impl FnMut() -> Result<T, String>) -> T {
    eventually_every(what, deadline, POLL, check)
}

fn figure(name: &str, value: Duration) {
    println!("FIGURE {name}: {:.3} s", value.as_secs_f64());
}

/// The wall clock, in seconds: what a join token's expiry is compared with.
#[allow(clippy::disallowed_methods)] // a test has no clock module to go through
fn now_unix() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// The reports waiting in an agent's outbox, oldest first (the batches, named by their
/// sequence numbers; not the held repeats of [`held`]).
fn outbox(agent_dir: &Path) -> Vec<Value> {
    let Ok(entries) = std::fs::read_dir(agent_dir.join("outbox")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|n| {
            n.strip_suffix(".json")
                .is_some_and(|seq| seq.parse::<u64>().is_ok())
        })
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|n| {
            let bytes = std::fs::read(agent_dir.join("outbox").join(n)).ok()?;
            let mut report: Value = serde_json::from_slice(&bytes).ok()?;
            // A batch's number is its file's name: a renumbered batch, or the held repeats
            // queued by renaming their file, was only renamed.
            report["seq"] = json!(n.trim_end_matches(".json").parse::<u64>().ok()?);
            Some(report)
        })
        .collect()
}

/// The repeats of events the agent holds, folded, until their window ends (`folded.json`).
fn held(agent_dir: &Path) -> Vec<Value> {
    std::fs::read(agent_dir.join("outbox").join("folded.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .into_iter()
        .collect()
}

/// The batches waiting in the outbox and the repeats held beside them, read so that held
/// repeats queued (renamed into a batch) while reading are counted once.
fn queued(agent_dir: &Path) -> (Vec<Value>, Vec<Value>) {
    loop {
        let before = held(agent_dir);
        let batches = outbox(agent_dir);
        if held(agent_dir) == before {
            return (batches, before);
        }
    }
}

/// How many times `message` happened in `reports` (an event folded by the agent counts as
/// often as its `count` says).
fn occurrences(reports: &[Value], message: &str) -> u64 {
    reports
        .iter()
        .flat_map(|r| r["events"].as_array().cloned().unwrap_or_default())
        .filter(|e| e["message"] == message)
        .map(|e| e["count"].as_u64().unwrap_or(1))
        .sum()
}

/// How many times `message` happened in the control plane's `events`: a folded event is
/// stored as `MESSAGE (N times)`.
fn stored_occurrences(events: &[Value], message: &str) -> u64 {
    events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter_map(|m| {
            if m == message {
                return Some(1);
            }
            m.strip_prefix(message)?
                .strip_prefix(" (")?
                .strip_suffix(" times)")?
                .parse()
                .ok()
        })
        .sum()
}

/// `(seq, kind, message)` of every event in `reports`, the message as the control plane
/// stores it.
fn events_of(reports: &[Value]) -> Vec<(u64, String, String)> {
    reports
        .iter()
        .flat_map(|r| {
            let seq = r["seq"].as_u64().unwrap_or(0);
            r["events"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |e| {
                    let message = e["message"].as_str().unwrap_or_default();
                    (
                        seq,
                        e["kind"].as_str().unwrap_or_default().to_owned(),
                        match e["count"].as_u64() {
                            Some(n) => format!("{message} ({n} times)"),
                            None => message.to_owned(),
                        },
                    )
                })
        })
        .collect()
}

/// The first `n` characters of a container id, as the agent's events show it.
fn short(id: &str) -> &str {
    &id[..12]
}

// ---------------------------------------------------------------------------------------------
// Resources

fn site_yaml(site: &str, run: &str) -> String {
    "kind: Site
name: @SITE@
description: an end-to-end test site
labels: { run: @RUN@, store_id: \"0042\", region: eu-west }
variables: { greeting: Hello from @SITE@, currency: EUR }
"
    .replace("@SITE@", site)
    .replace("@RUN@", run)
}

/// The two-service application at `version`, with `release` in both services' environment (so
/// that a new release changes both containers), and its deployment on the sites labelled
/// `run: RUN`.
fn app_yaml(version: &str, release: &str, run: &str) -> String {
    "kind: Application
name: @APP@
version: \"@VERSION@\"
description: a web service showing its per-site configuration, and a worker
services:
  - name: web
    image: @IMAGE@
    args: [demo, serve, --listen, \"0.0.0.0:8080\", --show, @CONFIG@]
    env:
      GREETING: \"{{ site.variables.greeting }}\"
      STORE_ID: \"{{ site.labels.store_id }}\"
      RELEASE: \"@RELEASE@\"
    files:
      - path: @CONFIG@
        template: |
          site = \"{{ site.name }}\"
          region = \"{{ site.labels.region }}\"
          currency = \"{{ site.variables.currency }}\"
  - name: worker
    image: @IMAGE@
    args: [demo, tick, --every, 1s]
    env:
      RELEASE: \"@RELEASE@\"
---
kind: Deployment
name: @DEPLOYMENT@
application: @APP@
placement:
  sites: \"run == @RUN@\"
"
    .replace("@APP@", APP)
    .replace("@VERSION@", version)
    .replace("@IMAGE@", IMAGE)
    .replace("@CONFIG@", CONFIG_PATH)
    .replace("@RELEASE@", release)
    .replace("@DEPLOYMENT@", DEPLOYMENT)
    .replace("@RUN@", run)
}

// ---------------------------------------------------------------------------------------------
// The fixture: a control plane, a site, its agent, and the cleanup guard

/// Fields drop in order: the agent first (so it recreates nothing), then the control plane, then
/// the guard removes the containers, and last the folders go.
#[derive(Debug)]
struct Fixture {
    agent: Option<Process>,
    cp: Option<ControlPlane>,
    cleanup: Cleanup,
    /// Unique to this test: the site is `e2e-ID`, its `run` label `run-ID`.
    id: String,
    site: String,
    run: String,
    /// The one-use join token the agent enrolled with.
    join_token: String,
    tmp: tempfile::TempDir,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if thread::panicking() {
            if let Some(agent) = &self.agent {
                eprintln!("--- agent stderr (tail):\n{}", tail(&agent.stderr(), 80));
            }
            if let Some(cp) = &self.cp {
                eprintln!(
                    "--- control plane stderr (tail):\n{}",
                    tail(&cp.stderr(), 80)
                );
            }
        }
    }
}

impl Fixture {
    /// Docker checked, the demo image built, a control plane started; no site yet.
    fn new() -> Fixture {
        require_docker();
        demo_image(IMAGE);
        let tmp = tempfile::tempdir().unwrap();
        let id = unique();
        let site = format!("e2e-{id}");
        let cleanup = Cleanup::new([site.clone()]);
        let cp = ControlPlane::start(&tmp.path().join("data"));
        Fixture {
            agent: None,
            cp: Some(cp),
            cleanup,
            run: format!("run-{id}"),
            join_token: String::new(),
            id,
            site,
            tmp,
        }
    }

    fn cp(&self) -> &ControlPlane {
        self.cp.as_ref().expect("the control plane is stopped")
    }

    fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }

    fn agent_dir(&self) -> PathBuf {
        self.tmp.path().join("agent")
    }

    fn name(&self, service: &str) -> String {
        format!("atoll_{}_{DEPLOYMENT}_{service}_0", self.site)
    }

    #[track_caller]
    fn apply(&self, file: &str, yaml: &str) -> Out {
        self.cp().apply_yaml(&self.tmp.path().join(file), yaml)
    }

    /// `atoll token create --site SITE ARGS...`: the token, and what was said on stderr.
    #[track_caller]
    fn token(&self, site: &str, args: &[&str]) -> (String, String) {
        self.cp().join_token(site, args)
    }

    /// `atoll agent --data-dir DIR --interval 2s`, enrolling with `--control` and `--token`
    /// when given.
    fn agent_command(&self, dir: &Path, enroll: Option<(&str, &str)>) -> Command {
        support::agent_command(self.tmp.path(), dir, "info", enroll)
    }

    /// Starts this site's agent (again): it needs only its data folder once enrolled.
    fn start_agent(&mut self, enroll: Option<(&str, &str)>) {
        assert!(self.agent.is_none(), "the agent already runs");
        let cmd = self.agent_command(&self.agent_dir(), enroll);
        self.agent = Some(Process::spawn(cmd));
    }

    /// SIGKILL, as a power cut would.
    fn kill_agent(&mut self) {
        if let Some(mut agent) = self.agent.take() {
            agent.kill9();
        }
    }

    /// Applies the site, creates a join token, starts the agent with it and waits until the
    /// control plane shows the site connected.
    fn enroll(&mut self) {
        self.apply("site.yaml", &site_yaml(&self.site, &self.run));
        let (token, _) = self.token(&self.site, &[]);
        let url = self.cp().url.clone();
        self.start_agent(Some((&url, &token)));
        self.join_token = token;
        eventually(
            "the site shows connected in `get sites`",
            Duration::from_secs(30),
            || {
                let site = self.site_view()?;
                if connected(&site) {
                    Ok(())
                } else {
                    Err(site.to_string())
                }
            },
        );
    }

    /// Applies the application at `version` and its deployment.
    fn deploy(&self, version: &str, release: &str) {
        self.apply(
            &format!("app-{version}.yaml"),
            &app_yaml(version, release, &self.run),
        );
    }

    /// Enrolls, deploys version 1.0 and waits for both replicas to run; their statuses.
    fn running_app(&mut self) -> BTreeMap<String, Value> {
        self.enroll();
        self.deploy("1.0", "one");
        eventually(
            "both replicas running in `atoll status`",
            Duration::from_secs(60),
            || self.all_running(&BTreeSet::new()),
        )
    }

    /// This site's item of `get sites -o json`.
    fn site_view(&self) -> Result<Value, String> {
        let items = self.cp().sites()?;
        items
            .iter()
            .find(|i| i["resource"]["name"] == self.site.as_str())
            .cloned()
            .ok_or_else(|| format!("no site {} in {items:?}", self.site))
    }

    /// This site's replicas in `atoll status APP -o json`, by service (one replica each).
    fn replicas(&self) -> Result<BTreeMap<String, Value>, String> {
        let out = self.cp().cli(&["status", APP, "-o", "json"]);
        if out.code != Some(0) {
            return Err(format!("atoll status: {}{}", out.stdout, out.stderr));
        }
        let status = out.json();
        let site = status["sites"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["site"] == self.site.as_str()))
            .ok_or_else(|| format!("no site {} in {status}", self.site))?;
        let services = site["services"]
            .as_object()
            .ok_or_else(|| format!("no services in {site}"))?;
        services
            .iter()
            .map(
                |(name, replicas)| match replicas.as_array().map(Vec::as_slice) {
                    Some([one]) => Ok((name.clone(), one.clone())),
                    _ => Err(format!(
                        "service {name} has not exactly one replica: {site}"
                    )),
                },
            )
            .collect()
    }

    /// Ok when `atoll status` shows web and worker running, with containers not in `not`.
    fn all_running(&self, not: &BTreeSet<String>) -> Result<BTreeMap<String, Value>, String> {
        let replicas = self.replicas()?;
        let ok = ["web", "worker"].iter().all(|s| {
            replicas.get(*s).is_some_and(|r| {
                r["state"] == "running"
                    && r["container_id"]
                        .as_str()
                        .is_some_and(|id| !not.contains(id))
            })
        });
        if ok && replicas.len() == 2 {
            Ok(replicas)
        } else {
            Err(format!("{replicas:#?}"))
        }
    }

    /// `get events SITE -o json` items.
    fn events(&self) -> Vec<Value> {
        let out = self.cp().cli(&["get", "events", &self.site, "-o", "json"]);
        out.ok("get events");
        out.json()["items"].as_array().cloned().unwrap_or_default()
    }

    /// Kills the control plane with SIGKILL; its data folder and address are kept.
    fn kill_control_plane(&mut self) -> String {
        self.cp.take().expect("the control plane runs").crash()
    }

    /// Starts the control plane again on its data folder, at the address its agents know.
    fn restart_control_plane(&mut self, address: &str) {
        assert!(self.cp.is_none());
        self.cp = Some(ControlPlane::restart(&self.data_dir(), address));
    }
}

fn id_of(replica: &Value) -> String {
    replica["container_id"]
        .as_str()
        .unwrap_or_else(|| panic!("replica without a container: {replica}"))
        .to_owned()
}

/// `(host, seq, message)` must not repeat across the control plane's events.
#[track_caller]
fn assert_no_duplicate_events(events: &[Value]) {
    let mut seen = BTreeSet::new();
    for e in events {
        let triple = (
            e["host"].as_str().unwrap_or_default().to_owned(),
            e["seq"].as_u64().unwrap_or_default(),
            e["message"].as_str().unwrap_or_default().to_owned(),
        );
        assert!(
            seen.insert(triple.clone()),
            "event {triple:?} stored twice:\n{events:#?}"
        );
    }
}

fn count_messages(events: &[Value], pred: impl Fn(&str) -> bool) -> usize {
    events
        .iter()
        .filter(|e| pred(e["message"].as_str().unwrap_or_default()))
        .count()
}

// ---------------------------------------------------------------------------------------------
// 1. A first deployment

#[test]
fn a_two_service_application_runs_within_10s_with_its_sites_configuration() {
    let mut f = Fixture::new();
    f.enroll();

    let started = Instant::now();
    f.deploy("1.0", "one");
    let replicas = eventually(
        "both replicas running in `atoll status`",
        Duration::from_secs(60),
        || f.all_running(&BTreeSet::new()),
    );
    let elapsed = started.elapsed();
    figure("apply → both replicas running", elapsed);
    assert!(
        elapsed < Duration::from_secs(10),
        "apply → running took {elapsed:?}, more than 10 s"
    );

    // What the control plane rendered for this site.
    let manifest = f.cp().manifest(&f.site);
    let services = manifest["content"]["applications"][0]["services"]
        .as_array()
        .unwrap_or_else(|| panic!("no services in {manifest}"))
        .clone();
    let rendered = |name: &str| -> Value {
        services
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no service {name} in {manifest}"))
            .clone()
    };
    let web_spec = rendered("web");
    let file = &web_spec["files"][0];
    assert_eq!(file["path"], CONFIG_PATH, "{web_spec}");
    let rendered_file = file["content"].as_str().unwrap().to_owned();
    assert_eq!(
        rendered_file.trim_end(),
        format!(
            "site = \"{}\"\nregion = \"eu-west\"\ncurrency = \"EUR\"",
            f.site
        ),
        "{web_spec}"
    );

    let on_host = managed(&f.site);
    assert_eq!(
        on_host.keys().cloned().collect::<Vec<_>>(),
        [f.name("web"), f.name("worker")],
        "{on_host:#?}"
    );
    for (service, spec) in [("web", &web_spec), ("worker", &rendered("worker"))] {
        let c = &on_host[&f.name(service)];
        assert!(c.running, "{c:#?}");
        assert_eq!(
            c.id,
            id_of(&replicas[service]),
            "status and docker disagree"
        );
        assert_eq!(c.label("io.atoll.site"), f.site);
        assert_eq!(c.label("io.atoll.deployment"), DEPLOYMENT);
        assert_eq!(c.label("io.atoll.service"), service);
        assert_eq!(c.label("io.atoll.replica"), "0");
        assert!(!c.label("io.atoll.spec-hash").is_empty(), "{:?}", c.labels);
        // Every variable of the rendered spec is in the container's environment.
        for (key, value) in spec["env"].as_object().unwrap() {
            let entry = format!("{key}={}", value.as_str().unwrap());
            assert!(c.env.contains(&entry), "{entry} not in {:?}", c.env);
        }
        assert!(c.env.contains(&"RELEASE=one".to_owned()), "{:?}", c.env);
    }

    let web = &on_host[&f.name("web")];
    for expected in [
        format!("GREETING=Hello from {}", f.site),
        "STORE_ID=0042".to_owned(),
    ] {
        assert!(
            web.env.contains(&expected),
            "{expected} not in {:?}",
            web.env
        );
    }

    // The file, as the container sees it, is the one rendered for this site...
    let out = docker(&[
        "exec",
        &web.id,
        "/usr/local/bin/atoll",
        "demo",
        "cat",
        CONFIG_PATH,
    ]);
    out.ok("docker exec atoll demo cat");
    assert_eq!(out.stdout, rendered_file);

    // ...mounted read-only from the agent's data folder.
    let mounts = web.raw["Mounts"].as_array().cloned().unwrap_or_default();
    let mount = mounts
        .iter()
        .find(|m| m["Destination"] == CONFIG_PATH)
        .unwrap_or_else(|| panic!("no mount at {CONFIG_PATH}: {mounts:#?}"));
    assert_eq!(mount["Type"], "bind", "{mount}");
    assert_eq!(mount["RW"], false, "{mount}");
    let source = mount["Source"].as_str().unwrap();
    assert!(
        Path::new(source).starts_with(f.agent_dir().join("files")),
        "{mount}"
    );
    assert_eq!(std::fs::read_to_string(source).unwrap(), rendered_file);
    // The image has no shell to try a write with: the mount's flag above is the check. The
    // worker has no files, hence no mounts.
    let worker = &on_host[&f.name("worker")];
    assert!(
        worker.raw["Mounts"].as_array().is_none_or(|m| m.is_empty()),
        "{:#?}",
        worker.raw["Mounts"]
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Upgrades and removals touch only the agent's own containers

#[test]
fn a_new_version_replaces_and_a_deleted_deployment_removes_while_foreign_containers_stay() {
    let mut f = Fixture::new();
    let first = f.running_app();
    let old_ids: BTreeSet<String> = first.values().map(id_of).collect();
    let old = managed(&f.site);

    // Containers the agent must never touch: one with no label at all, one of another site, and
    // one that carries this site's label but not the managed one.
    let id = f.id.clone();
    let plain = run_foreign(&format!("e2e-plain-{id}"), &[]);
    f.cleanup.add_container(&plain);
    let other_site = run_foreign(
        &format!("e2e-other-{id}"),
        &["--label", &format!("io.atoll.site=other-{id}")],
    );
    f.cleanup.add_container(&other_site);
    let unmanaged = run_foreign(
        &format!("e2e-unmanaged-{id}"),
        &[
            "--label",
            &format!("io.atoll.site={}", f.site),
            "--label",
            "io.atoll.service=web",
        ],
    );
    f.cleanup.add_container(&unmanaged);
    let foreign = [plain, other_site, unmanaged];
    let foreign_before: Vec<_> = foreign
        .iter()
        .map(|id| {
            eventually(
                "the foreign container runs",
                Duration::from_secs(10),
                || {
                    let c = inspect(id).ok_or("gone")?;
                    if c.running {
                        Ok(c.fingerprint())
                    } else {
                        Err(format!("{c:#?}"))
                    }
                },
            )
        })
        .collect();
    let foreign_unchanged = || {
        for (id, before) in foreign.iter().zip(&foreign_before) {
            let now = inspect(id).unwrap_or_else(|| panic!("foreign container {id} is gone"));
            assert_eq!(
                &now.fingerprint(),
                before,
                "foreign container {id} was touched"
            );
        }
    };

    // A new version: both services' environments change, so both containers are replaced.
    let started = Instant::now();
    f.deploy("1.1", "two");
    let replaced = eventually(
        "the site's containers replaced by the new version's",
        Duration::from_secs(60),
        || {
            let now = managed(&f.site);
            let done = now.len() == 2
                && now.values().all(|c| {
                    c.running
                        && !old_ids.contains(&c.id)
                        && c.env.contains(&"RELEASE=two".to_owned())
                });
            if done {
                Ok(now)
            } else {
                Err(format!(
                    "{:#?}",
                    now.values()
                        .map(|c| (&c.name, &c.id, c.running, &c.env))
                        .collect::<Vec<_>>()
                ))
            }
        },
    );
    let replace_time = started.elapsed();
    figure("new version → containers replaced", replace_time);
    for (name, c) in &replaced {
        assert_eq!(c.label("io.atoll.version"), "1.1", "{name}");
        assert_ne!(
            c.label("io.atoll.spec-hash"),
            old[name].label("io.atoll.spec-hash"),
            "{name}"
        );
    }
    for id in &old_ids {
        assert!(
            inspect(id).is_none(),
            "the old container {id} is still there"
        );
    }
    let new_ids: BTreeSet<String> = replaced.values().map(|c| c.id.clone()).collect();
    let now = eventually(
        "`atoll status` shows the new containers running",
        Duration::from_secs(30),
        || f.all_running(&old_ids),
    );
    assert_eq!(now.values().map(id_of).collect::<BTreeSet<_>>(), new_ids);
    foreign_unchanged();

    // Deleting the deployment removes the site's containers, and only them.
    let started = Instant::now();
    f.cp()
        .cli(&["delete", "deployment", DEPLOYMENT])
        .ok("delete deployment");
    eventually(
        "the site's managed containers removed",
        Duration::from_secs(60),
        || {
            let now = managed(&f.site);
            if now.is_empty() {
                Ok(())
            } else {
                Err(format!("{:?}", now.keys().collect::<Vec<_>>()))
            }
        },
    );
    let remove_time = started.elapsed();
    figure("delete deployment → containers removed", remove_time);
    foreign_unchanged();
    eventually(
        "the site reports the new revision applied",
        Duration::from_secs(30),
        || {
            let s = f.site_view()?;
            if s["applied_revision"] == s["revision"] {
                Ok(())
            } else {
                Err(s.to_string())
            }
        },
    );
    foreign_unchanged();

    assert!(
        replace_time < Duration::from_secs(10),
        "the new version's containers replaced the old ones in {replace_time:.1?}, more than \
         10 s (the old containers are stopped one after the other with a 10 s grace period, and \
         the demo workload, PID 1 in its container, ignores SIGTERM)"
    );
    assert!(
        remove_time < Duration::from_secs(10),
        "the deleted deployment's containers were removed in {remove_time:.1?}, more than 10 s"
    );
}

// ---------------------------------------------------------------------------------------------
// 3. Crash recovery

#[test]
fn a_killed_container_is_back_within_2s() {
    let mut f = Fixture::new();
    let replicas = f.running_app();
    let id = id_of(&replicas["web"]);
    let before = inspect(&id).unwrap();
    assert!(before.running);

    let started = Instant::now();
    docker_ok(&["kill", &id]);
    let after = eventually(
        "the killed container runs again",
        Duration::from_secs(30),
        || {
            let c = inspect(&id).ok_or("the container is gone")?;
            if c.running && c.started_at != before.started_at {
                Ok(c)
            } else {
                Err(format!("running {} started {}", c.running, c.started_at))
            }
        },
    );
    let back = started.elapsed();
    figure("docker kill → running again", back);
    assert_eq!(after.id, before.id, "the same container is restarted");

    eventually(
        "`atoll status` counts one restart",
        Duration::from_secs(30),
        || {
            let r = f.replicas()?;
            let web = &r["web"];
            if web["state"] == "running"
                && web["restarts"] == 1
                && web["container_id"] == id.as_str()
            {
                Ok(())
            } else {
                Err(web.to_string())
            }
        },
    );
    let name = f.name("web");
    let events = eventually("the restart event", Duration::from_secs(30), || {
        let events = f.events();
        if count_messages(&events, |m| m.starts_with(&format!("restarted {name}, "))) > 0 {
            Ok(events)
        } else {
            Err(format!("{events:#?}"))
        }
    });
    assert_eq!(
        count_messages(&events, |m| m
            == format!("restarted {name}, which had exited with code 137")),
        1,
        "{events:#?}"
    );
    assert!(
        back < Duration::from_secs(2),
        "the killed container ran again after {back:?}, more than 2 s"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Offline autonomy

#[test]
fn offline_the_agent_keeps_the_site_running_and_catches_up_after() {
    let mut f = Fixture::new();
    f.running_app();
    let before = managed(&f.site);
    assert_eq!(before.len(), 2);
    let address = f.kill_control_plane();

    // A restarted agent adopts what runs: no container is recreated or restarted.
    f.kill_agent();
    let next_seq: u64 = std::fs::read_to_string(f.agent_dir().join("outbox/next-seq"))
        .map(|s| s.trim().parse().unwrap())
        .unwrap_or(1);
    f.start_agent(None);
    let settled = eventually(
        "the restarted agent reports a settled status (to its outbox)",
        Duration::from_secs(30),
        || {
            let reports = outbox(&f.agent_dir());
            reports
                .iter()
                .find(|r| r["seq"].as_u64().unwrap() >= next_seq && r["status"].is_object())
                .cloned()
                .ok_or_else(|| format!("{reports:#?}"))
        },
    );
    let replicas = settled["status"]["replicas"].as_array().unwrap();
    assert_eq!(replicas.len(), 2, "{settled}");
    for r in replicas {
        assert_eq!(r["state"], "running", "{settled}");
        let name = f.name(r["service"].as_str().unwrap());
        assert_eq!(r["container_id"], before[&name].id.as_str(), "{settled}");
    }
    let after_restart = events_of(&outbox(&f.agent_dir()));
    assert!(
        after_restart
            .iter()
            .all(|(seq, kind, _)| *seq < next_seq || kind != "container"),
        "the restarted agent acted on containers: {after_restart:#?}"
    );
    let now = managed(&f.site);
    for (name, c) in &before {
        assert_eq!(
            now.get(name).map(Ctr::fingerprint),
            Some(c.fingerprint()),
            "{name} was not adopted untouched"
        );
    }

    // Still offline, a container removed by hand comes back.
    let web = f.name("web");
    let old_id = before[&web].id.clone();
    let started = Instant::now();
    docker_ok(&["rm", "-f", &old_id]);
    let recreated = eventually(
        "the removed container recreated offline",
        Duration::from_secs(10),
        || {
            let c = inspect(&web).ok_or("no container")?;
            if c.running && c.id != old_id {
                Ok(c)
            } else {
                Err(format!("{c:#?}"))
            }
        },
    );
    figure("docker rm -f → recreated (offline)", started.elapsed());
    assert!(recreated.managed());
    let created = format!("created {web} ({})", short(&recreated.id));
    eventually(
        "the recreation waits in the outbox",
        Duration::from_secs(10),
        || {
            let events = events_of(&outbox(&f.agent_dir()));
            if events.iter().any(|(_, _, m)| *m == created) {
                Ok(())
            } else {
                Err(format!("{events:#?}"))
            }
        },
    );
    let worker = f.name("worker");
    assert_eq!(
        inspect(&worker).map(|c| c.fingerprint()),
        Some(before[&worker].fingerprint()),
        "the worker was touched"
    );

    // The control plane comes back where the agent looks for it.
    f.restart_control_plane(&address);
    let started = Instant::now();
    eventually(
        "the site connected again, with the desired revision applied and the recreation reported",
        Duration::from_secs(30),
        || {
            let s = f.site_view()?;
            let events = f.events();
            let reported = count_messages(&events, |m| m == created) > 0;
            if s["connected"] == true
                && s["revision"].is_u64()
                && s["applied_revision"] == s["revision"]
                && reported
            {
                Ok(())
            } else {
                Err(format!("{s}\nreported: {reported}"))
            }
        },
    );
    figure("control plane back → caught up", started.elapsed());
    eventually("the outbox is delivered", Duration::from_secs(60), || {
        let left = outbox(&f.agent_dir());
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("{left:#?}"))
        }
    });
    let events = f.events();
    assert_eq!(count_messages(&events, |m| m == created), 1, "{events:#?}");
    assert_eq!(
        count_messages(&events, |m| m.starts_with(&format!("created {web} ("))),
        2,
        "the first creation and the recreation: {events:#?}"
    );
    assert_no_duplicate_events(&events);
    let replicas = f.all_running(&BTreeSet::new()).unwrap();
    assert_eq!(id_of(&replicas["web"]), recreated.id);
    assert_eq!(id_of(&replicas["worker"]), before[&worker].id);
}

// ---------------------------------------------------------------------------------------------
// 5. Refusals

/// A reqwest client presenting the certificate and key an agent keeps in `agent_dir`, and
/// trusting only the CA it keeps there.
fn agent_http(agent_dir: &Path) -> reqwest::Client {
    use rustls_pki_types::pem::PemObject as _;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};

    let read = |name: &str| std::fs::read(agent_dir.join(name)).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read("ca.pem")) {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&read("host-cert.pem"))
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(&read("host-key.pem")).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key)
    .unwrap();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// What a fake control plane serves and what it received.
#[derive(Debug, Default)]
struct FakeState {
    /// The body answering every manifest request.
    manifest: Mutex<String>,
    manifest_requests: AtomicUsize,
    /// Every report batch received, in order.
    batches: Mutex<Vec<Value>>,
    /// Reports refused for passing the control plane's bounds.
    refused_reports: AtomicUsize,
}

/// An HTTPS server that looks like the control plane to an agent: its certificate is issued by
/// the real CA (so the agent trusts it), it asks for no client certificate, serves whatever
/// manifest the test sets and records the reports.
#[derive(Debug)]
struct FakeControlPlane {
    url: String,
    state: Arc<FakeState>,
}

impl FakeControlPlane {
    fn start(rt: &tokio::runtime::Runtime, data_dir: &Path) -> FakeControlPlane {
        use axum::routing::{get, post};
        use hyper_util::rt::{TokioExecutor, TokioIo};
        use rustls_pki_types::pem::PemObject as _;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

        let ca_pem = std::fs::read_to_string(data_dir.join("ca.pem")).unwrap();
        let ca_key = rcgen::KeyPair::from_pem(
            &std::fs::read_to_string(data_dir.join("ca-key.pem")).unwrap(),
        )
        .unwrap();
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();
        let issuer = rcgen::Issuer::from_ca_cert_der(&ca_der, &ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let cert = params.signed_by(&key, &issuer).unwrap();
        let chain = vec![cert.der().clone(), ca_der.into_owned()];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));

        let state = Arc::new(FakeState::default());
        let router = axum::Router::new()
            .route(
                "/v1/sites/{site}/manifest",
                get(
                    |axum::extract::State(s): axum::extract::State<Arc<FakeState>>| async move {
                        s.manifest_requests.fetch_add(1, Ordering::SeqCst);
                        let body = s.manifest.lock().unwrap().clone();
                        (
                            [(axum::http::header::CONTENT_TYPE, "application/json")],
                            body,
                        )
                    },
                ),
            )
            .route(
                "/v1/sites/{site}/reports",
                post(
                    |axum::extract::State(s): axum::extract::State<Arc<FakeState>>,
                     body: axum::body::Bytes| async move {
                        use axum::response::IntoResponse as _;
                        // The real control plane's bounds: what passes them is refused whole.
                        if body.len() > atoll_api::agent::MAX_REPORT_BYTES {
                            return axum::http::StatusCode::PAYLOAD_TOO_LARGE.into_response();
                        }
                        let within =
                            serde_json::from_slice::<atoll_api::agent::ReportRequest>(&body)
                                .is_ok_and(|r| atoll_control::core::events::check(&r).is_empty());
                        if !within {
                            s.refused_reports.fetch_add(1, Ordering::SeqCst);
                            return axum::http::StatusCode::BAD_REQUEST.into_response();
                        }
                        let request: Value = serde_json::from_slice(&body).unwrap_or_default();
                        let batches = request["batches"].as_array().cloned().unwrap_or_default();
                        let acked = batches
                            .iter()
                            .filter_map(|b| b["seq"].as_u64())
                            .max()
                            .unwrap_or(0);
                        s.batches.lock().unwrap().extend(batches);
                        axum::Json(json!({ "acked": acked })).into_response()
                    },
                ),
            )
            .with_state(state.clone());

        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("https://{}", listener.local_addr().unwrap());
        rt.spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, router) = (acceptor.clone(), router.clone());
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(
                            TokioIo::new(stream),
                            hyper_util::service::TowerToHyperService::new(router),
                        )
                        .await;
                });
            }
        });
        FakeControlPlane { url, state }
    }

    fn serve(&self, body: String) {
        *self.state.manifest.lock().unwrap() = body;
    }

    fn batches(&self) -> Vec<Value> {
        self.state.batches.lock().unwrap().clone()
    }
}

/// `{payload, signature}` with `payload` signed by `key`.
fn sign(key: &ring::signature::Ed25519KeyPair, payload: &Value) -> String {
    use base64::Engine as _;
    let payload = serde_json::to_string(payload).unwrap();
    let signature =
        base64::engine::general_purpose::STANDARD.encode(key.sign(payload.as_bytes()).as_ref());
    json!({ "payload": payload, "signature": signature }).to_string()
}

/// Waits until the fake has received, among the batches after the first `from`, a `refused`
/// event and a status whose `refused` both satisfy `matches`; returns that status.
#[track_caller]
fn wait_refusal(
    fake: &FakeControlPlane,
    from: usize,
    what: &str,
    matches: impl Fn(&str) -> bool,
) -> Value {
    eventually(what, Duration::from_secs(90), || {
        let batches = fake.batches();
        let fresh = &batches[from.min(batches.len())..];
        let event = events_of(fresh)
            .into_iter()
            .any(|(_, kind, message)| kind == "refused" && matches(&message));
        let status = fresh
            .iter()
            .filter_map(|b| b["status"].as_object())
            .find(|s| {
                s.get("refused")
                    .and_then(Value::as_str)
                    .is_some_and(&matches)
            });
        match (event, status) {
            (true, Some(s)) => Ok(Value::Object(s.clone())),
            _ => Err(format!("event: {event}; batches: {fresh:#?}")),
        }
    })
}

#[test]
fn refusals() {
    let mut f = Fixture::new();
    let site_b = format!("{}-b", f.site);
    f.cleanup.add_site(&site_b);
    f.apply(
        "site-b.yaml",
        &format!(
            "kind: Site\nname: {site_b}\nlabels: {{ run: other-{} }}\n",
            f.id
        ),
    );
    let replicas = f.running_app();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = f.cp().url.clone();
    let site_a = f.site.clone();

    // (a) One site's certificate opens nothing of another site's.
    let as_a = agent_http(&f.agent_dir());
    let anonymous = f.cp().http();
    rt.block_on(async {
        let own = as_a
            .get(format!("{url}/v1/sites/{site_a}/manifest?have=0&wait=0"))
            .send()
            .await
            .unwrap();
        assert_eq!(own.status(), 200, "A's certificate reads A's manifest");
        let own: Value = own.json().await.unwrap();
        assert!(own["payload"].is_string() && own["signature"].is_string(), "{own}");

        let response = as_a
            .get(format!("{url}/v1/sites/{site_b}/manifest?have=0&wait=0"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "A's certificate reading B's manifest");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{body}");

        let response = as_a
            .post(format!("{url}/v1/sites/{site_b}/reports"))
            .json(&json!({ "batches": [{ "seq": 1, "at": "2020-01-01T00:00:00Z",
                "events": [{ "at": "2020-01-01T00:00:00Z", "kind": "container", "message": "forged" }] }] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403, "A's certificate reporting for B");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "forbidden", "{body}");

        let response = anonymous
            .get(format!("{url}/v1/sites/{site_a}/manifest?have=0"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "no certificate and no token");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthorized", "{body}");
        let response = anonymous
            .post(format!("{url}/v1/sites/{site_a}/reports"))
            .json(&json!({ "batches": [] }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "reporting with no certificate");
    });
    let b_events = f.cp().cli(&["get", "events", &site_b, "-o", "json"]);
    b_events.ok("get events B");
    assert_eq!(
        b_events.json()["items"],
        json!([]),
        "nothing was stored for B"
    );

    // (b) Join tokens: used up, unknown, expired.
    let refused_enrollment = |token: &str, dir: &str| -> String {
        let cmd = f.agent_command(&f.tmp.path().join(dir), Some((&url, token)));
        let mut agent = Process::spawn(cmd);
        let status = agent.wait_exit(Duration::from_secs(30)).unwrap_or_else(|| {
            panic!(
                "the agent with token {dir} did not exit:\n{}",
                agent.stderr()
            )
        });
        assert_eq!(status.code(), Some(1), "{dir}: {}", agent.stderr());
        assert!(
            !f.tmp.path().join(dir).join("identity.json").exists(),
            "{dir}: an identity was kept"
        );
        agent.stderr()
    };
    // The token site A's agent enrolled with was good for one host.
    let stderr = refused_enrollment(&f.join_token, "reused");
    assert!(stderr.contains("used up"), "{stderr}");

    let fingerprint = f.join_token.rsplit('.').next().unwrap();
    let stderr = refused_enrollment(&format!("atoll1.{}.{fingerprint}", unique()), "unknown");
    assert!(stderr.contains("unknown join token"), "{stderr}");
    assert!(
        stderr.contains("visible to every user") && stderr.contains("--token-file"),
        "--token in argv is warned about: {stderr}"
    );

    let (short_lived, said) = f.token(&f.site, &["--ttl", "1s"]);
    let expires_at = said
        .split("valid until ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(|t| t.trim_end_matches('.'))
        .unwrap_or_else(|| panic!("no expiry in {said:?}"));
    let expiry = i64::try_from(unix_ms(expires_at) / 1000).unwrap();
    eventually("the token expires", Duration::from_secs(10), || {
        if now_unix() > expiry {
            Ok(())
        } else {
            Err(format!("now {} ≤ {expiry}", now_unix()))
        }
    });
    let stderr = refused_enrollment(&short_lived, "expired");
    assert!(stderr.contains("expired"), "{stderr}");

    // (c) Forged, replayed and misaddressed manifests, from a control plane the agent trusts.
    let before = managed(&f.site);
    assert_eq!(
        before
            .values()
            .map(|c| c.id.clone())
            .collect::<BTreeSet<_>>(),
        replicas.values().map(id_of).collect::<BTreeSet<_>>()
    );
    f.kill_agent();
    let kept_path = f.agent_dir().join("manifest.json");
    let kept_text = std::fs::read_to_string(&kept_path).unwrap();
    let kept: Value = serde_json::from_str(&kept_text).unwrap();
    let payload: Value = serde_json::from_str(kept["payload"].as_str().unwrap()).unwrap();
    let applied = payload["revision"].as_u64().unwrap();
    assert_eq!(payload["site"], site_a.as_str());

    let fake = FakeControlPlane::start(&rt, &f.data_dir());
    let forger = ring::signature::Ed25519KeyPair::from_pkcs8(
        ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .unwrap()
            .as_ref(),
    )
    .unwrap();
    let mut forged = payload.clone();
    forged["revision"] = json!(applied + 1);
    // Were it accepted, it would remove every container.
    forged["content"]["applications"] = json!([]);
    fake.serve(sign(&forger, &forged));
    let identity_path = f.agent_dir().join("identity.json");
    let mut identity: Value =
        serde_json::from_str(&std::fs::read_to_string(&identity_path).unwrap()).unwrap();
    identity["control_url"] = json!(fake.url);
    std::fs::write(&identity_path, identity.to_string()).unwrap();
    f.start_agent(None);

    let untouched = |when: &str| {
        let now = managed(&f.site);
        assert_eq!(now.len(), before.len(), "{when}: {now:#?}");
        for (name, c) in &before {
            assert_eq!(
                now.get(name).map(Ctr::fingerprint),
                Some(c.fingerprint()),
                "{when}: {name} was touched"
            );
        }
    };

    let status = wait_refusal(&fake, 0, "a forged manifest refused", |m| {
        m.contains("does not verify") || m.contains("forged")
    });
    assert_eq!(status["applied_revision"], applied, "{status}");
    assert_eq!(
        std::fs::read_to_string(&kept_path).unwrap(),
        kept_text,
        "the forged manifest was kept"
    );
    untouched("after the forged manifest");

    // A replay: the agent's own kept manifest, genuinely signed, but not newer.
    let from = fake.batches().len();
    fake.serve(kept_text.clone());
    let status = wait_refusal(&fake, from, "a replayed manifest refused", |m| {
        m.contains("replayed") || m.contains("not newer")
    });
    assert_eq!(status["applied_revision"], applied, "{status}");
    untouched("after the replayed manifest");

    // Genuinely signed and newer, but for another site.
    let signer = {
        let pkcs8 = std::fs::read(f.data_dir().join("signing-key.pk8")).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8)
            .or_else(|_| ring::signature::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8))
            .unwrap()
    };
    let mut elsewhere = payload.clone();
    elsewhere["site"] = json!(site_b);
    elsewhere["revision"] = json!(applied + 1);
    elsewhere["content"]["applications"] = json!([]);
    let from = fake.batches().len();
    fake.serve(sign(&signer, &elsewhere));
    wait_refusal(&fake, from, "a manifest for another site refused", |m| {
        m.contains(&format!("for site {site_b}"))
    });
    assert_eq!(std::fs::read_to_string(&kept_path).unwrap(), kept_text);
    untouched("after the manifest for another site");

    // Issue 12, item 13: a refusal naming a site of 200,000 characters made an event past the
    // control plane's bounds, refused for ever, and every report behind it waited. The agent
    // cuts it before it is queued: it is sent, marked, and the outbox drains.
    let huge_site = "x".repeat(200_000);
    let mut huge = payload.clone();
    huge["site"] = json!(huge_site);
    huge["revision"] = json!(applied + 1);
    let from = fake.batches().len();
    fake.serve(sign(&signer, &huge));
    let status = wait_refusal(&fake, from, "a refusal too large for a report, cut", |m| {
        m.starts_with("the manifest is for site xxx")
            && m.contains(atoll_api::agent::TRUNCATED_MARK)
            && m.len() <= atoll_api::agent::MAX_EVENT_MESSAGE_BYTES
    });
    assert_eq!(status["applied_revision"], applied, "{status}");
    assert_eq!(
        fake.state.refused_reports.load(Ordering::SeqCst),
        0,
        "the agent sent nothing the control plane refuses"
    );
    eventually("the outbox drains", Duration::from_secs(30), || {
        let waiting = outbox(&f.agent_dir());
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("{} reports wait", waiting.len()))
        }
    });
    untouched("after the huge refusal");

    // The same path accepts a genuine newer manifest: the refusals above were the checks'.
    let mut genuine = payload.clone();
    genuine["revision"] = json!(applied + 1);
    let from = fake.batches().len();
    fake.serve(sign(&signer, &genuine));
    eventually(
        "a genuine newer manifest accepted",
        Duration::from_secs(90),
        || {
            let batches = fake.batches();
            let fresh = &batches[from.min(batches.len())..];
            let accepted = events_of(fresh).into_iter().any(|(_, kind, message)| {
                kind == "manifest"
                    && message == format!("accepted manifest revision {}", applied + 1)
            });
            if accepted {
                Ok(())
            } else {
                Err(format!("{fresh:#?}"))
            }
        },
    );
    untouched("after a genuine manifest with the same content");
    assert!(fake.state.manifest_requests.load(Ordering::SeqCst) >= 4);
}

// ---------------------------------------------------------------------------------------------
// 6. The outbox

#[test]
fn the_outbox_survives_restarts_without_loss_or_duplicates() {
    let mut f = Fixture::new();
    let replicas = f.running_app();
    let worker_id = id_of(&replicas["worker"]);
    let worker = f.name("worker");
    eventually(
        "everything reported so far delivered",
        Duration::from_secs(30),
        || {
            let left = outbox(&f.agent_dir());
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:#?}"))
            }
        },
    );
    let address = f.kill_control_plane();

    let restarted = format!("restarted {worker}, which had exited with code 137");
    let mut kills: u64 = 0;
    let mut kill = |f: &Fixture| {
        let before = inspect(&worker_id).unwrap();
        assert!(before.running);
        docker_ok(&["kill", &worker_id]);
        kills += 1;
        let expected = kills;
        eventually(
            "the killed worker restarted, and the restart queued in the outbox",
            Duration::from_secs(30),
            || {
                let c = inspect(&worker_id).ok_or("the worker is gone")?;
                // A repeat within the fold window is held, counted, until it goes as one.
                let (batches, held) = queued(&f.agent_dir());
                let queued = occurrences(&batches, &restarted) + occurrences(&held, &restarted);
                if c.running && c.started_at != before.started_at && queued == expected {
                    Ok(())
                } else {
                    Err(format!(
                        "running {}, started {}, {queued} restarts queued",
                        c.running, c.started_at
                    ))
                }
            },
        );
    };
    kill(&f);
    kill(&f);
    f.kill_agent();
    f.start_agent(None);
    kill(&f);
    kill(&f);
    let kills: u64 = 4;

    let (produced, still_held) = queued(&f.agent_dir());
    let produced_events = events_of(&produced);
    assert_eq!(
        occurrences(&produced, &restarted) + occurrences(&still_held, &restarted),
        kills,
        "a kill of the agent loses no held repeat"
    );
    let seqs: Vec<u64> = produced
        .iter()
        .map(|r| r["seq"].as_u64().unwrap())
        .collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers reused or out of order: {seqs:?}"
    );

    f.restart_control_plane(&address);
    eventually(
        "the outbox delivered after the control plane came back",
        Duration::from_secs(90),
        || {
            let left = outbox(&f.agent_dir());
            let site = f.site_view()?;
            if left.is_empty() && held(&f.agent_dir()).is_empty() && site["connected"] == true {
                Ok(())
            } else {
                Err(format!("{} batches left; {site}", left.len()))
            }
        },
    );
    let events = f.events();
    assert_no_duplicate_events(&events);
    for (seq, kind, message) in &produced_events {
        let stored = events
            .iter()
            .filter(|e| {
                e["seq"] == *seq && e["kind"] == kind.as_str() && e["message"] == message.as_str()
            })
            .count();
        assert_eq!(
            stored, 1,
            "event ({seq}, {kind}, {message}) stored {stored} times:\n{events:#?}"
        );
    }
    assert_eq!(
        stored_occurrences(&events, &restarted),
        kills,
        "every restart counted once: {events:#?}"
    );
    let hosts = f.cp().cli(&["get", "hosts", "-o", "json"]);
    hosts.ok("get hosts");
    let host = &hosts.json()["items"][0];
    assert_eq!(host["status"]["dropped_reports"], 0, "{host}");
    let r = eventually(
        "the worker running in `atoll status`",
        Duration::from_secs(30),
        || f.all_running(&BTreeSet::new()),
    );
    assert_eq!(
        id_of(&r["worker"]),
        worker_id,
        "the worker was restarted, never recreated"
    );
}

/// Issue 12, item 7: a control plane restored from a backup (the same as a WAL cut) reused a
/// revision number the agent already held with other content; the agent never took it, and ran
/// 1.1 while the control plane said 1.0 — silently. Now the long-poll compares content, the
/// control plane moves the site's revision above the agent's, and the divergence is audited:
/// the site runs what the restored store holds.
#[test]
fn a_control_plane_restored_from_a_backup_moves_its_site_above_what_the_agent_holds() {
    let mut f = Fixture::new();
    f.running_app();
    let backup = f.tmp.path().join("backup");
    let address = f.kill_control_plane();
    let db_files = ["atoll.db", "atoll.db-wal", "atoll.db-shm"];
    std::fs::create_dir_all(&backup).unwrap();
    for file in db_files {
        let from = f.data_dir().join(file);
        if from.exists() {
            std::fs::copy(&from, backup.join(file)).unwrap();
        }
    }
    f.restart_control_plane(&address);
    let backed_up = f.cp().revision(&f.site);
    f.deploy("1.1", "two");
    let web = f.name("web");
    eventually("the site runs 1.1", Duration::from_secs(60), || {
        let c = inspect(&web).ok_or("no web container")?;
        if c.running && c.label("io.atoll.version") == "1.1" {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    });
    let address = f.kill_control_plane();
    for file in db_files {
        let _ = std::fs::remove_file(f.data_dir().join(file));
        if backup.join(file).exists() {
            std::fs::copy(backup.join(file), f.data_dir().join(file)).unwrap();
        }
    }
    f.restart_control_plane(&address);
    assert_eq!(
        f.cp().revision(&f.site),
        backed_up,
        "the restore did not take"
    );

    eventually(
        "the site runs the restored 1.0 again",
        Duration::from_secs(90),
        || {
            let c = inspect(&web).ok_or("no web container")?;
            if c.running && c.label("io.atoll.version") == "1.0" {
                Ok(())
            } else {
                Err(format!("{c:?}"))
            }
        },
    );
    assert!(
        f.cp().revision(&f.site) > backed_up + 1,
        "the site's revision is not above the agent's"
    );
    let audit = f.cp().cli(&["get", "audit"]);
    audit.ok("get audit");
    assert!(audit.stdout.contains("diverged"), "{}", audit.stdout);
}

/// Issue 12, item 8: with its `next-seq` file gone, the agent numbered its reports from 1
/// again, under the control plane's stored sequence: they were taken for resends and their
/// events vanished without a word. Now the agent learns the acknowledged sequence on first
/// contact and continues above it; a garbage counter does not stop it from starting either.
#[test]
fn an_agent_that_lost_its_report_counter_continues_above_the_acknowledged_sequence() {
    let mut f = Fixture::new();
    let replicas = f.running_app();
    let worker_id = id_of(&replicas["worker"]);
    let worker = f.name("worker");
    eventually(
        "everything reported so far delivered",
        Duration::from_secs(30),
        || {
            let left = outbox(&f.agent_dir());
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:#?}"))
            }
        },
    );
    let stored_before = f
        .events()
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(
        stored_before > 1,
        "too few reports stored to tell a restart from 1: {stored_before}"
    );
    let restarted = format!("restarted {worker}, which had exited with code 137");
    let restarts_stored = |f: &Fixture| {
        f.events()
            .iter()
            .filter(|e| e["message"] == restarted.as_str())
            .count()
    };
    for (round, counter) in [None, Some("garbage\n")].into_iter().enumerate() {
        f.kill_agent();
        let path = f.agent_dir().join("outbox").join("next-seq");
        match counter {
            None => std::fs::remove_file(&path).unwrap(),
            Some(text) => std::fs::write(&path, text).unwrap(),
        }
        f.start_agent(None);
        let before = inspect(&worker_id).unwrap();
        docker_ok(&["kill", &worker_id]);
        eventually("the worker restarted", Duration::from_secs(30), || {
            let c = inspect(&worker_id).ok_or("the worker is gone")?;
            if c.running && c.started_at != before.started_at {
                Ok(())
            } else {
                Err(format!("{c:?}"))
            }
        });
        // The worker running says nothing of its event: the agent queues a pass's events once
        // the pass is done. Killed before that (this test once was, one run in five: caught
        // writing the counter for the restart's batch), the restart never reaches disk, which
        // is not the loss this test is about; so the next kill waits until it is queued or
        // stored.
        eventually(
            "this round's restart queued or stored",
            Duration::from_secs(30),
            || {
                let queued = events_of(&outbox(&f.agent_dir()))
                    .iter()
                    .any(|(_, _, m)| *m == restarted);
                let stored = restarts_stored(&f);
                if queued || stored > round {
                    Ok(())
                } else {
                    Err(format!("{stored} restarts stored, none queued"))
                }
            },
        );
    }
    let events = eventually("both restarts stored", Duration::from_secs(60), || {
        let events = f.events();
        let restarts = count_messages(&events, |m| m == restarted);
        let left = outbox(&f.agent_dir());
        if restarts == 2 && left.is_empty() {
            Ok(events)
        } else {
            let stored: Vec<_> = events.iter().map(|e| (&e["seq"], &e["message"])).collect();
            Err(format!(
                "{restarts} restarts stored: {stored:#?}; outbox {left:#?}"
            ))
        }
    });
    assert_no_duplicate_events(&events);
    for e in events.iter().filter(|e| e["message"] == restarted.as_str()) {
        let seq = e["seq"].as_u64().unwrap();
        assert!(
            seq > stored_before,
            "a restart stored under seq {seq}, not above {stored_before}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 7. A reinstalled agent

/// A TCP relay to the control plane that forwards the first connection (the enrollment) and
/// drops the next ones until `open` is set: a control plane that goes out of reach right after
/// a host enrolled, without racing the agent.
#[derive(Debug, Default)]
struct Gate {
    open: std::sync::atomic::AtomicBool,
    connections: AtomicUsize,
    dropped: AtomicUsize,
}

fn start_gate(rt: &tokio::runtime::Runtime, to: &str) -> (String, Arc<Gate>) {
    let to = to.to_owned();
    let gate = Arc::new(Gate::default());
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let url = format!("https://{}", listener.local_addr().unwrap());
    let state = gate.clone();
    rt.spawn(async move {
        loop {
            let Ok((mut inbound, _)) = listener.accept().await else {
                continue;
            };
            let first = state.connections.fetch_add(1, Ordering::SeqCst) == 0;
            if !first && !state.open.load(Ordering::SeqCst) {
                state.dropped.fetch_add(1, Ordering::SeqCst);
                drop(inbound);
                continue;
            }
            let to = to.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (url, gate)
}

/// The spec hash leaves the agent's data folder out so that a reinstalled agent does not
/// replace healthy containers (`core/desired.rs`). A host whose agent lost its data folder and
/// enrolled again must therefore adopt what runs, not remove it while it has no manifest yet.
#[test]
fn a_reinstalled_agent_adopts_the_running_containers() {
    let mut f = Fixture::new();
    f.running_app();
    let before = managed(&f.site);
    let hosts = f.cp().cli(&["get", "hosts", "-o", "json"]);
    hosts.ok("get hosts");
    let old_host = hosts.json()["items"][0]["id"].as_str().unwrap().to_owned();

    // A reinstall: the agent's data folder is gone, and the host enrolls again; right after
    // the enrollment the control plane is out of reach for a moment.
    f.kill_agent();
    std::fs::remove_dir_all(f.agent_dir()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (url, gate) = start_gate(&rt, f.cp().address());
    let (token, _) = f.token(&f.site, &[]);
    f.start_agent(Some((&url, &token)));
    eventually(
        "the reinstalled agent enrolled and then failed to reach the control plane twice",
        Duration::from_secs(30),
        || {
            let dropped = gate.dropped.load(Ordering::SeqCst);
            if f.agent_dir().join("identity.json").exists() && dropped >= 2 {
                Ok(())
            } else {
                Err(format!("{dropped} connections dropped"))
            }
        },
    );
    gate.open.store(true, Ordering::SeqCst);

    eventually(
        "the new host reports the site's revision applied, all running",
        Duration::from_secs(60),
        || {
            let hosts = f.cp().cli(&["get", "hosts", "-o", "json"]);
            if hosts.code != Some(0) {
                return Err(hosts.stderr);
            }
            let hosts = hosts.json();
            let new = hosts["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["id"] != old_host.as_str())
                .cloned()
                .ok_or_else(|| format!("no new host: {hosts}"))?;
            let status = &new["status"];
            let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
            // The reinstalled host is a second host of the site (the old one stays attached),
            // so the site's manifest lists both, one revision on.
            let revision = f.site_view()?["revision"].clone();
            if status["applied_revision"] == revision
                && replicas.len() == 2
                && replicas.iter().all(|r| r["state"] == "running")
            {
                Ok(())
            } else {
                Err(new.to_string())
            }
        },
    );
    let events = f.events();
    let acted: Vec<&str> = events
        .iter()
        .filter(|e| e["host"] != old_host.as_str() && e["kind"] == "container")
        .filter_map(|e| e["message"].as_str())
        .collect();
    let now = managed(&f.site);
    for (name, c) in &before {
        assert_eq!(
            now.get(name).map(Ctr::fingerprint),
            Some(c.fingerprint()),
            "{name} was not adopted untouched by the reinstalled agent, which did: {acted:#?}"
        );
    }
    assert!(acted.is_empty(), "{acted:#?}");
}

/// Where a reinstalled agent keeps its data: a new folder, or the old one emptied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reinstall {
    InAnotherFolder,
    InTheEmptiedFolder,
}

/// Runs the application, reinstalls the agent (a fresh data folder, enrolled again), waits
/// until the new host has adopted the running containers untouched, leaves the old folder gone,
/// then `docker kill`s the web container, whose rendered file is bind-mounted from the old
/// folder. Returns the web container before the kill, the one running after it, how long that
/// took, and the new agent's folder.
fn reinstall_then_kill_web(f: &mut Fixture, how: Reinstall) -> (Ctr, Ctr, Duration, PathBuf) {
    let replicas = f.running_app();
    let before = inspect(&id_of(&replicas["web"])).unwrap();
    let hosts = f.cp().cli(&["get", "hosts", "-o", "json"]);
    hosts.ok("get hosts");
    let old_host = hosts.json()["items"][0]["id"].as_str().unwrap().to_owned();

    f.kill_agent();
    let new_dir = match how {
        Reinstall::InAnotherFolder => f.tmp.path().join("agent-reinstalled"),
        Reinstall::InTheEmptiedFolder => {
            std::fs::remove_dir_all(f.agent_dir()).unwrap();
            f.agent_dir()
        }
    };
    let (token, _) = f.token(&f.site, &[]);
    let url = f.cp().url.clone();
    f.agent = Some(Process::spawn(
        f.agent_command(&new_dir, Some((&url, &token))),
    ));
    eventually(
        "the new host reports the site's revision applied, all running",
        Duration::from_secs(60),
        || {
            let hosts = f.cp().cli(&["get", "hosts", "-o", "json"]);
            if hosts.code != Some(0) {
                return Err(hosts.stderr);
            }
            let hosts = hosts.json();
            let new = hosts["items"]
                .as_array()
                .unwrap()
                .iter()
                .find(|h| h["id"] != old_host.as_str())
                .cloned()
                .ok_or_else(|| format!("no new host: {hosts}"))?;
            let status = &new["status"];
            let replicas = status["replicas"].as_array().cloned().unwrap_or_default();
            // The reinstalled host is a second host of the site (the old one stays attached),
            // so the site's manifest lists both, one revision on.
            let revision = f.site_view()?["revision"].clone();
            if status["applied_revision"] == revision
                && replicas.len() == 2
                && replicas.iter().all(|r| r["state"] == "running")
            {
                Ok(())
            } else {
                Err(new.to_string())
            }
        },
    );
    assert_eq!(
        inspect(&before.id).map(|c| c.fingerprint()),
        Some(before.fingerprint()),
        "the web container was adopted untouched"
    );
    if how == Reinstall::InAnotherFolder {
        std::fs::remove_dir_all(f.agent_dir()).unwrap();
    }

    let web = f.name("web");
    let killed = Instant::now();
    docker_ok(&["kill", &before.id]);
    let after = eventually(
        "the web container runs again after `docker kill`",
        Duration::from_secs(30),
        || {
            let c = inspect(&web).ok_or("no web container")?;
            if c.running && c.started_at != before.started_at {
                Ok(c)
            } else {
                Err(format!("running {} started {}", c.running, c.started_at))
            }
        },
    );
    (before, after, killed.elapsed(), new_dir)
}

/// The sources of `c`'s bind mounts.
fn bind_sources(c: &Ctr) -> Vec<PathBuf> {
    c.raw["Mounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["Type"] == "bind")
        .filter_map(|m| m["Source"].as_str().map(PathBuf::from))
        .collect()
}

/// Issue 13, item 9: an agent reinstalled with a fresh data folder adopted the site's
/// containers, whose rendered files are bind-mounted from the old folder; once that folder was
/// gone, a container that stopped could never start again ("bind source path does not exist").
/// It is now recreated, its file written where the new agent keeps it.
#[test]
fn a_reinstalled_agent_recreates_an_adopted_container_whose_files_are_gone() {
    let mut f = Fixture::new();
    let (before, after, back, new_dir) =
        reinstall_then_kill_web(&mut f, Reinstall::InAnotherFolder);
    figure("docker kill → recreated after a reinstall", back);
    assert_ne!(
        after.id, before.id,
        "a new container replaced the one mounting the old folder"
    );
    let sources = bind_sources(&after);
    assert!(
        !sources.is_empty()
            && sources
                .iter()
                .all(|s| s.starts_with(&new_dir) && s.exists()),
        "the new container mounts its file from {}: {sources:?}",
        new_dir.display()
    );
    assert!(
        back < Duration::from_secs(2),
        "the killed container ran again after {back:?}, more than 2 s"
    );
}

/// Issue 13, item 9, the other way to reinstall: in the same folder, emptied. The adopted
/// containers' mounts are the new agent's own paths, so its files are written back and the
/// killed container is restarted as it is.
#[test]
fn an_agent_reinstalled_in_its_emptied_folder_restarts_an_adopted_container_with_its_files() {
    let mut f = Fixture::new();
    let (before, after, back, _) = reinstall_then_kill_web(&mut f, Reinstall::InTheEmptiedFolder);
    assert_eq!(after.id, before.id, "the same container is restarted");
    let sources = bind_sources(&after);
    assert!(
        !sources.is_empty() && sources.iter().all(|s| s.exists()),
        "{sources:?}"
    );
    assert!(
        back < Duration::from_secs(2),
        "the killed container ran again after {back:?}, more than 2 s"
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 12: paths and the join token

/// Issue 12, items 10 and 6: with a relative `--data-dir`, every container with `files:` failed
/// ("bind source must be an absolute path"); the data folder was 0755; the join token could only
/// be given in argv or the environment.
#[test]
fn an_agent_with_a_relative_data_dir_runs_an_app_with_files() {
    use std::os::unix::fs::PermissionsExt as _;

    let mut f = Fixture::new();
    f.apply("site.yaml", &site_yaml(&f.site, &f.run));
    let (token, _) = f.token(&f.site, &[]);
    std::fs::write(f.tmp.path().join("join-token"), format!("{token}\n")).unwrap();
    let mut cmd = support::agent_command(f.tmp.path(), Path::new("agent"), "info", None);
    cmd.current_dir(f.tmp.path())
        .args(["--control", &f.cp().url, "--token-file", "join-token"]);
    f.agent = Some(Process::spawn(cmd));
    f.deploy("1.0", "one");
    let replicas = eventually(
        "both replicas running in `atoll status`",
        Duration::from_secs(60),
        || f.all_running(&BTreeSet::new()),
    );
    let web = docker_ok(&[
        "inspect",
        "--format",
        "{{range .Mounts}}{{.Source}} {{end}}",
        &id_of(&replicas["web"]),
    ]);
    assert!(
        web.split_whitespace()
            .any(|source| source.starts_with(f.agent_dir().to_str().unwrap())),
        "the rendered file is mounted from the agent's folder: {web}"
    );
    let mode = std::fs::metadata(f.agent_dir())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "the agent's data folder");
    let agent = f.agent.as_ref().unwrap();
    assert!(
        !agent.stderr().contains("visible to every user"),
        "no warning for --token-file: {}",
        agent.stderr()
    );
}

// ---------------------------------------------------------------------------------------------
// Issue 12: the agent under faults

/// A kept manifest made unreadable, as a cut power or a bad sector leaves it.
const GARBAGE: &str = "{\"payload\": \"eyJyZXZpc2lvbiI6";

/// Issue 12, item 9: a damaged kept manifest made the agent exit 1, a crash loop under systemd.
#[test]
fn a_damaged_kept_manifest_leaves_containers_running_and_is_replaced() {
    let mut f = Fixture::new();
    f.running_app();
    let before = managed(&f.site);
    assert_eq!(before.len(), 2, "{before:#?}");
    let revision = f.cp().revision(&f.site);

    // Damaged while the agent is stopped, and the control plane away when it starts, so what
    // the agent does without any manifest can be watched.
    f.kill_agent();
    let manifest = f.agent_dir().join("manifest.json");
    std::fs::write(&manifest, GARBAGE).unwrap();
    let address = f.kill_control_plane();
    f.start_agent(None);
    let damage = eventually(
        "the damage set aside and queued as an event and a condition",
        Duration::from_secs(30),
        || {
            let queued = outbox(&f.agent_dir());
            let condition = queued
                .iter()
                .filter_map(|r| r["status"]["conditions"].as_array())
                .flatten()
                .find(|c| c["kind"] == "kept_manifest_damaged")
                .cloned();
            let event = events_of(&queued)
                .into_iter()
                .find(|(_, kind, m)| kind == "manifest" && m.contains("cannot be used"));
            match (condition, event) {
                (Some(c), Some((_, _, message))) => Ok((c, message)),
                other => Err(format!("{other:?} in {queued:#?}")),
            }
        },
    );
    assert!(
        damage.0["message"]
            .as_str()
            .is_some_and(|m| m.contains("manifest.json.damaged")),
        "the condition says where the damaged file went: {}",
        damage.0
    );
    assert_eq!(
        std::fs::read_to_string(f.agent_dir().join("manifest.json.damaged")).unwrap(),
        GARBAGE,
        "moved aside, not deleted"
    );
    assert!(
        f.agent
            .as_mut()
            .unwrap()
            .wait_exit(Duration::ZERO)
            .is_none(),
        "the agent runs on: {}",
        tail(&f.agent.as_ref().unwrap().stderr(), 20)
    );
    let during = managed(&f.site);
    for (name, c) in &before {
        assert_eq!(
            during.get(name).map(Ctr::fingerprint),
            Some(c.fingerprint()),
            "{name} was touched without a manifest"
        );
    }

    // The control plane back: the agent asks for the site's manifest from scratch (have=0).
    f.restart_control_plane(&address);
    eventually(
        "a fresh manifest kept, the damage reported, the condition cleared",
        Duration::from_secs(60),
        || {
            let kept: Value = std::fs::read(&manifest)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .ok_or("no manifest kept yet")?;
            let events = f.events();
            let reported = count_messages(&events, |m| m == damage.1) == 1;
            let site = f.site_view()?;
            if kept["payload"].is_string()
                && reported
                && site["conditions"].as_array().is_none_or(Vec::is_empty)
                && site["applied_revision"] == revision
            {
                Ok(())
            } else {
                Err(format!("reported {reported}; {site}"))
            }
        },
    );
    let after = managed(&f.site);
    for (name, c) in &before {
        assert_eq!(
            after.get(name).map(Ctr::fingerprint),
            Some(c.fingerprint()),
            "{name} was not left untouched when the fresh manifest came"
        );
    }
    let acted: Vec<String> = f
        .events()
        .iter()
        .filter(|e| e["kind"] == "container")
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .filter(|m| !m.starts_with("created "))
        .collect();
    assert!(acted.is_empty(), "{acted:#?}");
}

/// A tmpfs of its own, unmounted however the test ends (after the fixture, declared later,
/// has stopped the agent that writes to it).
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = support::run({
            let mut cmd = Command::new("mount");
            cmd.args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path());
            cmd
        });
        out.ok("mount -t tmpfs (these tests run as root)");
        Tmpfs { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes zeros into `name` until the file system is full.
    fn fill(&self, name: &str) {
        use std::io::Write as _;
        let mut file = std::fs::File::create(self.path().join(name)).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        loop {
            if let Err(e) = file.write_all(&chunk).and_then(|()| file.sync_all()) {
                assert_eq!(e.raw_os_error(), Some(28), "{e}");
                return;
            }
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = support::run({
            let mut cmd = Command::new("umount");
            cmd.arg("-l").arg(self.dir.path());
            cmd
        });
        if out.code != Some(0) {
            eprintln!("umount {}: {}", self.dir.path().display(), out.stderr);
        }
    }
}

/// Whether an event of the control plane's is about a manifest that could not be kept.
fn not_kept(e: &Value) -> bool {
    e["message"]
        .as_str()
        .is_some_and(|m| m.starts_with("cannot keep the manifest: no space left on device"))
}

/// Issue 12, item 11: a full disk at the edge refused new manifests 1.3 times a second while
/// the control plane showed the site healthy with a frozen last-seen.
#[test]
fn a_full_disk_is_reported_and_the_site_shows_it() {
    let disk = Tmpfs::mount("4m");
    let mut f = Fixture::new();
    std::os::unix::fs::symlink(disk.path(), f.agent_dir()).unwrap();
    let replicas = f.running_app();
    let before = managed(&f.site);

    disk.fill("filler");
    f.deploy("2.0", "two");
    let new_revision = f.cp().revision(&f.site);
    let (site, first_seen) = eventually(
        "the site shows the manifest not kept",
        Duration::from_secs(60),
        || {
            let site = f.site_view()?;
            let raised = site["conditions"]
                .as_array()
                .and_then(|c| c.iter().find(|c| c["kind"] == "manifest_not_kept").cloned());
            match raised {
                Some(c)
                    if c["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no space left on device")) =>
                {
                    let seen = site["last_seen"].as_str().unwrap_or_default().to_owned();
                    Ok((site, seen))
                }
                _ => Err(site.to_string()),
            }
        },
    );
    let started = Instant::now();
    assert_ne!(site["health"], "healthy", "{site}");
    let table = f.cp().cli(&["get", "sites"]);
    table.ok("get sites");
    assert!(
        table.stdout.contains("manifest not kept"),
        "{}",
        table.stdout
    );
    let described = f.cp().cli(&["describe", "site", &f.site]);
    described.ok("describe site");
    assert!(
        described.stdout.contains("manifest not kept")
            && described.stdout.contains("no space left on device"),
        "{}",
        described.stdout
    );

    // The failure goes on: its repeats are held and folded, and their report moves last-seen.
    let events = eventually(
        "a folded report of the repeats, and last-seen moving",
        Duration::from_secs(75),
        || {
            let events = f.events();
            let site = f.site_view()?;
            let seen = site["last_seen"].as_str().unwrap_or_default();
            let folded = events.iter().filter(|e| not_kept(e)).any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.ends_with(" times)"))
            });
            if folded && seen > first_seen.as_str() {
                Ok(events)
            } else {
                Err(format!(
                    "last seen {seen} (first {first_seen}); {events:#?}"
                ))
            }
        },
    );
    let window = started.elapsed();
    let message = events
        .iter()
        .find(|e| not_kept(e) && !e["message"].as_str().unwrap().ends_with(" times)"))
        .and_then(|e| e["message"].as_str())
        .unwrap()
        .to_owned();
    let tries = stored_occurrences(&events, &message);
    let stored = events.iter().filter(|e| not_kept(e)).count();
    println!(
        "FIGURE full disk: {tries} tries to keep the manifest in {:.1} s, {stored} events",
        window.as_secs_f64()
    );
    assert!(
        tries as f64 <= 2.0 + window.as_secs_f64() / 4.0,
        "the fetch backs off: {tries} tries in {window:?}"
    );
    assert!(
        stored <= 3,
        "{stored} events for {tries} tries: {events:#?}"
    );
    let during = managed(&f.site);
    for (name, c) in &before {
        assert_eq!(
            during.get(name).map(Ctr::fingerprint),
            Some(c.fingerprint()),
            "{name} keeps running on a full disk"
        );
    }

    std::fs::remove_file(disk.path().join("filler")).unwrap();
    eventually(
        "space freed: the new revision kept and applied, the condition cleared",
        Duration::from_secs(120),
        || {
            let site = f.site_view()?;
            let running = f.all_running(&BTreeSet::from([
                id_of(&replicas["web"]),
                id_of(&replicas["worker"]),
            ]));
            if site["applied_revision"] == new_revision
                && site["conditions"].as_array().is_none_or(Vec::is_empty)
                && running.is_ok()
            {
                Ok(())
            } else {
                Err(format!("{site}; {running:?}"))
            }
        },
    );
}

/// An application whose one service Docker refuses to create, every time: a memory limit
/// under Docker's minimum of 6 MB.
fn refused_app_yaml(run: &str) -> String {
    "kind: Application
name: refused
version: \"1.0\"
services:
  - name: tiny
    image: @IMAGE@
    args: [demo, tick, --every, 1s]
    resources: { memory: 1Mi }
---
kind: Deployment
name: refused-e2e
application: refused
placement:
  sites: \"run == @RUN@\"
"
    .replace("@IMAGE@", IMAGE)
    .replace("@RUN@", run)
}

/// Issue 12, item 14: a create that kept failing was retried five times a pass, 27 events in
/// 18 s.
#[test]
fn a_create_that_keeps_failing_backs_off_and_folds_its_events() {
    let mut f = Fixture::new();
    f.enroll();
    f.apply("refused.yaml", &refused_app_yaml(&f.run));
    let name = format!("atoll_{}_refused-e2e_tiny_0", f.site);
    let prefix = format!("cannot create {name}: ");
    let first = eventually("the refusal reported", Duration::from_secs(60), || {
        f.events()
            .iter()
            .filter_map(|e| e["message"].as_str())
            .find(|m| m.starts_with(&prefix))
            .map(str::to_owned)
            .ok_or_else(|| "not yet".to_owned())
    });
    assert!(first.contains("6MB"), "Docker's words: {first}");
    let started = Instant::now();
    let events = eventually(
        "the repeats folded into one event with a count",
        Duration::from_secs(75),
        || {
            let events = f.events();
            let folded = events
                .iter()
                .filter_map(|e| e["message"].as_str())
                .any(|m| m.starts_with(&prefix) && m.ends_with(" times)"));
            if folded {
                Ok(events)
            } else {
                Err(format!("{events:#?}"))
            }
        },
    );
    let window = started.elapsed();
    let about: Vec<&str> = events
        .iter()
        .filter_map(|e| e["message"].as_str())
        .filter(|m| m.starts_with(&prefix))
        .collect();
    let tries = stored_occurrences(&events, &first);
    println!(
        "FIGURE failing create: {tries} tries in {:.1} s, {} events",
        window.as_secs_f64(),
        about.len()
    );
    assert!(about.len() <= 3, "{about:#?}");
    // 1 s doubling: a try at 0, 1, 3, 7, 15, 31, 63 s after the first.
    assert!(
        tries as f64 <= 3.0 + window.as_secs_f64() / 4.0,
        "spaced out: {tries} tries in {window:?}: {about:#?}"
    );
    assert!(tries >= 3, "tried again: {about:#?}");
    let status = f.cp().cli(&["status", "refused", "-o", "json"]);
    status.ok("status");
    let replica = &status.json()["sites"][0]["services"]["tiny"][0];
    assert_eq!(replica["state"], "failed", "{replica}");
    assert!(
        replica["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot be created")),
        "{replica}"
    );
}
