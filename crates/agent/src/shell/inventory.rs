//! What this host is: its facts (CPU, memory, disk, OS, runtime, addresses) and the devices
//! attached to it, read at enrollment and again whenever they change (`shell::watcher`).
//!
//! Read from files directly: no tool to spawn, nothing to install. Devices are read under the
//! host root (`ATOLL_HOST_ROOT`, `/` by default): `<root>/dev` for the nodes, `<root>/sys` for
//! what they are, and `<root>/etc/os-release` for the OS, so an agent in a container with the
//! host's `/` mounted reads the host, and a test can give a host devices it does not have. The
//! kernel's facts (CPUs, memory, kernel release, hostname, addresses) are read from the
//! agent's own `/proc`, which is the kernel's whatever the root. A file that cannot be read
//! leaves its field empty rather than failing.
//!
//! A device is every character device node directly in `<root>/dev` or `<root>/dev/dri` whose
//! sysfs entry (`<root>/sys/dev/char/MAJOR:MINOR`) does not resolve under
//! `/sys/devices/virtual` (which leaves out null, zero, the virtual terminals, ptmx...). Its
//! attributes are sysfs's: the subsystem, the name (its own `name`, else the nearest USB
//! parent's `product`, else the nearest `model`), the vendor and product ids (the nearest USB
//! parent's `idVendor`/`idProduct`, else the nearest PCI `vendor`/`device`) and the nearest
//! serial number. A node with no sysfs entry at all is kept only when its name says what it is
//! (`nvidia0`: NVIDIA's driver makes nodes sysfs does not list). Every string is cut to
//! [`MAX_INVENTORY_STRING_BYTES`] and the list to [`MAX_DEVICES`], so what the agent sends is
//! never refused.

use std::io::Read as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};

use atoll_api::host::{
    Device, Inventory, MAX_ADDRESSES, MAX_DEVICES, MAX_INVENTORY_STRING_BYTES, RuntimeInventory,
    capability,
};

/// How far up from a device's sysfs folder its parents are searched for attributes.
const MAX_PARENTS: usize = 32;
/// The most of a sysfs attribute read: one page is all the kernel gives.
const MAX_ATTRIBUTE_BYTES: u64 = 4096;

/// The host's facts and devices as they are now.
pub fn collect(root: &Path, data_dir: &Path, runtime: RuntimeInventory) -> Inventory {
    Inventory {
        devices: devices(root),
        ..facts(root, data_dir, runtime)
    }
}

/// Everything of [`collect`] but the devices.
pub fn facts(root: &Path, data_dir: &Path, runtime: RuntimeInventory) -> Inventory {
    let read = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let proc = Path::new("/proc");
    let cpuinfo = read(&proc.join("cpuinfo"));
    Inventory {
        hostname: cut(read(&proc.join("sys/kernel/hostname")).trim()),
        arch: std::env::consts::ARCH.to_owned(),
        os: cut(&os_name(&read(&root.join("etc/os-release")))),
        kernel: cut(read(&proc.join("sys/kernel/osrelease")).trim()),
        cpus: cpu_count(&cpuinfo)
            .or_else(|| {
                std::thread::available_parallelism()
                    .ok()
                    .and_then(|n| u32::try_from(n.get()).ok())
            })
            .unwrap_or(0),
        cpu_model: cut(&cpu_model(&cpuinfo)),
        memory_bytes: mem_total(&read(&proc.join("meminfo"))),
        disk_bytes: rustix::fs::statvfs(data_dir)
            .map(|s| s.f_blocks.saturating_mul(s.f_frsize))
            .unwrap_or(0),
        runtime: RuntimeInventory {
            name: cut(&runtime.name),
            version: cut(&runtime.version),
        },
        devices: Vec::new(),
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        capabilities: capability::ALL.iter().map(|c| (*c).to_owned()).collect(),
        addresses: addresses(
            &read(&proc.join("net/fib_trie")),
            &read(&proc.join("net/if_inet6")),
        ),
        // The agent's setting, not the machine's: the shell adds it.
        site_address: None,
    }
}

/// The devices under `root`, in path order, at most [`MAX_DEVICES`].
pub fn devices(root: &Path) -> Vec<Device> {
    let mut found: Vec<Device> = ["dev", "dev/dri"]
        .iter()
        .flat_map(|dir| nodes(&root.join(dir)))
        .filter_map(|(path, rdev)| {
            let logical = Path::new("/")
                .join(path.strip_prefix(root).ok()?)
                .to_str()?
                .to_owned();
            let name = path.file_name()?.to_str()?;
            describe(
                root,
                &logical,
                name,
                rustix::fs::major(rdev),
                rustix::fs::minor(rdev),
            )
        })
        .collect();
    found.sort_by(|a, b| a.path.cmp(&b.path));
    found.truncate(MAX_DEVICES);
    found
}

