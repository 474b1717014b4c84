//! Helpers for the rollout end-to-end tests (`tests/rollout.rs`): a fleet of sites, each with
//! its own `atoll agent` process, one real control plane, the local Docker Engine, and a
//! sampler that watches Docker and the rollout view side by side.
//!
//! Self-contained on purpose: it shares no code with `tests/support`, which other tests own.
//! Every fleet owns unique site names, its temporary folders and its ports; a guard kills its
//! processes and removes every container labelled with its sites however the test ends. Waits
//! poll a condition until a deadline; nothing sleeps for a fixed time.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use atoll_api::agent::{AppStatus, RolloutView};

/// The binary under test.
pub const ATOLL: &str = env!("CARGO_BIN_EXE_atoll");
/// The demo image, imported once per test run from the binary under test; a tag of its own so
/// that other test files importing theirs at the same time do not race with this one.
pub const IMAGE: &str = "atoll.local/demo:e2e-rollout";
/// How often a sampler or a wait looks again.
pub const POLL: Duration = Duration::from_millis(200);
/// How long a control plane may take to say where it listens.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// Environment variables that would change what a child process does.
const ATOLL_ENV: [&str; 10] = [
    "ATOLL_CONFIG",
    "ATOLL_URL",
    "ATOLL_TOKEN",
    "ATOLL_CA_FILE",
    "ATOLL_DATA_DIR",
    "ATOLL_LISTEN",
    "ATOLL_LOG",
    "ATOLL_CONTROL",
    "ATOLL_JOIN_TOKEN",
    "ATOLL_AGENT_DATA_DIR",
];

// ---------------------------------------------------------------------------------------------
// Processes

/// What a finished command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    /// `None` when killed by a signal.
    pub code: Option<i32>,
}

impl Out {
    #[track_caller]
    pub fn expect_code(&self, code: i32, what: &str) -> &Out {
        assert_eq!(
            self.code,
            Some(code),
            "{what}: expected exit code {code}\n--- stdout:\n{}\n--- stderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    #[track_caller]
    pub fn ok(&self, what: &str) -> &Out {
        self.expect_code(0, what)
    }
}

/// An `atoll` command with the atoll environment cleared and HOME pointed at `home`.
pub fn atoll_command(home: &Path) -> Command {
    let mut cmd = Command::new(ATOLL);
    for var in ATOLL_ENV {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"));
    cmd
}

/// Runs a command to completion with stdin closed.
pub fn run(mut cmd: Command) -> Out {
    let program = format!("{:?}", cmd.get_program());
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    Out {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code(),
    }
}

/// A long-running process whose output is collected in the background; killed when dropped.
#[derive(Debug)]
pub struct Process {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_str(&line),
            }
        }
    });
}

