//! Shared helpers for the end-to-end tests: the real `atoll` binary as a control plane (or as
//! `atoll dev`), the CLI run against it, and an HTTPS client that trusts only its CA.
//!
//! Every test works in its own temporary folder and lets the OS pick ports, so tests run in
//! parallel. Nothing sleeps for a fixed time: waits poll a condition until a deadline.

#![allow(dead_code)]

use std::io::{BufRead as _, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
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
const ATOLL_ENV: [&str; 7] = [
    "ATOLL_CONFIG",
    "ATOLL_URL",
    "ATOLL_TOKEN",
    "ATOLL_CA_FILE",
    "ATOLL_DATA_DIR",
    "ATOLL_LISTEN",
    "ATOLL_LOG",
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

/// Runs a command to completion with stdin closed.
pub fn run(mut cmd: Command) -> Out {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {ATOLL}: {e}"));
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

fn collect(stream: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => into.lock().unwrap().push_str(&line),
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
        self.stdout.lock().unwrap().clone()
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
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
        let mut cmd = atoll_command(dir);
        cmd.arg("control")
            .arg("--data-dir")
            .arg(dir)
            .arg("--listen")
            .arg(listen);
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
            url.starts_with("https://127.0.0.1:") && !url.ends_with(":0"),
            "unexpected URL {url:?}"
        );
        ControlPlane {
            dir: dir.to_owned(),
            url,
            process,
        }
    }

    /// `127.0.0.1:PORT`: where this control plane listens, as `--listen` takes it.
    pub fn address(&self) -> &str {
        self.url.strip_prefix("https://").unwrap_or(&self.url)
    }

    /// Kills the control plane with SIGKILL and waits for it to be gone.
    pub fn kill9(&mut self) {
        self.process.kill9();
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
        let out = self.cli(&["apply", "-f", examples().to_str().unwrap()]);
        out.ok("apply examples");
        out
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