/// The character device nodes directly in `dir` (symbolic links are not followed: they name
/// nodes listed already), with their device numbers.
fn nodes(dir: &Path) -> Vec<(PathBuf, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| {
            let e = e.ok()?;
            let meta = std::fs::symlink_metadata(e.path()).ok()?;
            meta.file_type()
                .is_char_device()
                .then(|| (e.path(), meta.rdev()))
        })
        .collect()
}

/// The device at `path` (as the host sees it, `/dev/video1`) named `name`, with device number
/// `major:minor`, described from sysfs under `root`; None for a virtual device, or for one
/// sysfs does not know and its name does not tell.
fn describe(root: &Path, path: &str, name: &str, major: u32, minor: u32) -> Option<Device> {
    let kind = kind_of(name);
    let link = root.join(format!("sys/dev/char/{major}:{minor}"));
    let Ok(folder) = std::fs::canonicalize(&link) else {
        return (!kind.is_empty()).then(|| Device {
            kind: kind.into(),
            path: cut(path),
            ..Device::default()
        });
    };
    let devices = std::fs::canonicalize(root.join("sys/devices")).ok()?;
    if folder.starts_with(devices.join("virtual")) {
        return None;
    }
    // The device's folder, then its parents up to (not including) /sys/devices.
    let chain: Vec<&Path> = folder
        .ancestors()
        .take_while(|p| p.starts_with(&devices) && *p != devices)
        .take(MAX_PARENTS)
        .collect();
    let nearest = |attribute: &str| chain.iter().find_map(|dir| attribute_of(dir, attribute));
    let usb = chain
        .iter()
        .find(|dir| attribute_of(dir, "idVendor").is_some());
    let (vendor, product) = match usb {
        Some(dir) => (
            attribute_of(dir, "idVendor"),
            attribute_of(dir, "idProduct"),
        ),
        None => chain
            .iter()
            .find(|dir| {
                attribute_of(dir, "vendor").is_some() && attribute_of(dir, "device").is_some()
            })
            .map_or((None, None), |dir| {
                (attribute_of(dir, "vendor"), attribute_of(dir, "device"))
            }),
    };
    let label = attribute_of(&folder, "name")
        .or_else(|| usb.and_then(|dir| attribute_of(dir, "product")))
        .or_else(|| nearest("model"));
    let subsystem = std::fs::read_link(folder.join("subsystem"))
        .ok()
        .and_then(|target| target.file_name()?.to_str().map(cut))
        .unwrap_or_default();
    Some(Device {
        kind: kind.into(),
        path: cut(path),
        name: label.unwrap_or_default(),
        subsystem,
        vendor: vendor.map(|v| hex_id(&v)).unwrap_or_default(),
        product: product.map(|p| hex_id(&p)).unwrap_or_default(),
        serial: nearest("serial").unwrap_or_default(),
        missing_since: None,
    })
}

/// A sysfs attribute of `dir`, trimmed and cut to the bound; None when absent or empty.
fn attribute_of(dir: &Path, attribute: &str) -> Option<String> {
    let file = std::fs::File::open(dir.join(attribute)).ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut bytes = Vec::new();
    file.take(MAX_ATTRIBUTE_BYTES)
        .read_to_end(&mut bytes)
        .ok()?;
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    (!text.is_empty()).then(|| cut(text))
}

/// A USB or PCI id as lowercase hex without `0x`.
fn hex_id(id: &str) -> String {
    let id = id.trim();
    id.strip_prefix("0x")
        .or_else(|| id.strip_prefix("0X"))
        .unwrap_or(id)
        .to_ascii_lowercase()
}

/// What templates written before device classes call a device: cameras (`video*`), serial
/// ports (`ttyUSB*`, `ttyACM*`) and NVIDIA GPUs (`nvidia0`...); empty for the rest.
fn kind_of(name: &str) -> &'static str {
    let numbered = |prefix: &str| {
        name.strip_prefix(prefix)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if numbered("video") {
        "camera"
    } else if numbered("ttyUSB") || numbered("ttyACM") {
        "serial"
    } else if numbered("nvidia") {
        "gpu"
    } else {
        ""
    }
}

/// `text` cut to [`MAX_INVENTORY_STRING_BYTES`] on a character boundary.
fn cut(text: &str) -> String {
    let mut end = text.len().min(MAX_INVENTORY_STRING_BYTES);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
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
        .map_or(0, |kib| kib.saturating_mul(1024))
}