impl Process {
    pub fn spawn(mut cmd: Command) -> Process {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ATOLL}: {e}"));
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        collect(child.stdout.take().unwrap(), stdout.clone());
        collect(child.stderr.take().unwrap(), stderr.clone());
        Process {
            child,
            stdout,
            stderr,
        }
    }

    pub fn stdout(&self) -> String {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the process has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGKILL (what `Child::kill` sends on Unix), then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------------
// The control plane

/// A running `atoll control`, with a CLI environment to talk to it.
#[derive(Debug)]
pub struct ControlPlane {
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    process: Process,
}

impl ControlPlane {
    /// `atoll control --data-dir DIR --listen LISTEN`, once it says where it listens.
    pub fn start_on(dir: &Path, listen: &str) -> ControlPlane {
        let mut cmd = atoll_command(dir);
        cmd.arg("control")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(listen);
        let mut process = Process::spawn(cmd);
        const MARK: &str = "atoll control plane listening on ";
        let end = Instant::now() + START_DEADLINE;
        let url = loop {
            if let Some(url) = process.stdout().lines().find_map(|l| l.strip_prefix(MARK)) {
                break url.trim().to_owned();
            }
            if process.exited() || Instant::now() >= end {
                // The collectors may still be draining the pipes.
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "atoll control --listen {listen} did not say where it listens\n--- \
                     stdout:\n{}\n--- stderr:\n{}",
                    process.stdout(),
                    process.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        assert!(
            url.starts_with("https://127.0.0.1:") && !url.ends_with(":0"),
            "unexpected URL {url:?}"
        );
        ControlPlane {
            dir: dir.to_owned(),
            url,
            process,
        }
    }

    /// `127.0.0.1:PORT`, as `--listen` takes it.
    pub fn address(&self) -> &str {
        self.url.strip_prefix("https://").unwrap_or(&self.url)
    }

    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    fn token(&self) -> String {
        std::fs::read_to_string(self.dir.join("initial-admin-token"))
            .expect("initial-admin-token")
            .trim()
            .to_owned()
    }

    /// Runs the CLI against this control plane.
    pub fn cli(&self, args: &[&str]) -> Out {
        let mut cmd = atoll_command(&self.dir);
        cmd.args(args)
            .env("ATOLL_CONFIG", self.dir.join("test-cli-config.json"))
            .env("ATOLL_URL", &self.url)
            .env("ATOLL_TOKEN", self.token())
            .env("ATOLL_CA_FILE", self.dir.join("ca.pem"));
        run(cmd)
    }
}

// ---------------------------------------------------------------------------------------------
// Docker

/// Runs the docker CLI to completion.
pub fn docker(args: &[&str]) -> Out {
    let mut cmd = Command::new("docker");
    cmd.args(args);
    let output = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("cannot run the docker CLI ({e}): the rollout end-to-end tests need Docker")
    });
    Out {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code(),
    }
}

/// Fails the test, saying why, unless a Docker Engine answers.
pub fn require_docker() {
    let out = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        out.code == Some(0) && !out.stdout.trim().is_empty(),
        "Docker is unreachable: the rollout end-to-end tests need a local Docker Engine \
         (DOCKER_HOST, or /var/run/docker.sock). `docker version` said:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// Imports the binary under test as [`IMAGE`], once per test process.
pub fn demo_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let home = tempfile::tempdir().unwrap();
        let mut cmd = atoll_command(home.path());
        cmd.args(["demo", "image", "--tag", IMAGE]);
        run(cmd).ok("atoll demo image");
    });
}

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
    let out = docker(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label=io.atoll.deployment={deployment}"),
        "--format",
        "{{.ID}} {{.State}} {{.Label \"io.atoll.site\"}} {{.Label \"io.atoll.version\"}}",
    ]);
    out.ok("docker ps");
    let mut sites: BTreeMap<String, Vec<Ctr>> = BTreeMap::new();
    for line in out.stdout.lines() {
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

/// Removes every container labelled with one of `sites`, and never panics: it runs while a
/// failed test unwinds.
pub fn remove_site_containers(sites: &BTreeSet<String>) {
    let Ok(out) = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--no-trunc",
            "--filter",
            "label=io.atoll.site",
            "--format",
            "{{.ID}} {{.Label \"io.atoll.site\"}}",
        ])
        .stdin(Stdio::null())
        .output()
    else {
        return;
    };
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, site)| sites.contains(site.trim()))
        .map(|(id, _)| id.to_owned())
        .collect();
    if !ids.is_empty() {
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&ids)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

// ---------------------------------------------------------------------------------------------
// Time and names

/// Milliseconds since the epoch of an RFC 3339 UTC timestamp (`...Z`, any fraction).
#[track_caller]
pub fn unix_ms(rfc3339: &str) -> u64 {
    let bad = || panic!("not an RFC 3339 UTC timestamp: {rfc3339:?}");
    let Some((date, time)) = rfc3339.split_once('T') else {
        bad()
    };
    let date: Vec<i64> = date.split('-').map(|p| p.parse().unwrap()).collect();
    let time = time.trim_end_matches('Z');
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let hms: Vec<i64> = hms.split(':').map(|p| p.parse().unwrap()).collect();
    if date.len() != 3 || hms.len() != 3 {
        bad();
    }
    let millis: i64 = format!("{fraction:0<3}")[..3].parse().unwrap_or(0);
    let (y, m, d) = (date[0], date[1], date[2]);
    // Days from civil, after Howard Hinnant.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hms[0] * 3600 + hms[1] * 60 + hms[2];
    u64::try_from(secs * 1000 + millis).unwrap()
}

