//! Issue 14's HA test: three `atoll control` replicas on one PostgreSQL database behind a real
//! TCP load balancer (Debian's `haproxy`, TLS passed through), real `atoll agent`s on the local
//! Docker Engine and the CLI all reaching the fleet only through it, and `kill -9` of the
//! replica holding the rollout lease in the middle of a stream of applies and reports.
//!
//! What must hold afterwards: every apply that got a 2xx is there, read through another
//! replica; every agent's next poll and report go through to a survivor within 10 s of the
//! kill; the rollout started before the kill completes on every site; no report is lost or
//! stored twice, checked two ways: a reporter in this process numbers batches itself and
//! resends the last one it had acknowledged with every new one (so the survivors see resends
//! across the kill), and each real agent's on-disk sequence counter is compared with the
//! sequence the store holds for its host.
//!
//! haproxy is started by the test on a config of its own, on an address and port of its own
//! (127.0.0.2, which the replicas' certificates name through `--name`), and killed at the end.
//! Without haproxy or Docker the test fails, saying so.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use atoll_api::agent::{AgentEvent, JoinToken, Report, ReportAck, ReportRequest, RolloutView};
use atoll_store::{LeaseRow, PostgresStore, Store};
use support::{
    Cleanup, ControlPlane, Out, Process, agent_command, demo_image, eventually_every,
    require_docker, tail, unique,
};

/// The demo image, a tag of this file's own (other files import theirs at the same time).
const IMAGE: &str = "atoll.local/demo:e2e-ha";
/// Where haproxy listens: a loopback address of its own, which only `--name` puts in the
/// replicas' certificates.
const BALANCER_IP: &str = "127.0.0.2";
/// How long an agent may take to go through to a survivor after the kill.
const RECONNECT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(200);

/// The haproxy binary: on PATH, else where Debian installs it (`/usr/sbin`, off a user's PATH).
fn haproxy() -> PathBuf {
    let found = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("haproxy"))
        .chain([PathBuf::from("/usr/sbin/haproxy")])
        .find(|p| p.is_file());
    found.unwrap_or_else(|| {
        panic!(
            "haproxy is not installed: the HA test puts Debian's `haproxy` in front of the \
             replicas; run scripts/install-test-tools (or apt-get install haproxy)"
        )
    })
}

/// A port free on `ip` now, for a config file that must name it before the process binds.
fn free_port(ip: &str) -> u16 {
    TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|e| panic!("no free port on {ip}: {e}"))
        .port()
}

/// haproxy in TCP mode in front of `replicas`: each connection to the replica with the fewest
/// (agents hold theirs for good, so they spread over the replicas), a replica taken out after
/// one failed check (every 200 ms), and a connection whose replica is down sent to another.
/// Its timeouts outlast the agents' 30 s long-polls.
fn start_haproxy(dir: &Path, port: u16, replicas: &[&str]) -> Process {
    let servers: String = replicas
        .iter()
        .enumerate()
        .map(|(i, address)| format!("  server r{i} {address} check inter 200ms fall 1 rise 2\n"))
        .collect();
    let config = format!(
        "global\n  maxconn 1024\n\
         defaults\n  mode tcp\n  timeout connect 1s\n  timeout client 120s\n  timeout server 120s\n  retries 3\n  option redispatch\n\
         frontend atoll\n  bind {BALANCER_IP}:{port}\n  default_backend replicas\n\
         backend replicas\n  balance leastconn\n{servers}"
    );
    let file = dir.join("haproxy.cfg");
    std::fs::write(&file, config).unwrap();
    let mut cmd = Command::new(haproxy());
    // -db: in the foreground, so that the test's guard kills haproxy itself.
    cmd.arg("-db").arg("-f").arg(&file);
    let process = Process::spawn(cmd);
    let up = support::wait_until(Duration::from_secs(10), || {
        std::net::TcpStream::connect((BALANCER_IP, port)).ok()
    });
    assert!(
        up.is_some(),
        "haproxy does not listen on {BALANCER_IP}:{port}:\n{}",
        process.stderr()
    );
    process
}