/// The host's addresses a neighbour could reach it at: IPv4 from `/proc/net/fib_trie` (its
/// `host LOCAL` entries), IPv6 from `/proc/net/if_inet6`; loopback and link-local ones left
/// out (a link-local address means nothing without its interface). At most
/// [`MAX_ADDRESSES`], IPv4 first, each once.
fn addresses(fib_trie: &str, if_inet6: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<std::net::Ipv4Addr> = None;
    for line in fib_trie.lines() {
        let line = line.trim();
        if let Some(addr) = line
            .strip_prefix("|-- ")
            .or_else(|| line.strip_prefix("+-- "))
        {
            last = addr.split('/').next().and_then(|a| a.parse().ok());
        } else if line.starts_with("/32 host LOCAL")
            && let Some(a) = last.take()
            && !a.is_loopback()
            && !a.is_link_local()
        {
            out.push(a.to_string());
        }
    }
    for line in if_inet6.lines() {
        let Some(hex) = line.split_whitespace().next() else {
            continue;
        };
        let Ok(bits) = u128::from_str_radix(hex, 16) else {
            continue;
        };
        if hex.len() != 32 {
            continue;
        }
        let a = std::net::Ipv6Addr::from(bits);
        if !a.is_loopback() && !a.is_unicast_link_local() {
            out.push(a.to_string());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    out.retain(|a| seen.insert(a.clone()));
    out.truncate(MAX_ADDRESSES);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

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
        assert_eq!(
            mem_total(&format!("MemTotal: {} kB", u64::MAX)),
            u64::MAX,
            "no overflow"
        );
    }

    #[test]
    fn addresses_leave_out_loopback_and_link_local() {
        let fib_trie = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\n     |-- 172.17.0.2\n        /32 host LOCAL\n     |-- 172.17.255.255\n        /32 link BROADCAST\nLocal:\n     |-- 172.17.0.2\n        /32 host LOCAL\n     |-- 169.254.1.1\n        /32 host LOCAL\n";
        let if_inet6 = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000042acfffe110002 02 40 20 80     eth0\n20010db8000000000000000000000001 02 40 00 80     eth0\nnot-hex 02 40 00 80 eth0\n\n";
        assert_eq!(addresses(fib_trie, if_inet6), ["172.17.0.2", "2001:db8::1"]);
        assert!(addresses("", "").is_empty());
        let many: String = (0..40)
            .map(|i| format!("|-- 10.0.0.{i}\n/32 host LOCAL\n"))
            .collect();
        assert_eq!(addresses(&many, "").len(), MAX_ADDRESSES);
    }

    #[test]
    fn strings_are_cut_on_a_character_boundary() {
        let long = "é".repeat(MAX_INVENTORY_STRING_BYTES);
        let cut = cut(&long);
        assert!(
            cut.len() <= MAX_INVENTORY_STRING_BYTES && cut.len() >= MAX_INVENTORY_STRING_BYTES - 1
        );
        assert!(cut.chars().all(|c| c == 'é'));
        assert_eq!(hex_id("0x10DE\n"), "10de");
        assert_eq!(hex_id("046d"), "046d");
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// A fake sysfs under `root`: a USB camera (81:1), a PCI GPU's DRM node (226:0), a USB
    /// serial adapter whose name is its model (188:0), and a virtual one (1:3, null).
    fn fake_sysfs(root: &Path) {
        let usb = root.join("sys/devices/pci0000:00/0000:00:14.0/usb1/1-1");
        write(&usb.join("idVendor"), "046d\n");
        write(&usb.join("idProduct"), "082D\n");
        write(&usb.join("serial"), "A1B2C3\n");
        write(&usb.join("product"), "HD Pro Webcam C920\n");
        let video = usb.join("1-1:1.0/video4linux/video1");
        write(
            &video.join("name"),
            "HD Pro Webcam C920: HD Pro Webcam C920\n",
        );
        let class = root.join("sys/class");
        std::fs::create_dir_all(class.join("video4linux")).unwrap();
        std::fs::create_dir_all(class.join("drm")).unwrap();
        std::fs::create_dir_all(class.join("tty")).unwrap();
        std::fs::create_dir_all(class.join("mem")).unwrap();
        symlink(class.join("video4linux"), video.join("subsystem")).unwrap();
        let gpu = root.join("sys/devices/pci0000:00/0000:01:00.0");
        write(&gpu.join("vendor"), "0x10de\n");
        write(&gpu.join("device"), "0x2204\n");
        let card = gpu.join("drm/card0");
        std::fs::create_dir_all(&card).unwrap();
        symlink(class.join("drm"), card.join("subsystem")).unwrap();
        let serial_usb = root.join("sys/devices/pci0000:00/0000:00:14.0/usb1/1-2");
        write(&serial_usb.join("idVendor"), "0403\n");
        write(&serial_usb.join("idProduct"), "6001\n");
        let tty = serial_usb.join("1-2:1.0/ttyUSB0/tty/ttyUSB0");
        write(&serial_usb.join("1-2:1.0/model"), "FT232R\n");
        std::fs::create_dir_all(&tty).unwrap();
        symlink(class.join("tty"), tty.join("subsystem")).unwrap();
        let null = root.join("sys/devices/virtual/mem/null");
        std::fs::create_dir_all(&null).unwrap();
        symlink(class.join("mem"), null.join("subsystem")).unwrap();
        let char = root.join("sys/dev/char");
        std::fs::create_dir_all(&char).unwrap();
        // Relative, as the kernel makes them.
        symlink(
            "../../devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/video4linux/video1",
            char.join("81:1"),
        )
        .unwrap();
        symlink(
            "../../devices/pci0000:00/0000:01:00.0/drm/card0",
            char.join("226:0"),
        )
        .unwrap();
        symlink(
            "../../devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/ttyUSB0/tty/ttyUSB0",
            char.join("188:0"),
        )
        .unwrap();
        symlink("../../devices/virtual/mem/null", char.join("1:3")).unwrap();
    }

    #[test]
    fn sysfs_describes_cameras_gpus_and_serial_ports_and_leaves_out_virtual_devices() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_sysfs(root);
        let camera = describe(root, "/dev/video1", "video1", 81, 1).unwrap();
        assert_eq!(
            camera,
            Device {
                kind: "camera".into(),
                path: "/dev/video1".into(),
                name: "HD Pro Webcam C920: HD Pro Webcam C920".into(),
                subsystem: "video4linux".into(),
                vendor: "046d".into(),
                product: "082d".into(),
                serial: "A1B2C3".into(),
                missing_since: None,
            }
        );
        let card = describe(root, "/dev/dri/card0", "card0", 226, 0).unwrap();
        assert_eq!(
            (
                card.kind.as_str(),
                card.subsystem.as_str(),
                card.vendor.as_str(),
                card.product.as_str(),
                card.name.as_str()
            ),
            ("", "drm", "10de", "2204", "")
        );
        let serial = describe(root, "/dev/ttyUSB0", "ttyUSB0", 188, 0).unwrap();
        assert_eq!(
            (
                serial.kind.as_str(),
                serial.subsystem.as_str(),
                serial.name.as_str(),
                serial.vendor.as_str()
            ),
            ("serial", "tty", "FT232R", "0403"),
            "a USB parent without `product`: the model"
        );
        assert_eq!(describe(root, "/dev/null", "null", 1, 3), None);
        // Unknown to sysfs: kept only when the name tells what it is.
        assert_eq!(
            describe(root, "/dev/nvidia0", "nvidia0", 195, 0)
                .unwrap()
                .kind,
            "gpu"
        );
        assert_eq!(describe(root, "/dev/mystery", "mystery", 250, 0), None);
    }

    #[test]
    fn an_over_long_attribute_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_sysfs(root);
        write(
            &root.join("sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/serial"),
            &"s".repeat(100_000),
        );
        let camera = describe(root, "/dev/video1", "video1", 81, 1).unwrap();
        assert_eq!(camera.serial.len(), MAX_INVENTORY_STRING_BYTES);
    }

    /// The whole scan, with real device nodes (the tests run as root, which may make them).
    #[test]
    fn devices_are_the_character_nodes_of_dev_and_dev_dri() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fake_sysfs(root);
        std::fs::create_dir_all(root.join("dev/dri")).unwrap();
        let node = |path: &str, major: u32, minor: u32| {
            rustix::fs::mknodat(
                rustix::fs::CWD,
                root.join(path),
                rustix::fs::FileType::CharacterDevice,
                rustix::fs::Mode::from_raw_mode(0o600),
                rustix::fs::makedev(major, minor),
            )
        };
        if let Err(e) = node("dev/video1", 81, 1) {
            panic!("mknod needs root (CAP_MKNOD), as the tests are run: {e}");
        }
        node("dev/dri/card0", 226, 0).unwrap();
        node("dev/null", 1, 3).unwrap();
        node("dev/ttyUSB0", 188, 0).unwrap();
        std::fs::write(root.join("dev/video9"), "a file, not a node").unwrap();
        symlink(root.join("dev/video1"), root.join("dev/camera")).unwrap();
        let paths: Vec<String> = devices(root).into_iter().map(|d| d.path).collect();
        assert_eq!(paths, ["/dev/dri/card0", "/dev/ttyUSB0", "/dev/video1"]);
        assert!(devices(&root.join("nowhere")).is_empty());
    }

    #[test]
    fn this_host_has_an_inventory() {
        let dir = tempfile::tempdir().unwrap();
        let inv = collect(Path::new("/"), dir.path(), RuntimeInventory::default());
        assert!(
            !inv.hostname.is_empty() && inv.cpus > 0 && inv.memory_bytes > 0 && inv.disk_bytes > 0,
            "{inv:?}"
        );
        assert_eq!(inv.agent_version, env!("CARGO_PKG_VERSION"));
        assert_eq!(inv.capabilities, capability::ALL);
    }
}
