//! The site cluster with real agents on hosts of their own (`support::site_lan`): three hosts of
//! one site share out an application's replicas, and when a host running one dies with the
//! control plane stopped, the other hosts run it again within 15 s, on the default timers; the
//! host back, the site settles on exactly the replicas asked, the survivors untouched.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use support::site_lan::{LanHost, SiteLan};
use support::{ATOLL, ControlPlane, Process, eventually_every, run, tail, unique};

const IMAGE: &str = "atoll.local/demo:site-failover";
const SETTLE: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(200);

/// An agent of `host` with its data in `dir`, listening for its peers on the host's address.
fn start_agent(host: &LanHost, dir: &Path, enroll: Option<(&str, &str)>) -> Process {
    let mut cmd = host.command(ATOLL);
    cmd.arg("agent")
        .arg("--data-dir")
        .arg(dir)
        .args(["--interval", "2s"])
        .args(["--listen-site", &host.address.to_string()])
        .env("ATOLL_LOG", "info");
    if let Some((url, token)) = enroll {
        cmd.args(["--control", url]).env("ATOLL_JOIN_TOKEN", token);
    }
    Process::spawn(cmd)
}

/// The running containers of `service` on a host, by id, with when each started; none when its
/// engine is down.
fn running(host: &LanHost, site: &str, service: &str) -> BTreeMap<String, String> {
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

/// A running container: the index of its host, its id, when it started.
type Seen = (usize, String, String);

/// Each live host's running containers of `service`, by host index.
fn census(lan: &SiteLan, live: &[usize], site: &str, service: &str) -> Vec<Seen> {
    live.iter()
        .flat_map(|k| {
            running(&lan.hosts()[*k], site, service)
                .into_iter()
                .map(move |(id, started)| (*k, id, started))
        })
        .collect()
}

/// The agents' last words, and any panic they logged.
fn logs(agents: &[Option<Process>]) -> String {
    agents
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

/// Waits until `web` runs exactly twice on two distinct live hosts and `probe` once on each
/// live host, and stays so for a few seconds; returns the web replicas (host, id, started).
#[track_caller]
fn settled(
    lan: &SiteLan,
    live: &[usize],
    site: &str,
    agents: &[Option<Process>],
    what: &str,
) -> Vec<Seen> {
    let mut stable_since: Option<(Instant, Vec<Seen>)> = None;
    eventually_every(what, SETTLE, POLL, || {
        let web = census(lan, live, site, "web");
        let probe = census(lan, live, site, "probe");
        let web_hosts: BTreeSet<usize> = web.iter().map(|(k, _, _)| *k).collect();
        let probe_hosts: BTreeSet<usize> = probe.iter().map(|(k, _, _)| *k).collect();
        let good = web.len() == 2
            && web_hosts.len() == 2
            && probe.len() == live.len()
            && probe_hosts.len() == live.len();
        if !good {
            stable_since = None;
            return Err(format!("web {web:?}\nprobe {probe:?}\n{}", logs(agents)));
        }
        match &stable_since {
            Some((since, seen)) if *seen == web && since.elapsed() >= Duration::from_secs(5) => {
                Ok(web)
            }
            Some((_, seen)) if *seen == web => Err("settling".to_owned()),
            _ => {
                stable_since = Some((Instant::now(), web));
                Err("settling".to_owned())
            }
        }
    })
}

#[test]
fn a_dead_hosts_replica_runs_elsewhere_within_15_s_offline_and_its_return_changes_nothing() {
    let mut lan = SiteLan::new(3);
    let tmp = tempfile::tempdir().unwrap();
    let id = unique();
    let site = format!("fo-{id}");
    let data = tmp.path().join("control");
    let mut cp = ControlPlane::start_on(&data, &format!("{}:0", lan.gateway()));
    let url = format!("https://{}", cp.address());
    for host in lan.hosts() {
        let mut image = host.command(ATOLL);
        image.args(["demo", "image", "--tag", IMAGE]);
        run(image).ok("atoll demo image, into a host's engine");
    }
    cp.apply_yaml(
        &tmp.path().join("site.yaml"),
        &format!(
            "kind: Site\nname: {site}\nlabels: {{ run: {id} }}\n---\n\
             kind: Application\nname: shop-{id}\nversion: 1.0.0\nservices:\n\
             \x20 - name: web\n    image: {IMAGE}\n    args: [demo, tick, --every, 1s]\n    replicas: 2\n\
             \x20 - name: probe\n    image: {IMAGE}\n    args: [demo, tick, --every, 1s]\n    mode: every-host\n\
             ---\nkind: Deployment\nname: shop-{id}\napplication: shop-{id}\nplacement:\n  sites: run == {id}\n"
        ),
    )
    .ok("apply the site and the application");
    let dirs: Vec<PathBuf> = (0..3)
        .map(|k| tmp.path().join(format!("agent{k}")))
        .collect();
    let mut agents: Vec<Option<Process>> = (0..3)
        .map(|k| {
            let (token, _) = cp.join_token(&site, &[]);
            Some(start_agent(&lan.hosts()[k], &dirs[k], Some((&url, &token))))
        })
        .collect();
    let all = [0, 1, 2];
    let web = settled(
        &lan,
        &all,
        &site,
        &agents,
        "the replicas spread over the three hosts",
    );

    // The control plane shows each host's role: one leads, the others follow.
    eventually_every("one leader among the hosts", SETTLE, POLL, || {
        let out = cp.cli(&["get", "hosts", "--site", &site, "-o", "json"]);
        let hosts = out.json();
        let roles: Vec<String> = hosts["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|h| {
                h["status"]["cluster"]["role"]
                    .as_str()
                    .unwrap_or("-")
                    .to_owned()
            })
            .collect();
        let leaders = roles.iter().filter(|r| *r == "leader").count();
        let followers = roles
            .iter()
            .filter(|r| *r == "voter" || *r == "non_voter")
            .count();
        (leaders == 1 && followers == 2)
            .then_some(())
            .ok_or_else(|| format!("roles {roles:?}"))
    });

    // The control plane stops; a host running a web replica dies, its agent and containers.
    cp.kill9();
    let (victim, _, _) = web[0].clone();
    let survivor = web[1].clone();
    let live: Vec<usize> = all.iter().copied().filter(|k| *k != victim).collect();
    let killed = Instant::now();
    lan.host(victim).kill();
    if let Some(mut agent) = agents[victim].take() {
        agent.kill9();
    }
    let moved = eventually_every(
        "the dead host's replica runs on another host",
        Duration::from_secs(30),
        POLL,
        || {
            let web = census(&lan, &live, &site, "web");
            (web.len() == 2)
                .then(|| killed.elapsed())
                .ok_or_else(|| format!("web {web:?}\n{}", logs(&agents)))
        },
    );
    assert!(
        moved <= Duration::from_secs(15),
        "the replica ran again {moved:?} after its host died\n{}",
        logs(&agents)
    );
    eprintln!("the dead host's replica ran again {moved:?} after its death");
    let web = census(&lan, &live, &site, "web");
    assert!(
        web.contains(&survivor),
        "the survivor was not touched: {web:?}"
    );

    // The host comes back, offline still: exactly two web replicas, the survivors untouched.
    let after_loss = settled(
        &lan,
        &live,
        &site,
        &agents,
        "the site settles without the dead host",
    );
    lan.host(victim).start_docker();
    agents[victim] = Some(start_agent(&lan.hosts()[victim], &dirs[victim], None));
    let back = settled(
        &lan,
        &all,
        &site,
        &agents,
        "the site settles with the host back",
    );
    assert_eq!(
        back, after_loss,
        "no web replica moved or restarted when the dead host came back"
    );
    drop(agents);
}
