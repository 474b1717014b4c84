//! Shared helpers for the end-to-end tests: the real `atoll` binary as a control plane (or as
//! `atoll dev`) and as agents, the CLI run against it, an HTTPS client that trusts only its CA,
//! and the local Docker Engine (the demo image, listings by label, a cleanup guard).
//!
//! Every test works in its own temporary folder and lets the OS pick ports, so tests run in
//! parallel. Nothing sleeps for a fixed time: waits poll a condition until a deadline.

// Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod site_cluster;
pub mod site_lan;

use std::collections::BTreeSet;
use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub const ATOLL: &str = env!("CARGO_BIN_EXE_atoll");

/// How long a control plane may take to print its "listening on" line.
pub const START_DEADLINE: Duration = Duration::from_secs(30);

/// The bundled examples folder.
pub fn examples() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples"))
}

/// Environment variables that would change what a child process does; each run clears them
/// and sets only what it means to.
const ATOLL_ENV: [&str; 16] = [
    "ATOLL_CONFIG",
    "ATOLL_URL",
    "ATOLL_TOKEN",
    "ATOLL_CA_FILE",
    "ATOLL_DATA_DIR",
    "ATOLL_STORE",
    "ATOLL_LISTEN",
    "ATOLL_LOG",
    "ATOLL_CONTROL",
    "ATOLL_JOIN_TOKEN",
    "ATOLL_AGENT_DATA_DIR",
    "ATOLL_SECRETS_DIR",
    "ATOLL_HOST_ROOT",
    "ATOLL_LISTEN_SITE",
    "ATOLL_PEERS",
    "ATOLL_MASTER_KEY",
];

/// What a finished command printed, and how it exited.
#[derive(Debug, Clone)]
pub struct Out {
    pub stdout: String,
    pub stderr: String,
    /// The exit code; `None` if the process was killed by a signal.
    pub code: Option<i32>,
}

impl Out {
    /// Panics, showing everything printed, unless the command exited with `code`.
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

    /// Standard output parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\n--- stderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// A command with the atoll environment cleared, and HOME and XDG_CONFIG_HOME pointed at
/// `home` so that no user's config can leak in.
pub fn atoll_command(home: &Path) -> Command {
    let mut cmd = Command::new(ATOLL);
    for var in ATOLL_ENV {
        cmd.env_remove(var);
    }
    cmd.env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("xdg"));
    cmd
}

/// `atoll agent --data-dir DIR --interval 2s` with `ATOLL_LOG=LOG` and HOME at `home`, enrolling
/// with `--control URL --token TOKEN` when given (an enrolled agent needs only its folder).
pub fn agent_command(
    home: &Path,
    data_dir: &Path,
    log: &str,
    enroll: Option<(&str, &str)>,
) -> Command {
    let mut cmd = atoll_command(home);
    cmd.arg("agent")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--interval", "2s"])
        .env("ATOLL_LOG", log);
    if let Some((url, token)) = enroll {
        cmd.args(["--control", url, "--token", token]);
    }
    cmd
}

