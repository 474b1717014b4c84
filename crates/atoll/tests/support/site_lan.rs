//! Several hosts of one site on this machine, each as real as a test can make it: its own
//! network namespace on a site LAN, its own Docker Engine, and its own cgroup, so that a host's
//! death (every process of it killed, its containers too) and a partition (its LAN link down)
//! are real.
//!
//! Facts that shaped it, measured here:
//! - A second `dockerd` must keep the machine's mounts: `ip netns exec` remounts `/sys` and
//!   hides the cgroup hierarchies ("Devices cgroup isn't mounted"), so processes enter only the
//!   namespace's network (`nsenter --net`).
//! - Each daemon gets `--config-file` of `{}`, its own data, exec and pid paths and socket,
//!   `--iptables=false`, `--storage-driver overlay2` and a bridge of its own made in its
//!   namespace. Never `--bridge none`: that deletes the machine's `docker0`.
//! - The machine's `FORWARD` policy is DROP and bridged frames pass through it
//!   (`bridge-nf-call-iptables`), so the LAN's bridge lives in a namespace of its own, whose
//!   tables are empty; the machine's tables are never touched. A veth pair joins that
//!   namespace to the machine, routed, so a control plane on the machine is reachable from the
//!   hosts at [`SiteLan::gateway`], and nothing else of the machine is.
//! - Killing a daemon leaves its containers' shims running; a host's processes are found by
//!   its cgroup (the daemon's `--cgroup-parent` is the host's own), so a death kills them all.
//!
//! A LAN claims the subnet `10.77.N.0/24` by creating the namespace `atl-lanN`: creation fails
//! if another test holds it, so tests in parallel processes never share a subnet.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::{Out, run, wait_until};

/// How long a host's Docker Engine may take to answer after it starts.
const DOCKER_START: Duration = Duration::from_secs(60);

/// The pids hierarchy, where each host's cgroup is made.
const PIDS: &str = "/sys/fs/cgroup/pids";

#[derive(Debug)]
pub struct SiteLan {
    /// `N` of the subnet `10.77.N.0/24` and of the namespace `atl-lanN`.
    net: u8,
    dir: tempfile::TempDir,
    hosts: Vec<LanHost>,
}

/// One host: its namespace, its cgroup, its Docker Engine.
#[derive(Debug)]
pub struct LanHost {
    /// `atl-lanN-hK`: the namespace's and the cgroup's name.
    name: String,
    /// The veth end in the LAN's namespace, which a partition takes down.
    lan_link: String,
    lan_ns: String,
    pub address: Ipv4Addr,
    pub dir: PathBuf,
    dockerd: Option<Child>,
}

fn sh(script: &str) -> Out {
    let mut cmd = Command::new("sh");
    cmd.args(["-ec", script]);
    run(cmd)
}

#[track_caller]
fn sh_ok(script: &str) {
    let out = sh(script);
    assert!(
        out.code == Some(0),
        "{script}\nfailed: {}{}",
        out.stdout,
        out.stderr
    );
}

impl SiteLan {
    /// A LAN with `hosts` hosts, each with its Docker Engine answering. Needs root, `ip`,
    /// `nsenter` and `dockerd`: fails saying so otherwise.
    pub fn new(hosts: usize) -> SiteLan {
        for tool in ["ip", "nsenter", "dockerd"] {
            assert!(
                sh(&format!("command -v {tool}")).code == Some(0),
                "the multi-host tests need `{tool}` (packages iproute2, util-linux, docker.io)"
            );
        }
        assert!(
            sh("test \"$(id -u)\" = 0").code == Some(0),
            "the multi-host tests make network namespaces and Docker Engines: they run as root"
        );
        let net = (1..=250u8)
            .find(|n| sh(&format!("ip netns add atl-lan{n}")).code == Some(0))
            .expect("every subnet 10.77.1-250.0/24 is taken by another test's namespace");
        let ns = format!("atl-lan{net}");
        let mut lan = SiteLan {
            net,
            dir: tempfile::tempdir().unwrap(),
            hosts: Vec::new(),
        };
        // The LAN's bridge, and its link to the machine: the machine is .254 on a /31-like pair
        // routed through the LAN's namespace.
        sh_ok(&format!(
            "ip -n {ns} link set lo up
             ip -n {ns} link add lan type bridge
             ip -n {ns} addr add 10.77.{net}.1/24 dev lan
             ip -n {ns} link set lan up
             ip netns exec {ns} sysctl -qw net.ipv4.ip_forward=1
             ip link add {ns}-gw type veth peer name gw netns {ns}
             ip addr add 10.78.{net}.1/30 dev {ns}-gw
             ip link set {ns}-gw up
             ip -n {ns} addr add 10.78.{net}.2/30 dev gw
             ip -n {ns} link set gw up
             ip route add 10.77.{net}.0/24 via 10.78.{net}.2 dev {ns}-gw"
        ));
        for k in 0..hosts {
            let host = lan.add_host(k);
            lan.hosts.push(host);
        }
        lan
    }