/// Gives a replica the first one's keys: every file of its data folder but the SQLite files
/// (a PostgreSQL control plane has none) and its lock file.
fn share_keys(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("atoll.db") || name == "control.pid" || !entry.path().is_file() {
            continue;
        }
        std::fs::copy(entry.path(), to.join(&name)).unwrap();
    }
}

/// The process id in a lease holder's name (`PID-RANDOM`).
fn holder_pid(lease: &LeaseRow) -> u32 {
    lease.holder.split('-').next().unwrap().parse().unwrap()
}

/// The one-service application at `version` with an HTTP health check, and its deployment on
/// the sites labelled `run: RUN`, rolled out to a one-site canary, then half, then all.
fn web_yaml(tag: &str, version: &str) -> String {
    format!(
        "kind: Application
name: {tag}-app
version: \"{version}\"
services:
  - name: web
    image: {IMAGE}
    args: [demo, serve, --listen, \"0.0.0.0:8080\"]
    env: {{ RELEASE: \"{version}\" }}
    health:
      http: {{ port: 8080, path: /healthz }}
      interval: 1s
      failures: 2
---
kind: Deployment
name: {tag}-web
application: {tag}-app
placement: {{ sites: \"run == {tag}\" }}
rollout:
  canary: {{ sites: 1, soak: 2s }}
  waves: [\"50%\", \"100%\"]
  failure_budget: 0
  on_failure: rollback
"
    )
}

/// A second deployment on the agents' sites, applied after the kill: a new manifest every
/// agent must poll for and report on.
fn probe_yaml(tag: &str) -> String {
    format!(
        "kind: Application
name: {tag}-probe
version: \"1\"
services:
  - name: probe
    image: {IMAGE}
    args: [demo, serve, --listen, \"0.0.0.0:8081\"]
---
kind: Deployment
name: {tag}-probe
application: {tag}-probe
placement: {{ sites: \"run == {tag}\" }}
"
    )
}

/// Everything the test started, killed in order however it ends: the agents (so they
/// recreate no container), haproxy, the replicas; then the guard removes the containers.
struct Rig {
    agents: BTreeMap<String, Process>,
    haproxy: Option<Process>,
    replicas: Vec<Option<ControlPlane>>,
    _cleanup: Cleanup,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        for (site, agent) in &mut self.agents {
            agent.kill9();
            if panicking {
                eprintln!("--- agent of {site}:\n{}", tail(&agent.stderr(), 10));
            }
        }
        if let Some(mut haproxy) = self.haproxy.take() {
            haproxy.kill9();
            if panicking {
                eprintln!("--- haproxy:\n{}", tail(&haproxy.stderr(), 10));
            }
        }
        for (i, replica) in self.replicas.iter_mut().enumerate() {
            if let Some(mut replica) = replica.take() {
                replica.kill9();
                if panicking {
                    eprintln!("--- replica {i}:\n{}", tail(&replica.stderr(), 30));
                }
            }
        }
    }
}

impl Rig {
    fn replica(&self, i: usize) -> &ControlPlane {
        self.replicas[i].as_ref().expect("a live replica")
    }
}

/// The CLI through the balancer, with `replica`'s token and CA (every replica shares them).
fn cli(replica: &ControlPlane, balancer: &str, args: &[&str]) -> Out {
    replica.cli_env(args, &[("ATOLL_URL", balancer)])
}

/// `atoll rollout status DEPLOYMENT -o json` through `replica`.
fn rollout_view(replica: &ControlPlane, deployment: &str) -> Result<RolloutView, String> {
    let out = replica.cli(&["rollout", "status", deployment, "-o", "json"]);
    if out.code != Some(0) {
        return Err(format!("rollout status: {}{}", out.stdout, out.stderr));
    }
    serde_json::from_str(&out.stdout).map_err(|e| format!("{e}: {}", out.stdout))
}

fn states(view: &RolloutView) -> String {
    view.waves
        .iter()
        .flat_map(|w| &w.sites)
        .map(|s| format!("{}={}", s.site, s.state))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A stream of applies through the balancer, each creating a site of its own (`NAME-wN`,
/// labelled `n: N`, which no deployment selects), until told to stop: the numbers that got a
/// 2xx (the CLI exits 0 only then).
fn apply_stream(
    replica: &ControlPlane,
    balancer: String,
    tag: String,
    dir: PathBuf,
    stop: Arc<AtomicBool>,
) -> thread::JoinHandle<Vec<u64>> {
    let cmd = replica.cli_command(&[]);
    let envs: Vec<(String, String)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
        .collect();
    thread::spawn(move || {
        let mut acked = Vec::new();
        let mut n = 0;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let file = dir.join(format!("w{n}.yaml"));
            std::fs::write(
                &file,
                format!("kind: Site\nname: {tag}-w{n}\nlabels: {{ n: \"{n}\" }}\n"),
            )
            .unwrap();
            let mut cmd = support::atoll_command(&dir);
            for (k, v) in &envs {
                cmd.env(k, v);
            }
            cmd.env("ATOLL_URL", &balancer)
                .args(["apply", "-f", file.to_str().unwrap()]);
            if support::run(cmd).code == Some(0) {
                acked.push(n);
            }
        }
        acked
    })
}

/// What the in-process reporter saw: when each exchange failed or succeeded, and the highest
/// batch acknowledged.
#[derive(Debug, Default)]
struct Reporting {
    acked: u64,
    failures: Vec<Instant>,
    successes: Vec<Instant>,
}

/// Reports batch after batch through the balancer as the host of `site`, one event each
/// (`report N`), until told to stop; each request carries the last batch acknowledged again
/// with the new one, as an agent whose ack was lost resends it, and a failed request is sent
/// again as it was. Each request opens a connection of its own, so that the requests spread
/// over the replicas and a batch is resent to another replica than the one that stored it.
async fn report_stream(
    identity: atoll_agent::shell::identity::Identity,
    balancer: String,
    state: Arc<Mutex<Reporting>>,
    stop: Arc<AtomicBool>,
) {
    let batch = |seq: u64| Report {
        seq,
        at: atoll_agent::shell::clock::now_rfc3339(),
        events: vec![AgentEvent {
            at: atoll_agent::shell::clock::now_rfc3339(),
            kind: "ha".into(),
            message: format!("report {seq}"),
            count: None,
        }],
        status: None,
    };
    let url = format!("{balancer}/v1/sites/{}/reports", identity.site);
    let mut seq = 1;
    while !stop.load(Ordering::Relaxed) {
        let mut batches = Vec::new();
        if seq > 1 {
            batches.push(batch(seq - 1));
        }
        batches.push(batch(seq));
        let sent = identity
            .client()
            .unwrap()
            .post(&url)
            .json(&ReportRequest { batches })
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let ack = match sent {
            Ok(r) if r.status().is_success() => r.json::<ReportAck>().await.ok(),
            _ => None,
        };
        {
            let mut state = state.lock().unwrap();
            match ack {
                Some(ack) => {
                    assert!(
                        ack.acked == seq,
                        "batch {seq} answered with ack {}",
                        ack.acked
                    );
                    state.acked = seq;
                    state.successes.push(Instant::now());
                    seq += 1;
                }
                None => state.failures.push(Instant::now()),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The longest time, after `from`, between a failed exchange and the next success.
fn longest_outage(reporting: &Reporting, from: Instant) -> Duration {
    reporting
        .failures
        .iter()
        .filter(|f| **f >= from)
        .map(|f| {
            reporting
                .successes
                .iter()
                .find(|s| *s > f)
                .map_or(Duration::MAX, |s| s.duration_since(*f))
        })
        .max()
        .unwrap_or_default()
}

/// The batch files waiting in an agent's outbox, and the last sequence number it gave.
fn outbox(agent_dir: &Path) -> (usize, u64) {
    let dir = agent_dir.join("outbox");
    let waiting = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    name.ends_with(".json") && name.as_bytes()[0].is_ascii_digit()
                })
                .count()
        })
        .unwrap_or(0);
    let next: u64 = std::fs::read_to_string(dir.join("next-seq"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(1);
    (waiting, next.saturating_sub(1))
}

#[test]
fn three_replicas_behind_haproxy_lose_nothing_when_the_lease_holder_is_killed() {
    let haproxy_bin = haproxy();
    require_docker();
    demo_image(IMAGE);
    let url = atoll_store::pg_cluster::cluster().fresh_database();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = runtime.block_on(PostgresStore::open(&url)).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let tag = format!("ha{}", unique());
    let sites: Vec<String> = (1..=4).map(|i| format!("{tag}-s{i}")).collect();
    let reporter_site = format!("{tag}-rep");
    let cleanup = Cleanup::new(sites.iter().cloned());

    // Three replicas sharing the first one's keys, each naming the balancer's address.
    let port = free_port(BALANCER_IP);
    let balancer = format!("https://{BALANCER_IP}:{port}");
    let args = ["--store", url.as_str(), "--name", BALANCER_IP];
    let dirs: Vec<PathBuf> = (0..3).map(|i| tmp.path().join(format!("r{i}"))).collect();
    let first = ControlPlane::start_with(&dirs[0], "127.0.0.1:0", &args);
    let mut replicas = vec![Some(first)];
    for dir in &dirs[1..] {
        share_keys(&dirs[0], dir);
        replicas.push(Some(ControlPlane::start_with(dir, "127.0.0.1:0", &args)));
    }
    let addresses: Vec<String> = replicas
        .iter()
        .map(|r| r.as_ref().unwrap().address().to_owned())
        .collect();
    let mut rig = Rig {
        agents: BTreeMap::new(),
        haproxy: None,
        replicas,
        _cleanup: cleanup,
    };
    assert!(haproxy_bin.is_file());
    rig.haproxy = Some(start_haproxy(
        tmp.path(),
        port,
        &addresses.iter().map(String::as_str).collect::<Vec<_>>(),
    ));
    let started = Instant::now();
    let through = |rig: &Rig, args: &[&str]| cli(rig.replica(0), &balancer, args);

    // The sites, the first version everywhere, an agent per site enrolled through haproxy.
    let mut yaml: String = sites
        .iter()
        .map(|s| format!("kind: Site\nname: {s}\nlabels: {{ run: {tag} }}\n---\n"))
        .collect();
    yaml.push_str(&format!("kind: Site\nname: {reporter_site}\n---\n"));
    yaml.push_str(&web_yaml(&tag, "1.0.0"));
    std::fs::write(tmp.path().join("fleet.yaml"), &yaml).unwrap();
    through(
        &rig,
        &[
            "apply",
            "-f",
            tmp.path().join("fleet.yaml").to_str().unwrap(),
        ],
    )
    .ok("apply the fleet through haproxy");
    let agent_dir = |site: &str| tmp.path().join("agents").join(site);
    for site in &sites {
        let out = through(&rig, &["token", "create", "--site", site]);
        out.ok("token create through haproxy");
        let token = out.stdout.trim().to_owned();
        let cmd = agent_command(
            tmp.path(),
            &agent_dir(site),
            "warn",
            Some((&balancer, &token)),
        );
        rig.agents.insert(site.clone(), Process::spawn(cmd));
    }
    let deployment = format!("{tag}-web");
    let status_on = |through: &ControlPlane, version: &str| -> Result<(), String> {
        let out = cli(
            through,
            &balancer,
            &["status", &format!("{tag}-app"), "-o", "json"],
        );
        let status: atoll_api::agent::AppStatus = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("{e}: {}{}", out.stdout, out.stderr))?;
        let wrong: Vec<String> = sites
            .iter()
            .filter(|site| {
                !status.sites.iter().any(|s| {
                    &s.site == *site
                        && s.services.get("web").is_some_and(|rs| {
                            rs.len() == 1
                                && rs.iter().all(|r| {
                                    r.status.version.as_deref() == Some(version)
                                        && r.status.health
                                            == Some(atoll_api::agent::ReplicaHealth::Healthy)
                                })
                        })
                })
            })
            .cloned()
            .collect();
        if wrong.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "not on {version}, healthy: {wrong:?}\n{}",
                out.stdout
            ))
        }
    };
    eventually_every(
        "every site runs 1.0.0, healthy",
        Duration::from_secs(60),
        POLL,
        || status_on(rig.replica(0), "1.0.0"),
    );
    println!(
        "FIGURE ha: 4 agents run 1.0.0 at {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The in-process reporter, enrolled through haproxy.
    let (token, _) = {
        let out = through(&rig, &["token", "create", "--site", &reporter_site]);
        out.ok("token create");
        (out.stdout.trim().to_owned(), ())
    };
    let reporter_dir = tmp.path().join("reporter");
    std::fs::create_dir_all(&reporter_dir).unwrap();
    let identity = runtime
        .block_on(atoll_agent::shell::identity::Identity::enroll(
            &reporter_dir,
            &balancer,
            &JoinToken::parse(&token).unwrap(),
            atoll_api::agent::Inventory::default(),
        ))
        .expect("enrollment through haproxy");
    let reporter_host = identity.host.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let reporting = Arc::new(Mutex::new(Reporting::default()));
    let reporter = runtime.spawn(report_stream(
        identity,
        balancer.clone(),
        reporting.clone(),
        stop.clone(),
    ));
    let applies_dir = tmp.path().join("applies");
    std::fs::create_dir_all(&applies_dir).unwrap();
    let applies = apply_stream(
        rig.replica(0),
        balancer.clone(),
        tag.clone(),
        applies_dir,
        stop.clone(),
    );

    eventually_every(
        "the report stream under way",
        Duration::from_secs(10),
        POLL,
        || {
            let acked = reporting.lock().unwrap().acked;
            if acked >= 10 {
                Ok(())
            } else {
                Err(format!("{acked} acknowledged"))
            }
        },
    );

    // A rollout of 2.0.0, under way when the lease's holder is killed.
    std::fs::write(tmp.path().join("v2.yaml"), web_yaml(&tag, "2.0.0")).unwrap();
    through(
        &rig,
        &["apply", "-f", tmp.path().join("v2.yaml").to_str().unwrap()],
    )
    .ok("apply 2.0.0");
    let lease = || runtime.block_on(store.lease("rollouts")).unwrap();
    let held = support::wait_until(Duration::from_secs(10), || {
        lease().filter(|l| !l.holder.is_empty())
    })
    .expect("a replica holds the rollout lease");
    let victim = rig
        .replicas
        .iter()
        .position(|r| r.as_ref().is_some_and(|r| r.pid() == holder_pid(&held)))
        .unwrap_or_else(|| panic!("the lease's holder {} is one of the replicas", held.holder));
    let survivor = (victim + 1) % 3;
    let before = eventually_every(
        "the rollout stepped past its start",
        Duration::from_secs(20),
        POLL,
        || {
            let view = rollout_view(rig.replica(survivor), &deployment)?;
            let moving = view
                .waves
                .iter()
                .flat_map(|w| &w.sites)
                .any(|s| s.state != "waiting");
            if view.phase == "running" && moving {
                Ok(view)
            } else {
                Err(format!("{} {}", view.phase, states(&view)))
            }
        },
    );
    // Presence is each replica's own: the agents the victim sees are the ones polling it.
    let on_victim: Vec<String> = rig
        .replica(victim)
        .sites()
        .unwrap()
        .iter()
        .filter(|i| support::connected(i))
        .filter_map(|i| i["resource"]["name"].as_str().map(str::to_owned))
        .filter(|name| sites.contains(name))
        .collect();
    assert!(
        !on_victim.is_empty(),
        "haproxy gave the replica to be killed none of the agents' connections"
    );
    let kill_at = started.elapsed();
    rig.replicas[victim].take().unwrap().kill9();
    let killed = Instant::now();
    println!(
        "FIGURE ha: replica {victim} (the lease holder, polled by {on_victim:?}) killed with -9 at {:.1} s, the rollout at {}",
        kill_at.as_secs_f64(),
        states(&before)
    );

    // A new manifest for every agent, through haproxy: each must poll it and report on it.
    let admin = rig.replica(survivor);
    std::fs::write(tmp.path().join("probe.yaml"), probe_yaml(&tag)).unwrap();
    eventually_every(
        "an apply through haproxy after the kill",
        RECONNECT,
        POLL,
        || {
            let out = cli(
                admin,
                &balancer,
                &[
                    "apply",
                    "-f",
                    tmp.path().join("probe.yaml").to_str().unwrap(),
                ],
            );
            if out.code == Some(0) {
                Ok(())
            } else {
                Err(out.stderr)
            }
        },
    );
    let revisions: BTreeMap<String, u64> = sites
        .iter()
        .map(|s| (s.clone(), admin.revision(s)))
        .collect();
    let hosts: BTreeMap<String, String> = sites
        .iter()
        .map(|s| {
            let host = runtime.block_on(store.site_hosts(s)).unwrap();
            assert_eq!(host.len(), 1, "{s}: {host:?}");
            (host[0].id.clone(), s.clone())
        })
        .collect();
    eventually_every(
        "every agent reports the manifest published after the kill",
        RECONNECT.saturating_sub(killed.elapsed()),
        POLL,
        || {
            let statuses = runtime
                .block_on(store.host_statuses())
                .map_err(|e| e.to_string())?;
            let behind: Vec<String> = hosts
                .iter()
                .filter(|(host, site)| {
                    !statuses.iter().any(|s| {
                        &&s.host == host
                            && serde_json::from_str::<atoll_api::agent::HostStatus>(&s.status)
                                .is_ok_and(|st| st.applied_revision >= revisions[*site])
                    })
                })
                .map(|(_, site)| site.clone())
                .collect();
            if behind.is_empty() {
                Ok(())
            } else {
                Err(format!("behind {revisions:?}: {behind:?}"))
            }
        },
    );
    let reconnected = killed.elapsed();
    println!(
        "FIGURE ha: every agent polled and reported through a survivor {:.1} s after the kill",
        reconnected.as_secs_f64()
    );

    // The rollout carries on and completes, every site on 2.0.0, healthy.
    let done = eventually_every(
        "the rollout completes",
        Duration::from_secs(40),
        POLL,
        || {
            let view = rollout_view(rig.replica(survivor), &deployment)?;
            if view.phase == "complete" {
                Ok(view)
            } else {
                Err(format!("{} {}", view.phase, states(&view)))
            }
        },
    );
    let succeeded: BTreeSet<&str> = done
        .waves
        .iter()
        .flat_map(|w| &w.sites)
        .filter(|s| s.state == "succeeded")
        .map(|s| s.site.as_str())
        .collect();
    assert_eq!(
        succeeded.len(),
        sites.len(),
        "every site succeeded: {}",
        states(&done)
    );
    eventually_every(
        "every site runs 2.0.0, healthy",
        Duration::from_secs(20),
        POLL,
        || status_on(rig.replica(survivor), "2.0.0"),
    );
    let taken = lease();
    assert!(
        taken
            .as_ref()
            .is_some_and(|l| l.holder != held.holder && l.fence > held.fence),
        "the lease moved on: {taken:?} after {held:?}"
    );
    println!(
        "FIGURE ha: the rollout completed {:.1} s after the kill",
        killed.elapsed().as_secs_f64()
    );

    // Stop the streams a moment after, so that they ran on both sides of the kill.
    stop.store(true, Ordering::Relaxed);
    let acked_applies = applies.join().expect("the apply stream");
    runtime.block_on(reporter).expect("the reporter");
    let reporting = reporting.lock().unwrap();
    let outage = longest_outage(&reporting, killed - Duration::from_secs(1));
    println!(
        "FIGURE ha: {} applies answered 2xx; {} report batches acknowledged, {} exchanges failed, longest outage {:.2} s",
        acked_applies.len(),
        reporting.acked,
        reporting.failures.len(),
        outage.as_secs_f64()
    );
    assert!(outage < RECONNECT, "the reporter was cut off {outage:?}");
    assert!(
        reporting.successes.iter().any(|s| *s > killed),
        "no report went through after the kill"
    );

    // Every 2xx apply, through each survivor directly.
    for other in (0..3).filter(|i| *i != victim) {
        let items = rig.replica(other).sites().unwrap();
        let labels: BTreeMap<&str, &str> = items
            .iter()
            .filter_map(|i| {
                Some((
                    i["resource"]["name"].as_str()?,
                    i["resource"]["labels"]["n"].as_str()?,
                ))
            })
            .collect();
        for n in &acked_applies {
            let name = format!("{tag}-w{n}");
            assert_eq!(
                labels.get(name.as_str()).copied(),
                Some(n.to_string().as_str()),
                "apply {n} (2xx) through replica {other}"
            );
        }
    }

    // The reporter's batches: each stored once, none missing.
    let events = runtime
        .block_on(store.events(&reporter_site, 10_000))
        .unwrap();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for e in events.iter().filter(|e| e.host == reporter_host) {
        assert_eq!(e.message, format!("report {}", e.seq), "{e:?}");
        *seen.entry(e.seq).or_default() += 1;
    }
    let expected: BTreeMap<u64, usize> = (1..=reporting.acked).map(|s| (s, 1)).collect();
    // A batch sent but never acknowledged (the stream stopped) may be stored too, once.
    seen.retain(|seq, _| *seq <= reporting.acked);
    assert_eq!(
        seen, expected,
        "each acknowledged batch stored exactly once"
    );

    // The agents' reports: every batch acknowledged, and the store at the agent's sequence.
    eventually_every(
        "every agent's outbox drained into the store",
        Duration::from_secs(15),
        POLL,
        || {
            let statuses = runtime
                .block_on(store.host_statuses())
                .map_err(|e| e.to_string())?;
            let mut wrong = Vec::new();
            for (host, site) in &hosts {
                let (waiting, last) = outbox(&agent_dir(site));
                let stored = statuses.iter().find(|s| &s.host == host).map(|s| s.seq);
                if waiting > 0 || stored != Some(last) {
                    wrong.push(format!(
                        "{site}: {waiting} waiting, last given {last}, stored {stored:?}"
                    ));
                }
            }
            if wrong.is_empty() {
                Ok(())
            } else {
                Err(wrong.join("\n"))
            }
        },
    );
    for (host, site) in &hosts {
        let events = runtime.block_on(store.events(site, 10_000)).unwrap();
        let mut keys = BTreeSet::new();
        for e in events.iter().filter(|e| &e.host == host) {
            assert!(
                keys.insert((e.seq, e.idx)),
                "{site}: event stored twice: {e:?}"
            );
        }
        assert!(
            !std::fs::read_to_string(agent_dir(site).join("outbox/dropped"))
                .is_ok_and(|d| d.trim() != "0"),
            "{site}: the agent dropped reports"
        );
    }
    println!(
        "FIGURE ha: done {:.1} s after the start",
        started.elapsed().as_secs_f64()
    );
}
