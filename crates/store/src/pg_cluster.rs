//! A throwaway PostgreSQL cluster for tests: Debian's `postgresql` binaries, no fake.
//!
//! One cluster per test process, started on first use (`initdb` into a temporary folder,
//! `pg_ctl start` on a free loopback port with its unix socket in that folder too) and shared
//! by the process's tests, each of which takes a fresh database. As root, initdb refuses to
//! run, so the cluster runs as the `postgres` user.
//!
//! Stopping it cannot rely on a destructor (statics are never dropped): a guard process
//! started with the cluster reads a pipe that only this process holds open, and when the pipe
//! closes (the test process ended, however it ended) it stops the cluster and removes its
//! folder. So no postgres outlives `cargo test`.
//!
//! A machine without PostgreSQL fails the tests, naming the package: they are never skipped.

use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The user the cluster runs as when the tests run as root.
const CLUSTER_USER: &str = "postgres";

/// A running cluster; stopped when the process that started it ends.
#[derive(Debug)]
pub struct Cluster {
    port: u16,
    bin: PathBuf,
    /// Held open for the life of the process: its closing tells the guard to stop the cluster.
    _guard: ChildStdin,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
static DATABASES: AtomicU64 = AtomicU64::new(0);

/// The process's cluster, started on the first call. Panics, saying what to install or what
/// failed: a test that needs PostgreSQL must fail without it.
pub fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(start) {
        Ok(cluster) => cluster,
        Err(e) => panic!("{e}"),
    }
}

impl Cluster {
    /// The URL of database `db` in this cluster.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{CLUSTER_USER}@127.0.0.1:{}/{db}", self.port)
    }

    /// Makes a new, empty database (`t_<number>`) and returns its URL.
    pub fn fresh_database(&self) -> String {
        let name = format!("t_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        let port = self.port.to_string();
        let out = Command::new(self.bin.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &port, "-U", CLUSTER_USER, &name])
            .output();
        match out {
            Ok(out) if out.status.success() => self.url(&name),
            Ok(out) => panic!(
                "createdb {name} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => panic!("cannot run createdb: {e}"),
        }
    }
}

/// Where `initdb` and its siblings are: on PATH, else the newest of Debian's
/// `/usr/lib/postgresql/VERSION/bin`.
fn find_bin() -> Result<PathBuf, String> {
    find_bin_in(
        std::env::var_os("PATH").as_deref(),
        Path::new("/usr/lib/postgresql"),
    )
}

fn find_bin_in(path: Option<&std::ffi::OsStr>, debian: &Path) -> Result<PathBuf, String> {
    let on_path = path
        .map(|p| std::env::split_paths(p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir(debian)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .collect();
    debian.sort();
    on_path
        .into_iter()
        .chain(debian.into_iter().rev().map(|(_, bin)| bin))
        // PATH may hold links to the binaries (Debian's own folder has them all).
        .filter_map(|dir| std::fs::canonicalize(dir.join("initdb")).ok())
        .filter_map(|initdb| initdb.parent().map(Path::to_path_buf))
        .find(|dir| ["pg_ctl", "createdb"].iter().all(|b| dir.join(b).is_file()))
        .ok_or_else(|| {
            "PostgreSQL is not installed (no initdb, pg_ctl and createdb on PATH or in /usr/lib/postgresql/*/bin): \
             these tests need a real cluster; install Debian's `postgresql` package \
             (scripts/install-test-tools does)"
                .to_owned()
        })
}

fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    // /proc/self belongs to the process's effective user.
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program args…`, run as the cluster's user when this process is root.
fn as_cluster_user(root: bool, program: &Path) -> Command {
    if root {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", CLUSTER_USER, "--"]).arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| format!("no free loopback port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}

fn start() -> Result<Cluster, String> {
    let bin = find_bin()?;
    let root = running_as_root();
    let dir = tempfile::Builder::new()
        .prefix("atoll-pg-")
        .tempdir()
        .map_err(|e| format!("cannot make the cluster's folder: {e}"))?
        .keep();
    if root {
        let mut chown = Command::new("chown");
        chown.arg(format!("{CLUSTER_USER}:")).arg(&dir);
        run(chown, &format!("chown {CLUSTER_USER} {}", dir.display()))?;
    }
    let data = dir.join("data");
    // The guard first, so that the folder goes away even if the cluster fails to start.
    let guard = guard(&bin, root, &dir, &data)?;
    let mut initdb = as_cluster_user(root, &bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", CLUSTER_USER, "-A", "trust", "-E", "UTF8"])
        .args(["--no-sync", "--no-instructions"]);
    run(initdb, "initdb")?;
    let port = free_port()?;
    let mut pg_ctl = as_cluster_user(root, &bin.join("pg_ctl"));
    pg_ctl
        .arg("-D")
        .arg(&data)
        .arg("-l")
        .arg(dir.join("postgres.log"))
        .arg("-o")
        .arg(format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300",
            dir.display()
        ))
        .args(["-w", "-t", "60", "start"]);
    run(pg_ctl, "pg_ctl start").map_err(|e| {
        let log = std::fs::read_to_string(dir.join("postgres.log")).unwrap_or_default();
        format!("{e}\npostgres.log:\n{log}")
    })?;
    Ok(Cluster {
        port,
        bin,
        _guard: guard,
    })
}

/// Starts the process that stops the cluster in `data` and removes `dir` once this process's
/// end closes the pipe it reads.
fn guard(bin: &Path, root: bool, dir: &Path, data: &Path) -> Result<ChildStdin, String> {
    let pg_ctl = bin.join("pg_ctl");
    let stop = if root {
        vec![
            "runuser".into(),
            "-u".into(),
            CLUSTER_USER.into(),
            "--".into(),
            pg_ctl.into_os_string(),
        ]
    } else {
        vec![pg_ctl.into_os_string()]
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(
            r#"cat >/dev/null; dir=$1; data=$2; shift 2; [ -f "$data/postmaster.pid" ] && "$@" -D "$data" -m immediate stop; rm -rf "$dir""#,
        )
        .arg("atoll-pg-guard")
        .arg(dir)
        .arg(data)
        .args(stop)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the cluster's guard: {e}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| "the cluster's guard has no stdin".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_postgresql_the_tests_fail_naming_the_package() {
        let nowhere = tempfile::tempdir().unwrap();
        let err = find_bin_in(Some(nowhere.path().as_os_str()), nowhere.path()).unwrap_err();
        assert!(
            err.contains("install Debian's `postgresql` package"),
            "{err}"
        );
    }
}