    fn add_host(&self, k: usize) -> LanHost {
        let net = self.net;
        let lan_ns = format!("atl-lan{net}");
        let name = format!("{lan_ns}-h{k}");
        let address = Ipv4Addr::new(10, 77, net, 10 + k as u8);
        let dir = self.dir.path().join(format!("h{k}"));
        std::fs::create_dir_all(&dir).unwrap();
        let lan_link = format!("h{k}");
        sh_ok(&format!(
            "ip netns add {name}
             ip -n {name} link set lo up
             ip -n {name} link add eth0 type veth peer name {lan_link} netns {lan_ns}
             ip -n {lan_ns} link set {lan_link} master lan up
             ip -n {name} addr add {address}/24 dev eth0
             ip -n {name} link set eth0 up
             ip -n {name} route add default via 10.77.{net}.1
             ip -n {name} link add docker0 type bridge
             ip -n {name} addr add 172.30.{k}.1/24 dev docker0
             ip -n {name} link set docker0 up
             mkdir -p {PIDS}/{name}"
        ));
        std::fs::write(dir.join("daemon.json"), "{}").unwrap();
        let mut host = LanHost {
            name,
            lan_link,
            lan_ns,
            address,
            dir,
            dockerd: None,
        };
        host.start_docker();
        host
    }

    /// Where the hosts reach the machine: a control plane listening here (or on 0.0.0.0) is
    /// reachable from every host of the LAN.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 78, self.net, 1)
    }

    pub fn hosts(&self) -> &[LanHost] {
        &self.hosts
    }

    pub fn host(&mut self, k: usize) -> &mut LanHost {
        &mut self.hosts[k]
    }
}

impl LanHost {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn docker_socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `DOCKER_HOST` for this host's Docker Engine.
    pub fn docker_host(&self) -> String {
        format!("unix://{}", self.docker_socket().display())
    }