/// Runs a command to completion with stdin closed.
pub fn run(mut cmd: Command) -> Out {
    let program = cmd.get_program().to_string_lossy().into_owned();
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

/// A long-running `atoll` process whose output is collected in the background.
#[derive(Debug)]
pub struct Process {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    /// The threads collecting stdout and stderr; they end at end of file.
    collectors: Vec<thread::JoinHandle<()>>,
}

/// Locks `m`, even if a thread panicked holding it: the guards read it while a failed test
/// unwinds.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => lock(&into).push_str(&line),
            }
        }
    })
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
        let collectors = vec![
            collect(child.stdout.take().unwrap(), stdout.clone()),
            collect(child.stderr.take().unwrap(), stderr.clone()),
        ];
        Process {
            child,
            stdout,
            stderr,
            collectors,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (`deadline` at most) for the process to exit, then for its output to be collected
    /// whole; `None` if it is still running at the deadline.
    pub fn wait_exit(&mut self, deadline: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                for collector in self.collectors.drain(..) {
                    let _ = collector.join();
                }
                return Some(status);
            }
            if Instant::now() >= end {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stdout(&self) -> String {
        lock(&self.stdout).clone()
    }

    pub fn stderr(&self) -> String {
        lock(&self.stderr).clone()
    }

    /// Sends `signal` (`STOP`, `CONT`, ...) with `kill -SIGNAL PID`, which must succeed.
    #[track_caller]
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits until standard output contains `needle`; panics with everything printed so far if
    /// the deadline passes or the process exits first.
    #[track_caller]
    pub fn wait_for_stdout(&mut self, needle: &str, deadline: Duration) -> String {
        let end = Instant::now() + deadline;
        loop {
            let out = self.stdout();
            if out.contains(needle) {
                return out;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // The collector threads may still be draining the pipes.
                let out = wait_until(Duration::from_secs(2), || {
                    let o = self.stdout();
                    o.contains(needle).then_some(o)
                });
                if let Some(out) = out {
                    return out;
                }
                panic!(
                    "atoll exited ({status}) before printing {needle:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            if Instant::now() >= end {
                panic!(
                    "atoll did not print {needle:?} within {deadline:?}\n--- stdout:\n{}\n--- stderr:\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
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

/// Polls `f` every 20 ms until it returns `Some`, or `deadline` passes.
pub fn wait_until<T>(deadline: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + deadline;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` until it returns `Ok`, pausing `pause` after each look, and returns that value.
/// Past `deadline`, fails with `what` and the last `Err` (a description of what was seen
/// instead).
#[track_caller]
pub fn eventually_every<T>(
    what: &str,
    deadline: Duration,
    pause: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if start.elapsed() >= deadline => {
                panic!("{what}: not within {deadline:?}; last seen:\n{seen}")
            }
            Err(_) => thread::sleep(pause),
        }
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A short random lowercase hex string (8 digits), for unique names.
pub fn unique() -> String {
    let mut bytes = [0u8; 4];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

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

/// A running `atoll control` on a data folder, with a CLI environment to talk to it.
#[derive(Debug)]
pub struct ControlPlane {
    /// The data folder.
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    process: Process,
}

impl ControlPlane {
    /// Starts `atoll control --data-dir DIR --listen 127.0.0.1:0` and waits (30 s at most) for
    /// the line saying where it listens.
    pub fn start(dir: &Path) -> ControlPlane {
        Self::start_on(dir, "127.0.0.1:0")
    }

    /// Starts `atoll control --data-dir DIR --listen LISTEN`: with the address of a control
    /// plane that was stopped, the same control plane comes back where its agents look for it.
    pub fn start_on(dir: &Path, listen: &str) -> ControlPlane {
        Self::start_with(dir, listen, &[])
    }

    /// `start_on` with more arguments for `atoll control`.
    pub fn start_with(dir: &Path, listen: &str, extra: &[&str]) -> ControlPlane {
        let mut cmd = atoll_command(dir);
        cmd.arg("control")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(listen)
            .args(extra);
        let mut process = Process::spawn(cmd);
        const MARK: &str = "atoll control plane listening on ";
        // Output is collected whole lines at a time, so the line is complete once seen.
        let out = process.wait_for_stdout(MARK, START_DEADLINE);
        let url = out
            .lines()
            .find_map(|l| l.strip_prefix(MARK))
            .unwrap()
            .trim()
            .to_owned();
        assert!(
            url.starts_with("https://") && !url.ends_with(":0"),
            "unexpected URL {url:?}"
        );
        ControlPlane {
            dir: dir.to_owned(),
            url,
            process,
        }
    }

    /// The control plane's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// `IP:PORT` (`127.0.0.1:PORT` unless started on another address): where this control plane listens, as `--listen` takes it.
    pub fn address(&self) -> &str {
        self.url.strip_prefix("https://").unwrap_or(&self.url)
    }

    /// [`ControlPlane::start_on`] the address of a control plane that was killed, which it
    /// must get again: where its agents look for it.
    #[track_caller]
    pub fn restart(dir: &Path, address: &str) -> ControlPlane {
        let cp = Self::start_on(dir, address);
        assert_eq!(cp.address(), address);
        cp
    }

    /// Kills the control plane with SIGKILL and waits for it to be gone.
    pub fn kill9(&mut self) {
        self.process.kill9();
    }

    /// Kills the control plane with SIGKILL, as a crash would; the address it listened on, for
    /// [`ControlPlane::restart`] on its data folder.
    pub fn crash(mut self) -> String {
        self.kill9();
        self.address().to_owned()
    }

    pub fn stdout(&self) -> String {
        self.process.stdout()
    }

    pub fn stderr(&self) -> String {
        self.process.stderr()
    }

    pub fn token(&self) -> String {
        std::fs::read_to_string(self.token_file())
            .expect("initial-admin-token")
            .trim()
            .to_owned()
    }

    pub fn token_file(&self) -> PathBuf {
        self.dir.join("initial-admin-token")
    }

    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// The per-test CLI config file (never written unless a test logs in with it).
    pub fn config_file(&self) -> PathBuf {
        self.dir.join("test-cli-config.json")
    }

    /// A CLI command with this control plane's URL, token and CA in the environment.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut cmd = atoll_command(&self.dir);
        cmd.args(args)
            .env("ATOLL_CONFIG", self.config_file())
            .env("ATOLL_URL", &self.url)
            .env("ATOLL_TOKEN", self.token())
            .env("ATOLL_CA_FILE", self.ca_file());
        cmd
    }

    /// Runs the CLI against this control plane.
    pub fn cli(&self, args: &[&str]) -> Out {
        run(self.cli_command(args))
    }

    /// Runs the CLI, with `ATOLL_*` variables overridden by `env`.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut cmd = self.cli_command(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        run(cmd)
    }

    /// `atoll apply -f examples/`, which must succeed.
    pub fn apply_examples(&self) -> Out {
        self.cli(&["secret", "generate", "pos-db-password", "password"])
            .ok("the examples' secret");
        let out = self.cli(&["apply", "-f", examples().to_str().unwrap()]);
        out.ok("apply examples");
        out
    }

    /// Writes `yaml` to `path` and applies it, which must succeed.
    #[track_caller]
    pub fn apply_yaml(&self, path: &Path, yaml: &str) -> Out {
        std::fs::write(path, yaml).unwrap();
        let out = self.cli(&["apply", "-f", path.to_str().unwrap()]);
        out.ok(&format!("apply {}:\n{yaml}", path.display()));
        out
    }

    /// `token create --site SITE ARGS...`, which must succeed: the join token, and what was said
    /// on stderr.
    #[track_caller]
    pub fn join_token(&self, site: &str, args: &[&str]) -> (String, String) {
        let mut all = vec!["token", "create", "--site", site];
        all.extend_from_slice(args);
        let out = self.cli(&all);
        out.ok(&all.join(" "));
        let token = out.stdout.trim().to_owned();
        assert!(token.starts_with("atoll1."), "{}", out.stdout);
        (token, out.stderr)
    }

    /// The items of `get sites -o json`; `Err` with what was said when it fails.
    pub fn sites(&self) -> Result<Vec<serde_json::Value>, String> {
        let out = self.cli(&["get", "sites", "-o", "json"]);
        if out.code != Some(0) {
            return Err(format!("get sites: {}", out.stderr));
        }
        let list: serde_json::Value = serde_json::from_str(&out.stdout)
            .map_err(|e| format!("get sites -o json ({e}): {}", out.stdout))?;
        Ok(list["items"].as_array().cloned().unwrap_or_default())
    }

    /// `get manifest SITE -o json`, which must succeed.
    #[track_caller]
    pub fn manifest(&self, site: &str) -> serde_json::Value {
        let out = self.cli(&["get", "manifest", site, "-o", "json"]);
        out.ok(&format!("get manifest {site}"));
        out.json()
    }

    #[track_caller]
    pub fn revision(&self, site: &str) -> u64 {
        let m = self.manifest(site);
        m["revision"]
            .as_u64()
            .unwrap_or_else(|| panic!("manifest of {site} has no revision: {m}"))
    }

    /// An HTTPS client that trusts only this control plane's CA.
    pub fn http(&self) -> reqwest::Client {
        https_client(&std::fs::read(self.ca_file()).expect("ca.pem"))
    }
}

/// Enrolls a host for `site` in-process, with its own key and certificate kept in `agent_dir`,
/// reporting `inventory`: a host the control plane knows, without an agent or Docker.
pub async fn enroll_host(
    cp: &ControlPlane,
    agent_dir: &Path,
    site: &str,
    inventory: atoll_api::agent::Inventory,
) -> atoll_agent::shell::identity::Identity {
    let (token, _) = cp.join_token(site, &[]);
    std::fs::create_dir_all(agent_dir).unwrap();
    atoll_agent::shell::identity::Identity::enroll(
        agent_dir,
        &cp.url,
        &atoll_api::agent::JoinToken::parse(&token).unwrap(),
        inventory,
    )
    .await
    .expect("enrollment")
}

/// A reqwest client whose only trusted root is the CA in `ca_pem`, as the CLI builds it.
pub fn https_client(ca_pem: &[u8]) -> reqwest::Client {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;

    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem) {
        roots.add(cert.expect("PEM certificate")).expect("root");
    }
    assert!(!roots.is_empty(), "no certificate in ca.pem");
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("TLS versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client")
}

/// Names of the items of a `get ... -o json` list, in order.
#[track_caller]
pub fn item_names(list: &serde_json::Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {list}"))
        .iter()
        .map(|i| {
            i["resource"]["name"]
                .as_str()
                .unwrap_or_else(|| panic!("item without resource.name: {i}"))
                .to_owned()
        })
        .collect()
}

/// Whether an item of `get sites -o json` shows its site connected, with one host.
pub fn connected(site: &serde_json::Value) -> bool {
    site["connected"] == true && site["hosts"] == 1
}

// ---------------------------------------------------------------------------------------------
// Docker

/// Runs the docker CLI to completion.
pub fn docker(args: &[&str]) -> Out {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run the docker CLI ({e}): these end-to-end tests need Docker and its CLI"
            )
        });
    Out {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        code: output.status.code(),
    }
}

/// Runs the docker CLI, which must succeed; its standard output, trimmed.
#[track_caller]
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    out.ok(&format!("docker {}", args.join(" ")));
    out.stdout.trim().to_owned()
}

/// Fails the test, saying why, unless a Docker Engine answers.
pub fn require_docker() {
    let out = docker(&["version", "--format", "{{.Server.Version}}"]);
    assert!(
        out.code == Some(0) && !out.stdout.trim().is_empty(),
        "Docker is unreachable: these end-to-end tests need a local Docker Engine \
         (DOCKER_HOST, or /var/run/docker.sock). `docker version` said:\n{}{}",
        out.stdout,
        out.stderr
    );
}

/// Imports the binary under test as the image `tag`, once per test process. Each test file has
/// a tag of its own, so that files importing theirs at the same time do not race.
pub fn demo_image(tag: &str) {
    static IMPORTED: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let mut imported = lock(&IMPORTED);
    if imported.contains(tag) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let mut cmd = atoll_command(home.path());
    cmd.args(["demo", "image", "--tag", tag]);
    run(cmd).ok("atoll demo image");
    imported.insert(tag.to_owned());
}

/// `docker ps -a --no-trunc --filter label=LABEL --format FORMAT`, which must succeed: a line a
/// container, whatever its state.
#[track_caller]
pub fn docker_ps(label: &str, format: &str) -> Vec<String> {
    docker_ok(&[
        "ps",
        "-a",
        "--no-trunc",
        "--filter",
        &format!("label={label}"),
        "--format",
        format,
    ])
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Removes, however a test ends, every container labelled with one of its sites
/// (`io.atoll.site`) and the containers it started itself. Never panics: it runs while a
/// failed test unwinds. Drop it after the agents that could recreate containers.
#[derive(Debug, Default)]
pub struct Cleanup {
    sites: BTreeSet<String>,
    containers: Mutex<Vec<String>>,
}

impl Cleanup {
    pub fn new(sites: impl IntoIterator<Item = String>) -> Cleanup {
        Cleanup {
            sites: sites.into_iter().collect(),
            containers: Mutex::default(),
        }
    }

    pub fn add_site(&mut self, site: &str) {
        self.sites.insert(site.to_owned());
    }

    /// A container (id or name) to remove too.
    pub fn add_container(&self, id: &str) {
        lock(&self.containers).push(id.to_owned());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let mut ids: Vec<String> = lock(&self.containers).clone();
        if !self.sites.is_empty()
            && let Ok(out) = Command::new("docker")
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
        {
            ids.extend(
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .filter_map(|l| l.split_once(' '))
                    .filter(|(_, site)| self.sites.contains(site.trim()))
                    .map(|(id, _)| id.to_owned()),
            );
        }
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
}

/// Gives the made-up host at `root` the sysfs entries of a USB webcam at 81:1 (`video1`), as
/// the kernel lays them out; the device node itself is the test's to make (`mknod`).
pub fn fake_camera_sysfs(root: &Path) {
    use std::os::unix::fs::symlink;

    let write = |path: &Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    let usb = root.join("sys/devices/pci0000:00/0000:00:14.0/usb1/1-1");
    write(&usb.join("idVendor"), "046d\n");
    write(&usb.join("idProduct"), "082d\n");
    write(&usb.join("serial"), "A1B2C3D4\n");
    write(&usb.join("product"), "HD Pro Webcam C920\n");
    let video = usb.join("1-1:1.0/video4linux/video1");
    write(&video.join("name"), "HD Pro Webcam C920\n");
    let class = root.join("sys/class/video4linux");
    std::fs::create_dir_all(&class).unwrap();
    let _ = symlink(&class, video.join("subsystem"));
    std::fs::create_dir_all(root.join("sys/dev/char")).unwrap();
    let _ = symlink(&video, root.join("sys/dev/char/81:1"));
}