/// A short random tag that starts with a letter: a DNS-label-safe prefix for names.
pub fn unique() -> String {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("r{hex}")
}

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

/// Polls `check` every [`POLL`] until it returns `Ok`; past `deadline`, fails with `what` and
/// the last `Err`.
#[track_caller]
pub fn eventually<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        let round = Instant::now();
        match check() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() >= deadline => {
                panic!("{what}: not within {deadline:?}; last seen:\n{seen}")
            }
            Err(_) => thread::sleep(POLL.saturating_sub(round.elapsed())),
        }
    }
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

/// Removes every container labelled with the fleet's sites, however the test ends (after the
/// fleet has killed its processes).
#[derive(Debug)]
pub struct Cleanup {
    sites: BTreeSet<String>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        remove_site_containers(&self.sites);
    }
}

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
        demo_image();
        let tag = unique();
        let sites: Vec<String> = (1..=n).map(|i| format!("{tag}-s{i:02}")).collect();
        let tmp = tempfile::tempdir().unwrap();
        let cleanup = Cleanup {
            sites: sites.iter().cloned().collect(),
        };
        let cp = ControlPlane::start_on(&tmp.path().join("data"), "127.0.0.1:0");
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
            let out = fleet.cp().cli(&["token", "create", "--site", &site]);
            out.ok(&format!("token create --site {site}"));
            let token = out.stdout.trim().to_owned();
            assert!(token.starts_with("atoll1."), "{}", out.stdout);
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
        let mut cmd = atoll_command(self.tmp.path());
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(self.agent_dir(site))
            .args(["--interval", "2s"])
            .env("ATOLL_LOG", "warn");
        if let Some((url, token)) = enroll {
            cmd.args(["--control", url, "--token", token]);
        }
        self.agents
            .insert(site.to_owned(), Some(Process::spawn(cmd)));
    }

    /// Sends `signal` (`STOP`, `CONT`) to `site`'s agent: a stopped agent keeps its
    /// containers running but says nothing, as a host that hangs or a process far into its
    /// reconnection backoff would.
    pub fn signal_agent(&self, site: &str, signal: &str) {
        let pid = self
            .agents
            .get(site)
            .and_then(Option::as_ref)
            .map(|p| p.child.id())
            .unwrap_or_else(|| panic!("the agent of {site} does not run"));
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
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
        let mut cp = self.cp.take().expect("the control plane runs");
        let address = cp.address().to_owned();
        cp.kill9();
        address
    }

    /// Starts the control plane again on its data folder, at the address its agents know.
    pub fn restart_control_plane(&mut self, address: &str) {
        assert!(self.cp.is_none(), "the control plane runs");
        let cp = ControlPlane::start_on(&self.tmp.path().join("data"), address);
        assert_eq!(cp.address(), address);
        self.cp = Some(cp);
    }

    #[track_caller]
    pub fn apply(&self, file: &str, yaml: &str) -> Out {
        let path = self.tmp.path().join(file);
        std::fs::write(&path, yaml).unwrap();
        let out = self.cli(&["apply", "-f", path.to_str().unwrap()]);
        out.ok(&format!("apply {file}:\n{yaml}"));
        out
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
            let out = self.cli(&["get", "sites", "-o", "json"]);
            if out.code != Some(0) {
                return Err(format!("get sites: {}", out.stderr));
            }
            let list: serde_json::Value =
                serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let missing: Vec<&String> = self
                .sites
                .iter()
                .filter(|s| {
                    !items.iter().any(|i| {
                        i["resource"]["name"] == s.as_str()
                            && i["connected"] == true
                            && i["hosts"] == 1
                    })
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
                    r.state == atoll_api::agent::ReplicaState::Running
                        && r.version.as_deref() == Some(version)
                        && r.health == Some(atoll_api::agent::ReplicaHealth::Healthy)
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