    /// Runs `program` as a process of this host: in its network namespace and its cgroup, so
    /// that [`LanHost::kill`] kills it too.
    pub fn command(&self, program: impl AsRef<Path>) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!(
                "echo $$ > {PIDS}/{}/cgroup.procs && exec nsenter --net=/var/run/netns/{} \"$@\"",
                self.name, self.name
            ))
            .arg("sh")
            .arg(program.as_ref())
            .env("DOCKER_HOST", self.docker_host());
        cmd
    }

    /// The docker CLI against this host's engine.
    pub fn docker(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("docker");
        cmd.arg("-H").arg(self.docker_host()).args(args);
        run(cmd)
    }

    /// Starts the host's Docker Engine (again, after a [`LanHost::kill`]) and waits until it
    /// answers.
    pub fn start_docker(&mut self) {
        let dir = self.dir.display();
        let log = std::fs::File::create(self.dir.join("dockerd.log")).unwrap();
        let child = self
            .command("dockerd")
            .args([
                "--config-file".to_owned(),
                format!("{dir}/daemon.json"),
                "--data-root".to_owned(),
                format!("{dir}/data"),
                "--exec-root".to_owned(),
                format!("{dir}/exec"),
                "--pidfile".to_owned(),
                format!("{dir}/dockerd.pid"),
                "-H".to_owned(),
                self.docker_host(),
                "--iptables=false".to_owned(),
                "--bridge".to_owned(),
                "docker0".to_owned(),
                "--storage-driver".to_owned(),
                "overlay2".to_owned(),
                "--cgroup-parent".to_owned(),
                format!("/{}", self.name),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start dockerd");
        self.dockerd = Some(child);
        let answered = wait_until(DOCKER_START, || {
            (self
                .docker(&["version", "--format", "{{.Server.Version}}"])
                .code
                == Some(0))
            .then_some(())
        });
        assert!(
            answered.is_some(),
            "{}'s dockerd did not answer within {DOCKER_START:?}: {}",
            self.name,
            std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default()
        );
    }

    /// Every process of the host, as its cgroup holds them (its agent, its Docker Engine, its
    /// containers).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = Vec::new();
        let mut dirs = vec![PathBuf::from(PIDS).join(&self.name)];
        while let Some(d) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs.push(e.path());
                }
            }
            let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
        }
        pids
    }

    /// The host dies: every process of it is killed at once (SIGKILL), its containers too.
    pub fn kill(&mut self) {
        let gone = wait_until(Duration::from_secs(10), || {
            let pids = self.pids();
            if pids.is_empty() {
                return Some(());
            }
            for pid in pids {
                sh(&format!("kill -9 {pid} 2>/dev/null || true"));
            }
            None
        });
        assert!(gone.is_some(), "{}'s processes outlived SIGKILL", self.name);
        if let Some(mut child) = self.dockerd.take() {
            let _ = child.wait();
        }
        self.unmount();
        // The runtime state of the dead: its pid files name processes that may linger as
        // zombies nobody reaps, which the next daemon would wait on as "still running".
        let _ = std::fs::remove_dir_all(self.dir.join("exec"));
        let _ = std::fs::remove_file(self.dir.join("dockerd.pid"));
    }

    /// Cuts the host off the LAN (and so from the other hosts and the machine), or heals it.
    pub fn partition(&self, cut: bool) {
        let state = if cut { "down" } else { "up" };
        sh_ok(&format!(
            "ip -n {} link set {} {state}",
            self.lan_ns, self.lan_link
        ));
    }

    /// Drops everything between this host and `address` (the machine's side, where the
    /// control plane listens, say), both ways, even on connections already open; or lets it
    /// through again. The LAN stays up.
    pub fn block(&self, address: Ipv4Addr, cut: bool) {
        let op = if cut { "-I" } else { "-D" };
        sh_ok(&format!(
            "nsenter --net=/var/run/netns/{ns} iptables {op} OUTPUT -d {address} -j DROP && \
             nsenter --net=/var/run/netns/{ns} iptables {op} INPUT -s {address} -j DROP",
            ns = self.name
        ));
    }

    /// Whether a TCP connection from this host to `address:port` is accepted within a second.
    pub fn reaches(&self, address: Ipv4Addr, port: u16) -> bool {
        let mut cmd = self.command("timeout");
        cmd.args([
            "1",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{address}/{port}"),
        ]);
        run(cmd).code == Some(0)
    }

    /// Unmounts what a killed daemon left mounted under the host's folder.
    fn unmount(&self) {
        let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        let dir = self.dir.display().to_string();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(1))
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            sh(&format!("umount -l '{p}' 2>/dev/null || true"));
        }
    }
}

impl Drop for SiteLan {
    /// Kills every host and removes every namespace, link, route and cgroup the LAN made.
    /// Never panics: it runs while a failed test unwinds.
    fn drop(&mut self) {
        for host in &mut self.hosts {
            for pid in host.pids() {
                sh(&format!("kill -9 {pid} 2>/dev/null || true"));
            }
            if let Some(mut child) = host.dockerd.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            let _ = wait_until(Duration::from_secs(10), || {
                host.pids().is_empty().then_some(())
            });
            host.unmount();
            sh(&format!(
                "find {PIDS}/{0} -depth -type d -exec rmdir {{}} \\; 2>/dev/null || true
                 ip netns del {0} 2>/dev/null || true",
                host.name
            ));
        }
        let net = self.net;
        sh(&format!(
            "ip link del atl-lan{net}-gw 2>/dev/null || true
             ip netns del atl-lan{net} 2>/dev/null || true"
        ));
    }
}
