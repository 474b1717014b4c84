//! The control plane under test: a process of its own (this binary's `atoll control`, on a
//! scratch data folder and a free port) so that its CPU time and memory can be read from
//! `/proc` apart from the load generator's; or several, replicas on one PostgreSQL database,
//! each a process of its own for the same reason; or one already running, given by URL.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::{Child, Command};

/// How to reach a control plane and act on it as an administrator.
#[derive(Debug)]
pub struct ControlPlane {
    /// Its data folder, when this run started it: where another replica takes its keys from.
    pub dir: PathBuf,
    pub url: String,
    pub token: String,
    pub ca_pem: Vec<u8>,
    /// Its process, when it is known: what `/proc` is read for.
    pub pid: Option<u32>,
    child: Option<Child>,
    /// A scratch data folder made for this run, removed at the end.
    scratch: Option<PathBuf>,
}

impl ControlPlane {
    /// Starts `atoll control` from the `atoll` binary beside this one, on `data_dir` (a scratch
    /// folder if None), with `--store STORE` when given. A replica joining others on one
    /// database is given their keys first: every file of `keys_from`, the first replica's data
    /// folder, but its SQLite files and lock file (as ARCHITECTURE.md says replicas share them).
    pub async fn spawn(
        data_dir: Option<PathBuf>,
        store: Option<&str>,
        keys_from: Option<&Path>,
    ) -> Result<ControlPlane> {
        let (dir, scratch) = match data_dir {
            Some(dir) => (dir, None),
            None => {
                let dir = std::env::temp_dir().join(format!(
                    "atoll-bench-{}-{:08x}",
                    std::process::id(),
                    rand::random::<u32>()
                ));
                (dir.clone(), Some(dir))
            }
        };
        std::fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        if let Some(from) = keys_from {
            share_keys(from, &dir)?;
        }
        let log = std::fs::File::create(dir.join("control.log"))
            .with_context(|| format!("{}", dir.join("control.log").display()))?;
        let atoll = std::env::current_exe()
            .context("this binary's path")?
            .with_file_name("atoll");
        if !atoll.exists() {
            bail!(
                "no atoll binary at {}: the control plane is run from the atoll built beside atoll-bench (cargo build --release -p atoll)",
                atoll.display()
            );
        }
        let mut child = Command::new(&atoll)
            .arg("control")
            .arg("--data-dir")
            .arg(&dir)
            .args(["--listen", "127.0.0.1:0"])
            // Ten thousand sites enroll from this one address, each over a connection of its
            // own with no certificate yet: no real NAT sends a whole fleet's enrollments.
            .args(["--max-unauthenticated-per-address", "100000"])
            .args(store.map(|url| ["--store", url]).into_iter().flatten())
            .env("ATOLL_LOG", "warn,atoll_control::shell::service=info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the control plane")?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .context("the control plane's output is not piped")?;
        let mut lines = BufReader::new(stdout).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix("atoll control plane listening on ") {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!(
                "the control plane exited before serving; see {}",
                dir.join("control.log").display()
            )
        })
        .await
        .context("the control plane did not start within a minute")??;
        // Keep reading what it prints, so that it never writes to a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        let read = |name: &str| -> Result<Vec<u8>> {
            let path = dir.join(name);
            std::fs::read(&path).with_context(|| format!("{}", path.display()))
        };
        let token = String::from_utf8_lossy(&read(atoll_control::INITIAL_TOKEN_FILE)?)
            .trim()
            .to_owned();
        let ca_pem = read(atoll_control::CA_FILE)?;
        Ok(ControlPlane {
            dir,
            url,
            token,
            ca_pem,
            pid,
            child: Some(child),
            scratch,
        })
    }

    /// A control plane that is already running.
    pub fn existing(url: String, token: String, ca_file: &Path, pid: Option<u32>) -> Result<Self> {
        Ok(ControlPlane {
            dir: PathBuf::new(),
            url,
            token,
            ca_pem: std::fs::read(ca_file).with_context(|| format!("{}", ca_file.display()))?,
            pid,
            child: None,
            scratch: None,
        })
    }

    /// Stops the control plane this run started (SIGTERM, then SIGKILL after 10 s) and removes
    /// its scratch folder.
    pub async fn stop(mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child
                .id()
                .and_then(|p| i32::try_from(p).ok())
                .and_then(rustix::process::Pid::from_raw);
            if let Some(pid) = pid {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            if tokio::time::timeout(Duration::from_secs(10), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Copies every file of `from` but `atoll.db*`, `control.pid` and the bench's `control.log`
/// into `to`.
fn share_keys(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("{}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("atoll.db")
            || name == "control.pid"
            || name == "control.log"
            || !entry.file_type()?.is_file()
        {
            continue;
        }
        std::fs::copy(entry.path(), to.join(&name))
            .with_context(|| format!("{} to {}", entry.path().display(), to.display()))?;
    }
    Ok(())
}

/// A process's CPU time and memory, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub cpu: Duration,
    pub rss_kb: u64,
    /// The most resident memory the process has had (VmHWM).
    pub peak_rss_kb: u64,
}

/// `pid`'s usage; `None` for this process.
pub fn usage(pid: Option<u32>) -> Option<Usage> {
    let dir = pid.map_or_else(|| "/proc/self".to_owned(), |p| format!("/proc/{p}"));
    let stat = std::fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name may hold spaces: fields are counted after its closing parenthesis,
    // where the third field (state) comes first; utime and stime are the 14th and 15th.
    let fields: Vec<&str> = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    let status = std::fs::read_to_string(format!("{dir}/status")).ok()?;
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    };
    Some(Usage {
        cpu: Duration::from_micros(ticks * 1_000_000 / per_second),
        rss_kb: kb("VmRSS:")?,
        peak_rss_kb: kb("VmHWM:")?,
    })
}

/// Raises this process's limit on open files to what `wanted` needs (children inherit it):
/// every virtual site holds a connection or two, and so does the control plane for it.
/// Returns the limit now in force.
pub fn raise_open_files(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return soft;
    }
    let hard = current.maximum.unwrap_or(u64::MAX);
    // Raising the hard limit needs privilege; try, then settle for the hard limit.
    for target in [wanted, hard.min(wanted)] {
        let raised = Rlimit {
            current: Some(target),
            maximum: Some(hard.max(target)),
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return target;
        }
    }
    soft
}
