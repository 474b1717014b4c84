//! What this host is: reported at enrollment so the control plane (and, later, the site
//! scheduler) knows each host's CPU, memory, disk, runtime and attached devices.
//!
//! Read from `/proc`, `/sys`, `/etc` and `/dev` directly: no tool to spawn, nothing to install.
//! The parsers are pure and tested on sample texts; a file that cannot be read leaves its field
//! empty rather than failing enrollment.

use std::path::{Path, PathBuf};

use atoll_api::agent::{Device, Inventory, RuntimeInventory};
use atoll_api::host::capability;

pub fn collect(data_dir: &Path, runtime: RuntimeInventory) -> Inventory {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    Inventory {
        hostname: read("/proc/sys/kernel/hostname").trim().to_owned(),
        arch: std::env::consts::ARCH.to_owned(),
        os: os_name(&read("/etc/os-release")),
        kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        cpus: cpu_count(&cpuinfo)
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .and_then(|n| u32::try_from(n.get()).ok())
            })
            .unwrap_or(0),
        cpu_model: cpu_model(&cpuinfo),
        memory_bytes: mem_total(&read("/proc/meminfo")),
        disk_bytes: rustix::fs::statvfs(data_dir)
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
            .unwrap_or(0),
        runtime,
        devices: devices(Path::new("/dev"), Path::new("/sys/class/video4linux")),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: capability::ALL.iter().map(|c| (*c).to_owned()).collect(),
        addresses: Vec::new(),
    }
}

/// Where the host's `/dev` and `/sys` are: `ATOLL_HOST_ROOT`, or `/`. Tests give a host
/// devices it does not have through it.
pub fn host_root() -> PathBuf {
    std::env::var_os("ATOLL_HOST_ROOT").map_or_else(|| PathBuf::from("/"), PathBuf::from)
}

/// `PRETTY_NAME` of os-release, or its `NAME`.
fn os_name(os_release: &str) -> String {
    let field = |key: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(key)?
                .strip_prefix('=')
                .map(|v| v.trim_matches('"').to_owned())
        })
    };
    field("PRETTY_NAME")
        .or_else(|| field("NAME"))
        .unwrap_or_else(|| "Linux".into())
}

fn cpu_count(cpuinfo: &str) -> Option<u32> {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().is_some_and(|k| k.trim() == "processor"))
        .count();
    u32::try_from(n).ok().filter(|n| *n > 0)
}

/// x86 says `model name`; many ARM boards say `Model` or `Hardware`.
fn cpu_model(cpuinfo: &str) -> String {
    ["model name", "Model", "Hardware", "cpu model"]
        .iter()
        .find_map(|key| {
            cpuinfo.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == *key).then(|| v.trim().to_owned())
            })
        })
        .unwrap_or_default()
}

fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Cameras (`/dev/video*`, named from video4linux), serial ports (`ttyUSB*`, `ttyACM*`) and
/// NVIDIA GPUs (`nvidia0`...).
fn devices(dev: &Path, v4l: &Path) -> Vec<Device> {
    let Ok(entries) = std::fs::read_dir(dev) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort();
    names
        .into_iter()
        .filter_map(|name| {
            let numbered = |prefix: &str| {
                name.strip_prefix(prefix)
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            };
            let kind = if numbered("video") {
                "camera"
            } else if numbered("ttyUSB") || numbered("ttyACM") {
                "serial"
            } else if numbered("nvidia") {
                "gpu"
            } else {
                return None;
            };
            let label = if kind == "camera" {
                std::fs::read_to_string(v4l.join(&name).join("name"))
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            } else {
                String::new()
            };
            Some(Device {
                kind: kind.into(),
                path: dev.join(&name).display().to_string(),
                name: label,
                ..Device::default()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_and_etc() {
        assert_eq!(
            os_name("NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_name("NAME=Alpine\n"), "Alpine");
        assert_eq!(os_name(""), "Linux");
        let x86 = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) CPU\nprocessor\t: 1\nmodel name\t: Intel(R) Xeon(R) CPU\n";
        assert_eq!(cpu_count(x86), Some(2));
        assert_eq!(cpu_model(x86), "Intel(R) Xeon(R) CPU");
        let pi = "processor\t: 0\nBogoMIPS\t: 108.00\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n";
        assert_eq!(cpu_model(pi), "Raspberry Pi 4 Model B Rev 1.4");
        assert_eq!(
            mem_total("MemTotal:       24576000 kB\nMemFree: 1 kB\n"),
            24_576_000 * 1024
        );
        assert_eq!(mem_total("garbage"), 0);
    }

    #[test]
    fn finds_cameras_serial_ports_and_gpus() {
        let dir = tempfile::tempdir().unwrap();
        let (dev, v4l) = (dir.path().join("dev"), dir.path().join("v4l"));
        for name in [
            "video0",
            "ttyUSB1",
            "ttyACM0",
            "nvidia0",
            "nvidiactl",
            "video",
            "null",
            "tty1",
        ] {
            std::fs::create_dir_all(dev.join(name)).unwrap();
        }
        std::fs::create_dir_all(v4l.join("video0")).unwrap();
        std::fs::write(v4l.join("video0/name"), "USB Camera\n").unwrap();
        let found: Vec<(String, String)> = devices(&dev, &v4l)
            .into_iter()
            .map(|d| {
                (
                    d.kind,
                    d.path.rsplit('/').next().unwrap().to_owned() + &d.name,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("gpu".into(), "nvidia0".into()),
                ("serial".into(), "ttyACM0".into()),
                ("serial".into(), "ttyUSB1".into()),
                ("camera".into(), "video0USB Camera".into())
            ]
        );
    }

    #[test]
    fn this_host_has_an_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let inv = collect(dir.path(), RuntimeInventory::default());
        assert!(
            !inv.hostname.is_empty() && inv.cpus > 0 && inv.memory_bytes > 0 && inv.disk_bytes > 0,
            "{inv:?}"
        );
    }
}
